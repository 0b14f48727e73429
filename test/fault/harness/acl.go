package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/history"
)

// WorkloadRules are the rules of the token every workload client presents
// on a cluster with ACLs on: everything the workload does — register,
// unregister, heartbeat, list, watch, metadata, elect — is a service call.
var WorkloadRules = []string{`service "*" write`}

// WorkloadDescription is the workload token's description.
const WorkloadDescription = "fault suite workload"

// aclState is what the harness keeps of a cluster with ACLs on (Options.ACL).
type aclState struct {
	mgmt     string              // the management token (bootstrap's secret); "" until then
	workload wire.ACLTokenSecret // the workload's token
}

// ACL reports whether the nodes run with -acl.
func (c *Cluster) ACL() bool { return c.opts.ACL }

// ManagementToken is the credential bootstrap answered ("" before it, and
// without ACLs). The harness presents it on every call of its own (status,
// membership changes, the final write and read, the nemeses' and the
// checkers' calls); no other client has it.
func (c *Cluster) ManagementToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acl.mgmt
}

// WorkloadToken is the token created for the workload's clients, with
// WorkloadRules (zero without ACLs).
func (c *Cluster) WorkloadToken() wire.ACLTokenSecret {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acl.workload
}

// Call makes one call to node i's client address with the management
// token (none without ACLs), bounded by timeout.
func (c *Cluster) Call(ctx context.Context, i int, method string, timeout time.Duration, req, resp any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.pool.Call(ctx, c.Nodes[i].Addrs.Client, method, false, req, resp)
}

// adminToken is the token of the harness's own connections.
func (c *Cluster) adminToken(context.Context) string { return c.ManagementToken() }

// bootstrapACL runs acl bootstrap once the cluster is stable, then creates
// the workload's token. Bootstrap carries no request id and works once: it
// is tried again only while the answer says it was not applied or may not
// have been (no leader yet, a timeout); "bootstrapped already" after an
// attempt whose answer was lost means its secret is lost, and the run
// cannot go on.
func (c *Cluster) bootstrapACL(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var res wire.ACLTokenSecret
	var lost error // an attempt whose outcome is unknown
	for i := 0; ; i++ {
		n := i % len(c.Nodes)
		err := c.Call(ctx, n, wire.MethodACLBootstrap, 5*time.Second, &wire.ACLBootstrapRequest{}, &res)
		if err == nil {
			break
		}
		if errors.Is(err, codes.ErrRefused) && lost != nil {
			return fmt.Errorf("acl bootstrap: %v, after an attempt whose answer was lost (%v): its management token is unknown", err, lost)
		}
		if !codes.Retryable(err) {
			return fmt.Errorf("acl bootstrap via %s: %w", c.Nodes[n].ID, err)
		}
		if !codes.NotApplied(err) {
			lost = err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("acl bootstrap: no answer within %v: %w", timeout, err)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	c.mu.Lock()
	c.acl.mgmt = res.Secret
	c.mu.Unlock()
	c.opts.Logf("acl bootstrap: management token %s", res.Token.AccessorID)

	// A create whose answer was lost may have made a token: another one
	// is harmless (nobody uses the first; every node lists it alike).
	req := &wire.ACLTokenCreateRequest{Description: WorkloadDescription, Rules: WorkloadRules}
	var wt wire.ACLTokenSecret
	for i := 0; ; i++ {
		n := i % len(c.Nodes)
		err := c.Call(ctx, n, wire.MethodACLTokenCreate, 5*time.Second, req, &wt)
		if err == nil {
			break
		}
		if !codes.Retryable(err) {
			return fmt.Errorf("create the workload's token via %s: %w", c.Nodes[n].ID, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("create the workload's token: no answer within %v: %w", timeout, err)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	c.mu.Lock()
	c.acl.workload = wt
	c.mu.Unlock()
	c.opts.Logf("acl: workload token %s %q", wt.Token.AccessorID, wt.Token.Rules)
	return nil
}

// TokenLists asks every running node for its token list (ACLTokenList
// answers the node's own table). Call it once every node has applied the
// same index: the lists must then be equal.
func (c *Cluster) TokenLists(ctx context.Context) []history.TokenList {
	var out []history.TokenList
	for i, n := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		tl := history.TokenList{Node: n.ID, Tokens: []history.Token{}}
		var res wire.ACLTokenListResponse
		if err := c.Call(ctx, i, wire.MethodACLTokenList, 5*time.Second, &wire.Empty{}, &res); err != nil {
			tl.Err = err.Error()
		} else {
			tl.Index = res.Index
			for _, t := range res.Tokens {
				tl.Tokens = append(tl.Tokens, history.Token{AccessorID: t.AccessorID, Description: t.Description, Rules: t.Rules,
					ExpiresAtMillis: t.ExpiresAtMillis, CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex})
			}
		}
		out = append(out, tl)
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
