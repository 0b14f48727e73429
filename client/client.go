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
// when that one fails, has no leader, is behind what the client has already
// seen, or leaves an attempt unanswered for Config.AttemptTimeout (paused,
// cut off). Writes carry a request id, so a write retried on another server
// is applied once. When every server refuses the connection, a call fails
// with ErrUnavailable after a second round instead of waiting out its
// deadline. Every call has a variant taking a context.Context.
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
	"syscall"
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
	// ErrNotReady: the node has not caught up with the cluster since it
	// started, so it serves no reads; the client asks another node.
	ErrNotReady = codes.ErrNotReady
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
	// ErrRefused: the cluster's state does not allow the operation (a
	// membership change that would lose the quorum, a second ACL
	// bootstrap); nothing changed.
	ErrRefused = codes.ErrRefused
	// ErrPermissionDenied: with ACLs on, the token (Config.Token, or the
	// anonymous token without one) does not allow the operation — the
	// message names the rule it lacks — or it is unknown or expired;
	// nothing changed. Never retried: another server would say the same.
	ErrPermissionDenied = codes.ErrPermissionDenied
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
	// AttemptTimeout bounds one attempt of a call on one server: how long
	// the client waits for the answer to a request it sent. A server that
	// has not answered by then (paused, cut off, overloaded) is given up
	// for the call: its connection is dropped and the call goes on with
	// another server — a write with the same request id, so it is applied
	// once. Default 3 s: the longest a healthy cluster with the servers'
	// default Raft timings keeps an answer waiting is a write forwarded
	// during an election — followers notice a silent leader within 1–2× the
	// 500 ms heartbeat timeout, elect a new one within 1–2× the 500 ms
	// election timeout, then commit a group — about 2 s. Raise it with the
	// servers' -raft-heartbeat-timeout and -raft-election-timeout.
	AttemptTimeout time.Duration
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
	// OnHeartbeat, if set, hears the outcome of every heartbeat of every
	// registration (hooks.go). Default: none.
	OnHeartbeat HeartbeatFunc
	// CacheDir, if set, is a directory (created 0700 if need be) where each
	// ServiceSet keeps its last state: <CacheDir>/<name>.json, mode 0600,
	// replaced atomically at most once a second while it changes, and on
	// Close. When the cluster cannot be reached for a set's initial state,
	// Services starts from that file instead of failing — marked stale, and
	// following the cluster once it answers. A reachable cluster's state
	// always wins; a damaged file, or one of another service, is ignored with
	// a warning (cache.go). Default: none, no files.
	CacheDir string
	// Token is the ACL credential ("<accessor id>.<secret>", as `discoverd
	// acl bootstrap` and `acl token create` print it) sent with every
	// request, heartbeats and watches included. With ACLs on, a request
	// without one gets the anonymous token's rights (none until an
	// operator gives it some); a request the token does not allow fails
	// with ErrPermissionDenied, naming the rule it lacks, and is not
	// retried. Clusters without ACLs ignore it. The CLI takes it from
	// -token or $DISCOVERD_TOKEN. Default: none.
	Token string
}

