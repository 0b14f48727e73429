package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// register writes through the backend of whichever node leads, retrying
// (with one request id, so at most once) across leader changes, as a client
// would. Tests use it where no client heartbeats are wanted.
func register(t testing.TB, c *tc.Cluster, ctx context.Context, reg backend.Registration) uint64 {
	t.Helper()
	if reg.RequestID == "" {
		reg.RequestID = fmt.Sprintf("t-%s-%s-%d", reg.Name, reg.Addr, time.Now().UnixNano())
	}
	for {
		// Whichever node is a ready leader now: waiting for every node to
		// know it (c.Leader) would fail a starved run that only needs a
		// leader to write through.
		var leader *tc.Node
		for _, n := range c.Running() {
			if n.Srv.Node().Ready() {
				leader = n
			}
		}
		var err error = codes.ErrNoLeader
		if leader != nil {
			var idx uint64
			if idx, err = leader.Srv.Store().Register(ctx, reg); err == nil {
				return idx
			}
		}
		if !codes.Retryable(err) || ctx.Err() != nil {
			t.Errorf("register %s %s: %v", reg.Name, reg.Addr, err) // may run outside the test goroutine
			return 0
		}
		time.Sleep(20 * time.Millisecond) // an election is under way
	}
}

// registerAll registers the n registrations reg(0) … reg(n-1) through
// register, from workers goroutines at once.
func registerAll(t testing.TB, c *tc.Cluster, ctx context.Context, n, workers int, reg func(i int) backend.Registration) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += workers {
				register(t, c, ctx, reg(i))
			}
		}()
	}
	wg.Wait()
}

// addrsOf lists a node's instances of name, from its own FSM.
func addrsOf(n *tc.Node, name string) []string {
	_, ins := n.Srv.FSM().List(name, nil)
	var out []string
	for _, in := range ins {
		out = append(out, in.Addr)
	}
	slices.Sort(out)
	return out
}

func TestCluster_ReplicationAndWriteThroughFollower(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c := tc.New(t, tc.Options{Nodes: size})
			f := c.Followers()[0]
			cl := c.Client(f) // talks to a follower only: writes are forwarded
			ctx := tc.Context(t, 20*time.Second)
			for i := range 5 {
				if err := cl.RegisterAddr(ctx, "web", fmt.Sprintf("10.0.0.%d:80", i+1), map[string]string{"i": strconv.Itoa(i)}, 0); err != nil {
					t.Fatalf("register via follower: %v", err)
				}
			}
			c.WaitApplied(cl.LastIndex())
			want := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"}
			for _, n := range c.Running() {
				if got := addrsOf(n, "web"); !slices.Equal(got, want) {
					t.Errorf("%s holds %v, want %v", n.ID, got, want)
				}
			}
			// A default read from the follower sees its own writes.
			list, idx, err := cl.Instances(ctx, "web", client.ListOptions{Attrs: map[string]string{"i": "3"}})
			if err != nil || len(list) != 1 || list[0].Addr != "10.0.0.4:80" || idx < cl.LastIndex() {
				t.Fatalf("filtered read = %v idx %d err %v", list, idx, err)
			}
		})
	}
}

func TestCluster_KillLeaderNewLeaderWritesResume(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c := tc.New(t, tc.Options{Nodes: size})
			cl := c.Client()
			ctx := tc.Context(t, 30*time.Second)
			if err := cl.RegisterAddr(ctx, "db", "10.0.0.1:5432", nil, 0); err != nil {
				t.Fatal(err)
			}
			old := c.Leader()
			c.Kill(old.Index)
			nl := c.WaitLeader()
			if nl == old {
				t.Fatal("killed leader still leads")
			}
			if err := cl.RegisterAddr(ctx, "db", "10.0.0.2:5432", nil, 0); err != nil {
				t.Fatalf("write after failover: %v", err)
			}
			list, _, err := cl.Instances(ctx, "db", client.ListOptions{Consistent: true})
			if err != nil || len(list) != 2 {
				t.Fatalf("consistent read after failover: %v, %v", list, err)
			}
			// The old leader comes back as a follower and catches up.
			c.Restart(old.Index)
			c.WaitApplied(cl.LastIndex())
			if got := addrsOf(c.Nodes[old.Index], "db"); len(got) != 2 {
				t.Fatalf("restarted node holds %v", got)
			}
		})
	}
}

