package run

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/discoverd/discoverd/internal/faultbugs"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/check"
	"github.com/discoverd/discoverd/test/fault/harness"
	"github.com/discoverd/discoverd/test/fault/history"
	"github.com/discoverd/discoverd/test/fault/nemesis"
	"github.com/discoverd/discoverd/test/fault/slowfs"
	"github.com/discoverd/discoverd/test/fault/workload"
)

// Bounds the TTL liveness checker holds discoverd to, from ttl/DESIGN.md:
// without failover TTL + a commit; across a failover max(TTL, election) +
// grace + a commit, which TTL + RemovalFailoverNanos covers (and, after a
// majority was killed, the same from their restart). The slack covers the
// 500 ms Raft timings of these clusters (an election takes up to ~1.5 s),
// the 1 s grace the harness sets, and scheduling on a loaded 2-core machine.
var Bounds = history.Bounds{
	RemovalNoFailoverNanos: int64(1500 * time.Millisecond),
	RemovalFailoverNanos:   int64(5 * time.Second),
	// The servers' default -storm-max-hold (3x): no scenario changes it.
	StormMaxHold: 3,
}

// Result is what a run produced.
type Result struct {
	Scenario   Scenario
	Dir        string
	Run        *history.Run
	Verdicts   []check.Verdict
	Violations int
	Recovery   []string // recovery checks that failed (also counted as violations)
	Started    time.Time
	Elapsed    time.Duration
	Repro      string
}

// Options control where a run puts things.
type Options struct {
	Out    string // report root; the run's folder is Out/<scenario>-<seed>
	BinDir string // where binaries are built
	Logf   func(format string, args ...any)
	Repro  string // the command that reproduces this run
}

