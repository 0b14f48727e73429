package netproxy

import (
	"fmt"
	"time"
)

// Link is the fault on one directed link. The zero Link passes every byte at
// once. Pumps consult the current setting for every chunk, so a change
// applies to existing connections immediately.
type Link struct {
	// Blackhole reads and drops every byte: a silent network. Connections
	// stay open and nothing arrives; bytes read meanwhile are lost for good,
	// and so are delayed bytes whose release time falls in the blackhole.
	// Healing resumes forwarding on the same connections.
	Blackhole bool
	// Delay holds each chunk this long before passing it on; order is
	// preserved (a chunk never overtakes an earlier one, even if the delay
	// shrinks meanwhile). Negative counts as zero.
	Delay time.Duration
	// DropShare drops this share of chunks (0..1; clamped), chosen by the
	// link's seeded generator. A dropped chunk is a gap in the byte stream,
	// not a lost TCP segment: the receiver sees corrupt framing, which is
	// what it should survive by resetting the connection.
	DropShare float64
}

// String is a short description for fault timelines.
func (l Link) String() string {
	if l == (Link{}) {
		return "pass"
	}
	s := ""
	if l.Blackhole {
		s += "blackhole "
	}
	if l.Delay > 0 {
		s += fmt.Sprintf("delay=%v ", l.Delay)
	}
	if l.DropShare > 0 {
		s += fmt.Sprintf("drop=%g ", l.DropShare)
	}
	if s == "" {
		return "pass"
	}
	return s[:len(s)-1]
}

func (l Link) normalized() Link {
	l.Delay = max(l.Delay, 0)
	l.DropShare = min(max(l.DropShare, 0), 1)
	return l
}

// SetLink sets the fault on link from→to: the bytes node `from` writes on
// connections it dialed through proxy (from→to), and the bytes it writes
// back on connections `to` dialed through proxy (to→from).
func (m *Mesh) SetLink(from, to int, l Link) {
	m.checkPair(from, to)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.links[from][to] = l.normalized()
}

// Link is the current fault on link from→to.
func (m *Mesh) Link(from, to int) Link {
	m.checkPair(from, to)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.links[from][to]
}

// Refuse makes proxy (from→to) close new connections at once (with a reset)
// while on; existing connections are untouched. A refused connection is
// accepted by the proxy's listener first, so the dialer sees a connect that
// succeeds and a connection that is reset straight away, not ECONNREFUSED.
func (m *Mesh) Refuse(from, to int, on bool) {
	m.checkPair(from, to)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuse[from][to] = on
}

// Reset closes, with a reset, every live connection through proxy (from→to)
// (connections node `from` dialed to reach `to`; both ends see the reset).
// Connections through (to→from) stay.
func (m *Mesh) Reset(from, to int) {
	m.checkPair(from, to)
	m.mu.Lock()
	live := m.liveLocked(func(i, j int) bool { return i == from && j == to })
	m.mu.Unlock()
	for _, c := range live {
		c.close(true)
	}
}

// Cut blackholes both a→b and b→a. Other settings of the two links (delay,
// drop share) stay and apply again once healed by Heal or Partition.
func (m *Mesh) Cut(a, b int) {
	m.checkPair(a, b)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.links[a][b].Blackhole = true
	m.links[b][a].Blackhole = true
}

// Heal sets both a→b and b→a back to pass and stops refusing on proxies
// (a→b) and (b→a).
func (m *Mesh) Heal(a, b int) {
	m.checkPair(a, b)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.links[a][b], m.links[b][a] = Link{}, Link{}
	m.refuse[a][b], m.refuse[b][a] = false, false
}

// Isolate blackholes every link to and from node i.
func (m *Mesh) Isolate(i int) {
	m.checkNode(i)
	m.mu.Lock()
	defer m.mu.Unlock()
	for j := range m.n {
		if j != i {
			m.links[i][j].Blackhole = true
			m.links[j][i].Blackhole = true
		}
	}
}

// Partition blackholes every link between nodes in different groups and
// un-blackholes every link within a group, in one step. A node in no group
// is a group of its own (isolated). It sets only the blackhole flag of each
// link; delays, drop shares and refusals stay. It panics if a node is out of
// range or in two groups.
func (m *Mesh) Partition(groups ...[]int) {
	group := make([]int, m.n)
	for i := range group {
		group[i] = -1
	}
	for g, members := range groups {
		for _, i := range members {
			m.checkNode(i)
			if group[i] != -1 {
				panic(fmt.Sprintf("netproxy: Partition: node %d in two groups", i))
			}
			group[i] = g
		}
	}
	for i := range group {
		if group[i] == -1 {
			group[i] = len(groups) + i
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.n {
		for j := range m.n {
			if i != j {
				m.links[i][j].Blackhole = group[i] != group[j]
			}
		}
	}
}

// HealAll sets every link back to pass and stops every refusal. Existing
// connections stay open and resume.
func (m *Mesh) HealAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.n {
		for j := range m.n {
			m.links[i][j] = Link{}
			m.refuse[i][j] = false
		}
	}
}

// admit decides the fate of a chunk of n bytes just read on link from→to:
// whether it passes, and if so how long it is held.
func (m *Mesh) admit(from, to, n int) (pass bool, delay time.Duration) {
	m.mu.Lock()
	l := m.links[from][to]
	drop := l.Blackhole || (l.DropShare > 0 && m.rngs[from][to].Float64() < l.DropShare)
	m.mu.Unlock()
	if drop {
		m.stats[from][to].dropped.Add(int64(n))
		return false, 0
	}
	return true, l.Delay
}

// blackholed reports whether link from→to is blackholed now.
func (m *Mesh) blackholed(from, to int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.links[from][to].Blackhole
}
