package check

import (
	"fmt"
	"sort"

	"github.com/discoverd/discoverd/test/fault/history"
)

// Journal entry types (history.Entry.Type).
const (
	typeRegister   = "register"
	typeUnregister = "unregister"
	typeExpire     = "expire"
	typeSetMeta    = "set-meta"
	typeDeleteMeta = "delete-meta"
	typeSuspect    = "suspect" // the expiry-storm guard's marker (fsm.SuspectCommand)
)

// Watch event kinds (history.Event.Kind) and down reasons.
const (
	kindUp      = "up"
	kindUpdate  = "update"
	kindDown    = "down"
	kindCurrent = "current"
	kindResync  = "resync"
	kindMeta    = "meta"
)

// slot is one log index as the union of all journals saw it.
type slot struct {
	e       history.Entry // from the first node (by name) that journaled it
	firstAt int64         // earliest At over every node and every replay
	nodes   []string      // nodes that journaled it, sorted
}

// gap is a run of indices [from, to] that no journal holds and that cannot be
// explained as a leader's no-op and barrier (see newLogView).
type gap struct{ from, to uint64 }

// logView is the committed log as the union of the nodes' journals: one
// entry per index. A node journals an entry each time it applies it (again
// after a restart) and not at all for what a snapshot install skipped, so the
// union is usually complete — except for indices no FSM ever sees: the no-op
// a new leader appends and the barrier it runs (raft does not hand them to
// the FSM). Those sit at the start of a term, so a run of missing indices
// whose neighbours have different terms is taken to be them ("explained");
// a run inside one term, or after the last journaled index up to the run's
// FinalIndex, is a true gap: what committed there is unknown.
type logView struct {
	slots     map[uint64]*slot
	idx       []uint64 // present indices, ascending
	max       uint64   // highest journaled index
	gaps      []gap    // unexplained, ascending (the last may be the trailing one)
	explained int      // indices missing at term boundaries
	byReq     map[string][]uint64
	final     uint64 // the run's FinalIndex (0: unknown)
}

func newLogView(run *history.Run) *logView {
	lv := &logView{slots: map[uint64]*slot{}, byReq: map[string][]uint64{}, final: run.FinalIndex}
	entries := make([]history.Entry, len(run.Entries))
	copy(entries, run.Entries)
	// Stable by node so the representative of an index is deterministic.
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].Node < entries[j].Node })
	for _, e := range entries {
		s := lv.slots[e.Index]
		if s == nil {
			s = &slot{e: e, firstAt: e.At}
			lv.slots[e.Index] = s
			lv.idx = append(lv.idx, e.Index)
			if e.RequestID != "" {
				lv.byReq[e.RequestID] = append(lv.byReq[e.RequestID], e.Index)
			}
		}
		if e.At != 0 && (s.firstAt == 0 || e.At < s.firstAt) {
			s.firstAt = e.At
		}
		if n := len(s.nodes); n == 0 || s.nodes[n-1] != e.Node {
			s.nodes = append(s.nodes, e.Node)
		}
		lv.max = max(lv.max, e.Index)
	}
	sort.Slice(lv.idx, func(i, j int) bool { return lv.idx[i] < lv.idx[j] })
	for _, ids := range lv.byReq {
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	}
	var prev uint64
	var prevTerm uint64
	for _, i := range lv.idx {
		if i > prev+1 {
			// Missing prev+1 … i-1. Before the first entry (prev 0) there
			// is no term to compare with; only the first leader's entries
			// can be there, so it counts as explained.
			if prev == 0 || lv.slots[i].e.Term > prevTerm {
				lv.explained += int(i - prev - 1)
			} else {
				lv.gaps = append(lv.gaps, gap{prev + 1, i - 1})
			}
		}
		prev, prevTerm = i, lv.slots[i].e.Term
	}
	if run.FinalIndex > lv.max {
		lv.gaps = append(lv.gaps, gap{lv.max + 1, run.FinalIndex})
	}
	return lv
}

// at returns the entry at index i, if some journal holds it.
func (lv *logView) at(i uint64) (*slot, bool) {
	s, ok := lv.slots[i]
	return s, ok
}

// gapsIn returns the unexplained gaps overlapping [from, to], clipped.
func (lv *logView) gapsIn(from, to uint64) []gap {
	var out []gap
	for _, g := range lv.gaps {
		if g.to < from || g.from > to {
			continue
		}
		out = append(out, gap{max(g.from, from), min(g.to, to)})
	}
	return out
}

// unknown reports whether index i is in an unexplained gap: what committed
// there cannot be known.
func (lv *logView) unknown(i uint64) bool {
	return len(lv.gapsIn(i, i)) > 0
}

