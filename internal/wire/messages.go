package wire

import "github.com/discoverd/discoverd/internal/codes"

// Methods.
const (
	MethodRegister   = "Register"
	MethodUnregister = "Unregister"
	MethodHeartbeat  = "Heartbeat"
	MethodList       = "List"
	MethodWatch      = "Watch"
	MethodCancel     = "Cancel"
	MethodStatus     = "Status"
	MethodNodeInfo   = "NodeInfo"
	MethodReadIndex  = "ReadIndex"
	MethodServices   = "Services"
	MethodSetMeta    = "SetMeta"
	MethodGetMeta    = "GetMeta"
	MethodDeleteMeta = "DeleteMeta"
)

// Event kinds.
const (
	KindUp      = "up"      // an instance appeared (also: each instance of an initial state)
	KindUpdate  = "update"  // an instance was registered again (attributes or TTL may differ)
	KindDown    = "down"    // an instance went away (Reason says unregister or expire)
	KindCurrent = "current" // the initial (or resynced) state is complete as of Index
	KindResync  = "resync"  // history was lost: drop what you hold, a full state follows
	KindMeta    = "meta"    // the service's metadata was set (Data), or deleted (Deleted); also in a state block
)

// Down reasons.
const (
	ReasonUnregister = "unregister"
	ReasonExpire     = "expire"
)

// Header opens every frame.
type Header struct {
	Seq       uint64 `codec:"seq"`                 // request number chosen by the client, echoed in responses
	Method    string `codec:"method,omitempty"`    // requests only
	Forwarded bool   `codec:"forwarded,omitempty"` // set by a node forwarding to the leader; never forwarded again
	Code      string `codec:"code,omitempty"`      // responses: error code, empty on success
	Error     string `codec:"error,omitempty"`     // responses: error message
	More      bool   `codec:"more,omitempty"`      // responses: more frames follow for this Seq (streams)
	// Index, on a conflict: the index the service's metadata is at now (0
	// or absent: it has none), so the caller can read again and retry.
	Index uint64 `codec:"index,omitempty"`
	// Token, on a request to a node with ACLs on: the caller's credential
	// ("<accessor id>.<secret>"); absent, the anonymous token's rights
	// apply. Every request carries its own, and a node forwarding a
	// request to the leader passes the caller's on unchanged.
	Token string `codec:"token,omitempty"`
}

// Err turns a response header's code and message back into an error (a
// *codes.ConflictError carrying Index for a conflict).
func (h *Header) Err() error { return codes.FromWireIndex(codes.Code(h.Code), h.Error, h.Index) }

// ErrorHeader is the header of an error response to request seq: err's
// code and message, and for a conflict the metadata's current index.
func ErrorHeader(seq uint64, err error) *Header {
	h := &Header{Seq: seq, Code: string(codes.Of(err)), Error: err.Error()}
	if idx, ok := codes.ConflictIndex(err); ok {
		h.Index = idx
	}
	return h
}

// RegisterRequest registers an instance, or registers it again with new attributes or TTL.
type RegisterRequest struct {
	Name      string            `codec:"name"`
	Addr      string            `codec:"addr"`
	Attrs     map[string]string `codec:"attrs"`
	TTLMillis int64             `codec:"ttl_ms"`     // 0: the default (10 s)
	RequestID string            `codec:"request_id"` // same id on every retry of one write
}

// UnregisterRequest removes an instance.
type UnregisterRequest struct {
	Name      string `codec:"name"`
	Addr      string `codec:"addr"`
	RequestID string `codec:"request_id"`
	// IfIndex, if set, removes the instance only if its last registration
	// is the one at this index (a registrant removing what it registered);
	// otherwise the answer is not_found and the instance stays.
	IfIndex uint64 `codec:"if_index,omitempty"`
}

// WriteResponse answers Register and Unregister with the index of the committed entry.
type WriteResponse struct {
	Index uint64 `codec:"index"`
}

// InstanceKey names one instance.
type InstanceKey struct {
	Name string `codec:"name"`
	Addr string `codec:"addr"`
}

// HeartbeatRequest keeps instances alive. It never enters the Raft log.
type HeartbeatRequest struct {
	Instances []InstanceKey `codec:"instances"`
}

// Result is one per-item outcome; an empty Code is success.
type Result struct {
	Code  string `codec:"code,omitempty"`
	Error string `codec:"error,omitempty"`
}

// Err returns the item's error or nil.
func (r Result) Err() error { return codes.FromWire(codes.Code(r.Code), r.Error) }

// ResultOf encodes an error as a Result.
func ResultOf(err error) Result {
	if err == nil {
		return Result{}
	}
	return Result{Code: string(codes.Of(err)), Error: err.Error()}
}

// HeartbeatResponse has one Result per requested instance, in order.
type HeartbeatResponse struct {
	Results []Result `codec:"results"`
}

// ListRequest reads the instances of a service.
type ListRequest struct {
	Name       string            `codec:"name"`
	Attrs      map[string]string `codec:"attrs,omitempty"`      // only instances with all of these
	Consistent bool              `codec:"consistent,omitempty"` // linearizable: served by a confirmed leader
	MinIndex   uint64            `codec:"min_index,omitempty"`  // do not answer from state older than this
}

// Instance is one registered instance.
type Instance struct {
	Name        string            `codec:"name"`
	Addr        string            `codec:"addr"`
	Attrs       map[string]string `codec:"attrs"`
	TTLMillis   int64             `codec:"ttl_ms"`
	CreateIndex uint64            `codec:"create_index"` // index of its first registration (fencing token)
	Index       uint64            `codec:"index"`        // index of its last registration
	// Suspect: its TTL ran out, but the leader's expiry-storm guard holds
	// back its expiry (ttl/DESIGN.md); it heartbeats again, or it expires.
	Suspect bool `codec:"suspect,omitempty"`
}

