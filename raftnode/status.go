package raftnode

import (
	"strconv"

	"github.com/hashicorp/raft"
)

// Status is this node's view of itself.
type Status struct {
	ID, Addr      string
	State         string // Raft's: Leader, Follower, Candidate, Shutdown
	Term          uint64
	AppliedIndex  uint64 // the last log entry applied here
	CommitIndex   uint64
	LastIndex     uint64 // the last entry in this node's log
	SnapshotIndex uint64 // the index of this node's latest snapshot
	Leader        string // the leader's id, as far as this node knows
	Voter         bool
	LogStore      string // LogStoreBolt or LogStoreWAL
	// Log appends since the node started (each one write of the log store
	// with its fsyncs), the entries they carried, and their total time.
	LogAppends, LogEntries, LogAppendUS uint64
}

// Status returns this node's view of itself.
func (n *Node) Status() Status {
	leaderID, _ := n.Leader()
	return Status{
		ID:            n.cfg.ID,
		Addr:          n.cfg.Addr,
		State:         n.raft.State().String(),
		Term:          n.raft.CurrentTerm(),
		AppliedIndex:  n.raft.AppliedIndex(),
		CommitIndex:   n.raft.CommitIndex(),
		LastIndex:     n.raft.LastIndex(),
		SnapshotIndex: n.snapshotIndex(),
		Leader:        leaderID,
		Voter:         n.isVoter(),
		LogStore:      n.store,
		LogAppends:    n.appends.appends.Load(),
		LogEntries:    n.appends.entries.Load(),
		LogAppendUS:   n.appends.micros.Load(),
	}
}

func (n *Node) snapshotIndex() uint64 {
	v, _ := strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	return v
}

func (n *Node) isVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

// Servers returns the current Raft configuration.
func (n *Node) Servers() ([]Peer, error) { return n.members(false) }

// Snapshot takes a snapshot now (tests, operators).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Voters returns the voting members of the current Raft configuration.
func (n *Node) Voters() ([]Peer, error) { return n.members(true) }

func (n *Node) members(votersOnly bool) ([]Peer, error) {
	ms, err := n.Configuration()
	if err != nil {
		return nil, err
	}
	var out []Peer
	for _, m := range ms {
		if m.Voter || !votersOnly {
			out = append(out, Peer{ID: m.ID, Addr: m.Addr})
		}
	}
	return out, nil
}

// CurrentTerm is this node's Raft term.
func (n *Node) CurrentTerm() uint64 { return n.raft.CurrentTerm() }
