package acl

import (
	"context"
	"fmt"

	"github.com/discoverd/discoverd/internal/codes"
)

// ErrOff answers the ACL methods, on every interface, on a node started
// without -acl: there is no guard to ask.
var ErrOff = fmt.Errorf("ACLs are off on this node: start every server with -acl (docs/acl.md): %w", codes.ErrRefused)

// CheckOperator resolves the caller of ctx (backend.CallerFrom) and fails
// with codes.ErrPermissionDenied, naming the rule missing, unless it has
// want on the cluster. It is for what a node serves beside the guarded
// backend — /metrics and the profiler need operator read — and audits a
// denied write as the guard's own calls do. what says what the caller
// tried ("reading the metrics").
func (g *Guard) CheckOperator(ctx context.Context, what string, want Access) error {
	return g.checkOperator(ctx, what, want)
}
