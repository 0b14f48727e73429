// Package netproxy is the fault suite's network without root: a full mesh of
// TCP proxies on 127.0.0.1, one per directed pair of nodes, through which the
// test harness makes every node dial its peers (discoverd's -peer-dial flag,
// see Mesh.Overrides). Because every byte between two nodes crosses a proxy
// the harness owns, the nemesis can partition, delay, drop or reset traffic
// per direction while the node processes run unmodified.
//
// Terms used throughout:
//
//   - proxy (i→j): the listener node i dials to reach node j (Mesh.Addr(i, j)).
//     Each connection it accepts gets its own upstream connection to node j.
//   - link i→j: every byte node i sends to node j — what i writes on
//     connections it dialed through proxy (i→j), and what i writes back on
//     connections j dialed through proxy (j→i). Faults (Link) are set per link.
//
// See DESIGN.md for why it is built this way.
package netproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"
)

const (
	// ChunkSize is the read buffer of each pump: the unit that Link.DropShare
	// drops and Link.Delay holds.
	ChunkSize = 32 << 10
	// MaxQueuedBytes bounds the bytes one direction of one connection holds
	// while they wait for their delay to pass. A pump that would exceed it
	// stops reading until the queue drains (backpressure, as a slow network
	// applies through TCP windows).
	MaxQueuedBytes = 4 << 20
	// dialTimeout bounds the proxy's dial of a target.
	dialTimeout = 5 * time.Second
)

// Mesh is a proxy for every ordered pair of nodes. All methods are safe for
// concurrent use.
type Mesh struct {
	n       int
	targets []string
	// Fixed once NewMesh returns:
	addrs     [][]string     // addrs[from][to]: proxy (from→to)'s listen address; "" on the diagonal
	listeners []net.Listener // every proxy's listener
	stats     [][]*counters  // stats[from][to]: atomic counters, see stats.go

	ctx    context.Context // cancelled by Close; aborts upstream dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the mesh starts; Close waits for it

	// mu guards the fields below. It is never held during I/O, while
	// closing a connection, or while waiting on anything.
	mu     sync.Mutex
	closed bool
	links  [][]Link       // links[from][to]: the fault on link from→to
	rngs   [][]*rand.Rand // rngs[from][to]: drop decisions of link from→to
	refuse [][]bool       // refuse[from][to]: proxy (from→to) closes new connections
	conns  [][]connSet    // conns[from][to]: live connections through proxy (from→to)
}

// connSet is the live connections of one proxy.
type connSet map[*conn]struct{}

// NewMesh starts a proxy for every ordered pair (i, j), i != j, of the
// targets (targets[j] is node j's real host:port). seed makes random choices
// reproducible: each link draws its drop decisions from its own generator
// seeded from (seed, from, to), so the decisions on one link depend only on
// the sequence of chunks that cross it, not on traffic elsewhere.
func NewMesh(targets []string, seed int64) (*Mesh, error) {
	if len(targets) == 0 {
		return nil, errors.New("netproxy: no targets")
	}
	for i, t := range targets {
		if _, _, err := net.SplitHostPort(t); err != nil {
			return nil, fmt.Errorf("netproxy: target %d %q is not host:port: %w", i, t, err)
		}
	}
	n := len(targets)
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mesh{
		n:       n,
		targets: append([]string(nil), targets...),
		addrs:   make([][]string, n),
		stats:   make([][]*counters, n),
		ctx:     ctx,
		cancel:  cancel,
		links:   make([][]Link, n),
		rngs:    make([][]*rand.Rand, n),
		refuse:  make([][]bool, n),
		conns:   make([][]connSet, n),
	}
	for i := range n {
		m.addrs[i] = make([]string, n)
		m.stats[i] = make([]*counters, n)
		m.links[i] = make([]Link, n)
		m.rngs[i] = make([]*rand.Rand, n)
		m.refuse[i] = make([]bool, n)
		m.conns[i] = make([]connSet, n)
		for j := range n {
			if i == j {
				continue
			}
			m.stats[i][j] = &counters{}
			m.rngs[i][j] = rand.New(rand.NewPCG(uint64(seed), uint64(i*n+j)))
			m.conns[i][j] = connSet{}
		}
	}
	// Listen on everything first, then serve: a failure leaves nothing running.
	for i := range n {
		for j := range n {
			if i == j {
				continue
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				for _, l := range m.listeners {
					l.Close()
				}
				cancel()
				return nil, fmt.Errorf("netproxy: listen for proxy %d->%d: %w", i, j, err)
			}
			m.listeners = append(m.listeners, ln)
			m.addrs[i][j] = ln.Addr().String()
		}
	}
	k := 0
	for i := range n {
		for j := range n {
			if i == j {
				continue
			}
			m.wg.Add(1)
			go m.serve(m.listeners[k], i, j)
			k++
		}
	}
	return m, nil
}

