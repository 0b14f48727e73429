package dnsserver

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
)

// maxUDPSize caps the EDNS0 buffer size a client may ask for (the DNS
// flag day 2020 value: larger answers go over TCP rather than fragmented).
const maxUDPSize = 1232

// readGate is implemented by a store with a read gate (the Raft store): a
// node that has not caught up with the cluster since it started answers
// SERVFAIL rather than from a state that may be old or empty.
type readGate interface {
	CaughtUp() bool
}

// unwrapper is a backend wrapping another (the ACL guard).
type unwrapper interface {
	Unwrap() backend.DiscoveryBackend
}

// readGateOf is the read gate of b, or of the backend b wraps (the ACL
// guard's Unwrap), if it has one.
func readGateOf(b backend.DiscoveryBackend) readGate {
	for b != nil {
		if g, ok := b.(readGate); ok {
			return g
		}
		u, ok := b.(unwrapper)
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	return nil
}

// errNotCaughtUp: the node has not caught up since it started.
var errNotCaughtUp = errors.New("node has not caught up with the cluster since it started")

// handler answers queries from the local state.
type handler struct {
	cfg  Config // with defaults
	b    backend.DiscoveryBackend
	gate readGate // nil: none
	log  *slog.Logger
}

func (h *handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	m := h.answer(r, tcp, w.RemoteAddr().String())
	if err := w.WriteMsg(m); err != nil {
		h.log.Debug("write answer", "remote", w.RemoteAddr().String(), "err", err)
	}
}

// answer builds the reply to r from remote, truncated to what the
// transport carries.
func (h *handler) answer(r *dns.Msg, tcp bool, remote string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = false
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			m.SetRcode(r, dns.RcodeBadVers)
			m.SetEdns0(maxUDPSize, false)
			return m
		}
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
		m.SetEdns0(uint16(size), false)
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	if r.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	pq, res := parseName(q.Name, h.cfg.Domain)
	if res == outOfZone || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	if res == noSuchName {
		return h.negative(m, dns.RcodeNameError)
	}
	switch pq.kind {
	case kindApex:
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, h.soa())
			return m
		}
		return h.negative(m, dns.RcodeSuccess)
	case kindAddr:
		m.Answer = h.ipRecords(q.Name, pq.ip, q.Qtype)
	case kindService:
		// DNS carries no token: a query has the anonymous token's rights
		// when ACLs are on (the backend is then the guard).
		ctx, cancel := context.WithTimeout(backend.WithCaller(context.Background(), backend.Caller{Remote: remote, Via: "dns"}), h.cfg.QueryTimeout)
		defer cancel()
		ins, found, err := h.lookup(ctx, pq)
		if errors.Is(err, codes.ErrPermissionDenied) {
			// Before acl bootstrap the guard denies every read: a
			// refusal, for policy, not a failure of the node.
			h.log.Debug("dns query refused", "name", pq.name, "remote", remote, "err", err)
			m.Authoritative = false
			m.Rcode = dns.RcodeRefused
			return m
		}
		if err != nil {
			h.log.Debug("dns lookup failed", "name", pq.name, "err", err)
			m.Rcode = dns.RcodeServerFailure
			return m
		}
		if !found {
			return h.negative(m, dns.RcodeNameError)
		}
		m.Answer, m.Extra = h.serviceRecords(q.Name, q.Qtype, ins, m.Extra)
	}
	if len(m.Answer) == 0 {
		return h.negative(m, dns.RcodeSuccess)
	}
	m.Compress = true
	m.Truncate(size)
	return m
}

// negative is an answer without records: NXDOMAIN or NOERROR with the
// zone's SOA, whose last field bounds negative caching (RFC 2308).
func (h *handler) negative(m *dns.Msg, rcode int) *dns.Msg {
	m.Rcode = rcode
	m.Ns = []dns.RR{h.soa()}
	return m
}

func (h *handler) ttl() uint32 { return uint32(h.cfg.TTL.Seconds()) }

func (h *handler) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: h.cfg.Domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: h.ttl()},
		Ns:      "ns." + h.cfg.Domain,
		Mbox:    "hostmaster." + h.cfg.Domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  h.ttl(),
	}
}

