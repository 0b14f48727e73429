package raftstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
)

// ACL tokens (issue 16): the FSM replicates the records (fsm/acl.go); the
// store turns them into the acl.Table the guard reads, and proposes the
// token writes on the leader.
//
// The table. Every node holds one immutable *acl.Table, swapped whenever
// the FSM's ACL state changes: the FSM calls refreshACL after every applied
// batch that changed it and after every restore (Raft's snapshot install,
// a backup's restore), before Apply returns — so on the leader the table
// holds a write before the write is acknowledged. After the swap the old
// table is retired: its Changed channel closes, and the guard rechecks the
// watches it allowed.
//
// Secrets. The leader makes a credential (acl.NewCredential) and proposes
// only its hash: the secret is in the answer to the caller, and nowhere
// else — not in the log, the state, a snapshot or a log line.

var _ acl.Store = (*Store)(nil)

// aclView is the store's current token table.
type aclView struct {
	mu      sync.Mutex // one rebuild at a time
	version uint64     // the fsm.ACLState Version the table was built from
	table   atomic.Pointer[acl.Table]
}

// startACL installs the empty table, subscribes to the FSM's ACL changes
// and builds the table of what the FSM holds already (a restored snapshot,
// replayed entries).
func (s *Store) startACL() {
	s.acl.table.Store(acl.NewTable(0, 0, nil))
	s.fsm.OnACLChange(s.refreshACL)
	s.refreshACL()
}

// ACLTable implements acl.Store.
func (s *Store) ACLTable() *acl.Table { return s.acl.table.Load() }

// refreshACL rebuilds the table from the FSM's ACL state, if it changed
// since the last build, and retires the old table. Rebuilds are
// serialised and each reads the FSM's state when it runs, so the table
// never goes back to an older state.
func (s *Store) refreshACL() {
	s.acl.mu.Lock()
	defer s.acl.mu.Unlock()
	st := s.fsm.ACLState()
	if st.Version <= s.acl.version {
		return
	}
	tokens := make([]acl.Token, len(st.Tokens))
	for i := range st.Tokens {
		tokens[i] = tokenFromRecord(&st.Tokens[i])
	}
	old := s.acl.table.Swap(acl.NewTable(st.BootstrapIndex, st.Index, tokens))
	s.acl.version = st.Version
	old.Retire()
}

// tokenFromRecord converts the FSM's record (ExpiresAt in Unix ns, 0:
// never) to the acl package's token.
func tokenFromRecord(r *fsm.ACLToken) acl.Token {
	t := acl.Token{AccessorID: r.AccessorID, SecretHash: slices.Clone(r.SecretHash), Description: r.Description,
		Rules: slices.Clone(r.Rules), CreateIndex: r.CreateIndex, ModifyIndex: r.ModifyIndex}
	if r.ExpiresAt != 0 {
		t.ExpiresAt = time.Unix(0, r.ExpiresAt)
	}
	return t
}

// proposeACL proposes an ACL command on this node (the leader) and returns
// its result, or its refusal as the error, once every member that answers
// has applied it (spreadACL).
func (s *Store) proposeACL(ctx context.Context, t fsm.MessageType, cmd any) (*fsm.Result, error) {
	res, err := s.proposer.Apply(ctx, t, cmd)
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, res.Err
	}
	s.spreadACL(ctx, res.Index)
	return res, nil
}

// ACLSpread bounds how long an ACL write waits for the other members to
// apply it before it is answered.
const ACLSpread = 2 * time.Second

