package acl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// Store is implemented by a backend that replicates tokens (the Raft
// store). Its writes go through the leader: a node that does not lead
// forwards the request, with the caller's credential, so the leader's guard
// checks it again.
type Store interface {
	// ACLTable is the current view of the tokens; the store swaps in a new
	// one on every change and closes the old one's Changed channel.
	ACLTable() *Table
	// ACLBootstrap creates the management and anonymous tokens, once; a
	// second bootstrap fails with codes.ErrRefused.
	ACLBootstrap(ctx context.Context) (wire.ACLTokenSecret, error)
	// ACLCreateToken creates a token with a fresh credential (rules
	// already checked and canonical).
	ACLCreateToken(ctx context.Context, req wire.ACLTokenCreateRequest) (wire.ACLTokenSecret, error)
	// ACLUpdateToken replaces a token's description and rules
	// (codes.ErrNotFound if there is no such token).
	ACLUpdateToken(ctx context.Context, req wire.ACLTokenUpdateRequest) (wire.ACLTokenResponse, error)
	// ACLDeleteToken deletes a token (codes.ErrNotFound if there is none;
	// codes.ErrRefused for the anonymous token) and returns the index.
	ACLDeleteToken(ctx context.Context, req wire.ACLTokenIDRequest) (uint64, error)
}

// Admin is what the RPC server and the HTTP API call for the ACL methods;
// the Guard implements it.
type Admin interface {
	Bootstrap(ctx context.Context) (wire.ACLTokenSecret, error)
	CreateToken(ctx context.Context, req wire.ACLTokenCreateRequest) (wire.ACLTokenSecret, error)
	UpdateToken(ctx context.Context, req wire.ACLTokenUpdateRequest) (wire.ACLTokenResponse, error)
	DeleteToken(ctx context.Context, req wire.ACLTokenIDRequest) (uint64, error)
	ListTokens(ctx context.Context) (wire.ACLTokenListResponse, error)
	ReadToken(ctx context.Context, req wire.ACLTokenIDRequest) (wire.ACLTokenResponse, error)
	WhoAmI(ctx context.Context) (wire.ACLWhoAmIResponse, error)
}

// Guard is a DiscoveryBackend that checks the caller's rights (from
// backend.CallerFrom) before every call and passes allowed calls to the
// backend it wraps. Every interface — native protocol, HTTP API, DNS —
// goes through one guard, so they answer alike by construction.
type Guard struct {
	be    backend.DiscoveryBackend
	st    Store
	audit *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	streams map[*guardedStream]struct{}
	stop    chan struct{}
	done    chan struct{}
}

// NewGuard guards be with the tokens of st; audit lines (token created,
// token deleted, write denied) go to audit.
func NewGuard(be backend.DiscoveryBackend, st Store, audit *slog.Logger) *Guard {
	g := &Guard{be: be, st: st, audit: audit, now: time.Now, streams: map[*guardedStream]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go g.watchTable()
	return g
}

// Close stops the guard's watch on token changes.
func (g *Guard) Close() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	<-g.done
}

// Unwrap is the guarded backend, for what is not a client call (health,
// metrics).
func (g *Guard) Unwrap() backend.DiscoveryBackend { return g.be }

// catchingUp is a Store whose node may not have caught up with the
// cluster since it started (the Raft store: CaughtUp).
type catchingUp interface{ CaughtUp() bool }

// identity resolves the caller of ctx. On a node that has not caught up
// with the cluster since it started, the table may be older than the
// caller's token — or older than bootstrap: a restarted node holds its
// last snapshot's state until a leader tells it how far the log is
// committed. Its "not bootstrapped" or "unknown token" would be a final
// answer to a caller the cluster allows (permission_denied is never
// retried), so it answers not_ready instead, and the caller asks another
// node, as it would for a read.
func (g *Guard) identity(ctx context.Context) (*Identity, error) {
	id, err := g.st.ACLTable().Resolve(backend.CallerFrom(ctx).Token, g.now())
	if err != nil {
		if cu, ok := g.st.(catchingUp); ok && !cu.CaughtUp() {
			return nil, fmt.Errorf("this node has not caught up with the cluster since it started, so its tokens may be behind (%v); ask another node: %w", err, codes.ErrNotReady)
		}
	}
	return id, err
}

// deny logs a denied write for the audit and returns err (an error that
// is no denial, not_ready, is returned alone).
func (g *Guard) deny(ctx context.Context, what string, err error) error {
	if !errors.Is(err, codes.ErrPermissionDenied) {
		return err
	}
	c := backend.CallerFrom(ctx)
	who := "unknown"
	var de *DeniedError
	switch {
	case errors.As(err, &de):
		who = de.Who
	case c.Token == "":
		who = AnonymousID
	default:
		if id, _, ok := SplitCredential(c.Token); ok {
			who = "unresolved:" + id
		}
	}
	g.audit.Warn("audit: write denied", "event", "denied", "who", who, "what", what, "from", c.Remote, "via", c.Via, "reason", err.Error())
	return err
}

