package ttl

// The expiry-storm guard. When a large share of a service's instances (or,
// if asked, of all instances) stops heartbeating within one TTL, the cause
// is usually a network or cluster problem — clients cut off from the
// servers, a leader that could not answer — not the instances dying, and
// expiring them all would turn a small problem into an outage. So the leader
// holds back such expiries, for at most MaxHold TTLs past each deadline,
// marks the held instances suspect (a replicated marker: every node's lists
// and watches show it), and lets an instance that heartbeats again simply
// live on. DESIGN.md, "The expiry-storm guard", has the rule and its bounds.
//
// Everything here runs under the tracker's mu, from the places the tracker
// calls it: when its Run loop collects due entries (collectDueLocked), when
// a marker proposal returns (propose), when Run starts a leadership (the
// sweep of markers an earlier leader left) and from Stats.

import (
	"context"
	"iter"
	"sort"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
)

// StormConfig configures the expiry-storm guard. Its zero value turns the
// guard off; DefaultStormConfig is what discoverd server runs with.
type StormConfig struct {
	// Threshold is the share of a service's instances (0 < Threshold < 1)
	// that may be failing within one TTL: an expiry that would make the
	// failing share exceed it is held. 0 turns the per-service guard off.
	Threshold float64
	// ClusterThreshold is the same share of all instances together. 0 (the
	// default) turns the cluster-wide guard off.
	ClusterThreshold float64
	// MinInstances: the guard never holds an expiry of a service with fewer
	// instances than this (nor, for ClusterThreshold, of a cluster with
	// fewer). 0 means 10.
	MinInstances int
	// MaxHold bounds a hold: an expiry is held at most MaxHold times the
	// instance's TTL past its deadline, then it happens. 0 means 3.
	MaxHold float64
}

// DefaultStormConfig is the guard discoverd server runs with unless told
// otherwise: per service, 50 %, from 10 instances, held at most 3 TTLs.
func DefaultStormConfig() StormConfig {
	return StormConfig{Threshold: 0.5, MinInstances: 10, MaxHold: 3}
}

// On reports whether the guard may hold anything.
func (c StormConfig) On() bool { return c.Threshold > 0 || c.ClusterThreshold > 0 }

func (c StormConfig) withDefaults() StormConfig {
	d := DefaultStormConfig()
	if c.MinInstances <= 0 {
		c.MinInstances = d.MinInstances
	}
	if c.MaxHold <= 0 {
		c.MaxHold = d.MaxHold
	}
	return c
}

// SuspectProposer is what the guard needs from Raft besides ttl.Proposer: a
// proposer that has it (raftstore.Proposer does) gets the suspect markers
// written; with one that has not, holds happen unmarked.
type SuspectProposer interface {
	// ProposeSuspect commits a suspect command (fsm.SuspectCommand) for the
	// registration of (name, addr) at index and reports whether it changed
	// the marker. It must fail if this node is not the leader.
	ProposeSuspect(ctx context.Context, name, addr string, index uint64, suspect bool) (changed bool, err error)
}

const (
	// stormScanReuse is how long one count of the instances (a walk over
	// every entry) serves further decisions. Decisions made meanwhile are
	// accounted for; registrations and heartbeats are not, for this long.
	stormScanReuse = 50 * time.Millisecond
	// stormRecheck bounds how long a held instance's heartbeat goes
	// unnoticed (it is a TTL/8, within these bounds).
	stormRecheckMin = 50 * time.Millisecond
	stormRecheckMax = time.Second
)

// markKind says what a proposal of the Run loop commits: an expiry (the
// zero value) or a suspect marker.
type markKind uint8

const (
	markNone    markKind = iota // an expire proposal
	markSuspect                 // set the suspect marker
	markClear                   // clear it
)

