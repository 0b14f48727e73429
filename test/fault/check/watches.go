package check

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/discoverd/discoverd/test/fault/history"
)

// Watches checks every watcher's streams against the committed log
// (docs/protocol.md §12–13).
//
// The committed changes of a service come from the union of journals
// (logView.services): changed registers are "up" (instance absent before) or
// "update", changed unregisters and expiries are "down" with that reason.
// Sessions are grouped by (Watcher, Service) and taken in Session order; a
// watcher's position is the index of the last change event or current
// marker it was delivered.
//
// Changed set-meta and delete-meta entries are meta changes of the
// service: a meta event (Deleted for a delete-meta) at their index.
//
// A session starts inside a state block if FromIndex is 0; a resync event
// starts one too. Inside a block only up events may come (each one is the
// instance with its last registration index), and at most one meta event
// (the metadata, at its index; never a deleted one); the current marker at
// N ends it. Then:
//
//   - (d) a state block must equal the service's replayed state at N: the
//     same addresses, each with its last registration index, and the same
//     metadata (its index, or none) (skipped, noted, if an unexplained
//     journal gap lies at or below N).
//   - (a) change events (up, update, down outside a block) must have indices
//     strictly greater than the position (the previous change, the
//     preceding current marker, or the session's FromIndex); such an event
//     is only reported as out of order.
//   - (b) a change event must be a committed change of the service: the index
//     must hold one ("event for an entry that never committed" otherwise,
//     unless the index is in an unexplained journal gap: noted), with the
//     same address, the same kind (up/update/down/meta) and, for down, the
//     same reason, for meta, deleted exactly when the entry is a
//     delete-meta.
//   - (c) no gaps: every committed change of the service between the
//     position and a change event — or a current marker outside a block,
//     which a resumed stream sends once caught up and which says "you have
//     everything up to N" — must have been delivered; one violation per
//     missing change. Indices in unexplained journal gaps cannot be checked
//     (noted); the changes the journals do hold still are.
//   - (e) resume: a session k > 0 with FromIndex X > 0 must resume from the
//     watcher's position after session k-1, and not from inside a state
//     block cut short (that must start again from 0). Its first event must be
//     a resync, or the first committed change after X, or a current marker
//     with no committed change in (X, N]; a first event that skips committed
//     changes is one resume violation naming the first skipped change.
//   - (f) convergence: if the watcher's last session ended "final", outside a
//     state block, at a position at or after the service's last committed
//     change up to FinalIndex, the watcher's view — its state blocks
//     replacing the state, its change events applied — must hold exactly the
//     service's addresses in run.Final (compared with the journals' state at
//     the position instead if the service changed after FinalIndex), and the
//     metadata of the journals' replay there. A watcher that ended earlier
//     is noted, not a violation.
func Watches(run *history.Run) Verdict {
	v := newVerdict(NameWatches)
	lv := newLogView(run)
	logs := lv.services()
	final := finalState(run)

	type wkey struct{ watcher, service string }
	groups := map[wkey][]history.WatchSession{}
	for _, s := range run.Sessions {
		k := wkey{s.Watcher, s.Service}
		groups[k] = append(groups[k], s)
	}
	keys := make([]wkey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].watcher != keys[j].watcher {
			return keys[i].watcher < keys[j].watcher
		}
		return keys[i].service < keys[j].service
	})
	for _, k := range keys {
		ss := groups[k]
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].Session < ss[j].Session })
		w := &watchCheck{v: v, lv: lv, sl: logs[k.service], name: k.watcher, svc: k.service}
		for i, s := range ss {
			w.session(i, s)
		}
		w.converge(ss[len(ss)-1], run.FinalIndex, final[k.service])
		v.Stats["watchers"]++
	}
	return v.done()
}

