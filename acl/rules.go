// Package acl is discoverd's access control: tokens, the rules they carry,
// and the check every interface makes before it serves a call (guard.go).
// Tokens are replicated through the Raft log (fsm/acl.go); this package
// turns the replicated records into a Table that resolves a presented
// credential to an Identity in constant time, and an Identity answers
// "may this caller do that?". DESIGN.md explains the choices.
package acl

import (
	"fmt"
	"sort"
	"strings"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
)

// Access is what a rule grants. Write includes read.
type Access uint8

// Accesses, in increasing order.
const (
	None Access = iota
	Read
	Write
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return "none"
}

// Resources a rule names.
const (
	ResourceService  = "service"
	ResourceOperator = "operator"
	ResourceACL      = "acl"
)

// Rule is one parsed rule: `service "<pattern>" read|write`,
// `operator read|write` or `acl read|write`.
type Rule struct {
	Resource string
	// Pattern, for a service rule: an exact service name, or a prefix
	// followed by one trailing '*' ("web*"; "*" alone matches every
	// service).
	Pattern string
	Access  Access
}

// MaxRules bounds the rules of one token, MaxRuleLen one rule's text.
const (
	MaxRules   = 64
	MaxRuleLen = 256
)

// ParseRule parses one rule. Errors wrap codes.ErrInvalidArgument and show
// the grammar.
func ParseRule(s string) (Rule, error) {
	bad := func(why string) (Rule, error) {
		return Rule{}, codes.Invalid(`rule %q: %s; a rule is service "<name or prefix*>" read|write, operator read|write, or acl read|write`, s, why)
	}
	if len(s) > MaxRuleLen {
		return bad(fmt.Sprintf("%d bytes, the limit is %d", len(s), MaxRuleLen))
	}
	f := strings.Fields(s)
	if len(f) == 0 {
		return bad("empty")
	}
	var r Rule
	switch f[0] {
	case ResourceService:
		if len(f) != 3 {
			return bad(`a service rule has three words`)
		}
		p := f[1]
		if len(p) < 2 || p[0] != '"' || p[len(p)-1] != '"' {
			return bad("the service pattern goes in double quotes")
		}
		p = p[1 : len(p)-1]
		if err := checkPattern(p); err != nil {
			return bad(err.Error())
		}
		r = Rule{Resource: ResourceService, Pattern: p}
		f = f[2:]
	case ResourceOperator, ResourceACL:
		if len(f) != 2 {
			return bad(fmt.Sprintf("an %s rule has two words", f[0]))
		}
		r = Rule{Resource: f[0]}
		f = f[1:]
	default:
		return bad(fmt.Sprintf("unknown resource %q", f[0]))
	}
	switch f[0] {
	case "read":
		r.Access = Read
	case "write":
		r.Access = Write
	default:
		return bad(fmt.Sprintf("access %q is neither read nor write", f[0]))
	}
	return r, nil
}

// checkPattern accepts a service name, a service name's prefix followed by
// '*', or '*' alone.
func checkPattern(p string) error {
	if p == "*" {
		return nil
	}
	name := p
	if strings.HasSuffix(p, "*") {
		name = p[:len(p)-1]
	}
	if strings.Contains(name, "*") {
		return fmt.Errorf("'*' may only end the pattern")
	}
	if err := validate.Name(name); err != nil {
		return fmt.Errorf("the pattern is not a service name or a prefix of one followed by '*'")
	}
	return nil
}

// String is the rule's canonical text, which ParseRule reads back.
func (r Rule) String() string {
	if r.Resource == ResourceService {
		return fmt.Sprintf("%s %q %s", r.Resource, r.Pattern, r.Access)
	}
	return r.Resource + " " + r.Access.String()
}

// ParseRules parses a token's rules, in canonical form.
func ParseRules(rules []string) ([]Rule, error) {
	if len(rules) > MaxRules {
		return nil, codes.Invalid("%d rules, the limit is %d", len(rules), MaxRules)
	}
	out := make([]Rule, 0, len(rules))
	for _, s := range rules {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// CanonicalRules parses rules and returns their canonical text, in order.
func CanonicalRules(rules []string) ([]string, error) {
	rs, err := ParseRules(rules)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out, nil
}

// Policy is a token's rules, ready to answer. The most specific service
// rule decides: an exact name before any prefix, a longer prefix before a
// shorter one ("*" is the shortest). Two rules with the same pattern grant
// the greater access.
type Policy struct {
	exact    map[string]Access
	prefixes []prefixRule // longest first
	operator Access
	acl      Access
}

type prefixRule struct {
	prefix string
	access Access
}

// NewPolicy builds a policy; no rules grant nothing.
func NewPolicy(rules []Rule) *Policy {
	p := &Policy{exact: map[string]Access{}}
	pre := map[string]Access{}
	for _, r := range rules {
		switch r.Resource {
		case ResourceService:
			if prefix, ok := strings.CutSuffix(r.Pattern, "*"); ok {
				pre[prefix] = max(pre[prefix], r.Access)
			} else {
				p.exact[r.Pattern] = max(p.exact[r.Pattern], r.Access)
			}
		case ResourceOperator:
			p.operator = max(p.operator, r.Access)
		case ResourceACL:
			p.acl = max(p.acl, r.Access)
		}
	}
	for prefix, a := range pre {
		p.prefixes = append(p.prefixes, prefixRule{prefix, a})
	}
	sort.Slice(p.prefixes, func(i, j int) bool {
		if len(p.prefixes[i].prefix) != len(p.prefixes[j].prefix) {
			return len(p.prefixes[i].prefix) > len(p.prefixes[j].prefix)
		}
		return p.prefixes[i].prefix < p.prefixes[j].prefix
	})
	return p
}

// Service is the access the policy grants on service name.
func (p *Policy) Service(name string) Access {
	if a, ok := p.exact[name]; ok {
		return a
	}
	for _, r := range p.prefixes {
		if strings.HasPrefix(name, r.prefix) {
			return r.access
		}
	}
	return None
}

// Operator is the access granted on the cluster (status, members, snapshots).
func (p *Policy) Operator() Access { return p.operator }

// ACL is the access granted on tokens.
func (p *Policy) ACL() Access { return p.acl }
