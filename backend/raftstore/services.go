package raftstore

import (
	"context"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/wire"
)

// Services implements backend.DiscoveryBackend from the local FSM, like
// List: a consistent read is served by the leader once it has confirmed
// its leadership with a quorum; any read waits (bounded) until this node
// has caught up since it started (readGate) and has applied MinIndex.
func (s *Store) Services(ctx context.Context, opts backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	if opts.Consistent {
		var fwd wire.ServicesResponse
		req := &wire.ServicesRequest{Consistent: true, MinIndex: opts.MinIndex}
		remote, err := s.onLeader(ctx, "consistent read", wire.MethodServices, req, &fwd, func() error { return s.node.VerifyLeader(ctx) })
		if remote || err != nil {
			return fwd.Index, fwd.Services, err
		}
	}
	if err := s.readGate(ctx); err != nil {
		return 0, nil, err
	}
	if err := s.waitIndex(ctx, opts.MinIndex); err != nil {
		return 0, nil, err
	}
	idx, counts := s.fsm.Services()
	out := make([]backend.ServiceCount, len(counts))
	for i, c := range counts {
		out[i] = backend.ServiceCount{Name: c.Name, Instances: uint64(c.Instances)}
	}
	return idx, out, nil
}
