package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// ---------------------------------------------------------------------------
// Helpers.

// aclHash is a stand-in for acl.HashSecret (the fsm does not import acl).
func aclHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// accessor makes an accessor id of acl's form (a UUID) from n.
func accessor(n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-000000000000", n)
}

func mgmtToken() ACLToken {
	return ACLToken{AccessorID: accessor(1), SecretHash: aclHash("s1"), Description: "bootstrap",
		Rules: []string{`service "*" write`, "operator write", "acl write"}}
}

func (h *harness) aclBootstrap() *Result {
	h.t.Helper()
	return h.apply(ACLBootstrapType, ACLBootstrapCommand{Management: mgmtToken(), Anonymous: ACLToken{AccessorID: ACLAnonymousID}})
}

func (h *harness) aclCreate(n int, rules ...string) *Result {
	h.t.Helper()
	return h.apply(ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: ACLToken{AccessorID: accessor(n),
		SecretHash: aclHash(fmt.Sprint("s", n)), Description: fmt.Sprint("token ", n), Rules: rules}})
}

func (h *harness) aclUpdate(id, desc string, rules ...string) *Result {
	h.t.Helper()
	return h.apply(ACLSetTokenType, ACLSetTokenCommand{Token: ACLToken{AccessorID: id, Description: desc, Rules: rules}})
}

func (h *harness) aclDelete(id string) *Result {
	h.t.Helper()
	return h.apply(ACLDeleteTokenType, ACLDeleteTokenCommand{AccessorID: id})
}

func tokenOf(st ACLState, id string) *ACLToken {
	for i := range st.Tokens {
		if st.Tokens[i].AccessorID == id {
			return &st.Tokens[i]
		}
	}
	return nil
}

// aclStateWithout drops the local Version, for comparing replicas.
func aclStateWithout(st ACLState) ACLState {
	st.Version = 0
	return st
}

// ---------------------------------------------------------------------------

// TestFSM_ACLBootstrap: the bootstrap command makes the management token
// and the anonymous token at its index, once; a second is refused with
// codes.ErrRefused and changes nothing.
func TestFSM_ACLBootstrap(t *testing.T) {
	h := newHarness(t, Config{})
	if st := h.f.ACLState(); st.BootstrapIndex != 0 || st.Index != 0 || len(st.Tokens) != 0 || st.Version != 0 {
		t.Fatalf("a new FSM's ACL state = %+v, want none", st)
	}
	h.register("web", "a:1", nil) // 1
	r := h.aclBootstrap()         // 2
	if r.Err != nil || !r.Changed || r.Index != 2 || r.ACLToken == nil {
		t.Fatalf("bootstrap = %+v", *r)
	}
	want := mgmtToken()
	want.CreateIndex, want.ModifyIndex = 2, 2
	if !reflect.DeepEqual(*r.ACLToken, want) {
		t.Errorf("bootstrap answered %+v, want %+v", *r.ACLToken, want)
	}
	st := h.f.ACLState()
	if st.BootstrapIndex != 2 || st.Index != 2 || st.Version != 1 || len(st.Tokens) != 2 {
		t.Fatalf("ACL state = %+v", st)
	}
	if st.Tokens[0].AccessorID > st.Tokens[1].AccessorID {
		t.Errorf("tokens not sorted: %s, %s", st.Tokens[0].AccessorID, st.Tokens[1].AccessorID)
	}
	if m := tokenOf(st, accessor(1)); m == nil || !reflect.DeepEqual(*m, want) {
		t.Errorf("management token = %+v, want %+v", m, want)
	}
	anon := tokenOf(st, ACLAnonymousID)
	if anon == nil || len(anon.SecretHash) != 0 || len(anon.Rules) != 0 || anon.CreateIndex != 2 || anon.ModifyIndex != 2 {
		t.Errorf("anonymous token = %+v", anon)
	}
	// ACLState is a copy: changing it changes nothing.
	st.Tokens[0].Rules = append(st.Tokens[0].Rules, "x")
	st.Tokens[0].SecretHash = nil
	if again := h.f.ACLState(); reflect.DeepEqual(again, st) {
		t.Error("ACLState shares its tokens with the FSM")
	}

	before, beforeState := dumpState(h.f), h.f.ACLState()
	other := mgmtToken()
	other.AccessorID = accessor(2)
	r = h.apply(ACLBootstrapType, ACLBootstrapCommand{Management: other, Anonymous: ACLToken{AccessorID: ACLAnonymousID}}) // 3
	if !errors.Is(r.Err, codes.ErrRefused) || r.Changed || r.ACLToken != nil || !strings.Contains(r.Err.Error(), "bootstrapped already, at index 2") {
		t.Fatalf("second bootstrap = %+v, want refused", *r)
	}
	after := dumpState(h.f)
	after.Applied = before.Applied // the refused command still took an index
	if !reflect.DeepEqual(after, before) || h.f.ACLState().Version != beforeState.Version {
		t.Errorf("a refused bootstrap changed the state: %s", diffDump(after, before))
	}
}

