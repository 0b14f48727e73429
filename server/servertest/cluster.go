// Package servertest runs discoverd clusters inside one test process, over
// loopback, with tight Raft timings and temporary data dirs — a kit in the
// manner of net/http/httptest, beside the package it runs. Scenario tests
// and benchmarks use it; it waits for states (a leader, an applied index)
// instead of sleeping.
package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/internal/testport"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/server"
)

// Options shape a cluster.
type Options struct {
	// Nodes is the cluster size. Default 3.
	Nodes int
	// Configure, if set, adjusts each node's configuration before it starts.
	Configure func(i int, cfg *server.Config)
	// Verbose sends node logs to stderr (also when DISCOVERD_TEST_LOG=1).
	Verbose bool
}

// Node is one member.
type Node struct {
	Index int
	ID    string
	Addr  string
	Dir   string
	Srv   *server.Server // nil while stopped
}

// Cluster is a running test cluster.
type Cluster struct {
	t     testing.TB
	opts  Options
	peers []raftnode.Peer
	log   *slog.Logger

	mu    sync.Mutex
	Nodes []*Node
}

// Timings used by every test node: 500 ms, as on the 2-core CI machine lower
// values starve the scheduler.
const (
	HeartbeatTimeout = 500 * time.Millisecond
	ElectionTimeout  = 500 * time.Millisecond
)

// New starts a cluster and waits for a leader. It is stopped at cleanup.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	c := &Cluster{t: t, opts: opts}
	var w io.Writer = io.Discard
	if opts.Verbose || os.Getenv("DISCOVERD_TEST_LOG") == "1" {
		w = os.Stderr
	}
	c.log, _ = logging.New(w, "text", slog.LevelInfo)
	base := t.TempDir()
	lns := make([]net.Listener, opts.Nodes)
	// Nodes restart on their ports: ports from below the ephemeral range,
	// which no outgoing connection can take while a node is stopped.
	ports, err := testport.Pick(opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	for i := range opts.Nodes {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])))
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		lns[i] = ln
		id := fmt.Sprintf("n%d", i+1)
		n := &Node{Index: i, ID: id, Addr: ln.Addr().String(), Dir: filepath.Join(base, id)}
		c.Nodes = append(c.Nodes, n)
		c.peers = append(c.peers, raftnode.Peer{ID: id, Addr: n.Addr})
	}
	t.Cleanup(c.StopAll)
	for i, n := range c.Nodes {
		c.start(n, lns[i])
	}
	c.WaitLeader()
	return c
}

// Config returns the configuration node i starts with.
func (c *Cluster) Config(i int) server.Config {
	n := c.Nodes[i]
	rc := raftnode.DefaultConfig()
	rc.ID, rc.Addr, rc.DataDir, rc.Peers = n.ID, n.Addr, n.Dir, c.peers
	rc.HeartbeatTimeout, rc.ElectionTimeout = HeartbeatTimeout, ElectionTimeout
	rc.LeaderLeaseTimeout = HeartbeatTimeout / 2
	rc.BarrierTimeout = 5 * time.Second
	cfg := server.Config{Raft: rc, Logger: c.log.With("node", n.ID)}
	cfg.TTL.Grace = time.Second
	if c.opts.Configure != nil {
		c.opts.Configure(i, &cfg)
	}
	return cfg
}

func (c *Cluster) start(n *Node, ln net.Listener) {
	c.t.Helper()
	cfg := c.Config(n.Index)
	cfg.Listener = ln
	if ln == nil {
		cfg.BindAddr = n.Addr
	}
	var srv *server.Server
	var err error
	// A just-closed port may take a moment to be free again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv, err = server.Start(cfg)
		if err == nil || ln != nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("start %s: %v", n.ID, err)
	}
	c.mu.Lock()
	n.Srv = srv
	c.mu.Unlock()
}

// Restart starts a stopped node again on its address and data dir.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Nodes[i].Srv != nil {
		c.t.Fatalf("restart %s: still running", c.Nodes[i].ID)
	}
	c.start(c.Nodes[i], nil)
}

// take marks node i stopped and returns its server, if it was running.
func (c *Cluster) take(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	srv := c.Nodes[i].Srv
	c.Nodes[i].Srv = nil
	return srv
}

// Kill stops node i abruptly (no leadership handover).
func (c *Cluster) Kill(i int) {
	if srv := c.take(i); srv != nil {
		c.bounded("kill "+c.Nodes[i].ID, stopWait, func() { _ = srv.Kill() })
	}
}

// Stop stops node i gracefully.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if srv := c.take(i); srv != nil {
		c.bounded("stop "+c.Nodes[i].ID, stopWait, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				c.t.Logf("stop %s: %v", c.Nodes[i].ID, err)
			}
		})
	}
}

// stopWait bounds a node's stop: a stop hanging past it fails the test with
// the stacks of discoverd's goroutines, instead of the whole package
// running into go test's timeout with no word of which node hung, or where.
const stopWait = 30 * time.Second

func (c *Cluster) bounded(what string, wait time.Duration, stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop()
	}()
	select {
	case <-done:
	case <-time.After(wait):
		c.t.Errorf("%s did not return within %v (left running); discoverd's goroutines:\n%s", what, wait, ownStacks(64<<10))
	}
}

// ownStacks returns the stacks of the goroutines running discoverd code,
// at most limit bytes of them.
func ownStacks(limit int) string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/discoverd/discoverd/") {
			continue
		}
		if out.Len()+len(g) > limit {
			out.WriteString("[more stacks cut]\n")
			break
		}
		out.WriteString(g)
		out.WriteString("\n\n")
	}
	return out.String()
}

// StopAll stops every running node.
func (c *Cluster) StopAll() {
	for i := range c.Nodes {
		c.Kill(i)
	}
}

// Running returns the running nodes.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.Srv != nil {
			out = append(out, n)
		}
	}
	return out
}

// Context returns a context that ends after d or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every 20 ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitLeader waits until exactly one running node is a ready leader and
// every running node knows it, and returns it.
func (c *Cluster) WaitLeader() *Node {
	c.t.Helper()
	var leader *Node
	WaitFor(c.t, 15*time.Second, "one ready leader known to all running nodes", func() bool {
		leader = nil
		running := c.Running()
		for _, n := range running {
			if n.Srv.Node().Ready() {
				if leader != nil {
					return false
				}
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range running {
			if id, _ := n.Srv.Node().Leader(); id != leader.ID {
				return false
			}
		}
		return true
	})
	return leader
}

// Leader returns the current ready leader (waiting for one).
func (c *Cluster) Leader() *Node { return c.WaitLeader() }

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	l := c.WaitLeader()
	var out []*Node
	for _, n := range c.Running() {
		if n != l {
			out = append(out, n)
		}
	}
	return out
}

// WaitApplied waits until every running node's FSM has applied index.
func (c *Cluster) WaitApplied(index uint64) {
	c.t.Helper()
	WaitFor(c.t, 15*time.Second, fmt.Sprintf("every running node to apply index %d", index), func() bool {
		for _, n := range c.Running() {
			if n.Srv.FSM().AppliedIndex() < index {
				return false
			}
		}
		return true
	})
}

// Client returns a client of the given nodes (all nodes if none), closed at cleanup.
func (c *Cluster) Client(nodes ...*Node) *client.Client {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.Addr)
	}
	cl, err := client.NewWithConfig(client.Config{Servers: addrs, RequestTimeout: 10 * time.Second, DialTimeout: time.Second})
	if err != nil {
		c.t.Fatalf("client: %v", err)
	}
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}
