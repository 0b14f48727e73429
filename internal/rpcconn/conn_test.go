package rpcconn

// Internal tests (package rpcconn) so a test can see which seqs are pending;
// everything else goes through the public API against fakeServer, a few
// lines of mux + wire that answer frames as each test scripts.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/wire"
)

// fakeServer accepts ConnRPC connections on 127.0.0.1:0. Each connection's
// frames are passed to handle when it is set, or queued for the test to
// answer (serverConn.next) otherwise.
type fakeServer struct {
	addr     string
	conns    chan *serverConn
	accepted atomic.Int32

	mu  sync.Mutex
	all []*serverConn
}

func newServer(t *testing.T, handle func(*serverConn, *wire.Frame)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := mux.New(ln, mux.Config{})
	rl := m.Listen(mux.ConnRPC)
	go func() { _ = m.Serve() }()
	s := &fakeServer{addr: ln.Addr().String(), conns: make(chan *serverConn, 16)}
	go func() {
		for {
			nc, err := rl.Accept()
			if err != nil {
				return
			}
			sc := &serverConn{nc: nc, frames: make(chan *wire.Frame, 64), closed: make(chan struct{})}
			s.mu.Lock()
			s.all = append(s.all, sc)
			s.mu.Unlock()
			s.accepted.Add(1)
			go sc.read(handle)
			select {
			case s.conns <- sc:
			default: // nobody asked for it
			}
		}
	}()
	t.Cleanup(func() {
		_ = m.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sc := range s.all {
			_ = sc.nc.Close()
		}
	})
	return s
}

// conn returns the next connection the server accepted.
func (s *fakeServer) conn(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(5 * time.Second):
		t.Fatal("the server accepted no connection within 5s")
		return nil
	}
}

// serverConn is the server's side of one connection.
type serverConn struct {
	nc     net.Conn
	wmu    sync.Mutex
	frames chan *wire.Frame
	closed chan struct{} // the read loop ended
}

func (sc *serverConn) read(handle func(*serverConn, *wire.Frame)) {
	defer close(sc.closed)
	br := bufio.NewReader(sc.nc)
	for {
		f, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
		if err != nil {
			return
		}
		if handle != nil {
			handle(sc, f)
		} else {
			sc.frames <- f
		}
	}
}

// send writes one frame to the client.
func (sc *serverConn) send(hdr wire.Header, body any) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	return wire.WriteFrame(sc.nc, &hdr, body, 0)
}

func (sc *serverConn) mustSend(t *testing.T, hdr wire.Header, body any) {
	t.Helper()
	if err := sc.send(hdr, body); err != nil {
		t.Fatalf("server send: %v", err)
	}
}

// next returns the next frame the client sent.
func (sc *serverConn) next(t *testing.T) *wire.Frame {
	t.Helper()
	select {
	case f := <-sc.frames:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("the server received no frame within 5s")
		return nil
	}
}

// echo answers List with the requested name as its only instance and the
// request's seq as index; every other method with an empty body.
func echo(sc *serverConn, f *wire.Frame) {
	if f.Header.Method == wire.MethodCancel {
		return
	}
	var req wire.ListRequest
	_ = f.Decode(&req)
	_ = sc.send(wire.Header{Seq: f.Header.Seq}, &wire.ListResponse{Index: f.Header.Seq, Instances: []wire.Instance{{Name: req.Name}}})
}

func dial(t *testing.T, addr string, opts Options) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), addr, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ctxFor returns a context ending after d, cancelled at cleanup.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// list calls List for name and returns the response.
func list(ctx context.Context, c *Conn, name string) (*wire.ListResponse, error) {
	var resp wire.ListResponse
	err := c.Call(ctx, wire.MethodList, false, &wire.ListRequest{Name: name}, &resp)
	return &resp, err
}

