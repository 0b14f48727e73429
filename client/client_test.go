package client_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// ---------------------------------------------------------------------------
// Helpers

// cancelledCtx returns a context that is already cancelled.
func cancelledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// closedAddr returns a loopback address nothing listens on: connecting to it
// is refused at once.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

// newClient returns a client closed at the end of the test.
func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = time.Second
	}
	cl, err := client.NewWithConfig(cfg)
	if err != nil {
		t.Fatalf("NewWithConfig(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func nodeAddrs(nodes ...*tc.Node) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.Addr)
	}
	return out
}

func serviceAddrs(list []*client.Service) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, s.Addr)
	}
	return out
}

func onlineAddrs(s *client.ServiceSet) []string {
	return serviceAddrs(slices.Collect(s.Online()))
}

func offlineAddrs(s *client.ServiceSet) []string {
	return serviceAddrs(slices.Collect(s.Offline()))
}

// instances lists name's instances through cl, failing the test on error.
func instances(t *testing.T, cl *client.Client, name string) []*client.Service {
	t.Helper()
	list, _, err := cl.Instances(tc.Context(t, 10*time.Second), name, client.ListOptions{})
	if err != nil {
		t.Fatalf("Instances(%s): %v", name, err)
	}
	return list
}

// findService returns the instance with addr, or nil.
func findService(list []*client.Service, addr string) *client.Service {
	for _, s := range list {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// streamEvents reads w in a goroutine and hands its events over on the
// returned channel, which is closed when the watch ends. The watch is closed
// at the end of the test.
func streamEvents(t *testing.T, w *client.Watch) <-chan *client.Event {
	t.Helper()
	ch := make(chan *client.Event, 4096)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for {
			e, err := w.Next(context.Background())
			if err != nil {
				return
			}
			select {
			case ch <- e:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		w.Close()
		<-done
	})
	return ch
}

// watchService opens a watch of name from index 0 and reads its initial state
// up to the current marker, which it returns.
func watchService(t *testing.T, cl *client.Client, name string) (<-chan *client.Event, *client.Event) {
	t.Helper()
	w, err := cl.Watch(tc.Context(t, 10*time.Second), name, 0)
	if err != nil {
		t.Fatalf("Watch(%s, 0): %v", name, err)
	}
	ch := streamEvents(t, w)
	for {
		e := nextEvent(t, ch, 10*time.Second)
		if e.Kind == client.EventCurrent {
			return ch, e
		}
	}
}

func nextEvent(t *testing.T, ch <-chan *client.Event, timeout time.Duration) *client.Event {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		return e
	case <-timer.C:
		t.Fatalf("no watch event within %v", timeout)
	}
	return nil
}

// expectEvent takes the next event and checks its kind and address.
func expectEvent(t *testing.T, ch <-chan *client.Event, timeout time.Duration, kind client.EventKind, addr string) *client.Event {
	t.Helper()
	e := nextEvent(t, ch, timeout)
	for e.Kind == client.EventCurrent && kind != client.EventCurrent {
		e = nextEvent(t, ch, timeout) // a watch that resumed elsewhere says it caught up
	}
	if e.Kind != kind || e.Service == nil || e.Service.Addr != addr {
		t.Fatalf("got event %s %+v (index %d), want %s %s", e.Kind, e.Service, e.Index, kind, addr)
	}
	return e
}

// noEventFor fails if any event arrives within d. It watches for an absence
// over a period, so it waits the whole period by design.
func noEventFor(t *testing.T, ch <-chan *client.Event, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("watch ended")
			}
			if e.Kind == client.EventCurrent {
				continue // a resumed watch's caught-up marker is not a change
			}
			t.Fatalf("unexpected event %s %+v (index %d, reason %q)", e.Kind, e.Service, e.Index, e.Reason)
		case <-timer.C:
			return
		}
	}
}

func recvUpdate(t *testing.T, ch <-chan *client.ServiceUpdate, timeout time.Duration) *client.ServiceUpdate {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case u := <-ch:
		return u
	case <-timer.C:
		t.Fatalf("no service update within %v", timeout)
	}
	return nil
}

func expectNoUpdate(t *testing.T, ch <-chan *client.ServiceUpdate) {
	t.Helper()
	select {
	case u, ok := <-ch:
		if !ok {
			t.Fatal("the updates channel was closed, want it open and empty")
		}
		t.Fatalf("unexpected update %+v", u)
	default:
	}
}

func register(t *testing.T, cl *client.Client, name, addr string, attrs map[string]string, ttl time.Duration) {
	t.Helper()
	if err := cl.RegisterAddr(tc.Context(t, 10*time.Second), name, addr, attrs, ttl); err != nil {
		t.Fatalf("RegisterAddr(%s, %s): %v", name, addr, err)
	}
}

func unregister(t *testing.T, cl *client.Client, name, addr string) {
	t.Helper()
	if err := cl.UnregisterAddr(tc.Context(t, 10*time.Second), name, addr); err != nil {
		t.Fatalf("UnregisterAddr(%s, %s): %v", name, addr, err)
	}
}

func services(t *testing.T, cl *client.Client, name string) *client.ServiceSet {
	t.Helper()
	set, err := cl.Services(name)
	if err != nil {
		t.Fatalf("Services(%s): %v", name, err)
	}
	t.Cleanup(set.Close)
	return set
}

// ---------------------------------------------------------------------------
// Construction (no cluster)

