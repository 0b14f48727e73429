// Package ttl is the leader's heartbeat tracker: it holds a deadline for
// every registered instance in memory, extends it on each heartbeat, and when
// one passes proposes an expire command through Raft naming the exact
// registration (its index). Heartbeats never touch the Raft log.
//
// It sits beside fsm and raftnode: the FSM tells it about every registration
// and removal (it is the FSM's Observer), raftnode tells it when this node
// becomes leader (after a barrier) and when it stops being leader, and the
// backend hands it heartbeats. Only the leader's tracker is active; followers'
// trackers ignore everything. DESIGN.md has the reasoning and the bounds.
package ttl

import (
	"container/heap"
	"context"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/faultbugs"
)

// Proposer is what the tracker needs from Raft.
type Proposer interface {
	// IsLeader reports whether this node is the Raft leader right now.
	IsLeader() bool
	// ProposeExpire commits an expire command for the registration of
	// (name, addr) at index and reports whether it removed the instance (it
	// does not when a newer registration won the race). It must fail if this
	// node is not the leader.
	ProposeExpire(ctx context.Context, name, addr string, index uint64) (removed bool, err error)
}

// Peers is what the tracker needs from the other nodes when this node
// becomes leader: their deadline tables.
type Peers interface {
	// CollectTables reads the deadline tables of a majority of the voters
	// in this node's leadership term (this node's own among them) and
	// makes each refuse pushes of older terms from then on. It fails when
	// no majority answered before ctx ended.
	CollectTables(ctx context.Context) (*Collection, error)
}

// Collection is what a new leader learned from the deadline tables.
type Collection struct {
	Quorum int         // how many complete tables make a majority of the voters
	Self   TableView   // this node's table
	Others []TableView // the other nodes that answered
}

// handover returns how long after now the registration at index, with this TTL, must stay
// at least: the largest deadline any table holds for it (0 when none does, or
// all have passed), and whether the tables are enough to rely on. They are
// when this node's own table and a majority of tables in all are complete
// for the TTL — each has existed for at least TTL, so every deadline it could
// be missing has passed (DESIGN.md, "Deadline tables").
func (c *Collection) handover(index uint64, ttl time.Duration) (time.Duration, bool) {
	if c == nil || c.Self.Age < ttl {
		return 0, false
	}
	complete, best := 1, c.Self.Remaining[index]
	for _, o := range c.Others {
		if o.Age >= ttl {
			complete++
		}
		best = max(best, o.Remaining[index])
	}
	return best, complete >= c.Quorum
}

// InstanceSource is the FSM's view the tracker arms itself from.
type InstanceSource interface {
	WithInstances(fn func(applied uint64, all iter.Seq[*fsm.Instance]))
}

// Config configures a Tracker. Zero fields take their defaults.
type Config struct {
	// Grace is added to every deadline armed when this node becomes leader,
	// so clients have time to find the new leader. Default 1 s.
	Grace time.Duration
	// Table is this node's deadline table; nil: a new one on Clock.
	Table *Table
	// Peers, if set, lets a new leader arm instances from the other nodes'
	// deadline tables; without it every instance is armed at now + TTL +
	// Grace.
	Peers Peers
	// CollectTimeout bounds how long a new leader waits for a majority of
	// deadline tables before it arms at now + TTL + Grace. Default 2 s.
	CollectTimeout time.Duration
	// RetryInterval is how soon a failed expire proposal is tried again. Default 500 ms.
	RetryInterval time.Duration
	// MaxInFlight bounds concurrent expire proposals. Default 256.
	MaxInFlight int
	// Clock is the time source. Default SystemClock.
	Clock Clock
	// Logger receives expiry decisions. Default slog.Default().
	Logger *slog.Logger
	// Storm configures the expiry-storm guard (storm.go); its zero value
	// turns the guard off.
	Storm StormConfig
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Grace: time.Second, CollectTimeout: 2 * time.Second, RetryInterval: 500 * time.Millisecond,
		MaxInFlight: 256, Clock: SystemClock{}, Logger: slog.Default()}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Grace <= 0 {
		c.Grace = d.Grace
	}
	if c.CollectTimeout <= 0 {
		c.CollectTimeout = d.CollectTimeout
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = d.RetryInterval
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Table == nil {
		c.Table = NewTable(c.Clock)
	}
	return c
}

// Key names an instance.
type Key struct {
	Name string
	Addr string
}

