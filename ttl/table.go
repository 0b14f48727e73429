package ttl

import (
	"fmt"
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

// Table is a node's deadline table: for every registration (by its index:
// a number is cheaper to push and to look up than a name and an address,
// and a registration made again has a new index whose own apply is
// recorded), the latest deadline
// a leader pushed to this node (Accept) or that this node's own apply of a
// registration implies (Registered). Every node keeps one, leader and
// followers alike; a new leader collects them from a majority (Collect) and
// arms each instance from the largest deadline it sees (DESIGN.md,
// "Deadline tables"). Deadlines are this node's clock readings: they travel
// between nodes as remaining durations, so clock offsets between nodes
// never shorten one.
//
// Its mu is a leaf: nothing is called while it is held.
type Table struct {
	clock Clock

	mu sync.Mutex
	// Guarded by mu:
	since time.Time // when the table started holding everything (process start, or the last snapshot restore)
	floor uint64    // the highest term a collection was answered in: pushes of older terms are refused
	m     map[uint64]time.Time
	swept int // len(m) after the last sweep
}

// NewTable returns an empty table that starts now.
func NewTable(clock Clock) *Table {
	if clock == nil {
		clock = SystemClock{}
	}
	return &Table{clock: clock, since: clock.Now(), m: map[uint64]time.Time{}}
}

// ErrStaleTerm is returned by Accept for a push from a leader of a term
// older than one this node has already moved to or answered a collection in.
var ErrStaleTerm = fmt.Errorf("deadlines pushed by the leader of an older term: %w", codes.ErrNotLeader)

// Accept stores the renewals a leader of term pushed, unless a collection
// was answered in a newer term or this node's Raft term (current) is newer:
// a new leader that collected this table before must not miss a deadline
// that its predecessor then acknowledged.
func (t *Table) Accept(term, current uint64, rs []Renewal) error {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if term < t.floor || term < current {
		return fmt.Errorf("push of term %d refused (this node is in term %d, collected in %d): %w", term, current, t.floor, ErrStaleTerm)
	}
	for _, r := range rs {
		t.extendLocked(r.Index, now.Add(r.Remaining))
	}
	t.maybeSweepLocked(now)
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
	t.extendLocked(index, now.Add(ttl))
	t.maybeSweepLocked(now)
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
	v := TableView{Age: now.Sub(t.since), Remaining: make(map[uint64]time.Duration, len(t.m))}
	for k, d := range t.m {
		if d.After(now) {
			v.Remaining[k] = d.Sub(now)
		} else {
			delete(t.m, k)
		}
	}
	t.swept = len(t.m)
	return v
}

// Len is the number of instances the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

func (t *Table) extendLocked(k uint64, d time.Time) {
	if old, ok := t.m[k]; !ok || d.After(old) {
		t.m[k] = d
	}
}

// maybeSweepLocked drops passed deadlines once the table has doubled since
// the last sweep (plus 1024), so that entries of removed or re-made
// registrations cannot pile up.
func (t *Table) maybeSweepLocked(now time.Time) {
	if len(t.m) < 2*t.swept+1024 {
		return
	}
	for k, d := range t.m {
		if !d.After(now) {
			delete(t.m, k)
		}
	}
	t.swept = len(t.m)
}
