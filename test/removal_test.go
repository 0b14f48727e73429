package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// Removal across a leader failover (ttl/DESIGN.md, "Deadline tables"), with
// real processes: the leader acknowledges a heartbeat once a majority holds
// its deadline, and the next leader arms the instance from the tables
// instead of a whole TTL. How long removal takes is measured by the bench
// (`-workloads removal`); these tests check what decides it.

// heartbeatAt sends one heartbeat for (name, addr) to node addr and returns
// its call time.
func heartbeatAt(t *testing.T, pool *rpcconn.Pool, node, name, addr string) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := time.Now()
	var hr wire.HeartbeatResponse
	err := pool.Call(ctx, node, wire.MethodHeartbeat, false, &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: name, Addr: addr}}}, &hr)
	if err != nil || len(hr.Results) != 1 || hr.Results[0].Err() != nil {
		t.Fatalf("heartbeat %s %s via %s: %v %+v", name, addr, node, err, hr.Results)
	}
	return call
}

func registerAt(t *testing.T, pool *rpcconn.Pool, node, name, addr string, ttl time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wr wire.WriteResponse
	if err := pool.Call(ctx, node, wire.MethodRegister, false, &wire.RegisterRequest{Name: name, Addr: addr, TTLMillis: ttl.Milliseconds()}, &wr); err != nil {
		t.Fatalf("register %s %s via %s: %v", name, addr, node, err)
	}
}

func TestRemoval_NewLeaderArmsFromTheDeadlineTables(t *testing.T) {
	const ttl = 2 * time.Second
	h := newHarness(t)
	started := time.Now()
	c := h.startCluster(3)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	old := c.node(st.Leader)
	pool := rpcconn.NewPool(rpcconn.Options{})
	defer pool.Close()

	survivors := c.servers(old.id)
	w := h.startWatch("watch", survivors, "rm")
	if e := w.next(t, 10*time.Second); e.Kind != "current" {
		t.Fatalf("first watch event %+v, want current (empty service)", e)
	}
	registerAt(t, pool, old.addr, "rm", "10.0.0.9:1", ttl)
	if e := w.next(t, 10*time.Second); e.Kind != "up" {
		t.Fatalf("watch event %+v, want up", e)
	}
	// A table vouches for a TTL only once it is that old (tables younger
	// than the TTL are the next test's case): wait until the processes are.
	time.Sleep(time.Until(started.Add(ttl + 500*time.Millisecond)))
	heartbeatAt(t, pool, old.addr, "rm", "10.0.0.9:1")
	last := heartbeatAt(t, pool, old.addr, "rm", "10.0.0.9:1")
	acked := time.Now()
	old.p.kill9(t)

	e := w.next(t, 30*time.Second)
	gone := time.Now()
	if e.Kind != "down" || e.Addr != "10.0.0.9:1" || e.Reason != "expire" {
		t.Fatalf("watch event %+v, want down (expire)", e)
	}
	if d := gone.Sub(last); d < ttl {
		t.Fatalf("expired %v after its last acknowledged heartbeat's call: earlier than the TTL %v", d, ttl)
	}
	next := h.waitNewLeader(survivors, old.id, old.id, 30*time.Second)
	if !c.node(next).p.logContains(`msg="heartbeat tracker armed" node=` + next + ` component=ttl instances=1 from_tables=1 at_ttl_plus_grace=0`) {
		t.Fatalf("the new leader %s did not arm the instance from the deadline tables (see its log)", next)
	}
	t.Logf("gone %v after the last heartbeat's acknowledgement (TTL %v, grace 1 s; the bound without the tables was 2·TTL + election + grace)",
		gone.Sub(acked).Round(time.Millisecond), ttl)
}

// Right after a majority of the nodes restarted, their tables cannot vouch
// for deadlines older than their restart: the new leader falls back to
// now + TTL + grace.
func TestRemoval_TablesYoungerThanTheTTLAreNotReliedOn(t *testing.T) {
	const ttl = 30 * time.Second
	h := newHarness(t)
	c := h.startCluster(3)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	old := c.node(st.Leader)
	pool := rpcconn.NewPool(rpcconn.Options{})
	defer pool.Close()
	registerAt(t, pool, old.addr, "young", "10.0.0.9:2", ttl)
	heartbeatAt(t, pool, old.addr, "young", "10.0.0.9:2")

	// Restart both followers (graceful stop, same data), then kill the
	// leader: the next leader is one of them, its table seconds old.
	for _, nd := range c.nodes {
		if nd != old {
			nd.p.stop(t, 15*time.Second)
			c.startNode(nd)
		}
	}
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	if st, err := h.status(c.servers()); err != nil || st.Leader != old.id {
		t.Fatalf("leadership moved during the restarts (%v, %v): the test needs the old leader to lead until it is killed", st, err)
	}
	old.p.kill9(t)
	next := h.waitNewLeader(c.servers(old.id), old.id, old.id, 30*time.Second)
	want := fmt.Sprintf(`msg="heartbeat tracker armed" node=%s component=ttl instances=1 from_tables=0 at_ttl_plus_grace=1`, next)
	poll(t, 10*time.Second, 50*time.Millisecond, "the new leader to arm its tracker", func() (bool, string) {
		return c.node(next).p.logContains(want), "not logged yet: " + want
	})
}