// ListResponse is the state of one service at Index.
type ListResponse struct {
	Index     uint64     `codec:"index"`
	Instances []Instance `codec:"instances"`
	Freshness
}

// Freshness says how current the answering node's state can be: whether it
// knows a leader, and how long ago it last heard from one (0 on the leader).
// A node that has lost its leader goes on serving its last state (for
// discovery, the last known state beats nothing) and says so here.
type Freshness struct {
	KnownLeader bool `codec:"known_leader"`
	// LastContactMillis: milliseconds since this node last heard from the
	// leader; 0 on the leader itself, -1 if it never has since it started.
	LastContactMillis int64 `codec:"last_contact_ms"`
}

// ReadIndexRequest asks a node for an index at least as new as every change
// acknowledged before the request arrived (linearizable: the leader confirms
// its leadership with a quorum first). Nodes use it to catch up after they
// start; any client may use it too.
type ReadIndexRequest struct{}

// ReadIndexResponse answers a ReadIndexRequest.
type ReadIndexResponse struct {
	Index uint64 `codec:"index"`
}

// WatchRequest opens a stream of events for a service. FromIndex 0 starts with
// the current state; otherwise the stream resumes after FromIndex.
type WatchRequest struct {
	Name      string `codec:"name"`
	FromIndex uint64 `codec:"from_index,omitempty"`
	MinIndex  uint64 `codec:"min_index,omitempty"` // do not serve from a state older than this
}

// Event is one change (or a state marker) on a watch stream.
type Event struct {
	Kind        string            `codec:"kind"`
	Index       uint64            `codec:"index"`
	Name        string            `codec:"name"`
	Addr        string            `codec:"addr,omitempty"`
	Attrs       map[string]string `codec:"attrs,omitempty"`
	TTLMillis   int64             `codec:"ttl_ms,omitempty"`
	CreateIndex uint64            `codec:"create_index,omitempty"`
	Reason      string            `codec:"reason,omitempty"`
	// Data is the service's metadata on a meta event (absent when empty).
	Data []byte `codec:"data,omitempty"`
	// Deleted, on a meta event: the metadata was deleted (Data is absent).
	Deleted bool `codec:"deleted,omitempty"`
	Suspect bool `codec:"suspect,omitempty"` // as in Instance; a change of it is an update
}

// WatchEvents is one frame of a watch stream.
type WatchEvents struct {
	Events []Event `codec:"events"`
}

// CancelRequest ends the stream opened by request Seq.
type CancelRequest struct {
	Seq uint64 `codec:"seq"`
}

// Empty is the body of requests and responses that carry nothing.
type Empty struct{}

// NodeStatus describes one node of the cluster.
type NodeStatus struct {
	ID            string `codec:"id"`
	Addr          string `codec:"addr"`
	State         string `codec:"state"` // Leader, Follower, Candidate, Shutdown, or unreachable
	Term          uint64 `codec:"term"`
	AppliedIndex  uint64 `codec:"applied_index"`
	CommitIndex   uint64 `codec:"commit_index"`
	LastIndex     uint64 `codec:"last_index"`
	SnapshotIndex uint64 `codec:"snapshot_index"` // index of the latest snapshot on this node
	Leader        string `codec:"leader"`         // the leader this node knows of
	Voter         bool   `codec:"voter"`
	// Ready: the node has caught up with the cluster since it started and
	// serves reads (see codes.ErrNotReady).
	Ready bool `codec:"ready"`
	Freshness
	Error     string `codec:"error,omitempty"`
	HeapInuse uint64 `codec:"heap_inuse_bytes,omitempty"` // this process's Go heap in use (NodeInfo only)
	// Raft log appends since the node started (each one write of the log
	// store with its fsyncs), the entries they carried, and their total time.
	LogAppends  uint64 `codec:"log_appends,omitempty"`
	LogEntries  uint64 `codec:"log_entries,omitempty"`
	LogAppendUS uint64 `codec:"log_append_us,omitempty"`
	// ACLIndex is the index of the last ACL change in this node's token
	// table (NodeInfo only; 0: none, or ACLs unknown to the node).
	ACLIndex uint64 `codec:"acl_index,omitempty"`
	// LogStore is the node's Raft log store: bolt or wal (raft backend only).
	LogStore string `codec:"log_store,omitempty"`
	// Only when asked for with NodeInfoRequest.StateHash:
	FSMApplied uint64 `codec:"fsm_applied,omitempty"` // the state machine's applied index
	StateHash  string `codec:"state_hash,omitempty"`  // SHA-256 of the replicated state at FSMApplied
	// The expiry-storm guard of this node's leader tracker (ttl/storm.go),
	// since the node started: expiries held now, holds begun, holds
	// released at their max hold (the expiry went ahead), holds that ended
	// otherwise (heartbeat, registration, removal, leadership lost).
	StormHeld     uint64 `codec:"storm_held,omitempty"`
	StormHolds    uint64 `codec:"storm_holds,omitempty"`
	StormReleased uint64 `codec:"storm_released,omitempty"`
	StormUnheld   uint64 `codec:"storm_unheld,omitempty"`
}

// NodeInfoRequest asks one node about itself.
type NodeInfoRequest struct {
	// StateHash asks for a hash of the replicated state (walks it all: for checks).
	StateHash bool `codec:"state_hash,omitempty"`
}

// StatusResponse is the whole cluster as seen from the node asked.
type StatusResponse struct {
	Leader string       `codec:"leader"`
	Nodes  []NodeStatus `codec:"nodes"`
}
