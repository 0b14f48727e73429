// Package mux shares one TCP listener between hashicorp/raft's transport and
// discoverd's RPC: every connection opens with one byte saying which it is
// for, so an operator gives each node a single host:port.
package mux

import (
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
)

// ErrClosed is returned by Accept on a closed listener.
var ErrClosed = errors.New("mux: listener closed")

// Mux accepts connections and hands each to the sub-listener registered for
// its first byte. Connections with an unknown first byte, or none within the
// handshake timeout, are closed.
type Mux struct {
	ln               net.Listener
	log              *slog.Logger
	handshakeTimeout time.Duration

	mu      sync.Mutex
	subs    map[byte]*Listener
	waiting map[net.Conn]struct{} // connections still sending their protocol byte
	closed  bool
	wg      sync.WaitGroup
}

// New wraps ln. Call Listen for each protocol, then Serve.
func New(ln net.Listener, log *slog.Logger) *Mux {
	return &Mux{ln: ln, log: log, handshakeTimeout: 10 * time.Second, subs: map[byte]*Listener{}, waiting: map[net.Conn]struct{}{}}
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
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = c.Close()
			continue
		}
		m.waiting[c] = struct{}{}
		m.mu.Unlock()
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handoff(c)
		}()
	}
}

func (m *Mux) handoff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(m.handshakeTimeout))
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	m.mu.Lock()
	delete(m.waiting, c)
	closed := m.closed
	l := m.subs[b[0]]
	m.mu.Unlock()
	if err != nil || closed {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if l == nil {
		m.log.Warn("closing connection with unknown protocol byte", "remote", c.RemoteAddr(), "byte", b[0])
		_ = c.Close()
		return
	}
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
	for c := range m.waiting {
		_ = c.Close()
	}
	m.mu.Unlock()
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

// Dial connects to addr and sends the protocol byte b.
func Dial(addr string, b byte, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{b}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("send protocol byte to %s: %w", addr, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}