// watchCheck follows one watcher through its sessions.
type watchCheck struct {
	v    *verdict
	lv   *logView
	sl   *serviceLog
	name string
	svc  string

	pos       uint64            // last change event or current marker delivered
	inBlock   bool              // inside a state block (also: one cut short)
	block     map[string]uint64 // the block being delivered
	blockMeta uint64            // the metadata's index in the block (0: none yet)
	view      map[string]uint64 // what the watcher believes: addr → index
	metaView  uint64            // the metadata's index the watcher believes (0: none)
	viewSure  bool              // view rests on a state block (or a known state)

	// Current session.
	sess  history.WatchSession
	first bool // the next event is the first of a resumed session
}

func (w *watchCheck) fail(e history.Event, addr string, index uint64, format string, args ...any) {
	w.v.fail(Violation{Service: w.svc, Addr: addr, Node: w.sess.Node, Index: index, At: e.At,
		Msg: fmt.Sprintf("watcher %s session %d (from %d on %s): %s", w.name, w.sess.Session, w.sess.FromIndex, w.sess.Node, fmt.Sprintf(format, args...))})
}

func (w *watchCheck) session(k int, s history.WatchSession) {
	w.sess = s
	w.v.Stats["sessions"]++
	x := s.FromIndex
	w.first = false
	if x > 0 {
		if k > 0 {
			switch {
			case w.inBlock:
				w.fail(history.Event{At: s.Opened}, "", x, "resumed from %d after a state block cut short; it must start again from 0", x)
			case x != w.pos:
				w.fail(history.Event{At: s.Opened}, "", x, "resumed from %d, but the last index delivered before was %d", x, w.pos)
			}
		}
		w.pos, w.inBlock, w.first = x, false, true
		if !w.viewSure {
			if w.lv.firstGap(x) == 0 {
				w.view, w.metaView, w.viewSure = w.sl.stateAt(x), w.sl.metaAt(x), true
			}
		}
	} else {
		w.inBlock, w.block, w.blockMeta = true, map[string]uint64{}, 0
	}
	for _, e := range s.Events {
		w.v.Stats["events"]++
		w.event(e)
	}
}

func (w *watchCheck) event(e history.Event) {
	switch e.Kind {
	case kindResync:
		w.inBlock, w.block, w.blockMeta, w.first = true, map[string]uint64{}, 0, false
	case kindMeta:
		if !w.inBlock {
			w.change(e)
			return
		}
		switch {
		case e.Deleted:
			w.fail(e, "", e.Index, "a deleted meta event inside a state block (a block holds the metadata, or no meta event)")
		case w.blockMeta != 0:
			w.fail(e, "", e.Index, "state block has two meta events, at %d and %d", w.blockMeta, e.Index)
		default:
			w.blockMeta = e.Index
		}
	case kindCurrent:
		if w.inBlock {
			w.endBlock(e)
		} else {
			w.caughtUp(e)
		}
		w.pos, w.first = e.Index, false
	case kindUp, kindUpdate, kindDown:
		if w.inBlock {
			if e.Kind != kindUp {
				w.fail(e, e.Addr, e.Index, "%s event inside a state block (only up events may come before the current marker)", e.Kind)
				return
			}
			if _, dup := w.block[e.Addr]; dup {
				w.fail(e, e.Addr, e.Index, "state block lists %s twice", e.Addr)
			}
			w.block[e.Addr] = e.Index
			return
		}
		w.change(e)
	default:
		w.fail(e, e.Addr, e.Index, "unknown event kind %q", e.Kind)
	}
}

// endBlock checks a completed state block (d) and makes it the view.
func (w *watchCheck) endBlock(e history.Event) {
	w.v.Stats["state_blocks"]++
	n := e.Index
	w.inBlock = false
	w.view, w.metaView, w.viewSure = w.block, w.blockMeta, true
	w.block, w.blockMeta = nil, 0
	if g := w.lv.firstGap(n); g != 0 {
		w.v.note("watcher %s session %d: state block at %d not checked (journal gap at %d)", w.name, w.sess.Session, n, g)
		return
	}
	want := w.sl.stateAt(n)
	for _, a := range sortedAddrs(want) {
		got, ok := w.view[a]
		switch {
		case !ok:
			w.fail(e, a, n, "state block at %d misses %s (registered at index %d)", n, a, want[a])
		case got != want[a]:
			w.fail(e, a, n, "state block at %d has %s at index %d, its last registration by %d is at index %d", n, a, got, n, want[a])
		}
	}
	for _, a := range sortedAddrs(w.view) {
		if _, ok := want[a]; !ok {
			w.fail(e, a, n, "state block at %d shows %s (index %d), which is not registered at %d", n, a, w.view[a], n)
		}
	}
	if wantMeta := w.sl.metaAt(n); w.metaView != wantMeta {
		w.fail(e, "", n, "state block at %d has %s, the journals' replay %s", n, describeMeta(w.metaView), describeMeta(wantMeta))
	}
}

