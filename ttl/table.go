package ttl

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
)

// Renewal is one deadline the leader hands to the other nodes: the
// registration at Index (an instance's ModifyIndex) lives at least
// Remaining longer, counted from when a node receives it.
type Renewal struct {
	Index     uint64
	Remaining time.Duration
}

// RenewalGroup is renewals that share a remaining time: one group per TTL
// in a round of heartbeats, as they travel (wire.DeadlineGroup).
type RenewalGroup struct {
	Remaining time.Duration
	Indexes   []uint64
}

// Group turns renewals into groups by remaining time, in order of first
// appearance.
func Group(rs []Renewal) []RenewalGroup {
	var gs []RenewalGroup
	for _, r := range rs {
		i := 0
		for i < len(gs) && gs[i].Remaining != r.Remaining {
			i++
		}
		if i == len(gs) {
			gs = append(gs, RenewalGroup{Remaining: r.Remaining})
		}
		gs[i].Indexes = append(gs[i].Indexes, r.Index)
	}
	return gs
}

// Table is a node's deadline table: for every registration (by its index:
// a number is cheaper to push and to look up than a name and an address,
// and a registration made again has a new index whose own apply is
// recorded), the latest deadline a leader pushed to this node (Accept) or
// that this node's own apply of a registration implies (Registered). Every
// node keeps one, leader and followers alike; a new leader collects them
// from a majority (Collect) and arms each instance from the largest
// deadline it sees (DESIGN.md, "Deadline tables"). Deadlines are this
// node's clock readings: they travel between nodes as remaining durations,
// so clock offsets between nodes never shorten one.
//
// It is written at the rate of heartbeats on every node and read only when
// a leader is elected, so it is a log rather than a map: one record per
// push and remaining time, appended (the indexes are kept as they came),
// in one bucket per remaining time. A bucket's deadlines only grow, so
// passed records leave from its front; a bucket that grew to twice its
// distinct live indexes (one instance heartbeated often) is folded to one
// deadline per index. Collect takes the largest live deadline per index.
//
// Its mu is a leaf: nothing is called while it is held.
type Table struct {
	clock Clock

	mu sync.Mutex
	// Guarded by mu:
	since   time.Time // when the table started holding everything (process start, or the last snapshot restore)
	floor   uint64    // the highest term a collection was answered in: pushes of older terms are refused
	buckets map[time.Duration]*bucket
	appends int // since the last sweep of every bucket
}

// record is deadline for indexes (or, with indexes nil, for one).
type record struct {
	deadline time.Time
	indexes  []uint64
	one      uint64
}

func (r *record) each(fn func(uint64)) {
	if r.indexes == nil {
		fn(r.one)
		return
	}
	for _, i := range r.indexes {
		fn(i)
	}
}

func (r *record) size() int {
	if r.indexes == nil {
		return 1
	}
	return len(r.indexes)
}

// bucket is the records of one remaining time, deadlines non-decreasing.
type bucket struct {
	recs   []record
	head   int // recs[:head] are gone
	n      int // indexes in recs[head:]
	folded int // n after the last fold
}

// NewTable returns an empty table that starts now.
func NewTable(clock Clock) *Table {
	if clock == nil {
		clock = SystemClock{}
	}
	return &Table{clock: clock, since: clock.Now(), buckets: map[time.Duration]*bucket{}}
}

// ErrStaleTerm is returned by Accept for a push from a leader of a term
// older than one this node has already moved to or answered a collection in.
var ErrStaleTerm = fmt.Errorf("deadlines pushed by the leader of an older term: %w", codes.ErrNotLeader)

// Accept stores the renewals a leader of term pushed, unless a collection
// was answered in a newer term or this node's Raft term (current) is newer:
// a new leader that collected this table before must not miss a deadline
// that its predecessor then acknowledged. It keeps the groups' index
// slices: the caller must not change them afterwards.
func (t *Table) Accept(term, current uint64, gs []RenewalGroup) error {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if term < t.floor || term < current {
		return fmt.Errorf("push of term %d refused (this node is in term %d, collected in %d): %w", term, current, t.floor, ErrStaleTerm)
	}
	for _, g := range gs {
		if len(g.Indexes) > 0 {
			t.appendLocked(g.Remaining, record{deadline: now.Add(g.Remaining), indexes: g.Indexes}, now)
		}
	}
	return nil
}

