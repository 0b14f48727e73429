package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// These tests put the client in front of fake servers that speak just enough
// of the protocol to answer, fail with a chosen code, or say nothing at all
// (a paused node: its kernel still accepts connections and requests), and
// check how the client moves between servers.

// fakeRequest is one request a fakeServer received: its method, request
// id (writes), token (the header's) and body.
type fakeRequest struct {
	method, requestID, token string
	body                     any
}

// fakeServer stands in for a node. With code set it answers every request
// with that error; with silent it answers nothing.
type fakeServer struct {
	addr   string
	silent bool
	ln     net.Listener

	mu      sync.Mutex
	code    codes.Code // may change during a test
	reqs    []fakeRequest
	conns   []net.Conn
	stopped bool
}

// newFakeServer listens on loopback until the end of the test.
func newFakeServer(t *testing.T, silent bool, code codes.Code) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: ln.Addr().String(), silent: silent, code: code, ln: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			if f.stopped {
				f.mu.Unlock()
				_ = nc.Close()
				return
			}
			f.conns = append(f.conns, nc)
			f.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		f.stop()
		wg.Wait()
	})
	return f
}

// stop closes the listener (later dials are refused) and every connection.
func (f *fakeServer) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	_ = f.ln.Close()
	for _, nc := range f.conns {
		_ = nc.Close()
	}
}

