package check

import (
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/discoverd/discoverd/test/fault/history"
)

// The linearizability of service metadata: a register with compare-and-set.

// metaInput is a metadata op's input in the model.
type metaInput struct {
	Kind   string // history.MetaSet, MetaDelete or MetaGet
	Data   string // set: the data written
	Expect uint64 // set, delete: the index expected
}

// Outputs of metadata writes in the model (beside resOK, resNotFound,
// resUnknown).
const resConflict = "conflict"

// metaOutput is a metadata op's output in the model.
type metaOutput struct {
	Res   string // writes: ok, conflict, not_found or unknown
	Index uint64 // set ok: the new metadata's index; conflict: the current index it reported; get: the metadata's index (0: none)
	Data  string // get: the data read
}

// metaState is a service's metadata in the model: none (Index 0), or Data
// set at Index. A set whose outcome stayed unknown and that took effect
// leaves its index unknown (Any): the next op that reveals it pins it.
type metaState struct {
	Index uint64
	Data  string
	Any   bool // set at an index no op revealed yet (Index is 0 then)
}

func (s metaState) exists() bool { return s.Any || s.Index != 0 }

// at reports whether the metadata may be at idx (0: none); pinned is the
// state with the index known.
func (s metaState) at(idx uint64) (pinned metaState, ok bool) {
	switch {
	case s.Any:
		return metaState{Index: idx, Data: s.Data}, idx != 0
	case s.Index == idx:
		return s, true
	}
	return s, false
}

// MetaModel is the sequential specification of a service's metadata:
//
//   - set(d, e) → ok(n): the metadata was at e (0: none); it is now d at n,
//     and n is above the index it had (indices only grow).
//   - set(d, e) → conflict(c), delete(e) → conflict(c): the metadata was not
//     at e — it was at c (0: none) — and did not change.
//   - delete(e) → ok: the metadata existed, at e unless e is 0; now none.
//   - delete(0) → not_found: there was none.
//   - get() → (d, n): the metadata is d at n; (_, 0): there is none.
//   - a write with an unknown outcome happened or did not: both successor
//     states are kept (an unknown set leaves its index open until an op
//     reveals it).
func MetaModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{metaState{}} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(metaState), input.(metaInput), output.(metaOutput)
			switch in.Kind {
			case history.MetaGet:
				if p, ok := s.at(out.Index); ok && (out.Index == 0 || p.Data == out.Data) {
					return []any{p}
				}
			case history.MetaSet:
				switch out.Res {
				case resOK:
					if _, ok := s.at(in.Expect); ok && out.Index > s.Index && out.Index > in.Expect {
						return []any{metaState{Index: out.Index, Data: in.Data}}
					}
				case resConflict:
					if p, ok := s.at(out.Index); ok && out.Index != in.Expect {
						return []any{p}
					}
				case resUnknown:
					if _, ok := s.at(in.Expect); ok {
						return []any{s, metaState{Data: in.Data, Any: true}}
					}
					return []any{s}
				}
			case history.MetaDelete:
				switch out.Res {
				case resOK:
					if _, ok := s.at(in.Expect); s.exists() && (in.Expect == 0 || ok) {
						return []any{metaState{}}
					}
				case resConflict:
					if p, ok := s.at(out.Index); ok && in.Expect != 0 && out.Index != in.Expect {
						return []any{p}
					}
				case resNotFound:
					if in.Expect == 0 && !s.exists() {
						return []any{s}
					}
				case resUnknown:
					if _, ok := s.at(in.Expect); s.exists() && (in.Expect == 0 || ok) {
						return []any{s, metaState{}}
					}
					return []any{s}
				}
			}
			return nil
		},
		Equal: func(a, b any) bool { return a.(metaState) == b.(metaState) },
		Hash: func(state any) uint64 {
			s := state.(metaState)
			h := fnv.New64a()
			fmt.Fprintf(h, "%d/%v/%s", s.Index, s.Any, s.Data)
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(metaInput), output.(metaOutput)
			res := out.Res
			switch {
			case res == resUnknown:
				res = "? (unknown outcome)"
			case res == resOK && in.Kind == history.MetaSet:
				res = fmt.Sprintf("ok at %d", out.Index)
			case res == resConflict:
				res = fmt.Sprintf("conflict (at %d)", out.Index)
			}
			switch in.Kind {
			case history.MetaGet:
				if out.Index == 0 {
					return "get() → none"
				}
				return fmt.Sprintf("get() → %q at %d", out.Data, out.Index)
			case history.MetaSet:
				return fmt.Sprintf("set(%q, expect %d) → %s", in.Data, in.Expect, res)
			}
			return fmt.Sprintf("delete(expect %d) → %s", in.Expect, res)
		},
		DescribeState: func(state any) string {
			s := state.(metaState)
			switch {
			case s.Any:
				return fmt.Sprintf("%q at an unknown index", s.Data)
			case s.Index == 0:
				return "none"
			}
			return fmt.Sprintf("%q at %d", s.Data, s.Index)
		},
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			return fmt.Sprint(info)
		},
	}
	return nm.ToModel()
}

