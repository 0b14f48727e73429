package rpc

import (
	"context"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/wire"
)

// services serves MethodServices: every service that has instances, by
// name, with its instance count. The request carries no names or
// attributes to validate; a body that is not a map of the documented keys
// is refused by DecodeRequest.
func (c *conn) services(ctx context.Context, f *wire.Frame) (any, error) {
	var req wire.ServicesRequest
	if err := f.DecodeRequest(&req); err != nil {
		return nil, err
	}
	be := c.s.be
	idx, list, err := be.Services(ctx, backend.ServicesOptions{Consistent: req.Consistent, MinIndex: req.MinIndex})
	if list == nil {
		list = []wire.ServiceCount{}
	}
	return &wire.ServicesResponse{Index: idx, Services: list, Freshness: be.Freshness()}, err
}
