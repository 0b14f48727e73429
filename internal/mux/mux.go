// Package mux shares one TCP listener between hashicorp/raft's transport and
// discoverd's RPC: every connection opens with one byte saying which it is
// for, so an operator gives each node a single host:port.
//
// With TLS, the whole connection is TLS and the protocol byte is the first
// byte inside it: the peer is authenticated before the node reads which
// protocol it wants, and a protocol may demand more of it (Raft: a server
// certificate of the cluster, see Config.Authorize) before its first byte
// reaches the protocol's server.
//
// The mux bounds what strangers can hold: connections in all and per remote
// IP, connections not yet through the handshake (TLS and the protocol
// byte), and how long that handshake may take. A connection over a limit is
// closed at once, before a byte is read.
package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The first byte of a connection to a node's single port: which protocol
// the connection is for. docs/protocol.md lists them for implementers.
const (
	ConnRaft byte = 1 // hashicorp/raft's transport (raftnode)
	ConnRPC  byte = 2 // discoverd's native protocol (internal/wire)
	ConnPeer byte = 3 // node to node: heartbeat deadline tables (backend/raftstore/deadlines.go)
)

// Config shapes a Mux. Zero fields take their defaults.
type Config struct {
	// TLS, if set, makes every connection TLS: the handshake comes first,
	// the protocol byte inside it.
	TLS *tls.Config
	// Authorize, if set, is asked about every connection once its protocol
	// byte is read (state is nil without TLS); an error closes it.
	Authorize func(proto byte, state *tls.ConnectionState) error
	// HandshakeTimeout bounds the TLS handshake and the protocol byte
	// together. Default 5 s.
	HandshakeTimeout time.Duration
	// MaxConns bounds the connections open at once. Default 4096.
	MaxConns int
	// MaxConnsPerIP bounds the connections open at once from one remote IP.
	// Default 1024.
	MaxConnsPerIP int
	// MaxHandshakes bounds the connections not yet through the handshake
	// (unauthenticated, with TLS). Default 256.
	MaxHandshakes int
	Logger        *slog.Logger
}

// Defaults of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxConns         = 4096
	DefaultMaxConnsPerIP    = 1024
	DefaultMaxHandshakes    = 256
)

func (c Config) withDefaults() Config {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrClosed is returned by Accept on a closed listener.
var ErrClosed = errors.New("mux: listener closed")

// Mux accepts connections and hands each to the sub-listener registered for
// its first byte. Connections with an unknown first byte, or none within the
// handshake timeout, or that Authorize refuses, are closed.
type Mux struct {
	ln  net.Listener
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	subs    map[byte]*Listener
	waiting map[net.Conn]struct{} // connections still in their handshake
	conns   int                   // open connections (counted until closed)
	perIP   map[string]int        // open connections by remote IP
	byProto [256]int              // open connections handed over, by protocol byte
	refused [numLimits]uint64     // connections closed at once, by the limit (stats)
	closed  bool
	wg      sync.WaitGroup
}

// New wraps ln. Call Listen for each protocol, then Serve.
func New(ln net.Listener, cfg Config) *Mux {
	cfg = cfg.withDefaults()
	return &Mux{ln: ln, cfg: cfg, log: cfg.Logger, subs: map[byte]*Listener{}, waiting: map[net.Conn]struct{}{}, perIP: map[string]int{}}
}

// Addr is the shared listener's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Listen returns the listener for connections that start with b.
func (m *Mux) Listen(b byte) *Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Unbuffered: a connection is handed over only to a running Accept, so
	// none can sit in a queue that nobody will ever drain or close.
	l := &Listener{addr: m.ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	m.subs[b] = l
	return l
}

// Serve accepts until the shared listener is closed.
func (m *Mux) Serve() error {
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(5*time.Millisecond, 2*backoff), time.Second)
				m.log.Warn("accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			m.wg.Wait()
			return err
		}
		backoff = 0
		cc, why := m.admit(c)
		if cc == nil {
			_ = c.Close()
			if why != "" {
				m.log.Debug("connection refused at once", "remote", c.RemoteAddr(), "limit", why)
			}
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handoff(cc)
		}()
	}
}

// remoteIP is the IP a connection comes from (its whole address if it has
// no IP, e.g. a pipe in tests).
func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// admit counts a new connection against the limits and returns it wrapped
// so that closing it gives its place back; nil (and the limit) if it is
// over one, or the mux is closed.
func (m *Mux) admit(c net.Conn) (*countedConn, string) {
	ip := remoteIP(c)
	m.mu.Lock()
	defer m.mu.Unlock()
	var why string
	limit := -1
	switch {
	case m.closed:
		return nil, ""
	case m.conns >= m.cfg.MaxConns:
		why, limit = fmt.Sprintf("%d connections open (-max-conns)", m.conns), LimitConns
	case m.perIP[ip] >= m.cfg.MaxConnsPerIP:
		why, limit = fmt.Sprintf("%d connections open from %s (-max-conns-per-ip)", m.perIP[ip], ip), LimitConnsPerIP
	case len(m.waiting) >= m.cfg.MaxHandshakes:
		why, limit = fmt.Sprintf("%d connections in their handshake (-max-handshakes)", len(m.waiting)), LimitHandshakes
	}
	if limit >= 0 {
		m.refused[limit]++
		return nil, why
	}
	m.conns++
	m.perIP[ip]++
	cc := &countedConn{Conn: c, m: m, ip: ip}
	m.waiting[cc] = struct{}{}
	return cc, ""
}

