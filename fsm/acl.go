package fsm

import (
	"fmt"
	"slices"
	"sync"

	"github.com/discoverd/discoverd/internal/codes"
)

// ACL state: the tokens of the acl package, replicated through the log so
// that every node resolves a credential alike. The FSM knows nothing of
// rules or credentials (package acl does); it keeps records, applies the
// three ACL commands, and refuses what would break the state's invariants:
//
//   - not bootstrapped (bootstrap index 0): no tokens, last-change index 0;
//   - bootstrapped: the anonymous token is there (it cannot be deleted),
//     every other token has a 32-byte secret hash, the anonymous token none;
//   - indices: 0 < bootstrap <= create <= modify <= last change <= applied.
//
// A secret never reaches the log or the state: commands carry its SHA-256
// (acl.HashSecret), which is all a node needs to check a credential.

// ACLAnonymousID is the accessor id of the anonymous token (acl.AnonymousID).
const ACLAnonymousID = "anonymous"

// Bounds of a token record, the acl package's own (a raftstore test keeps
// them equal): the state never holds a token acl would refuse, and a backup
// holding one is refused (backup.go).
const (
	MaxACLDescription = 256 // acl.MaxDescription
	MaxACLRules       = 64  // acl.MaxRules
	MaxACLRuleLen     = 256 // acl.MaxRuleLen
	maxACLAccessorLen = 64  // acl's are 36 (a UUID) or "anonymous"
	aclHashLen        = 32  // SHA-256
)

// ACLToken is one token as the replicated state holds it. Stored records
// are immutable, like instances: a change stores a new *ACLToken.
type ACLToken struct {
	AccessorID  string
	SecretHash  []byte // SHA-256 of the secret; empty for the anonymous token
	Description string
	Rules       []string // canonical rule texts; the FSM does not parse them
	ExpiresAt   int64    // Unix ns; 0: never
	CreateIndex uint64
	ModifyIndex uint64
}

// clone returns a deep copy.
func (t *ACLToken) clone() *ACLToken {
	c := *t
	c.SecretHash = slices.Clone(t.SecretHash)
	c.Rules = slices.Clone(t.Rules)
	return &c
}

// ACLBootstrapCommand creates the first management token and the anonymous
// token (accessor id "anonymous", no secret hash, no rules unless given),
// once. Their indices are the command's.
type ACLBootstrapCommand struct {
	Management ACLToken
	Anonymous  ACLToken
}

// ACLSetTokenCommand creates a token (Create) or updates one. A create
// stores Token as given, at the command's index. An update changes only
// the description and rules of the existing token: its secret hash, expiry
// and CreateIndex stay, whatever Token says of them.
type ACLSetTokenCommand struct {
	Token  ACLToken
	Create bool
}

// ACLDeleteTokenCommand deletes a token.
type ACLDeleteTokenCommand struct {
	AccessorID string
}

// aclState is the replicated ACL state (part of state).
type aclState struct {
	bootstrapIndex uint64 // 0: not bootstrapped
	index          uint64 // of the last change to the ACL state
	tokens         map[string]*ACLToken
}

// ACLState is a copy of the replicated ACL state.
type ACLState struct {
	BootstrapIndex uint64     // 0: ACLs have not been bootstrapped
	Index          uint64     // of the last change to the tokens; 0: none
	Tokens         []ACLToken // sorted by accessor id
	// Version counts the changes of the ACL state this FSM has seen since
	// it was made (ACL commands that changed it, snapshot restores): local
	// to the node, never replicated. A larger Version is a newer state.
	Version uint64
}

// ACLState returns a copy of the ACL state.
func (f *FSM) ACLState() ACLState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a := &f.st.acl
	out := ACLState{BootstrapIndex: a.bootstrapIndex, Index: a.index, Version: f.aclVersion, Tokens: make([]ACLToken, 0, len(a.tokens))}
	for _, t := range a.sortedTokens() {
		out.Tokens = append(out.Tokens, *t.clone())
	}
	return out
}

// sortedTokens returns the stored records (shared), sorted by accessor id.
func (a *aclState) sortedTokens() []*ACLToken {
	out := make([]*ACLToken, 0, len(a.tokens))
	for _, t := range a.tokens {
		out = append(out, t)
	}
	slices.SortFunc(out, func(x, y *ACLToken) int {
		switch {
		case x.AccessorID < y.AccessorID:
			return -1
		case x.AccessorID > y.AccessorID:
			return 1
		}
		return 0
	})
	return out
}

// aclListeners are the functions told of ACL changes (OnACLChange).
type aclListeners struct {
	mu  sync.Mutex
	fns []*func()
}