// Run executes one scenario and writes its report.
func Run(ctx context.Context, sc Scenario, opts Options) (*Result, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	logf := func(format string, args ...any) { opts.Logf("[%s] "+format, append([]any{sc.Name}, args...)...) }
	if faultbugs.InClient(sc.Bug) {
		// A bug in the client library is planted in the electors, which
		// run in this process, not in the nodes.
		if !faultbugs.Built {
			return nil, fmt.Errorf("bug %s is planted in the client library, which runs in this process: build it with -tags faultbugs (go run -tags faultbugs ./test/fault/cmd/fault, go test -tags faultbugs)", sc.Bug)
		}
		defer faultbugs.Plant(sc.Bug)()
	}
	// However the cluster behaves, a run ends: every wait below is bounded,
	// and this bounds them all together.
	ctx, cancelRun := context.WithTimeout(ctx, sc.Duration+5*time.Minute)
	defer cancelRun()
	dir := filepath.Join(opts.Out, fmt.Sprintf("%s-seed%d", sc.Name, sc.Seed))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{Scenario: sc, Dir: dir, Started: time.Now(), Repro: opts.Repro}
	var tags []string
	env := []string(nil)
	if sc.Bug != "" {
		tags = append(tags, "faultbugs")
		env = append(env, "DISCOVERD_BUG="+sc.Bug)
	}
	bin, err := harness.Build(opts.BinDir, tags...)
	if err != nil {
		return nil, err
	}
	network, err := harness.NewNetwork(sc.Network, sc.Seed)
	if err != nil {
		return nil, err
	}
	var disk *slowfs.FS
	var beforeStart func([]*harness.Node) error
	if sc.Disk {
		beforeStart = func(nodes []*harness.Node) error {
			if err := slowfs.Available(); err != nil {
				return fmt.Errorf("disk faults need FUSE: %w", err)
			}
			n := nodes[0]
			backing := n.DataDir + ".backing"
			if err := os.MkdirAll(backing, 0o755); err != nil {
				return err
			}
			var err error
			disk, err = slowfs.Mount(backing, n.DataDir)
			return err
		}
	}
	nodesDir := filepath.Join(dir, "nodes")
	c, err := harness.Start(ctx, harness.Options{Nodes: sc.Nodes, Dir: nodesDir, Bin: bin, Network: network,
		Args: sc.Args, NodeArgs: sc.nodeArgs, Env: env, Logf: logf, BeforeStart: beforeStart, TLS: sc.TLS, ACL: sc.ACL})
	if err != nil {
		if disk != nil {
			_ = disk.Unmount()
		}
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	defer func() {
		c.Close()
		if disk != nil {
			_ = disk.Unmount()
		}
	}()
	leader, err := c.Leader(ctx, 15*time.Second)
	if err != nil {
		return nil, err
	}
	var nodes []workload.Node
	for _, n := range c.Nodes {
		nodes = append(nodes, workload.Node{ID: n.ID, Addr: n.Addrs.Client})
	}
	wcfg := sc.Workload
	wcfg.TLS = c.ClientTLS()
	wcfg.ClientTLS = c.ClientTLSConfig()
	wcfg.Token = c.WorkloadToken().Secret
	w := workload.New(wcfg, nodes, leader)
	wctx, stopWorkload := context.WithCancel(ctx)
	defer stopWorkload()
	w.Start(wctx)

	faults, recovery := schedule(ctx, c, sc, disk, logf)
	res.Recovery = recovery

	// Finish: everything healed; one final write that must succeed, a final
	// consistent read of every service, watchers catch up, hashes, journals.
	w.StopClients()
	// A node that ended without being killed crashed: say so (the restarts
	// below, and the heals before, would otherwise hide it).
	res.Recovery = append(res.Recovery, c.Crashes()...)
	if err := c.Net().HealAll(); err != nil {
		logf("heal all: %v", err)
	}
	for i := range c.Nodes {
		_ = c.Resume(i)
		if err := c.Restart(i); err != nil {
			logf("restart %s: %v", c.Nodes[i].ID, err)
		}
	}
	if err := c.WaitStable(ctx, 30*time.Second); err != nil {
		res.Recovery = append(res.Recovery, "final: "+err.Error())
	}
	finalIdx, final, err := finalState(ctx, c, slices.Concat(w.LinServices(), w.TTLServiceNames(), w.StormServiceNames(), w.ElectServiceNames(), []string{"final"}))
	if err != nil {
		res.Recovery = append(res.Recovery, "final write/read: "+err.Error())
	}
	w.FinishWatchers(finalIdx, 30*time.Second)
	stopWorkload()
	if err := c.WaitStable(ctx, 30*time.Second); err != nil {
		res.Recovery = append(res.Recovery, "before hashing: "+err.Error())
	}
	// Nothing writes now except expiries of stopped TTL instances; hash once
	// every node has applied the same index.
	if err := c.WaitEqual(ctx, 30*time.Second); err != nil {
		res.Recovery = append(res.Recovery, "before hashing: "+err.Error())
	}
	hashes, err := c.Hashes(ctx, 30*time.Second)
	if err != nil {
		res.Recovery = append(res.Recovery, err.Error())
	}
	var aclRec *history.ACL
	if sc.ACL {
		// Taken with the hashes, at one applied index: the lists must agree.
		wt := c.WorkloadToken().Token
		aclRec = &history.ACL{WorkloadToken: wt.AccessorID, WorkloadRules: wt.Rules, Lists: c.TokenLists(ctx)}
	}
	c.StopAll(10 * time.Second)
	entries, err := c.Journals()
	if err != nil {
		return nil, fmt.Errorf("read journals: %w", err)
	}
	ops, sessions := w.History()
	res.Run = &history.Run{Ops: ops, Sessions: sessions, Entries: entries, Hashes: hashes, Faults: faults,
		Holdings: w.Holdings(), Final: final, FinalIndex: finalIdx, Bounds: Bounds, ACL: aclRec}
	res.Elapsed = time.Since(res.Started)

	lin, services := check.Linearizable(res.Run, 60*time.Second)
	meta, metaServices := check.MetaLinearizable(res.Run, 60*time.Second)
	services = append(services, metaServices...)
	res.Verdicts = []check.Verdict{check.Replicas(res.Run), lin, meta, check.Durability(res.Run),
		check.TTLSafety(res.Run), check.TTLLiveness(res.Run), check.Watches(res.Run), check.MonotonicReads(res.Run),
		check.Election(res.Run), check.ACL(res.Run)}
	for _, v := range res.Verdicts {
		res.Violations += len(v.Violations)
	}
	res.Violations += len(res.Recovery)
	if err := writeReport(res, services); err != nil {
		return res, fmt.Errorf("write report: %w", err)
	}
	return res, nil
}

// schedule injects faults until the scenario's duration is used up: quiet,
// inject, hold, heal, recovery check. It returns the fault timeline and the
// recovery checks that failed.
func schedule(ctx context.Context, c *harness.Cluster, sc Scenario, disk *slowfs.FS, logf func(string, ...any)) ([]history.Fault, []string) {
	rng := rand.New(rand.NewPCG(uint64(sc.Seed), 99))
	deadline := time.Now().Add(sc.Duration)
	var faults []history.Fault
	var recovery []string
	for i := 0; ; i++ {
		if !sleepUntil(ctx, time.Now().Add(sc.Quiet), deadline) {
			break
		}
		name := sc.Nemeses[i%len(sc.Nemeses)]
		nem, err := pick(name, disk)
		if err != nil {
			recovery = append(recovery, err.Error())
			break
		}
		start := time.Now()
		f, err := nem.Inject(ctx, c, rng)
		if err != nil {
			if errors.Is(err, nemesis.ErrUnsupported) {
				logf("skipping %s: %v", name, err)
				recovery = append(recovery, fmt.Sprintf("%s could not run: %v", name, err))
				continue
			}
			recovery = append(recovery, fmt.Sprintf("inject %s: %v", name, err))
			_ = nem.Heal(ctx, c)
			break
		}
		f.Start = start.UnixNano()
		logf("fault %s %v: %s", f.Name, f.Nodes, f.Detail)
		hold := sc.Hold*3/4 + time.Duration(rng.Int64N(int64(sc.Hold/2)+1))
		if comp, ok := nem.(nemesis.Compactor); ok {
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := comp.WaitCompacted(hctx, c); err != nil {
				recovery = append(recovery, err.Error())
			}
			cancel()
		} else {
			sleepUntil(ctx, time.Now().Add(hold), time.Time{})
		}
		if err := nem.Heal(ctx, c); err != nil {
			recovery = append(recovery, fmt.Sprintf("heal %s: %v", name, err))
		}
		f.End = time.Now().UnixNano()
		faults = append(faults, f)
		// Recovery check: one leader, everyone caught up, within a bound.
		if err := c.WaitStable(ctx, 20*time.Second); err != nil {
			recovery = append(recovery, fmt.Sprintf("no recovery after %s: %v", name, err))
			logf("recovery after %s failed: %v", name, err)
		}
		if time.Now().After(deadline) {
			break
		}
	}
	return faults, recovery
}

func pick(name string, disk *slowfs.FS) (nemesis.Nemesis, error) {
	switch name {
	case "slow-fsync", "fsync-error":
		if disk == nil {
			return nil, fmt.Errorf("%s needs a scenario with Disk set", name)
		}
		return &diskFault{name: name, fs: disk}, nil
	}
	return nemesis.ByName(name)
}

// sleepUntil waits until t (or the deadline, if earlier and set); false if
// the deadline or ctx came first.
func sleepUntil(ctx context.Context, t, deadline time.Time) bool {
	end := t
	if !deadline.IsZero() && deadline.Before(end) {
		end = deadline
	}
	tm := time.NewTimer(time.Until(end))
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
		return false
	}
	return deadline.IsZero() || time.Now().Before(deadline)
}