// release gives a closed connection's place back; proto is the protocol it
// was handed over to, 0 if none.
func (m *Mux) release(ip string, proto byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns--
	if proto != 0 {
		m.byProto[proto]--
	}
	if m.perIP[ip]--; m.perIP[ip] <= 0 {
		delete(m.perIP, ip)
	}
}

// The limits a connection can be refused for, indexing Stats.RefusedBy.
const (
	LimitConns      = iota // MaxConns (-max-conns)
	LimitConnsPerIP        // MaxConnsPerIP (-max-conns-per-ip)
	LimitHandshakes        // MaxHandshakes (-max-handshakes)
	numLimits
)

// Stats is what the mux holds now.
type Stats struct {
	Conns      int // open connections
	Handshakes int // of them, still in their handshake
	// Of them, handed over to each protocol: ConnRaft, ConnRPC, ConnPeer
	// (the rest are in their handshake, or being closed after it failed).
	Raft, RPC, Peer int
	Refused         uint64            // connections closed at once for a limit, since start
	RefusedBy       [numLimits]uint64 // the same by limit, indexed by Limit*
}

// Stats returns what the mux holds now.
func (m *Mux) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Stats{Conns: m.conns, Handshakes: len(m.waiting), RefusedBy: m.refused,
		Raft: m.byProto[ConnRaft], RPC: m.byProto[ConnRPC], Peer: m.byProto[ConnPeer]}
	for _, n := range m.refused {
		st.Refused += n
	}
	return st
}

// countedConn is a connection the mux counts until it is closed, by
// whoever ends up holding it.
type countedConn struct {
	net.Conn
	m     *Mux
	ip    string
	proto byte // the protocol it was handed over to (guarded by m.mu); 0 before
	once  sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.m.mu.Lock()
		proto := c.proto
		c.m.mu.Unlock()
		c.m.release(c.ip, proto)
	})
	return err
}

func (m *Mux) handoff(cc *countedConn) {
	var c net.Conn = cc
	deadline := time.Now().Add(m.cfg.HandshakeTimeout)
	_ = c.SetDeadline(deadline)
	var state *tls.ConnectionState
	proto, err := func() (byte, error) {
		if m.cfg.TLS != nil {
			tc := tls.Server(cc, m.cfg.TLS)
			c = tc
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			if err := tc.HandshakeContext(ctx); err != nil {
				return 0, fmt.Errorf("tls handshake: %w", err)
			}
			st := tc.ConnectionState()
			state = &st
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return 0, fmt.Errorf("protocol byte: %w", err)
		}
		return b[0], nil
	}()
	m.mu.Lock()
	delete(m.waiting, cc)
	closed := m.closed
	l := m.subs[proto]
	m.mu.Unlock()
	if err != nil || closed {
		if err != nil {
			m.log.Debug("closing connection in its handshake", "remote", cc.RemoteAddr(), "err", err)
		}
		_ = c.Close()
		return
	}
	if l == nil {
		m.log.Warn("closing connection with unknown protocol byte", "remote", cc.RemoteAddr(), "byte", proto)
		_ = c.Close()
		return
	}
	if m.cfg.Authorize != nil {
		if err := m.cfg.Authorize(proto, state); err != nil {
			m.log.Warn("closing connection refused for its protocol", "remote", cc.RemoteAddr(), "byte", proto, "err", err)
			_ = c.Close()
			return
		}
	}
	_ = c.SetDeadline(time.Time{})
	m.mu.Lock()
	cc.proto = proto
	m.byProto[proto]++
	m.mu.Unlock()
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// Close closes the shared listener, every sub-listener and every connection
// still in its handshake. Connections already handed over belong to their
// protocol's server.
func (m *Mux) Close() error {
	err := m.ln.Close()
	m.mu.Lock()
	m.closed = true
	for _, l := range m.subs {
		_ = l.Close()
	}
	waiting := make([]net.Conn, 0, len(m.waiting))
	for c := range m.waiting {
		waiting = append(waiting, c)
	}
	m.mu.Unlock()
	for _, c := range waiting { // outside the lock: closing one gives its place back
		_ = c.Close()
	}
	return err
}

// Listener is one protocol's view of the shared listener.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

// Accept waits for the next connection of this protocol.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close stops this protocol's Accept; the shared listener stays open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the shared listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Dial connects to addr and sends the protocol byte b, all within timeout;
// with tlsCfg, over TLS (the handshake first, the byte inside it).
func Dial(addr string, b byte, timeout time.Duration, tlsCfg *tls.Config) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(deadline)
	if tlsCfg != nil {
		tc := tls.Client(c, tlsCfg)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if _, err := c.Write([]byte{b}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("send protocol byte to %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
