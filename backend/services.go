package backend

import "github.com/discoverd/discoverd/internal/wire"

// ServiceCount is one service and how many instances it has.
type ServiceCount = wire.ServiceCount

// ServicesOptions shape a Services read.
type ServicesOptions struct {
	Consistent bool   // linearizable: confirmed by the leader
	MinIndex   uint64 // never answer from a state older than this index
}

// Meta is a service's metadata: Data, and Index, the index of the write
// that set it (the Raft store's index of the set-meta command, the etcd
// revision of the put). Index 0: the service has none.
type Meta struct {
	Data  []byte
	Index uint64
}

// MetaWrite is a compare-and-set of a service's metadata (SetMeta,
// DeleteMeta).
type MetaWrite struct {
	Name string
	Data []byte // SetMeta only; at most validate.MaxMetaBytes
	// ExpectIndex is the index the metadata must be at for the write to
	// apply. 0: SetMeta only if the service has none (create); DeleteMeta
	// whatever its index.
	ExpectIndex uint64
	RequestID   string // optional; retries of one write carry the same id
}

// MetaOptions shape a GetMeta read, as ListOptions shape a List.
type MetaOptions struct {
	Consistent bool   // linearizable: confirmed by the leader
	MinIndex   uint64 // never answer from a state older than this index
}