func TestCluster_RestartFromDataDirKeepsState(t *testing.T) {
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.SnapshotThreshold = 20 // some state comes back from a snapshot, the rest from the log
		cfg.Raft.TrailingLogs = 5
		cfg.Raft.SnapshotInterval = 100 * time.Millisecond
	}})
	cl := c.Client()
	ctx := tc.Context(t, 30*time.Second)
	for i := range 60 {
		if err := cl.RegisterAddr(ctx, "api", fmt.Sprintf("10.1.0.%d:80", i), map[string]string{"n": strconv.Itoa(i)}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.UnregisterAddr(ctx, "api", "10.1.0.7:80"); err != nil {
		t.Fatal(err)
	}
	last := cl.LastIndex()
	c.WaitApplied(last)
	before := addrsOf(c.Nodes[0], "api")
	// Stop every node, then start them again from their data dirs.
	for i := range c.Nodes {
		c.Stop(i)
	}
	for i := range c.Nodes {
		c.Restart(i)
	}
	c.WaitLeader()
	c.WaitApplied(last)
	for _, n := range c.Running() {
		if got := addrsOf(n, "api"); !slices.Equal(got, before) {
			t.Fatalf("%s after restart holds %d instances, want %d", n.ID, len(got), len(before))
		}
		if in := n.Srv.FSM().Get("api", "10.1.0.42:80"); in == nil || in.Attrs["n"] != "42" || in.TTL != time.Hour {
			t.Fatalf("%s lost attributes or TTL: %+v", n.ID, in)
		}
	}
}

func TestCluster_LaggingNodeCaughtUpBySnapshot(t *testing.T) {
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.SnapshotThreshold = 16
		cfg.Raft.TrailingLogs = 4
		cfg.Raft.SnapshotInterval = 100 * time.Millisecond
	}})
	lagging := c.Followers()[0]
	c.Stop(lagging.Index)
	cl := c.Client(c.Running()...)
	ctx := tc.Context(t, 30*time.Second)
	for i := range 100 {
		if err := cl.RegisterAddr(ctx, "q", fmt.Sprintf("10.2.0.%d:1", i), nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.Leader()
	if err := leader.Srv.Node().Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	// The leader has compacted its log past what the lagging node holds.
	if st := leader.Srv.Node().Status(); st.SnapshotIndex == 0 {
		t.Fatalf("leader did not snapshot: %+v", st)
	}
	c.Restart(lagging.Index)
	c.WaitApplied(cl.LastIndex())
	if got := addrsOf(c.Nodes[lagging.Index], "q"); len(got) != 100 {
		t.Fatalf("lagging node holds %d instances, want 100", len(got))
	}
	// Raft records the installed snapshot just after the FSM restored it.
	tc.WaitFor(t, 5*time.Second, "the lagging node to record an installed snapshot", func() bool {
		return c.Nodes[lagging.Index].Srv.Node().Status().SnapshotIndex != 0
	})
}

// collect reads events from a watch into a channel until ctx ends.
func collect(ctx context.Context, w *client.Watch) <-chan *client.Event {
	ch := make(chan *client.Event, 10000)
	go func() {
		defer close(ch)
		for {
			e, err := w.Next(ctx)
			if err != nil {
				return
			}
			ch <- e
		}
	}()
	return ch
}

// waitEvent reads events until one matches, failing after timeout.
func waitEvent(t *testing.T, ch <-chan *client.Event, timeout time.Duration, what string, match func(*client.Event) bool) (*client.Event, []*client.Event) {
	t.Helper()
	var seen []*client.Event
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("watch ended while waiting for %s", what)
			}
			seen = append(seen, e)
			if match(e) {
				return e, seen
			}
		case <-tm.C:
			t.Fatalf("no %s within %v; saw %d events", what, timeout, len(seen))
		}
	}
}