type entry struct {
	key      Key
	index    uint64        // ModifyIndex of the registration being tracked
	ttl      time.Duration // its TTL
	deadline time.Time     // when it expires unless heartbeated
	queued   time.Time     // when the heap will next look at it (<= deadline, lazily)
	heapIdx  int           // position in the heap; -1 when not in it
	expiring bool          // an expire proposal is in flight
}

// ErrNotActive is returned by Heartbeat when this node's tracker is not
// running (the node is not the leader): the caller forwards to the leader.
var ErrNotActive = fmt.Errorf("heartbeat tracker not active on this node: %w", codes.ErrNotLeader)

// Tracker holds the leader's deadlines. Its mu comes last in the lock order
// across packages (raftnode → fsm → ttl, written on raftnode.Node): Observer
// calls arrive with the FSM locked, and the tracker never calls into the FSM
// or Raft while holding mu.
type Tracker struct {
	cfg      Config
	proposer Proposer
	src      InstanceSource
	log      *slog.Logger
	table    *Table // this node's deadline table, kept whether or not it leads

	mu sync.Mutex
	// Guarded by mu:
	voters     []string // the voter set of the last configuration entry applied
	votersSeen bool
	active     bool
	epoch      uint64 // bumped on every activation and deactivation
	entries    map[Key]*entry
	queue      deadlineHeap
	changed    chan struct{} // closed and replaced when active/epoch changes
	rearm      bool          // a snapshot was restored while active: re-load from the source
	// holding counts the callers of HoldProposals not yet released: while
	// it is not 0 nothing is proposed. holdGen is bumped by each of them: a
	// proposal decided before it is dropped (restore.go).
	holding int
	holdGen uint64
	// cancelArm stops the collection of deadline tables of the epoch
	// being armed, if any.
	cancelArm context.CancelFunc
	expired   uint64 // expire proposals that removed an instance (stats)
	storm     storm  // the expiry-storm guard's state (storm.go)

	wake chan struct{} // nudges the loop; buffered 1
	sem  chan struct{} // bounds in-flight proposals
	base time.Time     // the heap's zero (deadlineHeap)
}

// New returns an inactive tracker. Run must be started for expiry to happen.
func New(cfg Config, p Proposer, src InstanceSource) *Tracker {
	cfg = cfg.withDefaults()
	return &Tracker{
		cfg:      cfg,
		proposer: p,
		src:      src,
		log:      cfg.Logger,
		table:    cfg.Table,
		entries:  map[Key]*entry{},
		changed:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, cfg.MaxInFlight),
		base:     cfg.Clock.Now(),
	}
}

// Table is this node's deadline table.
func (t *Tracker) Table() *Table { return t.table }

// BecomeLeader arms a deadline for every instance. Call it when this node
// has become leader and a barrier has applied every earlier entry (MUST: not
// before the barrier, or instances committed by the previous leader would be
// missing). With Config.Peers it first collects the deadline tables of a
// majority, in the background (heartbeats wait for it, StepDown abandons
// it): an instance whose deadline the tables settle is armed at the largest
// of them (or now, if all have passed) + Grace, every other one at now + TTL
// + Grace. Changes applied after the arming are observed.
func (t *Tracker) BecomeLeader() {
	if !t.proposer.IsLeader() {
		return
	}
	t.mu.Lock()
	if t.cancelArm != nil {
		t.cancelArm()
		t.cancelArm = nil
	}
	t.epoch++
	epoch := t.epoch
	if t.cfg.Peers == nil {
		t.mu.Unlock()
		t.load(epoch, nil)
		t.nudge()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.CollectTimeout)
	t.cancelArm = cancel
	t.mu.Unlock()
	go func() {
		defer cancel()
		start := t.cfg.Clock.Now()
		col, err := t.cfg.Peers.CollectTables(ctx)
		if err != nil {
			col = nil
			if !t.proposer.IsLeader() {
				return
			}
			t.log.Warn("could not read the deadline tables of a majority; arming every instance at now + TTL + grace", "err", err)
		} else {
			t.log.Info("deadline tables collected", "tables", 1+len(col.Others), "quorum", col.Quorum,
				"took", t.cfg.Clock.Now().Sub(start))
		}
		t.load(epoch, col)
		t.nudge()
	}()
}

