package netproxy

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// counters are one directed pair's statistics, updated without the mesh lock.
type counters struct {
	conns   atomic.Int64 // connections accepted and relayed by proxy (from→to)
	refused atomic.Int64 // connections proxy (from→to) closed at once (Refuse)
	live    atomic.Int64 // connections through proxy (from→to) open now
	passed  atomic.Int64 // bytes delivered on link from→to
	dropped atomic.Int64 // bytes dropped on link from→to (blackhole, drop share)
	queued  atomic.Int64 // bytes of link from→to waiting in delay queues now
}

// LinkStats are the counters of one ordered pair (From, To). Conns, Refused
// and Live count connections through proxy (From→To); the byte counters
// count link From→To, whichever proxy carried the bytes. Counters are read
// one by one, so a snapshot taken under traffic need not add up exactly.
type LinkStats struct {
	From, To int
	// Conns is the number of connections proxy (From→To) accepted and
	// relayed (refused ones excluded).
	Conns int64
	// Refused is the number of connections proxy (From→To) closed at once.
	Refused int64
	// Live is the number of connections through proxy (From→To) open now.
	Live int64
	// BytesPassed is the number of bytes delivered on link From→To.
	BytesPassed int64
	// BytesDropped is the number of bytes a fault dropped on link From→To
	// (blackhole or drop share). Bytes lost because a connection closed
	// while they waited are in neither counter.
	BytesDropped int64
	// BytesQueued is the number of bytes of link From→To waiting for their
	// delay now.
	BytesQueued int64
}

// Stats are the counters of every ordered pair, sorted by From then To.
type Stats struct {
	Links []LinkStats
}

// Stats reads the per-link counters.
func (m *Mesh) Stats() Stats {
	s := Stats{Links: make([]LinkStats, 0, m.n*(m.n-1))}
	for i := range m.n {
		for j := range m.n {
			if i == j {
				continue
			}
			c := m.stats[i][j]
			s.Links = append(s.Links, LinkStats{
				From:         i,
				To:           j,
				Conns:        c.conns.Load(),
				Refused:      c.refused.Load(),
				Live:         c.live.Load(),
				BytesPassed:  c.passed.Load(),
				BytesDropped: c.dropped.Load(),
				BytesQueued:  c.queued.Load(),
			})
		}
	}
	return s
}

// Link is the counters of the ordered pair (from, to); zero if absent.
func (s Stats) Link(from, to int) LinkStats {
	for _, l := range s.Links {
		if l.From == from && l.To == to {
			return l
		}
	}
	return LinkStats{From: from, To: to}
}

// Total sums every pair's counters (From and To are -1).
func (s Stats) Total() LinkStats {
	t := LinkStats{From: -1, To: -1}
	for _, l := range s.Links {
		t.Conns += l.Conns
		t.Refused += l.Refused
		t.Live += l.Live
		t.BytesPassed += l.BytesPassed
		t.BytesDropped += l.BytesDropped
		t.BytesQueued += l.BytesQueued
	}
	return t
}

// String is one line per pair, for run reports.
func (s Stats) String() string {
	var b strings.Builder
	for _, l := range s.Links {
		fmt.Fprintf(&b, "%d->%d conns=%d refused=%d live=%d passed=%d dropped=%d queued=%d\n",
			l.From, l.To, l.Conns, l.Refused, l.Live, l.BytesPassed, l.BytesDropped, l.BytesQueued)
	}
	return b.String()
}
