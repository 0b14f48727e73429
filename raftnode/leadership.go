package raftnode

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
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
	ctx, cancel := context.WithCancel(context.Background())
	n.cancelTerm = cancel
	term := n.raft.CurrentTerm()
	n.log.Info("became leader, running barrier", "term", term)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for ctx.Err() == nil {
			err := n.raft.Barrier(n.cfg.BarrierTimeout).Error()
			if err == nil {
				break
			}
			n.log.Warn("leader barrier failed", "err", err)
			if n.raft.State() != raft.Leader {
				return
			}
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
func (n *Node) Ready() bool {
	n.leaderMu.Lock()
	t := n.readyTerm
	n.leaderMu.Unlock()
	return t != 0 && t == n.raft.CurrentTerm() && n.raft.State() == raft.Leader
}

// Leader returns the id and advertised address of the leader this node knows
// of, or empty strings.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// TransferLeadership hands leadership to another voter and waits until one
// has taken over, Raft gives up (it bounds a transfer by its election
// timeout), or ctx ends; it fails if this node is not the leader.
func (n *Node) TransferLeadership(ctx context.Context) error {
	fut := n.raft.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("leadership transfer did not finish in time: %w", ctx.Err())
	}
}