// storm is the guard's state, the Tracker's storm field. Guarded by the
// tracker's mu. It belongs to one leadership epoch: when the tracker's
// epoch moves on, everything but the counters is dropped (sync).
type storm struct {
	cfg    StormConfig // with defaults; set on first use
	inited bool

	epoch uint64 // the leadership epoch the state below belongs to
	swept uint64 // the epoch whose markers left by an earlier leader were read (sweep)

	holds   map[Key]*hold
	svcs    map[string]*stormCounts // per service
	all     stormCounts             // the whole cluster
	scan    *stormScan              // the last count of instances, reused briefly
	marks   map[Key]*mark
	pending []proposal // marker proposals for the Run loop to start
	retry   []Key      // markers whose proposal failed: tried again next round

	holdsBegun, released, unheld uint64 // counters (Stats); kept across epochs
}

// hold is one held expiry.
type hold struct {
	e        *entry // the entry held: a reload replaces entries, so identity matters
	index    uint64 // the registration held
	since    time.Time
	until    time.Time
	released bool // max hold reached: its expiry was let go (a retried proposal is not held again)
}

// stormCounts are the failing instances of a service (or of all) that the
// guard knows of without a scan: held now, and expiries let go recently.
type stormCounts struct {
	held int
	// told: a release of this service was logged at warn since its
	// holds began (logLocked: one warning per storm and kind, the
	// instances at debug)
	told    bool
	expired []time.Time // when expiries were let go, oldest first
	maxTTL  time.Duration
}

// stormScan is one count of the instances: per service and in all, taken
// at a time and adjusted by the decisions made since.
type stormScan struct {
	at  time.Time
	svc map[string]*scanCounts
	all scanCounts
}

type scanCounts struct {
	live    int // entries not expiring (held ones too)
	atRisk  int // of those, not held, silent for half their TTL or more
	decided int // at-risk entries decided since the scan (held or let go)
	gone    int // live entries let go since the scan
}

// mark is the suspect marker of one registration, as the guard wants it and
// as the FSM holds it (as far as this leader knows). One proposal at a time,
// so markers commit in the order they were decided.
type mark struct {
	index    uint64
	want     bool
	have     bool
	inflight bool
	// inherited: an earlier leader held this registration (the sweep found
	// it marked). Its hold is not restarted: it expires at the deadline this
	// leader armed, unless it heartbeats (armed: that deadline; a later one
	// means a heartbeat came).
	inherited bool
	armed     time.Time
}

// syncLocked drops the state of an earlier leadership epoch.
func (s *storm) syncLocked(t *Tracker) {
	if !s.inited {
		s.inited = true
		s.cfg = t.cfg.Storm.withDefaults()
		s.epoch = t.epoch
	}
	if s.epoch == t.epoch {
		return
	}
	s.epoch = t.epoch
	s.dropLocked(t, "leadership changed")
}

// dropLocked forgets every hold and marker (the counters stay).
func (s *storm) dropLocked(t *Tracker, why string) {
	n := 0
	for _, h := range s.holds {
		if !h.released {
			n++
		}
	}
	if n > 0 {
		s.unheld += uint64(n)
		t.log.Info("expiry-storm holds dropped", "held", n, "why", why)
	}
	s.holds, s.svcs, s.all, s.scan = nil, nil, stormCounts{}, nil
	s.marks, s.pending, s.retry = nil, nil, nil
}

// forgetLocked is called when the tracker reloads its entries (a snapshot
// was restored): holds and markers start over, and the FSM's markers are
// read again.
func (s *storm) forgetLocked(t *Tracker) {
	s.syncLocked(t)
	s.dropLocked(t, "state restored from a snapshot")
	s.swept = 0
}

func (s *storm) counts(name string) *stormCounts {
	if s.svcs == nil {
		s.svcs = map[string]*stormCounts{}
	}
	c := s.svcs[name]
	if c == nil {
		c = &stormCounts{}
		s.svcs[name] = c
	}
	return c
}

// expiredSince counts the expiries let go at or after from.
func (c *stormCounts) expiredSince(from time.Time) int {
	i := sort.Search(len(c.expired), func(i int) bool { return !c.expired[i].Before(from) })
	return len(c.expired) - i
}

