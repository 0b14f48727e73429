// Package raftstore is the built-in DiscoveryBackend: registrations live in
// discoverd's own Raft log (raftnode + fsm), heartbeats in the leader's
// memory (ttl). Writes and heartbeats that reach a follower are forwarded to
// the leader; reads and watches are served from the local FSM.
package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
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

// Forwarder sends a request to another node (implemented by rpcconn.Pool).
type Forwarder interface {
	Call(ctx context.Context, addr, method string, forwarded bool, req, resp any) error
}

// Config tunes the store.
type Config struct {
	// LeaderWait is how long a write waits for a leader to appear before
	// failing with codes.ErrNoLeader. Default 3 s.
	LeaderWait time.Duration
	// IndexWait is how long a read or watch waits for this node to apply an
	// index the client has already seen before failing with codes.ErrStaleNode. Default 3 s.
	IndexWait time.Duration
	// PeerTimeout bounds each peer's answer to a status request. Default 1 s.
	PeerTimeout time.Duration
	// WatchBatch is the most events one Next returns. Default 256.
	WatchBatch int
	Logger     *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.LeaderWait <= 0 {
		c.LeaderWait = 3 * time.Second
	}
	if c.IndexWait <= 0 {
		c.IndexWait = 3 * time.Second
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = time.Second
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
	cfg     Config
	node    *raftnode.Node
	fsm     *fsm.FSM
	tracker *ttl.Tracker
	fwd     Forwarder
}

var _ backend.DiscoveryBackend = (*Store)(nil)

// New returns a store over a running node.
func New(cfg Config, node *raftnode.Node, f *fsm.FSM, tracker *ttl.Tracker, fwd Forwarder) *Store {
	return &Store{cfg: cfg.withDefaults(), node: node, fsm: f, tracker: tracker, fwd: fwd}
}

// leaderAddr waits (up to LeaderWait) for a known leader other than this node
// and returns the address to dial it at. It returns "" when this node is the leader.
func (s *Store) leaderAddr(ctx context.Context) (string, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.node.IsLeader() {
			return "", nil
		}
		if id, addr := s.node.Leader(); addr != "" {
			return s.node.DialAddr(id, addr), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader elected after %v: %w", s.cfg.LeaderWait, codes.ErrNoLeader)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a leader: %w", codes.ErrNoLeader)
		}
	}
}

