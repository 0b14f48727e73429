package wire

// ServicesRequest asks for every service that has instances (MethodServices).
type ServicesRequest struct {
	Consistent bool   `codec:"consistent,omitempty"` // linearizable: served by a confirmed leader
	MinIndex   uint64 `codec:"min_index,omitempty"`  // do not answer from state older than this
}

// ServiceCount is one service and how many instances it has.
type ServiceCount struct {
	Name      string `codec:"name"`
	Instances uint64 `codec:"instances"`
}

// ServicesResponse lists, sorted by name, every service that had at least
// one instance at Index (the answering node's applied index, as in
// ListResponse), and how fresh the answering node's state is. Services is
// never nil.
type ServicesResponse struct {
	Index    uint64         `codec:"index"`
	Services []ServiceCount `codec:"services"`
	Freshness
}