// letGo records an expiry let go at now, and forgets those older than any
// TTL seen.
func (c *stormCounts) letGo(now time.Time, ttl time.Duration) {
	c.maxTTL = max(c.maxTTL, ttl)
	from := now.Add(-c.maxTTL)
	i := 0
	for i < len(c.expired) && c.expired[i].Before(from) {
		i++
	}
	c.expired = append(c.expired[i:], now)
}

func recheck(ttl time.Duration) time.Duration {
	return min(max(ttl/8, stormRecheckMin), stormRecheckMax)
}

// scanLocked returns a count of the instances no older than stormScanReuse,
// walking every entry if need be. The walk also ends holds whose instance
// was removed or registered again, which no heap pass sees.
func (s *storm) scanLocked(t *Tracker, now time.Time) *stormScan {
	if s.scan != nil && now.Sub(s.scan.at) < stormScanReuse && !now.Before(s.scan.at) {
		return s.scan
	}
	s.purgeLocked(t)
	sc := &stormScan{at: now, svc: map[string]*scanCounts{}}
	for k, e := range t.entries {
		if e.expiring {
			continue
		}
		c := sc.svc[k.Name]
		if c == nil {
			c = &scanCounts{}
			sc.svc[k.Name] = c
		}
		c.live++
		sc.all.live++
		if !e.deadline.After(now.Add(e.ttl/2)) && !s.heldLocked(t, e) {
			c.atRisk++
			sc.all.atRisk++
		}
	}
	s.scan = sc
	return sc
}

// heldLocked reports whether e is held now.
func (s *storm) heldLocked(t *Tracker, e *entry) bool {
	h := s.holds[e.key]
	return h != nil && !h.released && h.e == e && h.index == e.index
}

// purgeLocked ends the holds whose entry is gone or registered again, and
// forgets the markers of those (a registration or a removal took the
// FSM's marker with it).
func (s *storm) purgeLocked(t *Tracker) {
	for k, m := range s.marks {
		if e := t.entries[k]; !m.inflight && (e == nil || e.index != m.index) {
			delete(s.marks, k)
		}
	}
	for k, h := range s.holds {
		e := t.entries[k]
		if e == h.e && e.index == h.index {
			continue
		}
		why := "registered again"
		if e == nil || e != h.e {
			why = "removed"
		}
		s.endLocked(t, k, h, why)
	}
}

// endLocked ends a hold that did not end in its expiry.
func (s *storm) endLocked(t *Tracker, k Key, h *hold, why string) {
	delete(s.holds, k)
	if h.released {
		return
	}
	c := s.counts(k.Name)
	c.held--
	s.all.held--
	s.unheld++
	t.log.Debug("expiry no longer held", "service", k.Name, "addr", k.Addr, "index", h.index, "why", why,
		"service_held", c.held, "held", s.all.held)
	s.heldNoneLocked(t, c, k.Name)
}

// Logging a storm: a storm of thousands of instances must not write
// thousands of warnings. The first hold of a service (while none of its
// expiries was held) and its first release are logged at warn, with the
// counts; each instance's hold, release and end at debug; and the end of
// the service's holds at info.

// releaseLog returns the logger of a release of service c: warn for the
// first since the service's holds began, debug after.
func (s *storm) releaseLog(t *Tracker, c *stormCounts) func(msg string, args ...any) {
	if c.told {
		return t.log.Debug
	}
	c.told = true
	return t.log.Warn
}

// heldNoneLocked logs that a service's expiries are no longer held, when
// its last hold ended.
func (s *storm) heldNoneLocked(t *Tracker, c *stormCounts, service string) {
	if c.held != 0 {
		return
	}
	c.told = false
	t.log.Info("expiry storm over for the service: none of its expiries is held", "service", service, "held", s.all.held)
}

// share is a failing share for the log: "9/10".
type share struct{ failing, of int }

