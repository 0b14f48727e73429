package acl

import (
	"errors"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/internal/codes"
)

func TestParseRule(t *testing.T) {
	good := map[string]Rule{
		`service "web" read`:           {ResourceService, "web", Read},
		`service "web*" write`:         {ResourceService, "web*", Write},
		`service "*" read`:             {ResourceService, "*", Read},
		`  service   "a.b-c_d"  write`: {ResourceService, "a.b-c_d", Write},
		`operator read`:                {ResourceOperator, "", Read},
		`operator write`:               {ResourceOperator, "", Write},
		`acl read`:                     {ResourceACL, "", Read},
		`acl write`:                    {ResourceACL, "", Write},
	}
	for in, want := range good {
		got, err := ParseRule(in)
		if err != nil || got != want {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", in, got, err, want)
			continue
		}
		again, err := ParseRule(got.String())
		if err != nil || again != got {
			t.Errorf("ParseRule(%q) (the canonical form of %q) = %+v, %v", got.String(), in, again, err)
		}
	}
	bad := map[string]string{
		``:                         "empty",
		`service web read`:         "double quotes",
		`service "web" admin`:      "neither read nor write",
		`service "w*b" read`:       "may only end",
		`service "**" read`:        "may only end",
		`service "" read`:          "not a service name",
		`service "-web" read`:      "not a service name",
		`service "web" read extra`: "three words",
		`service "web"`:            "three words",
		`operator`:                 "two words",
		`acl write now`:            "two words",
		`key "x" read`:             `unknown resource "key"`,
		`service "web read`:        "double quotes",
		"service \"" + strings.Repeat("a", 300) + "\" read": "bytes, the limit",
	}
	for in, why := range bad {
		_, err := ParseRule(in)
		if !errors.Is(err, codes.ErrInvalidArgument) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "a rule is service") {
			t.Errorf("ParseRule(%q) = %v; want invalid_argument saying %q and the grammar", in, err, why)
		}
	}
}

// TestPolicyMatching is the table of service names against rule sets: the
// most specific rule decides (an exact name, then the longest prefix), and
// nothing matching grants nothing.
func TestPolicyMatching(t *testing.T) {
	sets := map[string][]string{
		"none":          nil,
		"web-writer":    {`service "web*" write`},
		"web-exact":     {`service "web" write`},
		"read-all":      {`service "*" read`},
		"carve-out":     {`service "web*" write`, `service "web-admin" read`},
		"deny-carve":    {`service "*" write`, `service "db*" read`},
		"longest":       {`service "a*" read`, `service "ab*" write`, `service "abc*" read`},
		"same-pattern":  {`service "x" read`, `service "x" write`},
		"operator-only": {`operator write`},
	}
	names := []string{"web", "web-1", "web-admin", "webx", "we", "db", "db-main", "a", "ab", "abc", "abcd", "x", "other"}
	want := map[string]map[string]Access{
		"none":          {},
		"web-writer":    {"web": Write, "web-1": Write, "web-admin": Write, "webx": Write},
		"web-exact":     {"web": Write},
		"read-all":      {"web": Read, "web-1": Read, "web-admin": Read, "webx": Read, "we": Read, "db": Read, "db-main": Read, "a": Read, "ab": Read, "abc": Read, "abcd": Read, "x": Read, "other": Read},
		"carve-out":     {"web": Write, "web-1": Write, "web-admin": Read, "webx": Write},
		"deny-carve":    {"web": Write, "web-1": Write, "web-admin": Write, "webx": Write, "we": Write, "db": Read, "db-main": Read, "a": Write, "ab": Write, "abc": Write, "abcd": Write, "x": Write, "other": Write},
		"longest":       {"a": Read, "ab": Write, "abc": Read, "abcd": Read},
		"same-pattern":  {"x": Write},
		"operator-only": {},
	}
	for set, rules := range sets {
		rs, err := ParseRules(rules)
		if err != nil {
			t.Fatal(err)
		}
		p := NewPolicy(rs)
		for _, n := range names {
			if got := p.Service(n); got != want[set][n] {
				t.Errorf("%s %v: service %q gets %v, want %v", set, rules, n, got, want[set][n])
			}
		}
	}
	p := NewPolicy(mustRules(t, `operator read`, `operator write`, `acl read`))
	if p.Operator() != Write || p.ACL() != Read || p.Service("web") != None {
		t.Errorf("operator %v acl %v service %v", p.Operator(), p.ACL(), p.Service("web"))
	}
}

func mustRules(t *testing.T, rules ...string) []Rule {
	t.Helper()
	rs, err := ParseRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestParseRulesLimit(t *testing.T) {
	many := make([]string, MaxRules+1)
	for i := range many {
		many[i] = "operator read"
	}
	if _, err := ParseRules(many); !errors.Is(err, codes.ErrInvalidArgument) {
		t.Errorf("%d rules: %v", len(many), err)
	}
	if _, err := ParseRules(many[:MaxRules]); err != nil {
		t.Errorf("%d rules: %v", MaxRules, err)
	}
}
