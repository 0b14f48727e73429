package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/harness"
	"github.com/discoverd/discoverd/test/fault/history"
)

// aclChurn changes the tokens while the workload runs (a cluster with
// ACLs on): every 100-300 ms, through a random running node and with the
// management token, it creates a token (a quarter of them expiring within
// 1-3 s), updates the anonymous token's rules or one of its own tokens'
// rules, or deletes one of its own. Each token change is a Raft entry that
// every node turns into a new token table, ends the watches it no longer
// allows and wakes the checks of every request in flight — none of which
// may deny the workload's token anything. It never names the workload's
// token or the management token; it makes at most aclChurnMaxChanges
// changes per injection and keeps at most aclChurnMaxLive tokens of its
// own. Heal stops it, deletes every token it made (found by description,
// so one whose create answer was lost goes too) and gives the anonymous
// token back its rules.
type aclChurn struct {
	stop context.CancelFunc
	done chan struct{}
	anon wire.ACLToken // before the injection: restored on heal

	mu      sync.Mutex
	stats   map[string]int // "<kind> ok|<code>" → count
	touched []string       // protected tokens it was about to change (a bug of its own): Heal fails
}

const (
	aclChurnMaxChanges  = 80
	aclChurnMaxLive     = 6
	aclChurnCallTimeout = 2 * time.Second
	// aclChurnDescription starts the description of every token it makes.
	aclChurnDescription = "acl-churn "
)

// aclChurnRules are the rule sets its tokens get; aclAnonRules the
// anonymous token's. None of them matters to the workload: its own token
// decides what it may do.
var (
	aclChurnRules = [][]string{
		{`service "web*" write`},
		{`service "*" read`},
		{`service "lin*" read`, `operator read`},
		{`acl read`},
		{`service "ttl0" write`, `service "ttl0-admin" read`},
		{},
	}
	aclAnonRules = [][]string{
		{},
		{`service "public-*" read`},
		{`service "*" read`},
		{`service "lin0" read`, `operator read`},
		{`service "ttl*" read`},
	}
)

func (a *aclChurn) Name() string { return "acl-churn" }

func (a *aclChurn) Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error) {
	if !c.ACL() || c.ManagementToken() == "" {
		return history.Fault{}, fmt.Errorf("acl-churn needs a scenario with ACL set: %w", ErrUnsupported)
	}
	var anon wire.ACLTokenResponse
	if err := retryACL(ctx, c, rng, 10*time.Second, func(i int) error {
		return c.Call(ctx, i, wire.MethodACLTokenRead, aclChurnCallTimeout, &wire.ACLTokenIDRequest{AccessorID: "anonymous"}, &anon)
	}); err != nil {
		return history.Fault{}, fmt.Errorf("acl-churn: read the anonymous token: %w", err)
	}
	a.anon = anon.Token
	a.stats = map[string]int{}
	cctx, cancel := context.WithCancel(ctx)
	a.stop, a.done = cancel, make(chan struct{})
	seed := rng.Uint64()
	go func() {
		defer close(a.done)
		a.churn(cctx, c, rand.New(rand.NewPCG(seed, 16)))
	}()
	return history.Fault{Name: a.Name(), Detail: fmt.Sprintf("every 100-300 ms via a random node with the management token: create a token "+
		"(a quarter expiring in 1-3 s), update the anonymous token's or an own token's rules, delete an own token; at most %d changes, "+
		"%d own tokens at once; never the workload's token; heal deletes its tokens and restores the anonymous token", aclChurnMaxChanges, aclChurnMaxLive)}, nil
}

// protected reports whether a token is one acl-churn must never touch.
func protected(c *harness.Cluster, id string) bool {
	mgmt, _, _ := strings.Cut(c.ManagementToken(), ".")
	return id == c.WorkloadToken().Token.AccessorID || id == mgmt
}

// refuse reports whether id is protected, and notes it if so: acl-churn
// only ever changes tokens it made.
func (a *aclChurn) refuse(c *harness.Cluster, id string) bool {
	if !protected(c, id) {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touched = append(a.touched, id)
	return true
}

func (a *aclChurn) count(kind string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.stats[kind+" ok"]++
	} else {
		a.stats[kind+" "+string(codes.Of(err))]++
	}
}

