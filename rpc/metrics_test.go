package rpc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// TestRPC_StatsCountCallsByMethodAndCode: each call is counted once under
// its method and its answer's code; heartbeats count their instances, not
// those forwarded by another node; an open watch is a stream until closed.
func TestRPC_StatsCountCallsByMethodAndCode(t *testing.T) {
	s, addr, _ := startServing(t, Config{})
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if err := c.Call(ctx, wire.MethodRegister, false, &wire.RegisterRequest{Name: "web", Addr: "10.0.0.1:80"}, &wire.WriteResponse{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Call(ctx, wire.MethodRegister, false, &wire.RegisterRequest{Name: "", Addr: "10.0.0.1:80"}, &wire.WriteResponse{}); !errors.Is(err, codes.ErrInvalidArgument) {
		t.Fatalf("register without a name: %v", err)
	}
	keys := []wire.InstanceKey{{Name: "web", Addr: "10.0.0.1:80"}, {Name: "web", Addr: "10.0.0.2:80"}}
	if err := c.Call(ctx, wire.MethodHeartbeat, false, &wire.HeartbeatRequest{Instances: keys}, &wire.HeartbeatResponse{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, wire.MethodHeartbeat, true, &wire.HeartbeatRequest{Instances: keys}, &wire.HeartbeatResponse{}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	waitStats(t, s, "one watch stream", func(s Stats) bool { return s.WatchStreams == 1 })
	st.Close()
	waitStats(t, s, "no watch stream", func(s Stats) bool { return s.WatchStreams == 0 })

	got := map[string]uint64{}
	stats := s.Stats()
	for _, cs := range stats.Calls {
		got[cs.Method+"/"+string(cs.Code)] = cs.LatencyUS.Count
	}
	want := map[string]uint64{"Register/": 3, "Register/invalid_argument": 1, "Heartbeat/": 2, "Watch/": 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("calls %s: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("calls counted %v, want only %v", got, want)
	}
	if stats.Heartbeats != 2 {
		t.Errorf("heartbeats %d, want 2 (the forwarded request is counted by the node it came from)", stats.Heartbeats)
	}
}

func waitStats(t *testing.T, s *Server, what string, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(s.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: stats %+v", what, s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