// decideLocked says whether the guard holds the due entry e now: either it
// is held already (until its max hold), or letting its expiry go would make
// the failing share of its service (or of all instances) exceed the
// threshold. The failing instances are those held, those whose expiry was
// let go within the last TTL, and those silent for half their TTL or more
// (e among them): with heartbeats every TTL/3, as the protocol recommends,
// an instance silent that long has missed one. An expiry let go is recorded
// for later decisions.
func (s *storm) decideLocked(t *Tracker, e *entry, now time.Time) (holdIt bool, why string, svc, all share) {
	sc := s.scanLocked(t, now)
	c := s.counts(e.key.Name)
	from := now.Add(-e.ttl)
	n := sc.svc[e.key.Name]
	if n == nil { // registered since the scan
		n = &scanCounts{live: 1, atRisk: 1}
		sc.svc[e.key.Name] = n
	}
	failing := func(held, expired int, n *scanCounts) share {
		return share{held + expired + max(n.atRisk-n.decided, 1), n.live - n.gone + expired}
	}
	svc = failing(c.held, c.expiredSince(from), n)
	all = failing(s.all.held, s.all.expiredSince(from), &sc.all)
	over := func(sh share, threshold float64) bool {
		return threshold > 0 && sh.of >= s.cfg.MinInstances && float64(sh.failing) > threshold*float64(sh.of)
	}
	switch {
	case over(svc, s.cfg.Threshold):
		holdIt, why = true, "service"
	case over(all, s.cfg.ClusterThreshold):
		holdIt, why = true, "cluster"
	}
	n.decided++
	sc.all.decided++
	return holdIt, why, svc, all
}

// holdLocked is the guard's decision on a due entry e at the top of the
// heap (collectDueLocked): true if it holds e (and requeued it), false if
// e's expiry goes ahead now.
func (s *storm) holdLocked(t *Tracker, e *entry, now time.Time) bool {
	if !t.cfg.Storm.On() {
		return false
	}
	s.syncLocked(t)
	if h := s.holds[e.key]; h != nil && h.e == e && h.index == e.index {
		switch {
		case h.released:
			return false // a retried expiry of a hold already released
		case now.Before(h.until):
			s.requeueLocked(t, e, h.until, now)
			return true
		}
		// The longest hold allowed: the expiry happens now.
		h.released = true
		c := s.counts(e.key.Name)
		c.held--
		s.all.held--
		s.released++
		s.letGoLocked(c, e, now, true)
		s.releaseLog(t, c)("expiry released: held for the longest allowed", "service", e.key.Name, "addr", e.key.Addr, "index", e.index,
			"held_for", now.Sub(h.since).String(), "service_held", c.held, "held", s.all.held)
		s.heldNoneLocked(t, c, e.key.Name)
		return false
	} else if h != nil {
		s.endLocked(t, e.key, h, "registered again")
	}
	c := s.counts(e.key.Name)
	if m := s.marks[e.key]; m != nil && m.inherited && m.index == e.index {
		// An earlier leader held it already: one hold per registration
		// (across leaders), so its expiry goes ahead at this deadline.
		if s.holds == nil {
			s.holds = map[Key]*hold{}
		}
		s.holds[e.key] = &hold{e: e, index: e.index, since: now, until: now, released: true}
		s.released++
		s.letGoLocked(c, e, now, true)
		s.releaseLog(t, c)("expiry released: held by an earlier leader already", "service", e.key.Name, "addr", e.key.Addr, "index", e.index,
			"service_held", c.held, "held", s.all.held)
		return false
	}
	holdIt, scope, svc, all := s.decideLocked(t, e, now)
	until := e.deadline.Add(s.maxHold(e))
	if !holdIt || !until.After(now) {
		s.letGoLocked(c, e, now, false)
		return false
	}
	if s.holds == nil {
		s.holds = map[Key]*hold{}
	}
	s.holds[e.key] = &hold{e: e, index: e.index, since: now, until: until}
	c.held++
	s.all.held++
	s.holdsBegun++
	logf := t.log.Debug
	if c.held == 1 {
		logf = t.log.Warn // the service's first: the next ones at debug
		c.told = false
	}
	logf("expiry held: expiry storm", "service", e.key.Name, "addr", e.key.Addr, "index", e.index, "scope", scope,
		"service_failing", svc.failing, "service_instances", svc.of, "failing", all.failing, "instances", all.of,
		"until", until.Sub(now).String(), "service_held", c.held, "held", s.all.held)
	s.setMarkLocked(t, e.key, e.index, true)
	s.requeueLocked(t, e, until, now)
	return true
}

