// Package harness runs real discoverd processes for the fault suite: it
// starts a cluster of 3 or 5 nodes with tight Raft timings, each with its
// own data dir, log, apply journal and fault clock file; kills, pauses,
// resumes and restarts them by their own PIDs; routes node-to-node traffic
// through a Network backend that can partition it; waits for the cluster
// to settle (one leader, everyone caught up); and, with ACLs on,
// bootstraps them and holds the tokens (acl.go).
package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/testport"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/history"
	"github.com/discoverd/discoverd/test/prockit"
)

// Addrs are one node's addresses.
type Addrs struct {
	Listen    string // what the node binds (-addr)
	Advertise string // what peers know it by (-advertise, and its -peers entry)
	Client    string // what the harness and workload dial
}

// Network places nodes and controls the links between them.
type Network interface {
	Name() string
	// Layout returns the addresses of n nodes.
	Layout(n int) ([]Addrs, error)
	// Ready is called once with every node's id and addresses, before any node starts.
	Ready(ids []string, addrs []Addrs) error
	// NodeArgs returns extra discoverd server flags for node i (e.g. -peer-dial).
	NodeArgs(i int) []string
	// Command returns the command that runs bin with args as node i.
	Command(i int, bin string, args ...string) *exec.Cmd
	// Cut drops the traffic from node `from` to node `to`; Heal restores it.
	Cut(from, to int) error
	Heal(from, to int) error
	// HealAll restores every link.
	HealAll() error
	Close() error
}

// Options configure a cluster.
type Options struct {
	Nodes   int
	Dir     string   // run directory: node data, logs, journals, clock files
	Bin     string   // the discoverd binary (built with -tags faultclock; faultbugs for planted bugs)
	Network Network  // nil: plain loopback, no link faults
	Args    []string // extra server flags for every node
	// NodeArgs, if set, gives extra server flags for node i alone, after
	// Args (e.g. a log store of its own: a mixed cluster).
	NodeArgs func(i int) []string
	Env      []string // extra environment for every node (e.g. DISCOVERD_BUG=...)
	Logf     func(format string, args ...any)
	// BeforeStart, if set, runs once the node directories exist and before
	// any node starts (e.g. to mount a FUSE layer over a data dir).
	BeforeStart func(nodes []*Node) error
	// TLS runs the nodes with TLS: a CA and certificates made for the run
	// (in Dir/tls), Raft mutual TLS, clients with a client certificate
	// (ClientTLS). Without it, nodes beyond loopback get -insecure.
	TLS bool
	// ACL runs the nodes with -acl. Start bootstraps once the cluster is
	// stable, keeps the management token for the harness's own calls
	// (ManagementToken) and creates the workload's token (WorkloadToken,
	// with WorkloadRules); nodes started after that get the management
	// token as -acl-token, for their own membership calls.
	ACL bool
}

// Node is one member.
type Node struct {
	Index   int
	ID      string
	Addrs   Addrs
	Dir     string
	DataDir string
	Log     string
	Journal string
	Clock   string
}

// Cluster is a running set of discoverd processes.
type Cluster struct {
	opts  Options
	Nodes []*Node
	tls   *clusterTLS // nil without TLS

	mu     sync.Mutex
	procs  []*prockit.Proc // nil while a node is stopped
	paused []bool
	// expectExit marks a node whose process may end (killed, or told
	// to expect it); crashes lists the ones that ended without it.
	expectExit []bool
	crashes    []string
	// joined marks a node emptied and started again with -join (Rejoin):
	// from then on it starts with -join, never with -peers.
	joined []bool
	acl    aclState // under mu
	// pool is the harness's own connections: with ACLs on, every request
	// carries the management token once there is one.
	pool *rpcconn.Pool
}

