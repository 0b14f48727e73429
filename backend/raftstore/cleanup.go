package raftstore

import (
	"context"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
)

// Dead-server cleanup (-dead-server-after): the leader removes a member
// that has not answered, or not followed it, for longer than after — a
// voter only when the voters left keep a quorum of healthy ones (the check
// every removal makes, members.go) and number at least minCleanupVoters.
// A machine that died for good then stops counting against the quorum,
// and its replacement, added under a new id, does not have to wait for an
// operator. It is off by default: a member that is only slow to come back
// (a long reboot) must then be added again.

// minCleanupVoters is the fewest voters the cleanup leaves: it never shrinks
// a cluster below the three voters that survive one failure.
const minCleanupVoters = 3

// RunCleanup runs the dead-server cleanup until ctx ends.
func (s *Store) RunCleanup(ctx context.Context, after time.Duration) {
	tick := time.NewTicker(min(max(after/4, 100*time.Millisecond), 5*time.Second))
	defer tick.Stop()
	failing := map[string]time.Time{} // member id → first seen failing (this leadership)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !s.node.IsLeader() {
			clear(failing)
			continue
		}
		s.cleanupRound(ctx, after, failing)
	}
}

func (s *Store) cleanupRound(ctx context.Context, after time.Duration, failing map[string]time.Time) {
	ms, err := s.node.Configuration()
	if err != nil {
		return
	}
	peers := make([]raftnode.Peer, len(ms))
	for i, m := range ms {
		peers[i] = raftnode.Peer{ID: m.ID, Addr: m.Addr}
	}
	for id := range failing {
		if findMember(ms, id) == nil {
			delete(failing, id)
		}
	}
	sts := s.peerStatuses(ctx, peers)
	now := time.Now()
	voters := 0
	for _, m := range ms {
		if m.Voter {
			voters++
		}
	}
	for i, m := range ms {
		healthy := m.ID == s.node.ID() || (sts[i].Error == "" && sts[i].Leader == s.node.ID())
		if healthy {
			delete(failing, m.ID)
			continue
		}
		since, ok := failing[m.ID]
		if !ok {
			failing[m.ID] = now
			continue
		}
		if now.Sub(since) < after || (m.Voter && voters <= minCleanupVoters) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.changeMember(rctx, wire.ChangeMemberRequest{Op: wire.MemberRemove, ID: m.ID})
		cancel()
		if err != nil {
			s.cfg.Logger.Warn("dead-server cleanup: not removing a failed member", "id", m.ID, "failing_for", now.Sub(since).Round(time.Millisecond), "err", err)
			continue
		}
		s.cfg.Logger.Warn("dead-server cleanup: removed a failed member", "id", m.ID, "addr", m.Addr, "voter", m.Voter, "failing_for", now.Sub(since).Round(time.Millisecond))
		delete(failing, m.ID)
		return // one removal per round: the next round reads the new configuration
	}
}
