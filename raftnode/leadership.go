package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/logging"
)

// leadershipLoop turns Raft's leadership notifications into observer calls.
// On gaining leadership it runs a barrier first (MUST: observers arm TTLs
// from the FSM, which must hold every entry committed before this term).
func (n *Node) leadershipLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			n.leaderLost()
			return
		case isLeader := <-n.notifyCh:
			if isLeader {
				n.leaderGained()
			} else {
				n.leaderLost()
			}
		}
	}
}

func (n *Node) leaderGained() {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	if n.cancelTerm != nil {
		n.cancelTerm()
	}
	n.leaderGen++
	gen := n.leaderGen
	logging.HandingOver(n.hlog, false) // a new term: no handover of this one yet
	ctx, cancel := context.WithCancel(context.Background())
	n.cancelTerm = cancel
	term := n.raft.CurrentTerm()
	n.log.Info("became leader, running barrier", "term", term)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		barrier := func() error {
			// hashicorp/raft never answers a barrier queued just as it
			// shuts down, so the wait also ends when the node stops (the
			// goroutine left waiting on the future ends with the process):
			// a stop waited for this goroutine forever.
			fut := n.raft.Barrier(n.cfg.BarrierTimeout)
			res := make(chan error, 1)
			go func() { res <- fut.Error() }()
			select {
			case err := <-res:
				return err
			case <-n.done:
				return raft.ErrRaftShutdown
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		leading := func() bool { return n.raft.State() == raft.Leader }
		if !retryBarrier(ctx, n.done, n.log, term, barrier, leading) {
			return
		}
		n.leaderMu.Lock()
		defer n.leaderMu.Unlock()
		if n.leaderGen != gen || ctx.Err() != nil || n.raft.State() != raft.Leader {
			return
		}
		n.readyTerm = term
		n.log.Info("leader ready", "term", term)
		if n.notifier != nil {
			n.notifier.poke() // announce the barrier's commit
		}
		for _, o := range n.observers {
			o.BecomeLeader()
		}
	}()
}

// The leader's barrier is retried after barrierBackoffMin, then after twice
// as long each time, up to barrierBackoffMax. A barrier fails at once while
// a leadership transfer is in progress (as on every stop of a leader), and
// retried without a pause it logged 10 000 lines in the quarter second the
// transfer took.
const (
	barrierBackoffMin = 10 * time.Millisecond
	barrierBackoffMax = 500 * time.Millisecond
)

// retryBarrier runs barrier, the leader's barrier of term, until it
// succeeds, and reports whether it did. It gives up when ctx ends (the term
// is over), done is closed (the node stops) or leading reports that Raft no
// longer has this node lead. Between attempts it backs off (barrierBackoffMin
// doubling to barrierBackoffMax, from the start for every term); each failure
// is one line, at info level when it is what a stop or a change of leader
// does to a barrier (barrierExpected), else a warning.
func retryBarrier(ctx context.Context, done <-chan struct{}, log *slog.Logger, term uint64, barrier func() error, leading func() bool) bool {
	wait := barrierBackoffMin
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		err := barrier()
		if err == nil {
			return true
		}
		if ctx.Err() != nil || !leading() {
			log.Debug("leader barrier abandoned: no longer leading", "term", term, "err", err)
			return false
		}
		level := slog.LevelWarn
		if barrierExpected(err) {
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "leader barrier failed, retrying", "term", term, "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-done:
			t.Stop()
			return false
		}
		wait = min(2*wait, barrierBackoffMax)
	}
}

// barrierExpected reports whether err is what a barrier meets when its
// leader hands leadership over (every graceful stop of a leader does), loses
// it, or stops: no fault of the node's.
func barrierExpected(err error) bool {
	return errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrRaftShutdown) ||
		errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader)
}

func (n *Node) leaderLost() {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	if n.cancelTerm != nil {
		n.cancelTerm()
		n.cancelTerm = nil
	}
	n.leaderGen++
	wasReady := n.readyTerm != 0
	n.readyTerm = 0
	for _, o := range n.observers {
		o.StepDown()
	}
	if wasReady {
		n.log.Info("lost leadership")
	}
}

// IsLeader reports whether Raft considers this node the leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Ready reports whether this node is the leader and has finished its
// leadership barrier in the current term.
func (n *Node) Ready() bool { return n.LeaderTerm() != 0 }

// LeaderTerm is the term this node leads and has finished its leadership
// barrier in, or 0 when it is not such a leader (Ready).
func (n *Node) LeaderTerm() uint64 {
	n.leaderMu.Lock()
	t := n.readyTerm
	n.leaderMu.Unlock()
	if t != 0 && t == n.raft.CurrentTerm() && n.raft.State() == raft.Leader {
		return t
	}
	return 0
}

// Leader returns the id and advertised address of the leader this node knows
// of, or empty strings.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Stopping tells the node that it is about to be shut down: from then on
// its Raft's failures to reach a peer are no news and are logged at debug
// level (logging.Stopping). A stop calls it just before Shutdown, or for
// every node of a cluster that stops as a whole.
func (n *Node) Stopping() { logging.Stopping(n.hlog) }

// TransferLeadership hands leadership to another voter and waits until one
// has taken over, Raft gives up (it bounds a transfer by its election
// timeout), or ctx ends; it fails if this node is not the leader.
//
// From the start of the handover until this node next leads, Raft's error
// that a peer has a newer term — the new leader's — is logged as info: it
// is the handover taking effect (logging.HandingOver).
func (n *Node) TransferLeadership(ctx context.Context) error {
	logging.HandingOver(n.hlog, true)
	err := await(ctx, n.raft.LeadershipTransfer())
	switch {
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return fmt.Errorf("leadership transfer did not finish in time: %w", err)
	case err != nil:
		logging.HandingOver(n.hlog, false) // Raft gave up: this node still leads
	}
	return err
}
