// Package connlimit caps the connections a listener holds open at once:
// over the cap a new connection is closed as soon as it is accepted, as the
// node's port does over -max-conns. The HTTP listener (server/http.go) and
// the DNS listener's TCP side (dnsserver) use it.
package connlimit

import (
	"net"
	"sync/atomic"
)

// Listener closes, at once, a connection accepted while max are open.
type Listener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused atomic.Uint64
}

// New caps ln at max connections open at once.
func New(ln net.Listener, max int) *Listener {
	return &Listener{Listener: ln, max: int64(max)}
}

// Refused counts the connections closed for being over the cap.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// Open is the number of accepted connections not closed yet.
func (l *Listener) Open() int64 { return l.open.Load() }

// Accept returns the next connection under the cap.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Add(1)
			_ = c.Close()
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// conn gives its place back when closed.
type conn struct {
	net.Conn
	l    *Listener
	once atomic.Bool
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.once.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
	return err
}
