package check

import (
	"fmt"
	"math"

	"github.com/discoverd/discoverd/test/fault/history"
)

// Durability checks that acknowledged writes were committed and survived,
// and that no write was applied twice or applied after it was reported as
// failed. The committed log is the union of the journals (logView).
//
//  1. Acknowledged writes are committed. Every Register, Unregister,
//     MetaSet or MetaDelete op with outcome ok must have a journal entry
//     carrying its request id ("acknowledged write missing from every
//     journal" otherwise). The first such entry must be this write (same
//     type, service and address; a metadata write changed the state) and,
//     if the op recorded an index, sit at that index (a retried duplicate
//     answers the first index). Ops without a request id are noted, not
//     checked.
//  2. Acknowledged registrations survive. The instance of an ok Register
//     must be in run.Final unless a later changed entry of the same instance
//     at or below FinalIndex removed it (unregister or expire) or superseded
//     it (a later register; the instance then is the newer registration).
//  3. Nothing applied twice. A request id may have changed the state at one
//     index only; a later entry with the same id must have Changed false
//     (the FSM's deduplication). One violation per extra index.
//  4. Failed means not applied. An op with outcome fail (a metadata write's
//     conflict among them) must have no entry with its request id and
//     Changed true.
//  5. The final state is the journals' state. Replaying the union's changed
//     entries up to FinalIndex must give exactly run.Final, service by
//     service: the same addresses, each with the same registration index.
//     Skipped (noted) when an unexplained gap (see logView) lies at or below
//     FinalIndex, or when FinalIndex was not recorded.
func Durability(run *history.Run) Verdict {
	v := newVerdict(NameDurability)
	lv := newLogView(run)
	logs := lv.services()
	final := finalState(run)
	finalIdx := run.FinalIndex
	if finalIdx == 0 {
		v.note("final index not recorded: survival is judged against the whole journals")
		finalIdx = math.MaxUint64
	}
	if lv.explained > 0 {
		v.note("%d indices missing from every journal at term boundaries (leader no-op/barrier entries, never applied by the FSM)", lv.explained)
	}

	// changesOf returns the changes of one instance.
	changesOf := func(svc, addr string) []change {
		var out []change
		if sl := logs[svc]; sl != nil {
			for _, c := range sl.changes {
				if c.addr == addr {
					out = append(out, c)
				}
			}
		}
		return out
	}

	noID := 0
	for _, op := range run.Ops {
		typ := op.Kind // the journal's type of the write
		switch op.Kind {
		case history.Register, history.Unregister:
		case history.MetaSet:
			typ = typeSetMeta
		case history.MetaDelete:
			typ = typeDeleteMeta
		default:
			continue
		}
		if op.RequestID == "" {
			noID++
			continue
		}
		ids := lv.byReq[op.RequestID]
		switch op.Outcome {
		case history.OK:
			v.Stats["acknowledged_writes"]++
			if len(ids) == 0 {
				msg := "acknowledged write missing from every journal"
				if op.Index != 0 && lv.unknown(op.Index) {
					msg += fmt.Sprintf(" (its index %d is in a journal gap)", op.Index)
				}
				v.fail(Violation{Service: op.Service, Addr: op.Addr, Node: op.Node, Index: op.Index, At: op.Return,
					Msg: fmt.Sprintf("%s: %s (op %d, request %s)", msg, op.Kind, op.ID, op.RequestID)})
				continue
			}
			first := lv.slots[ids[0]].e
			if first.Type != typ || first.Name != op.Service || first.Addr != op.Addr || (typ != op.Kind && !first.Changed) {
				v.fail(Violation{Service: op.Service, Addr: op.Addr, Node: op.Node, Index: ids[0], At: op.Return,
					Msg: fmt.Sprintf("request %s of %s (op %d) first committed as %s", op.RequestID, op.Kind, op.ID, describeEntry(first))})
				continue
			}
			if op.Index != 0 && op.Index != ids[0] {
				v.fail(Violation{Service: op.Service, Addr: op.Addr, Node: op.Node, Index: op.Index, At: op.Return,
					Msg: fmt.Sprintf("%s (op %d) acknowledged with index %d, but its request id first committed at index %d", op.Kind, op.ID, op.Index, ids[0])})
			}
			if op.Kind != history.Register || ids[0] > finalIdx {
				continue
			}
			if _, ok := final[op.Service][op.Addr]; ok {
				continue
			}
			later := false
			for _, c := range changesOf(op.Service, op.Addr) {
				if c.index > ids[0] && c.index <= finalIdx {
					later = true
					break
				}
			}
			if !later {
				v.fail(Violation{Service: op.Service, Addr: op.Addr, Node: op.Node, Index: ids[0], At: op.Return,
					Msg: fmt.Sprintf("acknowledged registration (op %d, index %d) is not in the final state, and no later entry removed or replaced it", op.ID, ids[0])})
			}
		case history.Fail:
			for _, i := range ids {
				if e := lv.slots[i].e; e.Changed {
					v.fail(Violation{Service: op.Service, Addr: op.Addr, Node: op.Node, Index: i, At: op.Return,
						Msg: fmt.Sprintf("%s (op %d) reported as definitely failed (%s) was applied at index %d", op.Kind, op.ID, op.Code, i)})
				}
			}
		}
	}
	if noID > 0 {
		v.note("%d writes carry no request id and were not matched to the journals", noID)
	}

	// Nothing applied twice.
	for _, rid := range sortedKeys(lv.byReq) {
		var applied []uint64
		for _, i := range lv.byReq[rid] {
			if lv.slots[i].e.Changed {
				applied = append(applied, i)
			}
		}
		for _, i := range applied[min(1, len(applied)):] {
			e := lv.slots[i].e
			v.fail(Violation{Service: e.Name, Addr: e.Addr, Index: i, At: lv.slots[i].firstAt,
				Msg: fmt.Sprintf("request %s applied twice: %s changed the state at index %d and again at index %d", rid, e.Type, applied[0], i)})
		}
	}
	v.Stats["request_ids"] = len(lv.byReq)

	// The final state is the journals' state.
	switch gs := lv.gapsIn(1, finalIdx); {
	case run.FinalIndex == 0:
		v.note("final-state replay skipped: no final index")
	case len(gs) > 0:
		v.note("journal gap at %s, final-state replay skipped", describeGaps(gs))
	default:
		services := map[string]bool{}
		for s := range final {
			services[s] = true
		}
		for s := range logs {
			services[s] = true
		}
		for _, svc := range sortedKeys(services) {
			want := logs[svc].stateAt(finalIdx)
			got := final[svc]
			for _, a := range sortedAddrs(want) {
				gi, ok := got[a]
				switch {
				case !ok:
					v.fail(Violation{Service: svc, Addr: a, Index: want[a],
						Msg: fmt.Sprintf("journals hold %s (registered at index %d) at index %d, the final state does not", a, want[a], finalIdx)})
				case gi != want[a]:
					v.fail(Violation{Service: svc, Addr: a, Index: gi,
						Msg: fmt.Sprintf("final state has %s registered at index %d, journals at index %d", a, gi, want[a])})
				}
			}
			for _, a := range sortedAddrs(got) {
				if _, ok := want[a]; !ok {
					v.fail(Violation{Service: svc, Addr: a, Index: got[a],
						Msg: fmt.Sprintf("final state has %s (index %d), the journals' replay to index %d does not", a, got[a], finalIdx)})
				}
			}
		}
		v.Stats["final_instances"] = len(run.Final)
	}
	return v.done()
}
