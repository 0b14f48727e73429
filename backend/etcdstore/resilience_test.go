package etcdstore_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend/etcdstore"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/etcdtest"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/server"
	"github.com/discoverd/discoverd/server/servertest"
)

// TestEtcdStore_SurvivesEtcdLeaderChangeAndOutage: a front end over a
// 3-member etcd keeps serving when etcd's leader is killed (writes go on, a
// heartbeating instance stays, the watch goes on without a gap), and
// recovers after the whole etcd cluster was down.
func TestEtcdStore_SurvivesEtcdLeaderChangeAndOutage(t *testing.T) {
	ec := etcdtest.StartCluster(t, 3)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logging.New(t.Output(), "text", slog.LevelWarn)
	srv, err := server.Start(server.Config{Backend: server.BackendEtcd, Listener: ln, Logger: log,
		Etcd: etcdstore.Config{Endpoints: ec.Endpoints(), Prefix: "/resilience"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Kill() })

	newClient := func(ttl time.Duration) *client.Client {
		c, err := client.NewWithConfig(client.Config{Servers: []string{srv.Addr()}, TTL: ttl, Host: "10.0.0.1", RequestTimeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// TTL 3 s: after the outage etcd renews every lease to its full TTL
	// (plus its election timeout) when it elects a leader; the front end
	// must reach it again and relay a heartbeat within that, on a loaded
	// machine with the race detector.
	live := newClient(3 * time.Second)
	if err := live.RegisterAddr(ctx, "web", "10.0.0.1:80", nil, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	obs := newClient(0)
	w, err := obs.Watch(ctx, "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	events := make(chan *client.Event, 100)
	go func() {
		for {
			e, err := w.Next(ctx)
			if err != nil {
				close(events)
				return
			}
			events <- e
		}
	}()
	known := map[string]bool{} // instances already seen up; a resync's state block repeats them
	expect := func(kind client.EventKind, addr string, within time.Duration) *client.Event {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatal("watch ended")
				}
				switch {
				case e.Kind == client.EventCurrent, e.Kind == client.EventResync:
					continue
				case e.Kind == client.EventUp && known[e.Service.Addr]:
					continue
				case e.Kind == client.EventDown && e.Service.Addr == "10.0.0.1:80":
					t.Fatalf("the heartbeating instance went down (%s)", e.Reason)
				case e.Kind != kind || e.Service == nil || e.Service.Addr != addr:
					t.Fatalf("event %s %+v, want %s %s", e.Kind, e.Service, kind, addr)
				}
				known[addr] = true
				return e
			case <-deadline:
				t.Fatalf("no %s %s within %v", kind, addr, within)
			}
		}
	}
	expect(client.EventUp, "10.0.0.1:80", 10*time.Second)
	writer := newClient(0)

	// Kill etcd's leader: a new one is elected, and discoverd goes on.
	old := ec.Leader()
	ec.Stop(old)
	servertest.WaitFor(t, 20*time.Second, "a new etcd leader", func() bool { l := ec.Leader(); return l >= 0 && l != old })
	if err := writer.RegisterAddr(ctx, "web", "10.0.0.2:80", nil, time.Hour); err != nil {
		t.Fatalf("write after etcd's leader change: %v", err)
	}
	expect(client.EventUp, "10.0.0.2:80", 15*time.Second)
	ec.Restart(old)

	// The whole of etcd down: calls fail, and say so; then it comes back.
	for i := range 3 {
		ec.Stop(i)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	err = writer.RegisterAddr(short, "web", "10.0.0.3:80", nil, time.Hour)
	cancelShort()
	if err == nil || !(errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrUnknownOutcome) || errors.Is(err, client.ErrTimeout)) {
		t.Fatalf("write with etcd down: %v, want unavailable / unknown outcome / timeout", err)
	}
	// Its outcome is unknown: the front end may still complete it once etcd
	// is back (its own request deadline is longer than the client's).
	known["10.0.0.3:80"] = true
	ec.Restart(0, 1, 2)
	servertest.WaitFor(t, 30*time.Second, "etcd to elect a leader again", func() bool { return ec.Leader() >= 0 })
	if err := writer.RegisterAddr(ctx, "web", "10.0.0.4:80", nil, time.Hour); err != nil {
		t.Fatalf("write after etcd came back: %v", err)
	}
	e := expect(client.EventUp, "10.0.0.4:80", 30*time.Second)
	// The heartbeating instance is still there.
	list, _, err := obs.Instances(ctx, "web", client.ListOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list {
		found = found || s.Addr == "10.0.0.1:80"
	}
	if !found {
		t.Fatalf("heartbeating instance lost across the outage: %+v (last event at %d)", list, e.Index)
	}
}
