package client_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	tc "github.com/discoverd/discoverd/server/servertest"
)

type electResult struct {
	who string
	l   *client.Leadership
	err error
}

// elect runs Elect in the background; its result goes to out.
func elect(ctx context.Context, cl *client.Client, name, addr string, out chan<- electResult) {
	go func() {
		l, err := cl.Elect(ctx, name, addr, map[string]string{"who": addr})
		out <- electResult{who: addr, l: l, err: err}
	}()
}

func recvElect(t *testing.T, ch <-chan electResult, timeout time.Duration) electResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("no Elect returned within %v", timeout)
		return electResult{}
	}
}

func waitDone(t *testing.T, l *client.Leadership, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(timeout):
		t.Fatalf("Done not closed within %v after %s", timeout, what)
	}
}

func notDone(t *testing.T, l *client.Leadership, what string) {
	t.Helper()
	select {
	case <-l.Done():
		t.Fatalf("Done closed: %s", what)
	default:
	}
}

// leaderLog collects what a set's Leaders yields, in the background.
type leaderLog struct {
	mu   sync.Mutex
	seen []*client.Service
	end  chan struct{}
}

func followLeaders(set *client.ServiceSet) *leaderLog {
	lg := &leaderLog{end: make(chan struct{})}
	go func() {
		defer close(lg.end)
		for l := range set.Leaders() {
			lg.mu.Lock()
			lg.seen = append(lg.seen, l)
			lg.mu.Unlock()
		}
	}()
	return lg
}

func (lg *leaderLog) last() *client.Service {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	if len(lg.seen) == 0 {
		return nil
	}
	return lg.seen[len(lg.seen)-1]
}

func (lg *leaderLog) all() []*client.Service {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	return slices.Clone(lg.seen)
}

// TestElect_OneWinsThenTheOtherOnClose: two clients stand for the same
// service; one wins, the other waits; closing the winner's client closes
// its Done and makes the other win with a larger fencing index. A third
// client's Leaders sees the winner, then the other, never two leaders with
// one fencing index.
func TestElect_OneWinsThenTheOtherOnClose(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	servers := nodeAddrs(c.Nodes...)
	const name = "elect-close"
	a := newClient(t, client.Config{Servers: servers, TTL: 5 * time.Second})
	b := newClient(t, client.Config{Servers: servers, TTL: 5 * time.Second})
	obs := newClient(t, client.Config{Servers: servers})
	set := services(t, obs, name)
	lg := followLeaders(set)
	tc.WaitFor(t, 10*time.Second, "Leaders to yield the initial none", func() bool {
		return len(lg.all()) == 1 && lg.last() == nil
	})

	ctx := tc.Context(t, 60*time.Second)
	resA, resB := make(chan electResult, 1), make(chan electResult, 1)
	elect(ctx, a, name, "10.7.0.1:80", resA)
	elect(ctx, b, name, "10.7.0.2:80", resB)

	var first electResult
	var winner *client.Client
	var waiting chan electResult
	select {
	case first = <-resA:
		winner, waiting = a, resB
	case first = <-resB:
		winner, waiting = b, resA
	case <-time.After(20 * time.Second):
		t.Fatal("no Elect won within 20s")
	}
	if first.err != nil {
		t.Fatalf("Elect(%s): %v", first.who, first.err)
	}
	select {
	case r := <-waiting:
		t.Fatalf("both Elects returned while the first holds the leadership: %s %+v %v", r.who, r.l, r.err)
	default:
	}
	l1 := first.l
	if l1.FencingIndex() == 0 {
		t.Fatal("FencingIndex() = 0")
	}
	notDone(t, l1, "right after winning")
	tc.WaitFor(t, 10*time.Second, "the observer's Leaders to name the winner", func() bool {
		l := lg.last()
		return l != nil && l.Addr == first.who && l.CreateIndex == l1.FencingIndex()
	})

	if err := winner.Close(); err != nil {
		t.Fatalf("Close of the winner's client: %v", err)
	}
	waitDone(t, l1, 10*time.Second, "its client's Close")
	second := recvElect(t, waiting, 20*time.Second)
	if second.err != nil {
		t.Fatalf("Elect(%s) after the winner's client closed: %v", second.who, second.err)
	}
	l2 := second.l
	if second.who == first.who || l2.FencingIndex() <= l1.FencingIndex() {
		t.Fatalf("second leader %s fencing %d after %s fencing %d: want the other, with a larger index",
			second.who, l2.FencingIndex(), first.who, l1.FencingIndex())
	}
	notDone(t, l2, "right after winning")
	tc.WaitFor(t, 10*time.Second, "the observer's Leaders to name the second winner", func() bool {
		l := lg.last()
		return l != nil && l.Addr == second.who && l.CreateIndex == l2.FencingIndex()
	})
	byIndex := map[uint64]string{}
	for _, l := range lg.all() {
		if l == nil {
			continue
		}
		if other, ok := byIndex[l.CreateIndex]; ok && other != l.Addr {
			t.Fatalf("two leaders with fencing index %d: %s and %s", l.CreateIndex, other, l.Addr)
		}
		byIndex[l.CreateIndex] = l.Addr
	}

	set.Close()
	select {
	case <-lg.end:
	case <-time.After(10 * time.Second):
		t.Fatal("Leaders did not end when the set closed")
	}
}

