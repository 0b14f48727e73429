package raftstore

import (
	"context"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/faultbugs"
	"github.com/discoverd/discoverd/internal/wire"
)

// SetMeta implements backend.DiscoveryBackend: a set-meta command through
// the leader's log. A conflict is the FSM's result, carrying the current
// index; a follower gets it back from the leader with the index in the
// answer's header.
func (s *Store) SetMeta(ctx context.Context, w backend.MetaWrite) (uint64, error) {
	cmd := &fsm.SetMetaCommand{Name: w.Name, Data: w.Data, ExpectIndex: w.ExpectIndex, RequestID: w.RequestID}
	req := &wire.SetMetaRequest{Name: w.Name, Data: w.Data, ExpectIndex: w.ExpectIndex, RequestID: w.RequestID}
	return s.write(ctx, fsm.SetMetaType, cmd, wire.MethodSetMeta, req)
}

// DeleteMeta implements backend.DiscoveryBackend, like SetMeta.
func (s *Store) DeleteMeta(ctx context.Context, w backend.MetaWrite) (uint64, error) {
	cmd := &fsm.DeleteMetaCommand{Name: w.Name, ExpectIndex: w.ExpectIndex, RequestID: w.RequestID}
	req := &wire.DeleteMetaRequest{Name: w.Name, ExpectIndex: w.ExpectIndex, RequestID: w.RequestID}
	return s.write(ctx, fsm.DeleteMetaType, cmd, wire.MethodDeleteMeta, req)
}

// GetMeta implements backend.DiscoveryBackend from the local FSM, like
// List: a consistent read is served by the leader once it has confirmed
// its leadership with a quorum; any read waits (bounded) until this node
// has caught up since it started (readGate) and has applied MinIndex.
func (s *Store) GetMeta(ctx context.Context, name string, opts backend.MetaOptions) (uint64, backend.Meta, error) {
	if faultbugs.On("stale-read") {
		opts.Consistent = false // planted bug: "consistent" reads served from local state
	}
	if opts.Consistent {
		var fwd wire.GetMetaResponse
		req := &wire.GetMetaRequest{Name: name, Consistent: true, MinIndex: opts.MinIndex}
		remote, err := s.onLeader(ctx, "consistent read", wire.MethodGetMeta, req, &fwd, func() error { return s.node.VerifyLeader(ctx) })
		if remote || err != nil {
			return fwd.Index, backend.Meta{Data: fwd.Data, Index: fwd.MetaIndex}, err
		}
	}
	if err := s.readGate(ctx); err != nil {
		return 0, backend.Meta{}, err
	}
	if err := s.waitIndex(ctx, opts.MinIndex); err != nil {
		return 0, backend.Meta{}, err
	}
	idx, m := s.fsm.GetMeta(name)
	if m == nil {
		return idx, backend.Meta{}, nil
	}
	return idx, backend.Meta{Data: m.Data, Index: m.Index}, nil
}
