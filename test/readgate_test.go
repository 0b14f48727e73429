package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// readOnce lists name from one server alone, as a fresh client (every CLI
// call is one): no index seen before protects it. A node that is not ready
// makes a read wait 1 s before it answers not_ready: timeout must allow it.
func readOnce(t *testing.T, server, name string, timeout time.Duration) ([]*client.Service, uint64, error) {
	t.Helper()
	c, err := client.NewWithConfig(client.Config{Servers: []string{server}, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Instances(ctx, name, client.ListOptions{})
}

// TestReadGate_RestartedFollowerNeverAnswersOlder: a follower killed with
// SIGKILL while writes go on, restarted and read at once, over and over, by
// fresh clients that talk to it alone, never answers with an empty or older
// state than it served before it was killed: until it has caught up with the
// leader it answers not_ready. (Before the read gate it answered "0
// instances at index 0" for seconds: hashicorp/raft restores the last
// snapshot at start and applies the rest of the log only once a leader
// reports the commit index, which takes seconds after the leader's retries
// to reach it backed off.) Its snapshot is taken often, so that it also
// restarts from a snapshot older than its last answer.
func TestReadGate_RestartedFollowerNeverAnswersOlder(t *testing.T) {
	h := newHarness(t)
	c := h.startClusterWith(3, func(*node) []string {
		return []string{"-snapshot-threshold", "16", "-snapshot-interval", "200ms", "-trailing-logs", "8"}
	})
	all := c.servers()
	st := h.waitStable(all, c.ids(), 30*time.Second)
	var f *node
	for _, nd := range c.nodes {
		if nd.id != st.Leader {
			f = nd
			break
		}
	}

	w, err := client.NewWithConfig(client.Config{Servers: []string{c.servers(f.id)}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	register := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := w.RegisterAddr(ctx, "web", fmt.Sprintf("10.1.%d.%d:80", i/250, i%250), nil, time.Hour); err != nil {
				t.Fatalf("register %d: %v", i, err)
			}
		}
	}
	register(0, 60)
	var seenIndex uint64
	var seenCount int
	poll(t, 10*time.Second, 20*time.Millisecond, f.id+" to serve all 60 instances", func() (bool, string) {
		list, idx, err := readOnce(t, f.addr, "web", 3*time.Second)
		if err != nil {
			return false, err.Error()
		}
		seenIndex, seenCount = idx, len(list)
		return len(list) == 60, fmt.Sprintf("%d instances at %d", len(list), idx)
	})

	f.p.kill9(t)
	register(60, 120) // writes the killed follower misses
	// Down for a while, as in an operator's restart: the leader's retries
	// to reach it back off meanwhile (hashicorp/raft doubles the pause after
	// each failure), so once restarted it waits seconds for the leader.
	down := time.Now()
	poll(t, 20*time.Second, 200*time.Millisecond, "8 s with "+f.id+" down", func() (bool, string) {
		return time.Since(down) > 8*time.Second, "down for " + time.Since(down).Round(time.Second).String()
	})
	c.startNode(f)

	// Read the restarted node at once, again and again, until it has
	// served the state of every write (or 20 s).
	var notReady, answered, other int
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		list, idx, err := readOnce(t, f.addr, "web", 3*time.Second)
		switch {
		case errors.Is(err, client.ErrNotReady):
			notReady++
			continue
		case err != nil:
			other++ // not yet listening, or still starting: refused, not an answer
			continue
		}
		answered++
		if idx < seenIndex || len(list) < seenCount {
			t.Fatalf("after its restart %s answered %d instances at index %d; before, it had answered %d at index %d",
				f.id, len(list), idx, seenCount, seenIndex)
		}
		if len(list) == 120 {
			break
		}
	}
	t.Logf("restarted %s: %d answers not_ready, %d connection errors, then %d answers none older than %d instances at %d",
		f.id, notReady, other, answered, seenCount, seenIndex)
	if answered == 0 {
		t.Fatalf("%s never answered after its restart (%d not_ready, %d other errors)", f.id, notReady, other)
	}
}

// TestReadGate_NodeWithoutLeaderAnswersNotReady: a node that has never
// reached a leader since it started (here: one node of a three-node
// cluster started alone, so no leader can be elected) serves no reads: it
// answers not_ready, and status says it is not ready and knows no leader.
func TestReadGate_NodeWithoutLeaderAnswersNotReady(t *testing.T) {
	h := newHarness(t)
	ports := freePorts(t, 3)
	peers := fmt.Sprintf("n1=127.0.0.1:%d,n2=127.0.0.1:%d,n3=127.0.0.1:%d", ports[0], ports[1], ports[2])
	c := &cluster{h: h, peers: peers}
	nd := &node{id: "n1", addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), dataDir: t.TempDir()}
	c.nodes = []*node{nd}
	c.startNode(nd)

	poll(t, 10*time.Second, 50*time.Millisecond, "n1 to answer not_ready", func() (bool, string) {
		_, _, err := readOnce(t, nd.addr, "web", 1500*time.Millisecond)
		return errors.Is(err, client.ErrNotReady), fmt.Sprint(err)
	})
	_, _, err := readOnce(t, nd.addr, "web", 1500*time.Millisecond)
	if !errors.Is(err, client.ErrNotReady) {
		t.Fatalf("read: %v, want not_ready", err)
	}
	cl, err := client.NewWithConfig(client.Config{Servers: []string{nd.addr}, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s, err := cl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range s.Nodes {
		if n.ID == "n1" && (n.Ready || n.KnownLeader || n.LastContactMillis != -1) {
			t.Fatalf("status of n1: ready %v, known leader %v, last contact %d ms; want not ready, no leader, never (-1)",
				n.Ready, n.KnownLeader, n.LastContactMillis)
		}
	}
}

// TestReadGate_NodeWithoutLeaderServesItsLastStateAndSaysSo: a node that
// caught up and then lost its leader (the other two nodes killed) goes on
// answering from its last state — for discovery, the last known state beats
// nothing — and every answer says it knows no leader and how long ago it
// last heard from one: `services -json` and `status`.
func TestReadGate_NodeWithoutLeaderServesItsLastStateAndSaysSo(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	st := h.waitStable(all, c.ids(), 30*time.Second)
	w, err := client.NewWithConfig(client.Config{Servers: strings.Split(all, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.RegisterAddr(ctx, "web", "10.2.0.1:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	var survivor *node
	for _, nd := range c.nodes {
		if nd.id != st.Leader && survivor == nil {
			survivor = nd
		}
	}
	h.waitServices(survivor.addr, "web", func(l []instance) bool { return len(l) == 1 }, "the instance on "+survivor.id)
	for _, nd := range c.nodes {
		if nd != survivor {
			nd.p.kill9(t)
		}
	}

	var out struct {
		KnownLeader bool       `json:"known_leader"`
		LastContact int64      `json:"last_contact_ms"`
		Instances   []instance `json:"instances"`
	}
	killed := time.Now()
	defer func() { t.Logf("answered without a leader %v after the kills", time.Since(killed)) }()
	poll(t, 15*time.Second, 100*time.Millisecond, survivor.id+" to answer that it knows no leader", func() (bool, string) {
		r := h.cli(5*time.Second, "services", "-json", "-servers", survivor.addr, "-timeout", "2s", "web")
		if r.code != 0 {
			return false, r.String()
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			return false, err.Error()
		}
		return !out.KnownLeader, r.stdout
	})
	if len(out.Instances) != 1 || out.Instances[0].Addr != "10.2.0.1:80" || out.LastContact <= 0 {
		t.Fatalf("%s without a leader: %+v; want its last state (the instance) and a last contact > 0 ms", survivor.id, out)
	}
	r := h.mustCLI(10*time.Second, "services", "-servers", survivor.addr, "-timeout", "2s", "web")
	if !strings.Contains(r.stdout, "knows no leader") {
		t.Fatalf("services without -json does not say the node knows no leader:\n%s", r.stdout)
	}
}