// Client is safe for concurrent use.
type Client struct {
	cfg     Config
	servers []string
	log     *slog.Logger

	mu    sync.Mutex
	conn  *rpcconn.Conn
	next  int                  // index into servers of the next server to try
	avoid map[string]time.Time // servers that left an attempt unanswered: dialled last until then
	regs  map[regKey]*registration
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
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 3 * time.Second
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

// CurrentServer returns the address of the server this client's connection
// is open to — where its calls, heartbeats and watches go — or "" while it
// has none (before the first call, or after that server failed).
func (c *Client) CurrentServer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.Err() != nil {
		return ""
	}
	return c.conn.Addr()
}

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
			// Only this client's registration: one that another
			// registrant made since is not ours to remove.
			c.mu.Lock()
			index := r.index
			c.mu.Unlock()
			if err := c.unregister(ctx, r.key.name, r.key.addr, index); err != nil && !errors.Is(err, ErrNotFound) {
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

// avoidFor is how long a server that left an attempt (or a watch) without
// an answer is dialled after the others.
const avoidFor = 30 * time.Second

// refusedRounds is how many rounds in a row every server must refuse the
// connection before a call fails at once with ErrUnavailable: one, then
// another after a retry delay. Nothing listening anywhere is not a failover
// that waiting for the deadline would help; timeouts and "no leader" are,
// and are retried until the deadline.
const refusedRounds = 2

// getConn returns the open connection, or dials the servers in turn — each
// once, those to avoid last — until one answers. When none does it returns
// an *unreachableError naming each server once.
func (c *Client) getConn(ctx context.Context) (*rpcconn.Conn, error) {
	c.mu.Lock()
	if c.conn != nil && c.conn.Err() == nil {
		conn := c.conn
		c.mu.Unlock()
		return conn, nil
	}
	order := c.dialOrderLocked(time.Now())
	c.mu.Unlock()
	failed := make(map[string]error, len(order))
	for _, i := range order {
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if ctx.Err() != nil {
			break // no time left to dial: the caller says why it gave up
		}
		addr := c.servers[i]
		conn, err := rpcconn.Dial(ctx, addr, c.dialOptions())
		if err != nil {
			if _, ok := failed[addr]; !ok {
				failed[addr] = err
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
		c.next = (i + 1) % len(c.servers)
		c.mu.Unlock()
		return conn, nil
	}
	return nil, c.unreachable(failed)
}

// dialOptions are the options of every connection the client opens: its
// timeouts, TLS and the token each request carries.
func (c *Client) dialOptions() rpcconn.Options {
	opts := rpcconn.Options{DialTimeout: c.cfg.DialTimeout, TLS: rpcconn.ForServer(c.cfg.TLS)}
	if token := c.cfg.Token; token != "" {
		opts.Token = func(context.Context) string { return token }
	}
	return opts
}

// dialOrderLocked returns the indices of the servers in the order to dial
// them: round-robin from the next one, those to avoid last. It moves the
// round-robin on by one, so concurrent dialers start at different servers.
// c.mu must be held.
func (c *Client) dialOrderLocked(now time.Time) []int {
	n := len(c.servers)
	start := c.next
	c.next = (c.next + 1) % n
	first, last := make([]int, 0, n), []int(nil)
	for k := range n {
		i := (start + k) % n
		if until, ok := c.avoid[c.servers[i]]; ok && now.Before(until) {
			last = append(last, i)
		} else {
			first = append(first, i)
		}
	}
	return append(first, last...)
}

// avoidServer makes getConn dial addr after the others for avoidFor.
func (c *Client) avoidServer(addr string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.avoid == nil {
		c.avoid = map[string]time.Time{}
	}
	for a, until := range c.avoid {
		if !now.Before(until) {
			delete(c.avoid, a)
		}
	}
	c.avoid[addr] = now.Add(avoidFor)
}

// unreachableError is getConn's failure: no server could be dialled. It
// names each server once, with why, and wraps ErrUnavailable.
type unreachableError struct {
	msg     string
	refused bool // every server was dialled and refused the connection
}

func (e *unreachableError) Error() string { return e.msg }
func (e *unreachableError) Unwrap() error { return ErrUnavailable }

// unreachable builds getConn's error from why each server failed (servers
// missing from failed were not dialled: the caller's deadline came first).
func (c *Client) unreachable(failed map[string]error) *unreachableError {
	var addrs, causes []string
	refused, same := len(failed) > 0, true
	listed := map[string]bool{}
	for _, addr := range c.servers {
		err, ok := failed[addr]
		if !ok {
			refused = false
			continue
		}
		if listed[addr] {
			continue
		}
		listed[addr] = true
		cause, r := dialCause(addr, err)
		refused = refused && r
		same = same && (len(causes) == 0 || cause == causes[0])
		addrs, causes = append(addrs, addr), append(causes, cause)
	}
	if len(addrs) == 0 {
		return &unreachableError{msg: "no discoverd server dialled: no time left"}
	}
	why := causes[0]
	if !same {
		for i := range causes {
			causes[i] = addrs[i] + ": " + causes[i]
		}
		why = strings.Join(causes, "; ")
	}
	return &unreachableError{msg: fmt.Sprintf("no discoverd server reachable at %s (%s)", strings.Join(addrs, ", "), why), refused: refused}
}

// refusals are the dial failures that say nothing listens at an address or
// no route leads there, as opposed to one that may only be slow.
var refusals = []syscall.Errno{syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH}

// dialCause returns the short reason a dial of addr failed, and whether the
// connection was refused. rpcconn flattens the network error into its
// message, so an errno is recognised by its text as well.
func dialCause(addr string, err error) (cause string, refused bool) {
	msg := err.Error()
	for _, errno := range refusals {
		if errors.Is(err, errno) || strings.Contains(msg, errno.Error()) {
			return errno.Error(), true
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(msg, "i/o timeout") {
		return "timed out", false
	}
	msg = strings.TrimSuffix(msg, ": "+ErrUnavailable.Error())
	if msg == "dial "+addr {
		return "no time left to dial", false
	}
	return strings.TrimPrefix(msg, "dial "+addr+": "), false
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

// call runs one request with failover. Each attempt waits at most
// AttemptTimeout for its answer; errors that say "try elsewhere or later"
// (no answer in time, no leader, not leader, stale or not ready node,
// shutting down, unreachable, unknown outcome — writes carry a request id,
// the same on every attempt) are retried on another server until ctx ends;
// others (permission_denied among them) are returned. ACL writes carry no
// request id: they are retried only while an error proves them unapplied
// (onceWrite). When every server refused the connection in
// refusedRounds rounds in a row, the call fails at once with ErrUnavailable
// — but for heartbeats: they run in the background, and keep trying for
// their whole window in case a server comes back within it. A write that
// gives up after an attempt that may have been applied says so first
// (ErrUnknownOutcome), whatever failed after it.
func (c *Client) call(ctx context.Context, method string, req, resp any) error {
	var last, unknown error // unknown: the first attempt of a write that may have been applied
	refused := 0            // rounds in a row in which every server refused the connection
	for {
		if c.ctx.Err() != nil && method != wire.MethodUnregister {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			// Never send a request whose caller has already given up.
			if last == nil {
				return fmt.Errorf("%s not sent: %w", method, err)
			}
			return outcomeFirst(unknown, fmt.Errorf("%w (gave up: %w)", last, err))
		}
		silent, err := c.attempt(ctx, method, req, resp)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil {
			// An attempt cut short by the caller's deadline says less than
			// the failure before it.
			last = err
		}
		if unknown == nil && isWrite(method) && (errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrTimeout)) {
			unknown = err
		}
		if onceWrite(method) && !codes.NotApplied(err) {
			// Sent, and perhaps applied: a second attempt could apply it
			// twice (a second token) or be refused for the first (bootstrap).
			if codes.Retryable(err) {
				return fmt.Errorf("%w; not retried: %s carries no request id, so it may have been applied — check before trying again", err, method)
			}
			return err
		}
		if !codes.Retryable(err) && ctx.Err() == nil {
			return err
		}
		var ue *unreachableError
		if errors.As(err, &ue) && ue.refused {
			if refused++; refused >= refusedRounds && method != wire.MethodHeartbeat {
				return outcomeFirst(unknown, err)
			}
		} else {
			refused = 0
		}
		if !silent {
			// A server that kept this attempt waiting has been left; any
			// other failure came fast: pause before the next attempt.
			_ = sleep(ctx, retryDelay())
		}
	}
}

// isWrite reports whether method changes the registry (and carries a request id).
func isWrite(method string) bool {
	switch method {
	case wire.MethodRegister, wire.MethodUnregister, wire.MethodSetMeta, wire.MethodDeleteMeta:
		return true
	}
	return false
}

// onceWrite reports whether method is a write without a request id — the
// ACL token changes. call retries it only after an error that proves it was
// not applied (not sent, no leader, not leader, ...): a write that may have
// reached the leader fails with that error instead of being sent again.
func onceWrite(method string) bool {
	switch method {
	case wire.MethodACLBootstrap, wire.MethodACLTokenCreate, wire.MethodACLTokenUpdate, wire.MethodACLTokenDelete:
		return true
	}
	return false
}

// outcomeFirst returns err, why a call gave up, led by unknown — an earlier
// attempt of the write that was sent and not answered — if there was one and
// err alone would say "not applied": the write may have been applied, and
// errors.Is and codes.Of must say ErrUnknownOutcome.
func outcomeFirst(unknown, err error) error {
	if unknown == nil || !codes.NotApplied(err) {
		return err
	}
	return fmt.Errorf("%w; then %w", unknown, err)
}

// attempt makes one try of a call: a connection (dialled if need be), the
// request, and at most AttemptTimeout for its answer. silent reports that
// the server gave no answer in time; its connection has been dropped and
// the server is dialled last for a while.
func (c *Client) attempt(ctx context.Context, method string, req, resp any) (silent bool, err error) {
	conn, err := c.getConn(ctx)
	if err != nil {
		return false, err
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	err = conn.Call(actx, method, false, req, resp)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, codes.ErrTimeout) && actx.Err() != nil && ctx.Err() == nil:
		// Not even an error within an attempt: paused, cut off or
		// overloaded. Leave it; a write may have been applied, and is
		// retried with its request id.
		c.avoidServer(conn.Addr())
		c.dropConn(conn)
		outcome := ErrTimeout
		if isWrite(method) || onceWrite(method) {
			outcome = ErrUnknownOutcome
		}
		c.log.Debug("discoverd server did not answer in time, trying another", "method", method, "server", conn.Addr(), "timeout", c.cfg.AttemptTimeout)
		return true, fmt.Errorf("%s to %s: no answer within %v: %w", method, conn.Addr(), c.cfg.AttemptTimeout, outcome)
	case codes.Retryable(err):
		// This server cannot help now (gone, behind, not ready, without a
		// leader or cut off from it): move on to the next.
		c.dropConn(conn)
		c.log.Debug("discoverd call failed, trying another server", "method", method, "server", conn.Addr(), "err", err)
	}
	return false, err
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
	// Index is the index of the last registration; in a watch's change
	// event, the index of that change (a registration, or a change of
	// Suspect).
	Index uint64
	// Suspect: the instance's TTL ran out, but the leader's expiry-storm
	// guard holds its expiry back, because a large share of the service
	// stopped heartbeating at once (docs/protocol.md, "List"). It may come
	// back (a heartbeat clears it) or be expired within the guard's max hold.
	Suspect bool
}

func serviceFromWire(in *wire.Instance) *Service {
	return &Service{Name: in.Name, Addr: in.Addr, Attrs: in.Attrs, TTL: time.Duration(in.TTLMillis) * time.Millisecond,
		CreateIndex: in.CreateIndex, Index: in.Index, Suspect: in.Suspect}
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
	r, err := c.List(ctx, name, opts)
	if err != nil {
		return nil, 0, err
	}
	return r.Instances, r.Index, nil
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
