// Package conformance is one test suite every DiscoveryBackend must pass,
// driven end to end through discoverd's RPC layer and Go client:
// registration, attributes, re-registration, unregistration, TTL expiry,
// heartbeats, watches (initial state, changes, resumption, resync after
// lost history), filters, the list of services, bad input and idempotent
// retries, two registrants of one instance, and service metadata
// (compare-and-set, delete, limits, watch events, and — for a store with
// snapshots — surviving one). The built-in Raft store runs it in backend/raftstore, the etcd
// store in backend/etcdstore; nothing is mocked in either.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// Target is a running discoverd cluster over the backend under test.
type Target struct {
	// Servers are the discoverd nodes (2 or more).
	Servers []string
	// LoseHistory makes the store forget the history of a service's changes
	// so far, so a watch resuming from before now must be resynced.
	LoseHistory func(t *testing.T, service string)
	// TTL is the shortest TTL the suite uses for expiry (the store may round
	// it up; see its docs). RemovalBound is how long after TTL an expired
	// instance may linger.
	TTL          time.Duration
	RemovalBound time.Duration
	// SnapshotRestore, if the store has snapshots of its own (the Raft
	// store), makes every node snapshot its state and start again from
	// it. The suite then checks that metadata survives.
	SnapshotRestore func(t *testing.T)
}

// Run runs the suite; newTarget starts a fresh cluster (stopped at cleanup).
func Run(t *testing.T, newTarget func(t *testing.T) *Target) {
	tg := newTarget(t)
	s := &suite{tg: tg}
	for _, tc := range []struct {
		name string
		f    func(*testing.T, *suite)
	}{
		{"RegisterAndList", testRegisterAndList},
		{"AttributesAndFilters", testAttributesAndFilters},
		{"ReRegistrationChangesAttributes", testReRegistration},
		{"Unregister", testUnregister},
		{"TTLExpiry", testTTLExpiry},
		{"HeartbeatKeepsAlive", testHeartbeatKeepsAlive},
		{"WatchStateThenChanges", testWatchStateThenChanges},
		{"WatchResumesFromIndex", testWatchResumes},
		{"WatchResyncsAfterLostHistory", testWatchResync},
		{"ServiceSetFollowsChanges", testServiceSet},
		{"BadInputIsRejected", testBadInput},
		{"RetriedWriteAppliedOnce", testIdempotentRetry},
		{"ConsistentReadSeesWrites", testConsistentRead},
		{"ServicesListsEveryServiceWithItsCount", testServices},
		{"TwoRegistrantsEachRemovesOnlyItsOwn", testTwoRegistrants},
		{"MetaCompareAndSet", testMetaCompareAndSet},
		{"MetaDelete", testMetaDelete},
		{"MetaLimits", testMetaLimits},
		{"MetaWatchEvents", testMetaWatch},
		{"MetaOutlivesInstances", testMetaOutlivesInstances},
		{"MetaRetriedWriteAppliedOnce", testMetaRetriedWriteAppliedOnce},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, s) })
	}
	if tg.SnapshotRestore != nil {
		t.Run("MetaSurvivesSnapshotRestore", func(t *testing.T) { testMetaSurvivesSnapshotRestore(t, s) })
	}
}

type suite struct {
	tg *Target
}

func (s *suite) client(t *testing.T, servers ...string) *client.Client {
	t.Helper()
	if len(servers) == 0 {
		servers = s.tg.Servers
	}
	c, err := client.NewWithConfig(client.Config{Servers: servers, RequestTimeout: 15 * time.Second, Host: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// svc is a service name unique to the test.
func svc(t *testing.T) string {
	return strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
}

func addrs(list []*client.Service) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.Addr)
	}
	return out
}

func list(t *testing.T, c *client.Client, name string, opts client.ListOptions) []*client.Service {
	t.Helper()
	l, _, err := c.Instances(ctx(t, 10*time.Second), name, opts)
	if err != nil {
		t.Fatalf("list %s: %v", name, err)
	}
	return l
}

// raw registers without heartbeats, through the protocol.
func (s *suite) raw(t *testing.T, method string, req, resp any) error {
	t.Helper()
	conn, err := rpcconn.Dial(ctx(t, 5*time.Second), s.tg.Servers[0], rpcconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.Call(ctx(t, 10*time.Second), method, false, req, resp)
}

func testRegisterAndList(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.0.1:80", map[string]string{"id": "a"}, 0); err != nil {
		t.Fatal(err)
	}
	// Every node serves it to a consistent read.
	for _, server := range s.tg.Servers {
		if l := list(t, s.client(t, server), name, client.ListOptions{Consistent: true}); len(l) != 1 {
			t.Fatalf("consistent read via %s: %v", server, addrs(l))
		}
	}
	// The writing client reads its own write from a default read.
	l := list(t, c, name, client.ListOptions{})
	if len(l) != 1 || l[0].Addr != "10.0.0.1:80" || l[0].Attrs["id"] != "a" || l[0].Index == 0 ||
		l[0].CreateIndex == 0 || l[0].CreateIndex > l[0].Index || l[0].TTL < client.DefaultTTL {
		t.Fatalf("list = %+v", l)
	}
}