// Start lays out and starts every node and waits until the cluster is stable.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	prockit.CleanLeftovers()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Network == nil {
		opts.Network = Loopback{}
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	addrs, err := opts.Network.Layout(opts.Nodes)
	if err != nil {
		return nil, fmt.Errorf("network layout: %w", err)
	}
	c := &Cluster{opts: opts, procs: make([]*prockit.Proc, opts.Nodes), paused: make([]bool, opts.Nodes), expectExit: make([]bool, opts.Nodes), joined: make([]bool, opts.Nodes)}
	if opts.TLS {
		if c.tls, err = makeTLS(filepath.Join(opts.Dir, "tls"), addrs); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	c.pool = rpcconn.NewPool(rpcconn.Options{DialTimeout: time.Second, TLS: c.ClientTLS(), Token: c.adminToken})
	ids := make([]string, opts.Nodes)
	for i := range opts.Nodes {
		ids[i] = fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(opts.Dir, ids[i])
		n := &Node{Index: i, ID: ids[i], Addrs: addrs[i], Dir: dir, DataDir: filepath.Join(dir, "data"),
			Log: filepath.Join(dir, "node.log"), Journal: filepath.Join(dir, "journal.jsonl"), Clock: filepath.Join(dir, "clock")}
		if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := opts.Network.Ready(ids, addrs); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if opts.BeforeStart != nil {
		if err := opts.BeforeStart(c.Nodes); err != nil {
			_ = opts.Network.Close()
			return nil, err
		}
	}
	for i := range c.Nodes {
		if err := c.StartNode(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitStable(ctx, 30*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	if opts.ACL {
		if err := c.bootstrapACL(ctx, 30*time.Second); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) peers() string {
	var ps []string
	for _, n := range c.Nodes {
		ps = append(ps, n.ID+"="+n.Addrs.Advertise)
	}
	return strings.Join(ps, ",")
}

// StartNode starts node i (again) from its data dir.
func (c *Cluster) StartNode(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs[i] != nil && !c.procs[i].Exited() {
		return fmt.Errorf("start %s: already running", c.Nodes[i].ID)
	}
	n := c.Nodes[i]
	if c.procs[i] != nil && !c.expectExit[i] {
		c.crashes = append(c.crashes, fmt.Sprintf("%s (pid %d) exited on its own before this restart: a crash? See nodes/%s/node.log", n.ID, c.procs[i].PID(), n.ID))
	}
	c.expectExit[i] = false
	args := prockit.ServerArgs(n.ID, n.Addrs.Listen, n.DataDir, c.peers())
	if c.joined[i] {
		args = []string{"server", "-id", n.ID, "-addr", n.Addrs.Listen, "-data-dir", n.DataDir, "-join", c.others(i)}
	}
	args = append(args, "-advertise", n.Addrs.Advertise,
		"-journal", n.Journal, "-fault-clock", n.Clock, "-ttl-grace", "1s", "-log-level", "info")
	args = append(args, prockit.RaftFlags()...)
	args = append(args, c.tlsArgs(i)...)
	if c.opts.ACL {
		args = append(args, "-acl")
		if c.acl.mgmt != "" {
			args = append(args, "-acl-token", c.acl.mgmt)
		}
	}
	args = append(args, c.opts.Network.NodeArgs(i)...)
	args = append(args, c.opts.Args...)
	if c.opts.NodeArgs != nil {
		args = append(args, c.opts.NodeArgs(i)...)
	}
	cmd := c.opts.Network.Command(i, c.opts.Bin, args...)
	cmd.Env = append(os.Environ(), c.opts.Env...)
	// The network may start the node through a launcher that replaces
	// itself with it (ip netns exec): the pid record names the binary.
	p, err := prockit.Start(prockit.Spec{Name: n.ID, Cmd: cmd, Log: n.Log, Exe: c.opts.Bin})
	if err != nil {
		return err
	}
	c.procs[i], c.paused[i] = p, false
	c.opts.Logf("started %s (pid %d) on %s", n.ID, p.PID(), n.Addrs.Listen)
	return nil
}

// others is the -join list of node i: every other node's advertised
// address (a join request goes there directly, not through the link
// faults; Raft traffic then goes as usual).
func (c *Cluster) others(i int) string {
	var out []string
	for j, n := range c.Nodes {
		if j != i {
			out = append(out, n.Addrs.Advertise)
		}
	}
	return strings.Join(out, ",")
}

// Rejoin kills node i, empties its data dir and starts it again with
// -join and no -peers: a new node under the old id and address, which the
// cluster must add (after a removal) for it to take part. Its journal is
// kept: it journals what it applies again, as after a restart.
func (c *Cluster) Rejoin(i int) error {
	if err := c.Kill(i); err != nil {
		return err
	}
	if p := c.proc(i); p != nil {
		if err := p.Wait(10 * time.Second); err != nil {
			return err
		}
	}
	n := c.Nodes[i]
	if err := os.RemoveAll(n.DataDir); err != nil {
		return err
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return err
	}
	c.mu.Lock()
	c.joined[i] = true
	c.mu.Unlock()
	c.opts.Logf("emptied %s's data dir; starting it with -join", n.ID)
	return c.StartNode(i)
}

// ChangeMember asks the running nodes in turn, through their client
// addresses, for one membership change, until one answers it or timeout
// passes; the last error says why not.
func (c *Cluster) ChangeMember(ctx context.Context, req wire.ChangeMemberRequest, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		for i, n := range c.Nodes {
			if !c.Running(i) || c.Paused(i) {
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			var resp wire.ChangeMemberResponse
			err := c.pool.Call(cctx, n.Addrs.Client, wire.MethodChangeMember, false, &req, &resp)
			ccancel()
			if err == nil {
				c.opts.Logf("members %s %s via %s: changed=%v", req.Op, req.ID, n.ID, resp.Changed)
				return nil
			}
			last = fmt.Errorf("%s: %w", n.ID, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("members %s %s: %w", req.Op, req.ID, last)
}

func (c *Cluster) proc(i int) *prockit.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i]
}

// Running reports whether node i's process is alive (paused counts as alive).
func (c *Cluster) Running(i int) bool {
	p := c.proc(i)
	return p != nil && !p.Exited()
}

// Paused reports whether node i is stopped with SIGSTOP.
func (c *Cluster) Paused(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused[i]
}

// Kill SIGKILLs node i.
func (c *Cluster) Kill(i int) error {
	p := c.proc(i)
	if p == nil {
		return nil
	}
	c.opts.Logf("kill -9 %s (pid %d)", c.Nodes[i].ID, p.PID())
	c.ExpectExit(i)
	err := p.Kill()
	c.mu.Lock()
	c.paused[i] = false
	c.mu.Unlock()
	return err
}

// ExpectExit says node i's current process may end without a Kill (a
// disk fault may make it stop); other ends count as crashes.
func (c *Cluster) ExpectExit(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expectExit[i] = true
}

// Crashes lists the node processes that ended on their own (not killed,
// not expected to) and were started again, and those down now.
func (c *Cluster) Crashes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.crashes)
	for i, p := range c.procs {
		if p != nil && p.Exited() && !c.expectExit[i] {
			out = append(out, fmt.Sprintf("%s (pid %d) exited on its own: a crash? See nodes/%s/node.log", c.Nodes[i].ID, p.PID(), c.Nodes[i].ID))
		}
	}
	return out
}

// Restart starts a killed node again (no-op error if it is running).
func (c *Cluster) Restart(i int) error {
	if c.Running(i) {
		return nil
	}
	return c.StartNode(i)
}

// Pause sends SIGSTOP to node i; Resume sends SIGCONT.
func (c *Cluster) Pause(i int) error {
	p := c.proc(i)
	if p == nil || p.Exited() {
		return fmt.Errorf("pause %s: not running", c.Nodes[i].ID)
	}
	c.opts.Logf("SIGSTOP %s (pid %d)", c.Nodes[i].ID, p.PID())
	c.mu.Lock()
	c.paused[i] = true
	c.mu.Unlock()
	return p.Pause()
}

// Resume continues a paused node.
func (c *Cluster) Resume(i int) error {
	p := c.proc(i)
	if p == nil || p.Exited() {
		return nil
	}
	c.opts.Logf("SIGCONT %s (pid %d)", c.Nodes[i].ID, p.PID())
	c.mu.Lock()
	c.paused[i] = false
	c.mu.Unlock()
	return p.Resume()
}

// SetClockSpeed sets node i's TTL clock speed (1 = real time).
func (c *Cluster) SetClockSpeed(i int, speed float64) error {
	c.opts.Logf("clock speed %s = %g", c.Nodes[i].ID, speed)
	return os.WriteFile(c.Nodes[i].Clock, fmt.Appendf(nil, "speed=%g\n", speed), 0o644)
}

// Logf writes to the run's log.
func (c *Cluster) Logf(format string, args ...any) { c.opts.Logf(format, args...) }

// Net is the cluster's network backend.
func (c *Cluster) Net() Network { return c.opts.Network }

// Status asks node i about itself (directly, never through the link proxies).
func (c *Cluster) Status(ctx context.Context, i int, withHash bool) (wire.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var st wire.NodeStatus
	err := c.pool.Call(ctx, c.Nodes[i].Addrs.Client, wire.MethodNodeInfo, false, &wire.NodeInfoRequest{StateHash: withHash}, &st)
	return st, err
}

// Stable describes a settled cluster.
type Stable struct {
	Leader int
	Commit uint64 // the leader's commit index when it was found
}

// statuses asks every running, unpaused node about itself.
func (c *Cluster) statuses(ctx context.Context) (map[int]wire.NodeStatus, error) {
	out := map[int]wire.NodeStatus{}
	for i := range c.Nodes {
		if !c.Running(i) || c.Paused(i) {
			continue
		}
		st, err := c.Status(ctx, i, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", c.Nodes[i].ID, err)
		}
		out[i] = st
	}
	return out, nil
}

// check reports whether every running, unpaused node answers, exactly one
// of them leads, and all know it.
func (c *Cluster) check(ctx context.Context) (Stable, error) {
	sts, err := c.statuses(ctx)
	if err != nil {
		return Stable{}, err
	}
	leader := -1
	for i, st := range sts {
		if st.State == "Leader" {
			if leader >= 0 {
				return Stable{}, fmt.Errorf("two leaders: %s and %s", c.Nodes[leader].ID, st.ID)
			}
			leader = i
		}
	}
	if leader < 0 {
		return Stable{}, errors.New("no leader")
	}
	for _, st := range sts {
		if st.Leader != c.Nodes[leader].ID {
			return Stable{}, fmt.Errorf("%s follows %q, not %s", st.ID, st.Leader, c.Nodes[leader].ID)
		}
	}
	return Stable{Leader: leader, Commit: sts[leader].CommitIndex}, nil
}

// WaitStable waits (polling every 100 ms, up to timeout) until exactly one
// running node leads and all know it, and then until every running node has
// applied the leader's commit index as of that moment: everyone caught up,
// even while writes continue.
func (c *Cluster) WaitStable(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	var target *Stable
	for {
		st, err := c.check(ctx)
		switch {
		case err != nil:
			target = nil // leadership moved: start over
			last = err
		case target == nil || target.Leader != st.Leader:
			target = &st
			last = fmt.Errorf("waiting for every node to apply index %d", st.Commit)
		default:
			sts, err := c.statuses(ctx)
			if err != nil {
				last = err
				break
			}
			behind := ""
			for i, ns := range sts {
				if ns.AppliedIndex < target.Commit {
					behind = fmt.Sprintf("%s has applied %d of %d", c.Nodes[i].ID, ns.AppliedIndex, target.Commit)
				}
			}
			if behind == "" {
				c.opts.Logf("stable: leader %s, all applied %d", c.Nodes[st.Leader].ID, target.Commit)
				return nil
			}
			last = errors.New(behind)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("cluster not stable after %v: %v", timeout, last)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// Leader returns the index of the current leader once the cluster is stable.
func (c *Cluster) Leader(ctx context.Context, timeout time.Duration) (int, error) {
	if err := c.WaitStable(ctx, timeout); err != nil {
		return -1, err
	}
	st, err := c.check(ctx)
	return st.Leader, err
}

// WaitEqual waits until every running node has applied the same index (for
// hashing, once nothing writes any more).
func (c *Cluster) WaitEqual(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		sts, err := c.statuses(ctx)
		if err == nil {
			var first uint64
			same := true
			last = ""
			for i, st := range sts {
				if first == 0 {
					first = st.AppliedIndex
				}
				same = same && st.AppliedIndex == first
				last += fmt.Sprintf(" %s@%d", c.Nodes[i].ID, st.AppliedIndex)
			}
			if same {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("applied indices still differ after %v:%s", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Hashes returns every running node's state hash, all taken at the same
// applied index: entries may still trickle in (expiries of stopped
// instances), so it asks again until the nodes agree on the index or
// timeout passes, and returns the last answers either way (the replicas
// checker reports hashes taken at different indices).
func (c *Cluster) Hashes(ctx context.Context, timeout time.Duration) ([]history.Hash, error) {
	deadline := time.Now().Add(timeout)
	for {
		var out []history.Hash
		same := true
		for i := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			st, err := c.Status(ctx, i, true)
			if err != nil {
				return nil, fmt.Errorf("state hash of %s: %w", c.Nodes[i].ID, err)
			}
			h := history.Hash{Node: st.ID, Applied: st.FSMApplied, Hash: st.StateHash}
			same = same && (len(out) == 0 || out[0].Applied == h.Applied)
			out = append(out, h)
		}
		if same || time.Now().After(deadline) {
			return out, nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return out, nil
		}
	}
}

// Journals reads every node's apply journal.
func (c *Cluster) Journals() ([]history.Entry, error) {
	var out []history.Entry
	for _, n := range c.Nodes {
		es, err := history.ReadJournal(n.Journal, n.ID)
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

// Close stops every node (SIGKILL) and the network backend.
func (c *Cluster) Close() {
	for i := range c.Nodes {
		if p := c.proc(i); p != nil {
			_ = p.Kill()
		}
	}
	c.pool.Close()
	_ = c.opts.Network.Close()
}

// StopAll stops every node gracefully (SIGTERM), for a clean end of a run.
func (c *Cluster) StopAll(bound time.Duration) {
	for i := range c.Nodes {
		if p := c.proc(i); p != nil {
			_ = p.Stop(bound)
		}
	}
}

// Loopback is the Network without faults: every node on a free loopback port.
type Loopback struct{}

func (Loopback) Name() string { return "loopback" }

// Layout picks free loopback ports.
func (Loopback) Layout(n int) ([]Addrs, error) { return freeLoopback(n) }

func (Loopback) Ready([]string, []Addrs) error { return nil }
func (Loopback) NodeArgs(int) []string         { return nil }
func (Loopback) Command(_ int, bin string, args ...string) *exec.Cmd {
	return exec.Command(bin, args...)
}
func (Loopback) Cut(int, int) error  { return errors.New("loopback network cannot cut links") }
func (Loopback) Heal(int, int) error { return nil }
func (Loopback) HealAll() error      { return nil }
func (Loopback) Close() error        { return nil }

// freeLoopback picks n free ports on 127.0.0.1 below the ephemeral range
// (testport): a node restarting on its port must never find it taken by a
// proxy's, a client's or any other outgoing connection.
func freeLoopback(n int) ([]Addrs, error) {
	ports, err := testport.Pick(n)
	if err != nil {
		return nil, err
	}
	out := make([]Addrs, n)
	for i, port := range ports {
		a := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		out[i] = Addrs{Listen: a, Advertise: a, Client: a}
	}
	return out, nil
}