func TestClient_NewExplicitServers(t *testing.T) {
	t.Setenv("DISCOVERD", "10.9.9.9:1111") // explicit servers win over the environment
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{"10.0.0.1:1111", "10.0.0.2:2222"}, []string{"10.0.0.1:1111", "10.0.0.2:2222"}},
		{[]string{"10.0.0.1"}, []string{"10.0.0.1:1111"}},
		{[]string{"node-a", "node-b:7"}, []string{"node-a:1111", "node-b:7"}},
		{[]string{"[::1]:1111"}, []string{"[::1]:1111"}},
		{[]string{" 10.0.0.1:1 , 10.0.0.2 ", ""}, []string{"10.0.0.1:1", "10.0.0.2:1111"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, "|"), func(t *testing.T) {
			cl, err := client.New(tt.in...)
			if err != nil {
				t.Fatalf("New(%q): %v", tt.in, err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			if got := cl.Servers(); !slices.Equal(got, tt.want) {
				t.Fatalf("Servers() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClient_NewServersFromEnv(t *testing.T) {
	tests := []struct {
		env  string
		want []string
	}{
		{"10.0.0.1:1111", []string{"10.0.0.1:1111"}},
		{"10.0.0.1:1111,10.0.0.2:1112", []string{"10.0.0.1:1111", "10.0.0.2:1112"}},
		{"  10.0.0.1:1111 ,  , 10.0.0.2:1112,, ", []string{"10.0.0.1:1111", "10.0.0.2:1112"}},
		{",10.0.0.3", []string{"10.0.0.3:1111"}},
		{"host-a, host-b:9", []string{"host-a:1111", "host-b:9"}},
		{"   ", []string{"127.0.0.1:1111"}}, // blank is unset
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv("DISCOVERD", tt.env)
			cl, err := client.New()
			if err != nil {
				t.Fatalf("New() with DISCOVERD=%q: %v", tt.env, err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			if got := cl.Servers(); !slices.Equal(got, tt.want) {
				t.Fatalf("Servers() with DISCOVERD=%q = %q, want %q", tt.env, got, tt.want)
			}
			cl2, err := client.NewWithConfig(client.Config{})
			if err != nil {
				t.Fatalf("NewWithConfig(zero) with DISCOVERD=%q: %v", tt.env, err)
			}
			t.Cleanup(func() { _ = cl2.Close() })
			if got := cl2.Servers(); !slices.Equal(got, tt.want) {
				t.Fatalf("NewWithConfig Servers() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClient_NewDefaultServerWhenEnvUnset(t *testing.T) {
	t.Setenv("DISCOVERD", "") // restored at cleanup
	if err := os.Unsetenv("DISCOVERD"); err != nil {
		t.Fatal(err)
	}
	if got := client.ServersFromEnv(); !slices.Equal(got, []string{"127.0.0.1:1111"}) {
		t.Fatalf("ServersFromEnv() = %q", got)
	}
	cl, err := client.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	if got := cl.Servers(); !slices.Equal(got, []string{"127.0.0.1:1111"}) {
		t.Fatalf("Servers() = %q, want the default 127.0.0.1:1111", got)
	}
}

func TestClient_NewRejectsBadServers(t *testing.T) {
	tests := []struct {
		name    string
		servers []string
		env     string
	}{
		{"too many colons", []string{"a:b:c"}, ""},
		{"empty port", []string{"10.0.0.1:"}, ""},
		{"unclosed bracket", []string{"[::1"}, ""},
		{"one bad of two", []string{"10.0.0.1:1111", "x:y:z"}, ""},
		{"only separators", []string{" , ,"}, ""},
		{"only empty", []string{""}, ""},
		{"env only separators", nil, " , , "},
		{"env bad entry", nil, "10.0.0.1:1111, a:b:c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DISCOVERD", tt.env)
			cl, err := client.NewWithConfig(client.Config{Servers: tt.servers})
			if err == nil {
				_ = cl.Close()
				t.Fatalf("NewWithConfig(servers %q, DISCOVERD=%q) accepted servers %q", tt.servers, tt.env, cl.Servers())
			}
			if !errors.Is(err, client.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
		})
	}
}

func TestClient_NewTTLRange(t *testing.T) {
	tests := []struct {
		ttl time.Duration
		ok  bool
	}{
		{0, true}, // the default
		{time.Second, true},
		{24 * time.Hour, true},
		{90 * time.Second, true},
		{999 * time.Millisecond, false},
		{time.Millisecond, false},
		{24*time.Hour + time.Millisecond, false},
		{48 * time.Hour, false},
		{-time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			cl, err := client.NewWithConfig(client.Config{Servers: []string{"127.0.0.1:1"}, TTL: tt.ttl})
			if tt.ok {
				if err != nil {
					t.Fatalf("TTL %v rejected: %v", tt.ttl, err)
				}
				_ = cl.Close()
				return
			}
			if err == nil {
				_ = cl.Close()
				t.Fatalf("TTL %v accepted", tt.ttl)
			}
			if !errors.Is(err, client.ErrInvalidArgument) {
				t.Fatalf("TTL %v: error %v does not wrap ErrInvalidArgument", tt.ttl, err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Client-side validation and unreachable servers (no cluster)

func TestClient_ValidationBeforeNetwork(t *testing.T) {
	// The only server refuses connections: any call that reached the network
	// would retry until its timeout and fail with ErrUnavailable.
	cl := newClient(t, client.Config{Servers: []string{closedAddr(t)}, RequestTimeout: 5 * time.Second})
	bg := context.Background()
	manyAttrs := map[string]string{}
	for i := range 65 {
		manyAttrs["k"+strconv.Itoa(i)] = "v"
	}
	bigAttrs := map[string]string{}
	for i := range 20 {
		bigAttrs["k"+strconv.Itoa(i)] = strings.Repeat("x", 1000) // 20 KB in all
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Register bad name", func() error { return cl.Register("bad name", 80, nil) }},
		{"Register name starting with dash", func() error { return cl.Register("-cache", 80, nil) }},
		{"Register empty name", func() error { return cl.Register("", 80, nil) }},
		{"Register long name", func() error { return cl.Register(strings.Repeat("a", 129), 80, nil) }},
		{"Register port 0", func() error { return cl.Register("cache", 0, nil) }},
		{"Register port 65536", func() error { return cl.Register("cache", 65536, nil) }},
		{"Register port -1", func() error { return cl.Register("cache", -1, nil) }},
		{"Register empty attr key", func() error { return cl.Register("cache", 80, map[string]string{"": "x"}) }},
		{"RegisterContext bad name", func() error { return cl.RegisterContext(bg, "a/b", 80, nil) }},
		{"RegisterWithHost empty host", func() error { return cl.RegisterWithHost("cache", "", 80, nil) }},
		{"RegisterWithHost space in host", func() error { return cl.RegisterWithHost("cache", "a b", 80, nil) }},
		{"RegisterWithHostContext bad port", func() error { return cl.RegisterWithHostContext(bg, "cache", "10.0.0.1", 70000, nil) }},
		{"RegisterAddr no port", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1", nil, 0) }},
		{"RegisterAddr leading zero port", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1:080", nil, 0) }},
		{"RegisterAddr too many attrs", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", manyAttrs, 0) }},
		{"RegisterAddr long attr key", func() error {
			return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", map[string]string{strings.Repeat("k", 129): "v"}, 0)
		}},
		{"RegisterAddr long attr value", func() error {
			return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", map[string]string{"k": strings.Repeat("v", 1025)}, 0)
		}},
		{"RegisterAddr attrs too large", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", bigAttrs, 0) }},
		{"RegisterAddr ttl 999ms", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", nil, 999*time.Millisecond) }},
		{"RegisterAddr ttl over 24h", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", nil, 25*time.Hour) }},
		{"RegisterAddr negative ttl", func() error { return cl.RegisterAddr(bg, "cache", "10.0.0.1:80", nil, -time.Second) }},
		{"Unregister bad name", func() error { return cl.Unregister("bad name", 80) }},
		{"UnregisterContext bad port", func() error { return cl.UnregisterContext(bg, "cache", 0) }},
		{"UnregisterAddr bad addr", func() error { return cl.UnregisterAddr(bg, "cache", "nohost") }},
		{"UnregisterAddr bad name", func() error { return cl.UnregisterAddr(bg, "", "10.0.0.1:80") }},
		{"Instances bad name", func() error {
			_, _, err := cl.Instances(bg, "bad name", client.ListOptions{})
			return err
		}},
		{"Instances bad filter", func() error {
			_, _, err := cl.Instances(bg, "cache", client.ListOptions{Attrs: map[string]string{"": "x"}})
			return err
		}},
		{"Watch bad name", func() error {
			w, err := cl.Watch(bg, "bad name", 0)
			if w != nil {
				w.Close()
			}
			return err
		}},
		{"Services bad name", func() error {
			s, err := cl.Services("bad name")
			if s != nil {
				s.Close()
			}
			return err
		}},
		{"ServicesContext empty name", func() error {
			s, err := cl.ServicesContext(bg, "")
			if s != nil {
				s.Close()
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := tt.call()
			elapsed := time.Since(start)
			if !errors.Is(err, client.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("err = %v also wraps ErrUnavailable: the call reached the network", err)
			}
			if elapsed > time.Second {
				t.Fatalf("took %v: the call was retried over the network before validating", elapsed)
			}
		})
	}
	if got := cl.LastIndex(); got != 0 {
		t.Fatalf("LastIndex() = %d after only rejected calls", got)
	}
}

func TestClient_UnavailableWithinRequestTimeout(t *testing.T) {
	const timeout = 800 * time.Millisecond
	cl := newClient(t, client.Config{
		Servers:        []string{closedAddr(t), closedAddr(t)},
		RequestTimeout: timeout,
		Host:           "10.0.0.1",
	})
	ctxCall := func(f func(ctx context.Context) error) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			return f(ctx)
		}
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Register", func() error { return cl.Register("cache", 9876, nil) }},
		{"RegisterWithHost", func() error { return cl.RegisterWithHost("cache", "10.0.0.5", 9876, nil) }},
		{"Unregister", func() error { return cl.Unregister("cache", 9876) }},
		{"Services", func() error {
			s, err := cl.Services("cache")
			if s != nil {
				s.Close()
			}
			return err
		}},
		{"RegisterAddr", ctxCall(func(ctx context.Context) error {
			return cl.RegisterAddr(ctx, "cache", "10.0.0.1:1", nil, 0)
		})},
		{"Instances", ctxCall(func(ctx context.Context) error {
			_, _, err := cl.Instances(ctx, "cache", client.ListOptions{})
			return err
		})},
		{"Status", ctxCall(func(ctx context.Context) error {
			_, err := cl.Status(ctx)
			return err
		})},
		{"Watch", ctxCall(func(ctx context.Context) error {
			w, err := cl.Watch(ctx, "cache", 0)
			if w != nil {
				w.Close()
			}
			return err
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := tt.call()
			elapsed := time.Since(start)
			if !errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			// Retries stop at the timeout; allow slack for a loaded machine.
			if elapsed > timeout+time.Second {
				t.Fatalf("gave up after %v, want about %v", elapsed, timeout)
			}
		})
	}
}

func TestClient_ClosedClientReturnsErrClosed(t *testing.T) {
	cl, err := client.NewWithConfig(client.Config{Servers: []string{closedAddr(t)}, Host: "10.0.0.1", RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := cl.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := tc.Context(t, 5*time.Second)
	checks := map[string]error{}
	checks["Register"] = cl.Register("cache", 80, nil)
	checks["RegisterAddr"] = cl.RegisterAddr(ctx, "cache", "10.0.0.1:80", nil, 0)
	checks["Unregister"] = cl.Unregister("cache", 80)
	_, _, checks["Instances"] = cl.Instances(ctx, "cache", client.ListOptions{})
	_, checks["Status"] = cl.Status(ctx)
	_, checks["Services"] = cl.Services("cache")
	_, checks["Watch"] = cl.Watch(ctx, "cache", 0)
	for what, err := range checks {
		if !errors.Is(err, client.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", what, err)
		}
	}
}

// ---------------------------------------------------------------------------
// The seed API against a cluster

func TestClient_RegisterSeedAPI(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	servers := nodeAddrs(c.Nodes...)
	reader := c.Client()

	t.Run("ConfigHostRegisterReregisterUnregister", func(t *testing.T) {
		cl := newClient(t, client.Config{Servers: servers, Host: "10.9.8.7"})
		set := services(t, cl, "cache")
		updates := make(chan *client.ServiceUpdate, 16)
		set.Subscribe(updates)

		if err := cl.Register("cache", 9876, map[string]string{"id": "cache1"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		const addr = "10.9.8.7:9876"
		list := instances(t, cl, "cache")
		if len(list) != 1 || list[0].Addr != addr || list[0].Name != "cache" {
			t.Fatalf("Instances = %v, want [%s]", serviceAddrs(list), addr)
		}
		first := list[0]
		if !maps.Equal(first.Attrs, map[string]string{"id": "cache1"}) || first.TTL != client.DefaultTTL {
			t.Fatalf("registered %+v, want attrs id=cache1 and the default TTL", first)
		}
		u := recvUpdate(t, updates, 10*time.Second)
		if !u.Online || u.Addr != addr || u.Attrs["id"] != "cache1" || u.Created != first.CreateIndex {
			t.Fatalf("set update %+v", u)
		}

		// Registering again changes the attributes and keeps CreateIndex.
		if err := cl.Register("cache", 9876, map[string]string{"id": "cache1", "v": "2"}); err != nil {
			t.Fatalf("Register again: %v", err)
		}
		list = instances(t, cl, "cache")
		if len(list) != 1 || !maps.Equal(list[0].Attrs, map[string]string{"id": "cache1", "v": "2"}) {
			t.Fatalf("after re-register Instances = %+v", list)
		}
		if list[0].CreateIndex != first.CreateIndex || list[0].Index <= first.Index {
			t.Fatalf("re-register: CreateIndex %d→%d, Index %d→%d", first.CreateIndex, list[0].CreateIndex, first.Index, list[0].Index)
		}
		u = recvUpdate(t, updates, 10*time.Second)
		if !u.Online || u.Addr != addr || u.Attrs["v"] != "2" || u.Created != first.CreateIndex {
			t.Fatalf("set update after re-register %+v", u)
		}
		if got := set.Select(map[string]string{"v": "2"}); len(got) != 1 || got[0].Addr != addr {
			t.Fatalf("Select(v=2) = %v", serviceAddrs(got))
		}
		if l := set.Leader(); l == nil || l.Attrs["v"] != "2" {
			t.Fatalf("Leader() = %+v", l)
		}
		// Reads through another client see the same thing once it has the index.
		c.WaitApplied(cl.LastIndex())
		if got := instances(t, reader, "cache"); len(got) != 1 || got[0].Attrs["v"] != "2" {
			t.Fatalf("other client reads %+v", got)
		}

		if err := cl.Unregister("cache", 9876); err != nil {
			t.Fatalf("Unregister: %v", err)
		}
		if list = instances(t, cl, "cache"); len(list) != 0 {
			t.Fatalf("after Unregister Instances = %v", serviceAddrs(list))
		}
		u = recvUpdate(t, updates, 10*time.Second)
		if u.Online || u.Addr != addr || u.Reason != "unregister" || u.Attrs["v"] != "2" {
			t.Fatalf("set update after Unregister %+v", u)
		}
		if got := offlineAddrs(set); !slices.Equal(got, []string{addr}) {
			t.Fatalf("Offline() = %v", got)
		}
		if err := cl.Unregister("cache", 9876); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("second Unregister: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("HostFromEnv", func(t *testing.T) {
		t.Setenv("DISCOVERD_HOST", "10.1.2.3")
		cl := newClient(t, client.Config{Servers: servers})
		if err := cl.Register("cache-env", 9876, nil); err != nil {
			t.Fatal(err)
		}
		if got := serviceAddrs(instances(t, cl, "cache-env")); !slices.Equal(got, []string{"10.1.2.3:9876"}) {
			t.Fatalf("registered %v, want 10.1.2.3:9876 from $DISCOVERD_HOST", got)
		}
		// Config.Host wins over the environment.
		cl2 := newClient(t, client.Config{Servers: servers, Host: "10.4.4.4"})
		if err := cl2.Register("cache-env", 9876, nil); err != nil {
			t.Fatal(err)
		}
		if got := serviceAddrs(instances(t, cl2, "cache-env")); !slices.Equal(got, []string{"10.1.2.3:9876", "10.4.4.4:9876"}) {
			t.Fatalf("registered %v", got)
		}
		if err := cl.Unregister("cache-env", 9876); err != nil {
			t.Fatal(err)
		}
		if got := serviceAddrs(instances(t, cl, "cache-env")); !slices.Equal(got, []string{"10.4.4.4:9876"}) {
			t.Fatalf("after Unregister %v", got)
		}
	})

	t.Run("DefaultHostDetection", func(t *testing.T) {
		t.Setenv("DISCOVERD_HOST", "")
		cl := newClient(t, client.Config{Servers: servers})
		if err := cl.Register("cache-default", 9876, nil); err != nil {
			t.Fatal(err)
		}
		if got := serviceAddrs(instances(t, cl, "cache-default")); !slices.Equal(got, []string{"127.0.0.1:9876"}) {
			t.Fatalf("registered %v, want 127.0.0.1:9876 (the local address towards a loopback server)", got)
		}
		if err := cl.Unregister("cache-default", 9876); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ServersFromEnv", func(t *testing.T) {
		t.Setenv("DISCOVERD", " "+servers[0]+" , ,"+servers[1]+" ,"+servers[2]+",")
		t.Setenv("DISCOVERD_HOST", "10.2.2.2")
		cl, err := client.New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		if got := cl.Servers(); !slices.Equal(got, servers) {
			t.Fatalf("Servers() = %q, want %q", got, servers)
		}
		if err := cl.Register("cache-envservers", 1, nil); err != nil {
			t.Fatal(err)
		}
		if got := serviceAddrs(instances(t, cl, "cache-envservers")); !slices.Equal(got, []string{"10.2.2.2:1"}) {
			t.Fatalf("registered %v", got)
		}
	})

	t.Run("RegisterWithHost", func(t *testing.T) {
		cl := newClient(t, client.Config{Servers: servers, Host: "10.7.7.7"})
		if err := cl.RegisterWithHost("cache-wh", "10.0.0.5", 9876, map[string]string{"id": "cache2"}); err != nil {
			t.Fatal(err)
		}
		if err := cl.RegisterWithHostContext(tc.Context(t, 10*time.Second), "cache-wh", "cache-host.example", 9877, nil); err != nil {
			t.Fatal(err)
		}
		list := instances(t, cl, "cache-wh")
		if got := serviceAddrs(list); !slices.Equal(got, []string{"10.0.0.5:9876", "cache-host.example:9877"}) {
			t.Fatalf("registered %v", got)
		}
		if list[0].Attrs["id"] != "cache2" {
			t.Fatalf("attrs %v", list[0].Attrs)
		}
		if err := cl.UnregisterAddr(tc.Context(t, 10*time.Second), "cache-wh", "10.0.0.5:9876"); err != nil {
			t.Fatal(err)
		}
		if got := serviceAddrs(instances(t, cl, "cache-wh")); !slices.Equal(got, []string{"cache-host.example:9877"}) {
			t.Fatalf("after UnregisterAddr %v", got)
		}
	})

	t.Run("ContextVariants", func(t *testing.T) {
		cl := newClient(t, client.Config{Servers: servers, Host: "10.3.3.3"})
		ctx := tc.Context(t, 20*time.Second)
		set, err := cl.ServicesContext(ctx, "cache-ctx")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(set.Close)
		if err := cl.RegisterContext(ctx, "cache-ctx", 1, map[string]string{"a": "1"}); err != nil {
			t.Fatal(err)
		}
		if err := cl.RegisterWithHostContext(ctx, "cache-ctx", "10.3.3.4", 1, nil); err != nil {
			t.Fatal(err)
		}
		tc.WaitFor(t, 10*time.Second, "the set to see both instances", func() bool {
			return slices.Equal(onlineAddrs(set), []string{"10.3.3.3:1", "10.3.3.4:1"})
		})
		list, idx, err := cl.Instances(ctx, "cache-ctx", client.ListOptions{Attrs: map[string]string{"a": "1"}, Consistent: true})
		if err != nil || !slices.Equal(serviceAddrs(list), []string{"10.3.3.3:1"}) || idx < cl.LastIndex() {
			t.Fatalf("filtered consistent Instances = %v, idx %d (LastIndex %d), %v", serviceAddrs(list), idx, cl.LastIndex(), err)
		}
		if err := cl.UnregisterContext(ctx, "cache-ctx", 1); err != nil {
			t.Fatal(err)
		}
		tc.WaitFor(t, 10*time.Second, "the set to see the unregistration", func() bool {
			return slices.Equal(onlineAddrs(set), []string{"10.3.3.4:1"})
		})
	})

	// The client still sends these requests (see
	// TestClient_CancelledContextSendsNothing); only the error is checked
	// here. A local read (Instances) is left out: its answer can come back
	// before the cancelled context is noticed, so its outcome is not fixed.
	t.Run("AlreadyCancelledContext", func(t *testing.T) {
		cl := newClient(t, client.Config{Servers: servers, Host: "10.5.5.5"})
		// Have an open connection, so a cancelled call has every chance to go through.
		if _, err := cl.Status(tc.Context(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		ctx := cancelledCtx()
		calls := map[string]func() error{
			"RegisterContext":         func() error { return cl.RegisterContext(ctx, "cache-cancel", 1, nil) },
			"RegisterWithHostContext": func() error { return cl.RegisterWithHostContext(ctx, "cache-cancel", "10.5.5.6", 1, nil) },
			"RegisterAddr":            func() error { return cl.RegisterAddr(ctx, "cache-cancel", "10.5.5.7:1", nil, 0) },
			"UnregisterContext":       func() error { return cl.UnregisterContext(ctx, "cache-cancel", 2) },
			"UnregisterAddr":          func() error { return cl.UnregisterAddr(ctx, "cache-cancel", "10.5.5.8:1") },
			"Status": func() error {
				_, err := cl.Status(ctx)
				return err
			},
		}
		for what, call := range calls {
			start := time.Now()
			err := call()
			if err == nil {
				t.Errorf("%s with a cancelled context succeeded", what)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("%s with a cancelled context took %v", what, d)
			}
		}
	})

	t.Run("UnregisterUnknownIsNotFound", func(t *testing.T) {
		cl := newClient(t, client.Config{Servers: servers, Host: "10.6.6.6"})
		err := cl.UnregisterAddr(tc.Context(t, 10*time.Second), "cache", "10.200.0.1:1")
		if !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("UnregisterAddr of an unknown instance: err = %v, want ErrNotFound", err)
		}
		if errors.Is(err, client.ErrInvalidArgument) || errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("err = %v wraps the wrong sentinels too", err)
		}
		if err := cl.Unregister("never-registered", 4242); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("Unregister of an unknown instance: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("Status", func(t *testing.T) {
		leader := c.Leader()
		st, err := reader.Status(tc.Context(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader != leader.ID {
			t.Fatalf("Status().Leader = %q, want %q", st.Leader, leader.ID)
		}
		if len(st.Nodes) != 3 {
			t.Fatalf("Status() has %d nodes: %+v", len(st.Nodes), st.Nodes)
		}
		var ids, leaders []string
		for _, n := range st.Nodes {
			ids = append(ids, n.ID)
			if n.State == "Leader" {
				leaders = append(leaders, n.ID)
			}
			if n.Error != "" || !n.Voter {
				t.Errorf("node %+v", n)
			}
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"n1", "n2", "n3"}) || !slices.Equal(leaders, []string{leader.ID}) {
			t.Fatalf("nodes %v, leaders %v", ids, leaders)
		}
	})
}

// ---------------------------------------------------------------------------
// Failover

func TestClient_Failover(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	dead := c.Followers()[0]
	c.Kill(dead.Index)
	live := c.Running()
	servers := append([]string{closedAddr(t), dead.Addr}, nodeAddrs(live...)...)
	// A client starts at a random server of its list: several clients cover
	// several starting points, most of them unreachable.
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			cl := newClient(t, client.Config{Servers: servers})
			name := fmt.Sprintf("failover-%d", i)
			w, err := cl.Watch(tc.Context(t, 10*time.Second), name, 0)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			events := streamEvents(t, w)
			if e := nextEvent(t, events, 10*time.Second); e.Kind != client.EventCurrent {
				t.Fatalf("first event of an empty service %s, want current", e.Kind)
			}
			register(t, cl, name, "10.0.0.1:80", nil, time.Hour)
			if got := serviceAddrs(instances(t, cl, name)); !slices.Equal(got, []string{"10.0.0.1:80"}) {
				t.Fatalf("Instances = %v", got)
			}
			expectEvent(t, events, 10*time.Second, client.EventUp, "10.0.0.1:80")
			set := services(t, cl, name)
			if got := onlineAddrs(set); !slices.Equal(got, []string{"10.0.0.1:80"}) {
				t.Fatalf("Online() = %v", got)
			}
			if _, err := cl.Status(tc.Context(t, 10*time.Second)); err != nil {
				t.Fatalf("Status: %v", err)
			}
		})
	}

	t.Run("OnlyDeadServers", func(t *testing.T) {
		cl := newClient(t, client.Config{Servers: []string{dead.Addr, closedAddr(t)}, RequestTimeout: 700 * time.Millisecond})
		start := time.Now()
		err := cl.RegisterWithHost("failover", "10.0.0.2", 80, nil)
		if !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 700*time.Millisecond+time.Second {
			t.Fatalf("gave up after %v", d)
		}
	})
}

// ---------------------------------------------------------------------------
// Heartbeats

func TestClient_Heartbeat(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	servers := nodeAddrs(c.Nodes...)
	observer := c.Client()

	t.Run("KeepsAliveThenCloseUnregisters", func(t *testing.T) {
		const name, addr = "hb-alive", "10.0.0.1:80"
		events, _ := watchService(t, observer, name)
		cl := newClient(t, client.Config{Servers: servers, TTL: time.Second})
		register(t, cl, name, addr, map[string]string{"id": "a"}, 0) // 0: the client's TTL
		up := expectEvent(t, events, 10*time.Second, client.EventUp, addr)
		if up.Service.TTL != time.Second {
			t.Fatalf("registered with TTL %v, want the client's 1s", up.Service.TTL)
		}
		// Four TTLs: without heartbeats it would have expired three times over.
		noEventFor(t, events, 4*time.Second)
		if got := serviceAddrs(instances(t, observer, name)); !slices.Equal(got, []string{addr}) {
			t.Fatalf("after 4 TTLs Instances = %v", got)
		}
		if err := cl.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		down := expectEvent(t, events, 5*time.Second, client.EventDown, addr)
		if down.Reason != "unregister" {
			t.Fatalf("down reason %q, want unregister (Close unregisters; it did not wait for expiry)", down.Reason)
		}
	})

	t.Run("ReregistersAfterRemoval", func(t *testing.T) {
		const name, addr = "hb-removed", "10.0.0.2:80"
		events, _ := watchService(t, observer, name)
		cl := newClient(t, client.Config{Servers: servers, TTL: time.Second})
		attrs := map[string]string{"id": "b"}
		register(t, cl, name, addr, attrs, 0)
		attrs["id"] = "changed after Register" // the client keeps its own copy
		first := expectEvent(t, events, 10*time.Second, client.EventUp, addr)
		// Removed behind the client's back.
		unregister(t, observer, name, addr)
		if down := expectEvent(t, events, 10*time.Second, client.EventDown, addr); down.Reason != "unregister" {
			t.Fatalf("down reason %q", down.Reason)
		}
		// The next heartbeat hears "not found" and registers again.
		again := expectEvent(t, events, 10*time.Second, client.EventUp, addr)
		if again.Service.Attrs["id"] != "b" || again.Service.TTL != time.Second {
			t.Fatalf("registered again with %+v", again.Service)
		}
		if again.Service.CreateIndex <= first.Service.CreateIndex {
			t.Fatalf("CreateIndex %d after re-registration, first %d", again.Service.CreateIndex, first.Service.CreateIndex)
		}
		list := instances(t, observer, name)
		if len(list) != 1 || list[0].Addr != addr || list[0].Attrs["id"] != "b" {
			t.Fatalf("Instances = %+v", list)
		}
		// And it stays alive.
		noEventFor(t, events, 2*time.Second)
	})

	t.Run("ReregistersAfterExpiryWhileCutOff", func(t *testing.T) {
		const name, addr = "hb-expired", "10.0.0.3:80"
		f := c.Followers()[0]
		events, _ := watchService(t, observer, name)
		cl := newClient(t, client.Config{Servers: []string{f.Addr}, TTL: time.Second, DialTimeout: 500 * time.Millisecond})
		register(t, cl, name, addr, map[string]string{"id": "c"}, 0)
		expectEvent(t, events, 10*time.Second, client.EventUp, addr)
		c.Kill(f.Index) // the client's only server: heartbeats stop reaching the cluster
		if down := expectEvent(t, events, 10*time.Second, client.EventDown, addr); down.Reason != "expire" {
			t.Fatalf("down reason %q, want expire", down.Reason)
		}
		c.Restart(f.Index)
		again := expectEvent(t, events, 20*time.Second, client.EventUp, addr)
		if again.Service.Attrs["id"] != "c" {
			t.Fatalf("registered again with %+v", again.Service)
		}
	})
}

// ---------------------------------------------------------------------------
// ServiceSet

func TestClient_ServiceSet(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	w := c.Client()

	t.Run("InitialStateOldestFirst", func(t *testing.T) {
		const name = "set-initial"
		addrs := []string{"10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"}
		for _, a := range addrs {
			register(t, w, name, a, map[string]string{"addr": a}, time.Hour)
		}
		// Registering the oldest again makes it the most recent change, but
		// not the most recent registration.
		register(t, w, name, addrs[0], map[string]string{"addr": addrs[0], "v": "2"}, time.Hour)
		last := w.LastIndex()
		set := services(t, w, name) // same client: the set is at least as new as its writes
		if got := onlineAddrs(set); !slices.Equal(got, addrs) {
			t.Fatalf("Online() right after Services = %v, want %v (oldest CreateIndex first)", got, addrs)
		}
		online := slices.Collect(set.Online())
		for i := 1; i < len(online); i++ {
			if online[i-1].CreateIndex >= online[i].CreateIndex {
				t.Fatalf("CreateIndex not increasing: %d then %d", online[i-1].CreateIndex, online[i].CreateIndex)
			}
		}
		if online[0].Attrs["v"] != "2" {
			t.Fatalf("oldest instance attrs %v", online[0].Attrs)
		}
		if set.Index() < last {
			t.Fatalf("Index() = %d, want >= %d", set.Index(), last)
		}
		if l := set.Leader(); l == nil || l.Addr != addrs[0] {
			t.Fatalf("Leader() = %+v, want %s", l, addrs[0])
		}
		if set.Name() != name || set.Err() != nil {
			t.Fatalf("Name() = %q, Err() = %v", set.Name(), set.Err())
		}
		if got := offlineAddrs(set); len(got) != 0 {
			t.Fatalf("Offline() = %v", got)
		}
	})

	t.Run("FollowsChanges", func(t *testing.T) {
		const name = "set-follow"
		set := services(t, w, name)
		if set.Leader() != nil || len(onlineAddrs(set)) != 0 {
			t.Fatal("empty service has instances")
		}
		idx := set.Index()
		register(t, w, name, "10.0.2.1:80", map[string]string{"zone": "a"}, time.Hour)
		register(t, w, name, "10.0.2.2:80", map[string]string{"zone": "b"}, time.Hour)
		register(t, w, name, "10.0.2.3:80", map[string]string{"zone": "a"}, time.Hour)
		tc.WaitFor(t, 10*time.Second, "three instances", func() bool { return len(onlineAddrs(set)) == 3 })
		if set.Index() <= idx {
			t.Fatalf("Index() %d did not increase from %d", set.Index(), idx)
		}
		idx = set.Index()
		if got := serviceAddrs(set.Select(map[string]string{"zone": "a"})); !slices.Equal(got, []string{"10.0.2.1:80", "10.0.2.3:80"}) {
			t.Fatalf("Select(zone=a) = %v", got)
		}
		if got := serviceAddrs(set.Select(nil)); len(got) != 3 {
			t.Fatalf("Select(nil) = %v", got)
		}
		if got := set.Select(map[string]string{"zone": "c"}); len(got) != 0 {
			t.Fatalf("Select(zone=c) = %v", serviceAddrs(got))
		}
		oldLeader := set.Leader()
		if oldLeader == nil || oldLeader.Addr != "10.0.2.1:80" {
			t.Fatalf("Leader() = %+v", oldLeader)
		}
		// An update moves an instance between selections.
		register(t, w, name, "10.0.2.2:80", map[string]string{"zone": "a"}, time.Hour)
		tc.WaitFor(t, 10*time.Second, "the update", func() bool {
			return len(set.Select(map[string]string{"zone": "a"})) == 3
		})
		if set.Index() <= idx {
			t.Fatalf("Index() %d did not increase from %d", set.Index(), idx)
		}
		idx = set.Index()
		// The leader leaves: the next oldest leads, with a larger fencing token.
		unregister(t, w, name, "10.0.2.1:80")
		tc.WaitFor(t, 10*time.Second, "the unregistration", func() bool { return len(onlineAddrs(set)) == 2 })
		if got := onlineAddrs(set); !slices.Equal(got, []string{"10.0.2.2:80", "10.0.2.3:80"}) {
			t.Fatalf("Online() = %v", got)
		}
		if got := offlineAddrs(set); !slices.Equal(got, []string{"10.0.2.1:80"}) {
			t.Fatalf("Offline() = %v", got)
		}
		nl := set.Leader()
		if nl == nil || nl.Addr != "10.0.2.2:80" || nl.CreateIndex <= oldLeader.CreateIndex {
			t.Fatalf("new Leader() = %+v (old CreateIndex %d)", nl, oldLeader.CreateIndex)
		}
		if set.Index() <= idx {
			t.Fatalf("Index() %d did not increase from %d", set.Index(), idx)
		}
	})

	t.Run("SubscribeCurrentThenChanges", func(t *testing.T) {
		const name = "set-subscribe"
		register(t, w, name, "10.0.3.1:80", map[string]string{"n": "1"}, time.Hour)
		register(t, w, name, "10.0.3.2:80", map[string]string{"n": "2"}, time.Hour)
		set := services(t, w, name)
		ch := make(chan *client.ServiceUpdate, 16)
		set.Subscribe(ch)
		for _, a := range []string{"10.0.3.1:80", "10.0.3.2:80"} {
			u := recvUpdate(t, ch, time.Second)
			if !u.Online || u.Addr != a || u.Name != name || u.Missed != 0 || u.Created == 0 {
				t.Fatalf("initial update %+v, want %s online", u, a)
			}
		}
		expectNoUpdate(t, ch)
		register(t, w, name, "10.0.3.3:80", map[string]string{"n": "3"}, time.Hour)
		u := recvUpdate(t, ch, 10*time.Second)
		if !u.Online || u.Addr != "10.0.3.3:80" || u.Attrs["n"] != "3" || u.Index == 0 || u.Created != u.Index {
			t.Fatalf("update for a new instance %+v", u)
		}
		prev := u.Index
		register(t, w, name, "10.0.3.1:80", map[string]string{"n": "1b"}, time.Hour)
		u = recvUpdate(t, ch, 10*time.Second)
		if !u.Online || u.Addr != "10.0.3.1:80" || u.Attrs["n"] != "1b" || u.Index <= prev || u.Created >= u.Index {
			t.Fatalf("update for a re-registration %+v", u)
		}
		prev = u.Index
		unregister(t, w, name, "10.0.3.2:80")
		u = recvUpdate(t, ch, 10*time.Second)
		if u.Online || u.Addr != "10.0.3.2:80" || u.Reason != "unregister" || u.Attrs["n"] != "2" || u.Index <= prev {
			t.Fatalf("update for an unregistration %+v", u)
		}
		expectNoUpdate(t, ch)
	})

	t.Run("FullChannelNeverBlocksAndCountsMissed", func(t *testing.T) {
		const name = "set-missed"
		for i := 1; i <= 3; i++ {
			register(t, w, name, fmt.Sprintf("10.0.4.%d:80", i), nil, time.Hour)
		}
		set := services(t, w, name)
		ch := make(chan *client.ServiceUpdate, 1)
		subscribed := make(chan struct{})
		go func() { set.Subscribe(ch); close(subscribed) }()
		select {
		case <-subscribed:
		case <-time.After(5 * time.Second):
			t.Fatal("Subscribe blocked on a full channel")
		}
		// Two more changes while the channel is full: both dropped.
		register(t, w, name, "10.0.4.4:80", nil, time.Hour)
		register(t, w, name, "10.0.4.5:80", nil, time.Hour)
		tc.WaitFor(t, 10*time.Second, "the set to take both changes", func() bool { return len(onlineAddrs(set)) == 5 })
		if u := recvUpdate(t, ch, time.Second); u.Addr != "10.0.4.1:80" || u.Missed != 0 {
			t.Fatalf("first update %+v", u)
		}
		expectNoUpdate(t, ch)
		register(t, w, name, "10.0.4.6:80", nil, time.Hour)
		u := recvUpdate(t, ch, 10*time.Second)
		// Dropped: two of the initial three, then two changes.
		if u.Addr != "10.0.4.6:80" || u.Missed != 4 {
			t.Fatalf("update after drops %+v, want 10.0.4.6:80 with Missed 4", u)
		}
		register(t, w, name, "10.0.4.7:80", nil, time.Hour)
		if u := recvUpdate(t, ch, 10*time.Second); u.Addr != "10.0.4.7:80" || u.Missed != 0 {
			t.Fatalf("update after catching up %+v, want Missed 0", u)
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		const name = "set-unsubscribe"
		set := services(t, w, name)
		kept, dropped := make(chan *client.ServiceUpdate, 8), make(chan *client.ServiceUpdate, 8)
		set.Subscribe(kept)
		set.Subscribe(dropped)
		register(t, w, name, "10.0.5.1:80", nil, time.Hour)
		recvUpdate(t, kept, 10*time.Second)
		recvUpdate(t, dropped, 10*time.Second)
		set.Unsubscribe(dropped)
		set.Unsubscribe(make(chan *client.ServiceUpdate)) // never subscribed: no-op
		register(t, w, name, "10.0.5.2:80", nil, time.Hour)
		if u := recvUpdate(t, kept, 10*time.Second); u.Addr != "10.0.5.2:80" {
			t.Fatalf("kept subscriber got %+v", u)
		}
		// The set publishes under the lock that also updates Online, so once the
		// kept subscriber has it, the dropped one would have had it too.
		expectNoUpdate(t, dropped)
	})

	t.Run("CloseStopsFollowing", func(t *testing.T) {
		const name = "set-close"
		register(t, w, name, "10.0.6.1:80", nil, time.Hour)
		closed := services(t, w, name)
		open := services(t, w, name)
		ch := make(chan *client.ServiceUpdate, 8)
		closed.Subscribe(ch)
		recvUpdate(t, ch, time.Second) // the current instance
		idx := closed.Index()
		closed.Close()
		register(t, w, name, "10.0.6.2:80", nil, time.Hour)
		unregister(t, w, name, "10.0.6.1:80")
		tc.WaitFor(t, 10*time.Second, "the open set to follow", func() bool {
			return slices.Equal(onlineAddrs(open), []string{"10.0.6.2:80"})
		})
		if got := onlineAddrs(closed); !slices.Equal(got, []string{"10.0.6.1:80"}) {
			t.Fatalf("closed set Online() = %v, want it frozen", got)
		}
		if closed.Index() != idx || len(offlineAddrs(closed)) != 0 {
			t.Fatalf("closed set moved: Index %d→%d, Offline %v", idx, closed.Index(), offlineAddrs(closed))
		}
		// Close closed the channel, after the last update it sent.
		if u, ok := <-ch; ok {
			t.Fatalf("update %+v after Close, want the channel closed", u)
		}
		closed.Close() // twice is fine
	})

	t.Run("ClientCloseClosesSets", func(t *testing.T) {
		const name = "set-client-close"
		cl := c.Client()
		set, err := cl.Services(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Close(); err != nil {
			t.Fatal(err)
		}
		idx := set.Index()
		register(t, w, name, "10.0.7.1:80", nil, time.Hour)
		open := services(t, w, name)
		if got := onlineAddrs(open); len(got) != 1 {
			t.Fatalf("open set %v", got)
		}
		if got := onlineAddrs(set); len(got) != 0 || set.Index() != idx {
			t.Fatalf("set of a closed client follows changes: %v", got)
		}
		set.Close() // after the client's Close: must not hang
	})
}

func TestClient_ServiceSetSurvivesNodeLoss(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	const name = "set-survive"
	w := c.Client()
	for _, a := range []string{"10.0.8.1:80", "10.0.8.2:80", "10.0.8.3:80"} {
		register(t, w, name, a, map[string]string{"v": "1"}, time.Hour)
	}
	c.WaitApplied(w.LastIndex())
	r := c.Client() // the only client with a watch
	set := services(t, r, name)
	ch := make(chan *client.ServiceUpdate, 64)
	set.Subscribe(ch)
	for range 3 {
		recvUpdate(t, ch, time.Second)
	}
	// Find the node serving the set's watch, and kill it.
	var watched *tc.Node
	tc.WaitFor(t, 10*time.Second, "one node serving the watch", func() bool {
		watched = nil
		for _, n := range c.Running() {
			if n.Srv.FSM().Stats().Watchers > 0 {
				if watched != nil {
					return false
				}
				watched = n
			}
		}
		return watched != nil
	})
	t.Logf("killing %s, which serves the watch", watched.ID)
	c.Kill(watched.Index)

	// Changes made afterwards.
	register(t, w, name, "10.0.8.4:80", map[string]string{"v": "1"}, time.Hour)
	register(t, w, name, "10.0.8.2:80", map[string]string{"v": "2"}, time.Hour)
	unregister(t, w, name, "10.0.8.1:80")

	tc.WaitFor(t, 30*time.Second, "the set to follow changes made after the loss", func() bool {
		return slices.Equal(onlineAddrs(set), []string{"10.0.8.2:80", "10.0.8.3:80", "10.0.8.4:80"}) &&
			len(set.Select(map[string]string{"v": "2"})) == 1
	})
	if err := set.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
	if got := offlineAddrs(set); !slices.Equal(got, []string{"10.0.8.1:80"}) {
		t.Fatalf("Offline() = %v, want only the unregistered 10.0.8.1:80", got)
	}
	if l := set.Leader(); l == nil || l.Addr != "10.0.8.2:80" {
		t.Fatalf("Leader() = %+v", l)
	}
	var moved bool
	for _, n := range c.Running() {
		moved = moved || n.Srv.FSM().Stats().Watchers > 0
	}
	if !moved {
		t.Fatal("no running node serves the watch")
	}
	// Subscribers saw no instance go offline but 10.0.8.1.
	for drained := false; !drained; {
		select {
		case u := <-ch:
			if !u.Online && u.Addr != "10.0.8.1:80" {
				t.Fatalf("spurious offline update %+v", u)
			}
		default:
			drained = true
		}
	}
}

// ---------------------------------------------------------------------------
// Watch

func TestClient_Watch(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	cl := c.Client()

	t.Run("FromZeroUpThenCurrent", func(t *testing.T) {
		const name = "watch-zero"
		register(t, cl, name, "10.0.9.1:80", map[string]string{"n": "1"}, time.Hour)
		register(t, cl, name, "10.0.9.2:80", nil, time.Hour)
		last := cl.LastIndex()
		w, err := cl.Watch(tc.Context(t, 10*time.Second), name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if w.LastIndex() != 0 {
			t.Fatalf("LastIndex() before any event = %d", w.LastIndex())
		}
		events := streamEvents(t, w)
		e1 := expectEvent(t, events, 10*time.Second, client.EventUp, "10.0.9.1:80")
		if e1.Service.Attrs["n"] != "1" || e1.Service.Name != name || e1.Service.TTL != time.Hour {
			t.Fatalf("first up %+v", e1.Service)
		}
		expectEvent(t, events, 10*time.Second, client.EventUp, "10.0.9.2:80")
		cur := nextEvent(t, events, 10*time.Second)
		if cur.Kind != client.EventCurrent || cur.Service != nil || cur.Index < last {
			t.Fatalf("after the state: %s at %d (last write %d), want current", cur.Kind, cur.Index, last)
		}
		register(t, cl, name, "10.0.9.3:80", nil, time.Hour)
		e3 := expectEvent(t, events, 10*time.Second, client.EventUp, "10.0.9.3:80")
		if e3.Index <= cur.Index || e3.Service.CreateIndex != e3.Index {
			t.Fatalf("change at %d (create %d) after current %d", e3.Index, e3.Service.CreateIndex, cur.Index)
		}
		register(t, cl, name, "10.0.9.1:80", map[string]string{"n": "1b"}, time.Hour)
		up := expectEvent(t, events, 10*time.Second, client.EventUpdate, "10.0.9.1:80")
		if up.Service.Attrs["n"] != "1b" || up.Service.CreateIndex != e1.Service.CreateIndex {
			t.Fatalf("update %+v", up.Service)
		}
	})

	t.Run("ResumeAfterIndex", func(t *testing.T) {
		const name = "watch-resume"
		register(t, cl, name, "10.0.10.1:80", nil, time.Hour)
		from := cl.LastIndex()
		register(t, cl, name, "10.0.10.2:80", nil, time.Hour)
		register(t, cl, name, "10.0.10.1:80", map[string]string{"v": "2"}, time.Hour)
		unregister(t, cl, name, "10.0.10.2:80")
		last := cl.LastIndex()

		w, err := cl.Watch(tc.Context(t, 10*time.Second), name, from)
		if err != nil {
			t.Fatal(err)
		}
		if w.LastIndex() != from {
			t.Fatalf("LastIndex() = %d, want the resume point %d", w.LastIndex(), from)
		}
		ctx := tc.Context(t, 10*time.Second)
		want := []struct {
			kind client.EventKind
			addr string
		}{{client.EventUp, "10.0.10.2:80"}, {client.EventUpdate, "10.0.10.1:80"}, {client.EventDown, "10.0.10.2:80"}}
		prev := from
		for _, wt := range want {
			e, err := w.Next(ctx)
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if e.Kind != wt.kind || e.Service == nil || e.Service.Addr != wt.addr || e.Index <= prev {
				t.Fatalf("event %s %+v at %d, want %s %s after %d", e.Kind, e.Service, e.Index, wt.kind, wt.addr, prev)
			}
			if w.LastIndex() != e.Index {
				t.Fatalf("LastIndex() = %d after event at %d", w.LastIndex(), e.Index)
			}
			prev = e.Index
		}
		if prev != last {
			t.Fatalf("last event at %d, last write at %d", prev, last)
		}
		// Then the marker that the resumed watch has caught up, and nothing
		// else: no state block, no older event.
		if e, err := w.Next(ctx); err != nil || e.Kind != client.EventCurrent || e.Index < last || w.LastIndex() != e.Index {
			t.Fatalf("after the changes: %+v, %v; want a current marker at or after %d", e, err, last)
		}
		short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if e, err := w.Next(short); err == nil {
			t.Fatalf("unexpected event %s %+v at %d", e.Kind, e.Service, e.Index)
		} else if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next with nothing to read: %v", err)
		}
		w.Close()
	})

	t.Run("CloseUnblocksNext", func(t *testing.T) {
		w, err := cl.Watch(tc.Context(t, 10*time.Second), "watch-close", 0)
		if err != nil {
			t.Fatal(err)
		}
		if e, err := w.Next(tc.Context(t, 10*time.Second)); err != nil || e.Kind != client.EventCurrent {
			t.Fatalf("Next = %+v, %v", e, err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := w.Next(context.Background()) // nothing will come
			errc <- err
		}()
		w.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, client.ErrClosed) {
				t.Fatalf("blocked Next returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not unblock Next")
		}
		if _, err := w.Next(context.Background()); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
		w.Close()
	})

	t.Run("ClientCloseUnblocksNext", func(t *testing.T) {
		other := c.Client()
		w, err := other.Watch(tc.Context(t, 10*time.Second), "watch-client-close", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Next(tc.Context(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := w.Next(context.Background())
			errc <- err
		}()
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, client.ErrClosed) {
				t.Fatalf("blocked Next returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("client Close did not unblock Next")
		}
	})
}

// ---------------------------------------------------------------------------
// Indices and read-your-writes

func TestClient_LastIndexAndReadYourWrites(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	fs := c.Followers()

	t.Run("OneFollower", func(t *testing.T) {
		const name = "ryw"
		// Writes are forwarded; reads are served by this follower. Closed at the
		// end of this subtest, before the next one kills the follower.
		cl := newClient(t, client.Config{Servers: []string{fs[0].Addr}})
		if cl.LastIndex() != 0 {
			t.Fatalf("LastIndex() of a new client = %d", cl.LastIndex())
		}
		ctx := tc.Context(t, 30*time.Second)
		for i := range 20 {
			addr := fmt.Sprintf("10.0.11.%d:80", i+1)
			prev := cl.LastIndex()
			if err := cl.RegisterAddr(ctx, name, addr, map[string]string{"i": strconv.Itoa(i)}, time.Hour); err != nil {
				t.Fatal(err)
			}
			if cl.LastIndex() <= prev {
				t.Fatalf("LastIndex() %d did not increase from %d with a write", cl.LastIndex(), prev)
			}
			list, idx, err := cl.Instances(ctx, name, client.ListOptions{Attrs: map[string]string{"i": strconv.Itoa(i)}})
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Addr != addr || idx < cl.LastIndex() {
				t.Fatalf("read right after write %d: %v at index %d (LastIndex %d)", i, serviceAddrs(list), idx, cl.LastIndex())
			}
		}
		prev := cl.LastIndex()
		if err := cl.UnregisterAddr(ctx, name, "10.0.11.1:80"); err != nil {
			t.Fatal(err)
		}
		if cl.LastIndex() <= prev {
			t.Fatalf("LastIndex() did not increase with an unregistration")
		}
		list, _, err := cl.Instances(ctx, name, client.ListOptions{})
		if err != nil || len(list) != 19 || findService(list, "10.0.11.1:80") != nil {
			t.Fatalf("read right after unregister: %v, %v", serviceAddrs(list), err)
		}
	})

	t.Run("OtherFollowerAfterLoss", func(t *testing.T) {
		const name = "ryw-other"
		cl := c.Client(fs[0], fs[1])
		ctx := tc.Context(t, 30*time.Second)
		register(t, cl, name, "10.0.12.1:80", nil, time.Hour)
		c.Kill(fs[0].Index) // reads must now come from the other follower
		for i := range 5 {
			addr := fmt.Sprintf("10.0.12.%d:80", i+2)
			register(t, cl, name, addr, nil, time.Hour)
			list, idx, err := cl.Instances(ctx, name, client.ListOptions{})
			if err != nil || findService(list, addr) == nil || idx < cl.LastIndex() {
				t.Fatalf("read after write of %s: %v at %d (LastIndex %d), %v", addr, serviceAddrs(list), idx, cl.LastIndex(), err)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Regressions: each of these failed before its fix.

// An already-cancelled context must stop a call before it sends anything. The
// client used to send the request anyway: the write was applied while the
// caller was told it failed, so the instance lived on unheartbeated (until its
// TTL) and was not unregistered by Close; and Watch opened a stream.
func TestClient_CancelledContextSendsNothing(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	cl := c.Client()
	observer := c.Client()
	if _, err := cl.Status(tc.Context(t, 10*time.Second)); err != nil { // an open connection
		t.Fatal(err)
	}
	const name, addr = "bug-cancelled", "10.0.13.1:80"

	t.Run("RegisterAddr", func(t *testing.T) {
		if err := cl.RegisterAddr(cancelledCtx(), name, addr, nil, 0); err == nil {
			t.Fatal("RegisterAddr with a cancelled context succeeded")
		}
		register(t, cl, name, "10.0.13.2:80", nil, time.Hour) // a later write, as a marker
		// A bounded negative check: poll for a second that it never shows up.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); <-tick.C {
			list, _, err := observer.Instances(tc.Context(t, 5*time.Second), name, client.ListOptions{Consistent: true})
			if err != nil {
				t.Fatal(err)
			}
			if s := findService(list, addr); s != nil {
				t.Fatalf("RegisterAddr with an already-cancelled context returned an error, yet %s was registered (CreateIndex %d)", addr, s.CreateIndex)
			}
		}
	})

	t.Run("Watch", func(t *testing.T) {
		w, err := cl.Watch(cancelledCtx(), name, 0)
		if err == nil {
			w.Close()
			t.Fatal("Watch with an already-cancelled context opened a stream and returned no error")
		}
	})
}

// Errors from a call whose context ended must let the caller tell that
// apart: errors.Is(err, context.Canceled) / context.DeadlineExceeded. The
// client used to format ctx.Err() with %v, so the error only wrapped
// ErrUnavailable or ErrTimeout.
func TestClient_ContextErrorIsWrapped(t *testing.T) {
	cl := newClient(t, client.Config{Servers: []string{closedAddr(t)}, Host: "10.0.0.1"})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for _, tt := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelledCtx(), context.Canceled}, {"deadline", expired, context.DeadlineExceeded}} {
		t.Run(tt.name, func(t *testing.T) {
			errs := map[string]error{}
			errs["RegisterAddr"] = cl.RegisterAddr(tt.ctx, "cache", "10.0.0.1:80", nil, 0)
			_, _, errs["Instances"] = cl.Instances(tt.ctx, "cache", client.ListOptions{})
			_, errs["Status"] = cl.Status(tt.ctx)
			w, err := cl.Watch(tt.ctx, "cache", 0)
			if w != nil {
				w.Close()
			}
			errs["Watch"] = err
			for what, err := range errs {
				if !errors.Is(err, tt.want) {
					t.Errorf("%s: err = %v, want it to wrap %v", what, err, tt.want)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Slow watch readers

// A Watch that is not being read must not stall the rest of the client: all
// of a client's calls and streams share one connection. (Before 9deb8f9 the
// connection's read loop waited for a stream's full 64-frame buffer, and
// every other call on the connection timed out.) The watch that fell behind
// resumes gap-free when it is read again.
func TestClient_UnreadWatchDoesNotBlockOtherCalls(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	const name = "slow-reader"
	// The watch is served by the leader, which applies each write before
	// answering it; a second watch there, read by the test, paces the writes
	// so that each change leaves the node in a frame of its own.
	leader := c.Leader()
	cl := newClient(t, client.Config{Servers: []string{leader.Addr}})
	writer := c.Client()
	w, err := cl.Watch(tc.Context(t, 10*time.Second), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	pacer := newClient(t, client.Config{Servers: []string{leader.Addr}})
	paced, _ := watchService(t, pacer, name)
	// The application reads the first watch later (say it is busy);
	// meanwhile the service changes more than 64 times.
	const n = 120
	for i := range n {
		addr := fmt.Sprintf("10.1.0.%d:80", i+1)
		register(t, writer, name, addr, nil, time.Hour)
		expectEvent(t, paced, 10*time.Second, client.EventUp, addr)
	}
	rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if _, _, err := cl.Instances(rctx, "slow-reader-other", client.ListOptions{}); err != nil {
		t.Fatalf("Instances on the same client failed after %v while one of its watches was not being read: %v", time.Since(start), err)
	}
	// Read the slow watch now: the state, then every change in order.
	ctx := tc.Context(t, 20*time.Second)
	if e, err := w.Next(ctx); err != nil || e.Kind != client.EventCurrent {
		t.Fatalf("first event %+v, %v; want current", e, err)
	}
	prev := uint64(0)
	for i := range n {
		e, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d changes: %v", i, err)
		}
		want := fmt.Sprintf("10.1.0.%d:80", i+1)
		if e.Kind != client.EventUp || e.Service.Addr != want || e.Index <= prev {
			t.Fatalf("change %d: %s %+v at %d, want up %s after %d", i, e.Kind, e.Service, e.Index, want, prev)
		}
		prev = e.Index
	}
}

// ---------------------------------------------------------------------------
// Regressions (continued)

// The servers given to a client used to be checked for shape only: a port
// that can never be dialled was accepted, and every call then failed with
// ErrUnavailable after the whole request timeout instead of New failing with
// ErrInvalidArgument.
func TestClient_ServerPortIsValidated(t *testing.T) {
	for _, s := range []string{"10.0.0.1:99999", "10.0.0.1:65536", "10.0.0.1:0", "10.0.0.1:-1"} {
		t.Run(s, func(t *testing.T) {
			cl, err := client.New(s)
			if err == nil {
				_ = cl.Close()
				t.Fatalf("New(%q) accepted an impossible port", s)
			}
			if !errors.Is(err, client.ErrInvalidArgument) {
				t.Fatalf("New(%q): err = %v, want ErrInvalidArgument", s, err)
			}
		})
	}
}

// Register and Unregister used to find this host's address (a UDP "dial" of
// the first server, which resolves its name) before validating the name and
// port: with a server name that does not resolve, Register("bad name", ...)
// failed with a lookup error rather than ErrInvalidArgument.
func TestClient_ValidationBeforeHostLookup(t *testing.T) {
	const host = "discoverd-client-test.invalid"
	cl := newClient(t, client.Config{Servers: []string{host + ":1111"}, RequestTimeout: 2 * time.Second})
	if err := cl.Register("bad name", 80, nil); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("Register(bad name): err = %v, want ErrInvalidArgument", err)
	}
	if err := cl.Unregister("cache", 0); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("Unregister(port 0): err = %v, want ErrInvalidArgument", err)
	}
}

// TestClient_RedialsAfterTheServerClosedAnIdleConnection: a node closes a
// connection with nothing in flight after its idle timeout; the client's
// next call dials again and succeeds, with no error for the caller.
func TestClient_RedialsAfterTheServerClosedAnIdleConnection(t *testing.T) {
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		cfg.RPC.IdleTimeout = 300 * time.Millisecond
	}})
	leader := c.Leader()
	cl := c.Client(leader)
	ctx := tc.Context(t, 20*time.Second)
	if err := cl.RegisterAddr(ctx, "idle", "10.0.0.1:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := cl.UnregisterAddr(ctx, "idle", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	tc.WaitFor(t, 10*time.Second, "the leader to close its idle client connections", func() bool {
		return leader.Srv.RPC().Conns() == 0
	})
	for i := range 3 {
		if _, _, err := cl.Instances(ctx, "idle", client.ListOptions{}); err != nil {
			t.Fatalf("call %d after the idle close: %v", i, err)
		}
	}
}