// describeMeta says which metadata an index stands for.
func describeMeta(idx uint64) string {
	if idx == 0 {
		return "no metadata"
	}
	return fmt.Sprintf("the metadata set at %d", idx)
}

// caughtUp checks a current marker outside a block: everything up to it
// must have been delivered.
func (w *watchCheck) caughtUp(e history.Event) {
	if e.Index < w.pos {
		w.fail(e, "", e.Index, "current marker at %d goes back before the position %d", e.Index, w.pos)
		return
	}
	w.missing(e, w.sl.between(w.pos, e.Index+1), w.pos, e.Index+1)
}

// change checks a change event outside a block: (a), (b), (c), (e).
func (w *watchCheck) change(e history.Event) {
	w.v.Stats["change_events"]++
	if e.Index <= w.pos {
		w.fail(e, e.Addr, e.Index, "%s %s at index %d is not after the position %d (change events must strictly increase)", e.Kind, e.Addr, e.Index, w.pos)
		return
	}
	var c *change
	if w.sl != nil {
		if i, ok := w.sl.byIndex[e.Index]; ok {
			c = &w.sl.changes[i]
		}
	}
	switch {
	case c == nil && w.lv.unknown(e.Index):
		w.v.note("watcher %s session %d: %s %s at index %d not checked (journal gap)", w.name, w.sess.Session, e.Kind, e.Addr, e.Index)
	case c == nil:
		held := "no entry"
		if s, ok := w.lv.at(e.Index); ok {
			held = describeEntry(s.e)
		} else {
			held = "no entry (missing from every journal)"
		}
		w.fail(e, e.Addr, e.Index, "event for an entry that never committed: %s %s at index %d, where the log has %s", e.Kind, e.Addr, e.Index, held)
		w.apply(e)
		return // the position stays: the event says nothing about the log
	default:
		var bad []string
		if c.addr != e.Addr {
			bad = append(bad, fmt.Sprintf("address %s, the committed change is for %s", e.Addr, c.addr))
		}
		if c.kind != e.Kind {
			bad = append(bad, fmt.Sprintf("kind %s, the committed change is %s (%s)", e.Kind, c.kind, c.typ))
		}
		if c.kind == kindDown && e.Kind == kindDown && c.reason != e.Reason {
			bad = append(bad, fmt.Sprintf("reason %q, the committed change is %s", e.Reason, c.reason))
		}
		if c.kind == kindMeta && e.Kind == kindMeta && (c.reason == metaDeleted) != e.Deleted {
			bad = append(bad, fmt.Sprintf("deleted %v, the committed change is a %s", e.Deleted, c.typ))
		}
		if len(bad) > 0 {
			w.fail(e, c.addr, e.Index, "event at index %d does not match the committed change: %s", e.Index, strings.Join(bad, "; "))
		}
	}
	w.missing(e, w.sl.between(w.pos, e.Index), w.pos, e.Index)
	w.pos, w.first = e.Index, false
	w.apply(e)
}