// firstGap returns the first unexplained gap index at or below n (0: none).
// Beyond the last journaled index nothing is unknown unless the trailing gap
// up to the run's FinalIndex says so: every node's journal is read after the
// run, and the FSM applies nothing it does not journal.
func (lv *logView) firstGap(n uint64) uint64 {
	for _, g := range lv.gaps {
		if g.from <= n {
			return g.from
		}
	}
	return 0
}

func describeGaps(gs []gap) string {
	s := ""
	for i, g := range gs {
		if i > 0 {
			s += ","
		}
		if g.from == g.to {
			s += fmt.Sprint(g.from)
		} else {
			s += fmt.Sprintf("%d-%d", g.from, g.to)
		}
	}
	return s
}

// change is one committed change of a service: an entry with Changed set.
// A change of the service's metadata has kind meta and no address.
type change struct {
	index  uint64
	addr   string
	kind   string // up, update, down or meta
	reason string // down: unregister or expire; meta: "deleted" for a delete-meta
	typ    string // the entry type
	at     int64  // earliest apply time
	// mark: a suspect entry, an update that changed only the marker (set
	// to suspect); the instance's last registration stays what it was.
	mark, suspect bool
}

// serviceLog is a service's committed changes in index order.
type serviceLog struct {
	changes []change
	byIndex map[uint64]int
}

// services derives every service's committed changes by replaying the union
// in index order: a changed register is an up if the instance was absent,
// else an update; a changed unregister or expire is a down; a changed
// set-meta or delete-meta is a meta change; a suspect entry is an update
// that changes no registration (mark).
func (lv *logView) services() map[string]*serviceLog {
	out := map[string]*serviceLog{}
	state := map[instKey]bool{}
	for _, i := range lv.idx {
		e := lv.slots[i].e
		if !e.Changed || e.Name == "" {
			continue
		}
		c := change{index: i, addr: e.Addr, typ: e.Type, at: lv.slots[i].firstAt}
		k := instKey{e.Name, e.Addr}
		switch e.Type {
		case typeRegister:
			c.kind = kindUp
			if state[k] {
				c.kind = kindUpdate
			}
			state[k] = true
		case typeUnregister, typeExpire:
			c.kind, c.reason = kindDown, e.Type
			delete(state, k)
		case typeSetMeta:
			c.kind, c.addr = kindMeta, ""
		case typeDeleteMeta:
			c.kind, c.addr, c.reason = kindMeta, "", metaDeleted
		case typeSuspect:
			c.kind, c.mark, c.suspect = kindUpdate, true, e.Suspect
		default:
			continue
		}
		sl := out[e.Name]
		if sl == nil {
			sl = &serviceLog{byIndex: map[uint64]int{}}
			out[e.Name] = sl
		}
		sl.byIndex[i] = len(sl.changes)
		sl.changes = append(sl.changes, c)
	}
	return out
}

// metaDeleted is the reason of a meta change that deleted the metadata.
const metaDeleted = "deleted"

// metaAt replays a service's meta changes up to and including index n: the
// index of its metadata then (0: none).
func (sl *serviceLog) metaAt(n uint64) uint64 {
	var idx uint64
	if sl == nil {
		return 0
	}
	for _, c := range sl.changes {
		if c.index > n {
			break
		}
		switch {
		case c.kind != kindMeta:
		case c.reason == metaDeleted:
			idx = 0
		default:
			idx = c.index
		}
	}
	return idx
}

// stateAt replays a service's changes up to and including index n: addr →
// index of its last registration. Meta changes are not instances: see metaAt.
func (sl *serviceLog) stateAt(n uint64) map[string]uint64 {
	st := map[string]uint64{}
	if sl == nil {
		return st
	}
	for _, c := range sl.changes {
		if c.index > n {
			break
		}
		switch {
		case c.kind == kindMeta:
			continue
		case c.kind == kindDown:
			delete(st, c.addr)
		case !c.mark:
			st[c.addr] = c.index
		}
	}
	return st
}

// between returns the changes with from < index < to.
func (sl *serviceLog) between(from, to uint64) []change {
	if sl == nil {
		return nil
	}
	var out []change
	for _, c := range sl.changes {
		if c.index <= from {
			continue
		}
		if c.index >= to {
			break
		}
		out = append(out, c)
	}
	return out
}

// lastUpTo returns the index of the last change at or below n (0: none).
func (sl *serviceLog) lastUpTo(n uint64) uint64 {
	var last uint64
	if sl == nil {
		return 0
	}
	for _, c := range sl.changes {
		if c.index > n {
			break
		}
		last = c.index
	}
	return last
}
