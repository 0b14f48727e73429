// Package rpc serves discoverd's native protocol (internal/wire,
// docs/protocol.md) on a node: it reads frames, validates every request
// against the limits in internal/validate, and calls the DiscoveryBackend —
// which forwards writes and heartbeats to the leader and serves reads and
// watch streams from the local state. Many calls and streams share one
// connection; each request runs in its own goroutine and answers with its
// sequence number.
package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// Config tunes the server.
type Config struct {
	// MaxFrame is the largest request frame accepted. Default 1 MiB.
	MaxFrame int
	// RequestTimeout bounds each request/response call. Default 10 s.
	RequestTimeout time.Duration
	// WriteTimeout bounds writing one frame to a client; a client that does
	// not read for this long is disconnected (after 7/8 of it at the
	// earliest: the connection's write deadline is moved on only once it is
	// an eighth old, wire.FrameWriter). Default 10 s.
	WriteTimeout time.Duration
	// MaxInFlight bounds concurrent request/response calls per connection;
	// the reader waits when it is reached. Default 512.
	MaxInFlight int
	// MaxStreams bounds open watch streams per connection; a watch beyond it
	// is refused with resource_exhausted. Default 1024.
	MaxStreams int
	// StreamKeepalive is how often an idle watch stream gets an empty frame,
	// so clients can tell a quiet stream from a dead (paused, cut off)
	// server. Default 2 s.
	StreamKeepalive time.Duration
	// FrameTimeout bounds how long a frame may take to arrive once its
	// length has; a connection whose frame is not complete by then is
	// closed. Default 10 s.
	FrameTimeout time.Duration
	// IdleTimeout closes a connection that has had no call in flight, no
	// open watch stream and no frame from the client for this long (the
	// client redials when it needs one again). Default 5 min.
	IdleTimeout time.Duration
	// Snapshot bounds backups and restores (snapshot.go).
	Snapshot SnapshotConfig
	Logger   *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxFrame <= 0 {
		c.MaxFrame = wire.DefaultMaxFrame
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 512
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 1024
	}
	if c.StreamKeepalive <= 0 {
		c.StreamKeepalive = 2 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Snapshot = c.Snapshot.withDefaults()
	return c
}

// Server serves the protocol over a DiscoveryBackend.
type Server struct {
	cfg Config
	be  backend.DiscoveryBackend
	log *slog.Logger

	ctx    context.Context // cancelled on Shutdown: ends streams
	cancel context.CancelFunc

	workers *workers   // run request handlers
	stats   *callStats // counts for /metrics (metrics.go)
	snaps   snapshots

	mu    sync.Mutex
	conns map[*conn]struct{}
	lns   []net.Listener
	wg    sync.WaitGroup
}

// New returns a server; call Serve with a listener.
func New(cfg Config, be backend.DiscoveryBackend) *Server {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, be: be, log: cfg.Logger, ctx: ctx, cancel: cancel, conns: map[*conn]struct{}{}, workers: newWorkers(ctx), stats: newCallStats()}
	go s.sweep()
	return s
}

// Serve accepts connections from ln (whose first protocol byte has already
// been consumed) until ln is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), w: wire.NewFrameWriter(nc, s.cfg.WriteTimeout), streams: map[uint64]context.CancelFunc{},
			sem: make(chan struct{}, s.cfg.MaxInFlight)}
		c.w.SetSolo(func() bool { return c.active.Load() <= 1 })
		c.lastFrame.Store(time.Now().UnixNano())
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			_ = nc.Close()
			return net.ErrClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Conns is the number of client connections open now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown stops accepting, ends every stream and waits (up to ctx) for
// in-flight requests to answer, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	s.cancel()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stopReading()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range conns {
			_ = c.nc.Close()
		}
		<-done
	}
}