func TestCluster_ExpiryAfterHeartbeatsStop(t *testing.T) {
	c := tc.New(t, tc.Options{})
	cl := c.Client()
	ctx := tc.Context(t, 30*time.Second)
	w, err := cl.Watch(ctx, "jobs", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(ctx, w)
	waitEvent(t, events, 5*time.Second, "current", func(e *client.Event) bool { return e.Kind == client.EventCurrent })

	// Registered through the backend directly: nobody heartbeats it.
	leader := c.Leader()
	registered := time.Now()
	idx := register(t, c, ctx, backend.Registration{Name: "jobs", Addr: "10.3.0.1:1", TTL: time.Second})
	e, _ := waitEvent(t, events, 10*time.Second, "down of the silent instance", func(e *client.Event) bool { return e.Kind == client.EventDown })
	took := time.Since(registered)
	if e.Reason != "expire" || e.Index <= idx {
		t.Fatalf("down event %+v, want reason expire after index %d", e, idx)
	}
	if took < time.Second {
		t.Fatalf("expired after %v, before its 1s TTL", took)
	}
	t.Logf("expired %v after registration (TTL 1s)", took)
	// The tracker counts the expiry when its proposal's answer comes back,
	// which may be after the watchers saw it applied: wait for the count.
	deadline := time.Now().Add(5 * time.Second)
	for leader.Srv.Tracker().Stats().Expired != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("tracker stats %+v", leader.Srv.Tracker().Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCluster_NoExpiryOfHeartbeatingInstanceAcrossFailover(t *testing.T) {
	c := tc.New(t, tc.Options{})
	leader := c.Leader()
	var others []*tc.Node
	for _, n := range c.Nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	ctx := tc.Context(t, 40*time.Second)
	// The registering client knows every node; the observer only survivors.
	reg := c.Client()
	const ttl = time.Second // the shortest TTL allowed: the tightest case
	for i := range 3 {
		if err := reg.RegisterAddr(ctx, "live", fmt.Sprintf("10.4.0.%d:1", i), nil, ttl); err != nil {
			t.Fatal(err)
		}
	}
	obs := c.Client(others...)
	w, err := obs.Watch(ctx, "live", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(ctx, w)
	waitEvent(t, events, 5*time.Second, "current", func(e *client.Event) bool { return e.Kind == client.EventCurrent })

	for round := range 2 {
		l := c.Leader()
		c.Kill(l.Index)
		c.WaitLeader()
		// Stay through several TTLs under the new leader.
		deadline := time.After(3 * ttl)
	wait:
		for {
			select {
			case e := <-events:
				if e.Kind == client.EventDown {
					t.Fatalf("round %d: heartbeating instance went down: %+v", round, e.Service)
				}
			case <-deadline:
				break wait
			}
		}
		c.Restart(l.Index)
	}
	list, _, err := obs.Instances(ctx, "live", client.ListOptions{Consistent: true})
	if err != nil || len(list) != 3 {
		t.Fatalf("after two failovers: %d instances, err %v", len(list), err)
	}
}

func TestCluster_WatchResumesOnAnotherNodeWithoutGap(t *testing.T) {
	c := tc.New(t, tc.Options{})
	ctx := tc.Context(t, 40*time.Second)
	f := c.Followers()
	// The watcher starts on follower f[0], and may fail over to the others.
	var order []*tc.Node
	order = append(order, f[0], f[1], c.Leader())
	wcl := c.Client(order...)
	w, err := wcl.Watch(ctx, "svc", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(ctx, w)
	waitEvent(t, events, 5*time.Second, "current", func(e *client.Event) bool { return e.Kind == client.EventCurrent })

	writer := c.Client(f[1], c.Leader())
	var wrote []uint64
	var mu sync.Mutex
	write := func(n int) {
		for i := range n {
			addr := fmt.Sprintf("10.5.%d.%d:1", len(wrote), i)
			if err := writer.RegisterAddr(ctx, "svc", addr, nil, time.Hour); err != nil {
				t.Errorf("register: %v", err)
				return
			}
			mu.Lock()
			wrote = append(wrote, writer.LastIndex())
			mu.Unlock()
		}
	}
	write(20)
	// Kill the node the watch reads from, in the middle of the stream.
	c.Kill(f[0].Index)
	write(20)
	last := wrote[len(wrote)-1]
	var changes []uint64
	_, seen := waitEvent(t, events, 15*time.Second, "the last write", func(e *client.Event) bool { return e.Index >= last && e.Kind == client.EventUp })
	for _, e := range seen {
		switch e.Kind {
		case client.EventResync:
			t.Fatalf("resync although history was available: %+v", e)
		case client.EventUp, client.EventUpdate, client.EventDown:
			changes = append(changes, e.Index)
		}
	}
	if !slices.Equal(changes, wrote) {
		t.Fatalf("watch saw change indices %v\nwant exactly %v", changes, wrote)
	}
}

func TestCluster_SlowConsumersDoNotStallTheNode(t *testing.T) {
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		cfg.FSM.HistoryPerService = 64
		cfg.RPC.WriteTimeout = 2 * time.Second
	}})
	ctx := tc.Context(t, 60*time.Second)
	f := c.Followers()[0]

	// A ServiceSet subscriber that never reads its channel.
	slow := c.Client(f)
	set, err := slow.Services("hot")
	if err != nil {
		t.Fatal(err)
	}
	stuck := make(chan *client.ServiceUpdate, 1)
	set.Subscribe(stuck)
	// A raw watch whose client never reads the socket at all.
	raw := c.Client(f)
	rw, err := raw.Watch(ctx, "hot", 0) // opened, then never read again
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	// A healthy watcher on the same follower must see everything.
	good := c.Client(f)
	gw, err := good.Watch(ctx, "hot", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(ctx, gw)

	writer := c.Client()
	const n = 600
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				if err := writer.RegisterAddr(ctx, "hot", fmt.Sprintf("10.6.%d.%d:1", i/250, i%250), map[string]string{"pad": strings.Repeat("x", 512)}, time.Hour); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d registrations in %v with stuck consumers attached", n, time.Since(start))
	// The healthy watcher converges on all n instances (directly or via a resync).
	online := map[string]bool{}
	inBlock := true
	WaitUntil := time.Now().Add(20 * time.Second)
	for len(online) < n || inBlock {
		if time.Now().After(WaitUntil) {
			t.Fatalf("healthy watcher saw %d of %d instances", len(online), n)
		}
		select {
		case e := <-events:
			switch e.Kind {
			case client.EventResync:
				online, inBlock = map[string]bool{}, true
			case client.EventCurrent:
				inBlock = false
			case client.EventUp, client.EventUpdate:
				online[e.Service.Addr] = true
			case client.EventDown:
				delete(online, e.Service.Addr)
			}
		case <-time.After(time.Second):
		}
	}
	// The stuck subscriber got what fit in its channel; the rest was dropped
	// and counted, not queued. Free its slot, make one more change, and the
	// update that arrives reports how many it missed.
	tc.WaitFor(t, 10*time.Second, "the set to follow all instances", func() bool { return len(set.Select(nil)) == n })
	select {
	case <-stuck:
	default:
		t.Fatal("stuck subscriber received nothing at all")
	}
	if err := writer.RegisterAddr(ctx, "hot", "10.6.9.9:1", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-stuck:
		if u.Missed < n-1 || u.Addr != "10.6.9.9:1" {
			t.Fatalf("update after overflow = %+v, want 10.6.9.9:1 reporting at least %d missed", u, n-1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no update reached the subscriber after its channel had room again")
	}
}

func TestCluster_WritesWithSameRequestIDAppliedOnceAcrossNodes(t *testing.T) {
	c := tc.New(t, tc.Options{})
	ctx := tc.Context(t, 20*time.Second)
	reg := backend.Registration{Name: "idem", Addr: "10.7.0.1:1", TTL: time.Hour, RequestID: "req-1"}
	var idxs []uint64
	for _, n := range c.Running() {
		idx, err := n.Srv.Store().Register(ctx, reg)
		if err != nil {
			t.Fatalf("via %s: %v", n.ID, err)
		}
		idxs = append(idxs, idx)
	}
	if idxs[0] != idxs[1] || idxs[1] != idxs[2] {
		t.Fatalf("same request id applied more than once: indices %v", idxs)
	}
	_, un := c.Nodes[0].Srv.Store().Unregister(ctx, backend.Unregistration{Name: "idem", Addr: "10.7.0.1:1", RequestID: "req-2"})
	_, un2 := c.Nodes[1].Srv.Store().Unregister(ctx, backend.Unregistration{Name: "idem", Addr: "10.7.0.1:1", RequestID: "req-2"})
	if un != nil || un2 != nil {
		t.Fatalf("retried unregister: %v, %v (the retry must get the first answer)", un, un2)
	}
	_, un3 := c.Nodes[2].Srv.Store().Unregister(ctx, backend.Unregistration{Name: "idem", Addr: "10.7.0.1:1", RequestID: "req-3"})
	if !errors.Is(un3, client.ErrNotFound) {
		t.Fatalf("new unregister of a removed instance: %v, want ErrNotFound", un3)
	}
}

func TestCluster_ThousandWatchersOnAServiceWithThousandsOfInstances(t *testing.T) {
	// A thousand streams load both cores; production Raft timings keep the
	// leader from being voted out by a starved scheduler.
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout = time.Second, time.Second
	}})
	ctx := tc.Context(t, 120*time.Second)
	const instances, watchers, fullState, conns, changes = 2000, 1000, 100, 10, 5
	registerAll(t, c, ctx, instances, 32, func(i int) backend.Registration {
		return backend.Registration{Name: "big", Addr: fmt.Sprintf("10.8.%d.%d:1", i/250, i%250), TTL: time.Hour}
	})
	f := c.Followers()[0]
	base := c.Leader().Srv.FSM().AppliedIndex()
	c.WaitApplied(base)

	// 1000 watch streams on one follower, over 10 connections. The first 100
	// start from nothing and read the whole state; the others resume from
	// the index the state was read at, as reconnecting clients do. Each then
	// follows the same changes.
	clients := make([]*client.Client, conns)
	for i := range clients {
		clients[i] = c.Client(f)
	}
	type result struct {
		full   bool // started from nothing
		online map[string]bool
		order  []uint64 // indices of the change events, in arrival order
		resync int      // resyncs seen (the state was sent again)
		err    error
	}
	results := make(chan result, watchers)
	started := make(chan struct{}, watchers)
	last := fmt.Sprintf("10.8.99.%d:1", changes-1)
	start := time.Now()
	for i := range watchers {
		go func() {
			from := base
			if i < fullState {
				from = 0
			}
			w, err := clients[i%conns].Watch(ctx, "big", from)
			started <- struct{}{}
			if err != nil {
				results <- result{err: err}
				return
			}
			defer w.Close()
			r := result{full: from == 0, online: map[string]bool{}}
			inState := from == 0
			for {
				e, err := w.Next(ctx)
				if err != nil {
					r.err = err
					results <- r
					return
				}
				switch {
				case e.Kind == client.EventResync:
					r.online, inState = map[string]bool{}, true
					r.resync++
				case e.Kind == client.EventCurrent:
					inState = false
				case e.Kind == client.EventUp && inState:
					r.online[e.Service.Addr] = true
				case e.Kind == client.EventUp:
					r.online[e.Service.Addr] = true
					r.order = append(r.order, e.Index)
					if e.Service.Addr == last {
						results <- r
						return
					}
				}
			}
		}()
	}
	for range watchers {
		<-started
	}
	tc.WaitFor(t, 60*time.Second, "every watch stream to be open on the follower", func() bool {
		return f.Srv.FSM().Stats().Watchers == watchers
	})
	t.Logf("%d watchers open (%d of them read %d instances) in %v", watchers, fullState, instances, time.Since(start))
	start = time.Now()
	var want []uint64
	for i := range changes {
		want = append(want, register(t, c, ctx, backend.Registration{Name: "big", Addr: fmt.Sprintf("10.8.99.%d:1", i), TTL: time.Hour}))
	}
	for i := range watchers {
		r := <-results
		if r.err != nil {
			t.Fatalf("watcher: %v", r.err)
		}
		// A stream left silent for 6 s (a starved machine) is resumed by
		// the client; one that had not finished reading the state yet gets
		// it again (a resync — or, if none of it had been delivered yet,
		// simply the state from the start). Changes applied before that
		// arrive as state, so only the ones after it arrive as changes —
		// still in order; that every instance arrived is checked below.
		suffix := len(r.order) <= len(want) && slices.Equal(r.order, want[len(want)-len(r.order):])
		if !slices.Equal(r.order, want) && (!suffix || (r.resync == 0 && !r.full)) {
			t.Fatalf("watcher %d saw change indices %v, want %v (resyncs: %d)", i, r.order, want, r.resync)
		}
		if r.resync > 0 || len(r.order) != len(want) {
			t.Logf("a watcher (full state: %v) was resynced %d times; its changes after that: %v", r.full, r.resync, r.order)
		}
		wantOnline := changes
		if r.full {
			wantOnline += instances
		}
		if len(r.online) != wantOnline {
			t.Fatalf("watcher (full state: %v) knows %d instances, want %d", r.full, len(r.online), wantOnline)
		}
	}
	t.Logf("%d changes reached all %d watchers in %v", changes, watchers, time.Since(start))
}
