package raftnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// Apply proposes one entry (opaque to the node) and waits until it is
// committed and applied here. It returns what the state machine answered
// for the entry and the index of the log entry that carried it (a group of
// entries shares one log entry, see groupcommit.go). Errors say what
// happened to the write: codes.ErrNotLeader (not proposed),
// codes.ErrOverloaded (not proposed in time), codes.ErrShuttingDown (not
// proposed), or codes.ErrUnknownOutcome (proposed, fate unknown: leadership
// lost, or ctx ended while waiting for the commit).
func (n *Node) Apply(ctx context.Context, entry []byte) (resp any, index uint64, err error) {
	n.fence.RLock() // a restore waits for writes in flight, and new ones wait for it (backup.go)
	defer n.fence.RUnlock()
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("not proposed: %v: %w", err, codes.ErrOverloaded)
	}
	if n.raft.State() != raft.Leader {
		return nil, 0, codes.ErrNotLeader
	}
	enqueue := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		enqueue = max(time.Until(dl), time.Millisecond)
	}
	var r applyResult
	if n.group == nil {
		fut := n.raft.Apply(entry, enqueue)
		done := make(chan applyResult, 1)
		go func() { done <- wait(fut) }()
		select {
		case r = <-done:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("waiting for commit: %v: %w", ctx.Err(), codes.ErrUnknownOutcome)
		}
	} else {
		p := &proposal{data: entry, deadline: time.Now().Add(enqueue), result: make(chan applyResult, 1)}
		select {
		case n.group.queue <- p:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("not proposed, the write queue stayed full: %v: %w", ctx.Err(), codes.ErrOverloaded)
		case <-n.done:
			return nil, 0, codes.ErrShuttingDown
		}
		select {
		case r = <-p.result:
		case <-ctx.Done():
			p.abandoned.Store(true) // it may have been proposed already
			return nil, 0, fmt.Errorf("waiting for commit: %v: %w", ctx.Err(), codes.ErrUnknownOutcome)
		case <-n.done:
			return nil, 0, fmt.Errorf("node shut down while the write waited: %w", codes.ErrUnknownOutcome)
		}
		if !r.proposed {
			return nil, 0, fmt.Errorf("not proposed: %w", codes.ErrShuttingDown)
		}
	}
	switch err := r.err; {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader):
		return nil, 0, codes.ErrNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return nil, 0, fmt.Errorf("raft did not accept the entry in time: %w", codes.ErrOverloaded)
	default: // leadership lost, aborted by a restore, raft shut down, a malformed batch answer
		return nil, 0, fmt.Errorf("%v: %w", err, codes.ErrUnknownOutcome)
	}
	if n.notifier != nil {
		n.notifier.poke()
	}
	return r.resp, r.index, nil
}

// VerifyLeader confirms with a quorum that this node is still the leader and
// has applied everything committed before its term, so that reading its FSM
// right after is linearizable, and an acknowledgement given after it cannot
// come from a leader already replaced. Concurrent callers share rounds: each
// caller waits for a round that started after it called, so one quorum round
// trip serves a whole batch of reads and heartbeats.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if !n.Ready() {
		if n.IsLeader() {
			return fmt.Errorf("leader is still starting up: %w", codes.ErrNoLeader)
		}
		return codes.ErrNotLeader
	}
	ch := make(chan error, 1)
	n.verifyMu.Lock()
	n.verifyWaiting = append(n.verifyWaiting, ch)
	if !n.verifyRunning {
		n.verifyRunning = true
		go n.verifyRounds()
	}
	n.verifyMu.Unlock()
	select {
	case err := <-ch:
		if err != nil {
			return fmt.Errorf("verify leadership: %v: %w", err, codes.ErrNotLeader)
		}
		if n.pause != nil && n.pause.recentlyPaused() {
			// The quorum's answers may predate a stall of this process
			// (pause.go): not evidence that it leads now.
			return fmt.Errorf("verify leadership: this node was stalled for a while and is checking that it still leads: %w", codes.ErrNotLeader)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("verify leadership: %w", codes.ErrTimeout)
	}
}

// verifyRounds runs quorum rounds while callers wait. Every round answers only
// the callers that were waiting when it started.
func (n *Node) verifyRounds() {
	for {
		n.verifyMu.Lock()
		batch := n.verifyWaiting
		n.verifyWaiting = nil
		if len(batch) == 0 {
			n.verifyRunning = false
			n.verifyMu.Unlock()
			return
		}
		n.verifyMu.Unlock()
		err := n.raft.VerifyLeader().Error()
		for _, ch := range batch {
			ch <- err
		}
	}
}