// missing reports the committed changes in (from, to) the watcher skipped:
// a resume violation (e) if this is a resumed session's first event, else
// one gap violation (c) per change.
func (w *watchCheck) missing(e history.Event, skipped []change, from, to uint64) {
	if to > from+1 {
		if gs := w.lv.gapsIn(from+1, to-1); len(gs) > 0 {
			w.v.note("watcher %s session %d: journal gap at %s; those indices not checked for missed changes", w.name, w.sess.Session, describeGaps(gs))
		}
	}
	if len(skipped) == 0 {
		return
	}
	if w.first {
		var all []string
		for _, c := range skipped {
			all = append(all, fmt.Sprint(c.index))
		}
		w.fail(e, skipped[0].addr, skipped[0].index, "resume from %d: first event %s at index %d, but the first committed change after %d is %s %s at index %d (skipped: %s)",
			w.sess.FromIndex, e.Kind, e.Index, w.sess.FromIndex, skipped[0].kind, skipped[0].addr, skipped[0].index, strings.Join(all, ","))
		return
	}
	for _, c := range skipped {
		what := c.kind
		if c.reason != "" {
			what += " (" + c.reason + ")"
		}
		w.fail(e, c.addr, c.index, "missing committed change at index %d: %s %s (delivered %d, then %s at %d)", c.index, what, c.addr, from, e.Kind, e.Index)
	}
}

// apply applies a change event to the watcher's view.
func (w *watchCheck) apply(e history.Event) {
	if e.Kind == kindMeta {
		w.metaView = e.Index
		if e.Deleted {
			w.metaView = 0
		}
		return
	}
	if w.view == nil {
		w.view = map[string]uint64{}
	}
	if e.Kind == kindDown {
		delete(w.view, e.Addr)
	} else {
		w.view[e.Addr] = e.Index
	}
}

// converge checks (f) after the watcher's last session.
func (w *watchCheck) converge(last history.WatchSession, finalIndex uint64, final map[string]uint64) {
	switch {
	case finalIndex == 0:
		w.v.note("watcher %s: no final index; convergence not checked", w.name)
		return
	case last.End != "final":
		w.v.note("watcher %s: last session ended %q at index %d; convergence not checked", w.name, last.End, w.pos)
		return
	case w.inBlock:
		w.v.note("watcher %s: last session ended inside a state block; convergence not checked", w.name)
		return
	case !w.viewSure:
		w.v.note("watcher %s: never saw a state block; convergence not checked", w.name)
		return
	}
	lastChange := w.sl.lastUpTo(finalIndex)
	if w.pos < lastChange {
		w.v.note("watcher %s: ended at index %d, before %s's last change at %d; convergence not checked", w.name, w.pos, w.svc, lastChange)
		return
	}
	want := maps.Clone(final)
	if want == nil {
		want = map[string]uint64{}
	}
	against, metaAt := "the final state", finalIndex
	if w.pos > finalIndex && w.sl.lastUpTo(w.pos) > finalIndex {
		if g := w.lv.firstGap(w.pos); g != 0 {
			w.v.note("watcher %s: ended at %d, after changes past the final index, with a journal gap at %d; convergence not checked", w.name, w.pos, g)
			return
		}
		want, against, metaAt = w.sl.stateAt(w.pos), fmt.Sprintf("the journals' state at %d", w.pos), w.pos
	}
	w.v.Stats["converged_checked"]++
	e := history.Event{At: last.Closed}
	for _, a := range sortedAddrs(want) {
		if _, ok := w.view[a]; !ok {
			w.fail(e, a, w.pos, "did not converge: its view at %d lacks %s, which %s has", w.pos, a, against)
		}
	}
	for _, a := range sortedAddrs(w.view) {
		if _, ok := want[a]; !ok {
			w.fail(e, a, w.pos, "did not converge: its view at %d has %s, which %s does not", w.pos, a, against)
		}
	}
	if g := w.lv.firstGap(metaAt); g != 0 {
		w.v.note("watcher %s: journal gap at %d; its metadata's convergence not checked", w.name, g)
	} else if want := w.sl.metaAt(metaAt); w.metaView != want {
		w.fail(e, "", w.pos, "did not converge: its view at %d has %s, the journals' replay at %d %s", w.pos, describeMeta(w.metaView), metaAt, describeMeta(want))
	}
}
