// Package raftstore is the built-in DiscoveryBackend: registrations live in
// discoverd's own Raft log (raftnode + fsm), heartbeats in the leader's
// memory (ttl). Writes and heartbeats that reach a follower are forwarded to
// the leader; reads and watches are served from the local FSM. It is also
// the acl.Store: ACL tokens go through the same log (acl.go).
package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/faultbugs"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/ttl"
)

// Config tunes the store.
type Config struct {
	// LeaderWait is how long a write waits for a leader to appear before
	// failing with codes.ErrNoLeader. Default 3 s.
	LeaderWait time.Duration
	// IndexWait is how long a read or watch waits for this node to apply an
	// index the client has already seen before failing with codes.ErrStaleNode. Default 3 s.
	IndexWait time.Duration
	// ReadyWait is how long a read or watch waits for a node that has not
	// caught up with the cluster since it started (readgate.go) before
	// failing with codes.ErrNotReady, so the client asks another node.
	// Default 1 s.
	ReadyWait time.Duration
	// PeerTimeout bounds each peer's answer to a status request. Default 1 s.
	PeerTimeout time.Duration
	// WatchBatch is the most events one Next returns. Default 256.
	WatchBatch int
	// HeartbeatRelays is how many calls a follower has in flight to the
	// leader, per credential, relaying its clients' heartbeats together
	// (relay.go). Default 2; negative: every heartbeat is forwarded in a
	// call of its own.
	HeartbeatRelays int
	// TempDir is where a restore writes the snapshot it hands to Raft
	// (snapshot.go). Default: os.TempDir().
	TempDir string
	Logger  *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.LeaderWait <= 0 {
		c.LeaderWait = 3 * time.Second
	}
	if c.IndexWait <= 0 {
		c.IndexWait = 3 * time.Second
	}
	if c.ReadyWait <= 0 {
		c.ReadyWait = time.Second
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = time.Second
	}
	if c.HeartbeatRelays == 0 {
		c.HeartbeatRelays = 2
	}
	if c.WatchBatch <= 0 {
		c.WatchBatch = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Store implements backend.DiscoveryBackend over Raft.
type Store struct {
	cfg      Config
	node     *raftnode.Node
	proposer *Proposer
	fsm      *fsm.FSM
	tracker  *ttl.Tracker
	dl       *Deadlines
	fwd      Forwarder
	gate     readGate
	memberMu sync.Mutex // one membership change at a time (members.go)
	acl      aclView    // the token table (acl.go)
	relay    *relay     // nil: heartbeats forwarded one call each (relay.go)
}

var _ backend.DiscoveryBackend = (*Store)(nil)

// New returns a store over a started node whose state machine is f.
func New(cfg Config, node *raftnode.Node, f *fsm.FSM, tracker *ttl.Tracker, dl *Deadlines, fwd Forwarder) *Store {
	s := &Store{cfg: cfg.withDefaults(), node: node, proposer: NewProposer(node), fsm: f, tracker: tracker, dl: dl, fwd: fwd, gate: readGate{caughtCh: make(chan struct{})}}
	if s.cfg.HeartbeatRelays > 0 {
		s.relay = newRelay(s, s.cfg.HeartbeatRelays)
	}
	s.startACL()
	go s.catchUpLoop()
	return s
}

// write applies cmd on the leader: here when this node leads, otherwise by
// forwarding req to the leader as method.
func (s *Store) write(ctx context.Context, t fsm.MessageType, cmd any, method string, req any) (uint64, error) {
	var res *fsm.Result
	var fwd wire.WriteResponse
	remote, err := s.onLeader(ctx, method, method, req, &fwd, func() (err error) {
		if faultbugs.On("ack-before-commit") {
			// Planted bug: acknowledge, then commit in the background.
			go func() { _, _ = s.proposer.Apply(context.Background(), t, cmd) }()
			res = &fsm.Result{Index: s.fsm.AppliedIndex() + 1}
			return nil
		}
		res, err = s.proposer.Apply(ctx, t, cmd)
		return err
	})
	if remote || err != nil {
		return fwd.Index, err
	}
	return res.Index, res.Err
}

// Register implements backend.DiscoveryBackend.
func (s *Store) Register(ctx context.Context, r backend.Registration) (uint64, error) {
	ttl := r.TTL
	if ttl == 0 {
		ttl = validate.DefaultTTL
	}
	cmd := &fsm.RegisterCommand{Name: r.Name, Addr: r.Addr, Attrs: r.Attrs, TTL: ttl, RequestID: r.RequestID}
	req := &wire.RegisterRequest{Name: r.Name, Addr: r.Addr, Attrs: r.Attrs, TTLMillis: ttl.Milliseconds(), RequestID: r.RequestID}
	return s.write(ctx, fsm.RegisterType, cmd, wire.MethodRegister, req)
}

// Unregister implements backend.DiscoveryBackend.
func (s *Store) Unregister(ctx context.Context, u backend.Unregistration) (uint64, error) {
	cmd := &fsm.UnregisterCommand{Name: u.Name, Addr: u.Addr, RequestID: u.RequestID, IfIndex: u.IfIndex}
	req := &wire.UnregisterRequest{Name: u.Name, Addr: u.Addr, RequestID: u.RequestID, IfIndex: u.IfIndex}
	t := fsm.UnregisterType
	if u.IfIndex != 0 {
		t = fsm.UnregisterIfType
	}
	return s.write(ctx, t, cmd, wire.MethodUnregister, req)
}

// Heartbeat implements backend.DiscoveryBackend: the leader's tracker answers;
// a follower relays to the leader, together with other callers' heartbeats
// (relay.go).
func (s *Store) Heartbeat(ctx context.Context, keys []backend.InstanceKey) ([]error, error) {
	if s.relay != nil && len(keys) < relayMaxKeys && !backend.IsForwarded(ctx) && !s.node.IsLeader() {
		return s.relay.heartbeat(ctx, keys)
	}
	return s.heartbeatOnLeader(ctx, keys)
}

// heartbeatOnLeader has the leader's tracker renew keys: here when this node
// leads, otherwise in one call forwarded to the leader.
func (s *Store) heartbeatOnLeader(ctx context.Context, keys []backend.InstanceKey) ([]error, error) {
	var results []error
	var fwd wire.HeartbeatResponse
	remote, err := s.onLeader(ctx, "heartbeat", wire.MethodHeartbeat, &wire.HeartbeatRequest{Instances: keys}, &fwd, func() error {
		tk := make([]ttl.Key, len(keys))
		for i, k := range keys {
			tk[i] = ttl.Key{Name: k.Name, Addr: k.Addr}
		}
		// The term whose tracker renews: read before and after, the same
		// non-zero term means this node led it throughout, and its tracker
		// made the renewals (deadlines.go: a round pushes only its own
		// term's).
		term := s.node.LeaderTerm()
		res, renewed, err := s.tracker.Renew(ctx, tk)
		if err == nil {
			if after := s.node.LeaderTerm(); after != term || after == 0 {
				term = 0 // leadership changed meanwhile: Replicate refuses, the caller retries
			}
			// Acknowledge only once a majority holds the renewed
			// deadlines: a new leader collects the tables of a majority
			// and arms from them, and a deposed leader that has not
			// noticed yet (paused, partitioned) finds its pushes refused
			// (deadlines.go).
			err = s.dl.Replicate(ctx, term, renewed)
		}
		results = res
		return err
	})
	if !remote {
		return results, err
	}
	if err != nil {
		return nil, err
	}
	if len(fwd.Results) != len(keys) {
		return nil, fmt.Errorf("leader answered %d heartbeat results for %d instances: %w", len(fwd.Results), len(keys), codes.ErrInternal)
	}
	out := make([]error, len(keys))
	for i, r := range fwd.Results {
		out[i] = r.Err()
	}
	return out, nil
}

// waitIndex waits (bounded) until the local FSM has applied index.
func (s *Store) waitIndex(ctx context.Context, index uint64) error {
	if index == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.IndexWait)
	defer cancel()
	return s.fsm.WaitApplied(wctx, index)
}

// List implements backend.DiscoveryBackend. Consistent reads are served by
// the leader after it confirms its leadership with a quorum.
func (s *Store) List(ctx context.Context, name string, opts backend.ListOptions) (uint64, []backend.Instance, error) {
	if faultbugs.On("stale-read") {
		opts.Consistent = false // planted bug: "consistent" reads served from local state
	}
	if opts.Consistent {
		var fwd wire.ListResponse
		req := &wire.ListRequest{Name: name, Attrs: opts.Attrs, Consistent: true, MinIndex: opts.MinIndex}
		remote, err := s.onLeader(ctx, "consistent read", wire.MethodList, req, &fwd, func() error { return s.node.VerifyLeader(ctx) })
		if remote || err != nil {
			return fwd.Index, fwd.Instances, err
		}
	}
	if err := s.readGate(ctx); err != nil {
		return 0, nil, err
	}
	if err := s.waitIndex(ctx, opts.MinIndex); err != nil {
		return 0, nil, err
	}
	idx, ins := s.fsm.List(name, opts.Attrs)
	out := make([]backend.Instance, len(ins))
	for i, in := range ins {
		out[i] = toWire(in)
	}
	return idx, out, nil
}

func toWire(in *fsm.Instance) wire.Instance {
	return wire.Instance{Name: in.Name, Addr: in.Addr, Attrs: in.Attrs, TTLMillis: in.TTL.Milliseconds(),
		CreateIndex: in.CreateIndex, Index: in.ModifyIndex, Suspect: in.Suspect}
}

// Subscribe implements backend.DiscoveryBackend from the local FSM.
func (s *Store) Subscribe(ctx context.Context, name string, fromIndex, minIndex uint64) (backend.UpdateStream, error) {
	if err := s.readGate(ctx); err != nil {
		return nil, err
	}
	if err := s.waitIndex(ctx, max(fromIndex, minIndex)); err != nil {
		return nil, err
	}
	w, err := s.fsm.Watch(name, fromIndex)
	if err != nil {
		return nil, err
	}
	return &stream{w: w, batch: s.cfg.WatchBatch}, nil
}

type stream struct {
	w     *fsm.Watcher
	batch int
}

func (st *stream) Next(ctx context.Context) ([]backend.Event, error) {
	evs, err := st.w.Next(ctx, st.batch)
	if err != nil {
		return nil, err
	}
	out := make([]backend.Event, len(evs))
	for i, e := range evs {
		out[i] = toWireEvent(e)
	}
	return out, nil
}

func (st *stream) Close() { st.w.Close() }

func toWireEvent(e fsm.Event) wire.Event {
	we := wire.Event{Kind: e.Kind.String(), Index: e.Index, Name: e.Name}
	if in := e.Instance; in != nil {
		we.Addr, we.Attrs, we.TTLMillis, we.CreateIndex = in.Addr, in.Attrs, in.TTL.Milliseconds(), in.CreateIndex
		we.Suspect = in.Suspect && e.Kind != fsm.EventDown // a removal is final, marked or not
	}
	if e.Kind == fsm.EventMeta {
		if e.Meta != nil {
			we.Data = e.Meta.Data
		} else {
			we.Deleted = true
		}
	}
	switch e.Reason {
	case fsm.ReasonUnregister:
		we.Reason = wire.ReasonUnregister
	case fsm.ReasonExpire:
		we.Reason = wire.ReasonExpire
	}
	return we
}
