package check

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/discoverd/discoverd/test/fault/history"
)

// MonotonicReads checks that no node answers a read from an older state than
// one it answered from before, across restarts.
//
// The reads are the ops of kind List (default: served from the node's own
// state) and CList (consistent) with outcome ok, grouped by Op.Node, the node
// the client sent the read to (the workload makes one attempt on one node and
// never fails over). A read's Index is the state's applied index, not the
// service's, so reads of different services are compared too.
//
// For two reads a and b of the same node with a.Return < b.Call (b was
// called after a had returned), b.Index must be at least a.Index — unless a
// is a CList and b a List: a node that does not lead forwards a consistent
// read to the leader, so a's index may be the leader's, ahead of this node's
// own state, which only a later consistent read must reach again. So a List
// is held to the node's earlier Lists, a CList to its earlier reads of both
// kinds. Reads that overlap are not compared. Every read b that breaks the
// rule is one violation, against the read with the highest index of those it
// is held to (the first of them to return, on a tie), naming the node, both
// ops with their ids, clients, times and indices, and the restarts of the
// node (kill faults healed) between them.
//
// Reads with outcome fail or unknown showed no state and are ignored; so are
// the other kinds and watch sessions.
//
// For each restart of a node (a fault whose name starts with "kill", naming
// it, healed at its End) a note says how long after the restart the node
// first answered a default read, and how many default reads of it failed
// before that, by code. Stats: reads (ok reads), nodes, compared (reads held
// to an earlier one), restarts, and restarts_checked (restarts after which
// the node answered a default read, held to one it answered before the kill).
func MonotonicReads(run *history.Run) Verdict {
	v := newVerdict(NameMonotonicReads)
	byNode := readsByNode(run.Ops, true)
	for _, node := range sortedKeys(byNode) {
		v.Stats["nodes"]++
		v.Stats["reads"] += len(byNode[node])
		v.Stats["compared"] += checkNodeReads(v, node, byNode[node], run.Faults)
	}
	noteRestarts(v, run)
	return v.done()
}

// isRead reports whether op is a read of a service's state.
func isRead(op history.Op) bool { return op.Kind == history.List || op.Kind == history.CList }

// readsByNode returns the reads per node, ok ones only if okOnly, each
// node's in call order (then by id).
func readsByNode(ops []history.Op, okOnly bool) map[string][]history.Op {
	out := map[string][]history.Op{}
	for _, op := range ops {
		if isRead(op) && (!okOnly || op.Outcome == history.OK) {
			out[op.Node] = append(out[op.Node], op)
		}
	}
	for _, rs := range out {
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Call != rs[j].Call {
				return rs[i].Call < rs[j].Call
			}
			return rs[i].ID < rs[j].ID
		})
	}
	return out
}

