package wire

// Node-to-node methods, spoken only on connections that open with the peer
// protocol byte (internal/mux ConnPeer); with TLS only a server certificate
// of the cluster may open one. docs/protocol.md ("Peer protocol") describes
// them and backend/raftstore/deadlines.go serves them.
const (
	// MethodPushDeadlines hands a node the deadlines of heartbeats the
	// leader is about to acknowledge.
	MethodPushDeadlines = "PushDeadlines"
	// MethodCollectDeadlines asks a node for its deadline table on behalf
	// of a new leader.
	MethodCollectDeadlines = "CollectDeadlines"
)

// DeadlineGroup is registrations (by index) whose deadlines lie the same
// time ahead.
type DeadlineGroup struct {
	RemainingMicros int64    `codec:"remaining_us"`
	Indexes         []uint64 `codec:"indexes"`
}

// PushDeadlinesRequest carries renewed deadlines from the leader of Term.
type PushDeadlinesRequest struct {
	Term   uint64          `codec:"term"`
	Groups []DeadlineGroup `codec:"groups"`
}

// PushDeadlinesResponse acknowledges a push: the node holds the deadlines.
type PushDeadlinesResponse struct{}

// CollectDeadlinesRequest asks for a node's table for the new leader of
// Term; the node refuses pushes of older terms from then on.
type CollectDeadlinesRequest struct {
	Term uint64 `codec:"term"`
}

// CollectDeadlinesResponse is a node's deadline table: Indexes[i]'s
// deadline lies RemainingMicros[i] ahead.
type CollectDeadlinesResponse struct {
	// AgeMicros is how long the table has held everything it was sent.
	AgeMicros       int64    `codec:"age_us"`
	Indexes         []uint64 `codec:"indexes"`
	RemainingMicros []int64  `codec:"remaining_us"`
}