// TestFSM_ACLSetAndDeleteTokens: create stores the token at its index;
// update changes description and rules only (secret hash, expiry and
// CreateIndex stay, whatever the command says of them); delete removes it;
// the anonymous token is updated like any other. Each change moves the
// ACL state's index.
func TestFSM_ACLSetAndDeleteTokens(t *testing.T) {
	h := newHarness(t, Config{})
	h.aclBootstrap() // 1
	exp := time.Unix(1_900_000_000, 0).UnixNano()
	r := h.apply(ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: ACLToken{AccessorID: accessor(7), SecretHash: aclHash("s7"),
		Description: "web", Rules: []string{`service "web" write`}, ExpiresAt: exp, CreateIndex: 99, ModifyIndex: 99}}) // 2
	want := ACLToken{AccessorID: accessor(7), SecretHash: aclHash("s7"), Description: "web", Rules: []string{`service "web" write`},
		ExpiresAt: exp, CreateIndex: 2, ModifyIndex: 2}
	if r.Err != nil || !r.Changed || r.ACLToken == nil || !reflect.DeepEqual(*r.ACLToken, want) {
		t.Fatalf("create = %+v (token %+v), want %+v", *r, r.ACLToken, want)
	}
	if st := h.f.ACLState(); st.Index != 2 || st.BootstrapIndex != 1 || !reflect.DeepEqual(tokenOf(st, accessor(7)), &want) {
		t.Fatalf("after create: %+v", st)
	}

	h.register("web", "a:1", nil) // 3: not an ACL change
	r = h.apply(ACLSetTokenType, ACLSetTokenCommand{Token: ACLToken{AccessorID: accessor(7), SecretHash: aclHash("other"),
		Description: "web and db", Rules: []string{`service "web" write`, `service "db" read`}, ExpiresAt: 1, CreateIndex: 3}}) // 4
	want.Description, want.Rules, want.ModifyIndex = "web and db", []string{`service "web" write`, `service "db" read`}, 4
	if r.Err != nil || !r.Changed || r.ACLToken == nil || !reflect.DeepEqual(*r.ACLToken, want) {
		t.Fatalf("update = %+v (token %+v), want %+v", *r, r.ACLToken, want)
	}
	if st := h.f.ACLState(); st.Index != 4 || !reflect.DeepEqual(tokenOf(st, accessor(7)), &want) {
		t.Fatalf("after update: %+v", st)
	}

	r = h.aclUpdate(ACLAnonymousID, "everyone", `service "public*" read`) // 5
	if r.Err != nil || r.ACLToken == nil || r.ACLToken.ModifyIndex != 5 || r.ACLToken.CreateIndex != 1 || len(r.ACLToken.SecretHash) != 0 {
		t.Fatalf("update anonymous = %+v (%+v)", *r, r.ACLToken)
	}

	r = h.aclDelete(accessor(7)) // 6
	if r.Err != nil || !r.Changed || r.Index != 6 {
		t.Fatalf("delete = %+v", *r)
	}
	st := h.f.ACLState()
	if st.Index != 6 || tokenOf(st, accessor(7)) != nil || len(st.Tokens) != 2 {
		t.Fatalf("after delete: %+v", st)
	}
	// Created again under the same accessor id: a new token.
	if r := h.aclCreate(7); r.Err != nil || r.ACLToken.CreateIndex != 7 {
		t.Fatalf("create again = %+v", *r)
	}
}