// checkService resolves the caller and checks want on service name; a
// denied write is audited. verb ("registering in") makes the message, only
// when one is needed: this runs on every write and heartbeat.
func (g *Guard) checkService(ctx context.Context, verb, name string, want Access) error {
	id, err := g.identity(ctx)
	if err == nil && id.Service(name) >= want {
		return nil
	}
	what := fmt.Sprintf("%s service %q", verb, name)
	if err == nil {
		err = id.CheckService(what, name, want)
	}
	if want == Write {
		return g.deny(ctx, what, err)
	}
	return err
}

func (g *Guard) checkOperator(ctx context.Context, what string, want Access) error {
	id, err := g.identity(ctx)
	if err == nil {
		err = id.CheckOperator(what, want)
	}
	if err != nil && want == Write {
		return g.deny(ctx, what, err)
	}
	return err
}

// Register implements backend.DiscoveryBackend.
func (g *Guard) Register(ctx context.Context, r backend.Registration) (uint64, error) {
	if err := g.checkService(ctx, "registering in", r.Name, Write); err != nil {
		return 0, err
	}
	return g.be.Register(ctx, r)
}

// Unregister implements backend.DiscoveryBackend.
func (g *Guard) Unregister(ctx context.Context, u backend.Unregistration) (uint64, error) {
	if err := g.checkService(ctx, "unregistering from", u.Name, Write); err != nil {
		return 0, err
	}
	return g.be.Unregister(ctx, u)
}

// Heartbeat implements backend.DiscoveryBackend: an instance of a service
// the caller may not write gets permission_denied in its own result, and
// the others are heartbeated.
func (g *Guard) Heartbeat(ctx context.Context, keys []backend.InstanceKey) ([]error, error) {
	id, err := g.identity(ctx)
	if err != nil {
		return nil, g.deny(ctx, "heartbeating", err)
	}
	var denied map[int]error
	for i, k := range keys {
		if i > 0 && k.Name == keys[i-1].Name {
			if denied[i-1] != nil {
				denied[i] = denied[i-1]
			}
			continue
		}
		if id.Service(k.Name) >= Write {
			continue
		}
		if err := id.CheckService(fmt.Sprintf("heartbeating in service %q", k.Name), k.Name, Write); err != nil {
			if denied == nil {
				denied = map[int]error{}
			}
			denied[i] = g.deny(ctx, fmt.Sprintf("heartbeating in service %q", k.Name), err)
		}
	}
	if denied == nil {
		return g.be.Heartbeat(ctx, keys)
	}
	allowed := make([]backend.InstanceKey, 0, len(keys)-len(denied))
	for i, k := range keys {
		if denied[i] == nil {
			allowed = append(allowed, k)
		}
	}
	var res []error
	if len(allowed) > 0 {
		if res, err = g.be.Heartbeat(ctx, allowed); err != nil {
			return nil, err
		}
	}
	out := make([]error, len(keys))
	j := 0
	for i := range keys {
		if e := denied[i]; e != nil {
			out[i] = e
			continue
		}
		out[i] = res[j]
		j++
	}
	return out, nil
}

// List implements backend.DiscoveryBackend: a service the caller may not
// read lists as empty, as if it had no instances.
func (g *Guard) List(ctx context.Context, name string, opts backend.ListOptions) (uint64, []backend.Instance, error) {
	id, err := g.identity(ctx)
	if err != nil {
		return 0, nil, err
	}
	idx, ins, err := g.be.List(ctx, name, opts)
	if id.Service(name) < Read {
		ins = nil
	}
	return idx, ins, err
}

// Services implements backend.DiscoveryBackend, leaving out the services
// the caller may not read.
func (g *Guard) Services(ctx context.Context, opts backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	id, err := g.identity(ctx)
	if err != nil {
		return 0, nil, err
	}
	idx, all, err := g.be.Services(ctx, opts)
	out := all[:0:0]
	for _, s := range all {
		if id.Service(s.Name) >= Read {
			out = append(out, s)
		}
	}
	return idx, out, err
}

// SetMeta implements backend.DiscoveryBackend.
func (g *Guard) SetMeta(ctx context.Context, w backend.MetaWrite) (uint64, error) {
	if err := g.checkService(ctx, "setting the metadata of", w.Name, Write); err != nil {
		return 0, err
	}
	return g.be.SetMeta(ctx, w)
}

// DeleteMeta implements backend.DiscoveryBackend.
func (g *Guard) DeleteMeta(ctx context.Context, w backend.MetaWrite) (uint64, error) {
	if err := g.checkService(ctx, "deleting the metadata of", w.Name, Write); err != nil {
		return 0, err
	}
	return g.be.DeleteMeta(ctx, w)
}