// TestElect_Resign: Resign closes Done, removes the registration and lets
// the next candidate win; calling it again is harmless.
func TestElect_Resign(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	servers := nodeAddrs(c.Nodes...)
	const name = "elect-resign"
	a := newClient(t, client.Config{Servers: servers})
	b := newClient(t, client.Config{Servers: servers})
	ctx := tc.Context(t, 60*time.Second)

	l1, err := a.Elect(ctx, name, "10.7.1.1:80", nil)
	if err != nil {
		t.Fatalf("Elect: %v", err)
	}
	res := make(chan electResult, 1)
	elect(ctx, b, name, "10.7.1.2:80", res)
	tc.WaitFor(t, 10*time.Second, "the second candidate to be registered", func() bool {
		return findService(instances(t, a, name), "10.7.1.2:80") != nil
	})
	notDone(t, l1, "while another candidate waits")

	if err := l1.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	waitDone(t, l1, time.Second, "Resign returned")
	if findService(instances(t, a, name), "10.7.1.1:80") != nil {
		t.Fatal("the resigned registration is still listed")
	}
	r := recvElect(t, res, 20*time.Second)
	if r.err != nil {
		t.Fatalf("Elect of the second candidate: %v", r.err)
	}
	if r.l.FencingIndex() <= l1.FencingIndex() {
		t.Fatalf("fencing index %d after %d: want larger", r.l.FencingIndex(), l1.FencingIndex())
	}
	if err := l1.Resign(ctx); err != nil {
		t.Fatalf("second Resign: %v", err)
	}
	if err := r.l.Resign(ctx); err != nil {
		t.Fatalf("Resign of the second leader: %v", err)
	}
	waitDone(t, r.l, time.Second, "Resign returned")
	if got := instances(t, b, name); len(got) != 0 {
		t.Fatalf("instances after both resigned: %v", serviceAddrs(got))
	}
}

// TestElect_ContextEnds: an Elect whose context ends while another holds
// the leadership returns the context's error and removes its registration;
// the leader is undisturbed.
func TestElect_ContextEnds(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	servers := nodeAddrs(c.Nodes...)
	const name = "elect-ctx"
	a := newClient(t, client.Config{Servers: servers})
	b := newClient(t, client.Config{Servers: servers})
	l1, err := a.Elect(tc.Context(t, 30*time.Second), name, "10.7.2.1:80", nil)
	if err != nil {
		t.Fatalf("Elect: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan electResult, 1)
	elect(ctx, b, name, "10.7.2.2:80", res)
	tc.WaitFor(t, 10*time.Second, "the second candidate to be registered", func() bool {
		return findService(instances(t, a, name), "10.7.2.2:80") != nil
	})
	cancel()
	r := recvElect(t, res, 20*time.Second)
	if !errors.Is(r.err, context.Canceled) || r.l != nil {
		t.Fatalf("Elect after its context ended: %+v, %v; want context.Canceled", r.l, r.err)
	}
	if findService(instances(t, b, name), "10.7.2.2:80") != nil { // b read its own unregistration
		t.Fatal("the abandoned candidate's registration is still listed")
	}
	notDone(t, l1, "after another candidate gave up")

	// A deadline that ends while waiting: context.DeadlineExceeded.
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if _, err := b.Elect(dctx, name, "10.7.2.3:80", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Elect with a deadline while another leads: %v, want context.DeadlineExceeded", err)
	}
	tc.WaitFor(t, 10*time.Second, "the timed-out candidate's registration to be removed", func() bool {
		return findService(instances(t, a, name), "10.7.2.3:80") == nil
	})
	notDone(t, l1, "after another candidate timed out")
}

// TestElect_LostWhenUnregistered: the registration removed from under the
// leadership (UnregisterAddr of the same instance) closes Done.
func TestElect_LostWhenUnregistered(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	a := newClient(t, client.Config{Servers: nodeAddrs(c.Nodes...)})
	l, err := a.Elect(tc.Context(t, 30*time.Second), "elect-unreg", "10.7.3.1:80", nil)
	if err != nil {
		t.Fatalf("Elect: %v", err)
	}
	unregister(t, a, "elect-unreg", "10.7.3.1:80")
	waitDone(t, l, 10*time.Second, "its registration was removed")
	if err := l.Resign(tc.Context(t, 10*time.Second)); err != nil {
		t.Fatalf("Resign after the loss: %v", err)
	}
}