// resolveMeta settles an unknown-outcome metadata write against the
// committed log, as resolve does for registrations: found, it happened with
// the journal's result — applied (ok, at its index), or a conflict at the
// index the journal says the metadata was at, or not_found — taking effect
// no later than its first apply; not found in a complete log, it never
// committed (result ""); otherwise ok is false.
func (lv *logView) resolveMeta(op history.Op) (out metaOutput, at int64, ok bool) {
	if op.RequestID == "" {
		return metaOutput{}, 0, false
	}
	if idx := lv.byReq[op.RequestID]; len(idx) > 0 {
		sl := lv.slots[idx[0]]
		e := sl.e
		switch {
		case e.Changed:
			return metaOutput{Res: resOK, Index: e.Index}, sl.firstAt, true
		case e.Type == typeDeleteMeta && e.MetaExpect == 0 && e.MetaIndex == 0:
			return metaOutput{Res: resNotFound}, sl.firstAt, true
		}
		return metaOutput{Res: resConflict, Index: e.MetaIndex}, sl.firstAt, true
	}
	if len(lv.gaps) > 0 || lv.final == 0 || len(lv.idx) == 0 {
		return metaOutput{}, 0, false
	}
	return metaOutput{}, 0, true
}

// metaOps returns the porcupine operations of one service's metadata ops,
// with the history ops they stand for.
func metaOps(ops []history.Op, lv *logView, resolved *resolution) ([]porcupine.Operation, []history.Op) {
	sorted := make([]history.Op, len(ops))
	copy(sorted, ops)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Call != sorted[j].Call {
			return sorted[i].Call < sorted[j].Call
		}
		return sorted[i].ID < sorted[j].ID
	})
	var c opCollector
	for _, op := range sorted {
		in := metaInput{Kind: op.Kind, Data: op.Data, Expect: op.Expect}
		var res metaOutput
		ret := op.Return
		switch op.Kind {
		case history.MetaGet:
			if op.Outcome != history.OK {
				continue // a read that did not answer says nothing
			}
			res = metaOutput{Index: op.MetaIndex, Data: op.Data}
		case history.MetaSet, history.MetaDelete:
			switch {
			case op.Outcome == history.OK:
				res = metaOutput{Res: resOK, Index: op.Index}
			case op.Outcome == history.Fail && op.Code == "conflict":
				res = metaOutput{Res: resConflict, Index: op.MetaIndex}
			case op.Outcome == history.Fail && op.Code == "not_found" && op.Kind == history.MetaDelete:
				res = metaOutput{Res: resNotFound}
			case op.Outcome == history.Unknown:
				r, at, ok := lv.resolveMeta(op)
				switch {
				case !ok:
					res, ret = metaOutput{Res: resUnknown}, unknownReturn
					resolved.open++
				case r.Res == "":
					resolved.never++
					continue // never committed: it did not happen
				default:
					res, ret = r, max(at, op.Call+1)
					resolved.applied++
				}
			default:
				continue // failed: it did not happen
			}
		default:
			continue
		}
		c.add(op, in, res, ret)
	}
	return c.out, c.src
}