// conn is one client connection.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string // nc's remote address

	w *wire.FrameWriter

	mu      sync.Mutex
	streams map[uint64]context.CancelFunc
	upload  *upload // a restore being uploaded (snapshot.go)
	sem     chan struct{}
	wg      sync.WaitGroup

	// The calls' shared deadline (deadline): the latest slot's context,
	// its end, and its cancel (kept only for vet's sake: the slot ends at
	// its deadline or with the connection's context).
	slotMu     sync.Mutex
	slot       context.Context
	slotEnd    time.Time
	slotCancel context.CancelFunc

	// The connection's clocks, read by the server's sweeper (sweep):
	cut        atomic.Bool  // a frame write timed out: counted once (metrics.go)
	active     atomic.Int32 // calls in flight and open streams
	lastFrame  atomic.Int64 // when a frame last arrived or the last call ended (Unix ns)
	frameStart atomic.Int64 // when the frame being read gave its length (Unix ns); 0 between frames
}

// stopReading makes the read loop return; answers in flight still go out.
func (c *conn) stopReading() { _ = c.nc.SetReadDeadline(time.Now()) }

// Idle and frame timeouts. They are kept by clocks the read loop and the
// calls update with an atomic store each, and one sweeper per server that
// closes the connections past them: a read deadline moved on every frame
// cost a timer update on each, measurably on a busy node.

// frameStarted notes that a frame's length has arrived.
func (c *conn) frameStarted() { c.frameStart.Store(time.Now().UnixNano()) }

// begin and end count a call or stream in flight; the connection's idle
// clock runs only while nothing is.
func (c *conn) begin() { c.active.Add(1) }

func (c *conn) end() {
	if c.active.Add(-1) == 0 {
		c.lastFrame.Store(time.Now().UnixNano())
	}
}

// sweepEvery is how often the sweeper looks: a fraction of the shortest
// timeout, so a connection is closed at most a quarter late.
func (s *Server) sweepEvery() time.Duration {
	return min(max(min(s.cfg.FrameTimeout, s.cfg.IdleTimeout)/4, 10*time.Millisecond), time.Second)
}

// sweep closes, until the server shuts down, every connection whose frame
// has not arrived within FrameTimeout of its length, and every connection
// with nothing in flight that has been quiet for IdleTimeout.
func (s *Server) sweep() {
	t := time.NewTicker(s.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		frameLimit, idleLimit := int64(s.cfg.FrameTimeout), int64(s.cfg.IdleTimeout)
		var late []*conn
		s.mu.Lock()
		for c := range s.conns {
			if fs := c.frameStart.Load(); fs != 0 && now-fs > frameLimit {
				late = append(late, c)
			} else if fs == 0 && c.active.Load() == 0 && now-c.lastFrame.Load() > idleLimit {
				late = append(late, c)
			}
		}
		s.mu.Unlock()
		for _, c := range late {
			s.log.Debug("closing connection: idle, or a frame did not arrive in time", "remote", c.nc.RemoteAddr())
			_ = c.nc.Close()
		}
	}
}

