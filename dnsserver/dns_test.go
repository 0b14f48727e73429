package dnsserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/backend"
)

// fakeBackend serves List, Services and GetMeta from a map; the other
// methods are not used by the DNS server (calling one panics).
type fakeBackend struct {
	backend.DiscoveryBackend
	services map[string][]backend.Instance
	meta     map[string]bool
	behind   atomic.Bool // not caught up
	caller   atomic.Pointer[backend.Caller]
}

func (f *fakeBackend) CaughtUp() bool { return !f.behind.Load() }

func (f *fakeBackend) List(ctx context.Context, name string, opts backend.ListOptions) (uint64, []backend.Instance, error) {
	c := backend.CallerFrom(ctx)
	f.caller.Store(&c)
	var out []backend.Instance
	for _, in := range f.services[name] {
		ok := true
		for k, v := range opts.Attrs {
			ok = ok && in.Attrs[k] == v
		}
		if ok {
			out = append(out, in)
		}
	}
	return 1, out, nil
}

func (f *fakeBackend) Services(context.Context, backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	var out []backend.ServiceCount
	for name, ins := range f.services {
		if len(ins) > 0 {
			out = append(out, backend.ServiceCount{Name: name, Instances: uint64(len(ins))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return 1, out, nil
}

func (f *fakeBackend) GetMeta(_ context.Context, name string, _ backend.MetaOptions) (uint64, backend.Meta, error) {
	if f.meta[name] {
		return 1, backend.Meta{Index: 1, Data: []byte("{}")}, nil
	}
	return 1, backend.Meta{}, nil
}

func inst(name, addr string, attrs ...string) backend.Instance {
	a := map[string]string{}
	for i := 0; i+1 < len(attrs); i += 2 {
		a[attrs[i]] = attrs[i+1]
	}
	return backend.Instance{Name: name, Addr: addr, Attrs: a}
}

// startTest serves b on loopback and returns the address.
func startTest(t *testing.T, cfg Config, b backend.DiscoveryBackend) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := Start(cfg, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

func ask(t *testing.T, addr, net_, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: net_, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", net_, name, dns.TypeToString[qtype], err)
	}
	return r
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %s", rr.Port, rr.Target))
		}
	}
	return out
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func testBackend() *fakeBackend {
	return &fakeBackend{services: map[string][]backend.Instance{
		"web": {inst("web", "10.0.0.1:80", "zone", "a"), inst("web", "10.0.0.2:81", "zone", "b"),
			inst("web", "[2001:db8::1]:82", "zone", "a"), inst("web", "db.example.com:83", "zone", "a")},
		"api.v2":   {inst("api.v2", "10.0.1.1:9000")},
		"Mixed":    {inst("Mixed", "10.0.2.1:1")},
		"web.attr": {inst("web.attr", "10.0.3.1:2")},
	}, meta: map[string]bool{"empty": true}}
}

func TestDNS_Answers(t *testing.T) {
	b := testBackend()
	s := startTest(t, Config{TTL: 7 * time.Second}, b)
	a := s.Addr()
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"web.service.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1", "10.0.0.2"}},
		{"web.service.discoverd.", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8::1"}},
		{"web.service.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"80 0a000001.addr.discoverd.", "81 0a000002.addr.discoverd.",
			"82 20010db8000000000000000000000001.addr.discoverd.", "83 db.example.com."}},
		{"_web._tcp.service.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"80 0a000001.addr.discoverd.", "81 0a000002.addr.discoverd.",
			"82 20010db8000000000000000000000001.addr.discoverd.", "83 db.example.com."}},
		{"a.zone.web.attr.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1"}},
		{"a.zone.web.attr.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"80 0a000001.addr.discoverd.",
			"82 20010db8000000000000000000000001.addr.discoverd.", "83 db.example.com."}},
		{"c.zone.web.attr.discoverd.", dns.TypeA, dns.RcodeSuccess, nil}, // filter leaves none: NOERROR
		{"api.v2.service.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.1.1"}},
		{"_api.v2._udp.service.discoverd.", dns.TypeSRV, dns.RcodeSuccess, []string{"9000 0a000101.addr.discoverd."}},
		{"web.attr.service.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.3.1"}}, // the service named "web.attr"
		{"mixed.SERVICE.Discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.2.1"}},    // case ignored
		{"0a000001.addr.discoverd.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1"}},
		{"empty.service.discoverd.", dns.TypeA, dns.RcodeSuccess, nil},  // metadata, no instances
		{"web.service.discoverd.", dns.TypeTXT, dns.RcodeSuccess, nil},  // no such records
		{"nope.service.discoverd.", dns.TypeA, dns.RcodeNameError, nil}, // unknown service
		{"web.other.discoverd.", dns.TypeA, dns.RcodeNameError, nil},
		{"_web._sctp.service.discoverd.", dns.TypeSRV, dns.RcodeNameError, nil},
		{"zone.web.attr.discoverd.", dns.TypeA, dns.RcodeNameError, nil}, // no value
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil},
		{"discoverd.", dns.TypeA, dns.RcodeSuccess, nil},
	} {
		for _, net_ := range []string{"udp", "tcp"} {
			r := ask(t, a, net_, tc.name, tc.qtype, 0)
			if r.Rcode != tc.rcode || !slices.Equal(sorted(answers(r)), sorted(tc.want)) {
				t.Errorf("%s %s %s: %s %v, want %s %v", net_, tc.name, dns.TypeToString[tc.qtype],
					dns.RcodeToString[r.Rcode], answers(r), dns.RcodeToString[tc.rcode], tc.want)
			}
			if r.RecursionAvailable {
				t.Errorf("%s: RA set: discoverd does not recurse", tc.name)
			}
			if tc.rcode != dns.RcodeRefused && !r.Authoritative {
				t.Errorf("%s: AA not set", tc.name)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != 7 {
					t.Errorf("%s: TTL %d, want 7", tc.name, rr.Header().Ttl)
				}
			}
		}
	}
	// SRV answers carry their targets' addresses.
	r := ask(t, a, "udp", "web.service.discoverd.", dns.TypeSRV, 0)
	var extra []string
	for _, rr := range r.Extra {
		extra = append(extra, strings.Join(strings.Fields(rr.String()), " "))
	}
	want := []string{"0a000001.addr.discoverd. 7 IN A 10.0.0.1", "0a000002.addr.discoverd. 7 IN A 10.0.0.2",
		"20010db8000000000000000000000001.addr.discoverd. 7 IN AAAA 2001:db8::1"}
	if !slices.Equal(sorted(extra), want) {
		t.Errorf("SRV additional section %q, want %q", extra, want)
	}
	// A negative answer carries the zone's SOA for negative caching.
	if r := ask(t, a, "udp", "nope.service.discoverd.", dns.TypeA, 0); len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("NXDOMAIN authority section %v, want the SOA", r.Ns)
	}
}

