// Package rpcconn is the client side of discoverd's native protocol: one TCP
// connection carrying many concurrent calls and streams, told apart by their
// sequence numbers. The Go client (client/) and nodes forwarding to the
// leader (rpc/, backend/raftstore) both use it.
package rpcconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/wire"
)

// Options tune a connection.
type Options struct {
	DialTimeout  time.Duration // default 2 s
	WriteTimeout time.Duration // per frame, default 10 s
	MaxFrame     int           // largest frame accepted from the server, default 128 MiB
	MaxRequest   int           // largest frame sent; larger requests fail with codes.ErrTooLarge unsent, default 1 MiB (the server's default limit)
	StreamBuffer int           // frames buffered per stream; a stream whose reader falls further behind is ended with ErrOverflow, default 64
	// TLS, if set, gives the TLS configuration for dialling addr (called
	// per connection). Nil: plaintext.
	TLS func(addr string) *tls.Config
	// Proto is the protocol byte the connection opens with (internal/mux).
	// Default mux.ConnRPC.
	Proto byte
	// Token, if set, gives the credential each request carries in its
	// header (wire.Header.Token) for a node with ACLs on; called per
	// request with the request's context. Nil or "": none.
	Token func(ctx context.Context) string
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = 128 << 20
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = wire.DefaultMaxFrame
	}
	if o.StreamBuffer <= 0 {
		o.StreamBuffer = 64
	}
	if o.Proto == 0 {
		o.Proto = mux.ConnRPC
	}
	return o
}

// Conn is one connection to a node. Safe for concurrent use.
type Conn struct {
	addr string
	opts Options
	nc   net.Conn

	w *wire.FrameWriter

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]*waiter
	calls   atomic.Int32 // len(pending), for the writer's SetSolo
	err     error        // set once the connection failed
	done    chan struct{}

	lastRecv atomic.Int64 // when the last frame arrived (Unix ns)

	certAsked bool // the node asked for a client certificate and none was configured
}

// errNoClientCert is added to the error of a connection that broke before
// its first answer after the node asked for a client certificate this
// client does not have.
const errNoClientCert = "the node asked for a client certificate and this client has none: if the node requires one, give it (discoverd: -cert and -key, or $DISCOVERD_CERT and $DISCOVERD_KEY; the Go client: Config.TLS with Certificates)"

// withCertHint adds errNoClientCert to err when it applies.
func (c *Conn) withCertHint(err error) error {
	if !c.certAsked || c.lastRecv.Load() != 0 || strings.Contains(err.Error(), "client certificate") {
		return err
	}
	return fmt.Errorf("%w; %s", err, errNoClientCert)
}

// ForServer returns a TLS option for clients: cfg for every address, with
// the server verified by the host dialled (unless cfg names a ServerName).
func ForServer(cfg *tls.Config) func(addr string) *tls.Config {
	if cfg == nil {
		return nil
	}
	return func(addr string) *tls.Config {
		c := cfg.Clone()
		if c.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			c.ServerName = host
		}
		return c
	}
}

// Dial connects to a node's port and speaks the RPC protocol on it.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	opts = opts.withDefaults()
	timeout := opts.DialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("dial %s: %w", addr, codes.ErrUnavailable)
	}
	var tlsCfg *tls.Config
	if opts.TLS != nil {
		tlsCfg = opts.TLS(addr)
	}
	// In TLS 1.3 a node refuses a missing client certificate only after
	// the handshake, with an alert the first write can race (it then fails
	// with "broken pipe"): note whether the node asked for one, to say so.
	var certAsked atomic.Bool
	if tlsCfg != nil && len(tlsCfg.Certificates) == 0 && tlsCfg.GetClientCertificate == nil {
		tlsCfg = tlsCfg.Clone()
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			certAsked.Store(true)
			return &tls.Certificate{}, nil
		}
	}
	nc, err := mux.Dial(addr, opts.Proto, timeout, tlsCfg)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %v: %w", addr, err, codes.ErrUnavailable)
	}
	tcp := nc
	if tc, ok := nc.(*tls.Conn); ok {
		tcp = tc.NetConn()
	}
	if tc, ok := tcp.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(15 * time.Second)
	}
	c := &Conn{addr: addr, opts: opts, nc: nc, w: wire.NewFrameWriter(nc, opts.WriteTimeout),
		pending: map[uint64]*waiter{}, done: make(chan struct{}), certAsked: certAsked.Load()}
	c.w.SetSolo(func() bool { return c.calls.Load() <= 1 })
	go c.readLoop()
	return c, nil
}

// Addr is the address dialled.
func (c *Conn) Addr() string { return c.addr }

