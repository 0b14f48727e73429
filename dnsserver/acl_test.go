package dnsserver

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/backend"
)

// tableStore is an acl.Store holding a table the test swaps; DNS never
// manages tokens, so the other methods are not implemented.
type tableStore struct {
	acl.Store
	mu sync.Mutex
	t  *acl.Table
}

func (s *tableStore) ACLTable() *acl.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

func (s *tableStore) set(t *acl.Table) {
	s.mu.Lock()
	old := s.t
	s.t = t
	s.mu.Unlock()
	old.Retire()
}

// guarded serves b through a real ACL guard whose anonymous token has the
// rules given (nil: ACLs not bootstrapped).
func guarded(t *testing.T, b *fakeBackend, anonymous ...string) (*Server, *tableStore) {
	t.Helper()
	st := &tableStore{t: acl.NewTable(0, 0, nil)}
	if anonymous != nil {
		st.t = acl.NewTable(1, 1, []acl.Token{{AccessorID: acl.AnonymousID, Rules: anonymous}})
	}
	g := acl.NewGuard(b, st, slog.New(slog.DiscardHandler))
	t.Cleanup(g.Close)
	return startTest(t, Config{}, g), st
}

func aclBackend() *fakeBackend {
	return &fakeBackend{services: map[string][]backend.Instance{
		"public": {inst("public", "10.0.0.1:80", "zone", "a"), inst("public", "10.0.0.2:80", "zone", "b")},
		"secret": {inst("secret", "10.0.9.1:80", "zone", "a")},
	}, meta: map[string]bool{"public-meta": true, "secret-meta": true}}
}

// comparable is an answer without its id, to compare two answers whole.
func comparable(r *dns.Msg) string {
	c := r.Copy()
	c.Id = 0
	c.Question = nil
	s := c.String()
	return s
}

// TestDNS_ACLAnonymousRights: DNS carries no token, so a query has the
// anonymous token's rights; a service it may not read answers exactly as a
// service that does not exist (NXDOMAIN, the same sections and flags), in
// every form of name.
func TestDNS_ACLAnonymousRights(t *testing.T) {
	b := aclBackend()
	s, _ := guarded(t, b, `service "public*" read`)
	a := s.Addr()
	for _, net_ := range []string{"udp", "tcp"} {
		r := ask(t, a, net_, "public.service.discoverd.", dns.TypeA, 0)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(sorted(answers(r)), []string{"10.0.0.1", "10.0.0.2"}) {
			t.Errorf("%s public: %s %v", net_, dns.RcodeToString[r.Rcode], answers(r))
		}
	}
	c := b.caller.Load()
	if c == nil || c.Via != "dns" || c.Token != "" || !strings.HasPrefix(c.Remote, "127.0.0.1:") {
		t.Errorf("the backend's caller: %+v, want via dns, no token, the client's address", c)
	}
	for _, tt := range []struct {
		secret, unknown string
		qtype           uint16
	}{
		{"secret.service.discoverd.", "nosuch.service.discoverd.", dns.TypeA},
		{"secret.service.discoverd.", "nosuch.service.discoverd.", dns.TypeSRV},
		{"_secret._tcp.service.discoverd.", "_nosuch._tcp.service.discoverd.", dns.TypeSRV},
		{"SECRET.service.discoverd.", "NOSUCH.service.discoverd.", dns.TypeA},
		{"a.zone.secret.attr.discoverd.", "a.zone.nosuch.attr.discoverd.", dns.TypeA},
		{"c.zone.secret.attr.discoverd.", "c.zone.nosuch.attr.discoverd.", dns.TypeA},
		{"secret-meta.service.discoverd.", "nosuch.service.discoverd.", dns.TypeA},
		{"secret.service.discoverd.", "nosuch.service.discoverd.", dns.TypeTXT},
	} {
		for _, net_ := range []string{"udp", "tcp"} {
			got, want := ask(t, a, net_, tt.secret, tt.qtype, 1232), ask(t, a, net_, tt.unknown, tt.qtype, 1232)
			if got.Rcode != dns.RcodeNameError || comparable(got) != comparable(want) {
				t.Errorf("%s %s %s:\n%s\nwant as %s:\n%s", net_, tt.secret, dns.TypeToString[tt.qtype], got, tt.unknown, want)
			}
		}
	}
	// What the anonymous token may read answers as without ACLs: a
	// service with metadata alone, or a filter that leaves none, is
	// NOERROR with no answer.
	for _, name := range []string{"public-meta.service.discoverd.", "c.zone.public.attr.discoverd."} {
		if r := ask(t, a, "udp", name, dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s: %s %v, want NOERROR, no answer", name, dns.RcodeToString[r.Rcode], answers(r))
		}
	}
}

// TestDNS_ACLBeforeBootstrapIsRefused: before acl bootstrap the guard
// denies every read: REFUSED, no answer, not authoritative; a node not
// caught up still says SERVFAIL (its read gate comes first, through the
// guard); once bootstrapped, the anonymous token's rights apply.
func TestDNS_ACLBeforeBootstrapIsRefused(t *testing.T) {
	b := aclBackend()
	s, st := guarded(t, b)
	for _, name := range []string{"public.service.discoverd.", "nosuch.service.discoverd."} {
		for _, net_ := range []string{"udp", "tcp"} {
			r := ask(t, s.Addr(), net_, name, dns.TypeA, 0)
			if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || len(r.Ns) != 0 || r.Authoritative {
				t.Errorf("%s %s before bootstrap: %s", net_, name, r)
			}
		}
	}
	b.behind.Store(true)
	if r := ask(t, s.Addr(), "udp", "public.service.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("not caught up, behind the guard: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	b.behind.Store(false)
	st.set(acl.NewTable(1, 2, []acl.Token{{AccessorID: acl.AnonymousID, Rules: []string{`service "public" read`}}}))
	if r := ask(t, s.Addr(), "udp", "public.service.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Errorf("after bootstrap: %s", r)
	}
	// The apex and the addr names say nothing of any service: they
	// answer before bootstrap too.
	st.set(acl.NewTable(0, 3, nil))
	if r := ask(t, s.Addr(), "udp", "discoverd.", dns.TypeSOA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("apex before bootstrap: %s", r)
	}
}