// finalState makes one write that must succeed, then reads every service
// with a consistent list from the leader.
func finalState(ctx context.Context, c *harness.Cluster, services []string) (uint64, []history.Instance, error) {
	l, err := c.Leader(ctx, 15*time.Second)
	if err != nil {
		return 0, nil, err
	}
	// The management token (with ACLs on): the final write and reads are
	// the harness's, not the workload's.
	pool := rpcconn.NewPool(rpcconn.Options{TLS: c.ClientTLS(), Token: func(context.Context) string { return c.ManagementToken() }})
	defer pool.Close()
	addr := c.Nodes[l].Addrs.Client
	call := func(method string, req, resp any) error {
		var err error
		for range 20 { // the leader may still be settling: retry not-applied errors briefly
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err = pool.Call(cctx, addr, method, false, req, resp)
			cancel()
			if err == nil {
				return nil
			}
			time.Sleep(250 * time.Millisecond)
		}
		return err
	}
	var wr wire.WriteResponse
	if err := call(wire.MethodRegister, &wire.RegisterRequest{Name: "final", Addr: "10.255.255.1:1", TTLMillis: time.Hour.Milliseconds(),
		RequestID: fmt.Sprintf("final-%d", time.Now().UnixNano())}, &wr); err != nil {
		return 0, nil, fmt.Errorf("final write: %w", err)
	}
	var out []history.Instance
	var idx uint64
	for _, svc := range services {
		var lr wire.ListResponse
		if err := call(wire.MethodList, &wire.ListRequest{Name: svc, Consistent: true, MinIndex: wr.Index}, &lr); err != nil {
			return 0, nil, fmt.Errorf("final list of %s: %w", svc, err)
		}
		idx = max(idx, lr.Index)
		for _, in := range lr.Instances {
			out = append(out, history.Instance{Service: svc, Addr: in.Addr, Attrs: in.Attrs, Index: in.Index})
		}
	}
	slices.SortFunc(out, func(a, b history.Instance) int {
		if a.Service != b.Service {
			if a.Service < b.Service {
				return -1
			}
			return 1
		}
		if a.Addr < b.Addr {
			return -1
		}
		if a.Addr > b.Addr {
			return 1
		}
		return 0
	})
	return idx, out, nil
}

// diskFault slows or fails fsyncs of node 1's data dir (FUSE).
type diskFault struct {
	name string
	fs   *slowfs.FS
}

func (d *diskFault) Name() string { return d.name }
func (d *diskFault) Inject(_ context.Context, c *harness.Cluster, _ *rand.Rand) (history.Fault, error) {
	f := history.Fault{Name: d.name, Nodes: []string{c.Nodes[0].ID}}
	if d.name == "slow-fsync" {
		d.fs.SetFsyncDelay(300 * time.Millisecond)
		f.Detail = "every fsync of the node's data dir waits 300 ms"
	} else {
		d.fs.SetFsyncError(true)
		f.Detail = "every fsync of the node's data dir fails with EIO"
		c.ExpectExit(0) // it stops rather than run on an unsynced log (raftnode/failstop.go)
	}
	return f, nil
}
func (d *diskFault) Heal(_ context.Context, c *harness.Cluster) error {
	d.fs.SetFsyncDelay(0)
	d.fs.SetFsyncError(false)
	// A node whose log could not be synced may have stopped; bring it back.
	return c.Restart(0)
}