// load replaces all entries from the source. With epoch (not 0) it starts
// that leadership epoch, unless a newer one began meanwhile (in-flight
// proposals of the old one are dropped); with 0 it re-loads the current
// epoch after a snapshot restore. col, if not nil, holds the deadline
// tables collected for the new epoch.
func (t *Tracker) load(epoch uint64, col *Collection) {
	t.src.WithInstances(func(_ uint64, all iter.Seq[*fsm.Instance]) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if epoch != 0 {
			if t.epoch != epoch {
				return // stepped down, or a newer leadership began
			}
			t.cancelArm = nil
			t.active = true
			t.signalLocked()
		} else if !t.active {
			return // a reload after a restore, but leadership is gone meanwhile
		}
		t.entries = map[Key]*entry{}
		t.queue = t.queue[:0]
		now := t.cfg.Clock.Now()
		n, fromTables := 0, 0
		for in := range all {
			n++
			if rem, ok := col.handover(in.ModifyIndex, in.TTL); ok {
				t.armAtLocked(in, now.Add(rem+t.cfg.Grace))
				fromTables++
				continue
			}
			t.armLocked(in, now, t.cfg.Grace)
		}
		t.log.Info("heartbeat tracker armed", "instances", n, "from_tables", fromTables,
			"at_ttl_plus_grace", n-fromTables, "grace", t.cfg.Grace, "epoch", t.epoch)
	})
}

// StepDown drops every deadline: this node is no longer the leader.
func (t *Tracker) StepDown() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rearm = false
	if t.cancelArm != nil {
		t.cancelArm()
		t.cancelArm = nil
		t.epoch++ // an arming in progress must not activate
	}
	// Wake heartbeats waiting for this node to finish arming even when it
	// never did: they must learn at once that it no longer leads.
	t.signalLocked()
	if !t.active {
		return
	}
	t.active = false
	t.epoch++
	t.entries = map[Key]*entry{}
	t.queue = nil
	t.log.Info("heartbeat tracker stopped", "epoch", t.epoch)
}

// signalLocked wakes goroutines waiting for an activation change. Lock must be held.
func (t *Tracker) signalLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// armLocked starts or restarts tracking of a registration at now + its TTL
// + grace. Lock must be held.
func (t *Tracker) armLocked(in *fsm.Instance, now time.Time, grace time.Duration) {
	ttl := in.TTL
	if faultbugs.On("expire-early") {
		ttl = in.TTL / 3 // planted bug: expire after a third of the TTL
	}
	t.armAtLocked(in, now.Add(ttl+grace))
}

// armAtLocked starts or restarts tracking of a registration with this
// deadline. Lock must be held.
func (t *Tracker) armAtLocked(in *fsm.Instance, deadline time.Time) {
	k := Key{in.Name, in.Addr}
	e := t.entries[k]
	if e == nil {
		e = &entry{key: k, heapIdx: -1}
		t.entries[k] = e
	}
	e.index, e.ttl, e.expiring = in.ModifyIndex, in.TTL, false
	if faultbugs.On("expire-early") {
		e.ttl = in.TTL / 3 // planted bug: expire after a third of the TTL
	}
	e.deadline = deadline
	if e.heapIdx < 0 || e.deadline.Before(e.queued) {
		t.queueAtLocked(e, e.deadline)
	}
}

// queueAtLocked (re)queues e in the heap at time at. Lock must be held.
func (t *Tracker) queueAtLocked(e *entry, at time.Time) {
	e.queued = at
	key := int64(at.Sub(t.base))
	if e.heapIdx < 0 {
		heap.Push(&t.queue, heapItem{at: key, e: e})
		return
	}
	t.queue[e.heapIdx].at = key
	heap.Fix(&t.queue, e.heapIdx)
}

// InstanceRegistered implements fsm.Observer: a registration counts as a
// heartbeat. Every node records it in its deadline table.
func (t *Tracker) InstanceRegistered(in *fsm.Instance) {
	t.table.Registered(in.ModifyIndex, in.TTL)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return
	}
	t.armLocked(in, t.cfg.Clock.Now(), 0)
	t.nudge()
}

// InstanceRemoved implements fsm.Observer.
func (t *Tracker) InstanceRemoved(name, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return
	}
	k := Key{name, addr}
	if e := t.entries[k]; e != nil {
		delete(t.entries, k)
		if e.heapIdx >= 0 {
			heap.Remove(&t.queue, e.heapIdx)
		}
	}
}

// Restored implements fsm.Observer: the whole state was replaced. The
// deadline table cannot vouch for registrations it never saw applied.
func (t *Tracker) Restored() {
	t.table.Restarted()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active {
		t.rearm = true
		t.nudge()
	}
}