func (c *conn) serve() {
	defer c.nc.Close()
	ctx, cancel := context.WithCancel(c.s.ctx)
	defer cancel()
	// A small read buffer: larger frames are read past it, into a buffer
	// that grows with what arrives (wire.ReadFrameWith).
	br := bufio.NewReaderSize(c.nc, 4<<10)
	for {
		f, err := wire.ReadFrameWith(br, c.s.cfg.MaxFrame, c.frameStarted)
		c.frameStart.Store(0)
		c.lastFrame.Store(time.Now().UnixNano())
		if err != nil {
			switch {
			case errors.Is(err, codes.ErrTooLarge):
				// Answer under the request's own seq when its header can be
				// read, and skip the rest of the frame so the connection
				// stays usable; a frame too large even to skip ends it.
				var tl *wire.TooLargeError
				if errors.As(err, &tl) {
					if seq, serr := wire.SkipFrame(br, tl.Size, maxSkip); serr == nil {
						c.writeError(seq, err)
						continue
					}
				}
				c.writeError(0, err)
				c.s.log.Warn("closing connection: frame too large", "remote", c.nc.RemoteAddr(), "err", err)
			case errors.Is(err, codes.ErrInvalidArgument):
				// The frame was whole; only its header was bad. Keep serving.
				c.writeError(0, err)
				continue
			case isTimeout(err): // stopReading: the server is shutting down
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
				c.s.log.Debug("connection read failed", "remote", c.nc.RemoteAddr(), "err", err)
			}
			break
		}
		if f.Header.Method == wire.MethodCancel {
			var req wire.CancelRequest
			if err := f.DecodeRequest(&req); err == nil {
				c.cancelStream(req.Seq)
			}
			continue
		}
		if f.Header.Method == wire.MethodWatch {
			// Registered here, before the next frame is read, so a Cancel
			// that follows is never lost.
			sctx, cancel, err := c.openStream(ctx, f.Header.Seq)
			if err != nil {
				c.writeError(f.Header.Seq, err)
				continue
			}
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer c.closeStream(f.Header.Seq, cancel)
				c.watch(sctx, f)
			}()
			continue
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		c.wg.Add(1)
		c.begin()
		c.s.workers.run(func() {
			defer c.wg.Done()
			defer c.end()
			defer func() { <-c.sem }()
			c.handle(ctx, f)
		})
	}
	// Let in-flight requests answer; streams end with the context.
	c.mu.Lock()
	for _, cancel := range c.streams {
		cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.dropUpload()
}

// callerContext marks ctx with who sent f: its token and this
// connection's remote address (for the ACL guard and its audit lines), and
// whether a node forwarded it.
func (c *conn) callerContext(ctx context.Context, f *wire.Frame) context.Context {
	if f.Header.Forwarded {
		ctx = backend.WithForwarded(ctx)
	}
	return backend.WithCaller(ctx, backend.Caller{Token: f.Header.Token, Remote: c.remote, Via: "native"})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *conn) write(hdr *wire.Header, body any) error {
	err := c.w.WriteFrame(hdr, body, 0)
	if err != nil {
		// A client that cannot take our frames loses its connection.
		if isTimeout(err) && c.cut.CompareAndSwap(false, true) {
			c.s.stats.slowCuts.Add(1)
		}
		_ = c.nc.Close()
	}
	return err
}

func (c *conn) writeError(seq uint64, err error) {
	_ = c.write(wire.ErrorHeader(seq, err), nil)
}

func (c *conn) reply(seq uint64, body any, err error) {
	if err != nil {
		c.writeError(seq, err)
		return
	}
	_ = c.write(&wire.Header{Seq: seq}, body)
}

// maxSkip is the largest oversized frame the server reads past to keep the
// connection; beyond it the connection is closed.
const maxSkip = 64 << 20

func (c *conn) openStream(ctx context.Context, seq uint64) (context.Context, context.CancelFunc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.streams[seq]; dup {
		return nil, nil, codes.Invalid("seq %d already names an open stream on this connection", seq)
	}
	if len(c.streams) >= c.s.cfg.MaxStreams {
		return nil, nil, fmt.Errorf("%d watch streams open on this connection, the limit: cancel one or open another connection: %w",
			len(c.streams), codes.ErrResourceExhausted)
	}
	if ctx.Err() != nil {
		return nil, nil, codes.ErrShuttingDown
	}
	sctx, cancel := context.WithCancel(ctx)
	c.streams[seq] = cancel
	c.begin()
	c.s.stats.watchStreams.Add(1)
	return sctx, cancel, nil
}

func (c *conn) closeStream(seq uint64, cancel context.CancelFunc) {
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, seq)
	c.s.stats.watchStreams.Add(-1)
	c.end()
}

