package test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// The Go client against real server processes when a node stops answering
// (SIGSTOP: its kernel still accepts connections and requests, nothing
// comes back) and when no node listens at all.

// attemptTimeout is client.Config.AttemptTimeout's documented default.
const attemptTimeout = 3 * time.Second

// clientOn returns a client of servers whose connection is open to addr:
// fresh clients (each starts at a random server) make their first call,
// open, until one lands there (bounded tries). It is closed at the end of
// the test.
func clientOn(t *testing.T, servers []string, addr string, open func(*client.Client) error) *client.Client {
	t.Helper()
	for range 50 {
		cl, err := client.NewWithConfig(client.Config{Servers: servers, Host: "10.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := open(cl); err != nil {
			t.Fatal(err)
		}
		if cl.CurrentServer() == addr {
			t.Cleanup(func() { _ = cl.Close() })
			return cl
		}
		_ = cl.Close()
	}
	t.Fatalf("no client landed on %s in 50 tries", addr)
	return nil
}

// percentile returns the p-th percentile (0 < p ≤ 1) of sorted samples, by
// the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// latencySummary says "p50 … p99 … max …" of samples.
func latencySummary(samples []time.Duration) string {
	s := slices.Clone(samples)
	slices.Sort(s)
	return fmt.Sprintf("p50 %v, p99 %v, max %v (%d calls)", percentile(s, 0.5).Round(time.Millisecond),
		percentile(s, 0.99).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

// TestFailover_PausedNodeCostsOneAttempt: with the node clients talk to
// paused — the leader, or a follower — every Register and List still
// succeeds, none taking longer than one attempt timeout plus a retry; and a
// watch on that node resumes on another one within its idle timeout. A
// writer (Register, then List of its own write), a reader (List only) and a
// watcher (a ServiceSet) are each on the paused node when it stops.
func TestFailover_PausedNodeCostsOneAttempt(t *testing.T) {
	for _, role := range []string{"Leader", "Follower"} {
		t.Run(role, func(t *testing.T) { pausedNodeScenario(t, role) })
	}
}

// pausedNodeScenario is TestFailover_PausedNodeCostsOneAttempt with a node
// of role ("Leader" or "Follower") paused.
func pausedNodeScenario(t *testing.T, role string) {
	h := newHarness(t)
	c := h.startCluster(3)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	servers := strings.Split(c.servers(), ",")
	var paused *node
	for _, nd := range c.nodes {
		if (role == "Leader") == (nd.id == st.Leader) {
			paused = nd
		}
	}
	on := paused.addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status := func(cl *client.Client) error {
		_, err := cl.Status(ctx)
		return err
	}

	// The writer, the reader, and a watcher whose only traffic is its
	// watch: it has no call to notice the pause, only the stream's silence.
	const name = "paused"
	cl := clientOn(t, servers, on, status)
	reader := clientOn(t, servers, on, status)
	var set *client.ServiceSet
	clientOn(t, servers, on, func(cl *client.Client) (err error) {
		set, err = cl.Services(name)
		return err
	})

	if err := paused.p.Pause(); err != nil {
		t.Fatal(err)
	}
	pausedAt := time.Now()
	t.Cleanup(func() { _ = paused.p.Resume() }) // before the process's own stop
	t.Logf("paused %s (%s, pid %d, %s), the node the writer, the reader and the watcher talk to", paused.id, paused.addr, paused.p.pid(), role)

	const n = 30
	bound := attemptTimeout + 2*time.Second
	// timed runs call with a deadline well past the bound (so a slow call
	// is measured, not cut short), records its latency and checks it.
	timed := func(what string, samples *[]time.Duration, call func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), bound+10*time.Second)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		*samples = append(*samples, took)
		if err != nil || took > bound {
			t.Errorf("%s: %v after %v (bound %v)", what, err, took.Round(time.Millisecond), bound)
		}
	}
	var registers, ownLists, reads []time.Duration
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for i := range n {
			timed(fmt.Sprintf("reader's List %d", i), &reads, func(ctx context.Context) error {
				_, _, err := reader.Instances(ctx, name, client.ListOptions{})
				return err
			})
		}
	}()
	for i := range n {
		addr := fmt.Sprintf("10.0.1.%d:80", i+1)
		timed(fmt.Sprintf("Register %d", i), &registers, func(ctx context.Context) error {
			return cl.RegisterAddr(ctx, name, addr, nil, time.Hour)
		})
		timed(fmt.Sprintf("writer's List %d", i), &ownLists, func(ctx context.Context) error {
			list, _, err := cl.Instances(ctx, name, client.ListOptions{})
			if err == nil && !slices.ContainsFunc(list, func(s *client.Service) bool { return s.Addr == addr }) {
				err = fmt.Errorf("%s, registered just before, is not listed", addr)
			}
			return err
		})
	}
	<-readerDone
	t.Logf("Register with %s paused: %s", paused.id, latencySummary(registers))
	t.Logf("List (reader) with %s paused: %s", paused.id, latencySummary(reads))
	t.Logf("List (writer, after its own Register) with %s paused: %s", paused.id, latencySummary(ownLists))
	for what, c := range map[string]*client.Client{"writer": cl, "reader": reader} {
		if now := c.CurrentServer(); now == on || now == "" {
			t.Errorf("the %s is on %q after its calls, want another node than the paused %s", what, now, on)
		}
	}

	// The watch: no keepalive for StreamIdleTimeout (6 s), then it resumes
	// on another node, with everything registered meanwhile.
	const idle = 6 * time.Second
	poll(t, idle+attemptTimeout+10*time.Second, 50*time.Millisecond, "the watching client's set to show every registration", func() (bool, string) {
		got := 0
		for range set.Online() {
			got++
		}
		return got == n, fmt.Sprintf("%d of %d online, err %v", got, n, set.Err())
	})
	t.Logf("the watch on the paused node caught up %v after the pause (StreamIdleTimeout %v)", time.Since(pausedAt).Round(time.Millisecond), idle)
	if err := set.Err(); err != nil {
		t.Fatalf("the set stopped following: %v", err)
	}
}

// TestFailover_AllRefusedFailsFast: when nothing listens at any server, a
// call fails in well under its 15 s timeout — the Go client's and the CLI's
// — with one clear error.
func TestFailover_AllRefusedFailsFast(t *testing.T) {
	var servers []string
	for _, port := range freePorts(t, 3) {
		servers = append(servers, fmt.Sprintf("127.0.0.1:%d", port))
	}
	want := "no discoverd server reachable at " + strings.Join(servers, ", ") + " (connection refused)"
	check := func(what, msg string, took time.Duration) {
		t.Helper()
		if took > 3*time.Second {
			t.Errorf("%s failed after %v, want under 3 s", what, took)
		}
		if strings.Count(msg, want) != 1 || strings.Count(msg, "reachable") != 1 || strings.Contains(msg, "gave up") {
			t.Errorf("%s: %q, want one %q", what, msg, want)
		}
		t.Logf("%s failed after %v: %s", what, took.Round(time.Millisecond), strings.TrimSpace(msg))
	}

	cl, err := client.NewWithConfig(client.Config{Servers: servers, Host: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	err = cl.Register("web", 80, nil)
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Register: %v, want ErrUnavailable", err)
	}
	check("Register", err.Error(), time.Since(start))

	h := newHarness(t)
	r := h.cli(30*time.Second, "services", "-servers", strings.Join(servers, ","), "web")
	if r.code != 1 {
		t.Fatalf("want exit 1: %v", r)
	}
	check("`discoverd services`", r.stderr, r.took)
}