func TestDNS_ShufflesAnswers(t *testing.T) {
	b := &fakeBackend{services: map[string][]backend.Instance{}}
	for i := range 6 {
		b.services["web"] = append(b.services["web"], inst("web", fmt.Sprintf("10.0.0.%d:80", i+1)))
	}
	s := startTest(t, Config{}, b)
	orders := map[string]bool{}
	for range 30 {
		orders[strings.Join(answers(ask(t, s.Addr(), "udp", "web.service.discoverd.", dns.TypeA, 0)), ",")] = true
	}
	// 30 draws of 720 orders: all the same one has odds of 720^-29.
	if len(orders) < 2 {
		t.Fatalf("30 answers came in one order %v: want them shuffled", orders)
	}
}

func TestDNS_DomainAndTTL(t *testing.T) {
	s := startTest(t, Config{Domain: "Disco.Example", NoTTL: true}, testBackend())
	r := ask(t, s.Addr(), "udp", "web.service.disco.example.", dns.TypeA, 0)
	if len(r.Answer) != 2 || r.Answer[0].Header().Ttl != 0 {
		t.Fatalf("answer %v: want 2 records with TTL 0", r.Answer)
	}
	if r := ask(t, s.Addr(), "udp", "web.service.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
		t.Fatalf("the default domain under -dns-domain disco.example: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	for _, bad := range []Config{{Domain: "."}, {Domain: "a..b"}, {TTL: 2 * time.Hour}, {TTL: 1500 * time.Millisecond}, {TTL: -time.Second}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) passed", bad)
		}
	}
}