// Done is closed when the connection has failed or been closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection; pending calls fail.
func (c *Conn) Close() error {
	c.fail(errors.New("connection closed"))
	return nil
}

func (c *Conn) fail(err error) {
	err = c.withCertHint(err)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	c.mu.Unlock()
	_ = c.nc.Close()
}

func (c *Conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		f, err := wire.ReadFrame(br, c.opts.MaxFrame)
		if err != nil {
			c.fail(fmt.Errorf("connection to %s lost: %v", c.addr, err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		seq := f.Header.Seq
		c.mu.Lock()
		w := c.pending[seq]
		if w == nil {
			c.mu.Unlock()
			continue // a response to an abandoned call or a cancelled stream
		}
		if !f.Header.More {
			delete(c.pending, seq)
			c.calls.Store(int32(len(c.pending)))
		}
		// Never wait for a reader: one slow stream must not hold up every
		// other call and stream on the connection (heartbeats included).
		select {
		case w.ch <- f:
		default:
			// Only a stream can be full (a call gets one answer into a
			// buffer of one). End it; its reader resumes on a new stream.
			delete(c.pending, seq)
			c.calls.Store(int32(len(c.pending)))
			if w.overflow == nil { // a call answered twice: the server is broken
				c.mu.Unlock()
				c.fail(fmt.Errorf("connection to %s: a second answer to call %d", c.addr, seq))
				return
			}
			close(w.overflow)
			go func() { _ = c.write(&wire.Header{Method: wire.MethodCancel}, &wire.CancelRequest{Seq: seq}) }()
		}
		c.mu.Unlock()
	}
}

// waiter is a call or stream waiting for frames.
type waiter struct {
	ch       chan *wire.Frame
	overflow chan struct{} // a stream's: closed when its buffer overflowed (nil for a call)
}

// ErrOverflow ends a stream whose reader fell more than StreamBuffer frames
// behind. The connection is fine: open a new stream (resuming by index).
var ErrOverflow = errors.New("stream reader fell behind; stream ended")

func (c *Conn) register(buf int, stream bool) (uint64, *waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, nil, fmt.Errorf("%v: %w", c.err, codes.ErrUnavailable)
	}
	c.seq++
	w := &waiter{ch: make(chan *wire.Frame, buf)}
	if stream {
		w.overflow = make(chan struct{}) // a call's one answer always fits its buffer
	}
	c.pending[c.seq] = w
	c.calls.Store(int32(len(c.pending)))
	return c.seq, w, nil
}

func (c *Conn) unregister(seq uint64) {
	c.mu.Lock()
	delete(c.pending, seq)
	c.calls.Store(int32(len(c.pending)))
	c.mu.Unlock()
}

// errNotSent wraps errors from a request that never left this process.
type errNotSent struct{ err error }

func (e *errNotSent) Error() string { return e.err.Error() }
func (e *errNotSent) Unwrap() error { return e.err }

func (c *Conn) write(hdr *wire.Header, body any) error {
	err := c.w.WriteFrame(hdr, body, c.opts.MaxRequest)
	var tl *wire.TooLargeError
	switch {
	case errors.As(err, &tl):
		return &errNotSent{fmt.Errorf("%s request: %v, the server's limit: %w", hdr.Method, tl, codes.ErrTooLarge)}
	case errors.Is(err, wire.ErrEncode):
		return &errNotSent{fmt.Errorf("%s request: %v: %w", hdr.Method, err, codes.ErrInvalidArgument)}
	}
	if err != nil {
		c.fail(fmt.Errorf("write to %s: %v", c.addr, err))
	}
	return err
}

// Call sends one request and decodes the response into resp. Errors carry a
// codes sentinel: ErrUnavailable when the request was never sent (safe to
// retry anywhere), ErrUnknownOutcome when the connection broke after sending,
// ErrTimeout when ctx ended before the answer, or the server's own error.
func (c *Conn) Call(ctx context.Context, method string, forwarded bool, req, resp any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s not sent: %w", method, err)
	}
	seq, w, err := c.register(1, false)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	sent := time.Now().UnixNano()
	if err := c.write(&wire.Header{Seq: seq, Method: method, Forwarded: forwarded, Token: c.token(ctx)}, req); err != nil {
		c.unregister(seq)
		var ns *errNotSent
		if errors.As(err, &ns) {
			return ns.err
		}
		// A partial frame may have reached the server; only a request that
		// never left is known not to have been applied, and we cannot tell.
		// If the connection had failed already (the server refused a TLS
		// client certificate, say), that is the reason worth reading.
		if cerr := c.Err(); cerr != nil && !strings.Contains(err.Error(), cerr.Error()) {
			err = fmt.Errorf("%v (%v)", err, cerr)
		}
		err = c.withCertHint(err)
		return fmt.Errorf("%s to %s: sending failed: %v: %w", method, c.addr, err, codes.ErrUnknownOutcome)
	}
	answer := func(f *wire.Frame) error {
		if err := f.Header.Err(); err != nil {
			return err
		}
		if resp == nil {
			return nil
		}
		if err := f.Decode(resp); err != nil {
			// The server reported success; only its answer is unreadable.
			// That must not read as "not applied".
			return fmt.Errorf("%s to %s: undecodable answer: %v: %w", method, c.addr, err, codes.ErrInternal)
		}
		return nil
	}
	select {
	case f := <-w.ch:
		return answer(f)
	case <-c.done:
		select {
		case f := <-w.ch: // the answer arrived before the connection broke
			return answer(f)
		default:
		}
		return fmt.Errorf("%s to %s: %v before the answer: %w", method, c.addr, c.Err(), codes.ErrUnknownOutcome)
	case <-ctx.Done():
		c.unregister(seq)
		if c.lastRecv.Load() < sent {
			// Not one frame since this request went out: the connection (or
			// the server behind it) is stuck. Give it up so the next call
			// dials afresh instead of queueing behind it.
			c.fail(fmt.Errorf("connection to %s silent since a %s request was sent", c.addr, method))
		}
		return fmt.Errorf("%s to %s: no answer: %v: %w", method, c.addr, ctx.Err(), codes.ErrTimeout)
	}
}

