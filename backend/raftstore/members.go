package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
)

// Membership: the leader makes every change, one at a time, each checked
// against the configuration it read (prevIndex) so the check still holds
// when the change commits. See docs/operations.md for the operator's side.

var _ backend.Membership = (*Store)(nil)

// catchUpPoll is how often a promotion asks the new member how far it is.
const catchUpPoll = 100 * time.Millisecond

// Members implements backend.Membership.
func (s *Store) Members(ctx context.Context) (wire.MembersResponse, error) {
	var resp wire.MembersResponse
	_, err := s.onLeader(ctx, "members", wire.MethodMembers, &wire.Empty{}, &resp, func() error {
		ms, err := s.node.Configuration()
		if err != nil {
			return fmt.Errorf("read the configuration: %v: %w", err, codes.ErrNotLeader)
		}
		resp = s.members(ctx, ms)
		return nil
	})
	return resp, err
}

// members asks every member of ms for its status (those that do not answer
// within PeerTimeout are "unreachable") and measures each one's lag.
func (s *Store) members(ctx context.Context, ms []raftnode.Member) wire.MembersResponse {
	peers := make([]raftnode.Peer, len(ms))
	for i, m := range ms {
		peers[i] = raftnode.Peer{ID: m.ID, Addr: m.Addr}
	}
	sts := s.peerStatuses(ctx, peers)
	self := s.node.Status()
	resp := wire.MembersResponse{Leader: s.node.ID(), CommitIndex: self.CommitIndex, Members: make([]wire.Member, len(ms))}
	for i, m := range ms {
		resp.Members[i] = wire.Member{ID: m.ID, Addr: m.Addr, Voter: m.Voter, Status: sts[i]}
		if a := sts[i].AppliedIndex; sts[i].Error == "" && a < self.CommitIndex {
			resp.Members[i].Lag = self.CommitIndex - a
		}
	}
	return resp
}

// ChangeMember implements backend.Membership.
func (s *Store) ChangeMember(ctx context.Context, req wire.ChangeMemberRequest) (wire.ChangeMemberResponse, error) {
	if err := validateChange(req); err != nil {
		return wire.ChangeMemberResponse{}, err
	}
	var resp wire.ChangeMemberResponse
	_, err := s.onLeader(ctx, "membership change", wire.MethodChangeMember, &req, &resp, func() (err error) {
		resp, err = s.changeMember(ctx, req)
		return err
	})
	return resp, err
}

func validateChange(req wire.ChangeMemberRequest) error {
	switch req.Op {
	case wire.MemberAdd:
		if _, _, err := net.SplitHostPort(req.Addr); err != nil || req.Addr == "" {
			return codes.Invalid("add %s: address %q is not host:port", req.ID, req.Addr)
		}
	case wire.MemberRemove, wire.MemberPromote, wire.MemberDemote:
		if req.Addr != "" {
			return codes.Invalid("%s takes no address", req.Op)
		}
		if req.NonVoter {
			return codes.Invalid("%s takes no -nonvoter", req.Op)
		}
	default:
		return codes.Invalid("membership operation %q: want add, remove, promote or demote", req.Op)
	}
	if err := raftnode.ValidateID(req.ID); err != nil {
		return codes.Invalid("%v", err)
	}
	return nil
}

// changeMember runs on the leader, one change at a time: a check made on
// the configuration read holds until the change is committed.
func (s *Store) changeMember(ctx context.Context, req wire.ChangeMemberRequest) (wire.ChangeMemberResponse, error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	resp, err := s.changeOnce(ctx, req)
	if raftnode.IsNotLeader(err) {
		return resp, fmt.Errorf("%s %s: %v: %w", req.Op, req.ID, err, codes.ErrNotLeader)
	}
	var ce *codes.Error
	if err != nil && !errors.As(err, &ce) {
		if ctx.Err() != nil {
			err = fmt.Errorf("%s %s: %v: %w", req.Op, req.ID, err, codes.ErrTimeout)
		} else {
			err = fmt.Errorf("%s %s: %v: %w", req.Op, req.ID, err, codes.ErrInternal)
		}
	}
	return resp, err
}

