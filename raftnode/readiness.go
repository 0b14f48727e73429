package raftnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// ErrNotReadyLeader: this node leads but has not finished the barrier of its
// term, so its state machine may not hold every committed entry yet.
var ErrNotReadyLeader = errors.New("leader has not finished its barrier")

// Barrier waits until every entry committed before the call has been
// applied to this node's state machine, by committing a barrier entry with a
// quorum (so it also proves this node led when the entry committed). Only
// the leader can; elsewhere it fails with raft.ErrNotLeader. Bounded by ctx
// and the configured barrier timeout.
func (n *Node) Barrier(ctx context.Context) error {
	timeout := n.cfg.BarrierTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return fmt.Errorf("barrier: %w", context.DeadlineExceeded)
	}
	err := await(ctx, n.raft.Barrier(timeout))
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("barrier: %w", err)
	}
	return err
}

// WaitReady waits (bounded by ctx) until this node is a ready leader: it
// leads and has finished its term's barrier. It fails at once with
// raft.ErrNotLeader when the node does not lead.
func (n *Node) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if n.Ready() {
			return nil
		}
		if !n.IsLeader() {
			return raft.ErrNotLeader
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReadyLeader, ctx.Err())
		}
	}
}

// LastContact is how long ago this node last heard from a leader: 0 when it
// leads, and a negative duration when it has not heard from one since it
// started.
func (n *Node) LastContact() time.Duration {
	if n.IsLeader() {
		return 0
	}
	t := n.raft.LastContact()
	if t.IsZero() {
		return -1
	}
	return time.Since(t)
}

// Done is closed when the node shuts down.
func (n *Node) Done() <-chan struct{} { return n.done }
