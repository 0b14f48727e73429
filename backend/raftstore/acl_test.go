package raftstore_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/backend/raftstore"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// The tests drive the stores of in-process clusters directly, as the ACL
// guard does once it has checked the caller's rights.

// tokenOn returns node n's view of a token.
func tokenOn(n *tc.Node, id string) (acl.Token, bool) {
	return n.Srv.Store().ACLTable().Token(id)
}

// retired reports whether t's Changed channel is closed.
func retired(t *acl.Table) bool {
	select {
	case <-t.Changed():
		return true
	default:
		return false
	}
}

// resolvesEverywhere waits until every running node resolves cred to the
// token accessorID, with want access on tokens.
func resolvesEverywhere(t *testing.T, c *tc.Cluster, cred, accessorID string, want acl.Access) {
	t.Helper()
	tc.WaitFor(t, 10*time.Second, "every node to resolve the credential of "+accessorID, func() bool {
		for _, n := range c.Running() {
			id, err := n.Srv.Store().ACLTable().Resolve(cred, time.Now())
			if err != nil || id.Who() != accessorID || id.ACL() != want {
				return false
			}
		}
		return true
	})
}

// TestRaftStore_ACLBootstrapOnce: on a one-node cluster, the store starts
// with an empty table; bootstrap makes the management token — in the
// table, with its rules, before the call returns, the old table retired —
// and the anonymous token; a second bootstrap is refused by the FSM (the
// guard's own check bypassed) and changes nothing.
func TestRaftStore_ACLBootstrapOnce(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 1})
	st := c.WaitLeader().Srv.Store()
	ctx := tc.Context(t, 30*time.Second)
	before := st.ACLTable()
	if idx, ok := before.Bootstrapped(); ok || idx != 0 || before.Index() != 0 || len(before.Tokens()) != 0 {
		t.Fatalf("before bootstrap the table is bootstrapped at %d with %d tokens", idx, len(before.Tokens()))
	}
	if _, err := before.Resolve("", time.Now()); !errors.Is(err, acl.ErrNotBootstrapped) {
		t.Fatalf("resolve before bootstrap: %v", err)
	}

	res, err := st.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, _, ok := acl.SplitCredential(res.Secret)
	if !ok || id != res.Token.AccessorID || acl.CheckAccessorID(id) != nil {
		t.Fatalf("bootstrap answered credential %q for accessor %q", res.Secret, res.Token.AccessorID)
	}
	if !slices.Equal(res.Token.Rules, acl.ManagementRules) || res.Index == 0 || res.Token.CreateIndex != res.Index ||
		res.Token.ModifyIndex != res.Index || res.Token.ExpiresAtMillis != 0 {
		t.Errorf("bootstrap answered %+v", res)
	}
	if !retired(before) {
		t.Error("the table before bootstrap was not retired when bootstrap returned")
	}
	table := st.ACLTable()
	if idx, ok := table.Bootstrapped(); !ok || idx != res.Index || table.Index() != res.Index || len(table.Tokens()) != 2 {
		t.Fatalf("after bootstrap: bootstrapped %v at %d, index %d, %d tokens", ok, idx, table.Index(), len(table.Tokens()))
	}
	who, err := table.Resolve(res.Secret, time.Now())
	if err != nil || who.Who() != id || who.ACL() != acl.Write || who.Operator() != acl.Write || who.Service("any") != acl.Write {
		t.Fatalf("resolve the management credential: %+v, %v", who, err)
	}
	if anon, err := table.Resolve("", time.Now()); err != nil || !anon.Anonymous || anon.Service("any") != acl.None {
		t.Fatalf("resolve no credential: %+v, %v", anon, err)
	}
	if a, ok := table.Token(acl.AnonymousID); !ok || len(a.SecretHash) != 0 || len(a.Rules) != 0 || a.CreateIndex != res.Index {
		t.Errorf("anonymous token = %+v, %v", a, ok)
	}

	_, err = st.ACLBootstrap(ctx)
	if !errors.Is(err, codes.ErrRefused) || !strings.Contains(err.Error(), "bootstrapped already") {
		t.Fatalf("second bootstrap: %v, want refused", err)
	}
	if st.ACLTable() != table || retired(table) {
		t.Error("a refused bootstrap replaced the table")
	}
	if tok, _ := table.Token(id); tok.ModifyIndex != res.Index {
		t.Errorf("management token after the refused bootstrap: %+v", tok)
	}
}