func (s *Store) changeOnce(ctx context.Context, req wire.ChangeMemberRequest) (wire.ChangeMemberResponse, error) {
	ms, err := s.node.Configuration()
	if err != nil {
		return wire.ChangeMemberResponse{}, err
	}
	cur := findMember(ms, req.ID)
	var idx uint64
	unchanged := wire.ChangeMemberResponse{}
	switch req.Op {
	case wire.MemberAdd:
		for _, m := range ms {
			if m.Addr == req.Addr && m.ID != req.ID {
				return unchanged, fmt.Errorf("address %s belongs to member %s: remove it first (discoverd members remove -id %s): %w", req.Addr, m.ID, m.ID, codes.ErrRefused)
			}
		}
		switch {
		case cur == nil:
			if idx, err = s.node.AddNonvoter(ctx, req.ID, req.Addr); err != nil {
				return unchanged, err
			}
			s.cfg.Logger.Info("member added as a non-voter", "id", req.ID, "addr", req.Addr)
		case cur.Voter && req.NonVoter:
			return unchanged, fmt.Errorf("%s is a voter: demote it instead (discoverd members demote -id %s): %w", req.ID, req.ID, codes.ErrRefused)
		case cur.Addr != req.Addr:
			add := s.node.AddNonvoter
			if cur.Voter {
				add = s.node.AddVoter
			}
			if idx, err = add(ctx, req.ID, req.Addr); err != nil {
				return unchanged, err
			}
			s.cfg.Logger.Warn("member's address changed", "id", req.ID, "old", cur.Addr, "new", req.Addr)
		default:
			if cur.Voter || req.NonVoter {
				return unchanged, nil
			}
		}
		if req.NonVoter {
			return wire.ChangeMemberResponse{Changed: true, Index: idx}, nil
		}
		resp, err := s.promote(ctx, req.ID)
		resp.Changed = true // added, or moved, before the promotion
		return resp, err
	case wire.MemberPromote:
		if cur == nil {
			return unchanged, fmt.Errorf("no member %s (add it with discoverd members add): %w", req.ID, codes.ErrRefused)
		}
		if cur.Voter {
			return unchanged, nil
		}
		return s.promote(ctx, req.ID)
	default: // remove, demote
		if cur == nil && req.Op == wire.MemberRemove {
			return unchanged, nil
		}
		if cur == nil {
			return unchanged, fmt.Errorf("no member %s: %w", req.ID, codes.ErrRefused)
		}
		if !cur.Voter && req.Op == wire.MemberDemote {
			return unchanged, nil
		}
		if cur.Voter {
			if err := s.checkQuorumWithout(ctx, ms, req.ID, req.Force); err != nil {
				return unchanged, err
			}
		}
		if req.Op == wire.MemberDemote {
			idx, err = s.node.Demote(ctx, req.ID)
		} else {
			idx, err = s.node.RemoveServer(ctx, req.ID)
		}
		if err != nil {
			return unchanged, err
		}
		s.cfg.Logger.Warn("member "+req.Op+"d", "id", req.ID, "forced", req.Force)
		return wire.ChangeMemberResponse{Changed: true, Index: idx}, nil
	}
}

// promote waits until non-voter id has caught up — applied the commit index
// the leader had when the wait began, following this leader — then makes
// it a voter: a voter that lags would hold up every commit that needs it.
func (s *Store) promote(ctx context.Context, id string) (wire.ChangeMemberResponse, error) {
	target := s.node.Status().CommitIndex
	var last wire.NodeStatus
	t := time.NewTicker(catchUpPoll)
	defer t.Stop()
	for {
		ms, err := s.node.Configuration()
		if err != nil {
			return wire.ChangeMemberResponse{}, err
		}
		m := findMember(ms, id)
		if m == nil {
			return wire.ChangeMemberResponse{}, fmt.Errorf("%s was removed while it caught up: %w", id, codes.ErrRefused)
		}
		if m.Voter {
			return wire.ChangeMemberResponse{}, nil
		}
		last = s.peerStatuses(ctx, []raftnode.Peer{{ID: m.ID, Addr: m.Addr}})[0]
		if last.Error == "" && last.Leader == s.node.ID() && last.AppliedIndex >= target {
			idx, err := s.node.AddVoter(ctx, m.ID, m.Addr)
			if err != nil {
				return wire.ChangeMemberResponse{}, err
			}
			s.cfg.Logger.Info("member promoted to voter", "id", id, "applied", last.AppliedIndex, "target", target)
			return wire.ChangeMemberResponse{Changed: true, Index: idx}, nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			where := fmt.Sprintf("at index %d of %d", last.AppliedIndex, target)
			if last.Error != "" {
				where = "not answering: " + last.Error
			}
			return wire.ChangeMemberResponse{}, fmt.Errorf("%s has not caught up before the deadline (%s); it stays a non-voter: promote it later with discoverd members promote -id %s: %w", id, where, id, codes.ErrTimeout)
		}
	}
}

// checkQuorumWithout refuses, unless force, to take voter id out of the
// voters of ms when the voters left would not hold a quorum of healthy
// ones: this leader, and the voters that answer now and follow it. A
// cluster left so could commit nothing more — not even the change that
// would undo it. Removing the last voter is refused even with force.
func (s *Store) checkQuorumWithout(ctx context.Context, ms []raftnode.Member, id string, force bool) error {
	var left []raftnode.Peer
	for _, m := range ms {
		if m.Voter && m.ID != id {
			left = append(left, raftnode.Peer{ID: m.ID, Addr: m.Addr})
		}
	}
	if len(left) == 0 {
		return fmt.Errorf("%s is the last voter: a cluster needs one (to start over, see discoverd recover): %w", id, codes.ErrRefused)
	}
	if force {
		return nil
	}
	healthy, sick := s.healthyVoters(ctx, left)
	need := len(left)/2 + 1
	if healthy >= need {
		return nil
	}
	return fmt.Errorf("taking %s out would leave %d voters of which %d are healthy (%s), fewer than the %d a quorum needs: the cluster could commit nothing more. Bring the others back first, or pass -force if they will come back: %w",
		id, len(left), healthy, strings.Join(sick, "; "), need, codes.ErrRefused)
}

// healthyVoters counts the voters that are this leader or answer now and
// follow it, and describes the others.
func (s *Store) healthyVoters(ctx context.Context, voters []raftnode.Peer) (int, []string) {
	sts := s.peerStatuses(ctx, voters)
	n := 0
	var sick []string
	for i, st := range sts {
		switch {
		case voters[i].ID == s.node.ID():
			n++
		case st.Error != "":
			sick = append(sick, fmt.Sprintf("%s does not answer: %s", voters[i].ID, st.Error))
		case st.Leader != s.node.ID():
			sick = append(sick, fmt.Sprintf("%s follows %q, not this leader", voters[i].ID, st.Leader))
		default:
			n++
		}
	}
	return n, sick
}

func findMember(ms []raftnode.Member, id string) *raftnode.Member {
	i := slices.IndexFunc(ms, func(m raftnode.Member) bool { return m.ID == id })
	if i < 0 {
		return nil
	}
	return &ms[i]
}