func TestConn_ConcurrentCallsMatchedBySeqOutOfOrder(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)

	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			name := fmt.Sprintf("svc-%d", i)
			resp, err := list(ctxFor(t, 5*time.Second), c, name)
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", name, err)
			case len(resp.Instances) != 1 || resp.Instances[0].Name != name:
				errs <- fmt.Errorf("%s got the answer to another call: %+v", name, resp)
			default:
				errs <- nil
			}
		}()
	}
	// Take all requests, then answer them last first.
	var reqs []*wire.Frame
	seqs := map[uint64]bool{}
	for i := 0; i < n; i++ {
		f := sc.next(t)
		if f.Header.Method != wire.MethodList || f.Header.Forwarded {
			t.Errorf("request header %+v", f.Header)
		}
		if f.Header.Seq == 0 || seqs[f.Header.Seq] {
			t.Errorf("seq %d is zero or reused", f.Header.Seq)
		}
		seqs[f.Header.Seq] = true
		reqs = append(reqs, f)
	}
	for i := n - 1; i >= 0; i-- {
		var req wire.ListRequest
		if err := reqs[i].Decode(&req); err != nil {
			t.Fatal(err)
		}
		sc.mustSend(t, wire.Header{Seq: reqs[i].Header.Seq}, &wire.ListResponse{Instances: []wire.Instance{{Name: req.Name}}})
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestConn_ForwardedFlagIsSent(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	done := make(chan error, 1)
	go func() {
		done <- c.Call(ctxFor(t, 5*time.Second), wire.MethodRegister, true, &wire.RegisterRequest{Name: "web"}, nil)
	}()
	f := sc.next(t)
	if !f.Header.Forwarded || f.Header.Method != wire.MethodRegister {
		t.Errorf("header %+v, want a forwarded Register", f.Header)
	}
	sc.mustSend(t, wire.Header{Seq: f.Header.Seq}, &wire.WriteResponse{Index: 3})
	if err := <-done; err != nil {
		t.Errorf("Call with a nil resp: %v", err)
	}
}

func TestConn_ServerErrorBecomesSentinel(t *testing.T) {
	cases := []struct {
		code string
		msg  string
		want error
	}{
		{"not_found", "instance web/h:1 not registered", codes.ErrNotFound},
		{"no_leader", "", codes.ErrNoLeader},
		{"invalid_argument", `service name "-" has '-' at byte 0: invalid argument`, codes.ErrInvalidArgument},
		{"stale_node", "node is behind the requested index", codes.ErrStaleNode},
		{"from_the_future", "new kind of failure", codes.ErrInternal},
	}
	s := newServer(t, func(sc *serverConn, f *wire.Frame) {
		var req wire.ListRequest
		_ = f.Decode(&req)
		c := cases[len(req.Name)-1] // the name's length picks the case
		_ = sc.send(wire.Header{Seq: f.Header.Seq, Code: c.code, Error: c.msg}, nil)
	})
	c := dial(t, s.addr, Options{})
	for i, tc := range cases {
		_, err := list(ctxFor(t, 5*time.Second), c, string(make([]byte, i+1)))
		if !errors.Is(err, tc.want) {
			t.Errorf("code %q: err = %v, want %v", tc.code, err, tc.want)
			continue
		}
		if tc.msg != "" && err.Error() != tc.msg {
			t.Errorf("code %q: message %q, want the server's %q", tc.code, err, tc.msg)
		}
	}
	if c.Err() != nil {
		t.Errorf("error answers broke the connection: %v", c.Err())
	}
}

func TestConn_TimeoutDropsLateAnswer(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)

	// The server answers another call while the slow one waits, so the
	// connection is alive and survives the slow call's timeout.
	slowErr := make(chan error, 1)
	go func() {
		_, err := list(ctxFor(t, 300*time.Millisecond), c, "slow")
		slowErr <- err
	}()
	slow := sc.next(t)
	pingDone := make(chan error, 1)
	go func() {
		_, err := list(ctxFor(t, 5*time.Second), c, "ping")
		pingDone <- err
	}()
	ping := sc.next(t)
	sc.mustSend(t, wire.Header{Seq: ping.Header.Seq}, &wire.ListResponse{})
	if err := <-pingDone; err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := <-slowErr; !errors.Is(err, codes.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	// The late answer arrives before the next call's: it must be dropped,
	// not handed to the next call nor break the connection.
	sc.mustSend(t, wire.Header{Seq: slow.Header.Seq}, &wire.ListResponse{Instances: []wire.Instance{{Name: "slow"}}})

	done := make(chan error, 1)
	var resp *wire.ListResponse
	go func() {
		var err error
		resp, err = list(ctxFor(t, 5*time.Second), c, "fast")
		done <- err
	}()
	fast := sc.next(t)
	if fast.Header.Seq == slow.Header.Seq {
		t.Fatalf("seq %d reused", fast.Header.Seq)
	}
	sc.mustSend(t, wire.Header{Seq: fast.Header.Seq}, &wire.ListResponse{Instances: []wire.Instance{{Name: "fast"}}})
	if err := <-done; err != nil {
		t.Fatalf("call after the timeout: %v", err)
	}
	if resp.Instances[0].Name != "fast" {
		t.Errorf("got %+v, the late answer to another call", resp)
	}
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n != 0 || c.Err() != nil {
		t.Errorf("after both calls: %d pending, Err %v", n, c.Err())
	}
}

func TestConn_BreakAfterSendIsUnknownOutcome(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	done := make(chan error, 1)
	go func() {
		done <- c.Call(ctxFor(t, 5*time.Second), wire.MethodRegister, false, &wire.RegisterRequest{Name: "web"}, new(wire.WriteResponse))
	}()
	sc.next(t) // the request was received...
	_ = sc.nc.Close()
	err := <-done // ...and its answer never comes
	if !errors.Is(err, codes.ErrUnknownOutcome) {
		t.Fatalf("err = %v, want ErrUnknownOutcome", err)
	}
	if codes.NotApplied(err) || !codes.Retryable(err) {
		t.Errorf("unknown outcome: NotApplied %v Retryable %v", codes.NotApplied(err), codes.Retryable(err))
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the connection broke")
	}
	if c.Err() == nil {
		t.Error("Err is nil on a broken connection")
	}
	// Nothing more can be sent: the next call knows it was not.
	if _, err := list(ctxFor(t, time.Second), c, "web"); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("call on a broken connection: %v, want ErrUnavailable", err)
	}
}

