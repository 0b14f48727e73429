package netproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// conn is one connection accepted by proxy (from→to) and its upstream
// connection to node `to`. Four goroutines serve it, two per direction:
//
//	down --read--> fwd --write--> up     link from→to
//	up   --read--> back --write--> down  link to→from
//
// Readers never write and writers never read, so a stalled receiver blocks
// only its own writer (and, once the queue is full, its reader).
type conn struct {
	m        *Mesh
	from, to int      // the proxy: node `from` dialed it to reach node `to`
	down     net.Conn // accepted from node `from`
	fwd      *queue   // down→up: link from→to
	back     *queue   // up→down: link to→from
	done     chan struct{}
	once     sync.Once
	ctx      context.Context // the upstream dial's; cancelled by close
	cancel   context.CancelFunc

	mu     sync.Mutex // guards up and closed
	up     net.Conn   // nil until the dial succeeds
	closed bool
}

func newConn(m *Mesh, from, to int, down net.Conn) *conn {
	ctx, cancel := context.WithCancel(m.ctx)
	return &conn{
		m:      m,
		from:   from,
		to:     to,
		down:   down,
		fwd:    newQueue(&m.stats[from][to].queued),
		back:   newQueue(&m.stats[to][from].queued),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
}

// run dials the target and, once connected, serves both directions. The
// caller has done m.wg.Add(1) for it.
func (c *conn) run() {
	defer c.m.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	up, err := d.DialContext(c.ctx, "tcp", c.m.targets[c.to])
	if err != nil {
		// The target is down: the closest a proxy can come to "connection
		// refused" is resetting the connection it already accepted.
		c.close(true)
		return
	}
	c.mu.Lock()
	if c.closed { // reset or closed while dialing
		c.mu.Unlock()
		up.Close()
		return
	}
	c.up = up
	c.mu.Unlock()

	// run's own wg count is still held here, so this Add cannot race with
	// Close's Wait reaching zero.
	c.m.wg.Add(4)
	go c.read(c.down, c.fwd, c.from, c.to)
	go c.write(up, c.fwd, c.from, c.to)
	go c.read(up, c.back, c.to, c.from)
	go c.write(c.down, c.back, c.to, c.from)
}

// read pumps src into q for link from→to, deciding each chunk's fate by the
// link's setting at the moment it is read.
func (c *conn) read(src net.Conn, q *queue, from, to int) {
	defer c.m.wg.Done()
	buf := make([]byte, ChunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			if pass, delay := c.m.admit(from, to, n); pass {
				if !q.push(chunk{data: bytes.Clone(buf[:n]), release: now.Add(delay)}) {
					return // closed
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// An orderly close: deliver what is queued, then the
				// writer closes both sides.
				q.closeInput()
			} else {
				c.close(isReset(err))
			}
			return
		}
	}
}

// write pumps q into dst for link from→to, each chunk at its release time.
// A chunk whose link is blackholed by then is dropped: after SetLink returns
// with Blackhole, nothing more arrives except a chunk already being written.
func (c *conn) write(dst net.Conn, q *queue, from, to int) {
	defer c.m.wg.Done()
	st := c.m.stats[from][to]
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		ch, ok := q.pop()
		if !ok {
			c.close(false) // input ended and drained, or already closed
			return
		}
		if wait := time.Until(ch.release); wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		}
		if c.m.blackholed(from, to) {
			st.dropped.Add(int64(len(ch.data)))
			q.release(len(ch.data))
			continue
		}
		if _, err := dst.Write(ch.data); err != nil {
			c.close(isReset(err))
			return
		}
		st.passed.Add(int64(len(ch.data)))
		q.release(len(ch.data))
	}
}

// close tears the connection down once: both sockets closed (with a reset
// if reset is set), both queues aborted, the upstream dial cancelled. Every
// goroutine of the connection ends soon after.
func (c *conn) close(reset bool) {
	c.once.Do(func() {
		c.cancel()
		c.m.mu.Lock()
		delete(c.m.conns[c.from][c.to], c)
		c.m.mu.Unlock()
		c.m.stats[c.from][c.to].live.Add(-1)

		c.mu.Lock()
		c.closed = true
		up := c.up
		c.mu.Unlock()

		close(c.done)
		c.fwd.abort()
		c.back.abort()
		for _, nc := range []net.Conn{c.down, up} {
			switch {
			case nc == nil:
			case reset:
				abort(nc)
			default:
				nc.Close()
			}
		}
	})
}

// isReset reports whether err says the peer reset the connection, so the
// proxy passes a reset on rather than an orderly close.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}