func (a *aclChurn) churn(ctx context.Context, c *harness.Cluster, r *rand.Rand) {
	var live []string // accessor ids of its own tokens
	for n := 0; n < aclChurnMaxChanges; n++ {
		if !sleep(ctx, 100*time.Millisecond+time.Duration(r.Int64N(int64(200*time.Millisecond)))) {
			return
		}
		node, ok := upNode(c, r)
		if !ok {
			continue
		}
		switch x := r.Float64(); {
		case len(live) == 0 || (x < 0.35 && len(live) < aclChurnMaxLive):
			req := &wire.ACLTokenCreateRequest{Description: fmt.Sprintf("%s%d", aclChurnDescription, n), Rules: aclChurnRules[r.IntN(len(aclChurnRules))]}
			if r.IntN(4) == 0 {
				req.ExpiresInMillis = 1000 + r.Int64N(2000)
			}
			var res wire.ACLTokenSecret
			err := c.Call(ctx, node, wire.MethodACLTokenCreate, aclChurnCallTimeout, req, &res)
			a.count("create", err)
			if err == nil {
				live = append(live, res.Token.AccessorID)
			}
		case x < 0.65:
			req := &wire.ACLTokenUpdateRequest{AccessorID: "anonymous", Description: a.anon.Description, Rules: aclAnonRules[r.IntN(len(aclAnonRules))]}
			a.count("update-anonymous", c.Call(ctx, node, wire.MethodACLTokenUpdate, aclChurnCallTimeout, req, &wire.ACLTokenResponse{}))
		case x < 0.8:
			id := live[r.IntN(len(live))]
			if a.refuse(c, id) {
				continue
			}
			req := &wire.ACLTokenUpdateRequest{AccessorID: id, Description: fmt.Sprintf("%s%d (updated)", aclChurnDescription, n), Rules: aclChurnRules[r.IntN(len(aclChurnRules))]}
			a.count("update", c.Call(ctx, node, wire.MethodACLTokenUpdate, aclChurnCallTimeout, req, &wire.ACLTokenResponse{}))
		default:
			k := r.IntN(len(live))
			id := live[k]
			if a.refuse(c, id) {
				continue
			}
			err := c.Call(ctx, node, wire.MethodACLTokenDelete, aclChurnCallTimeout, &wire.ACLTokenIDRequest{AccessorID: id}, &wire.WriteResponse{})
			a.count("delete", err)
			if err == nil || errors.Is(err, codes.ErrNotFound) {
				live = append(live[:k], live[k+1:]...)
			}
		}
	}
}

// upNode picks a random node that runs and is not paused.
func upNode(c *harness.Cluster, r *rand.Rand) (int, bool) {
	var up []int
	for i := range c.Nodes {
		if c.Running(i) && !c.Paused(i) {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		return 0, false
	}
	return up[r.IntN(len(up))], true
}

// retryACL calls f on random running nodes until it succeeds, fails with an
// error that is not worth another try, or timeout passes.
func retryACL(ctx context.Context, c *harness.Cluster, r *rand.Rand, timeout time.Duration, f func(node int) error) error {
	deadline := time.Now().Add(timeout)
	for {
		node, ok := upNode(c, r)
		err := errors.New("no node running")
		if ok {
			if err = f(node); err == nil || !codes.Retryable(err) {
				return err
			}
		}
		if time.Now().After(deadline) || !sleep(ctx, 200*time.Millisecond) {
			return err
		}
	}
}

func (a *aclChurn) Heal(ctx context.Context, c *harness.Cluster) error {
	if a.stop == nil {
		return nil // Inject failed before it started
	}
	a.stop()
	<-a.done
	var errs []error
	a.mu.Lock()
	c.Logf("acl-churn: %v", a.stats)
	if len(a.touched) > 0 {
		errs = append(errs, fmt.Errorf("acl-churn was about to change tokens it did not make (skipped): %v", a.touched))
	}
	a.mu.Unlock()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	// The leader's list holds every token whose create was answered.
	var list wire.ACLTokenListResponse
	if err := retryACL(ctx, c, r, 20*time.Second, func(int) error {
		l, err := c.Leader(ctx, 5*time.Second)
		if err != nil {
			return fmt.Errorf("%v: %w", err, codes.ErrNoLeader)
		}
		return c.Call(ctx, l, wire.MethodACLTokenList, aclChurnCallTimeout, &wire.Empty{}, &list)
	}); err != nil {
		return errors.Join(append(errs, fmt.Errorf("acl-churn: list tokens: %w", err))...)
	}
	deleted := 0
	for _, t := range list.Tokens {
		if !strings.HasPrefix(t.Description, aclChurnDescription) || protected(c, t.AccessorID) {
			continue
		}
		err := retryACL(ctx, c, r, 10*time.Second, func(i int) error {
			return c.Call(ctx, i, wire.MethodACLTokenDelete, aclChurnCallTimeout, &wire.ACLTokenIDRequest{AccessorID: t.AccessorID}, &wire.WriteResponse{})
		})
		if err != nil && !errors.Is(err, codes.ErrNotFound) {
			errs = append(errs, fmt.Errorf("acl-churn: delete %s: %w", t.AccessorID, err))
			continue
		}
		deleted++
	}
	err := retryACL(ctx, c, r, 10*time.Second, func(i int) error {
		return c.Call(ctx, i, wire.MethodACLTokenUpdate, aclChurnCallTimeout,
			&wire.ACLTokenUpdateRequest{AccessorID: "anonymous", Description: a.anon.Description, Rules: a.anon.Rules}, &wire.ACLTokenResponse{})
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("acl-churn: restore the anonymous token: %w", err))
	}
	c.Logf("acl-churn healed: deleted %d of its tokens, the anonymous token's rules back to %q", deleted, a.anon.Rules)
	return errors.Join(errs...)
}