func testAttributesAndFilters(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	for i, zone := range []string{"a", "b", "a"} {
		if err := c.RegisterAddr(ctx(t, 10*time.Second), name, fmt.Sprintf("10.0.1.%d:80", i+1), map[string]string{"zone": zone, "n": fmt.Sprint(i)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := addrs(list(t, c, name, client.ListOptions{Attrs: map[string]string{"zone": "a"}})); !slices.Equal(got, []string{"10.0.1.1:80", "10.0.1.3:80"}) {
		t.Fatalf("zone=a: %v", got)
	}
	if got := addrs(list(t, c, name, client.ListOptions{Attrs: map[string]string{"zone": "a", "n": "2"}})); !slices.Equal(got, []string{"10.0.1.3:80"}) {
		t.Fatalf("zone=a n=2: %v", got)
	}
	if got := list(t, c, name, client.ListOptions{Attrs: map[string]string{"zone": "c"}}); len(got) != 0 {
		t.Fatalf("zone=c: %v", addrs(got))
	}
	// Oldest registration first.
	if got := addrs(list(t, c, name, client.ListOptions{})); !slices.Equal(got, []string{"10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"}) {
		t.Fatalf("order: %v", got)
	}
}

func testReRegistration(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.2.1:80", map[string]string{"v": "1"}, 0); err != nil {
		t.Fatal(err)
	}
	first := list(t, c, name, client.ListOptions{})[0]
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.2.1:80", map[string]string{"v": "2"}, 0); err != nil {
		t.Fatal(err)
	}
	l := list(t, c, name, client.ListOptions{})
	if len(l) != 1 || l[0].Attrs["v"] != "2" || l[0].CreateIndex != first.CreateIndex || l[0].Index <= first.Index {
		t.Fatalf("after re-registering: %+v (first %+v)", l, first)
	}
}

func testUnregister(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.3.1:80", nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.UnregisterAddr(ctx(t, 10*time.Second), name, "10.0.3.1:80"); err != nil {
		t.Fatal(err)
	}
	if l := list(t, c, name, client.ListOptions{}); len(l) != 0 {
		t.Fatalf("after unregister: %v", addrs(l))
	}
	if err := c.UnregisterAddr(ctx(t, 10*time.Second), name, "10.0.3.1:80"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("second unregister: %v, want ErrNotFound", err)
	}
}

// watchEvents collects a watch's events on a channel.
func watchEvents(t *testing.T, c *client.Client, name string, from uint64) (<-chan *client.Event, *client.Watch) {
	t.Helper()
	w, err := c.Watch(ctx(t, 10*time.Second), name, from)
	if err != nil {
		t.Fatalf("watch %s: %v", name, err)
	}
	ch := make(chan *client.Event, 1000)
	wctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); w.Close() })
	go func() {
		defer close(ch)
		for {
			e, err := w.Next(wctx)
			if err != nil {
				return
			}
			ch <- e
		}
	}()
	return ch, w
}

func next(t *testing.T, ch <-chan *client.Event, within time.Duration) *client.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		return e
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
		return nil
	}
}

// nextChange skips current markers (a resumed watch's "caught up").
func nextChange(t *testing.T, ch <-chan *client.Event, within time.Duration) *client.Event {
	t.Helper()
	for {
		if e := next(t, ch, within); e.Kind != client.EventCurrent {
			return e
		}
	}
}

func testTTLExpiry(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	events, _ := watchEvents(t, c, name, 0)
	if e := next(t, events, 10*time.Second); e.Kind != client.EventCurrent {
		t.Fatalf("first event %s, want current", e.Kind)
	}
	start := time.Now()
	var resp wire.WriteResponse
	if err := s.raw(t, wire.MethodRegister, &wire.RegisterRequest{Name: name, Addr: "10.0.4.1:80", TTLMillis: s.tg.TTL.Milliseconds()}, &resp); err != nil {
		t.Fatal(err)
	}
	if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventUp {
		t.Fatalf("event %s, want up", e.Kind)
	}
	e := nextChange(t, events, s.tg.TTL+s.tg.RemovalBound)
	took := time.Since(start)
	if e.Kind != client.EventDown || e.Reason != "expire" || e.Index <= resp.Index {
		t.Fatalf("event %s %+v reason %q at %d, want down (expire) after %d", e.Kind, e.Service, e.Reason, e.Index, resp.Index)
	}
	if took < s.tg.TTL {
		t.Fatalf("expired after %v, before its TTL %v", took, s.tg.TTL)
	}
	t.Logf("expired %v after registration (TTL %v)", took, s.tg.TTL)
}

