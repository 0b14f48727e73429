package raftnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Member is one server of the current Raft configuration.
type Member struct {
	ID, Addr string
	Voter    bool
}

// Configuration returns the members of the newest Raft configuration this
// node knows (on the leader: including a change not yet committed).
func (n *Node) Configuration() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// Membership changes. Each runs on the leader only (raft.ErrNotLeader
// otherwise); hashicorp/raft takes one only once the previous one is
// committed. A change returns once it is committed, or when ctx ends, with
// the log index of its configuration entry. (hashicorp/raft's prevIndex
// check is not offered: its GetConfiguration does not report the index it
// would compare with. The store serializes its changes instead.)

// AddNonvoter adds id at addr as a non-voter (or changes the address of a
// non-voter id). A voter id stays a voter.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) (uint64, error) {
	return n.change(ctx, func(t time.Duration) raft.IndexFuture {
		return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// AddVoter adds id at addr as a voter, or promotes it if it is a non-voter.
func (n *Node) AddVoter(ctx context.Context, id, addr string) (uint64, error) {
	return n.change(ctx, func(t time.Duration) raft.IndexFuture {
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// Demote makes voter id a non-voter.
func (n *Node) Demote(ctx context.Context, id string) (uint64, error) {
	return n.change(ctx, func(t time.Duration) raft.IndexFuture {
		return n.raft.DemoteVoter(raft.ServerID(id), 0, t)
	})
}

// RemoveServer removes id from the cluster. Removing the leader itself is
// allowed: it steps down once the change is committed.
func (n *Node) RemoveServer(ctx context.Context, id string) (uint64, error) {
	return n.change(ctx, func(t time.Duration) raft.IndexFuture {
		return n.raft.RemoveServer(raft.ServerID(id), 0, t)
	})
}

func (n *Node) change(ctx context.Context, start func(enqueue time.Duration) raft.IndexFuture) (uint64, error) {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	f := start(timeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return 0, err
		}
		return f.Index(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("configuration change not committed before the deadline (it may still be): %w", ctx.Err())
	}
}

// IsNotLeader reports whether err is Raft's refusal of a change on a node
// that does not lead (any more).
func IsNotLeader(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}