// TestRaftStore_ACLTokensReplicate: on a three-node cluster, the leader's
// writes reach every node's table (each old table retired): a create with
// an expiry from the leader's clock, an update that keeps the secret,
// expiry and create index, a delete; and the FSM's refusals come back with
// their codes.
func TestRaftStore_ACLTokensReplicate(t *testing.T) {
	c := tc.New(t, tc.Options{})
	leader := c.WaitLeader()
	st := leader.Srv.Store()
	ctx := tc.Context(t, time.Minute)
	boot, err := st.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resolvesEverywhere(t, c, boot.Secret, boot.Token.AccessorID, acl.Write)

	tables := map[string]*acl.Table{}
	for _, n := range c.Running() {
		tables[n.ID] = n.Srv.Store().ACLTable()
	}
	start := time.Now()
	rules := []string{`service "web" write`}
	cr, err := st.ACLCreateToken(ctx, wire.ACLTokenCreateRequest{Description: "web deployer", Rules: rules, ExpiresInMillis: time.Hour.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.Token.AccessorID
	if got, _, _ := acl.SplitCredential(cr.Secret); got != id || cr.Index <= boot.Index || cr.Token.CreateIndex != cr.Index ||
		cr.Token.Description != "web deployer" || !slices.Equal(cr.Token.Rules, rules) {
		t.Fatalf("create answered %+v", cr)
	}
	if exp := time.UnixMilli(cr.Token.ExpiresAtMillis); exp.Before(start.Add(time.Hour-time.Second)) || exp.After(time.Now().Add(time.Hour+time.Second)) {
		t.Errorf("the token expires at %v, want an hour after %v", exp, start)
	}
	if _, ok := st.ACLTable().Token(id); !ok {
		t.Error("the leader's table lacks the token when create returns")
	}
	tc.WaitFor(t, 10*time.Second, "every node to hold the new token", func() bool {
		for _, n := range c.Running() {
			if tok, ok := tokenOn(n, id); !ok || tok.CreateIndex != cr.Index {
				return false
			}
		}
		return true
	})
	for _, n := range c.Running() {
		if !retired(tables[n.ID]) {
			t.Errorf("%s: the table before the create was not retired", n.ID)
		}
		who, err := n.Srv.Store().ACLTable().Resolve(cr.Secret, time.Now())
		if err != nil || who.Service("web") != acl.Write || who.Service("db") != acl.None || who.ACL() != acl.None {
			t.Errorf("%s: resolve the new credential: %+v, %v", n.ID, who, err)
		}
		if _, err := n.Srv.Store().ACLTable().Resolve(cr.Secret, start.Add(2*time.Hour)); !errors.Is(err, codes.ErrPermissionDenied) {
			t.Errorf("%s: the credential two hours on: %v, want expired", n.ID, err)
		}
	}
	created, _ := st.ACLTable().Token(id)

	up, err := st.ACLUpdateToken(ctx, wire.ACLTokenUpdateRequest{AccessorID: id, Description: "web and db", Rules: []string{`service "web" write`, `service "db" read`}})
	if err != nil {
		t.Fatal(err)
	}
	if up.Index <= cr.Index || up.Token.ModifyIndex != up.Index || up.Token.CreateIndex != cr.Index || up.Token.Description != "web and db" ||
		len(up.Token.Rules) != 2 || up.Token.ExpiresAtMillis != cr.Token.ExpiresAtMillis {
		t.Fatalf("update answered %+v", up)
	}
	tc.WaitFor(t, 10*time.Second, "every node to hold the update", func() bool {
		for _, n := range c.Running() {
			if tok, ok := tokenOn(n, id); !ok || tok.ModifyIndex != up.Index {
				return false
			}
		}
		return true
	})
	for _, n := range c.Running() {
		tok, _ := tokenOn(n, id)
		if !bytes.Equal(tok.SecretHash, created.SecretHash) || !tok.ExpiresAt.Equal(created.ExpiresAt) || tok.CreateIndex != cr.Index {
			t.Errorf("%s: the update changed the secret, expiry or create index: %+v, was %+v", n.ID, tok, created)
		}
		if who, err := n.Srv.Store().ACLTable().Resolve(cr.Secret, time.Now()); err != nil || who.Service("db") != acl.Read {
			t.Errorf("%s: after the update the credential resolves to %+v, %v", n.ID, who, err)
		}
	}

	idx, err := st.ACLDeleteToken(ctx, wire.ACLTokenIDRequest{AccessorID: id})
	if err != nil || idx <= up.Index {
		t.Fatalf("delete = %d, %v", idx, err)
	}
	tc.WaitFor(t, 10*time.Second, "every node to drop the token", func() bool {
		for _, n := range c.Running() {
			if _, ok := tokenOn(n, id); ok || n.Srv.Store().ACLTable().Index() != idx {
				return false
			}
		}
		return true
	})
	for _, n := range c.Running() {
		if _, err := n.Srv.Store().ACLTable().Resolve(cr.Secret, time.Now()); !errors.Is(err, codes.ErrPermissionDenied) {
			t.Errorf("%s: a deleted token resolves: %v", n.ID, err)
		}
	}

	for _, x := range []struct {
		name string
		call func() error
		want error
	}{
		{"delete again", func() error { _, err := st.ACLDeleteToken(ctx, wire.ACLTokenIDRequest{AccessorID: id}); return err }, codes.ErrNotFound},
		{"update a deleted token", func() error {
			_, err := st.ACLUpdateToken(ctx, wire.ACLTokenUpdateRequest{AccessorID: id})
			return err
		}, codes.ErrNotFound},
		{"delete the anonymous token", func() error {
			_, err := st.ACLDeleteToken(ctx, wire.ACLTokenIDRequest{AccessorID: acl.AnonymousID})
			return err
		}, codes.ErrRefused},
	} {
		if err := x.call(); !errors.Is(err, x.want) {
			t.Errorf("%s: %v, want %v", x.name, err, x.want)
		}
	}
	anon, err := st.ACLUpdateToken(ctx, wire.ACLTokenUpdateRequest{AccessorID: acl.AnonymousID, Rules: []string{`service "public" read`}})
	if err != nil || anon.Token.AccessorID != acl.AnonymousID || anon.Token.CreateIndex != boot.Index {
		t.Fatalf("update the anonymous token: %+v, %v", anon, err)
	}
}

// leaderForwarder stands in for the RPC layer between a follower and the
// leader: it sends the request through the wire encoding, calls the
// leader's store as its RPC server would (marked forwarded), and sends the
// answer — or the error, as a response header carries it — back through
// the wire encoding.
type leaderForwarder struct {
	c     *tc.Cluster
	mu    sync.Mutex
	calls []forwardedCall
}

type forwardedCall struct {
	addr, method string
	forwarded    bool
	req          any
}

// throughWire encodes v as a frame's body and decodes it into out.
func throughWire(v, out any) error {
	var buf bytes.Buffer
	if err := wire.WriteFrame(&buf, &wire.Header{Method: "test"}, v, 0); err != nil {
		return err
	}
	f, err := wire.ReadFrame(bufio.NewReader(&buf), wire.DefaultMaxFrame)
	if err != nil {
		return err
	}
	return f.Decode(out)
}

// runningLeader returns the running node that leads, or nil.
func runningLeader(c *tc.Cluster) *tc.Node {
	for _, n := range c.Running() {
		if n.Srv.Node().IsLeader() {
			return n
		}
	}
	return nil
}

func (f *leaderForwarder) Call(ctx context.Context, addr, method string, forwarded bool, req, resp any) error {
	leader := runningLeader(f.c)
	if leader == nil {
		return codes.ErrNoLeader
	}
	if method != wire.MethodReadIndex { // the store's catch-up asks for read indices too
		f.mu.Lock()
		f.calls = append(f.calls, forwardedCall{addr: addr, method: method, forwarded: forwarded, req: req})
		f.mu.Unlock()
	}
	st, fctx := leader.Srv.Store(), backend.WithForwarded(ctx)
	var answer any
	var err error
	switch method {
	case wire.MethodReadIndex:
		var idx uint64
		idx, err = st.ReadIndex(fctx)
		answer = &wire.ReadIndexResponse{Index: idx}
	case wire.MethodACLBootstrap:
		var r wire.ACLBootstrapRequest
		if err := throughWire(req, &r); err != nil {
			return err
		}
		answer, err = st.ACLBootstrap(fctx)
	case wire.MethodACLTokenCreate:
		var r wire.ACLTokenCreateRequest
		if err := throughWire(req, &r); err != nil {
			return err
		}
		answer, err = st.ACLCreateToken(fctx, r)
	case wire.MethodACLTokenUpdate:
		var r wire.ACLTokenUpdateRequest
		if err := throughWire(req, &r); err != nil {
			return err
		}
		answer, err = st.ACLUpdateToken(fctx, r)
	case wire.MethodACLTokenDelete:
		var r wire.ACLTokenIDRequest
		if err := throughWire(req, &r); err != nil {
			return err
		}
		var idx uint64
		idx, err = st.ACLDeleteToken(fctx, r)
		answer = &wire.WriteResponse{Index: idx}
	default:
		return codes.ErrUnknownMethod
	}
	if err != nil {
		hdr := wire.Header{Code: string(codes.Of(err)), Error: err.Error()}
		return hdr.Err()
	}
	return throughWire(answer, resp)
}

func (f *leaderForwarder) take() []forwardedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

// TestRaftStore_ACLWritesOnAFollowerAreForwarded: a follower's store sends
// every ACL write to the leader as the public method with the request
// unchanged, marked forwarded, and answers what the leader answered —
// the secret included, refusals with their codes. The RPC server does not
// route the ACL methods yet, so a second store over the follower's node
// and FSM forwards through leaderForwarder instead of the network; it also
// shows that two stores over one FSM both hear of the changes.
func TestRaftStore_ACLWritesOnAFollowerAreForwarded(t *testing.T) {
	c := tc.New(t, tc.Options{})
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	fwd := &leaderForwarder{c: c}
	st := raftstore.New(raftstore.Config{Logger: slog.New(slog.DiscardHandler)}, follower.Srv.Node(), follower.Srv.FSM(), follower.Srv.Tracker(), nil, fwd)
	ctx := tc.Context(t, time.Minute)
	check := func(what, method string, req any) {
		t.Helper()
		calls := fwd.take()
		if len(calls) != 1 {
			t.Fatalf("%s: %d forwarded calls, want 1: %+v", what, len(calls), calls)
		}
		got := calls[0]
		if got.method != method || !got.forwarded || got.addr != leader.Addr || !reflect.DeepEqual(got.req, req) {
			t.Errorf("%s: forwarded %s (forwarded %v) to %s with %#v; want %s to the leader %s with %#v",
				what, got.method, got.forwarded, got.addr, got.req, method, leader.Addr, req)
		}
	}

	boot, err := st.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("bootstrap", wire.MethodACLBootstrap, &wire.ACLBootstrapRequest{})
	resolvesEverywhere(t, c, boot.Secret, boot.Token.AccessorID, acl.Write)
	if _, err := st.ACLBootstrap(ctx); !errors.Is(err, codes.ErrRefused) {
		t.Errorf("second bootstrap through the follower: %v, want refused", err)
	}
	fwd.take()

	req := wire.ACLTokenCreateRequest{Description: "db reader", Rules: []string{`service "db" read`}}
	cr, err := st.ACLCreateToken(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	check("create", wire.MethodACLTokenCreate, &req)
	if id, _, ok := acl.SplitCredential(cr.Secret); !ok || id != cr.Token.AccessorID || cr.Index == 0 || cr.Token.Description != "db reader" {
		t.Fatalf("create through the follower answered %+v", cr)
	}
	resolvesEverywhere(t, c, cr.Secret, cr.Token.AccessorID, acl.None)
	tc.WaitFor(t, 10*time.Second, "the second store to hold the token", func() bool {
		_, ok := st.ACLTable().Token(cr.Token.AccessorID)
		return ok
	})

	ureq := wire.ACLTokenUpdateRequest{AccessorID: cr.Token.AccessorID, Description: "db writer", Rules: []string{`service "db" write`}}
	up, err := st.ACLUpdateToken(ctx, ureq)
	if err != nil || up.Token.ModifyIndex != up.Index || up.Token.CreateIndex != cr.Index || up.Token.Description != "db writer" {
		t.Fatalf("update through the follower: %+v, %v", up, err)
	}
	check("update", wire.MethodACLTokenUpdate, &ureq)

	dreq := wire.ACLTokenIDRequest{AccessorID: cr.Token.AccessorID}
	idx, err := st.ACLDeleteToken(ctx, dreq)
	if err != nil || idx <= up.Index {
		t.Fatalf("delete through the follower: %d, %v", idx, err)
	}
	check("delete", wire.MethodACLTokenDelete, &dreq)
	tc.WaitFor(t, 10*time.Second, "every store to drop the token", func() bool {
		for _, s := range []*raftstore.Store{st, follower.Srv.Store(), leader.Srv.Store()} {
			if s.ACLTable().Index() != idx {
				return false
			}
		}
		return true
	})
	if _, err := st.ACLDeleteToken(ctx, dreq); !errors.Is(err, codes.ErrNotFound) {
		t.Errorf("delete again through the follower: %v, want not_found", err)
	}
	if !leader.Srv.Node().IsLeader() {
		t.Log("leadership moved during the test; the forwarded calls still reached a leader")
	}
}

// TestRaftStore_ACLSurvivesRestores: a backup restored into the cluster
// brings its tokens back on every node (the tokens made since go, each
// node's old table is retired); and a Raft snapshot followed by a restart
// of every node restores them into the store's first table.
func TestRaftStore_ACLSurvivesRestores(t *testing.T) {
	c := tc.New(t, tc.Options{})
	st := c.WaitLeader().Srv.Store()
	ctx := tc.Context(t, 2*time.Minute)
	boot, err := st.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := st.ACLCreateToken(ctx, wire.ACLTokenCreateRequest{Description: "in the backup", Rules: []string{"operator read"}})
	if err != nil {
		t.Fatal(err)
	}
	sf, err := st.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file, err := io.ReadAll(sf)
	_ = sf.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ACLDeleteToken(ctx, wire.ACLTokenIDRequest{AccessorID: kept.Token.AccessorID}); err != nil {
		t.Fatal(err)
	}
	later, err := st.ACLCreateToken(ctx, wire.ACLTokenCreateRequest{Description: "after the backup"})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(later.Index)
	tables := map[string]*acl.Table{}
	for _, n := range c.Running() {
		tables[n.ID] = n.Srv.Store().ACLTable()
	}
	res, err := st.RestoreSnapshot(ctx, bytes.NewReader(file), int64(len(file)), backend.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc.WaitFor(t, 15*time.Second, "every node to hold the backup's tokens", func() bool {
		for _, n := range c.Running() {
			_, hasKept := tokenOn(n, kept.Token.AccessorID)
			_, hasLater := tokenOn(n, later.Token.AccessorID)
			if !hasKept || hasLater {
				return false
			}
		}
		return true
	})
	for _, n := range c.Running() {
		table := n.Srv.Store().ACLTable()
		if !retired(tables[n.ID]) {
			t.Errorf("%s: the table before the restore was not retired", n.ID)
		}
		if idx, ok := table.Bootstrapped(); !ok || idx != boot.Index || table.Index() != res.Index {
			t.Errorf("%s: after the restore: bootstrapped at %d (%v), last change %d; want %d and the restore's %d", n.ID, idx, ok, table.Index(), boot.Index, res.Index)
		}
		if who, err := table.Resolve(kept.Secret, time.Now()); err != nil || who.Operator() != acl.Read {
			t.Errorf("%s: the backup's token does not resolve: %+v, %v", n.ID, who, err)
		}
		if _, err := table.Resolve(later.Secret, time.Now()); !errors.Is(err, codes.ErrPermissionDenied) {
			t.Errorf("%s: a token made after the backup resolves: %v", n.ID, err)
		}
	}

	// Raft snapshots, then every node restarts from its own.
	for _, n := range c.Running() {
		if err := n.Srv.Node().Snapshot(); err != nil {
			t.Fatalf("snapshot %s: %v", n.ID, err)
		}
	}
	for i := range c.Nodes {
		c.Stop(i)
	}
	for i := range c.Nodes {
		c.Restart(i)
	}
	c.WaitLeader()
	tc.WaitFor(t, 15*time.Second, "every restarted node to hold the tokens", func() bool {
		for _, n := range c.Running() {
			if _, ok := tokenOn(n, kept.Token.AccessorID); !ok {
				return false
			}
		}
		return true
	})
	resolvesEverywhere(t, c, boot.Secret, boot.Token.AccessorID, acl.Write)
	resolvesEverywhere(t, c, kept.Secret, kept.Token.AccessorID, acl.None)
}

// syncBuffer is a bytes.Buffer for several goroutines' log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRaftStore_ACLSecretsStayOut: the secrets bootstrap and create answer
// are nowhere on any node — not in a Raft log entry, not in any file of
// its data dir (log, snapshots), not in its log lines (at debug level) —
// while the secrets' hashes are in the log entries, which shows the scan
// reads them.
func TestRaftStore_ACLSecretsStayOut(t *testing.T) {
	logs := &syncBuffer{}
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	st := c.WaitLeader().Srv.Store()
	ctx := tc.Context(t, time.Minute)
	boot, err := st.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := st.ACLCreateToken(ctx, wire.ACLTokenCreateRequest{Description: "secret keeper", Rules: []string{`service "vault" write`}, ExpiresInMillis: 60000})
	if err != nil {
		t.Fatal(err)
	}
	up, err := st.ACLUpdateToken(ctx, wire.ACLTokenUpdateRequest{AccessorID: cr.Token.AccessorID, Description: "still secret"})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(up.Index)
	var secrets, hashes [][]byte
	for _, cred := range []string{boot.Secret, cr.Secret} {
		_, secret, ok := acl.SplitCredential(cred)
		if !ok {
			t.Fatalf("credential %q", cred)
		}
		secrets = append(secrets, []byte(secret))
		hashes = append(hashes, acl.HashSecret(secret))
	}
	holdsSecret := func(b []byte) bool {
		return slices.ContainsFunc(secrets, func(s []byte) bool { return bytes.Contains(b, s) })
	}
	for _, n := range c.Running() {
		for _, tok := range n.Srv.FSM().ACLState().Tokens {
			if holdsSecret([]byte(tok.AccessorID + tok.Description + strings.Join(tok.Rules, "") + string(tok.SecretHash))) {
				t.Errorf("%s: the FSM's token %s holds a secret", n.ID, tok.AccessorID)
			}
		}
		if err := n.Srv.Node().Snapshot(); err != nil {
			t.Fatalf("snapshot %s: %v", n.ID, err)
		}
	}
	for i := range c.Nodes {
		c.Stop(i)
	}
	if holdsSecret([]byte(logs.String())) {
		t.Error("a log line holds a secret")
	}
	if !strings.Contains(logs.String(), "discoverd node started") {
		t.Error("no log lines were captured")
	}

	for _, n := range c.Nodes {
		// Every file of the data dir.
		err := filepath.WalkDir(n.Dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if holdsSecret(b) {
				t.Errorf("%s: %s holds a secret", n.ID, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Every Raft log entry.
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(n.Dir, "raft.db"), BoltOptions: &bbolt.Options{Timeout: time.Second, ReadOnly: true}})
		if err != nil {
			t.Fatal(err)
		}
		first, _ := store.FirstIndex()
		last, _ := store.LastIndex()
		seen := map[fsm.MessageType]int{}
		hashesSeen := make([]bool, len(hashes))
		for i := first; i <= last && i > 0; i++ {
			var l raft.Log
			if err := store.GetLog(i, &l); err != nil {
				t.Fatalf("%s: log entry %d: %v", n.ID, i, err)
			}
			if holdsSecret(l.Data) || holdsSecret(l.Extensions) {
				t.Errorf("%s: log entry %d holds a secret", n.ID, i)
			}
			if l.Type == raft.LogCommand && len(l.Data) > 0 {
				seen[fsm.MessageType(l.Data[0])]++
			}
			for j, h := range hashes {
				hashesSeen[j] = hashesSeen[j] || bytes.Contains(l.Data, h)
			}
		}
		_ = store.Close()
		// (Writes made one after another are entries of their own; the
		// hashes would be found in a batch entry all the same.)
		if seen[fsm.ACLBootstrapType] != 1 || seen[fsm.ACLSetTokenType] != 2 || slices.Contains(hashesSeen, false) {
			t.Errorf("%s: the scan saw entries %v (hashes found %v): it does not read the ACL entries", n.ID, seen, hashesSeen)
		}
	}
}

// TestRaftStore_ACLBoundsMatch: the FSM's copies of acl's bounds (the FSM
// does not import acl) are acl's.
func TestRaftStore_ACLBoundsMatch(t *testing.T) {
	if fsm.MaxACLDescription != acl.MaxDescription || fsm.MaxACLRules != acl.MaxRules || fsm.MaxACLRuleLen != acl.MaxRuleLen || fsm.ACLAnonymousID != acl.AnonymousID {
		t.Errorf("fsm bounds %d %d %d %q, acl's %d %d %d %q", fsm.MaxACLDescription, fsm.MaxACLRules, fsm.MaxACLRuleLen, fsm.ACLAnonymousID,
			acl.MaxDescription, acl.MaxRules, acl.MaxRuleLen, acl.AnonymousID)
	}
}

// TestRaftStore_ACLWritesAnsweredOnceEveryMemberHasThem: an ACL write is
// answered once every member that answers has it in its token table, so a
// token used straight after its creation (or after bootstrap) works on any
// node, and a deleted one is refused everywhere — no waiting in between.
func TestRaftStore_ACLWritesAnsweredOnceEveryMemberHasThem(t *testing.T) {
	c := tc.New(t, tc.Options{})
	leader := c.WaitLeader()
	st := leader.Srv.Store()
	ctx := tc.Context(t, time.Minute)
	everywhere := func(what, cred string, ok bool) {
		t.Helper()
		for _, n := range c.Running() {
			_, err := n.Srv.Store().ACLTable().Resolve(cred, time.Now())
			if (err == nil) != ok {
				t.Errorf("%s: %s resolves: %v, want ok %v", what, n.ID, err, ok)
			}
		}
	}
	for round := 0; round < 5; round++ {
		var boot wire.ACLTokenSecret
		if round == 0 {
			var err error
			if boot, err = st.ACLBootstrap(ctx); err != nil {
				t.Fatal(err)
			}
			everywhere("after bootstrap", boot.Secret, true)
		}
		cr, err := st.ACLCreateToken(ctx, wire.ACLTokenCreateRequest{Description: "round", Rules: []string{`service "web" write`}})
		if err != nil {
			t.Fatal(err)
		}
		everywhere("after create", cr.Secret, true)
		if _, err := st.ACLDeleteToken(ctx, wire.ACLTokenIDRequest{AccessorID: cr.Token.AccessorID}); err != nil {
			t.Fatal(err)
		}
		everywhere("after delete", cr.Secret, false)
	}
	// A member that does not answer is not waited for past ACLSpread.
	for i, n := range c.Nodes {
		if n != leader {
			c.Kill(i)
			break
		}
	}
	start := time.Now()
	if _, err := st.ACLCreateToken(ctx, wire.ACLTokenCreateRequest{Description: "one down"}); err != nil {
		t.Fatal(err)
	}
	// Bounded by ACLSpread and a status round, not by the test's minute.
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("create with a member down took %v (ACLSpread %v)", took, raftstore.ACLSpread)
	}
}
