package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
	"github.com/discoverd/discoverd/ttl"
)

// TestCluster_StormGuardHoldsMarksAndReleases: five of six instances of a
// service stop heartbeating at once (registered through the backend, nobody
// heartbeats them). The leader holds their expiries; a follower's watch,
// list and ServiceSet show them suspect, the heartbeating one not; the
// leader's status counts the holds; each expires at its max hold (TTL +
// 2 TTLs after its registration), not before.
func TestCluster_StormGuardHoldsMarksAndReleases(t *testing.T) {
	const (
		ttlD    = time.Second
		maxHold = 2
	)
	c := tc.New(t, tc.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.TTL.Storm = ttl.StormConfig{Threshold: 0.5, MinInstances: 4, MaxHold: maxHold}
	}})
	ctx := tc.Context(t, 60*time.Second)
	follower := c.Followers()[0]
	obs := c.Client(follower)
	w, err := obs.Watch(ctx, "storm", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(ctx, w)
	waitEvent(t, events, 5*time.Second, "current", func(e *client.Event) bool { return e.Kind == client.EventCurrent })
	set, err := obs.ServicesContext(ctx, "storm")
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan *client.ServiceUpdate, 1000)
	set.Subscribe(updates)

	beating := c.Client()
	if err := beating.RegisterAddr(ctx, "storm", "10.9.0.99:1", nil, ttlD); err != nil {
		t.Fatal(err)
	}
	registered := time.Now()
	silent := map[string]bool{}
	for i := range 5 {
		addr := fmt.Sprintf("10.9.0.%d:1", i+1)
		register(t, c, ctx, backend.Registration{Name: "storm", Addr: addr, TTL: ttlD})
		silent[addr] = true
	}

	// Held: five updates marking them suspect, and no down among them.
	marked := map[string]bool{}
	for len(marked) < len(silent) {
		e, _ := waitEvent(t, events, 10*time.Second, "suspect updates", func(e *client.Event) bool {
			return e.Kind == client.EventDown || (e.Kind == client.EventUpdate && e.Service.Suspect)
		})
		if e.Kind == client.EventDown || !silent[e.Service.Addr] {
			t.Fatalf("event %+v (%+v) while the storm should be held", e, e.Service)
		}
		marked[e.Service.Addr] = true
	}
	heldAt := time.Since(registered)
	list, _, err := obs.Instances(ctx, "storm", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Suspect != silent[s.Addr] {
			t.Fatalf("follower lists %s suspect=%v", s.Addr, s.Suspect)
		}
	}
	if len(list) != 6 {
		t.Fatalf("follower lists %d instances during the hold, want 6", len(list))
	}
	tc.WaitFor(t, 5*time.Second, "the follower's set to show the markers", func() bool {
		n := 0
		for s := range set.Online() {
			if s.Suspect {
				n++
			}
		}
		return n == len(silent)
	})
	sawSuspectUpdate := false
drain:
	for {
		select {
		case u := <-updates:
			sawSuspectUpdate = sawSuspectUpdate || (u.Online && u.Suspect && silent[u.Addr])
		default:
			break drain
		}
	}
	if !sawSuspectUpdate {
		t.Error("the set's subscriber saw no suspect update")
	}
	st, err := obs.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var leaderHeld, leaderHolds uint64
	for _, n := range st.Nodes {
		if n.State == "Leader" {
			leaderHeld, leaderHolds = n.StormHeld, n.StormHolds
		}
	}
	if leaderHeld != 5 || leaderHolds != 5 {
		t.Fatalf("leader's status: storm held %d, holds %d; want 5, 5 (%+v)", leaderHeld, leaderHolds, st.Nodes)
	}

	// Released at the max hold: five downs (expire), none before TTL + 2·TTL.
	gone := map[string]time.Duration{}
	for len(gone) < len(silent) {
		e, _ := waitEvent(t, events, 10*time.Second, "the held instances to expire", func(e *client.Event) bool { return e.Kind == client.EventDown })
		if e.Reason != "expire" || !silent[e.Service.Addr] {
			t.Fatalf("down event %+v (%+v)", e, e.Service)
		}
		gone[e.Service.Addr] = time.Since(registered)
	}
	for addr, d := range gone {
		if d < ttlD+maxHold*ttlD {
			t.Fatalf("%s expired %v after its registration, before TTL + max hold (%v)", addr, d, ttlD+maxHold*ttlD)
		}
	}
	t.Logf("held %v after registration; expired after %v", heldAt.Round(time.Millisecond), gone)
	tc.WaitFor(t, 5*time.Second, "the leader to count the releases", func() bool {
		st := c.Leader().Srv.Tracker().Stats()
		return st.StormReleased == 5 && st.StormHeld == 0
	})
	list, _, err = obs.Instances(ctx, "storm", client.ListOptions{Consistent: true})
	if err != nil || len(list) != 1 || list[0].Suspect || list[0].Addr != "10.9.0.99:1" {
		t.Fatalf("after the releases: %+v, %v; want only the heartbeating instance, not suspect", list, err)
	}
}