// N is the number of nodes.
func (m *Mesh) N() int { return m.n }

// Addr is the proxy address node `from` dials to reach node `to`. It panics
// if from == to or either is out of range.
func (m *Mesh) Addr(from, to int) string {
	m.checkPair(from, to)
	return m.addrs[from][to]
}

// Overrides is the -peer-dial value for node `from`:
// "id_j=Addr(from,j),..." for every j != from in node order, where ids[j] is
// node j's id. It panics if len(ids) is not the number of nodes.
func (m *Mesh) Overrides(from int, ids []string) string {
	m.checkNode(from)
	if len(ids) != m.n {
		panic(fmt.Sprintf("netproxy: Overrides: %d ids for %d nodes", len(ids), m.n))
	}
	parts := make([]string, 0, m.n-1)
	for j := range m.n {
		if j != from {
			parts = append(parts, ids[j]+"="+m.addrs[from][j])
		}
	}
	return strings.Join(parts, ",")
}

// Close stops every proxy, closes every connection and returns once every
// goroutine the mesh started has ended. Calling it again does nothing.
func (m *Mesh) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	live := m.liveLocked(func(int, int) bool { return true })
	m.mu.Unlock()

	m.cancel()
	var errs []error
	for _, ln := range m.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, c := range live {
		c.close(false)
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

// serve accepts connections on proxy (from→to) until its listener closes.
func (m *Mesh) serve(ln net.Listener, from, to int) {
	defer m.wg.Done()
	st := m.stats[from][to]
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of file descriptors): back off
			// briefly rather than spin, unless the mesh is closing.
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		m.mu.Lock()
		switch {
		case m.closed:
			m.mu.Unlock()
			nc.Close()
		case m.refuse[from][to]:
			m.mu.Unlock()
			st.refused.Add(1)
			abort(nc)
		default:
			c := newConn(m, from, to, nc)
			m.conns[from][to][c] = struct{}{}
			st.conns.Add(1)
			st.live.Add(1)
			// MUST be added under mu with closed == false: Close sets closed
			// under mu before it waits, so it cannot miss this goroutine.
			m.wg.Add(1)
			m.mu.Unlock()
			go c.run()
		}
	}
}

// liveLocked lists the live connections of every proxy (from→to) for which
// keep is true. Lock should be held.
func (m *Mesh) liveLocked(keep func(from, to int) bool) []*conn {
	var out []*conn
	for i := range m.n {
		for j := range m.n {
			if i == j || !keep(i, j) {
				continue
			}
			for c := range m.conns[i][j] {
				out = append(out, c)
			}
		}
	}
	return out
}

func (m *Mesh) checkNode(i int) {
	if i < 0 || i >= m.n {
		panic(fmt.Sprintf("netproxy: node %d out of range [0, %d)", i, m.n))
	}
}

func (m *Mesh) checkPair(from, to int) {
	m.checkNode(from)
	m.checkNode(to)
	if from == to {
		panic(fmt.Sprintf("netproxy: no proxy from node %d to itself", from))
	}
}

// abort closes nc with an RST instead of a FIN, so the peer sees a reset
// connection rather than an orderly end.
func abort(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	nc.Close()
}