// VotersApplied implements fsm.Observer: when the voter set changes, this
// node's deadline table counts as young again for a TTL, so that a new
// leader arms from the tables only when the majority that acknowledged
// a heartbeat and the majority it collects from are of configurations at
// most one change apart (ttl/DESIGN.md, "Membership changes").
func (t *Tracker) VotersApplied(voters []string) {
	t.mu.Lock()
	changed := !t.votersSeen || !slices.Equal(voters, t.voters)
	t.voters, t.votersSeen = voters, true
	t.mu.Unlock()
	if changed {
		t.table.Restarted()
	}
}

// Heartbeat extends the deadlines of instances: each gets now + its TTL (or
// keeps a later deadline it already has). The per-instance result is nil or
// an error wrapping codes.ErrNotFound when the instance is not registered or
// is being expired — the client must register again. While this node is the
// leader but still arming (collecting deadline tables), Heartbeat waits for
// it, up to ctx. When this node is not the leader it returns ErrNotActive.
func (t *Tracker) Heartbeat(ctx context.Context, keys []Key) ([]error, error) {
	res, _, err := t.Renew(ctx, keys)
	return res, err
}

// Renew is Heartbeat that also returns what the other nodes must hold before
// the heartbeats may be acknowledged: one Renewal (the instance's TTL) per
// instance whose heartbeat counted.
func (t *Tracker) Renew(ctx context.Context, keys []Key) ([]error, []Renewal, error) {
	for {
		t.mu.Lock()
		if t.active {
			now := t.cfg.Clock.Now()
			out := make([]error, len(keys))
			rs := make([]Renewal, 0, len(keys))
			for i, k := range keys {
				e := t.entries[k]
				switch {
				case e == nil:
					out[i] = fmt.Errorf("heartbeat %s %s: not registered (expired or unregistered), register again: %w", k.Name, k.Addr, codes.ErrNotFound)
				case e.expiring:
					out[i] = fmt.Errorf("heartbeat %s %s: TTL ran out and it is being expired, register again: %w", k.Name, k.Addr, codes.ErrNotFound)
				default:
					if d := now.Add(e.ttl); d.After(e.deadline) {
						e.deadline = d
					}
					rs = append(rs, Renewal{Index: e.index, Remaining: e.ttl})
				}
			}
			t.mu.Unlock()
			return out, rs, nil
		}
		ch := t.changed
		t.mu.Unlock()
		if !t.proposer.IsLeader() {
			return nil, nil, ErrNotActive
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("leader is still starting up: %w", codes.ErrNoLeader)
		}
	}
}

// Active reports whether this tracker holds the deadlines (node is leader and armed).
func (t *Tracker) Active() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active
}

// Stats are the tracker's counts.
type Stats struct {
	Active   bool
	Tracked  int
	Expiring int
	Expired  uint64
	// The expiry-storm guard (storm.go): expiries held now, holds begun,
	// holds released at their max hold (the expiry then went ahead), and
	// holds that ended otherwise (a heartbeat, a registration, a removal,
	// leadership lost).
	StormHeld     int
	StormHolds    uint64
	StormReleased uint64
	StormUnheld   uint64
}

// Stats returns current counts.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Stats{Active: t.active, Tracked: len(t.entries), Expired: t.expired}
	for _, e := range t.entries {
		if e.expiring {
			s.Expiring++
		}
	}
	t.storm.statsLocked(t, &s)
	return s
}

func (t *Tracker) nudge() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

type proposal struct {
	key   Key
	index uint64
	epoch uint64
	gen   uint64   // holdGen when it was decided (restore.go)
	mark  markKind // not an expiry but a suspect marker (storm.go)
}

