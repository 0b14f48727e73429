// Package client is discoverd's Go client: register instances (heartbeats
// run behind the scenes), look services up, and keep live, filtered views of
// them that follow every change.
//
//	c, err := client.New() // servers from $DISCOVERD, else 127.0.0.1:1111
//	err = c.Register("cache", 9876, map[string]string{"id": "cache1"})
//	queues, err := c.Services("queue")
//	for s := range queues.Online() {
//		connect(s.Addr)
//	}
//
// A client talks to one server of its list at a time and moves to the next
// when that one fails, has no leader, or is behind what the client has
// already seen. Writes carry a request id, so a write retried on another
// server is applied once. Every call has a variant taking a context.Context.
//
// Errors wrap the sentinels below; errors.Is works on errors that crossed the
// network. The package imports no server code.
package client

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// Sentinels, the same values the server's errors carry.
var (
	// ErrInvalidArgument: bad input (name, address, attributes, TTL); nothing changed.
	ErrInvalidArgument = codes.ErrInvalidArgument
	// ErrNotFound: the instance is not registered.
	ErrNotFound = codes.ErrNotFound
	// ErrNoLeader: the cluster has no leader; the write was not applied.
	ErrNoLeader = codes.ErrNoLeader
	// ErrNotLeader: a forwarded write reached a node that is no longer leader; not applied.
	ErrNotLeader = codes.ErrNotLeader
	// ErrUnknownOutcome: a write may or may not have been applied.
	ErrUnknownOutcome = codes.ErrUnknownOutcome
	// ErrStaleNode: the node is behind an index this client has seen.
	ErrStaleNode = codes.ErrStaleNode
	// ErrTooLarge: a request exceeded a size limit; nothing changed.
	ErrTooLarge = codes.ErrTooLarge
	// ErrTimeout: no answer in time.
	ErrTimeout = codes.ErrTimeout
	// ErrUnavailable: no server could be reached.
	ErrUnavailable = codes.ErrUnavailable
	// ErrShuttingDown: the server is stopping.
	ErrShuttingDown = codes.ErrShuttingDown
	// ErrOverloaded: the leader could not take the write in time; not applied.
	ErrOverloaded = codes.ErrOverloaded
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("discoverd client closed")
)

// DefaultPort is discoverd's client port.
const DefaultPort = 1111

// DefaultTTL is the TTL of a registration that does not set one.
const DefaultTTL = validate.DefaultTTL

// Config configures a Client. Zero fields take their defaults.
type Config struct {
	// Servers to talk to (host:port). Default: $DISCOVERD (comma-separated),
	// else 127.0.0.1:1111.
	Servers []string
	// RequestTimeout bounds calls made without a context (Register, ...),
	// retries included. Default 15 s.
	RequestTimeout time.Duration
	// DialTimeout bounds one connection attempt. Default 2 s.
	DialTimeout time.Duration
	// StreamIdleTimeout is how long a watch waits without any frame (servers
	// send a keepalive every 2 s) before it gives the server up for dead —
	// e.g. paused — and resumes on another. Default 6 s.
	StreamIdleTimeout time.Duration
	// TTL for registrations made without one. Default 10 s.
	TTL time.Duration
	// Host is the address registered by Register(name, port, ...). Default:
	// $DISCOVERD_HOST, else the local IP this machine uses to reach the first server.
	Host string
	// TLS, if set, makes every connection TLS. Servers are verified by the
	// host dialled (per server address) unless TLS.ServerName is set; give
	// Certificates when the servers require client certificates (their
	// default). The CLI builds one from -ca, -cert and -key.
	TLS *tls.Config
	// Logger receives heartbeat failures and failovers. Default: discard.
	Logger *slog.Logger
}

// Client is safe for concurrent use.
type Client struct {
	cfg     Config
	servers []string
	log     *slog.Logger

	mu   sync.Mutex
	conn *rpcconn.Conn
	next int // index into servers of the next server to try
	regs map[regKey]*registration
	// The heartbeat loop (heartbeat.go); started with the first registration.
	hbStarted bool
	hbWake    chan struct{}
	sets      map[*ServiceSet]struct{}
	closed    bool
	seen      atomic.Uint64 // highest index this client has seen
	ctx       context.Context
	cancel    context.CancelFunc
	loopsWG   sync.WaitGroup
}

