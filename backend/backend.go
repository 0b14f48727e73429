// Package backend is the seam between discoverd's RPC layer and the store
// that holds registrations. The RPC server (rpc/) serves every client call
// through DiscoveryBackend and nothing else. Two implementations pass the
// same conformance suite (backend/conformance): the built-in Raft store
// (backend/raftstore, the default) and etcd v3 (backend/etcdstore, for
// discoverd nodes running as stateless front ends over an etcd cluster).
//
// The interface keeps the names and meaning of the original design —
// Subscribe, Register, Unregister, Heartbeat — with modern signatures: every
// call takes a context; Register carries a TTL and a request id that makes a
// retried write idempotent; Subscribe takes the index to resume after (0 for
// the current state first). Every index is the store's own: the index of a
// change in the Raft store's log (docs/protocol.md, "Indices"), the etcd
// revision for the etcd store.
package backend

import (
	"context"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// Instance is one registered instance, as clients see it.
type Instance = wire.Instance

// Event is one change, or state marker, on a watch stream.
type Event = wire.Event

// InstanceKey names one instance.
type InstanceKey = wire.InstanceKey

// Registration is what Register stores.
type Registration struct {
	Name      string
	Addr      string
	Attrs     map[string]string
	TTL       time.Duration // 0: the default TTL
	RequestID string        // optional; retries of one write carry the same id
}

// Unregistration is what Unregister removes.
type Unregistration struct {
	Name      string
	Addr      string
	RequestID string // optional; retries of one write carry the same id
	// IfIndex, if not 0, removes the instance only if its last registration
	// is the one at this index: a registrant removes what it registered,
	// never another registrant's later registration of the same instance.
	IfIndex uint64
}

// ListOptions shape a read.
type ListOptions struct {
	Attrs      map[string]string // only instances carrying all of these
	Consistent bool              // linearizable: confirmed by the leader
	MinIndex   uint64            // never answer from a state older than this index
}

// DiscoveryBackend stores registrations and serves reads and watches.
// Implementations validate nothing the RPC layer already validated, but must
// be safe for concurrent use. Errors wrap the sentinels of internal/codes.
type DiscoveryBackend interface {
	// Register stores or replaces an instance and returns the commit index.
	Register(ctx context.Context, r Registration) (uint64, error)
	// Unregister removes an instance; codes.ErrNotFound if it is not
	// registered, or (with IfIndex) if its last registration is not the
	// one at IfIndex.
	Unregister(ctx context.Context, u Unregistration) (uint64, error)
	// Heartbeat keeps instances alive. The slice has one entry per key: nil,
	// or an error wrapping codes.ErrNotFound (register again).
	Heartbeat(ctx context.Context, keys []InstanceKey) ([]error, error)
	// List returns a service's instances and the index of the state read.
	List(ctx context.Context, name string, opts ListOptions) (uint64, []Instance, error)
	// Services returns every service with at least one instance, sorted by
	// name, with its instance count, and the index of the state read.
	Services(ctx context.Context, opts ServicesOptions) (uint64, []ServiceCount, error)
	// SetMeta sets a service's metadata if it is at w.ExpectIndex (0: only
	// if the service has none) and returns the index of the write — the
	// new metadata's index. Otherwise it fails with a *codes.ConflictError
	// carrying the metadata's current index (0: none), and nothing changes.
	SetMeta(ctx context.Context, w MetaWrite) (uint64, error)
	// DeleteMeta deletes a service's metadata: with w.ExpectIndex only if
	// it is at that index (else a conflict, as SetMeta), without it
	// whatever its index (codes.ErrNotFound if there is none). Instances
	// are untouched, and removing a service's last instance never deletes
	// its metadata.
	DeleteMeta(ctx context.Context, w MetaWrite) (uint64, error)
	// GetMeta returns a service's metadata (Index 0: none) and the index
	// of the state read, served like List.
	GetMeta(ctx context.Context, name string, opts MetaOptions) (uint64, Meta, error)
	// Subscribe opens a watch: with fromIndex 0 the current state (up events
	// then, if the service has metadata, a meta event, then a current
	// marker), else every change after fromIndex (meta events among them) or
	// a resync marker followed by the current state. The stream is never served from a
	// state older than max(fromIndex, minIndex): the store waits for it
	// (bounded) or fails with codes.ErrStaleNode.
	Subscribe(ctx context.Context, name string, fromIndex, minIndex uint64) (UpdateStream, error)
	// Status describes the cluster.
	Status(ctx context.Context) (wire.StatusResponse, error)
	// NodeInfo describes this node alone; with stateHash, it includes a hash
	// of the replicated state (where the store has one) for replica checks.
	NodeInfo(ctx context.Context, stateHash bool) (wire.NodeStatus, error)
	// ReadIndex returns an index at least as new as every change
	// acknowledged before the call (linearizable).
	ReadIndex(ctx context.Context) (uint64, error)
	// Freshness says whether this node knows a leader and how long ago it
	// last heard from one; it goes with every read's answer.
	Freshness() wire.Freshness
}

// Membership is implemented by a backend whose nodes are the cluster (the
// Raft store): the RPC server answers its methods with it, and refuses them
// (codes.ErrRefused) on a backend without it.
type Membership interface {
	// Members lists the configuration, from the leader, with each member's
	// own status.
	Members(ctx context.Context) (wire.MembersResponse, error)
	// ChangeMember makes one change, on the leader.
	ChangeMember(ctx context.Context, req wire.ChangeMemberRequest) (wire.ChangeMemberResponse, error)
}

// UpdateStream is an open watch.
type UpdateStream interface {
	// Next waits for the next events (at least one) or ctx's end. A Next
	// that returns because ctx ended leaves the stream usable: the server
	// uses short contexts to send keepalives on idle streams.
	Next(ctx context.Context) ([]Event, error)
	// Close releases the stream; Next then fails.
	Close()
}

type forwardedKey struct{}

// WithForwarded marks ctx as serving a request another node forwarded here:
// the backend must not forward it again.
func WithForwarded(ctx context.Context) context.Context {
	return context.WithValue(ctx, forwardedKey{}, true)
}

// IsForwarded reports whether ctx serves a forwarded request.
func IsForwarded(ctx context.Context) bool {
	v, _ := ctx.Value(forwardedKey{}).(bool)
	return v
}

// Caller is who made a request, as the interface that received it knows:
// the credential presented (empty: none), the remote address, and which
// interface ("native", "http", "dns"). The ACL guard (acl/guard.go) checks
// the credential; a node forwarding the request to the leader passes the
// credential on, so the leader checks the caller's rights, never the node's.
type Caller struct {
	Token  string
	Remote string
	Via    string
}

type callerKey struct{}

// WithCaller attaches the caller to ctx.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller attached to ctx (the zero Caller if none).
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}