// lookup returns a service's instances (with the query's filter), and
// whether the service exists: it has instances (filtered out or not) or
// metadata. Through the ACL guard, a service the caller may not read has
// no instances, is left out of Services and has no metadata, so it is
// found no more than a service that does not exist: NXDOMAIN alike. A name that matches no service exactly is matched ignoring
// case, since resolvers may change the case of a name (DNS names are
// case-insensitive; discoverd's service names are not).
func (h *handler) lookup(ctx context.Context, q query) ([]backend.Instance, bool, error) {
	if h.gate != nil && !h.gate.CaughtUp() {
		return nil, false, errNotCaughtUp
	}
	var attrs map[string]string
	if q.key != "" {
		attrs = map[string]string{q.key: q.value}
	}
	_, ins, err := h.b.List(ctx, q.name, backend.ListOptions{Attrs: attrs})
	if err != nil || len(ins) > 0 {
		return ins, err == nil, err
	}
	_, svcs, err := h.b.Services(ctx, backend.ServicesOptions{})
	if err != nil {
		return nil, false, err
	}
	name, found := "", false
	for _, s := range svcs {
		if s.Name == q.name {
			return nil, true, nil // it has instances; the filter took them all
		}
		if !found && strings.EqualFold(s.Name, q.name) {
			name, found = s.Name, true
		}
	}
	if found {
		_, ins, err := h.b.List(ctx, name, backend.ListOptions{Attrs: attrs})
		return ins, err == nil, err
	}
	_, meta, err := h.b.GetMeta(ctx, q.name, backend.MetaOptions{})
	if err != nil {
		return nil, false, err
	}
	return nil, meta.Index != 0, nil
}

// serviceRecords answers qtype for ins, shuffled: A and AAAA records of the
// instances whose host is an IP, or SRV records (with the A and AAAA of
// their targets in extra). An instance whose host is a name is an SRV
// record targeting that name, with no address record (the client's
// resolver looks it up).
func (h *handler) serviceRecords(qname string, qtype uint16, ins []backend.Instance, extra []dns.RR) (answer, _ []dns.RR) {
	rand.Shuffle(len(ins), func(i, j int) { ins[i], ins[j] = ins[j], ins[i] })
	for _, in := range ins {
		host, port, ip, ok := splitAddr(in.Addr)
		if !ok {
			continue
		}
		switch qtype {
		case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
			if ip.IsValid() {
				answer = append(answer, h.ipRecords(qname, ip, qtype)...)
			}
		case dns.TypeSRV:
			target := dns.Fqdn(host)
			if ip.IsValid() {
				target = encodeIP(ip) + "." + labelAddr + "." + h.cfg.Domain
				extra = append(extra, h.ipRecords(target, ip, dns.TypeANY)...)
			} else if _, ok := dns.IsDomainName(target); !ok {
				continue
			}
			answer = append(answer, &dns.SRV{
				Hdr:      dns.RR_Header{Name: qname, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: h.ttl()},
				Priority: 1, Weight: 1, Port: port, Target: target,
			})
		}
	}
	return answer, extra
}

// ipRecords is ip as an A or AAAA record named name, if qtype asks for its
// family (ANY asks for both).
func (h *handler) ipRecords(name string, ip netip.Addr, qtype uint16) []dns.RR {
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: h.ttl()}
	switch {
	case ip.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeA
		return []dns.RR{&dns.A{Hdr: hdr, A: ip.AsSlice()}}
	case ip.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeAAAA
		return []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()}}
	}
	return nil
}

// splitAddr splits an instance's host:port; ip is set if the host is an
// IP (an IPv4-mapped IPv6 address is IPv4).
func splitAddr(addr string) (host string, port uint16, ip netip.Addr, ok bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err == nil {
		return ap.Addr().String(), ap.Port(), ap.Addr().Unmap().WithZone(""), true
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, netip.Addr{}, false
	}
	pp, err := netip.ParseAddrPort("0.0.0.0:" + p)
	if err != nil {
		return "", 0, netip.Addr{}, false
	}
	return h, pp.Port(), netip.Addr{}, true
}