// checkNodeReads holds one node's ok reads (in call order) to the rule and
// returns how many were held to an earlier read. It sweeps the reads by call
// time while taking in, by return time, every read that returned before the
// current one was called, keeping the newest List and the newest read of
// either kind.
func checkNodeReads(v *verdict, node string, reads []history.Op, faults []history.Fault) int {
	byReturn := make([]history.Op, len(reads))
	copy(byReturn, reads)
	sort.SliceStable(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	newer := func(cur *history.Op, op *history.Op) *history.Op {
		if cur == nil || op.Index > cur.Index {
			return op
		}
		return cur
	}
	compared := 0
	var newestList, newestAny *history.Op
	j := 0
	for _, b := range reads {
		for ; j < len(byReturn) && byReturn[j].Return < b.Call; j++ {
			if byReturn[j].Kind == history.List {
				newestList = newer(newestList, &byReturn[j])
			}
			newestAny = newer(newestAny, &byReturn[j])
		}
		bar := newestAny
		if b.Kind == history.List {
			bar = newestList
		}
		if bar == nil {
			continue
		}
		compared++
		if b.Index < bar.Index {
			v.fail(Violation{Service: b.Service, Node: node, Index: b.Index, At: b.Call, Msg: olderReadMsg(node, *bar, b, faults)})
		}
	}
	return compared
}

// olderReadMsg describes a read b that answered an older index than read a.
func olderReadMsg(node string, a, b history.Op, faults []history.Fault) string {
	msg := fmt.Sprintf("%s got index %d, but %s got index %d from the same node and returned %s before the later read was called",
		describeRead(b), b.Index, describeRead(a), a.Index, ms(b.Call-a.Return))
	if rs := restartsBetween(faults, node, a.Return, b.Call); len(rs) > 0 {
		msg += "; the node was restarted in between: " + strings.Join(rs, ", ")
	}
	return msg
}

// describeRead names a read op with its id, kind, service, client and times.
func describeRead(op history.Op) string {
	return fmt.Sprintf("op %d (%s of %s, client %s, called %s, returned %s)",
		op.ID, op.Kind, op.Service, op.Client, clock(op.Call), clock(op.Return))
}

// clock renders Unix nanoseconds as a local time of day, as the fault
// command and the node logs print it.
func clock(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000") }

// restart is one restart of a node: the heal of a kill fault naming it.
type restart struct {
	node   string
	fault  string
	killed int64 // the fault's Start
	at     int64 // the fault's End: the node was started again
}

// restarts returns every restart in the fault timeline, in time order.
func restarts(faults []history.Fault) []restart {
	var out []restart
	for _, f := range faults {
		if !strings.HasPrefix(f.Name, "kill") || f.End == 0 {
			continue
		}
		for _, n := range f.Nodes {
			out = append(out, restart{node: n, fault: f.Name, killed: f.Start, at: f.End})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// restartsBetween describes the restarts of node within (from, to).
func restartsBetween(faults []history.Fault, node string, from, to int64) []string {
	var out []string
	for _, r := range restarts(faults) {
		if r.node == node && r.at > from && r.at < to {
			out = append(out, fmt.Sprintf("%s healed at %s", r.fault, clock(r.at)))
		}
	}
	return out
}

// noteRestarts notes, for each restart, how soon the node answered a
// default read after it and what the default reads before that got, and
// counts the restarts whose first answer was held to one from before the kill.
func noteRestarts(v *verdict, run *history.Run) {
	lists := readsByNode(defaultReads(run.Ops), false)
	rs := restarts(run.Faults)
	for k, r := range rs {
		v.Stats["restarts"]++
		until := int64(math.MaxInt64) // the node's next kill
		for _, next := range rs[k+1:] {
			if next.node == r.node && next.killed > r.at {
				until = min(until, next.killed)
			}
		}
		note, checked := restartNote(r, lists[r.node], until)
		if checked {
			v.Stats["restarts_checked"]++
		}
		v.note("%s", note)
	}
}

// restartNote describes the node's default reads (in call order) around one
// restart, up to until; checked is true when the node answered one after the
// restart and had answered one before the kill.
func restartNote(r restart, reads []history.Op, until int64) (note string, checked bool) {
	var before, first *history.Op // the last ok read before the kill; the first after the restart
	failed := map[string]int{}
	for i := range reads {
		op := &reads[i]
		switch {
		case op.Outcome == history.OK && op.Return < r.killed:
			if before == nil || op.Return > before.Return {
				before = op
			}
		case op.Call < r.at || op.Call >= until || first != nil:
		case op.Outcome == history.OK:
			first = op
		default:
			failed[orDash(op.Code)]++
		}
	}
	note = fmt.Sprintf("%s restarted at %s (%s): ", r.node, clock(r.at), r.fault)
	switch {
	case first == nil && until < math.MaxInt64:
		note += "no default read of it answered before its next kill"
	case first == nil:
		note += "no default read of it answered afterwards"
	default:
		note += fmt.Sprintf("first default read answered called %s later (op %d, index %d)", ms(first.Call-r.at), first.ID, first.Index)
		if before != nil {
			note += fmt.Sprintf(", the last before the kill: op %d, index %d", before.ID, before.Index)
			checked = true
		}
	}
	if len(failed) > 0 {
		var parts []string
		for _, code := range sortedKeys(failed) {
			parts = append(parts, fmt.Sprintf("%s ×%d", code, failed[code]))
		}
		note += "; reads failed before it: " + strings.Join(parts, ", ")
	}
	return note, checked
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// defaultReads returns the List ops: the reads a node answers from its own
// state.
func defaultReads(ops []history.Op) []history.Op {
	var out []history.Op
	for _, op := range ops {
		if op.Kind == history.List {
			out = append(out, op)
		}
	}
	return out
}