func testHeartbeatKeepsAlive(t *testing.T, s *suite) {
	cl, err := client.NewWithConfig(client.Config{Servers: s.tg.Servers, TTL: s.tg.TTL, Host: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	name := svc(t)
	obs := s.client(t)
	events, _ := watchEvents(t, obs, name, 0)
	next(t, events, 10*time.Second) // current
	if err := cl.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.5.1:80", nil, s.tg.TTL); err != nil {
		t.Fatal(err)
	}
	if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventUp {
		t.Fatalf("event %s, want up", e.Kind)
	}
	// Four TTLs with heartbeats: no down.
	deadline := time.After(4 * s.tg.TTL)
	for {
		select {
		case e := <-events:
			if e.Kind == client.EventDown {
				t.Fatalf("heartbeating instance went down (%s)", e.Reason)
			}
			continue
		case <-deadline:
		}
		break
	}
	_ = cl.Close() // unregisters
	if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventDown || e.Reason != "unregister" {
		t.Fatalf("after Close: %s %q, want down (unregister)", e.Kind, e.Reason)
	}
}

func testWatchStateThenChanges(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	for i := range 3 {
		if err := c.RegisterAddr(ctx(t, 10*time.Second), name, fmt.Sprintf("10.0.6.%d:80", i+1), nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// Watch from another node, by a client that has seen the writes (a
	// consistent read), so the node may not serve it an older state.
	w := s.client(t, s.tg.Servers[len(s.tg.Servers)-1])
	list(t, w, name, client.ListOptions{Consistent: true})
	events, _ := watchEvents(t, w, name, 0)
	var state []string
	var last uint64
	for {
		e := next(t, events, 10*time.Second)
		if e.Kind == client.EventCurrent {
			last = e.Index
			break
		}
		if e.Kind != client.EventUp {
			t.Fatalf("state event %s", e.Kind)
		}
		state = append(state, e.Service.Addr)
	}
	slices.Sort(state)
	if !slices.Equal(state, []string{"10.0.6.1:80", "10.0.6.2:80", "10.0.6.3:80"}) {
		t.Fatalf("state %v", state)
	}
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.6.1:80", map[string]string{"v": "2"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.UnregisterAddr(ctx(t, 10*time.Second), name, "10.0.6.2:80"); err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.6.4:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind client.EventKind
		addr string
	}{{client.EventUpdate, "10.0.6.1:80"}, {client.EventDown, "10.0.6.2:80"}, {client.EventUp, "10.0.6.4:80"}}
	for _, wt := range want {
		e := nextChange(t, events, 10*time.Second)
		if e.Kind != wt.kind || e.Service == nil || e.Service.Addr != wt.addr || e.Index <= last {
			t.Fatalf("event %s %+v at %d, want %s %s after %d", e.Kind, e.Service, e.Index, wt.kind, wt.addr, last)
		}
		if e.Kind == client.EventDown && e.Reason != "unregister" {
			t.Fatalf("down reason %q", e.Reason)
		}
		last = e.Index
	}
}

func testWatchResumes(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.7.1:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	from := c.LastIndex()
	var wrote []uint64
	for i := 2; i <= 4; i++ {
		if err := c.RegisterAddr(ctx(t, 10*time.Second), name, fmt.Sprintf("10.0.7.%d:80", i), nil, time.Hour); err != nil {
			t.Fatal(err)
		}
		wrote = append(wrote, c.LastIndex())
	}
	// Resume on the other node, after the first write, by a client that has
	// seen the writes: exactly the three later ones, then caught up.
	w := s.client(t, s.tg.Servers[len(s.tg.Servers)-1])
	list(t, w, name, client.ListOptions{Consistent: true})
	events, _ := watchEvents(t, w, name, from)
	var got []uint64
	for range wrote {
		e := next(t, events, 10*time.Second)
		if e.Kind != client.EventUp {
			t.Fatalf("resumed watch: %s at %d, want up", e.Kind, e.Index)
		}
		got = append(got, e.Index)
	}
	if !slices.Equal(got, wrote) {
		t.Fatalf("resumed watch saw %v, want %v", got, wrote)
	}
	if e := next(t, events, 10*time.Second); e.Kind != client.EventCurrent || e.Index < wrote[len(wrote)-1] {
		t.Fatalf("after the replay: %s at %d, want current at or after %d", e.Kind, e.Index, wrote[len(wrote)-1])
	}
}

func testWatchResync(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.8.1:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	from := c.LastIndex()
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.8.2:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	s.tg.LoseHistory(t, name)
	events, _ := watchEvents(t, c, name, from)
	if e := next(t, events, 10*time.Second); e.Kind != client.EventResync {
		t.Fatalf("watch resuming before lost history: first event %s at %d, want resync", e.Kind, e.Index)
	}
	var state []string
	for {
		e := next(t, events, 10*time.Second)
		if e.Kind == client.EventCurrent {
			break
		}
		state = append(state, e.Service.Addr)
	}
	slices.Sort(state)
	if !slices.Contains(state, "10.0.8.1:80") || !slices.Contains(state, "10.0.8.2:80") {
		t.Fatalf("resynced state %v", state)
	}
}

func testServiceSet(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.9.1:80", map[string]string{"zone": "a"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	set, err := s.client(t).ServicesContext(ctx(t, 10*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	updates := make(chan *client.ServiceUpdate, 10)
	set.Subscribe(updates)
	if u := <-updates; u.Addr != "10.0.9.1:80" || !u.Online {
		t.Fatalf("first update %+v", u)
	}
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.9.2:80", map[string]string{"zone": "b"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-updates:
		if u.Addr != "10.0.9.2:80" || !u.Online {
			t.Fatalf("update %+v", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no update")
	}
	if got := set.Select(map[string]string{"zone": "b"}); len(got) != 1 || got[0].Addr != "10.0.9.2:80" {
		t.Fatalf("Select zone=b: %v", addrs(got))
	}
	if l := set.Leader(); l == nil || l.Addr != "10.0.9.1:80" {
		t.Fatalf("Leader = %+v", l)
	}
}

func testBadInput(t *testing.T, s *suite) {
	name := svc(t)
	cases := []struct {
		method string
		req    any
	}{
		{wire.MethodRegister, &wire.RegisterRequest{Name: "bad name", Addr: "10.0.0.1:80"}},
		{wire.MethodRegister, &wire.RegisterRequest{Name: name, Addr: "no-port"}},
		{wire.MethodRegister, &wire.RegisterRequest{Name: name, Addr: "10.0.0.1:80", TTLMillis: 10}},
		{wire.MethodRegister, &wire.RegisterRequest{Name: name, Addr: "10.0.0.1:80", Attrs: map[string]string{"": "x"}}},
		{wire.MethodUnregister, &wire.UnregisterRequest{Name: name, Addr: "10.0.0.1:0"}},
		{wire.MethodList, &wire.ListRequest{Name: ""}},
	}
	for _, tc := range cases {
		if err := s.raw(t, tc.method, tc.req, nil); !errors.Is(err, codes.ErrInvalidArgument) {
			t.Errorf("%s %+v: %v, want ErrInvalidArgument", tc.method, tc.req, err)
		}
	}
	if l := list(t, s.client(t), name, client.ListOptions{}); len(l) != 0 {
		t.Fatalf("bad input changed the state: %v", addrs(l))
	}
}

func testIdempotentRetry(t *testing.T, s *suite) {
	name := svc(t)
	req := &wire.RegisterRequest{Name: name, Addr: "10.0.10.1:80", TTLMillis: time.Hour.Milliseconds(), RequestID: "retry-" + name}
	var first, second wire.WriteResponse
	if err := s.raw(t, wire.MethodRegister, req, &first); err != nil {
		t.Fatal(err)
	}
	if err := s.raw(t, wire.MethodRegister, req, &second); err != nil {
		t.Fatal(err)
	}
	if first.Index == 0 || first.Index != second.Index {
		t.Fatalf("retried write answered %d then %d, want the first index twice", first.Index, second.Index)
	}
	l := list(t, s.client(t), name, client.ListOptions{Consistent: true})
	if len(l) != 1 || l[0].Index != first.Index {
		t.Fatalf("after a retried write: %+v, want one instance at %d", l, first.Index)
	}
}

func testConsistentRead(t *testing.T, s *suite) {
	w := s.client(t, s.tg.Servers[0])
	r := s.client(t, s.tg.Servers[len(s.tg.Servers)-1])
	name := svc(t)
	for i := range 5 {
		addr := fmt.Sprintf("10.0.11.%d:80", i+1)
		if err := w.RegisterAddr(ctx(t, 10*time.Second), name, addr, nil, time.Hour); err != nil {
			t.Fatal(err)
		}
		// A consistent read through another node, by another client, sees it.
		if l := list(t, r, name, client.ListOptions{Consistent: true}); len(l) != i+1 {
			t.Fatalf("consistent read after write %d: %v", i+1, addrs(l))
		}
	}
}
