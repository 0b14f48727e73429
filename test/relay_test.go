package test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// TestHeartbeatRelay_FollowerSendsHeartbeatsTogether: 64 callers on one
// connection to a follower send 640 one-instance heartbeats at once; every
// one is acknowledged, the follower relays all 640 to the leader in fewer
// calls than heartbeats (its metrics say how many), and the leader, which
// relays nothing, counts none.
func TestHeartbeatRelay_FollowerSendsHeartbeatsTogether(t *testing.T) {
	h := newHarness(t)
	c, httpAddr := h.httpCluster(nil)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	leader, follower := c.leaderAndFollower(st.Leader)
	hc := &http.Client{}
	url := func(nd *node) string { return "http://" + httpAddr[nd.id] }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	onLeader, err := rpcconn.Dial(ctx, leader.addr, rpcconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer onLeader.Close()
	onFollower, err := rpcconn.Dial(ctx, follower.addr, rpcconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer onFollower.Close()

	const callers, each = 64, 10
	for i := range callers {
		req := &wire.RegisterRequest{Name: "relay", Addr: fmt.Sprintf("10.0.1.%d:80", i+1), TTLMillis: time.Hour.Milliseconds()}
		if err := onLeader.Call(ctx, wire.MethodRegister, false, req, &wire.WriteResponse{}); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
	}
	const calls, relayed = "discoverd_heartbeat_relay_calls_total", "discoverd_heartbeat_relayed_total"
	fb, lb := scrape(t, hc, url(follower)), scrape(t, hc, url(leader))
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: "relay", Addr: fmt.Sprintf("10.0.1.%d:80", i+1)}}}
			for range each {
				var resp wire.HeartbeatResponse
				if err := onFollower.Call(ctx, wire.MethodHeartbeat, false, req, &resp); err != nil {
					errs <- err
					continue
				}
				if len(resp.Results) != 1 || resp.Results[0].Err() != nil {
					errs <- fmt.Errorf("results %+v", resp.Results)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("heartbeat through the follower: %v", err)
	}
	fa, la := scrape(t, hc, url(follower)), scrape(t, hc, url(leader))
	nCalls, nRelayed := fa.get(t, calls)-fb.get(t, calls), fa.get(t, relayed)-fb.get(t, relayed)
	if nRelayed != callers*each {
		t.Errorf("%s moved by %v on the follower, want %d", relayed, nRelayed, callers*each)
	}
	if nCalls < 1 || nCalls >= nRelayed {
		t.Errorf("the follower relayed %v heartbeats in %v calls: want fewer calls than heartbeats", nRelayed, nCalls)
	}
	t.Logf("%v heartbeats relayed in %v calls (%.1f a call)", nRelayed, nCalls, nRelayed/nCalls)
	if d := la.get(t, calls) - lb.get(t, calls); d != 0 {
		t.Errorf("%s moved by %v on the leader, want 0", calls, d)
	}
}
