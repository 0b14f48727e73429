package raftnode

import (
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/mux"
)

// streamLayer is raft's StreamLayer over the node's shared port. It closes
// every Raft connection, dialled or accepted, when Raft closes it:
// hashicorp/raft's transport closes only its listener, and leaves its
// pooled connections open — and the peers' goroutines serving them blocked
// in a read — until the process exits. A node stopped in-process (tests,
// the dev cluster) then looked to its peers like a node still connected,
// not like a crash.
type streamLayer struct {
	ln   net.Listener
	addr string
	tls  func() *tls.Config // nil: plaintext

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newStreamLayer(ln net.Listener, addr string, tlsCfg func() *tls.Config) *streamLayer {
	return &streamLayer{ln: ln, addr: addr, tls: tlsCfg, conns: map[*trackedConn]struct{}{}}
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

func (s *streamLayer) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var cfg *tls.Config
	if s.tls != nil {
		cfg = s.tls()
	}
	c, err := mux.Dial(string(a), mux.ConnRaft, timeout, cfg)
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

func (s *streamLayer) Addr() net.Addr { return advertised(s.addr) }

// Close closes the listener and every connection still open.
func (s *streamLayer) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return s.ln.Close()
}

func (s *streamLayer) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// trackedConn forgets itself when closed.
type trackedConn struct {
	net.Conn
	s *streamLayer
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

type advertised string

func (a advertised) Network() string { return "tcp" }
func (a advertised) String() string  { return string(a) }