// New returns a client for the given servers, or for $DISCOVERD (else
// 127.0.0.1:1111) when none are given. It does not connect yet: the first
// call does, and errors then say which servers could not be reached.
func New(servers ...string) (*Client, error) {
	return NewWithConfig(Config{Servers: servers})
}

// ServersFromEnv returns $DISCOVERD split on commas, or 127.0.0.1:1111.
func ServersFromEnv() []string {
	if env := strings.TrimSpace(os.Getenv("DISCOVERD")); env != "" {
		return splitServers(env)
	}
	return []string{fmt.Sprintf("127.0.0.1:%d", DefaultPort)}
}

func splitServers(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NewWithConfig returns a client with explicit settings.
func NewWithConfig(cfg Config) (*Client, error) {
	servers := cfg.Servers
	if len(servers) == 0 {
		servers = ServersFromEnv()
	}
	var list []string
	for _, s := range servers {
		list = append(list, splitServers(s)...)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("no discoverd servers given: %w", ErrInvalidArgument)
	}
	for i, s := range list {
		if !strings.Contains(s, ":") {
			s = net.JoinHostPort(s, fmt.Sprint(DefaultPort))
			list[i] = s
		}
		if err := validate.Addr(s); err != nil {
			return nil, fmt.Errorf("server %q: %w", s, err)
		}
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 15 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = 6 * time.Second
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if err := validate.TTL(cfg.TTL); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		cfg.Host = os.Getenv("DISCOVERD_HOST")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{cfg: cfg, servers: list, log: cfg.Logger, next: rand.IntN(len(list)),
		regs: map[regKey]*registration{}, sets: map[*ServiceSet]struct{}{}, ctx: ctx, cancel: cancel}, nil
}

// Servers returns the servers this client uses.
func (c *Client) Servers() []string { return append([]string(nil), c.servers...) }

// LastIndex returns the highest index this client has seen. Reads and
// watches are never served from a state older than it.
func (c *Client) LastIndex() uint64 { return c.seen.Load() }

func (c *Client) observe(idx uint64) {
	for {
		cur := c.seen.Load()
		if idx <= cur || c.seen.CompareAndSwap(cur, idx) {
			return
		}
	}
}

// Close stops every heartbeat and watch, unregisters this client's
// registrations (best effort, bounded by the request timeout) and closes the
// connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	regs := make([]*registration, 0, len(c.regs))
	var rereg []chan struct{}
	for _, r := range c.regs {
		regs = append(regs, r)
		if r.rereg != nil {
			rereg = append(rereg, r.rereg)
		}
	}
	c.regs = map[regKey]*registration{} // the heartbeat loop drops what it still holds
	sets := make([]*ServiceSet, 0, len(c.sets))
	for s := range c.sets {
		sets = append(sets, s)
	}
	c.mu.Unlock()
	for _, s := range sets {
		s.Close()
	}
	for _, ch := range rereg {
		<-ch // registrations-again in flight must not land after the unregistrations
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
	defer cancel()
	// Unregister concurrently (bounded): a client with many instances should
	// not take one round trip each to go away.
	var (
		errMu sync.Mutex
		errs  []error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 32)
	)
	for _, r := range regs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.unregister(ctx, r.key.name, r.key.addr); err != nil && !errors.Is(err, ErrNotFound) {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	c.cancel()
	c.loopsWG.Wait()
	c.mu.Lock()
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// getConn returns the open connection, or dials servers in turn until one
// answers or ctx ends.
func (c *Client) getConn(ctx context.Context) (*rpcconn.Conn, error) {
	c.mu.Lock()
	if c.conn != nil && c.conn.Err() == nil {
		conn := c.conn
		c.mu.Unlock()
		return conn, nil
	}
	c.mu.Unlock()
	var errs []string
	for i := 0; i < len(c.servers); i++ {
		c.mu.Lock()
		if c.closed && c.ctx.Err() != nil {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		addr := c.servers[c.next]
		c.next = (c.next + 1) % len(c.servers)
		c.mu.Unlock()
		conn, err := rpcconn.Dial(ctx, addr, rpcconn.Options{DialTimeout: c.cfg.DialTimeout, TLS: rpcconn.ForServer(c.cfg.TLS)})
		if err != nil {
			errs = append(errs, err.Error())
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c.mu.Lock()
		if c.conn != nil && c.conn.Err() == nil {
			// Someone else connected meanwhile; use theirs.
			c.mu.Unlock()
			_ = conn.Close()
			return c.getConn(ctx)
		}
		c.conn = conn
		c.mu.Unlock()
		return conn, nil
	}
	return nil, fmt.Errorf("no discoverd server reachable (%s): %w", strings.Join(errs, "; "), ErrUnavailable)
}

// dropConn abandons conn (if still current) so the next call moves on to
// another server.
func (c *Client) dropConn(conn *rpcconn.Conn) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	c.mu.Unlock()
	_ = conn.Close()
}

// retryDelay is the pause before the next attempt: 200–400 ms.
func retryDelay() time.Duration { return 200*time.Millisecond + rand.N(200*time.Millisecond) }

// call runs one request with failover: errors that say "try elsewhere or
// later" (no leader, stale node, unreachable, unknown outcome for writes that
// carry a request id) are retried until ctx ends; others are returned.
func (c *Client) call(ctx context.Context, method string, req, resp any) error {
	var last error
	for attempt := 0; ; attempt++ {
		if c.ctx.Err() != nil && method != wire.MethodUnregister {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			// Never send a request whose caller has already given up.
			if last == nil {
				return fmt.Errorf("%s not sent: %w", method, err)
			}
			break
		}
		conn, err := c.getConn(ctx)
		if err == nil {
			err = conn.Call(ctx, method, false, req, resp)
			if err == nil {
				return nil
			}
			if codes.Retryable(err) {
				// This server cannot help now (unreachable, paused, behind,
				// without a leader or cut off from it): move on to the next.
				c.dropConn(conn)
				c.log.Debug("discoverd call failed, trying another server", "method", method, "server", conn.Addr(), "err", err)
			}
		}
		if last == nil || !errors.Is(err, ctx.Err()) {
			// An attempt cut short by the caller's deadline says less than
			// the failure before it.
			last = err
		}
		if !codes.Retryable(err) || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(retryDelay())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil && !errors.Is(last, ctx.Err()) {
		return fmt.Errorf("%w (gave up: %w)", last, ctx.Err())
	}
	return last
}

// withTimeout gives calls without a context the configured request timeout.
func (c *Client) withTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
}

func newRequestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Service is one registered instance.
type Service struct {
	Name        string
	Addr        string // host:port
	Attrs       map[string]string
	TTL         time.Duration
	CreateIndex uint64 // index of the first registration: the oldest is the service's leader, and this is its fencing token
	Index       uint64 // index of the last registration
}

func serviceFromWire(in *wire.Instance) *Service {
	return &Service{Name: in.Name, Addr: in.Addr, Attrs: in.Attrs, TTL: time.Duration(in.TTLMillis) * time.Millisecond,
		CreateIndex: in.CreateIndex, Index: in.Index}
}

// ListOptions shape Instances.
type ListOptions struct {
	// Attrs keeps only instances that carry every one of these attributes.
	Attrs map[string]string
	// Consistent makes the read linearizable (served by the confirmed leader).
	Consistent bool
}

// Instances reads a service's instances once, oldest registration first, and
// returns the index of the state read.
func (c *Client) Instances(ctx context.Context, name string, opts ListOptions) ([]*Service, uint64, error) {
	if err := validate.Name(name); err != nil {
		return nil, 0, err
	}
	if err := validate.Attrs(opts.Attrs); err != nil {
		return nil, 0, err
	}
	var resp wire.ListResponse
	req := &wire.ListRequest{Name: name, Attrs: opts.Attrs, Consistent: opts.Consistent, MinIndex: c.LastIndex()}
	if err := c.call(ctx, wire.MethodList, req, &resp); err != nil {
		return nil, 0, err
	}
	c.observe(resp.Index)
	out := make([]*Service, len(resp.Instances))
	for i := range resp.Instances {
		out[i] = serviceFromWire(&resp.Instances[i])
	}
	return out, resp.Index, nil
}

// NodeStatus describes one node.
type NodeStatus = wire.NodeStatus

// Status describes the cluster as seen by the server the client talks to.
type Status = wire.StatusResponse

// Status returns the cluster's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var resp wire.StatusResponse
	if err := c.call(ctx, wire.MethodStatus, &wire.Empty{}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