// Stream opens a server stream (Watch). Frames arrive through Recv until the
// server ends the stream, the connection fails or Close is called.
func (c *Conn) Stream(ctx context.Context, method string, req any) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s not sent: %w", method, err)
	}
	seq, w, err := c.register(c.opts.StreamBuffer, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	if err := c.write(&wire.Header{Seq: seq, Method: method, Token: c.token(ctx)}, req); err != nil {
		c.unregister(seq)
		return nil, fmt.Errorf("%s to %s: %v: %w", method, c.addr, err, codes.ErrUnavailable)
	}
	return &Stream{c: c, seq: seq, w: w}, nil
}

// Stream is an open server stream.
type Stream struct {
	c      *Conn
	seq    uint64
	w      *waiter
	ended  atomic.Bool // Recv's goroutine sets it; Close reads it from any goroutine
	closed sync.Once
}

// Recv waits for the next frame of the stream and decodes its body into v.
// It returns io.EOF-like errors as codes: the server's error when it ended
// the stream, ErrUnavailable when the connection failed.
func (s *Stream) Recv(ctx context.Context, v any) error {
	if s.ended.Load() {
		return fmt.Errorf("stream ended: %w", codes.ErrUnavailable)
	}
	// Frames already buffered come first, even after an overflow or a
	// broken connection: they are valid and in order.
	if f, ok := s.buffered(); ok {
		return s.frame(f, v)
	}
	var end error
	select {
	case f := <-s.w.ch:
		return s.frame(f, v)
	case <-s.w.overflow:
		end = ErrOverflow
	case <-s.c.done:
		end = fmt.Errorf("stream from %s: %v: %w", s.c.addr, s.c.Err(), codes.ErrUnavailable)
	case <-ctx.Done():
		return ctx.Err()
	}
	if f, ok := s.buffered(); ok {
		return s.frame(f, v)
	}
	s.ended.Store(true)
	return end
}

// buffered returns a frame already waiting, if any.
func (s *Stream) buffered() (*wire.Frame, bool) {
	select {
	case f := <-s.w.ch:
		return f, true
	default:
		return nil, false
	}
}

func (s *Stream) frame(f *wire.Frame, v any) error {
	if !f.Header.More {
		s.ended.Store(true)
		if err := f.Header.Err(); err != nil {
			return err
		}
		return fmt.Errorf("server ended the stream: %w", codes.ErrUnavailable)
	}
	return f.Decode(v)
}

// Addr is the address of the server the stream comes from.
func (s *Stream) Addr() string { return s.c.addr }

// Conn is the connection the stream runs on.
func (s *Stream) Conn() *Conn { return s.c }

// Close cancels the stream on the server.
func (s *Stream) Close() {
	s.closed.Do(func() {
		s.c.unregister(s.seq)
		if !s.ended.Load() {
			go func() { _ = s.c.write(&wire.Header{Method: wire.MethodCancel}, &wire.CancelRequest{Seq: s.seq}) }()
		}
	})
}

var errPoolClosed = fmt.Errorf("connection pool closed: %w", codes.ErrShuttingDown)

// token is the credential a request made with ctx carries.
func (c *Conn) token(ctx context.Context) string {
	if c.opts.Token == nil {
		return ""
	}
	return c.opts.Token(ctx)
}
