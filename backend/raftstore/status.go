package raftstore

import (
	"context"
	"fmt"
	"runtime"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
)

// NodeInfo implements backend.DiscoveryBackend.
func (s *Store) NodeInfo(_ context.Context, stateHash bool) (wire.NodeStatus, error) {
	st := s.selfStatus()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapInuse = ms.HeapInuse
	st.ACLIndex = s.ACLTable().Index()
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
	return wire.StatusResponse{Leader: leaderID, Nodes: s.peerStatuses(ctx, servers)}, nil
}

// peerStatuses asks every peer for its status at once: this node answers
// for itself, and a peer that does not answer within PeerTimeout is
// "unreachable", with the error.
func (s *Store) peerStatuses(ctx context.Context, peers []raftnode.Peer) []wire.NodeStatus {
	out := make([]wire.NodeStatus, len(peers))
	done := make(chan struct{}, len(peers))
	for i, p := range peers {
		go func() {
			defer func() { done <- struct{}{} }()
			if p.ID == s.node.ID() {
				out[i] = s.selfStatus()
				return
			}
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PeerTimeout)
			defer cancel()
			var ns wire.NodeStatus
			if err := s.fwd.Call(pctx, s.node.DialAddr(p.ID, p.Addr), wire.MethodNodeInfo, true, &wire.Empty{}, &ns); err != nil {
				ns = wire.NodeStatus{ID: p.ID, Addr: p.Addr, State: "unreachable", Error: err.Error()}
			}
			out[i] = ns
		}()
	}
	for range peers {
		<-done
	}
	return out
}

// selfStatus is this node's status with its read gate and freshness.
func (s *Store) selfStatus() wire.NodeStatus {
	st := nodeStatus(s.node.Status())
	st.Ready, st.Freshness = s.CaughtUp(), s.Freshness()
	ts := s.tracker.Stats()
	st.StormHeld, st.StormHolds, st.StormReleased, st.StormUnheld = uint64(ts.StormHeld), ts.StormHolds, ts.StormReleased, ts.StormUnheld
	return st
}

// nodeStatus is the protocol's form of the Raft node's status.
func nodeStatus(st raftnode.Status) wire.NodeStatus {
	return wire.NodeStatus{
		ID:            st.ID,
		Addr:          st.Addr,
		State:         st.State,
		Term:          st.Term,
		AppliedIndex:  st.AppliedIndex,
		CommitIndex:   st.CommitIndex,
		LastIndex:     st.LastIndex,
		SnapshotIndex: st.SnapshotIndex,
		Leader:        st.Leader,
		Voter:         st.Voter,
		LogAppends:    st.LogAppends,
		LogEntries:    st.LogEntries,
		LogAppendUS:   st.LogAppendUS,
		LogStore:      st.LogStore,
	}
}
