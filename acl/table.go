package acl

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
)

// verifications counts secret checks, for the test that a missing accessor
// id and a wrong secret cost the same work.
var verifications atomic.Uint64

// Table is one immutable view of the replicated ACL state. The store builds
// a new one whenever a token changes and swaps it in; readers never lock.
type Table struct {
	bootstrapIndex uint64 // 0: acl bootstrap has not run
	index          uint64 // of the last change to the tokens
	tokens         map[string]*entry
	sorted         []string // accessor ids, sorted
	changed        chan struct{}
	retire         sync.Once
}

type entry struct {
	tok    Token
	policy *Policy
}

// NewTable builds a table from the replicated records: the index acl
// bootstrap ran at (0: not yet), the index of the last change to the
// tokens, and the tokens. A rule that does not parse (the state was
// written by a newer version, say) is left out, which only ever grants
// less.
func NewTable(bootstrapIndex, index uint64, tokens []Token) *Table {
	t := &Table{bootstrapIndex: bootstrapIndex, index: index, tokens: make(map[string]*entry, len(tokens)), changed: make(chan struct{})}
	for _, tok := range tokens {
		var rules []Rule
		for _, s := range tok.Rules {
			if r, err := ParseRule(s); err == nil {
				rules = append(rules, r)
			}
		}
		t.tokens[tok.AccessorID] = &entry{tok: tok, policy: NewPolicy(rules)}
		t.sorted = append(t.sorted, tok.AccessorID)
	}
	sort.Strings(t.sorted)
	return t
}

// Index is the index of the last change to the tokens.
func (t *Table) Index() uint64 { return t.index }

// Changed is closed once the store has replaced this table with a newer one.
func (t *Table) Changed() <-chan struct{} { return t.changed }

// Retire closes Changed; the store calls it after swapping in the next
// table. Safe to call more than once.
func (t *Table) Retire() { t.retire.Do(func() { close(t.changed) }) }

// Bootstrapped reports whether acl bootstrap has run, and at which index.
func (t *Table) Bootstrapped() (uint64, bool) { return t.bootstrapIndex, t.bootstrapIndex != 0 }

// Tokens returns every token, sorted by accessor id.
func (t *Table) Tokens() []Token {
	out := make([]Token, 0, len(t.sorted))
	for _, id := range t.sorted {
		out = append(out, t.tokens[id].tok)
	}
	return out
}

// Token returns one token.
func (t *Table) Token(accessorID string) (Token, bool) {
	e, ok := t.tokens[accessorID]
	if !ok {
		return Token{}, false
	}
	return e.tok, true
}

// Identity is a resolved caller: the token it presented (or the anonymous
// token) and its policy.
type Identity struct {
	Token     Token
	Anonymous bool
	policy    *Policy
}

// ErrNotBootstrapped is what every call but acl bootstrap gets while ACLs
// are on and no one has bootstrapped them.
var ErrNotBootstrapped = fmt.Errorf("ACLs are on and have not been bootstrapped: run discoverd acl bootstrap once, which prints the first management token: %w", codes.ErrPermissionDenied)

// Resolve finds the identity of a credential ("" for a caller that
// presents none) at now. An unknown accessor id and a wrong secret take the
// same time and get the same error; neither the error nor any log names
// the secret.
func (t *Table) Resolve(cred string, now time.Time) (*Identity, error) {
	if t.bootstrapIndex == 0 {
		return nil, ErrNotBootstrapped
	}
	if cred == "" {
		if e, ok := t.tokens[AnonymousID]; ok {
			return &Identity{Token: e.tok, Anonymous: true, policy: e.policy}, nil
		}
		return &Identity{Token: Token{AccessorID: AnonymousID}, Anonymous: true, policy: NewPolicy(nil)}, nil
	}
	id, secret, ok := SplitCredential(cred)
	if !ok {
		return nil, fmt.Errorf("the token is malformed: a token is <accessor id>.<secret>, as acl bootstrap and acl token create print it: %w", codes.ErrPermissionDenied)
	}
	e := t.tokens[id]
	var tok *Token
	if e != nil {
		tok = &e.tok
	}
	if !verify(tok, secret) {
		return nil, fmt.Errorf("the token is not known: it was deleted, or its secret is wrong: %w", codes.ErrPermissionDenied)
	}
	if !e.tok.ExpiresAt.IsZero() && !now.Before(e.tok.ExpiresAt) {
		return nil, fmt.Errorf("token %s expired at %s: %w", id, e.tok.ExpiresAt.UTC().Format(time.RFC3339), codes.ErrPermissionDenied)
	}
	return &Identity{Token: e.tok, policy: e.policy}, nil
}

// Service is the identity's access on a service.
func (id *Identity) Service(name string) Access { return id.policy.Service(name) }

// Operator is the identity's access on the cluster.
func (id *Identity) Operator() Access { return id.policy.Operator() }

// ACL is the identity's access on tokens.
func (id *Identity) ACL() Access { return id.policy.ACL() }

// Who names the identity in messages and audit lines: its accessor id.
func (id *Identity) Who() string { return id.Token.AccessorID }

// CheckService fails with codes.ErrPermissionDenied, naming the missing
// rule, unless the identity has want on service name. what says what the
// caller tried ("register in").
func (id *Identity) CheckService(what, name string, want Access) error {
	if id.Service(name) >= want {
		return nil
	}
	return id.denied(what, Rule{Resource: ResourceService, Pattern: name, Access: want})
}

// CheckOperator fails unless the identity has want on the cluster.
func (id *Identity) CheckOperator(what string, want Access) error {
	if id.Operator() >= want {
		return nil
	}
	return id.denied(what, Rule{Resource: ResourceOperator, Access: want})
}

// CheckACL fails unless the identity has want on tokens.
func (id *Identity) CheckACL(what string, want Access) error {
	if id.ACL() >= want {
		return nil
	}
	return id.denied(what, Rule{Resource: ResourceACL, Access: want})
}

// DeniedError is a permission_denied error that names the rule missing.
type DeniedError struct {
	Who  string // the accessor id
	What string
	Need Rule
}

func (e *DeniedError) Error() string {
	who := "token " + e.Who
	if e.Who == AnonymousID {
		who = "the anonymous token (no token was presented)"
	}
	pattern := ""
	if e.Need.Resource == ResourceService {
		pattern = " (or a prefix rule matching it)"
	}
	return fmt.Sprintf("permission denied: %s needs the rule %s%s, which %s does not have", e.What, e.Need, pattern, who)
}

// Unwrap makes errors.Is(err, codes.ErrPermissionDenied) hold.
func (e *DeniedError) Unwrap() error { return codes.ErrPermissionDenied }

func (id *Identity) denied(what string, need Rule) error {
	return &DeniedError{Who: id.Who(), What: what, Need: need}
}