// TestFSM_ACLRefusals: every refusal leaves the state as it was (but for
// the index the command took), tells no listener, and says why with the
// right code.
func TestFSM_ACLRefusals(t *testing.T) {
	anon := ACLToken{AccessorID: ACLAnonymousID}
	good := func(n int) ACLToken {
		return ACLToken{AccessorID: accessor(n), SecretHash: aclHash("x"), Rules: []string{"acl read"}}
	}
	with := func(n int, change func(*ACLToken)) ACLToken {
		t := good(n)
		change(&t)
		return t
	}
	type step struct {
		typ MessageType
		cmd any
	}
	cases := []struct {
		name      string
		bootstrap bool
		cmd       step
		want      error
		text      string
	}{
		{"create before bootstrap", false, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: good(5)}}, codes.ErrRefused, "not been bootstrapped"},
		{"update before bootstrap", false, step{ACLSetTokenType, ACLSetTokenCommand{Token: anon}}, codes.ErrRefused, "not been bootstrapped"},
		{"delete before bootstrap", false, step{ACLDeleteTokenType, ACLDeleteTokenCommand{AccessorID: accessor(1)}}, codes.ErrRefused, "not been bootstrapped"},
		{"bootstrap without the anonymous token", false, step{ACLBootstrapType, ACLBootstrapCommand{Management: mgmtToken(), Anonymous: good(2)}}, codes.ErrInvalidArgument, "anonymous"},
		{"bootstrap with a secret for the anonymous token", false, step{ACLBootstrapType, ACLBootstrapCommand{Management: mgmtToken(),
			Anonymous: ACLToken{AccessorID: ACLAnonymousID, SecretHash: aclHash("x")}}}, codes.ErrInvalidArgument, "no secret"},
		{"bootstrap a management token without a hash", false, step{ACLBootstrapType, ACLBootstrapCommand{Management: with(1, func(t *ACLToken) { t.SecretHash = nil }),
			Anonymous: anon}}, codes.ErrInvalidArgument, "secret hash of 0 bytes"},
		{"bootstrap the anonymous token as management", false, step{ACLBootstrapType, ACLBootstrapCommand{Management: anon, Anonymous: anon}}, codes.ErrInvalidArgument, "cannot be the anonymous"},
		{"create an existing token", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(1, func(*ACLToken) {})}}, codes.ErrRefused, "exists already"},
		{"create the anonymous token", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: anon}}, codes.ErrRefused, "exists already"},
		{"create without a hash", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(5, func(t *ACLToken) { t.SecretHash = []byte("short") })}}, codes.ErrInvalidArgument, "5 bytes"},
		{"create with a dot in the accessor id", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(5, func(t *ACLToken) { t.AccessorID = "a.b" })}}, codes.ErrInvalidArgument, "'.'"},
		{"create with an empty accessor id", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(5, func(t *ACLToken) { t.AccessorID = "" })}}, codes.ErrInvalidArgument, "accessor id"},
		{"create with a long description", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(5, func(t *ACLToken) { t.Description = strings.Repeat("d", MaxACLDescription+1) })}}, codes.ErrInvalidArgument, "description"},
		{"create with too many rules", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(5, func(t *ACLToken) { t.Rules = make([]string, MaxACLRules+1) })}}, codes.ErrInvalidArgument, "rules"},
		{"create with a negative expiry", true, step{ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: with(5, func(t *ACLToken) { t.ExpiresAt = -1 })}}, codes.ErrInvalidArgument, "before 1970"},
		{"update a missing token", true, step{ACLSetTokenType, ACLSetTokenCommand{Token: ACLToken{AccessorID: accessor(5)}}}, codes.ErrNotFound, "no token has accessor id " + accessor(5)},
		{"update with a long rule", true, step{ACLSetTokenType, ACLSetTokenCommand{Token: ACLToken{AccessorID: accessor(1), Rules: []string{strings.Repeat("r", MaxACLRuleLen+1)}}}}, codes.ErrInvalidArgument, "rule of"},
		{"delete a missing token", true, step{ACLDeleteTokenType, ACLDeleteTokenCommand{AccessorID: accessor(5)}}, codes.ErrNotFound, "no token has accessor id " + accessor(5)},
		{"delete the anonymous token", true, step{ACLDeleteTokenType, ACLDeleteTokenCommand{AccessorID: ACLAnonymousID}}, codes.ErrRefused, "cannot be deleted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			if tc.bootstrap {
				h.aclBootstrap()
			}
			calls := 0
			h.f.OnACLChange(func() { calls++ })
			before, version := dumpState(h.f), h.f.ACLState().Version
			r := h.apply(tc.cmd.typ, tc.cmd.cmd)
			if !errors.Is(r.Err, tc.want) || r.Changed || r.ACLToken != nil || !strings.Contains(r.Err.Error(), tc.text) {
				t.Fatalf("%s = %+v, want %v saying %q", tc.cmd.typ, *r, tc.want, tc.text)
			}
			after := dumpState(h.f)
			after.Applied = before.Applied
			if !reflect.DeepEqual(after, before) || h.f.ACLState().Version != version || calls != 0 {
				t.Errorf("the refusal changed the state (%d listener calls): %s", calls, diffDump(after, before))
			}
		})
	}
}