func (c *conn) cancelStream(seq uint64) {
	c.mu.Lock()
	cancel := c.streams[seq]
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (c *conn) handle(ctx context.Context, f *wire.Frame) {
	seq := f.Header.Seq
	start := time.Now()
	ctx = c.callerContext(c.deadline(ctx, start), f)
	body, err := c.call(ctx, f)
	c.s.stats.observe(f.Header.Method, err, time.Since(start))
	c.reply(seq, body, err)
}

// deadline returns a context under the connection's (parent) that ends
// RequestTimeout after now, rounded up to a hundredth of it. The calls of
// one connection in one such slot share the context: a timer of its own
// for every call (context.WithTimeout) was a few per cent of a busy node's
// CPU. A slot's context ends at its deadline or with the connection.
func (c *conn) deadline(parent context.Context, now time.Time) context.Context {
	step := max(c.s.cfg.RequestTimeout/100, time.Millisecond)
	d := now.Add(c.s.cfg.RequestTimeout + step - 1).Truncate(step)
	c.slotMu.Lock()
	defer c.slotMu.Unlock()
	if c.slot == nil || !c.slotEnd.Equal(d) {
		c.slot, c.slotCancel = context.WithDeadline(parent, d)
		c.slotEnd = d
	}
	return c.slot
}

// call runs one request/response method.
func (c *conn) call(ctx context.Context, f *wire.Frame) (any, error) {
	be := c.s.be
	switch f.Header.Method {
	case wire.MethodRegister:
		var req wire.RegisterRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		ttl := time.Duration(req.TTLMillis) * time.Millisecond
		if req.TTLMillis < 0 || req.TTLMillis > int64(validate.MaxTTL/time.Millisecond) {
			return nil, codes.Invalid("ttl_ms %d is out of range: allowed %d to %d", req.TTLMillis,
				validate.MinTTL.Milliseconds(), validate.MaxTTL.Milliseconds())
		}
		if err := validate.Registration(req.Name, req.Addr, req.Attrs, ttl); err != nil {
			return nil, err
		}
		if err := validate.RequestID(req.RequestID); err != nil {
			return nil, err
		}
		idx, err := be.Register(ctx, backend.Registration{Name: req.Name, Addr: req.Addr, Attrs: req.Attrs, TTL: ttl, RequestID: req.RequestID})
		return &wire.WriteResponse{Index: idx}, err
	case wire.MethodUnregister:
		var req wire.UnregisterRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		if err := validate.Instance(req.Name, req.Addr); err != nil {
			return nil, err
		}
		if err := validate.RequestID(req.RequestID); err != nil {
			return nil, err
		}
		idx, err := be.Unregister(ctx, backend.Unregistration{Name: req.Name, Addr: req.Addr, RequestID: req.RequestID, IfIndex: req.IfIndex})
		return &wire.WriteResponse{Index: idx}, err
	case wire.MethodHeartbeat:
		var req wire.HeartbeatRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		if len(req.Instances) == 0 || len(req.Instances) > validate.MaxHeartbeats {
			return nil, codes.Invalid("heartbeat names %d instances: want 1 to %d", len(req.Instances), validate.MaxHeartbeats)
		}
		for _, k := range req.Instances {
			if err := validate.Instance(k.Name, k.Addr); err != nil {
				return nil, err
			}
		}
		if !f.Header.Forwarded {
			c.s.stats.heartbeats.Add(uint64(len(req.Instances)))
		}
		res, err := be.Heartbeat(ctx, req.Instances)
		if err != nil {
			return nil, err
		}
		out := &wire.HeartbeatResponse{Results: make([]wire.Result, len(res))}
		for i, e := range res {
			out.Results[i] = wire.ResultOf(e)
		}
		return out, nil
	case wire.MethodList:
		var req wire.ListRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		if err := validate.Name(req.Name); err != nil {
			return nil, err
		}
		if err := validate.Attrs(req.Attrs); err != nil {
			return nil, err
		}
		idx, ins, err := be.List(ctx, req.Name, backend.ListOptions{Attrs: req.Attrs, Consistent: req.Consistent, MinIndex: req.MinIndex})
		if ins == nil {
			ins = []wire.Instance{}
		}
		return &wire.ListResponse{Index: idx, Instances: ins, Freshness: be.Freshness()}, err
	case wire.MethodSetMeta:
		var req wire.SetMetaRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		if err := validate.Meta(req.Name, req.Data); err != nil {
			return nil, err
		}
		if err := validate.RequestID(req.RequestID); err != nil {
			return nil, err
		}
		idx, err := be.SetMeta(ctx, backend.MetaWrite{Name: req.Name, Data: req.Data, ExpectIndex: req.ExpectIndex, RequestID: req.RequestID})
		return &wire.WriteResponse{Index: idx}, err
	case wire.MethodDeleteMeta:
		var req wire.DeleteMetaRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		if err := validate.Name(req.Name); err != nil {
			return nil, err
		}
		if err := validate.RequestID(req.RequestID); err != nil {
			return nil, err
		}
		idx, err := be.DeleteMeta(ctx, backend.MetaWrite{Name: req.Name, ExpectIndex: req.ExpectIndex, RequestID: req.RequestID})
		return &wire.WriteResponse{Index: idx}, err
	case wire.MethodGetMeta:
		var req wire.GetMetaRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		if err := validate.Name(req.Name); err != nil {
			return nil, err
		}
		idx, m, err := be.GetMeta(ctx, req.Name, backend.MetaOptions{Consistent: req.Consistent, MinIndex: req.MinIndex})
		return &wire.GetMetaResponse{Index: idx, MetaIndex: m.Index, Data: m.Data, Freshness: be.Freshness()}, err
	case wire.MethodReadIndex:
		var req wire.ReadIndexRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		idx, err := be.ReadIndex(ctx)
		return &wire.ReadIndexResponse{Index: idx}, err
	case wire.MethodServices:
		return c.services(ctx, f)
	case wire.MethodMembers, wire.MethodChangeMember:
		return c.members(ctx, f)
	case wire.MethodStatus:
		st, err := be.Status(ctx)
		return &st, err
	case wire.MethodSnapshotSave, wire.MethodSnapshotRestoreBegin, wire.MethodSnapshotRestoreChunk, wire.MethodSnapshotRestoreCommit:
		return c.snapshot(ctx, f)
	case wire.MethodACLBootstrap, wire.MethodACLTokenCreate, wire.MethodACLTokenUpdate, wire.MethodACLTokenDelete,
		wire.MethodACLTokenRead, wire.MethodACLTokenList, wire.MethodACLWhoAmI:
		return c.acl(ctx, f)
	case wire.MethodNodeInfo:
		var req wire.NodeInfoRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		ns, err := be.NodeInfo(ctx, req.StateHash)
		return &ns, err
	}
	return nil, fmt.Errorf("method %q: %w", f.Header.Method, codes.ErrUnknownMethod)
}

// watch runs a stream: events go out as they come, one frame per batch, until
// the client cancels, the connection ends or the backend fails.
func (c *conn) watch(ctx context.Context, f *wire.Frame) {
	seq := f.Header.Seq
	ctx = c.callerContext(ctx, f)
	start := time.Now()
	var req wire.WatchRequest
	err := f.DecodeRequest(&req)
	if err == nil {
		err = validate.Name(req.Name)
	}
	var st backend.UpdateStream
	if err == nil {
		sctx, scancel := context.WithTimeout(ctx, c.s.cfg.RequestTimeout)
		st, err = c.s.be.Subscribe(sctx, req.Name, req.FromIndex, req.MinIndex)
		scancel()
	}
	c.s.stats.observe(wire.MethodWatch, err, time.Since(start))
	if err != nil {
		c.writeError(seq, err)
		return
	}
	defer st.Close()
	// Each Next is bounded by the keepalive interval. One context and one
	// timer serve every Next until the timer fires (an idle stream): a new
	// context per event was a tenth of a busy fan-out's CPU.
	var (
		nctx    context.Context
		ncancel context.CancelFunc
		timer   *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
			ncancel()
		}
	}()
	for {
		if timer == nil {
			nctx, ncancel = context.WithCancel(ctx)
			timer = time.AfterFunc(c.s.cfg.StreamKeepalive, ncancel)
		} else {
			timer.Reset(c.s.cfg.StreamKeepalive)
		}
		evs, err := st.Next(nctx)
		if !timer.Stop() {
			// The interval ran out (perhaps just as Next returned): this
			// context is done; the next Next gets a fresh one.
			timer = nil
			ncancel()
		}
		if err != nil && ctx.Err() == nil && nctx.Err() != nil {
			evs, err = nil, nil // idle: send a keepalive
		}
		if err != nil {
			if ctx.Err() != nil {
				if c.s.ctx.Err() != nil {
					c.writeError(seq, fmt.Errorf("watch ended: %w", codes.ErrShuttingDown))
				}
				return // cancelled by the client or the connection ended
			}
			c.writeError(seq, err)
			return
		}
		if evs == nil {
			evs = []wire.Event{}
		}
		if err := c.write(&wire.Header{Seq: seq, More: true}, &wire.WatchEvents{Events: evs}); err != nil {
			return
		}
	}
}