// serve reads the protocol byte, then answers frames until the connection ends.
func (f *fakeServer) serve(nc net.Conn) {
	br := bufio.NewReader(nc)
	if _, err := br.ReadByte(); err != nil {
		return
	}
	for {
		fr, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
		if err != nil {
			return
		}
		hdr := &wire.Header{Seq: fr.Header.Seq}
		req := fakeRequest{method: fr.Header.Method, token: fr.Header.Token}
		var body any
		if b, ok := fakeACL(fr, &req); ok {
			body = b
		} else {
			switch fr.Header.Method {
			case wire.MethodRegister:
				var r wire.RegisterRequest
				_ = fr.Decode(&r)
				req.requestID, body = r.RequestID, &wire.WriteResponse{Index: 7}
			case wire.MethodUnregister:
				var r wire.UnregisterRequest
				_ = fr.Decode(&r)
				req.requestID, body = r.RequestID, &wire.WriteResponse{Index: 7}
			case wire.MethodList:
				body = &wire.ListResponse{Index: 7}
			case wire.MethodStatus:
				body = &wire.StatusResponse{}
			case wire.MethodWatch:
				var r wire.WatchRequest
				_ = fr.Decode(&r)
				hdr.More = true
				body = &wire.WatchEvents{Events: []wire.Event{{Kind: wire.KindCurrent, Index: 7, Name: r.Name}}}
			case wire.MethodHeartbeat:
				var r wire.HeartbeatRequest
				_ = fr.Decode(&r)
				body = &wire.HeartbeatResponse{Results: make([]wire.Result, len(r.Instances))}
			case wire.MethodSnapshotSave:
				hdr.Code, hdr.Error = string(codes.CodeInternal), "fake server keeps no state to back up"
			default:
				continue // Cancel: nothing to answer
			}
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		code := f.code
		f.mu.Unlock()
		switch {
		case f.silent:
			continue
		case code != codes.CodeOK:
			hdr.More, hdr.Code, hdr.Error, body = false, string(code), "fake server says "+string(code), nil
		}
		if err := wire.WriteFrame(nc, hdr, body, 0); err != nil {
			return
		}
	}
}

// requests returns what the server has received so far.
func (f *fakeServer) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// newTestClient returns a client of servers whose first dial goes to
// servers[0], closed at the end of the test.
func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host = "10.0.0.1"
	}
	c, err := NewWithConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.next = 0
	c.mu.Unlock()
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// A server that takes a request and never answers (a paused node) costs a
// call one attempt: after AttemptTimeout the client drops it and the call
// goes on with the next server — writes with the same request id — and the
// silent server is dialled last from then on.
func TestClient_SilentServerIsLeftAfterOneAttempt(t *testing.T) {
	const attempt = 300 * time.Millisecond
	tests := []struct {
		name   string
		method string
		write  bool
		call   func(ctx context.Context, c *Client) error
	}{
		{"Register", wire.MethodRegister, true, func(ctx context.Context, c *Client) error {
			return c.RegisterAddr(ctx, "svc", "10.0.0.1:80", nil, time.Hour)
		}},
		{"Unregister", wire.MethodUnregister, true, func(ctx context.Context, c *Client) error {
			return c.UnregisterAddr(ctx, "svc", "10.0.0.1:80")
		}},
		{"List", wire.MethodList, false, func(ctx context.Context, c *Client) error {
			_, _, err := c.Instances(ctx, "svc", ListOptions{})
			return err
		}},
		{"Status", wire.MethodStatus, false, func(ctx context.Context, c *Client) error {
			_, err := c.Status(ctx)
			return err
		}},
		{"Watch", wire.MethodWatch, false, func(ctx context.Context, c *Client) error {
			w, err := c.Watch(ctx, "svc", 0)
			if err != nil {
				return err
			}
			defer w.Close()
			e, err := w.Next(ctx)
			if err == nil && e.Kind != EventCurrent {
				err = fmt.Errorf("first event %s, want current", e.Kind)
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			silent, live := newFakeServer(t, true, ""), newFakeServer(t, false, "")
			// A watch leaves a silent server after StreamIdleTimeout (every
			// frame, its first included, gets that long); calls after
			// AttemptTimeout. Both are the attempt here.
			c := newTestClient(t, Config{Servers: []string{silent.addr, live.addr}, AttemptTimeout: attempt,
				StreamIdleTimeout: attempt, RequestTimeout: 10 * time.Second})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := tt.call(ctx, c); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			took := time.Since(start)
			if took < attempt {
				t.Fatalf("answered after %v, before the silent server's attempt ran out: it was not asked first", took)
			}
			if took > attempt+2*time.Second {
				t.Fatalf("answered after %v, want about one attempt (%v)", took, attempt)
			}
			asked, answered := silent.requests(), live.requests()
			if len(asked) != 1 || asked[0].method != tt.method || len(answered) != 1 || answered[0].method != tt.method {
				t.Fatalf("silent server got %+v, live server got %+v; want one %s each", asked, answered, tt.method)
			}
			if tt.write && (asked[0].requestID == "" || asked[0].requestID != answered[0].requestID) {
				t.Fatalf("request ids %q then %q: a retried write must carry the same id", asked[0].requestID, answered[0].requestID)
			}
			if got := c.CurrentServer(); got != live.addr {
				t.Fatalf("CurrentServer() = %q, want the live %s", got, live.addr)
			}
			// The next dial goes to the live server first, although the
			// round-robin points at the silent one again.
			c.mu.Lock()
			conn := c.conn
			c.mu.Unlock()
			c.dropConn(conn)
			start = time.Now()
			if _, err := c.Status(ctx); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took >= attempt {
				t.Fatalf("second call took %v: the silent server was dialled again first", took)
			}
			if n := len(silent.requests()); n != 1 {
				t.Fatalf("the silent server got %d requests, want still 1", n)
			}
		})
	}
}

// A timed-out attempt of a write is reported as an unknown outcome, of a read
// as a timeout, when no other server answers before the deadline.
func TestClient_SilentServersUntilTheDeadline(t *testing.T) {
	silent := newFakeServer(t, true, "")
	c := newTestClient(t, Config{Servers: []string{silent.addr}, AttemptTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	err := c.RegisterAddr(ctx, "svc", "10.0.0.1:80", nil, time.Hour)
	if !errors.Is(err, ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register: err = %v, want ErrUnknownOutcome and the deadline", err)
	}
	reqs := silent.requests()
	if len(reqs) < 2 {
		t.Fatalf("the silent server got %d requests in 700 ms of 200 ms attempts, want it retried", len(reqs))
	}
	for _, r := range reqs {
		if r.requestID != reqs[0].requestID {
			t.Fatalf("request ids %+v: every attempt of one write must carry the same id", reqs)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, _, err := c.Instances(ctx, "svc", ListOptions{}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("List: err = %v, want ErrTimeout", err)
	}
}

// A write whose attempt was sent and never answered, and whose servers then
// all refuse connections, fails fast — as an unknown outcome (it may have
// been applied), not as "not applied".
func TestClient_WriteAfterAnUnansweredAttemptIsUnknown(t *testing.T) {
	silent := newFakeServer(t, true, "")
	c := newTestClient(t, Config{Servers: []string{silent.addr}, RequestTimeout: 10 * time.Second})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(5 * time.Second); len(silent.requests()) == 0 && time.Now().Before(deadline); <-tick.C {
		}
		silent.stop() // the request arrived: the server goes away
	}()
	start := time.Now()
	err := c.RegisterWithHost("svc", "10.0.0.2", 80, nil)
	took := time.Since(start)
	<-stopped
	if !errors.Is(err, ErrUnknownOutcome) || codes.NotApplied(err) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v (code %s), want ErrUnknownOutcome first, then ErrUnavailable", err, codes.Of(err))
	}
	if want := "no discoverd server reachable at " + silent.addr + " (connection refused)"; !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %q, want it to end with %q", err, want)
	}
	if took > 3*time.Second {
		t.Fatalf("failed after %v, want fast once nothing listens", took)
	}
}

// Errors that say "ask another node" move the call on at once, and the
// call succeeds on the next server; during an election (every server says
// so) it keeps retrying until its deadline, even if some servers refuse
// connections.
func TestClient_RetryableCodesMoveOnAndRetryUntilTheDeadline(t *testing.T) {
	for _, code := range []codes.Code{codes.CodeNoLeader, codes.CodeNotLeader, codes.CodeStaleNode, codes.CodeNotReady, codes.CodeShuttingDown} {
		t.Run(string(code), func(t *testing.T) {
			t.Parallel()
			failing, live := newFakeServer(t, false, code), newFakeServer(t, false, "")
			c := newTestClient(t, Config{Servers: []string{failing.addr, live.addr}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, _, err := c.Instances(ctx, "svc", ListOptions{}); err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(failing.requests()) != 1 || c.CurrentServer() != live.addr {
				t.Fatalf("failing server got %d requests, client on %q; want 1, on the live %s", len(failing.requests()), c.CurrentServer(), live.addr)
			}

			const deadline = time.Second
			alone := newTestClient(t, Config{Servers: []string{refusedAddr(t), failing.addr}, RequestTimeout: deadline})
			start := time.Now()
			err := alone.RegisterWithHost("svc", "10.0.0.2", 80, nil)
			took := time.Since(start)
			if !errors.Is(err, codes.Sentinel(code)) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want %s and the deadline", err, code)
			}
			if took < deadline-100*time.Millisecond {
				t.Fatalf("gave up after %v, before the %v deadline", took, deadline)
			}
		})
	}
}

// How a failed dial is described, and which failures are refusals.
func TestClient_DialCause(t *testing.T) {
	tests := []struct {
		err     error
		cause   string
		refused bool
	}{
		{errors.New("dial a:1: dial tcp a:1: connect: connection refused: node unavailable"), "connection refused", true},
		{fmt.Errorf("dial a:1: %w", syscall.ECONNREFUSED), "connection refused", true},
		{errors.New("dial a:1: dial tcp a:1: connect: no route to host: node unavailable"), "no route to host", true},
		{errors.New("dial a:1: dial tcp a:1: connect: network is unreachable: node unavailable"), "network is unreachable", true},
		{errors.New("dial a:1: dial tcp a:1: i/o timeout: node unavailable"), "timed out", false},
		{errors.New("dial a:1: tls handshake with a:1: remote error: bad certificate: node unavailable"), "tls handshake with a:1: remote error: bad certificate", false},
		{errors.New("dial a:1: node unavailable"), "no time left to dial", false},
	}
	for _, tt := range tests {
		cause, refused := dialCause("a:1", tt.err)
		if cause != tt.cause || refused != tt.refused {
			t.Errorf("dialCause(%q) = %q, %v; want %q, %v", tt.err, cause, refused, tt.cause, tt.refused)
		}
	}
}

// getConn's error names each server once, in the configured order, with a
// cause said once when every server failed alike.
func TestClient_UnreachableMessage(t *testing.T) {
	c := &Client{servers: []string{"a:1", "b:2", "c:3", "a:1"}}
	refused := errors.New("dial x: dial tcp x: connect: connection refused: node unavailable")
	timeout := errors.New("dial x: dial tcp x: i/o timeout: node unavailable")
	e := c.unreachable(map[string]error{"c:3": refused, "a:1": refused, "b:2": refused})
	if want := "no discoverd server reachable at a:1, b:2, c:3 (connection refused)"; e.Error() != want || !e.refused {
		t.Fatalf("all refused: %q (refused %v), want %q", e, e.refused, want)
	}
	if !errors.Is(e, ErrUnavailable) || !codes.Retryable(e) {
		t.Fatalf("%v does not wrap ErrUnavailable", e)
	}
	e = c.unreachable(map[string]error{"a:1": refused, "b:2": timeout, "c:3": refused})
	if want := "no discoverd server reachable at a:1, b:2, c:3 (a:1: connection refused; b:2: timed out; c:3: connection refused)"; e.Error() != want || e.refused {
		t.Fatalf("mixed: %q (refused %v), want %q", e, e.refused, want)
	}
	e = c.unreachable(map[string]error{"a:1": refused, "b:2": refused}) // c:3 not dialled: no time left
	if e.refused || strings.Contains(e.Error(), "c:3") {
		t.Fatalf("partial round: %q (refused %v), want no c:3 and not refused", e, e.refused)
	}
}

// The dial order starts at the round-robin's next server and puts the
// servers to avoid last, until their time is up.
func TestClient_DialOrderAvoidsSilentServers(t *testing.T) {
	now := time.Now()
	c := &Client{servers: []string{"a:1", "b:2", "c:3"}, next: 1}
	if got := c.dialOrderLocked(now); !slices.Equal(got, []int{1, 2, 0}) || c.next != 2 {
		t.Fatalf("order %v next %d, want [1 2 0] next 2", got, c.next)
	}
	c.avoidServer("c:3")
	c.next = 1
	if got := c.dialOrderLocked(now); !slices.Equal(got, []int{1, 0, 2}) {
		t.Fatalf("order %v with c:3 avoided, want [1 0 2]", got)
	}
	c.next = 1
	if got := c.dialOrderLocked(now.Add(avoidFor + time.Second)); !slices.Equal(got, []int{1, 2, 0}) {
		t.Fatalf("order %v after the avoidance ended, want [1 2 0]", got)
	}
}

// Stopping a set closes each subscribed channel exactly once, while updates
// are being published concurrently: no send on a closed channel, no double
// close (a channel subscribed twice), and channels subscribed after the stop
// get the last state and are closed at once.
func TestClient_SetStopClosesEverySubscriberOnce(t *testing.T) {
	s := &ServiceSet{online: map[string]*Service{"a:1": svc("a:1", 1, 1)}}
	chans := make([]chan *ServiceUpdate, 8)
	for i := range chans {
		chans[i] = make(chan *ServiceUpdate, i) // some unbuffered, some full soon
		s.Subscribe(chans[i])
	}
	s.Subscribe(chans[3]) // twice
	var wg sync.WaitGroup
	for i := range chans { // consumers: each range must end
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range chans[i] {
			}
		}()
	}
	publishing := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= 5000; i++ {
			s.mu.Lock()
			s.publishLocked(updateFor(svc(fmt.Sprintf("h:%d", i), uint64(i), uint64(i)), true, uint64(i), ""))
			s.mu.Unlock()
			if i == 100 {
				close(publishing)
			}
		}
	}()
	<-publishing
	s.stop()
	s.stop() // a second stop does nothing
	wg.Wait()

	s.Unsubscribe(chans[0]) // after the stop: nothing to do, nothing closed again
	s.Subscribe(chans[0])   // already closed by the stop: left alone
	late := make(chan *ServiceUpdate, 4)
	s.Subscribe(late)
	var got []string
	for u := range late {
		got = append(got, u.Addr)
	}
	if !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("a subscriber after the stop got %v, want the last state [a:1] and a closed channel", got)
	}
}

// A watch whose server ends the stream with an error no other server can
// fix returns it from Next at once; it neither retries it elsewhere nor
// takes it for a silent server (the stream idle timeout's context is
// cancelled once Recv returns, whatever it returned).
func TestClient_WatchReturnsAFinalStreamErrorAtOnce(t *testing.T) {
	failing, live := newFakeServer(t, false, codes.CodeInternal), newFakeServer(t, false, "")
	c := newTestClient(t, Config{Servers: []string{failing.addr, live.addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, "svc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	start := time.Now()
	if e, err := w.Next(ctx); !errors.Is(err, codes.ErrInternal) {
		t.Fatalf("Next = %+v, %v; want the server's internal error", e, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Next failed after %v, want at once", took)
	}
	if n, m := len(failing.requests()), len(live.requests()); n != 1 || m != 0 {
		t.Fatalf("failing server got %d watches, live %d; want 1 and 0", n, m)
	}
	c.mu.Lock()
	avoided := len(c.avoid)
	c.mu.Unlock()
	if avoided != 0 {
		t.Fatalf("%d servers avoided: an answer is not silence", avoided)
	}
}
