package raftnode

import "github.com/discoverd/discoverd/internal/histogram"

// Histograms are the node's distributions since it started, for /metrics
// (server/metrics.go): each observed on its hot path with atomic adds only.
type Histograms struct {
	// AppendUS: the time of each log append (one bbolt transaction with
	// its two fsyncs, or one WAL append with its one), in microseconds;
	// AppendEntries: the entries it carried.
	AppendUS, AppendEntries histogram.Snapshot
	// GroupWrites: the writes of each group that group commit handed to
	// Raft (groupcommit.go); nil when group commit is off.
	GroupWrites *histogram.Snapshot
}

// Histograms returns the node's histograms now.
func (n *Node) Histograms() Histograms {
	h := Histograms{AppendUS: n.appends.latency.Snapshot(), AppendEntries: n.appends.size.Snapshot()}
	if n.group != nil {
		s := n.group.writes.Snapshot()
		h.GroupWrites = &s
	}
	return h
}
