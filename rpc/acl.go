package rpc

import (
	"context"
	"fmt"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// errACLOff answers the ACL methods on a node started without -acl.
var errACLOff = fmt.Errorf("ACLs are off on this node: start every server with -acl (docs/acl.md): %w", codes.ErrRefused)

// acl serves the ACL methods through the guard (acl.Admin), which checks
// the caller's rights; call delegates to it.
func (c *conn) acl(ctx context.Context, f *wire.Frame) (any, error) {
	ad, ok := c.s.be.(acl.Admin)
	if !ok {
		return nil, fmt.Errorf("%s: %w", f.Header.Method, errACLOff)
	}
	switch f.Header.Method {
	case wire.MethodACLBootstrap:
		var req wire.ACLBootstrapRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		res, err := ad.Bootstrap(ctx)
		return &res, err
	case wire.MethodACLTokenCreate:
		var req wire.ACLTokenCreateRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		res, err := ad.CreateToken(ctx, req)
		return &res, err
	case wire.MethodACLTokenUpdate:
		var req wire.ACLTokenUpdateRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		res, err := ad.UpdateToken(ctx, req)
		return &res, err
	case wire.MethodACLTokenDelete:
		var req wire.ACLTokenIDRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		idx, err := ad.DeleteToken(ctx, req)
		return &wire.WriteResponse{Index: idx}, err
	case wire.MethodACLTokenRead:
		var req wire.ACLTokenIDRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		res, err := ad.ReadToken(ctx, req)
		return &res, err
	case wire.MethodACLTokenList:
		var req wire.Empty
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		res, err := ad.ListTokens(ctx)
		return &res, err
	default: // wire.MethodACLWhoAmI
		var req wire.Empty
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		res, err := ad.WhoAmI(ctx)
		return &res, err
	}
}