func TestConn_DialFailuresAreUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, err = Dial(ctxFor(t, 5*time.Second), addr, Options{})
	if !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("Dial to a closed port: %v, want ErrUnavailable", err)
	}

	s := newServer(t, nil)
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := Dial(expired, s.addr, Options{}); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("Dial with an expired context: %v, want ErrUnavailable", err)
	}
}

func TestConn_ClosedConnIsUnavailable(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)

	// A call in flight when the connection is closed may have been applied.
	done := make(chan error, 1)
	go func() {
		_, err := list(ctxFor(t, 5*time.Second), c, "web")
		done <- err
	}()
	sc.next(t)
	_ = c.Close()
	if err := <-done; !errors.Is(err, codes.ErrUnknownOutcome) {
		t.Errorf("call in flight at Close: %v, want ErrUnknownOutcome", err)
	}
	_ = c.Close() // twice is fine

	if _, err := list(ctxFor(t, time.Second), c, "web"); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("Call on a closed Conn: %v, want ErrUnavailable", err)
	}
	if _, err := c.Stream(ctxFor(t, time.Second), wire.MethodWatch, &wire.WatchRequest{Name: "web"}); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("Stream on a closed Conn: %v, want ErrUnavailable", err)
	}
	// The server sees the connection end.
	select {
	case <-sc.closed:
	case <-time.After(5 * time.Second):
		t.Error("the server's side is still open after Close")
	}
}

func TestConn_UnsendableRequestsAreNotSent(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{MaxRequest: 200})
	sc := s.conn(t)

	_, err := list(ctxFor(t, time.Second), c, string(make([]byte, 300)))
	if !errors.Is(err, codes.ErrTooLarge) || !codes.NotApplied(err) {
		t.Errorf("oversized request: %v, want ErrTooLarge", err)
	}
	err = c.Call(ctxFor(t, time.Second), wire.MethodList, false, complex(1, 2), nil)
	if !errors.Is(err, codes.ErrInvalidArgument) {
		t.Errorf("unencodable request: %v, want ErrInvalidArgument", err)
	}

	// Neither left: the next frame the server sees is this call's, and the
	// connection is fine.
	done := make(chan error, 1)
	go func() {
		_, err := list(ctxFor(t, 5*time.Second), c, "ok")
		done <- err
	}()
	f := sc.next(t)
	var req wire.ListRequest
	if err := f.Decode(&req); err != nil || req.Name != "ok" {
		t.Fatalf("server's first frame: %+v %+v %v, want the List for ok", f.Header, req, err)
	}
	echo(sc, f)
	if err := <-done; err != nil {
		t.Errorf("call after the refused ones: %v", err)
	}
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d refused calls left pending", n)
	}
}

// openStream opens a Watch on c and returns it with the server's view of its request.
func openStream(t *testing.T, c *Conn, sc *serverConn) (*Stream, *wire.Frame) {
	t.Helper()
	st, err := c.Stream(ctxFor(t, 5*time.Second), wire.MethodWatch, &wire.WatchRequest{Name: "web", FromIndex: 7})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	t.Cleanup(st.Close)
	f := sc.next(t)
	var req wire.WatchRequest
	if err := f.Decode(&req); err != nil || f.Header.Method != wire.MethodWatch || req.FromIndex != 7 {
		t.Fatalf("server got %+v %+v %v, want the Watch", f.Header, req, err)
	}
	if st.Addr() != c.Addr() {
		t.Errorf("stream Addr %q, want %q", st.Addr(), c.Addr())
	}
	return st, f
}