// Run is the expiry loop; it returns when ctx ends and in-flight proposals finish.
func (t *Tracker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		t.mu.Lock()
		if t.rearm {
			t.rearm = false
			t.storm.forgetLocked(t)
			t.mu.Unlock()
			t.load(0, nil)
			continue
		}
		if t.storm.sweepDueLocked(t) {
			t.mu.Unlock()
			t.stormSweep() // storm.go: the markers an earlier leader left
			continue
		}
		var due []proposal
		var next time.Time
		if t.active && t.holding == 0 {
			due = t.collectDueLocked(t.cfg.Clock.Now())
			for i := range due {
				due[i].gen = t.holdGen
			}
			if len(t.queue) > 0 {
				next = t.queue[0].e.queued
			}
		}
		t.mu.Unlock()

		for _, p := range due {
			// Leadership is checked again when the timer fires.
			if !t.proposer.IsLeader() {
				t.StepDown()
				break
			}
			select {
			case t.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func(p proposal) {
				defer wg.Done()
				defer func() { <-t.sem }()
				t.propose(ctx, p)
			}(p)
		}

		var timerC <-chan time.Time
		var tm Timer
		if !next.IsZero() {
			tm = t.cfg.Clock.TimerAt(next)
			timerC = tm.C()
		}
		select {
		case <-ctx.Done():
		case <-t.wake:
		case <-timerC:
		}
		if tm != nil {
			tm.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// collectDueLocked pops every entry whose deadline has passed and marks it
// expiring. Entries whose deadline moved later (heartbeats) are requeued at
// their deadline. Lock must be held.
func (t *Tracker) collectDueLocked(now time.Time) []proposal {
	var due []proposal
	for len(t.queue) > 0 && !t.queue[0].e.queued.After(now) {
		e := t.queue[0].e
		if e.deadline.After(now) {
			if t.storm.aliveLocked(t, e, now) { // storm.go: a held instance heartbeated; requeued if true
				continue
			}
			t.queueAtLocked(e, e.deadline)
			continue
		}
		if t.storm.holdLocked(t, e, now) { // storm.go: the expiry-storm guard holds it (requeued)
			continue
		}
		heap.Pop(&t.queue)
		e.expiring = true
		due = append(due, proposal{key: e.key, index: e.index, epoch: t.epoch})
	}
	return t.storm.drainLocked(t, due) // storm.go: suspect markers to propose
}

// propose commits one expiry. It waits for Raft's verdict without a
// deadline (MUST): an expire whose outcome is unknown may still commit, so
// the instance stays "expiring" — heartbeats for it are refused — until Raft
// settles it. Raft always does: it commits the entry, or fails it when this
// node loses leadership, and then the next leader re-arms everything after
// its barrier, which has applied every entry that could ever commit.
func (t *Tracker) propose(ctx context.Context, p proposal) {
	if t.heldBack(p) {
		return // restore.go: decided on a state a restore replaces
	}
	if p.mark != markNone {
		t.proposeMark(ctx, p) // storm.go
		return
	}
	removed, err := t.proposer.ProposeExpire(ctx, p.key.Name, p.key.Addr, p.index)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch != p.epoch || t.holdGen != p.gen {
		return // leadership changed, or a restore: everything is armed again
	}
	e := t.entries[p.key]
	if err == nil {
		if removed {
			t.expired++
			t.log.Info("instance expired", "service", p.key.Name, "addr", p.key.Addr, "index", p.index)
		}
		return
	}
	if e == nil || e.index != p.index || !e.expiring {
		return // removed or registered again meanwhile
	}
	if ctx.Err() != nil {
		return // shutting down
	}
	if !codes.NotApplied(err) {
		// Proposed, fate unknown: it may still commit. Stay expiring.
		t.log.Warn("expire proposal outcome unknown; instance stays expiring", "service", p.key.Name, "addr", p.key.Addr, "index", p.index, "err", err)
		return
	}
	// Never proposed: try again soon, if still leader then.
	t.log.Warn("expire proposal failed, will retry", "service", p.key.Name, "addr", p.key.Addr, "index", p.index, "err", err)
	e.expiring = false
	e.deadline = t.cfg.Clock.Now().Add(t.cfg.RetryInterval)
	t.queueAtLocked(e, e.deadline)
	t.nudge()
}

// deadlineHeap orders entries by queued time. Each item carries its time
// as nanoseconds since the tracker's base (monotonic, as time.Time's
// comparisons are), so that ordering reads the heap's own array and not
// the entries: at a million instances, requeueing heartbeated entries
// through a heap that followed a pointer for every comparison was a third
// of the leader's CPU (README.md, "Benchmarks": scale).
type deadlineHeap []heapItem

type heapItem struct {
	at int64 // e.queued - Tracker.base
	e  *entry
}

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].e.heapIdx = i
	h[j].e.heapIdx = j
}
func (h *deadlineHeap) Push(x any) {
	it := x.(heapItem)
	it.e.heapIdx = len(*h)
	*h = append(*h, it)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = heapItem{}
	*h = old[:len(old)-1]
	it.e.heapIdx = -1
	return it
}
