package client

import (
	"context"

	"github.com/discoverd/discoverd/internal/wire"
)

// ServiceCount is one service and how many instances it has.
type ServiceCount = wire.ServiceCount

// ServiceNamesOptions shape ServiceNames.
type ServiceNamesOptions struct {
	// Consistent makes the read linearizable (served by the confirmed leader).
	Consistent bool
}

// ServiceNames lists every service that has at least one instance, sorted by
// name, with its instance count, and returns the index of the state read.
// Like Instances, it is never served from a state older than LastIndex.
func (c *Client) ServiceNames(ctx context.Context, opts ServiceNamesOptions) ([]ServiceCount, uint64, error) {
	var resp wire.ServicesResponse
	req := &wire.ServicesRequest{Consistent: opts.Consistent, MinIndex: c.LastIndex()}
	if err := c.call(ctx, wire.MethodServices, req, &resp); err != nil {
		return nil, 0, err
	}
	c.observe(resp.Index)
	if resp.Services == nil {
		resp.Services = []ServiceCount{}
	}
	return resp.Services, resp.Index, nil
}