// events sends n stream frames for seq, with indexes first, first+1, ...
func events(t *testing.T, sc *serverConn, seq uint64, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		sc.mustSend(t, wire.Header{Seq: seq, More: true}, &wire.WatchEvents{Events: []wire.Event{{Kind: wire.KindUp, Index: uint64(i), Name: "web"}}})
	}
}

// recvIndexes receives n frames and fails unless they carry first, first+1, ...
func recvIndexes(t *testing.T, st *Stream, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		var ev wire.WatchEvents
		if err := st.Recv(ctxFor(t, 5*time.Second), &ev); err != nil {
			t.Fatalf("Recv (want index %d): %v", i, err)
		}
		if len(ev.Events) != 1 || ev.Events[0].Index != uint64(i) {
			t.Fatalf("Recv = %+v, want index %d", ev, i)
		}
	}
}

func TestStream_FramesInOrderThenServerError(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)

	events(t, sc, req.Header.Seq, 1, 10)
	sc.mustSend(t, wire.Header{Seq: req.Header.Seq, Code: string(codes.CodeStaleNode), Error: "behind"}, nil)
	recvIndexes(t, st, 1, 10)
	var ev wire.WatchEvents
	if err := st.Recv(ctxFor(t, 5*time.Second), &ev); !errors.Is(err, codes.ErrStaleNode) || err.Error() != "behind" {
		t.Errorf("final frame: %v, want the server's stale_node", err)
	}
	if err := st.Recv(ctxFor(t, time.Second), &ev); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("Recv after the end: %v, want ErrUnavailable", err)
	}
	c.mu.Lock()
	_, pending := c.pending[req.Header.Seq]
	c.mu.Unlock()
	if pending {
		t.Error("an ended stream is still pending")
	}
}

func TestStream_FinalFrameWithoutCodeIsUnavailable(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)
	sc.mustSend(t, wire.Header{Seq: req.Header.Seq}, nil)
	var ev wire.WatchEvents
	if err := st.Recv(ctxFor(t, 5*time.Second), &ev); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("err = %v, want ErrUnavailable", err)
	}
}

func TestStream_ConnectionBreakDeliversBufferedFramesFirst(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)
	events(t, sc, req.Header.Seq, 1, 5)
	_ = sc.nc.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not notice the break")
	}
	recvIndexes(t, st, 1, 5)
	var ev wire.WatchEvents
	if err := st.Recv(ctxFor(t, 5*time.Second), &ev); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("after the break: %v, want ErrUnavailable", err)
	}
}

func TestStream_RecvContext(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)
	var ev wire.WatchEvents
	if err := st.Recv(ctxFor(t, 20*time.Millisecond), &ev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with nothing to receive: %v, want the context's error", err)
	}
	// The stream goes on.
	events(t, sc, req.Header.Seq, 1, 1)
	recvIndexes(t, st, 1, 1)
}

func TestStream_CloseSendsCancel(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)
	events(t, sc, req.Header.Seq, 1, 1)
	recvIndexes(t, st, 1, 1)

	st.Close()
	st.Close() // twice is fine
	f := sc.next(t)
	var cancel wire.CancelRequest
	if err := f.Decode(&cancel); err != nil || f.Header.Method != wire.MethodCancel || cancel.Seq != req.Header.Seq {
		t.Fatalf("after Close the server got %+v %+v %v; want Cancel of seq %d", f.Header, cancel, err, req.Header.Seq)
	}
	// Frames already on their way are dropped, and the connection works.
	events(t, sc, req.Header.Seq, 2, 3)
	done := make(chan error, 1)
	go func() {
		_, err := list(ctxFor(t, 5*time.Second), c, "web")
		done <- err
	}()
	echo(sc, sc.next(t))
	if err := <-done; err != nil {
		t.Errorf("call after closing a stream: %v", err)
	}
}

