package rpc

import (
	"context"
	"fmt"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// members serves MethodMembers and MethodChangeMember on a backend that
// has members (the Raft store); the etcd backend's membership is etcd's.
func (c *conn) members(ctx context.Context, f *wire.Frame) (any, error) {
	mb, ok := c.s.be.(backend.Membership)
	if !ok {
		return nil, fmt.Errorf("%s: this node is a front end over etcd, whose members are etcd's (use etcdctl member): %w", f.Header.Method, codes.ErrRefused)
	}
	if f.Header.Method == wire.MethodMembers {
		var req wire.Empty
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		resp, err := mb.Members(ctx)
		return &resp, err
	}
	var req wire.ChangeMemberRequest
	if err := f.DecodeRequest(&req); err != nil {
		return nil, err
	}
	resp, err := mb.ChangeMember(ctx, req)
	return &resp, err
}