// MetaLinearizable checks, per service, that the metadata ops — meta-set
// and meta-delete (compare-and-set on an expected index) and meta-get
// (consistent reads) — are linearizable against MetaModel, with porcupine.
// Metadata never expires, so every service's metadata ops are checked.
//
// Outcomes: ok ops are kept; a write that failed with conflict is kept as a
// conflict reporting the index it carried (MetaIndex), a delete that failed
// with not_found as not_found; other failed ops are dropped (they did not
// happen); unknown writes are resolved against the journals by request id
// (applied at their index, or a conflict at the index the journal says the
// metadata was at, or never committed) and otherwise kept open (Return =
// MaxInt64, both outcomes); unknown reads are dropped. Illegal is a
// violation naming the first op no partial linearization reached, and so
// is Unknown (the checker timed out). The results (one per checked
// service, named "<service>-meta") feed Visualize.
func MetaLinearizable(run *history.Run, timeout time.Duration) (Verdict, []ServiceResult) {
	v := newVerdict(NameMetaLinearizable)
	byService := map[string][]history.Op{}
	for _, op := range run.Ops {
		switch op.Kind {
		case history.MetaSet, history.MetaDelete, history.MetaGet:
			byService[op.Service] = append(byService[op.Service], op)
		}
	}
	lv := newLogView(run)
	var resolved resolution
	var results []ServiceResult
	for _, svc := range sortedKeys(byService) {
		ops, src := metaOps(byService[svc], lv, &resolved)
		if len(ops) == 0 {
			continue
		}
		model := MetaModel()
		res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
		results = append(results, ServiceResult{Service: svc + "-meta", Result: res, Info: info, Model: model, Ops: len(ops)})
		v.Stats["services"]++
		v.Stats["ops"] += len(ops)
		for _, op := range src {
			switch {
			case op.Kind == history.MetaGet:
				v.Stats["gets"]++
			case op.Outcome == history.OK:
				v.Stats["writes_ok"]++
			case op.Code == "conflict":
				v.Stats["conflicts"]++
			}
		}
		switch res {
		case porcupine.Ok:
		case porcupine.Unknown:
			v.fail(Violation{Service: svc, Msg: fmt.Sprintf("checker timed out after %s on %d metadata operations: linearizability unknown", timeout, len(ops))})
		default:
			v.fail(explainMetaIllegal(svc, ops, src, info))
		}
	}
	if n := resolved.applied + resolved.never + resolved.open; n > 0 {
		v.note("%d unknown-outcome metadata writes: %d found in the journals, %d never committed (dropped), %d left open",
			n, resolved.applied, resolved.never, resolved.open)
	}
	v.Stats["unknown_resolved"] = resolved.applied + resolved.never
	v.Stats["unknown_open"] = resolved.open
	return v.done(), results
}

// explainMetaIllegal names the first operation (by call) that no partial
// linearization reached.
func explainMetaIllegal(svc string, ops []porcupine.Operation, src []history.Op, info porcupine.LinearizationInfo) Violation {
	x := Violation{Service: svc, Msg: "metadata not linearizable"}
	covered := map[int]bool{}
	for _, part := range info.PartialLinearizations() {
		for _, lin := range part {
			for _, id := range lin {
				covered[id] = true
			}
		}
	}
	for i := range ops {
		if covered[i] {
			continue
		}
		op := src[i]
		x.Index, x.Node, x.At = op.Index, op.Node, op.Call
		if op.Kind == history.MetaGet || op.Code == "conflict" {
			x.Index = op.MetaIndex
		}
		x.Msg = fmt.Sprintf("metadata not linearizable: no linearization reaches %s (op %d, client %s)",
			MetaModel().DescribeOperation(ops[i].Input, ops[i].Output), op.ID, op.Client)
		return x
	}
	return x
}