// OnACLChange adds fn to the functions called after every change of the
// ACL state: an ACL command that changed it, and every snapshot restore
// (Raft's, or a backup's). fn runs on the goroutine that applied the
// change, after the FSM's lock is released and before Apply returns — so
// before the proposer of the command learns its result. It may read the
// FSM (ACLState); it must be quick, as the next entries wait for it.
// Changes may be told in one call (a batch of entries); a call may come
// when nothing changed since the last (compare ACLState's Version). The
// returned function removes fn. Safe to call at any time.
func (f *FSM) OnACLChange(fn func()) (remove func()) {
	p := &fn
	f.aclListeners.mu.Lock()
	f.aclListeners.fns = append(f.aclListeners.fns, p)
	f.aclListeners.mu.Unlock()
	return func() {
		f.aclListeners.mu.Lock()
		defer f.aclListeners.mu.Unlock()
		f.aclListeners.fns = slices.DeleteFunc(f.aclListeners.fns, func(q *func()) bool { return q == p })
	}
}

// notifyACL calls the listeners. The FSM's lock must NOT be held.
func (f *FSM) notifyACL() {
	f.aclListeners.mu.Lock()
	fns := slices.Clone(f.aclListeners.fns)
	f.aclListeners.mu.Unlock()
	for _, fn := range fns {
		(*fn)()
	}
}

// aclChangedLocked notes a change of the ACL state: the version moves, and
// the listeners are called once the lock is released. Lock must be held.
func (f *FSM) aclChangedLocked() {
	f.aclVersion++
	f.aclPending = true
}

// takeACLPendingLocked reports whether the ACL state changed since the last
// call. Lock must be held.
func (f *FSM) takeACLPendingLocked() bool {
	p := f.aclPending
	f.aclPending = false
	return p
}

// checkACLToken checks a record's own fields (not its indices): what every
// stored token satisfies. Errors wrap codes.ErrInvalidArgument.
func checkACLToken(t *ACLToken) error {
	if err := checkAccessorID(t.AccessorID); err != nil {
		return err
	}
	switch {
	case t.AccessorID == ACLAnonymousID && len(t.SecretHash) != 0:
		return codes.Invalid("the anonymous token has no secret, so no secret hash")
	case t.AccessorID == ACLAnonymousID && t.ExpiresAt != 0:
		return codes.Invalid("the anonymous token does not expire")
	case t.AccessorID != ACLAnonymousID && len(t.SecretHash) != aclHashLen:
		return codes.Invalid("token %s has a secret hash of %d bytes, not %d (SHA-256)", t.AccessorID, len(t.SecretHash), aclHashLen)
	case t.ExpiresAt < 0:
		return codes.Invalid("token %s expires at %d, before 1970", t.AccessorID, t.ExpiresAt)
	case len(t.Description) > MaxACLDescription:
		return codes.Invalid("token %s has a description of %d bytes, the limit is %d", t.AccessorID, len(t.Description), MaxACLDescription)
	case len(t.Rules) > MaxACLRules:
		return codes.Invalid("token %s has %d rules, the limit is %d", t.AccessorID, len(t.Rules), MaxACLRules)
	}
	for _, r := range t.Rules {
		if r == "" || len(r) > MaxACLRuleLen {
			return codes.Invalid("token %s has a rule of %d bytes, not 1 to %d", t.AccessorID, len(r), MaxACLRuleLen)
		}
	}
	return nil
}

// checkAccessorID accepts 1 to 64 letters, digits and dashes: the acl
// package's UUIDs and "anonymous" (never a '.', which ends the accessor id
// in a credential).
func checkAccessorID(id string) error {
	if id == "" || len(id) > maxACLAccessorLen {
		return codes.Invalid("accessor id of %d bytes, not 1 to %d", len(id), maxACLAccessorLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return codes.Invalid("accessor id %q has %q at byte %d: letters, digits and '-' only", id, c, i)
		}
	}
	return nil
}

var errNotBootstrapped = codes.Errorf(codes.ErrRefused, "ACLs have not been bootstrapped: run acl bootstrap first")

