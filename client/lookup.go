package client

import (
	"context"
	"time"

	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// ListResult is one read of a service: its instances, the index of the
// state they were read at, and how fresh the answering node's state can be.
type ListResult struct {
	Instances []*Service
	Index     uint64
	// KnownLeader: the answering node knew a leader. A node that lost its
	// leader goes on answering from its last state (for discovery the last
	// known state beats nothing), and says so here.
	KnownLeader bool
	// LastContact is how long before the answer the node last heard from
	// the leader: 0 from the leader itself, negative if it never has since
	// it started (on an etcd front end: since etcd last answered it).
	LastContact time.Duration
}

// List reads a service once, with the freshness of the answer (see
// Instances for the rest).
func (c *Client) List(ctx context.Context, name string, opts ListOptions) (*ListResult, error) {
	if err := validate.Name(name); err != nil {
		return nil, err
	}
	if err := validate.Attrs(opts.Attrs); err != nil {
		return nil, err
	}
	var resp wire.ListResponse
	req := &wire.ListRequest{Name: name, Attrs: opts.Attrs, Consistent: opts.Consistent, MinIndex: c.LastIndex()}
	if err := c.call(ctx, wire.MethodList, req, &resp); err != nil {
		return nil, err
	}
	c.observe(resp.Index)
	out := &ListResult{Instances: make([]*Service, len(resp.Instances)), Index: resp.Index,
		KnownLeader: resp.KnownLeader, LastContact: time.Duration(resp.LastContactMillis) * time.Millisecond}
	if resp.LastContactMillis < 0 {
		out.LastContact = -1
	}
	for i := range resp.Instances {
		out.Instances[i] = serviceFromWire(&resp.Instances[i])
	}
	return out, nil
}
