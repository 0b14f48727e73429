package backend

import "github.com/discoverd/discoverd/internal/wire"

// ServiceCount is one service and how many instances it has.
type ServiceCount = wire.ServiceCount

// ServicesOptions shape a Services read.
type ServicesOptions struct {
	Consistent bool   // linearizable: confirmed by the leader
	MinIndex   uint64 // never answer from a state older than this index
}