// Registered records that this node applied the registration at index
// with this TTL now: the registration was called before its commit, so
// now + ttl is no earlier than the deadline it promised. Entries of
// registrations that were removed or made again are dropped once their
// deadline has passed.
func (t *Table) Registered(index uint64, ttl time.Duration) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.appendLocked(ttl, record{deadline: now.Add(ttl), one: index}, now)
}

// Restarted marks the table as incomplete from now on: a snapshot replaced
// the state, and the registrations in it were never applied one by one here.
func (t *Table) Restarted() {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.since = now
}

// TableView is one node's table as a collection saw it.
type TableView struct {
	// Age is how long the table has held everything: a push or a
	// registration older than Age may be missing from it.
	Age time.Duration
	// Remaining holds, per registration index, how long its deadline was
	// ahead when the table was read; passed deadlines are left out.
	Remaining map[uint64]time.Duration
}

// Collect answers a new leader of term: it returns the table and refuses,
// from now on, pushes of older terms.
func (t *Table) Collect(term uint64) TableView {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.floor = max(t.floor, term)
	v := TableView{Age: now.Sub(t.since), Remaining: map[uint64]time.Duration{}}
	for _, b := range t.buckets {
		b.dropPassed(now)
		for i := b.head; i < len(b.recs); i++ {
			r := &b.recs[i]
			rem := r.deadline.Sub(now)
			r.each(func(idx uint64) {
				if rem > v.Remaining[idx] {
					v.Remaining[idx] = rem
				}
			})
		}
	}
	return v
}

// Len is the number of index records the table holds (an index renewed
// several times counts each time, until its bucket is folded).
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, b := range t.buckets {
		n += b.n
	}
	return n
}

// appendLocked adds r to the bucket of remaining time rem and drops its
// passed records (every 1024 appends, those of every bucket, and empty
// buckets), and folds the bucket if it doubled.
func (t *Table) appendLocked(rem time.Duration, r record, now time.Time) {
	b := t.buckets[rem]
	if b == nil {
		b = &bucket{}
		t.buckets[rem] = b
	}
	b.recs = append(b.recs, r)
	b.n += r.size()
	b.dropPassed(now)
	if t.appends++; t.appends >= 1024 {
		t.appends = 0
		for d, x := range t.buckets {
			x.dropPassed(now)
			if x.n == 0 {
				delete(t.buckets, d)
			}
		}
	}
	if b.n > 2*b.folded+4096 {
		b.fold(now)
	}
}

// dropPassed removes the records at the front whose deadline has passed.
func (b *bucket) dropPassed(now time.Time) {
	for b.head < len(b.recs) && !b.recs[b.head].deadline.After(now) {
		b.n -= b.recs[b.head].size()
		b.recs[b.head] = record{}
		b.head++
	}
	if b.head > 1024 && b.head > len(b.recs)/2 {
		b.recs = append(b.recs[:0], b.recs[b.head:]...)
		b.head = 0
	}
}

// fold keeps one record per live index, with its largest deadline, in
// deadline order.
func (b *bucket) fold(now time.Time) {
	latest := map[uint64]time.Time{}
	for i := b.head; i < len(b.recs); i++ {
		r := &b.recs[i]
		if !r.deadline.After(now) {
			continue
		}
		r.each(func(idx uint64) {
			if r.deadline.After(latest[idx]) {
				latest[idx] = r.deadline
			}
		})
	}
	recs := make([]record, 0, len(latest))
	for idx, d := range latest {
		recs = append(recs, record{deadline: d, one: idx})
	}
	slices.SortFunc(recs, func(a, b record) int { return a.deadline.Compare(b.deadline) })
	b.recs, b.head, b.n, b.folded = recs, 0, len(recs), len(recs)
}