// spreadACL waits, up to ACLSpread, until every other member that answers
// has applied index to its token table (NodeInfo's acl_index). Each node checks tokens against its own table, so a
// token answered at once but unknown to a follower for a few milliseconds
// would be refused there — with permission_denied, which no client retries
// — to a caller who used it straight after creating it (or after acl
// bootstrap) through another node. ACL writes are rare; waiting for the
// others costs one status round per 20 ms, and a member that does not
// answer is not waited for (it answers not_ready until it has caught up
// after a restart, and catches up within the replication lag otherwise).
func (s *Store) spreadACL(ctx context.Context, index uint64) {
	ms, err := s.node.Configuration()
	if err != nil {
		return
	}
	var others []raftnode.Peer
	for _, m := range ms {
		if m.ID != s.node.ID() {
			others = append(others, raftnode.Peer{ID: m.ID, Addr: m.Addr})
		}
	}
	deadline := time.Now().Add(ACLSpread)
	for len(others) > 0 && ctx.Err() == nil && time.Now().Before(deadline) {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		sts := s.peerStatuses(pctx, others)
		cancel()
		behind := others[:0:0]
		for i, st := range sts {
			// The member's table, swapped in once the change is applied
			// (a node without acl_index in NodeInfo: Raft's applied index).
			seen := st.ACLIndex
			if seen == 0 {
				seen = st.AppliedIndex
			}
			if st.Error == "" && seen < index {
				behind = append(behind, others[i])
			}
		}
		if others = behind; len(others) > 0 {
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
}

// appliedToken is the token a bootstrap or set-token command stored.
func appliedToken(t fsm.MessageType, res *fsm.Result) (acl.Token, error) {
	if res.ACLToken == nil {
		return acl.Token{}, fmt.Errorf("%s at index %d answered no token: %w", t, res.Index, codes.ErrInternal)
	}
	return tokenFromRecord(res.ACLToken), nil
}

// newCredential is acl.NewCredential with an error a client can read.
func newCredential() (accessorID, credential string, hash []byte, err error) {
	accessorID, credential, hash, err = acl.NewCredential()
	if err != nil {
		err = fmt.Errorf("%v: %w", err, codes.ErrInternal)
	}
	return accessorID, credential, hash, err
}

// ACLBootstrap implements acl.Store: the leader makes the management
// token (acl.ManagementRules) and the anonymous token (no rules) in one
// command; a follower forwards the request. A second bootstrap, even one
// racing this, is refused by the FSM with codes.ErrRefused.
func (s *Store) ACLBootstrap(ctx context.Context) (wire.ACLTokenSecret, error) {
	var out wire.ACLTokenSecret
	_, err := s.onLeader(ctx, "acl bootstrap", wire.MethodACLBootstrap, &wire.ACLBootstrapRequest{}, &out, func() error {
		id, cred, hash, err := newCredential()
		if err != nil {
			return err
		}
		cmd := &fsm.ACLBootstrapCommand{
			Management: fsm.ACLToken{AccessorID: id, SecretHash: hash, Description: "management token made by acl bootstrap",
				Rules: slices.Clone(acl.ManagementRules)},
			Anonymous: fsm.ACLToken{AccessorID: acl.AnonymousID, Description: "the rights of a caller that presents no token"},
		}
		res, err := s.proposeACL(ctx, fsm.ACLBootstrapType, cmd)
		if err != nil {
			return err
		}
		tok, err := appliedToken(fsm.ACLBootstrapType, res)
		if err != nil {
			return err
		}
		out = wire.ACLTokenSecret{Token: acl.ToWire(tok, time.Now()), Secret: cred, Index: res.Index}
		return nil
	})
	if err != nil {
		return wire.ACLTokenSecret{}, err
	}
	return out, nil
}

// ACLCreateToken implements acl.Store: the leader makes the credential
// and, for a token that expires, the expiry from its own clock.
func (s *Store) ACLCreateToken(ctx context.Context, req wire.ACLTokenCreateRequest) (wire.ACLTokenSecret, error) {
	var out wire.ACLTokenSecret
	_, err := s.onLeader(ctx, "acl token create", wire.MethodACLTokenCreate, &req, &out, func() error {
		id, cred, hash, err := newCredential()
		if err != nil {
			return err
		}
		now := time.Now()
		rec := fsm.ACLToken{AccessorID: id, SecretHash: hash, Description: req.Description, Rules: req.Rules}
		if req.ExpiresInMillis > 0 {
			rec.ExpiresAt = now.Add(time.Duration(req.ExpiresInMillis) * time.Millisecond).UnixNano()
		}
		res, err := s.proposeACL(ctx, fsm.ACLSetTokenType, &fsm.ACLSetTokenCommand{Token: rec, Create: true})
		if err != nil {
			return err
		}
		tok, err := appliedToken(fsm.ACLSetTokenType, res)
		if err != nil {
			return err
		}
		out = wire.ACLTokenSecret{Token: acl.ToWire(tok, now), Secret: cred, Index: res.Index}
		return nil
	})
	if err != nil {
		return wire.ACLTokenSecret{}, err
	}
	return out, nil
}

// ACLUpdateToken implements acl.Store: the answer is the token as the
// command stored it.
func (s *Store) ACLUpdateToken(ctx context.Context, req wire.ACLTokenUpdateRequest) (wire.ACLTokenResponse, error) {
	var out wire.ACLTokenResponse
	_, err := s.onLeader(ctx, "acl token update", wire.MethodACLTokenUpdate, &req, &out, func() error {
		cmd := &fsm.ACLSetTokenCommand{Token: fsm.ACLToken{AccessorID: req.AccessorID, Description: req.Description, Rules: req.Rules}}
		res, err := s.proposeACL(ctx, fsm.ACLSetTokenType, cmd)
		if err != nil {
			return err
		}
		tok, err := appliedToken(fsm.ACLSetTokenType, res)
		if err != nil {
			return err
		}
		out = wire.ACLTokenResponse{Token: acl.ToWire(tok, time.Now()), Index: res.Index}
		return nil
	})
	if err != nil {
		return wire.ACLTokenResponse{}, err
	}
	return out, nil
}

// ACLDeleteToken implements acl.Store: a write like any other (forwarded
// as ACLTokenDelete, answered with the index in a wire.WriteResponse).
func (s *Store) ACLDeleteToken(ctx context.Context, req wire.ACLTokenIDRequest) (uint64, error) {
	var fwd wire.WriteResponse
	var idx uint64
	remote, err := s.onLeader(ctx, "acl token delete", wire.MethodACLTokenDelete, &req, &fwd, func() error {
		res, err := s.proposeACL(ctx, fsm.ACLDeleteTokenType, &fsm.ACLDeleteTokenCommand{AccessorID: req.AccessorID})
		if err != nil {
			return err
		}
		idx = res.Index
		return nil
	})
	if err != nil {
		return 0, err
	}
	if remote {
		return fwd.Index, nil
	}
	return idx, nil
}