// TestFSM_ACLListeners: the listeners hear of every ACL change — once per
// applied batch, after the FSM's lock is released, seeing the new state —
// and of every restore; not of other writes or refusals. A removed
// listener hears nothing more.
func TestFSM_ACLListeners(t *testing.T) {
	h := newHarness(t, Config{})
	var (
		mu       sync.Mutex
		seen     []ACLState
		unlocked = true
	)
	remove := h.f.OnACLChange(func() {
		if !h.f.mu.TryLock() {
			unlocked = false
		} else {
			h.f.mu.Unlock()
		}
		st := h.f.ACLState() // would deadlock under the lock
		mu.Lock()
		seen = append(seen, st)
		mu.Unlock()
	})
	other := 0
	removeOther := h.f.OnACLChange(func() { other++ })
	take := func() []ACLState {
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}

	h.register("web", "a:1", nil) // 1
	if s := take(); len(s) != 0 {
		t.Fatalf("a registration told the listeners: %+v", s)
	}
	h.aclBootstrap() // 2
	if s := take(); len(s) != 1 || s[0].BootstrapIndex != 2 || s[0].Version != 1 {
		t.Fatalf("after bootstrap the listener saw %+v", s)
	}
	h.aclBootstrap() // 3: refused
	if s := take(); len(s) != 0 {
		t.Fatalf("a refused bootstrap told the listeners: %+v", s)
	}
	// A batch entry with two ACL changes and a registration: one call,
	// after both.
	create := func(n int) []byte {
		return mustEncode(t, ACLSetTokenType, ACLSetTokenCommand{Create: true, Token: ACLToken{AccessorID: accessor(n), SecretHash: aclHash("x")}})
	}
	out := h.f.Apply(h.batchLog(create(5), reg(t, "web", "b:1", ""), create(6)))
	if rs := batchResults(t, out, 3); rs[0].Err != nil || rs[2].Err != nil || rs[2].ACLToken.CreateIndex != 6 {
		t.Fatalf("batch results: %+v %+v", *rs[0], *rs[2])
	}
	if s := take(); len(s) != 1 || len(s[0].Tokens) != 4 || s[0].Index != 6 || s[0].Version != 3 {
		t.Fatalf("after the batch the listener saw %+v", s)
	}
	// Several entries applied together: one call.
	h.f.ApplyBatch([]*raft.Log{h.log(ACLDeleteTokenType, ACLDeleteTokenCommand{AccessorID: accessor(5)}), h.log(ACLDeleteTokenType, ACLDeleteTokenCommand{AccessorID: accessor(6)})})
	if s := take(); len(s) != 1 || len(s[0].Tokens) != 2 || s[0].Version != 5 {
		t.Fatalf("after two deletes in one batch the listener saw %+v", s)
	}
	// A restore, even of a state without ACLs.
	if err := h.f.Restore(newTrackingReader(persistBytes(t, New(Config{})))); err != nil {
		t.Fatal(err)
	}
	if s := take(); len(s) != 1 || s[0].BootstrapIndex != 0 || len(s[0].Tokens) != 0 || s[0].Version != 6 {
		t.Fatalf("after a restore the listener saw %+v", s)
	}
	if !unlocked {
		t.Error("a listener was called with the FSM's lock held")
	}
	if other != 4 {
		t.Errorf("the second listener was called %d times, want 4", other)
	}
	remove()
	removeOther()
	h2 := &harness{t: t, f: h.f, index: 100}
	h2.aclBootstrap()
	if s := take(); len(s) != 0 || other != 4 {
		t.Errorf("removed listeners were called: %+v, %d", s, other)
	}
}