func TestStream_OverflowEndsOnlyThatStream(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{StreamBuffer: 2})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)

	// Nobody reads the stream: the third frame overflows its buffer.
	events(t, sc, req.Header.Seq, 1, 5)
	f := sc.next(t)
	var cancel wire.CancelRequest
	if err := f.Decode(&cancel); err != nil || f.Header.Method != wire.MethodCancel || cancel.Seq != req.Header.Seq {
		t.Fatalf("after the overflow the server got %+v %+v %v; want Cancel of seq %d", f.Header, cancel, err, req.Header.Seq)
	}
	// Other calls are not held up by the stream nobody reads.
	done := make(chan error, 1)
	go func() {
		_, err := list(ctxFor(t, 5*time.Second), c, "web")
		done <- err
	}()
	echo(sc, sc.next(t))
	if err := <-done; err != nil {
		t.Fatalf("call beside an overflowing stream: %v", err)
	}
	// The reader gets what was buffered, in order, then ErrOverflow.
	recvIndexes(t, st, 1, 2)
	var ev wire.WatchEvents
	if err := st.Recv(ctxFor(t, 5*time.Second), &ev); !errors.Is(err, ErrOverflow) {
		t.Errorf("after the buffered frames: %v, want ErrOverflow", err)
	}
	if c.Err() != nil {
		t.Errorf("an overflow broke the connection: %v", c.Err())
	}
}

func TestPool_ReusesAndRedials(t *testing.T) {
	s := newServer(t, echo)
	p := NewPool(Options{})
	t.Cleanup(p.Close)
	ctx := ctxFor(t, 5*time.Second)

	c1, err := p.Get(ctx, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		var resp wire.ListResponse
		if err := p.Call(ctx, s.addr, wire.MethodList, false, &wire.ListRequest{Name: "web"}, &resp); err != nil || resp.Instances[0].Name != "web" {
			t.Fatalf("Pool.Call: %+v, %v", resp, err)
		}
	}
	if c2, _ := p.Get(ctx, s.addr); c2 != c1 {
		t.Error("Get dialled again while the connection was open")
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}

	// The server drops the connection: the next Get dials a new one.
	_ = s.conn(t).nc.Close()
	select {
	case <-c1.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not notice the break")
	}
	c3, err := p.Get(ctx, s.addr)
	if err != nil || c3 == c1 || c3.Err() != nil {
		t.Fatalf("Get after the break: %p (old %p), %v", c3, c1, err)
	}
	if err := p.Call(ctx, s.addr, wire.MethodList, false, &wire.ListRequest{Name: "web"}, nil); err != nil {
		t.Errorf("call on the redialled connection: %v", err)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("server accepted %d connections, want 2", n)
	}
}

func TestPool_ConcurrentGetsShareOneConnection(t *testing.T) {
	s := newServer(t, echo)
	p := NewPool(Options{})
	t.Cleanup(p.Close)
	const n = 10
	got := make(chan *Conn, n)
	for i := 0; i < n; i++ {
		go func() {
			c, err := p.Get(ctxFor(t, 5*time.Second), s.addr)
			if err != nil {
				t.Error(err)
			}
			got <- c
		}()
	}
	first := <-got
	for i := 1; i < n; i++ {
		if c := <-got; c != first {
			t.Fatalf("concurrent Gets returned different connections")
		}
	}
	if first.Err() != nil {
		t.Errorf("the shared connection is closed: %v", first.Err())
	}
}

func TestPool_PerAddressAndClose(t *testing.T) {
	a, b := newServer(t, echo), newServer(t, echo)
	p := NewPool(Options{})
	ctx := ctxFor(t, 5*time.Second)
	ca, err := p.Get(ctx, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := p.Get(ctx, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	if ca == cb || ca.Addr() != a.addr || cb.Addr() != b.addr {
		t.Errorf("one connection per address: %s %s", ca.Addr(), cb.Addr())
	}
	p.Close()
	for _, c := range []*Conn{ca, cb} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("connection to %s open after Pool.Close", c.Addr())
		}
	}
	if _, err := p.Get(ctx, a.addr); !errors.Is(err, codes.ErrShuttingDown) {
		t.Errorf("Get after Close: %v, want ErrShuttingDown", err)
	}
	if err := p.Call(ctx, a.addr, wire.MethodList, false, &wire.ListRequest{}, nil); !errors.Is(err, codes.ErrShuttingDown) {
		t.Errorf("Call after Close: %v, want ErrShuttingDown", err)
	}
}

func TestPool_DialFailureIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := NewPool(Options{DialTimeout: time.Second})
	defer p.Close()
	if err := p.Call(ctxFor(t, 5*time.Second), addr, wire.MethodList, false, &wire.ListRequest{}, nil); !errors.Is(err, codes.ErrUnavailable) {
		t.Errorf("Call to a closed port: %v, want ErrUnavailable", err)
	}
}