func (s *storm) maxHold(e *entry) time.Duration {
	return time.Duration(float64(e.ttl) * s.cfg.MaxHold)
}

// letGoLocked records an expiry that goes ahead.
func (s *storm) letGoLocked(c *stormCounts, e *entry, now time.Time, released bool) {
	c.letGo(now, e.ttl)
	s.all.letGo(now, e.ttl)
	if sc := s.scan; sc != nil {
		if n := sc.svc[e.key.Name]; n != nil {
			n.gone++
		}
		sc.all.gone++
	}
	if !released {
		return
	}
	if m := s.marks[e.key]; m != nil {
		delete(s.marks, e.key) // the expiry removes the instance with its marker
	}
}

// requeueLocked puts a held entry back in the heap: at its max hold, or
// sooner to notice a heartbeat.
func (s *storm) requeueLocked(t *Tracker, e *entry, until, now time.Time) {
	at := now.Add(recheck(e.ttl))
	if until.Before(at) {
		at = until
	}
	if !at.After(now) {
		at = now.Add(stormRecheckMin) // never requeue at now: the pass would spin
	}
	t.queueAtLocked(e, at)
}

// aliveLocked is told of an entry the heap reached before its deadline
// (collectDueLocked): a held instance that heartbeated (or was registered
// again) is no longer held, and its marker is cleared. An instance an
// earlier leader held that has not been heard from since this leader armed
// it is looked at again soon; true then: it requeued e.
func (s *storm) aliveLocked(t *Tracker, e *entry, now time.Time) bool {
	if len(s.holds) == 0 && len(s.marks) == 0 {
		return false
	}
	s.syncLocked(t)
	if h := s.holds[e.key]; h != nil {
		why := "heartbeat"
		if h.e != e || h.index != e.index {
			why = "registered again"
		}
		s.endLocked(t, e.key, h, why)
	}
	m := s.marks[e.key]
	if m == nil {
		return false
	}
	if m.inherited && m.index == e.index && !e.deadline.After(m.armed) {
		s.requeueLocked(t, e, e.deadline, now)
		return true
	}
	s.setMarkLocked(t, e.key, e.index, false)
	return false
}

// setMarkLocked asks for the suspect marker of registration index of k.
func (s *storm) setMarkLocked(t *Tracker, k Key, index uint64, want bool) {
	m := s.marks[k]
	if m == nil || m.index != index {
		if !want {
			delete(s.marks, k) // a registration since has no marker
			return
		}
		m = &mark{index: index}
		if s.marks == nil {
			s.marks = map[Key]*mark{}
		}
		s.marks[k] = m
	}
	m.want = want
	if !want {
		m.inherited = false
	}
	s.proposeMarkLocked(t, k, m)
}

// proposeMarkLocked queues a proposal if the marker is not as wanted and
// none is in flight.
func (s *storm) proposeMarkLocked(t *Tracker, k Key, m *mark) {
	switch {
	case m.inflight:
	case m.want == m.have:
		if !m.want {
			delete(s.marks, k)
		}
	default:
		m.inflight = true
		kind := markClear
		if m.want {
			kind = markSuspect
		}
		s.pending = append(s.pending, proposal{key: k, index: m.index, epoch: t.epoch, mark: kind})
	}
}