// GetMeta implements backend.DiscoveryBackend: a service the caller may not
// read has no metadata, as List has no instances.
func (g *Guard) GetMeta(ctx context.Context, name string, opts backend.MetaOptions) (uint64, backend.Meta, error) {
	id, err := g.identity(ctx)
	if err != nil {
		return 0, backend.Meta{}, err
	}
	idx, m, err := g.be.GetMeta(ctx, name, opts)
	if id.Service(name) < Read {
		m = backend.Meta{}
	}
	return idx, m, err
}

// Subscribe implements backend.DiscoveryBackend: a watch needs read on its
// service, and ends with permission_denied once its token is deleted,
// expires or loses the right.
func (g *Guard) Subscribe(ctx context.Context, name string, fromIndex, minIndex uint64) (backend.UpdateStream, error) {
	if err := g.checkService(ctx, "watching", name, Read); err != nil {
		return nil, err
	}
	st, err := g.be.Subscribe(ctx, name, fromIndex, minIndex)
	if err != nil {
		return nil, err
	}
	gs := &guardedStream{g: g, inner: st, name: name, token: backend.CallerFrom(ctx).Token, ended: make(chan struct{})}
	g.mu.Lock()
	g.streams[gs] = struct{}{}
	g.mu.Unlock()
	// The token may have changed between the check and the registration.
	g.recheck(gs)
	return gs, nil
}

// Status implements backend.DiscoveryBackend.
func (g *Guard) Status(ctx context.Context) (wire.StatusResponse, error) {
	if err := g.checkOperator(ctx, "reading the cluster's status", Read); err != nil {
		return wire.StatusResponse{}, err
	}
	return g.be.Status(ctx)
}

// NodeInfo implements backend.DiscoveryBackend. Like ReadIndex it needs no
// rights: a node's Raft state and indices say nothing of any service, and
// nodes ask each other for them (status, membership checks, dead-server
// cleanup) without a caller's token.
func (g *Guard) NodeInfo(ctx context.Context, stateHash bool) (wire.NodeStatus, error) {
	return g.be.NodeInfo(ctx, stateHash)
}

// ReadIndex implements backend.DiscoveryBackend. An index says nothing of
// any service, and a node catching up asks the leader for one before
// anyone may have bootstrapped ACLs, so it needs no rights.
func (g *Guard) ReadIndex(ctx context.Context) (uint64, error) {
	return g.be.ReadIndex(ctx)
}

// Freshness implements backend.DiscoveryBackend.
func (g *Guard) Freshness() wire.Freshness { return g.be.Freshness() }

// Members implements backend.Membership.
func (g *Guard) Members(ctx context.Context) (wire.MembersResponse, error) {
	mb, ok := g.be.(backend.Membership)
	if !ok {
		return wire.MembersResponse{}, noMembers
	}
	if err := g.checkOperator(ctx, "listing the members", Read); err != nil {
		return wire.MembersResponse{}, err
	}
	return mb.Members(ctx)
}

// ChangeMember implements backend.Membership.
func (g *Guard) ChangeMember(ctx context.Context, req wire.ChangeMemberRequest) (wire.ChangeMemberResponse, error) {
	mb, ok := g.be.(backend.Membership)
	if !ok {
		return wire.ChangeMemberResponse{}, noMembers
	}
	if err := g.checkOperator(ctx, fmt.Sprintf("changing the membership (%s %s)", req.Op, req.ID), Write); err != nil {
		return wire.ChangeMemberResponse{}, err
	}
	return mb.ChangeMember(ctx, req)
}

var noMembers = fmt.Errorf("this backend has no membership of its own: %w", codes.ErrRefused)

// SaveSnapshot implements backend.Snapshotter. A backup holds every
// service and every token's hash, so it needs operator write.
func (g *Guard) SaveSnapshot(ctx context.Context) (backend.SnapshotFile, error) {
	sn, err := g.snapshotter(ctx, "saving a backup")
	if err != nil {
		return backend.SnapshotFile{}, err
	}
	return sn.SaveSnapshot(ctx)
}

// CanRestore implements backend.Snapshotter.
func (g *Guard) CanRestore(ctx context.Context) error {
	sn, err := g.snapshotter(ctx, "restoring a backup")
	if err != nil {
		return err
	}
	return sn.CanRestore(ctx)
}

// RestoreSnapshot implements backend.Snapshotter.
func (g *Guard) RestoreSnapshot(ctx context.Context, f io.ReaderAt, size int64, opts backend.RestoreOptions) (backend.RestoreResult, error) {
	sn, err := g.snapshotter(ctx, "restoring a backup")
	if err != nil {
		return backend.RestoreResult{}, err
	}
	return sn.RestoreSnapshot(ctx, f, size, opts)
}

func (g *Guard) snapshotter(ctx context.Context, what string) (backend.Snapshotter, error) {
	sn, ok := g.be.(backend.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("this backend keeps no snapshots of its own: %w", codes.ErrRefused)
	}
	if err := g.checkOperator(ctx, what, Write); err != nil {
		return nil, err
	}
	return sn, nil
}