// Regression: a success answer whose body does not decode used to surface as
// Frame.Decode's ErrInvalidArgument, which codes.NotApplied (and
// docs/protocol.md section 9) read as "the write definitely did not happen"
// although the server reported it done.
func TestConn_UndecodableAnswerIsNotNotApplied(t *testing.T) {
	s := newServer(t, func(sc *serverConn, f *wire.Frame) {
		_ = sc.send(wire.Header{Seq: f.Header.Seq}, "not a WriteResponse")
	})
	c := dial(t, s.addr, Options{})
	err := c.Call(ctxFor(t, 5*time.Second), wire.MethodRegister, false, &wire.RegisterRequest{Name: "web"}, new(wire.WriteResponse))
	if err == nil {
		t.Fatal("an undecodable answer was accepted")
	}
	if codes.NotApplied(err) {
		t.Errorf("Register answered with success but an undecodable body: err %q (code %s) says the write was not applied",
			err, codes.Of(err))
	}
}

// Regression: a data race (reported by -race) between Stream.Close, which
// reads whether the stream ended, and a Recv in another goroutine that marks
// it ended on the final frame. The client does exactly this: Watch.Close
// closes the stream while Next is in Recv.
func TestStream_CloseConcurrentWithRecv(t *testing.T) {
	s := newServer(t, nil)
	c := dial(t, s.addr, Options{})
	sc := s.conn(t)
	st, req := openStream(t, c, sc)

	recvd := make(chan error, 1)
	go func() {
		var ev wire.WatchEvents
		recvd <- st.Recv(ctxFor(t, 5*time.Second), &ev)
	}()
	sc.mustSend(t, wire.Header{Seq: req.Header.Seq, Code: string(codes.CodeShuttingDown)}, nil)
	// Wait until the reader took the final frame off the pending table, so
	// Recv gets it; this syncs with the read loop, not with Recv.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		_, pending := c.pending[req.Header.Seq]
		c.mu.Unlock()
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the final frame never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	st.Close() // reads st.ended while Recv may be writing it
	if err := <-recvd; !errors.Is(err, codes.ErrShuttingDown) {
		t.Errorf("Recv: %v, want the final frame's ErrShuttingDown", err)
	}
}

// Regression (found by the fault suite, flaky-links seed 2): a connection
// whose peer went silent was never given up — calls through it timed out one
// after another for seconds, and node-to-node forwarding stalled. A call that
// times out without a single frame arriving since it was sent now fails the
// connection, so the next call dials afresh.
func TestConn_SilentConnectionIsDroppedAfterTimeout(t *testing.T) {
	s := newServer(t, func(*serverConn, *wire.Frame) {}) // reads, never answers
	p := NewPool(Options{DialTimeout: time.Second})
	defer p.Close()
	c1, err := p.Get(ctxFor(t, 5*time.Second), s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := list(ctxFor(t, 100*time.Millisecond), c1, "web"); !errors.Is(err, codes.ErrTimeout) {
		t.Fatalf("call to a silent server: %v, want ErrTimeout", err)
	}
	if c1.Err() == nil {
		t.Fatal("the silent connection was kept")
	}
	c2, err := p.Get(ctxFor(t, 5*time.Second), s.addr)
	if err != nil || c2 == c1 {
		t.Fatalf("pool gave %p (err %v), want a new connection instead of %p", c2, err, c1)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.accepted.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("server accepted %d connections, want 2", s.accepted.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A broken or hostile server that answers one call with more frames than
// one (a "more" frame, then the answer again) fails the connection: the
// call's answer buffer holds one frame, and only a stream can overflow.
func TestConn_CallAnsweredTwiceFailsTheConnection(t *testing.T) {
	s := newServer(t, func(sc *serverConn, f *wire.Frame) {
		for range 3 {
			_ = sc.send(wire.Header{Seq: f.Header.Seq, More: true}, &wire.WriteResponse{Index: 1})
		}
	})
	c := dial(t, s.addr, Options{})
	err := c.Call(ctxFor(t, 5*time.Second), wire.MethodRegister, false, &wire.RegisterRequest{Name: "web"}, new(wire.WriteResponse))
	if err != nil {
		t.Logf("the call: %v", err) // answered by the first frame, or failed with the connection
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection still stands after a call was answered three times")
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "a second answer") {
		t.Errorf("connection error %v, want one naming the second answer", err)
	}
}
