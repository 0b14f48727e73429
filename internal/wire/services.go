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

// SetMetaRequest sets a service's metadata (MethodSetMeta) — a
// compare-and-set: it applies only if the metadata is at ExpectIndex now, 0
// meaning "only if the service has none" (create). Otherwise the answer is
// a conflict whose header carries the current index. Answered by a
// WriteResponse: the index of the write, which is the new metadata's index.
type SetMetaRequest struct {
	Name        string `codec:"name"`
	Data        []byte `codec:"data"` // up to 64 KiB
	ExpectIndex uint64 `codec:"expect_index"`
	RequestID   string `codec:"request_id"` // same id on every retry of one write
}

// DeleteMetaRequest deletes a service's metadata (MethodDeleteMeta): with
// ExpectIndex, only if it is at that index (else a conflict); without,
// whatever its index (not_found if there is none). Answered by a
// WriteResponse.
type DeleteMetaRequest struct {
	Name        string `codec:"name"`
	ExpectIndex uint64 `codec:"expect_index,omitempty"`
	RequestID   string `codec:"request_id"`
}

// GetMetaRequest reads a service's metadata (MethodGetMeta), served like a
// ListRequest.
type GetMetaRequest struct {
	Name       string `codec:"name"`
	Consistent bool   `codec:"consistent,omitempty"` // linearizable: served by a confirmed leader
	MinIndex   uint64 `codec:"min_index,omitempty"`  // do not answer from state older than this
}

// GetMetaResponse is a service's metadata: MetaIndex is the index of the
// write that set it, 0 when the service has none (Data is then empty).
// Index is the answering node's applied index, as in ListResponse.
type GetMetaResponse struct {
	Index     uint64 `codec:"index"`
	MetaIndex uint64 `codec:"meta_index"`
	Data      []byte `codec:"data"`
	Freshness
}

// decodeMsgpack decodes a SetMetaRequest by hand, so that data must be a
// bin or a str (or nil): the reflective codec takes some other types, a
// map among them, for empty data, which would set metadata the caller did
// not send.
func (q *SetMetaRequest) decodeMsgpack(b []byte) error {
	*q = SetMetaRequest{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "name":
			q.Name, err = r.Str()
		case "data":
			q.Data, err = r.Bytes()
		case "expect_index":
			q.ExpectIndex, err = r.Uint()
		case "request_id":
			q.RequestID, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
}
