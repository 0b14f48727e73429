package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
)

// Membership from the node's side: joining a cluster (-join), telling the
// cluster of a changed address, and leaving it on a stop (-leave-on-stop).
// The changes themselves are the leader's (backend/raftstore/members.go).

// joinRetry bounds the pause between two attempts to join or to have a new
// address applied; joinCall bounds one attempt (a voter's promotion waits
// for it to catch up).
const (
	joinRetryMin = 250 * time.Millisecond
	joinRetryMax = 5 * time.Second
	joinCall     = 30 * time.Second
)

// Joining reports whether a first start of cfg joins a cluster rather than
// bootstrapping one: -join names a cluster and -peers does not name this
// node.
func Joining(cfg Config) bool {
	if len(cfg.Join) == 0 {
		return false
	}
	return !slices.ContainsFunc(cfg.Raft.Peers, func(p raftnode.Peer) bool { return p.ID == cfg.Raft.ID })
}

// reconcileMembership runs once Raft runs. A joining node asks the -join
// addresses to add it until one has; a node whose configuration lists it
// at another address than it advertises now asks its peers to apply the
// new one; a restarted node told -peers that differ from the
// configuration says that they are ignored.
func (s *Server) reconcileMembership(ctx context.Context, fresh bool) {
	ctx = s.selfCaller(ctx)
	ms, err := s.node.Configuration()
	if err != nil {
		return
	}
	id, addr := s.cfg.Raft.ID, s.cfg.Raft.Addr
	var self *raftnode.Member
	for i := range ms {
		if ms[i].ID == id {
			self = &ms[i]
		}
	}
	switch {
	case fresh && Joining(s.cfg):
		s.log.Info("joining the cluster", "via", s.cfg.Join, "nonvoter", s.cfg.JoinNonVoter)
		s.askMembers(ctx, "join", s.cfg.Join, wire.ChangeMemberRequest{Op: wire.MemberAdd, ID: id, Addr: addr, NonVoter: s.cfg.JoinNonVoter})
	case self != nil && self.Addr != addr:
		s.log.Warn("this node's address differs from the one the cluster knows: asking the leader to apply the new one (peers dial the old one until then)",
			"known", self.Addr, "now", addr)
		var via []string
		for _, m := range ms {
			if m.ID != id {
				via = append(via, s.node.DialAddr(m.ID, m.Addr))
			}
		}
		s.askMembers(ctx, "address change", via, wire.ChangeMemberRequest{Op: wire.MemberAdd, ID: id, Addr: addr, NonVoter: !self.Voter})
	}
	if !fresh && len(s.cfg.Raft.Peers) > 0 && !samePeers(s.cfg.Raft.Peers, ms) {
		s.log.Warn("-peers is used only on a node's first start and is ignored now: the cluster's members are changed with `discoverd members`",
			"peers", s.cfg.Raft.Peers, "members", ms)
	}
}

// askMembers sends req to the addresses in turn until one answers it with
// success, backing off between rounds, until ctx ends. A refusal (the
// address is another member's, say) is logged and retried too: an
// operator may fix it meanwhile.
func (s *Server) askMembers(ctx context.Context, what string, via []string, req wire.ChangeMemberRequest) {
	pause := joinRetryMin
	for attempt := 1; ctx.Err() == nil; attempt++ {
		var errs []error
		if s.node.IsLeader() { // e.g. elected at its new address before the others knew it
			resp, err := s.store.ChangeMember(ctx, req)
			if err == nil {
				s.log.Info(what+" done", "by", "this leader", "changed", resp.Changed, "config_index", resp.Index)
				return
			}
			errs = append(errs, err)
		}
		for _, a := range via {
			cctx, cancel := context.WithTimeout(ctx, joinCall)
			var resp wire.ChangeMemberResponse
			err := s.pool.Call(cctx, a, wire.MethodChangeMember, false, &req, &resp)
			cancel()
			if err == nil {
				s.log.Info(what+" done", "via", a, "changed", resp.Changed, "config_index", resp.Index)
				return
			}
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			if errors.Is(err, codes.ErrPermissionDenied) {
				err = fmt.Errorf("%w (with ACLs on, give this node a token with operator write: -acl-token)", err)
			}
			if errors.Is(err, codes.ErrRefused) || errors.Is(err, codes.ErrInvalidArgument) || errors.Is(err, codes.ErrPermissionDenied) {
				break // the leader answered: asking another node gets the same answer
			}
		}
		s.log.Warn(what+" failed; trying again", "attempt", attempt, "in", pause, "err", errors.Join(errs...))
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, joinRetryMax)
	}
}

// selfCaller marks ctx as this node's own call, with its -acl-token: a
// membership change it asks for on its own behalf.
func (s *Server) selfCaller(ctx context.Context) context.Context {
	return backend.WithCaller(ctx, backend.Caller{Token: s.cfg.ACLToken, Remote: s.cfg.Raft.Addr, Via: "node"})
}

func samePeers(peers []raftnode.Peer, ms []raftnode.Member) bool {
	if len(peers) != len(ms) {
		return false
	}
	for _, p := range peers {
		if !slices.ContainsFunc(ms, func(m raftnode.Member) bool { return m.ID == p.ID && m.Addr == p.Addr }) {
			return false
		}
	}
	return true
}

// leave removes this node from the cluster as it stops (-leave-on-stop),
// after it handed leadership over. The leader refuses when the voters left
// would not hold a quorum of healthy ones; the node then stops as a
// member, and says so.
func (s *Server) leave(ctx context.Context) {
	ctx = s.selfCaller(ctx)
	resp, err := s.store.ChangeMember(ctx, wire.ChangeMemberRequest{Op: wire.MemberRemove, ID: s.cfg.Raft.ID})
	if err != nil {
		s.log.Error("-leave-on-stop: could not leave the cluster; stopping as a member (remove it with discoverd members remove)", "err", err)
		return
	}
	s.log.Info("left the cluster", "config_index", resp.Index)
}