// TestFSM_ACLSnapshotRoundTrip: the ACL state survives a snapshot, which
// is then version 3, and the restored replica hashes the same; a restore
// into an FSM with other tokens replaces them.
func TestFSM_ACLSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t, richConfig)
	buildRichState(h)                                                  // 1..18
	h.setMeta("web", "w", 0)                                           // 19
	h.aclBootstrap()                                                   // 20
	h.aclCreate(5, `service "web" write`)                              // 21
	h.aclCreate(6, "operator read")                                    // 22
	h.aclUpdate(ACLAnonymousID, "public", `service "public*" read`)    // 23
	h.aclDelete(accessor(6))                                           // 24
	h.aclUpdate(accessor(5), "web writer", `service "web*" write`, "") // 25: refused (empty rule)
	b := persistBytes(t, h.f)
	if v := snapshotVersionOf(t, b); v != snapshotVersionACL {
		t.Errorf("version %d, want %d", v, snapshotVersionACL)
	}
	other := newHarness(t, Config{})
	other.aclBootstrap()
	other.aclCreate(9)
	if err := other.f.Restore(newTrackingReader(b)); err != nil {
		t.Fatal(err)
	}
	for _, restored := range []*FSM{restoreNew(t, richConfig, b), other.f} {
		if got, want := dumpState(restored), dumpState(h.f); !reflect.DeepEqual(got, want) {
			t.Fatalf("restored state differs: %s", diffDump(got, want))
		}
		if got, want := aclStateWithout(restored.ACLState()), aclStateWithout(h.f.ACLState()); !reflect.DeepEqual(got, want) || got.Index != 24 || len(got.Tokens) != 3 {
			t.Errorf("restored ACL state %+v, want %+v", got, want)
		}
		if _, a := h.f.Hash(); a != func() string { _, b := restored.Hash(); return b }() {
			t.Error("restored replica hashes differently")
		}
	}
	// And it goes on from there like the original.
	hh := &harness{t: t, f: other.f, index: h.index}
	if r := hh.aclCreate(6); r.Err != nil {
		t.Errorf("create after restore: %v", r.Err)
	}
	if r := hh.aclBootstrap(); !errors.Is(r.Err, codes.ErrRefused) {
		t.Errorf("bootstrap after restoring a bootstrapped state: %v, want refused", r.Err)
	}
}

// preACLSnapshotHeader is the snapshot header as it was before ACLs
// (versions 1 and 2): no ACL section.
type preACLSnapshotHeader struct {
	Version          int
	Applied          uint64
	ForgottenThrough uint64
	Services         int
	Requests         []snapshotRequest
}

