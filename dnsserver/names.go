package dnsserver

import (
	"encoding/hex"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/internal/validate"
)

// The names of the zone (docs/dns.md). Under the domain D (default
// "discoverd."), the last label before D says what a name is, and each
// form has a fixed shape, so no name can be read two ways:
//
//	<name>.service.D                   a service: A, AAAA, SRV
//	_<name>._tcp.service.D             the same, RFC 2782 form (also _udp)
//	<value>.<key>.<name>.attr.D        the service's instances with attribute key=value
//	<hex IP>.addr.D                    an instance's IP (the SRV targets)
//
// A service name may hold dots ("api.v2" is "api.v2.service.D") but never
// starts with '_', so the RFC 2782 form cannot be taken for a plain name.
// In the attr form the first label is always the value and the second the
// key, whatever the rest: "a.zone.web.attr.D" filters web on zone=a, and
// "web.attr.service.D" is the service named "web.attr".

// Zone labels.
const (
	labelService = "service"
	labelAttr    = "attr"
	labelAddr    = "addr"
)

// kind is what a name asks for.
type kind int

const (
	kindApex    kind = iota // the domain itself
	kindService             // a service, with or without an attribute filter
	kindAddr                // an IP encoded in the name
)

// query is a parsed name.
type query struct {
	kind       kind
	name       string // the service (kindService)
	key, value string // the attribute filter, if key != ""
	ip         netip.Addr
}

// parseResult says what to answer for a name.
type parseResult int

const (
	parsed     parseResult = iota // q holds the query
	outOfZone                     // REFUSED: not in the domain
	noSuchName                    // NXDOMAIN: in the domain, but no name of the zone
)

// parseName reads qname (as asked, any case) in domain (lower case, fully
// qualified).
func parseName(qname, domain string) (query, parseResult) {
	lower := strings.ToLower(qname)
	if !dns.IsSubDomain(domain, lower) || strings.Contains(qname, `\`) {
		if dns.IsSubDomain(domain, lower) {
			return query{}, noSuchName // escaped bytes never spell a service name
		}
		return query{}, outOfZone
	}
	rel := qname[:len(qname)-len(domain)]
	if rel == "" {
		return query{kind: kindApex}, parsed
	}
	labels := dns.SplitDomainName(rel)
	n := len(labels)
	switch last, rest := strings.ToLower(labels[n-1]), labels[:n-1]; last {
	case labelService:
		if len(rest) >= 2 && strings.HasPrefix(rest[0], "_") {
			proto := strings.ToLower(rest[len(rest)-1])
			if proto != "_tcp" && proto != "_udp" {
				return query{}, noSuchName
			}
			rest = append([]string{rest[0][1:]}, rest[1:len(rest)-1]...)
		}
		return serviceQuery(strings.Join(rest, "."), "", "")
	case labelAttr:
		if len(rest) < 3 {
			return query{}, noSuchName
		}
		return serviceQuery(strings.Join(rest[2:], "."), rest[1], rest[0])
	case labelAddr:
		if len(rest) != 1 {
			return query{}, noSuchName
		}
		if ip, ok := decodeIP(rest[0]); ok {
			return query{kind: kindAddr, ip: ip}, parsed
		}
	}
	return query{}, noSuchName
}

func serviceQuery(name, key, value string) (query, parseResult) {
	if validate.Name(name) != nil {
		return query{}, noSuchName
	}
	return query{kind: kindService, name: name, key: key, value: value}, parsed
}

// encodeIP is the label naming ip under addr: 8 hex digits for IPv4, 32
// for IPv6.
func encodeIP(ip netip.Addr) string {
	b := ip.AsSlice()
	return hex.EncodeToString(b)
}

// decodeIP reads a label encodeIP made.
func decodeIP(label string) (netip.Addr, bool) {
	if len(label) != 8 && len(label) != 32 {
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(label)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(b)
	return ip, ok
}
