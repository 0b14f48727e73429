package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// heartbeatLog records OnHeartbeat calls.
type heartbeatLog struct {
	mu    sync.Mutex
	calls []error
	wrong []string // calls for an instance that was not registered
	wake  chan struct{}
}

func (l *heartbeatLog) hook(name, addr string, err error) {
	l.mu.Lock()
	if name != "hook" || addr != "10.0.0.9:80" {
		l.wrong = append(l.wrong, name+" "+addr)
	}
	l.calls = append(l.calls, err)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// waitFor waits until a call after the first `after` matches ok, and
// returns the number of calls seen then.
func (l *heartbeatLog) waitFor(t *testing.T, after int, within time.Duration, what string, ok func(error) bool) int {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		calls := append([]error(nil), l.calls...)
		l.mu.Unlock()
		for i := after; i < len(calls); i++ {
			if ok(calls[i]) {
				return i + 1
			}
		}
		select {
		case <-l.wake:
		case <-deadline.C:
			t.Fatalf("no heartbeat report %s within %v; reports: %v", what, within, calls)
		}
	}
}

// TestClient_OnHeartbeatHook: the hook hears each heartbeat's outcome — nil
// while the cluster acknowledges them, an error while the client's only
// server is down, nil again once it is back — for the registered instance
// only.
func TestClient_OnHeartbeatHook(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 1})
	log := &heartbeatLog{wake: make(chan struct{}, 1)}
	cl := newClient(t, client.Config{Servers: nodeAddrs(c.Nodes...), TTL: time.Second, DialTimeout: 500 * time.Millisecond,
		OnHeartbeat: log.hook})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.RegisterAddr(ctx, "hook", "10.0.0.9:80", nil, 0); err != nil {
		t.Fatal(err)
	}
	n := log.waitFor(t, 0, 10*time.Second, "of success", func(err error) bool { return err == nil })
	c.Kill(0)
	n = log.waitFor(t, n, 10*time.Second, "of a failure", func(err error) bool { return err != nil })
	c.Restart(0)
	log.waitFor(t, n, 30*time.Second, "of success after the restart", func(err error) bool { return err == nil })
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.wrong) > 0 {
		t.Fatalf("the hook was called for %q", log.wrong)
	}
}
