package check

import (
	"fmt"
	"sort"
	"strings"

	"github.com/discoverd/discoverd/test/fault/history"
)

// Replicas checks that the nodes applied the same log and reached the same
// state.
//
// Journals: for every index that two journal lines hold — on two nodes, or
// twice on one node (a restart applies entries again) — the lines must agree
// on Term, RaftIndex, Type, RequestID, Name, Addr, TTLMillis, ExpireIndex, DecidedAt,
// MetaExpect, MetaIndex, Changed and Err (everything but the apply time At). Each index is compared
// against the line of the first node by name that holds it; every node with
// a differing line is one violation naming both nodes (Node "ref,other"),
// with the index and the reference line's service and address. Gaps in a
// node's journal (snapshot installs) are not violations.
//
// Hashes: every node must have reported its state hash at the same applied
// index (the harness takes them after all nodes caught up) — one violation
// if not — and the nodes reporting at one index must report one hash — one
// violation per index with several, naming the nodes of each hash.
func Replicas(run *history.Run) Verdict {
	v := newVerdict(NameReplicas)

	type line struct {
		node string
		e    history.Entry
	}
	byIndex := map[uint64][]line{}
	nodes := map[string]bool{}
	for _, e := range run.Entries {
		byIndex[e.Index] = append(byIndex[e.Index], line{e.Node, e})
		nodes[e.Node] = true
	}
	indices := make([]uint64, 0, len(byIndex))
	for i := range byIndex {
		indices = append(indices, i)
	}
	sort.Slice(indices, func(a, b int) bool { return indices[a] < indices[b] })
	dups := 0
	for _, i := range indices {
		ls := byIndex[i]
		sort.SliceStable(ls, func(a, b int) bool { return ls[a].node < ls[b].node })
		ref := ls[0]
		reported := map[string]bool{}
		seen := map[string]bool{ref.node: true}
		for _, l := range ls[1:] {
			if seen[l.node] {
				dups++
			}
			seen[l.node] = true
			if reported[l.node] {
				continue
			}
			if d := entryDiff(ref.e, l.e); d != "" {
				reported[l.node] = true
				v.fail(Violation{Service: ref.e.Name, Addr: ref.e.Addr, Node: ref.node + "," + l.node, Index: i, At: l.e.At,
					Msg: fmt.Sprintf("journals disagree at index %d: %s has %s, %s has %s (%s)",
						i, ref.node, describeEntry(ref.e), l.node, describeEntry(l.e), d)})
			}
		}
	}
	v.Stats["nodes"] = len(nodes)
	v.Stats["journal_lines"] = len(run.Entries)
	v.Stats["indices"] = len(indices)
	v.Stats["replayed_lines"] = dups

	checkHashes(v, run.Hashes)
	return v.done()
}

func checkHashes(v *verdict, hashes []history.Hash) {
	v.Stats["hashes"] = len(hashes)
	if len(hashes) == 0 {
		v.note("no state hashes recorded")
		return
	}
	byApplied := map[uint64]map[string][]string{} // applied → hash → nodes
	for _, h := range hashes {
		if byApplied[h.Applied] == nil {
			byApplied[h.Applied] = map[string][]string{}
		}
		byApplied[h.Applied][h.Hash] = append(byApplied[h.Applied][h.Hash], h.Node)
	}
	applied := make([]uint64, 0, len(byApplied))
	for a := range byApplied {
		applied = append(applied, a)
	}
	sort.Slice(applied, func(a, b int) bool { return applied[a] < applied[b] })
	if len(applied) > 1 {
		var parts, all []string
		for _, a := range applied {
			var ns []string
			for _, nodes := range byApplied[a] {
				ns = append(ns, nodes...)
			}
			sort.Strings(ns)
			all = append(all, ns...)
			parts = append(parts, fmt.Sprintf("%s@%d", strings.Join(ns, ","), a))
		}
		sort.Strings(all)
		v.fail(Violation{Node: strings.Join(all, ","), Index: applied[len(applied)-1],
			Msg: "state hashes taken at different applied indices: " + strings.Join(parts, " ")})
	}
	for _, a := range applied {
		m := byApplied[a]
		if len(m) < 2 {
			continue
		}
		var parts, all []string
		for _, h := range sortedKeys(m) {
			ns := append([]string(nil), m[h]...)
			sort.Strings(ns)
			all = append(all, ns...)
			parts = append(parts, fmt.Sprintf("%s=%s", strings.Join(ns, ","), short(h)))
		}
		sort.Strings(all)
		v.fail(Violation{Node: strings.Join(all, ","), Index: a,
			Msg: fmt.Sprintf("state hashes differ at applied index %d: %s", a, strings.Join(parts, " "))})
	}
}

// entryDiff names the fields in which two journal lines for one index differ.
func entryDiff(a, b history.Entry) string {
	var d []string
	add := func(name string, x, y any) {
		if x != y {
			if _, ok := x.(string); ok {
				d = append(d, fmt.Sprintf("%s %q≠%q", name, x, y))
			} else {
				d = append(d, fmt.Sprintf("%s %v≠%v", name, x, y))
			}
		}
	}
	add("raft_index", a.RaftIndex, b.RaftIndex)
	add("term", a.Term, b.Term)
	add("type", a.Type, b.Type)
	add("request_id", a.RequestID, b.RequestID)
	add("name", a.Name, b.Name)
	add("addr", a.Addr, b.Addr)
	add("ttl_ms", a.TTLMillis, b.TTLMillis)
	add("expire_index", a.ExpireIndex, b.ExpireIndex)
	add("decided_at", a.DecidedAt, b.DecidedAt)
	add("meta_expect", a.MetaExpect, b.MetaExpect)
	add("meta_index", a.MetaIndex, b.MetaIndex)
	add("suspect", a.Suspect, b.Suspect)
	add("changed", a.Changed, b.Changed)
	add("err", a.Err, b.Err)
	return strings.Join(d, ", ")
}

// describeEntry renders a journal line briefly.
func describeEntry(e history.Entry) string {
	if e.Type == "config" || e.Name == "" {
		return fmt.Sprintf("%s(term %d)", e.Type, e.Term)
	}
	s := fmt.Sprintf("%s %s %s (term %d", e.Type, e.Name, e.Addr, e.Term)
	if e.ExpireIndex != 0 {
		s += fmt.Sprintf(", of index %d", e.ExpireIndex)
	}
	if e.Type == typeSetMeta || e.Type == typeDeleteMeta {
		s += fmt.Sprintf(", expecting %d, metadata at %d", e.MetaExpect, e.MetaIndex)
	}
	if e.Type == typeSuspect {
		s += fmt.Sprintf(", suspect %v", e.Suspect)
	}
	if !e.Changed {
		s += ", unchanged"
	}
	if e.Err != "" {
		s += ", err " + e.Err
	}
	return s + ")"
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