// aclBootstrapLocked applies an acl-bootstrap command: refused (nothing
// changes) once bootstrapped. Lock must be held.
func (f *FSM) aclBootstrapLocked(index uint64, c *ACLBootstrapCommand) *Result {
	r := &Result{Index: index}
	a := &f.st.acl
	if a.bootstrapIndex != 0 {
		r.Err = codes.Errorf(codes.ErrRefused, "ACLs were bootstrapped already, at index %d", a.bootstrapIndex)
		return r
	}
	mgmt, anon := c.Management.clone(), c.Anonymous.clone()
	switch {
	case anon.AccessorID != ACLAnonymousID:
		r.Err = codes.Invalid("acl bootstrap: the anonymous token's accessor id is %q, not %q", anon.AccessorID, ACLAnonymousID)
	case mgmt.AccessorID == ACLAnonymousID:
		r.Err = codes.Invalid("acl bootstrap: the management token cannot be the anonymous token")
	}
	for _, t := range []*ACLToken{mgmt, anon} {
		if r.Err == nil {
			if err := checkACLToken(t); err != nil {
				r.Err = fmt.Errorf("acl bootstrap: %w", err)
			}
		}
	}
	if r.Err != nil {
		return r
	}
	for _, t := range []*ACLToken{mgmt, anon} {
		t.CreateIndex, t.ModifyIndex = index, index
	}
	f.st.acl = aclState{bootstrapIndex: index, index: index, tokens: map[string]*ACLToken{mgmt.AccessorID: mgmt, anon.AccessorID: anon}}
	f.aclChangedLocked()
	r.Changed, r.ACLToken = true, mgmt.clone()
	return r
}

// aclSetTokenLocked applies an acl-set-token command. Lock must be held.
func (f *FSM) aclSetTokenLocked(index uint64, c *ACLSetTokenCommand) *Result {
	r := &Result{Index: index}
	a := &f.st.acl
	if a.bootstrapIndex == 0 {
		r.Err = errNotBootstrapped
		return r
	}
	old := a.tokens[c.Token.AccessorID]
	var t *ACLToken
	switch {
	case c.Create && old != nil:
		r.Err = codes.Errorf(codes.ErrRefused, "a token with accessor id %s exists already", c.Token.AccessorID)
		return r
	case c.Create:
		t = c.Token.clone()
		t.CreateIndex = index
	case old == nil:
		r.Err = codes.Errorf(codes.ErrNotFound, "no token has accessor id %s", c.Token.AccessorID)
		return r
	default:
		t = old.clone()
		t.Description, t.Rules = c.Token.Description, slices.Clone(c.Token.Rules)
	}
	t.ModifyIndex = index
	if err := checkACLToken(t); err != nil {
		r.Err = err
		return r
	}
	a.tokens[t.AccessorID] = t
	a.index = index
	f.aclChangedLocked()
	r.Changed, r.ACLToken = true, t.clone()
	return r
}

// aclDeleteTokenLocked applies an acl-delete-token command. Lock must be
// held.
func (f *FSM) aclDeleteTokenLocked(index uint64, c *ACLDeleteTokenCommand) *Result {
	r := &Result{Index: index}
	a := &f.st.acl
	switch {
	case a.bootstrapIndex == 0:
		r.Err = errNotBootstrapped
	case c.AccessorID == ACLAnonymousID:
		r.Err = codes.Errorf(codes.ErrRefused, "the anonymous token cannot be deleted: update its rules instead")
	case a.tokens[c.AccessorID] == nil:
		r.Err = codes.Errorf(codes.ErrNotFound, "no token has accessor id %s", c.AccessorID)
	default:
		delete(a.tokens, c.AccessorID)
		a.index = index
		f.aclChangedLocked()
		r.Changed = true
	}
	return r
}

// checkACLState checks a snapshot's ACL section (nil: not bootstrapped) at
// index applied: the invariants above, so that a restored state is one the
// commands could have made.
func checkACLState(s *snapshotACL, applied uint64) error {
	if s == nil {
		return nil
	}
	if s.BootstrapIndex == 0 || s.BootstrapIndex > s.Index || s.Index > applied {
		return fmt.Errorf("its ACL state was bootstrapped at index %d and last changed at %d: not 0 < bootstrap <= last change <= the snapshot's %d: %w",
			s.BootstrapIndex, s.Index, applied, ErrBadSnapshot)
	}
	seen := make(map[string]bool, len(s.Tokens))
	for i := range s.Tokens {
		t := &s.Tokens[i]
		if err := checkACLToken(t); err != nil {
			return fmt.Errorf("ACL token %d of %d: %v: %w", i+1, len(s.Tokens), err, ErrBadSnapshot)
		}
		if seen[t.AccessorID] {
			return fmt.Errorf("ACL token %s appears twice: %w", t.AccessorID, ErrBadSnapshot)
		}
		seen[t.AccessorID] = true
		if t.CreateIndex < s.BootstrapIndex || t.CreateIndex > t.ModifyIndex || t.ModifyIndex > s.Index {
			return fmt.Errorf("ACL token %s has indices %d (create) and %d (modify), not bootstrap %d <= create <= modify <= last change %d: %w",
				t.AccessorID, t.CreateIndex, t.ModifyIndex, s.BootstrapIndex, s.Index, ErrBadSnapshot)
		}
	}
	if !seen[ACLAnonymousID] {
		return fmt.Errorf("its ACL state has no anonymous token, which bootstrap makes and nothing deletes: %w", ErrBadSnapshot)
	}
	return nil
}