func TestDNS_NotCaughtUpIsServfail(t *testing.T) {
	b := testBackend()
	b.behind.Store(true)
	s := startTest(t, Config{}, b)
	if r := ask(t, s.Addr(), "udp", "web.service.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("behind: %s %v, want SERVFAIL and no answer", dns.RcodeToString[r.Rcode], r.Answer)
	}
	b.behind.Store(false)
	if r := ask(t, s.Addr(), "udp", "web.service.discoverd.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("caught up: %s %v, want 2 records", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

func bigBackend(n int) *fakeBackend {
	b := &fakeBackend{services: map[string][]backend.Instance{}}
	for i := range n {
		b.services["big"] = append(b.services["big"], inst("big", fmt.Sprintf("10.1.%d.%d:%d", i/250, i%250+1, 1000+i)))
	}
	return b
}

func TestDNS_TruncatesOverUDPAndAnswersInFullOverTCP(t *testing.T) {
	s := startTest(t, Config{}, bigBackend(200))
	for _, qt := range []uint16{dns.TypeA, dns.TypeSRV} {
		for _, size := range []uint16{0, 1232, 4096} {
			r := ask(t, s.Addr(), "udp", "big.service.discoverd.", qt, size)
			r.Compress = true // as sent
			packed, _ := r.Pack()
			limit := max(512, min(int(size), 1232))
			if !r.Truncated || len(packed) > limit || len(r.Answer) >= 200 {
				t.Errorf("UDP %s, EDNS0 %d: TC=%v, %d bytes, %d answers: want TC, at most %d bytes", dns.TypeToString[qt], size, r.Truncated, len(packed), len(r.Answer), limit)
			}
		}
		r := ask(t, s.Addr(), "tcp", "big.service.discoverd.", qt, 0)
		if r.Truncated || len(r.Answer) != 200 {
			t.Errorf("TCP %s: TC=%v, %d answers, want all 200", dns.TypeToString[qt], r.Truncated, len(r.Answer))
		}
		if qt == dns.TypeSRV && len(r.Extra) != 200 {
			t.Errorf("TCP SRV: %d additional records, want 200", len(r.Extra))
		}
	}
}

func TestDNS_HostileInput(t *testing.T) {
	s := startTest(t, Config{MaxConns: 4, ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}, testBackend())
	uc, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	valid, _ := (&dns.Msg{Question: []dns.Question{{Name: "web.service.discoverd.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}}).Pack()
	for _, p := range [][]byte{{}, {0}, []byte("garbage, not DNS"), make([]byte, 60000), valid[:len(valid)-3],
		append(slices.Clone(valid), make([]byte, 5000)...), {0xff, 0xff, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c}} {
		_, _ = uc.Write(p)
	}
	// Idle TCP connections over the cap, and ones that send half a query.
	var conns []net.Conn
	for i := range 20 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 0 {
			_, _ = c.Write([]byte{0x10, 0x00, 1, 2, 3})
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.Refused() < 16 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Refused() < 16 {
		t.Fatalf("%d TCP connections refused over a cap of 4 with 20 open, want 16", s.Refused())
	}
	// Still serving: over UDP at once, over TCP once the stalled
	// connections have timed out and given their places back.
	if r := ask(t, s.Addr(), "udp", "web.service.discoverd.", dns.TypeA, 0); len(r.Answer) != 2 {
		t.Fatalf("after hostile input, UDP answer %v", r.Answer)
	}
	for {
		m := new(dns.Msg)
		m.SetQuestion("web.service.discoverd.", dns.TypeA)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, s.Addr())
		if err == nil && len(r.Answer) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TCP still not answering after the hostile connections timed out: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDNS_ParseName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		res  parseResult
		want query
	}{
		{"web.service.discoverd.", parsed, query{kind: kindService, name: "web"}},
		{"_web._tcp.service.discoverd.", parsed, query{kind: kindService, name: "web"}},
		{"_a.b._tcp.service.discoverd.", parsed, query{kind: kindService, name: "a.b"}},
		{"a._tcp.service.discoverd.", parsed, query{kind: kindService, name: "a._tcp"}},
		{"_a._tcp._tcp.service.discoverd.", parsed, query{kind: kindService, name: "a._tcp"}},
		{"a.zone.web.attr.discoverd.", parsed, query{kind: kindService, name: "web", key: "zone", value: "a"}},
		{"a.zone.web.attr.attr.discoverd.", parsed, query{kind: kindService, name: "web.attr", key: "zone", value: "a"}},
		{"service.attr.web.attr.discoverd.", parsed, query{kind: kindService, name: "web", key: "attr", value: "service"}},
		{"a.zone.web.attr.service.discoverd.", parsed, query{kind: kindService, name: "a.zone.web.attr"}},
		{"discoverd.", parsed, query{kind: kindApex}},
		{"_web.service.discoverd.", noSuchName, query{}},
		{"service.discoverd.", noSuchName, query{}},
		{"zone.web.attr.discoverd.", noSuchName, query{}},
		{"w\\.b.service.discoverd.", noSuchName, query{}},
		{"0a00001.addr.discoverd.", noSuchName, query{}},
		{"discoverd.example.", outOfZone, query{}},
		{"xdiscoverd.", outOfZone, query{}},
		{".", outOfZone, query{}},
	} {
		got, res := parseName(tc.in, DefaultDomain)
		if res != tc.res || got != tc.want {
			t.Errorf("parseName(%q) = %+v, %v; want %+v, %v", tc.in, got, res, tc.want, tc.res)
		}
	}
}

// FuzzDNS_ParseName: every name parses to at most one reading, which
// names a valid service, and the name written back from it reads the same.
func FuzzDNS_ParseName(f *testing.F) {
	for _, s := range []string{"web.service.discoverd.", "_web._tcp.service.discoverd.", "a.zone.web.attr.discoverd.",
		"0a000001.addr.discoverd.", "discoverd.", "x.y.", "\\046.service.discoverd.", "_._tcp.service.discoverd."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if _, ok := dns.IsDomainName(name); !ok {
			return
		}
		name = dns.Fqdn(name)
		q, res := parseName(name, DefaultDomain)
		if res != parsed || q.kind != kindService {
			return
		}
		var back string
		if q.key != "" {
			back = q.value + "." + q.key + "." + q.name + ".attr.discoverd."
		} else {
			back = q.name + ".service.discoverd."
		}
		q2, res2 := parseName(back, DefaultDomain)
		if res2 != parsed || q2 != q {
			t.Fatalf("%q read as %+v, written back as %q read as %+v (%v)", name, q, back, q2, res2)
		}
	})
}