// encodePreACL writes the state d as a snapshot of version 2 before ACLs.
func encodePreACL(t *testing.T, d dump) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := codec.NewEncoder(&buf, codecHandle)
	hdr := preACLSnapshotHeader{Version: snapshotVersionMeta, Applied: d.Applied, ForgottenThrough: d.ForgottenThrough, Services: len(d.Services), Requests: d.Requests}
	if err := enc.Encode(&hdr); err != nil {
		t.Fatal(err)
	}
	for _, ds := range d.Services {
		ss := snapshotService{Name: ds.Name, History: ds.History, TruncatedThrough: ds.TruncatedThrough, LastIndex: ds.LastIndex, EmptySince: ds.EmptySince, Meta: ds.Meta}
		for i := range ds.Instances {
			ss.Instances = append(ss.Instances, &ds.Instances[i])
		}
		if err := enc.Encode(&ss); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestFSM_RestoresASnapshotFromBeforeACLs: a snapshot written in the
// format before ACLs (version 2, no ACL section) restores — also through
// PrepareRestore — as "not bootstrapped, no tokens", replacing tokens the
// FSM held, and ACLs can be bootstrapped on it afterwards.
func TestFSM_RestoresASnapshotFromBeforeACLs(t *testing.T) {
	h := newHarness(t, richConfig)
	buildRichState(h)
	h.setMeta("web", "w", 0) // 19: version 2
	want := dumpState(h.f)
	old := encodePreACL(t, want)

	bootstrapped := newHarness(t, richConfig)
	bootstrapped.aclBootstrap()
	bootstrapped.aclCreate(5)
	told := 0
	bootstrapped.f.OnACLChange(func() { told++ })
	if err := bootstrapped.f.Restore(newTrackingReader(old)); err != nil {
		t.Fatalf("restore an old snapshot: %v", err)
	}
	if got := dumpState(bootstrapped.f); !reflect.DeepEqual(got, want) {
		t.Fatalf("old snapshot restored to a different state: %s", diffDump(got, want))
	}
	if st := bootstrapped.f.ACLState(); st.BootstrapIndex != 0 || st.Index != 0 || len(st.Tokens) != 0 || told != 1 {
		t.Errorf("ACL state after restoring an old snapshot = %+v (listener told %d times), want none", st, told)
	}
	if _, a := h.f.Hash(); a != func() string { _, b := bootstrapped.f.Hash(); return b }() {
		t.Error("old snapshot restored to a different hash")
	}
	// A backup of that format (the rich state's addresses are not ones a
	// backup may hold).
	b := backupState(t)
	f, sum, _ := prepared(t, encodePreACL(t, dumpState(b.f)), RestoreOptions{})
	if sum.ACLTokens != 0 || sum.Version != snapshotVersionMeta || sum.Instances != 2 {
		t.Errorf("summary of an old snapshot = %+v", sum)
	}
	if st := f.ACLState(); st.BootstrapIndex != 0 || len(st.Tokens) != 0 {
		t.Errorf("prepared old snapshot restored ACL state %+v", st)
	}
	if _, a := b.f.Hash(); a != func() string { _, b := f.Hash(); return b }() {
		t.Error("old backup restored to a different hash")
	}
	hh := &harness{t: t, f: bootstrapped.f, index: h.index}
	if r := hh.aclBootstrap(); r.Err != nil || r.Index != h.index+1 {
		t.Fatalf("bootstrap after restoring an old snapshot: %+v", *r)
	}
}

// TestFSM_ACLHash: the ACL state is part of the state hash: bootstrapping
// changes it, and replicas that differ in one token's rules (or secret
// hash, or expiry) hash differently. A state never bootstrapped hashes as
// before ACLs existed, so hashes of such states agree across versions.
func TestFSM_ACLHash(t *testing.T) {
	build := func(change func(*ACLSetTokenCommand)) string {
		h := newHarness(t, Config{})
		h.register("web", "a:1", nil)
		h.aclBootstrap()
		cmd := ACLSetTokenCommand{Create: true, Token: ACLToken{AccessorID: accessor(5), SecretHash: aclHash("s"), Description: "d", Rules: []string{"acl read"}}}
		if change != nil {
			change(&cmd)
		}
		if r := h.apply(ACLSetTokenType, cmd); r.Err != nil {
			t.Fatal(r.Err)
		}
		_, hash := h.f.Hash()
		return hash
	}
	plain := newHarness(t, Config{})
	plain.register("web", "a:1", nil)
	_, before := plain.f.Hash()
	plain.aclBootstrap()
	if _, after := plain.f.Hash(); after == before {
		t.Error("bootstrapping did not change the hash")
	}
	base := build(nil)
	if build(nil) != base {
		t.Fatal("the same log hashes differently")
	}
	for name, change := range map[string]func(*ACLSetTokenCommand){
		"rules":       func(c *ACLSetTokenCommand) { c.Token.Rules = []string{"acl write"} },
		"no rules":    func(c *ACLSetTokenCommand) { c.Token.Rules = nil },
		"secret hash": func(c *ACLSetTokenCommand) { c.Token.SecretHash = aclHash("t") },
		"description": func(c *ACLSetTokenCommand) { c.Token.Description = "e" },
		"expiry":      func(c *ACLSetTokenCommand) { c.Token.ExpiresAt = 1 },
		"accessor id": func(c *ACLSetTokenCommand) { c.Token.AccessorID = accessor(6) },
	} {
		if build(change) == base {
			t.Errorf("replicas differing in a token's %s hash the same", name)
		}
	}
	// Not bootstrapped (refused ACL commands change nothing): the hash the
	// code before ACLs computed for the same state.
	h := newHarness(t, Config{})
	h.register("web", "a:1", map[string]string{"zone": "x"}) // 1
	h.setMeta("web", "m", 0)                                 // 2
	h.register("db", "b:1", nil)                             // 3
	h.unregister("db", "b:1")                                // 4
	if _, got := h.f.Hash(); got != hashBeforeACLs {
		t.Errorf("a state without ACLs hashes %s, the code before ACLs %s", got, hashBeforeACLs)
	}
}

// hashBeforeACLs is what the code before ACLs computed for the state
// TestFSM_ACLHash builds last.
const hashBeforeACLs = "d0ae8456113fc91eae5a2fe1197e6afd10cad8f9a4b22093011a739b6d4c72e6"

// TestFSM_PrepareRestoreChecksACLState: a backup whose ACL section holds
// what no state holds is refused with ErrBadSnapshot; a good one is
// counted, and restored into a cluster past it, the ACL state's last
// change moves to the restored index with the rest.
func TestFSM_PrepareRestoreChecksACLState(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a:1", nil) // 1
	h.aclBootstrap()              // 2
	h.aclCreate(5, "acl read")    // 3
	h.register("web", "b:1", nil) // 4
	h.aclUpdate(accessor(5), "x") // 5
	h.register("web", "c:1", nil) // 6
	snap := persistBytes(t, h.f)
	f, sum, index := prepared(t, snap, RestoreOptions{Current: 1})
	if sum.ACLTokens != 3 || sum.Version != snapshotVersionACL || index != 6 {
		t.Errorf("summary %+v at %d", sum, index)
	}
	if got, want := aclStateWithout(f.ACLState()), aclStateWithout(h.f.ACLState()); !reflect.DeepEqual(got, want) {
		t.Errorf("restored ACL state %+v, want %+v", got, want)
	}
	f, _, index = prepared(t, snap, RestoreOptions{Current: 40})
	if st := f.ACLState(); index != 41 || st.Index != 41 || st.BootstrapIndex != 2 || len(st.Tokens) != 3 || tokenOf(st, accessor(5)).ModifyIndex != 5 {
		t.Errorf("restored past the cluster at %d: ACL state %+v, want its last change at 41 and the tokens' own indices", index, st)
	}

	decodeHeader := func() (snapshotHeader, []snapshotService) {
		dec := codec.NewDecoderBytes(snap, codecHandle)
		var hdr snapshotHeader
		if err := dec.Decode(&hdr); err != nil {
			t.Fatal(err)
		}
		svcs := make([]snapshotService, hdr.Services)
		for i := range svcs {
			if err := dec.Decode(&svcs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return hdr, svcs
	}
	tok := func(a *snapshotACL, id string) *ACLToken {
		for i := range a.Tokens {
			if a.Tokens[i].AccessorID == id {
				return &a.Tokens[i]
			}
		}
		t.Fatalf("no token %s", id)
		return nil
	}
	for _, tc := range []struct {
		name   string
		change func(*snapshotHeader)
		want   string
	}{
		{"an older version with ACLs", func(h *snapshotHeader) { h.Version = snapshotVersionMeta }, "only version 3"},
		{"bootstrap index 0", func(h *snapshotHeader) { h.ACL.BootstrapIndex = 0 }, "not 0 < bootstrap"},
		{"last change beyond the snapshot", func(h *snapshotHeader) { h.ACL.Index = 7 }, "the snapshot's 6"},
		{"bootstrap after the last change", func(h *snapshotHeader) { h.ACL.BootstrapIndex = 6 }, "not 0 < bootstrap"},
		{"a token twice", func(h *snapshotHeader) { h.ACL.Tokens = append(h.ACL.Tokens, h.ACL.Tokens[0]) }, "appears twice"},
		{"no anonymous token", func(h *snapshotHeader) {
			h.ACL.Tokens = slices.DeleteFunc(h.ACL.Tokens, func(t ACLToken) bool { return t.AccessorID == ACLAnonymousID })
		}, "no anonymous token"},
		{"a short hash", func(h *snapshotHeader) { tok(h.ACL, accessor(5)).SecretHash = []byte{1} }, "1 bytes"},
		{"a token made before bootstrap", func(h *snapshotHeader) { tok(h.ACL, accessor(5)).CreateIndex = 1 }, "bootstrap 2 <= create"},
		{"a token modified after the last change", func(h *snapshotHeader) { tok(h.ACL, accessor(5)).ModifyIndex = 6 }, "<= last change 5"},
		{"a bad accessor id", func(h *snapshotHeader) { tok(h.ACL, accessor(5)).AccessorID = "x y" }, "letters, digits"},
	} {
		hdr, svcs := decodeHeader()
		tc.change(&hdr)
		var b bytes.Buffer
		enc := codec.NewEncoder(&b, codecHandle)
		if err := enc.Encode(&hdr); err != nil {
			t.Fatal(err)
		}
		for i := range svcs {
			if err := enc.Encode(&svcs[i]); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := PrepareRestore(bytes.NewReader(b.Bytes()), io.Discard, RestoreOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot saying %q", tc.name, err, tc.want)
		}
	}
}

// TestFSM_ACLCommandsEncode: the ACL commands round-trip through Encode
// and decode, and have names; the journal records them by type only.
func TestFSM_ACLCommandsEncode(t *testing.T) {
	for _, tc := range []struct {
		typ  MessageType
		cmd  any
		back any
		name string
	}{
		{ACLBootstrapType, &ACLBootstrapCommand{Management: mgmtToken(), Anonymous: ACLToken{AccessorID: ACLAnonymousID, Rules: []string{}}}, new(ACLBootstrapCommand), "acl-bootstrap"},
		{ACLSetTokenType, &ACLSetTokenCommand{Create: true, Token: ACLToken{AccessorID: accessor(3), SecretHash: aclHash("z"), Rules: []string{"acl read"}, ExpiresAt: 1 << 60}}, new(ACLSetTokenCommand), "acl-set-token"},
		{ACLDeleteTokenType, &ACLDeleteTokenCommand{AccessorID: accessor(3)}, new(ACLDeleteTokenCommand), "acl-delete-token"},
	} {
		b, err := Encode(tc.typ, tc.cmd)
		if err != nil || MessageType(b[0]) != tc.typ {
			t.Fatalf("Encode(%s) = %x, %v", tc.typ, b[:1], err)
		}
		if err := decode(b[1:], tc.back); err != nil || !reflect.DeepEqual(tc.back, tc.cmd) {
			t.Errorf("%s round trip = %+v, %v", tc.typ, tc.back, err)
		}
		if tc.typ.String() != tc.name {
			t.Errorf("%d.String() = %q, want %q", tc.typ, tc.typ, tc.name)
		}
	}
	j := &memJournal{}
	h := newHarness(t, Config{})
	h.f.SetJournal(j)
	h.aclBootstrap()
	h.aclDelete(ACLAnonymousID)
	if len(j.entries) != 2 || j.entries[0].Type != ACLBootstrapType || !j.entries[0].Changed || j.entries[1].Type != ACLDeleteTokenType ||
		j.entries[1].Changed || !errors.Is(j.entries[1].Err, codes.ErrRefused) || j.entries[0].Name != "" {
		t.Errorf("journal = %+v", j.entries)
	}
}
