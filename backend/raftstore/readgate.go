package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/faultbugs"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
)

// The read gate: a node serves reads and watches only once it has caught up
// with the cluster since it started.
//
// hashicorp/raft restores the newest snapshot when a node starts, and applies
// the committed entries after it only when a leader tells the node how far
// the log is committed. Until then the node's state can be older than one it
// served before it stopped, or empty (a fresh data dir, an impostor with a
// borrowed id, a node cut off from the leader since it started). Answering
// from it would read, to a client, as "every instance is gone".
//
// So a node asks the leader for a read index (ReadIndex: the leader commits a
// barrier, proving it leads and that its state machine holds every committed
// entry, and answers the index of its state) and serves nothing until its
// own state machine has applied that index. Any index this node served
// before was committed, so it is at or below the leader's: from then on the
// node never answers with an older state. A leader that finished its term's
// barrier is caught up by that barrier.
//
// Once caught up a node stays so for its lifetime: its state only moves
// forward. When it later loses the leader it goes on serving its last state
// (for discovery, the last known state beats nothing) and every answer says
// whether it knows a leader and how long ago it heard from one (Freshness).
type readGate struct {
	caught   atomic.Bool
	caughtCh chan struct{}          // closed once caught up
	why      atomic.Pointer[string] // why the last catch-up attempt failed
}

// catchUpAttempt bounds one catch-up attempt; catchUpRetry is the pause
// between attempts.
const (
	catchUpAttempt = 2 * time.Second
	catchUpRetry   = 100 * time.Millisecond
)

// CaughtUp reports whether this node serves reads.
func (s *Store) CaughtUp() bool { return s.gate.caught.Load() }

// Readiness reports whether this node is ready to serve (the HTTP
// listener's /health/ready): caught up with the cluster since it started
// (CaughtUp) and knowing a leader now. If not, why says why.
func (s *Store) Readiness() (ready bool, why string) {
	if !s.gate.caught.Load() {
		why = "no leader has answered yet"
		if p := s.gate.why.Load(); p != nil {
			why = *p
		}
		return false, "has not caught up with the cluster since it started (" + why + ")"
	}
	if f := s.Freshness(); !f.KnownLeader {
		if f.LastContactMillis < 0 {
			return false, "knows no leader"
		}
		return false, fmt.Sprintf("knows no leader: last heard from one %v ago", time.Duration(f.LastContactMillis)*time.Millisecond)
	}
	return true, ""
}

// readGate fails with codes.ErrNotReady unless this node has caught up
// since it started; a read waits up to ReadyWait for it.
func (s *Store) readGate(ctx context.Context) error {
	if s.gate.caught.Load() || faultbugs.On("read-before-caught-up") {
		return nil
	}
	t := time.NewTimer(s.cfg.ReadyWait)
	defer t.Stop()
	select {
	case <-s.gate.caughtCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	why := "no leader has answered yet"
	if p := s.gate.why.Load(); p != nil {
		why = *p
	}
	return fmt.Errorf("node %s has not caught up with the cluster since it started (%s); ask another node: %w",
		s.node.ID(), why, codes.ErrNotReady)
}

// catchUpLoop runs from the store's start until this node has caught up
// (or stops): it learns the read index from the leader, or is the ready
// leader, and waits until the local state machine has applied it.
func (s *Store) catchUpLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.node.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		actx, acancel := context.WithTimeout(ctx, catchUpAttempt)
		err := s.catchUp(actx)
		acancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		msg := err.Error()
		s.gate.why.Store(&msg)
		t := time.NewTimer(catchUpRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// catchUp is one attempt of catchUpLoop.
func (s *Store) catchUp(ctx context.Context) error {
	if !s.node.Ready() {
		idx, err := s.ReadIndex(ctx)
		if err != nil {
			return err
		}
		if err := s.fsm.WaitApplied(ctx, idx); err != nil {
			return fmt.Errorf("the leader is at index %d, this node at %d", idx, s.fsm.AppliedIndex())
		}
	}
	s.gate.caught.Store(true)
	close(s.gate.caughtCh)
	s.cfg.Logger.Info("caught up with the cluster, serving reads", "index", s.fsm.AppliedIndex())
	return nil
}

// ReadIndex implements backend.DiscoveryBackend: the leader commits a
// barrier (proving it leads, with every committed entry applied) and
// answers the index of its state; a follower asks the leader.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	var idx uint64
	var fwd wire.ReadIndexResponse
	remote, err := s.onLeader(ctx, "read index", wire.MethodReadIndex, &wire.ReadIndexRequest{}, &fwd, func() error {
		err := s.node.WaitReady(ctx)
		if err == nil {
			err = s.node.Barrier(ctx)
		}
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return fmt.Errorf("read index: %v: %w", err, codes.ErrNotLeader)
		case errors.Is(err, raftnode.ErrNotReadyLeader):
			return fmt.Errorf("read index: %v: %w", err, codes.ErrNoLeader)
		case err != nil:
			return fmt.Errorf("read index: %v: %w", err, codes.ErrTimeout)
		}
		idx = s.fsm.AppliedIndex()
		return nil
	})
	if remote {
		return fwd.Index, err
	}
	return idx, err
}

// Freshness implements backend.DiscoveryBackend.
func (s *Store) Freshness() wire.Freshness {
	id, _ := s.node.Leader()
	lc := s.node.LastContact()
	f := wire.Freshness{KnownLeader: id != "" || s.node.IsLeader(), LastContactMillis: lc.Milliseconds()}
	if lc < 0 {
		f.LastContactMillis = -1
	}
	return f
}