// drainLocked appends the marker proposals waiting to start to due.
func (s *storm) drainLocked(t *Tracker, due []proposal) []proposal {
	if len(s.pending) == 0 && len(s.retry) == 0 {
		return due
	}
	s.syncLocked(t)
	for _, k := range s.retry {
		if m := s.marks[k]; m != nil {
			s.proposeMarkLocked(t, k, m)
		}
	}
	s.retry = nil
	due = append(due, s.pending...)
	s.pending = nil
	return due
}

// proposeMark commits one marker proposal (propose sends them here).
func (t *Tracker) proposeMark(ctx context.Context, p proposal) {
	var err error
	if sp, ok := t.proposer.(SuspectProposer); ok {
		_, err = sp.ProposeSuspect(ctx, p.key.Name, p.key.Addr, p.index, p.mark == markSuspect)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.storm
	if t.epoch != p.epoch || s.epoch != p.epoch || t.holdGen != p.gen {
		return // leadership changed, or a restore: the markers are read again
	}
	m := s.marks[p.key]
	if m == nil || m.index != p.index || !m.inflight {
		return
	}
	m.inflight = false
	if err != nil {
		if ctx.Err() == nil {
			t.log.Warn("suspect marker proposal failed, will retry", "service", p.key.Name, "addr", p.key.Addr, "index", p.index,
				"suspect", p.mark == markSuspect, "err", err, "not_applied", codes.NotApplied(err))
			s.retry = append(s.retry, p.key) // next round: no busy retry
		}
		return
	}
	m.have = p.mark == markSuspect
	before := len(s.pending)
	s.proposeMarkLocked(t, p.key, m)
	if len(s.pending) > before {
		t.nudge()
	}
}

// sweepDueLocked reports whether this leadership has yet to read the
// markers an earlier leader left (Run then calls stormSweep).
func (s *storm) sweepDueLocked(t *Tracker) bool {
	if !t.active {
		return false
	}
	s.syncLocked(t)
	return s.swept != t.epoch
}

// stormSweep reads the suspect markers of the FSM when this node starts to
// lead (or reloads after a restore). An earlier leader held each marked
// registration; its hold ended with its leadership, and this leader armed
// every instance afresh. A marked instance keeps its marker until it
// heartbeats (the marker is cleared, within a TTL/8 of the heartbeat moving
// its deadline) or its new deadline passes: then its expiry goes ahead, not
// held again — one hold per registration, whatever the leader changes, so
// the guard adds one max hold to removal at most (DESIGN.md).
func (t *Tracker) stormSweep() {
	t.src.WithInstances(func(_ uint64, all iter.Seq[*fsm.Instance]) {
		t.mu.Lock()
		defer t.mu.Unlock()
		s := &t.storm
		if !t.active {
			return
		}
		s.syncLocked(t)
		s.swept = t.epoch
		now := t.cfg.Clock.Now()
		n := 0
		for in := range all {
			if !in.Suspect {
				continue
			}
			k := Key{in.Name, in.Addr}
			e := t.entries[k]
			if e == nil || e.index != in.ModifyIndex || e.expiring || e.heapIdx < 0 {
				continue
			}
			if s.marks == nil {
				s.marks = map[Key]*mark{}
			}
			s.marks[k] = &mark{index: e.index, have: true, want: true, inherited: true, armed: e.deadline}
			s.requeueLocked(t, e, e.deadline, now) // to notice a heartbeat soon
			n++
		}
		if n > 0 {
			t.log.Info("instances an earlier leader held: their expiries go ahead at their deadlines unless they heartbeat", "instances", n)
		}
	})
	t.nudge()
}

// statsLocked fills the guard's counters in st.
func (s *storm) statsLocked(t *Tracker, st *Stats) {
	s.syncLocked(t)
	if t.active {
		s.purgeLocked(t)
		for _, h := range s.holds {
			if !h.released {
				st.StormHeld++
			}
		}
	}
	st.StormHolds, st.StormReleased, st.StormUnheld = s.holdsBegun, s.released, s.unheld
}