// write applies cmd on the leader: here when this node leads, otherwise by
// forwarding req to the leader. A forwarded request is never forwarded again.
func (s *Store) write(ctx context.Context, t fsm.MessageType, cmd any, method string, req any) (uint64, error) {
	for {
		if s.node.IsLeader() {
			if faultbugs.On("ack-before-commit") {
				// Planted bug: acknowledge, then commit in the background.
				go func() { _, _ = s.node.Apply(context.Background(), t, cmd) }()
				return s.fsm.AppliedIndex() + 1, nil
			}
			res, err := s.node.Apply(ctx, t, cmd)
			if errors.Is(err, codes.ErrNotLeader) && !backend.IsForwarded(ctx) && ctx.Err() == nil {
				continue // lost leadership before proposing: find the new leader
			}
			if err != nil {
				return 0, err
			}
			return res.Index, res.Err
		}
		if backend.IsForwarded(ctx) {
			return 0, fmt.Errorf("%s forwarded to %s, which is not the leader: %w", method, s.node.ID(), codes.ErrNotLeader)
		}
		addr, err := s.leaderAddr(ctx)
		if err != nil {
			return 0, err
		}
		if addr == "" {
			continue
		}
		var resp wire.WriteResponse
		err = s.fwd.Call(ctx, addr, method, true, req, &resp)
		if errors.Is(err, codes.ErrNotLeader) && ctx.Err() == nil {
			// Leadership moved before the request arrived; nothing was proposed.
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return 0, codes.ErrNoLeader
			}
			continue
		}
		return resp.Index, err
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
func (s *Store) Unregister(ctx context.Context, name, addr, requestID string) (uint64, error) {
	cmd := &fsm.UnregisterCommand{Name: name, Addr: addr, RequestID: requestID}
	req := &wire.UnregisterRequest{Name: name, Addr: addr, RequestID: requestID}
	return s.write(ctx, fsm.UnregisterType, cmd, wire.MethodUnregister, req)
}

// Heartbeat implements backend.DiscoveryBackend: the leader's tracker answers;
// a follower relays to the leader.
func (s *Store) Heartbeat(ctx context.Context, keys []backend.InstanceKey) ([]error, error) {
	for {
		if s.node.IsLeader() {
			tk := make([]ttl.Key, len(keys))
			for i, k := range keys {
				tk[i] = ttl.Key{Name: k.Name, Addr: k.Addr}
			}
			res, err := s.tracker.Heartbeat(ctx, tk)
			if err == nil {
				// Acknowledge only once a quorum confirms this node still
				// leads: a deposed leader that has not noticed yet (paused,
				// partitioned) must not tell a client its heartbeat counted,
				// because the new leader never saw it.
				err = s.node.VerifyLeader(ctx)
			}
			if errors.Is(err, codes.ErrNotLeader) && !backend.IsForwarded(ctx) && ctx.Err() == nil {
				continue
			}
			return res, err
		}
		if backend.IsForwarded(ctx) {
			return nil, fmt.Errorf("heartbeat forwarded to %s, which is not the leader: %w", s.node.ID(), codes.ErrNotLeader)
		}
		addr, err := s.leaderAddr(ctx)
		if err != nil {
			return nil, err
		}
		if addr == "" {
			continue
		}
		var resp wire.HeartbeatResponse
		err = s.fwd.Call(ctx, addr, wire.MethodHeartbeat, true, &wire.HeartbeatRequest{Instances: keys}, &resp)
		if errors.Is(err, codes.ErrNotLeader) && ctx.Err() == nil {
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return nil, codes.ErrNoLeader
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(resp.Results) != len(keys) {
			return nil, fmt.Errorf("leader answered %d heartbeat results for %d instances: %w", len(resp.Results), len(keys), codes.ErrInternal)
		}
		out := make([]error, len(keys))
		for i, r := range resp.Results {
			out[i] = r.Err()
		}
		return out, nil
	}
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
	if opts.Consistent && !s.node.IsLeader() {
		if backend.IsForwarded(ctx) {
			return 0, nil, fmt.Errorf("consistent read forwarded to %s, which is not the leader: %w", s.node.ID(), codes.ErrNotLeader)
		}
		addr, err := s.leaderAddr(ctx)
		if err != nil {
			return 0, nil, err
		}
		if addr != "" {
			var resp wire.ListResponse
			err := s.fwd.Call(ctx, addr, wire.MethodList, true,
				&wire.ListRequest{Name: name, Attrs: opts.Attrs, Consistent: true, MinIndex: opts.MinIndex}, &resp)
			return resp.Index, resp.Instances, err
		}
	}
	if opts.Consistent {
		if err := s.node.VerifyLeader(ctx); err != nil {
			return 0, nil, err
		}
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
		CreateIndex: in.CreateIndex, Index: in.ModifyIndex}
}

// Subscribe implements backend.DiscoveryBackend from the local FSM.
func (s *Store) Subscribe(ctx context.Context, name string, fromIndex, minIndex uint64) (backend.UpdateStream, error) {
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
	}
	switch e.Reason {
	case fsm.ReasonUnregister:
		we.Reason = wire.ReasonUnregister
	case fsm.ReasonExpire:
		we.Reason = wire.ReasonExpire
	}
	return we
}

// NodeInfo implements backend.DiscoveryBackend.
func (s *Store) NodeInfo(_ context.Context, stateHash bool) (wire.NodeStatus, error) {
	st := s.node.Status()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapInuse = ms.HeapInuse
	if stateHash {
		st.FSMApplied, st.StateHash = s.fsm.Hash()
	}
	return st, nil
}

// Status implements backend.DiscoveryBackend: this node's view plus each
// peer's own answer (a peer that does not answer in time is "unreachable").
func (s *Store) Status(ctx context.Context) (wire.StatusResponse, error) {
	servers, err := s.node.Servers()
	if err != nil {
		return wire.StatusResponse{}, fmt.Errorf("read cluster configuration: %v: %w", err, codes.ErrInternal)
	}
	leaderID, _ := s.node.Leader()
	resp := wire.StatusResponse{Leader: leaderID, Nodes: make([]wire.NodeStatus, len(servers))}
	done := make(chan struct{}, len(servers))
	for i, p := range servers {
		go func() {
			defer func() { done <- struct{}{} }()
			if p.ID == s.node.ID() {
				resp.Nodes[i] = s.node.Status()
				return
			}
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PeerTimeout)
			defer cancel()
			var ns wire.NodeStatus
			if err := s.fwd.Call(pctx, s.node.DialAddr(p.ID, p.Addr), wire.MethodNodeInfo, true, &wire.Empty{}, &ns); err != nil {
				ns = wire.NodeStatus{ID: p.ID, Addr: p.Addr, State: "unreachable", Error: err.Error()}
			}
			resp.Nodes[i] = ns
		}()
	}
	for range servers {
		<-done
	}
	return resp, nil
}
