package check

import (
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/discoverd/discoverd/test/fault/history"
)

// Metadata ops and journal lines for hand-made histories. Times in ms
// after t0.

func opMetaSet(id int64, client, svc, data string, expect uint64, rid string, call, ret int64, out history.Outcome, index uint64) history.Op {
	return history.Op{ID: id, Client: client, Kind: history.MetaSet, Service: svc, Data: data, Expect: expect, RequestID: rid,
		Node: "n1", Call: at(call), Return: at(ret), Outcome: out, Index: index}
}

// conflicted marks a write op as failed with a conflict at current.
func conflicted(op history.Op, current uint64) history.Op {
	op.Outcome, op.Code, op.MetaIndex, op.Index = history.Fail, "conflict", current, 0
	return op
}

func opMetaDelete(id int64, client, svc string, expect uint64, rid string, call, ret int64, out history.Outcome, index uint64) history.Op {
	return history.Op{ID: id, Client: client, Kind: history.MetaDelete, Service: svc, Expect: expect, RequestID: rid,
		Node: "n2", Call: at(call), Return: at(ret), Outcome: out, Index: index}
}

func opMetaGet(id int64, client, svc string, call, ret int64, data string, metaIndex uint64) history.Op {
	return history.Op{ID: id, Client: client, Kind: history.MetaGet, Service: svc, Node: "n3", Call: at(call), Return: at(ret),
		Outcome: history.OK, Data: data, MetaIndex: metaIndex}
}

// setMeta journals a set-meta the way the FSM does: applied if the
// metadata is at expect.
func (b *logBuilder) setMeta(svc string, expect uint64, rid string, atMs int64, meta map[string]uint64) uint64 {
	e := history.Entry{Type: typeSetMeta, RequestID: rid, Name: svc, MetaExpect: expect, MetaIndex: meta[svc], At: at(atMs)}
	if meta[svc] == expect {
		e.Changed = true
	} else {
		e.Err = "conflict"
	}
	i := b.add(e)
	if e.Changed {
		meta[svc] = i
	}
	return i
}

func (b *logBuilder) deleteMeta(svc string, expect uint64, rid string, atMs int64, meta map[string]uint64) uint64 {
	e := history.Entry{Type: typeDeleteMeta, RequestID: rid, Name: svc, MetaExpect: expect, MetaIndex: meta[svc], At: at(atMs)}
	if meta[svc] != 0 && (expect == 0 || meta[svc] == expect) {
		e.Changed = true
		delete(meta, svc)
	} else {
		e.Err = "conflict or not found"
	}
	return b.add(e)
}

// TestCheck_MetaLinearizableGood: racing compare-and-sets with one winner
// and conflicts at its index, gets, a delete, a not_found, an unknown set
// the journals resolve and one they cannot (revealed by a later get) are
// linearizable; a failed op and an unanswered get are dropped.
func TestCheck_MetaLinearizableGood(t *testing.T) {
	b, meta := newLog(), map[string]uint64{}
	i2 := b.setMeta("db", 0, "s1", 10, meta)  // 2: c1 wins the create
	b.setMeta("db", 0, "s2", 11, meta)        // 3: c2 loses, at 2
	i4 := b.setMeta("db", i2, "s3", 30, meta) // 4: c1 again
	b.setMeta("db", i2, "s4", 31, meta)       // 5: c2 loses, at 4
	b.deleteMeta("db", i4, "d1", 50, meta)    // 6
	b.deleteMeta("db", 0, "d2", 60, meta)     // 7: not_found
	i8 := b.setMeta("db", 0, "s5", 70, meta)  // 8: an unknown outcome, found in the journal
	i9 := b.setMeta("db", i8, "", 90, meta)   // 9: unknown, no request id: stays open
	ops := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 5, 15, history.OK, i2),
		conflicted(opMetaSet(2, "c2", "db", "b", 0, "s2", 6, 16, history.OK, 0), i2),
		opMetaGet(3, "c3", "db", 17, 20, "a", i2),
		opMetaSet(4, "c1", "db", "c", i2, "s3", 25, 35, history.OK, i4),
		conflicted(opMetaSet(5, "c2", "db", "d", i2, "s4", 26, 36, history.OK, 0), i4),
		opMetaGet(6, "c3", "db", 28, 40, "c", i4), // concurrent with the winning set
		opMetaDelete(7, "c1", "db", i4, "d1", 45, 55, history.OK, 6),
		{ID: 8, Client: "c2", Kind: history.MetaDelete, Service: "db", RequestID: "d2", Node: "n1", Call: at(58), Return: at(62),
			Outcome: history.Fail, Code: "not_found"},
		opMetaGet(9, "c3", "db", 63, 64, "", 0),
		opMetaSet(10, "c1", "db", "e", 0, "s5", 65, 80, history.Unknown, 0),
		opMetaSet(11, "c4", "db", "f", i8, "", 85, 95, history.Unknown, 0),
		opMetaGet(12, "c3", "db", 100, 105, "f", i9),                                                                           // reveals 11's index
		opMetaSet(13, "c2", "db", "g", 0, "s6", 106, 107, history.Fail, 0),                                                     // no_leader: did not happen
		{ID: 14, Client: "c3", Kind: history.MetaGet, Service: "db", Call: at(108), Return: at(200), Outcome: history.Unknown}, // says nothing
		conflicted(opMetaDelete(15, "c2", "db", i2, "d3", 110, 112, history.OK, 0), i9),
	}
	ops[12].Code = "no_leader"
	b.deleteMeta("db", i2, "d3", 111, meta) // 10: 15's conflict
	run := b.run(ops)
	run.Ops = append(run.Ops, opReg(20, "c9", "db", "x:1", "r20", 0, 1, history.OK, 1)) // instances are not part of it
	v, results := MetaLinearizable(run, linTimeout)
	wantOK(t, v)
	if len(results) != 1 || results[0].Service != "db-meta" || results[0].Result != porcupine.Ok || results[0].Ops != 13 {
		t.Fatalf("results = %+v", results)
	}
	if v.Stats["conflicts"] != 3 || v.Stats["gets"] != 4 || v.Stats["unknown_resolved"] != 1 || v.Stats["unknown_open"] != 1 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// Two writers that both succeed with the same expected index cannot be
// linearized: whichever goes second expected what the first replaced.
func TestCheck_MetaLinearizableTwoWinners(t *testing.T) {
	ops := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 0, 10, history.OK, 2),
		opMetaSet(2, "c1", "db", "b", 2, "s2", 20, 30, history.OK, 3),
		opMetaSet(3, "c2", "db", "c", 2, "s3", 21, 31, history.OK, 4), // both expected 2
	}
	v, results := MetaLinearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "db", msg: "metadata not linearizable"})
	if results[0].Result != porcupine.Illegal {
		t.Errorf("result %v", results[0].Result)
	}
}

// A get returning the old data after a set's acknowledgement is a stale read.
func TestCheck_MetaLinearizableStaleGet(t *testing.T) {
	ops := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 0, 10, history.OK, 2),
		opMetaSet(2, "c1", "db", "b", 2, "s2", 20, 30, history.OK, 3),
		opMetaGet(3, "c2", "db", 40, 45, "a", 2),
	}
	v, _ := MetaLinearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "db", index: 2, msg: `get() → "a" at 2`})
}

// A conflict must report the index the metadata was at: one it never had
// (here, the loser's own expected index) is a violation.
func TestCheck_MetaLinearizableWrongConflictIndex(t *testing.T) {
	ops := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 0, 10, history.OK, 2),
		conflicted(opMetaSet(2, "c2", "db", "b", 0, "s2", 20, 30, history.OK, 0), 7),
	}
	v, _ := MetaLinearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "db", index: 7, msg: "conflict (at 7)"})
}

// Indices only grow: a set acknowledged at an index below the one it replaced.
func TestCheck_MetaLinearizableIndexGoesBack(t *testing.T) {
	ops := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 0, 10, history.OK, 5),
		opMetaSet(2, "c1", "db", "b", 5, "s2", 20, 30, history.OK, 4),
	}
	v, _ := MetaLinearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "db", msg: `set("b", expect 5) → ok at 4`})
}

// An unknown write found in the journals took effect at its journal
// index: a get that reports it at another index is not linearizable.
// Without the journals the write stays open, its index unknown until the
// get reveals it, and the same history passes.
func TestCheck_MetaLinearizableResolvedUnknownTakesItsIndex(t *testing.T) {
	b, meta := newLog(), map[string]uint64{}
	i2 := b.setMeta("db", 0, "s1", 5, meta) // 2
	b.setMeta("db", i2, "s2", 15, meta)     // 3: the unknown one, applied
	ops := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 0, 10, history.OK, i2),
		opMetaSet(2, "c2", "db", "b", i2, "s2", 12, 20, history.Unknown, 0),
		opMetaGet(3, "c3", "db", 30, 35, "b", 9),
	}
	v, _ := MetaLinearizable(b.run(ops), linTimeout)
	wantViolations(t, v, want{service: "db", index: 9, msg: `get() → "b" at 9`})
	open, _ := MetaLinearizable(&history.Run{Ops: ops}, linTimeout)
	wantOK(t, open)
}

// The model alone: a deleted metadata cannot be read, an unconditional
// delete of nothing is not_found, a conditional one a conflict at 0.
func TestCheck_MetaModelSteps(t *testing.T) {
	m := MetaModel()
	st := m.Init()
	step := func(in metaInput, out metaOutput) bool {
		ok, next := m.Step(st, in, out)
		if ok {
			st = next
		}
		return ok
	}
	if !step(metaInput{Kind: history.MetaDelete}, metaOutput{Res: resNotFound}) {
		t.Error("delete(0) of nothing → not_found refused")
	}
	if !step(metaInput{Kind: history.MetaDelete, Expect: 3}, metaOutput{Res: resConflict}) {
		t.Error("delete(3) of nothing → conflict at 0 refused")
	}
	if !step(metaInput{Kind: history.MetaSet, Data: "a"}, metaOutput{Res: resOK, Index: 4}) {
		t.Fatal("create refused")
	}
	if step(metaInput{Kind: history.MetaDelete}, metaOutput{Res: resNotFound}) {
		t.Error("delete(0) → not_found accepted while metadata exists")
	}
	if !step(metaInput{Kind: history.MetaDelete}, metaOutput{Res: resOK}) {
		t.Error("unconditional delete refused")
	}
	if step(metaInput{Kind: history.MetaGet}, metaOutput{Index: 4, Data: "a"}) {
		t.Error("a get of deleted metadata accepted")
	}
}

// metaWatchLog: the watch tests' service with metadata changes among its
// instances'.
//
//	2 up web a:1   3 set-meta (web's metadata at 3)   4 up web b:1
//	5 set-meta expecting 2: a conflict, no change      6 set-meta at 6
//	7 down web a:1 (unregister)                        8 delete-meta
func metaWatchLog() *logBuilder {
	b, meta := newLog(), map[string]uint64{}
	b.register("web", "a:1", "r1", 3_600_000, 20)
	b.setMeta("web", 0, "m1", 30, meta)
	b.register("web", "b:1", "r2", 3_600_000, 40)
	b.setMeta("web", 2, "m2", 50, meta)
	b.setMeta("web", 3, "m3", 60, meta)
	b.unregister("web", "a:1", "r3", 70)
	b.deleteMeta("web", 6, "m4", 80, meta)
	return b
}

func metaEv(index uint64, deleted bool) history.Event {
	e := ev(kindMeta, index, "")
	e.Deleted = deleted
	return e
}

// Watch streams carry meta events: in a state block (the metadata then),
// as changes in order, across a resume, and a watcher's view of the
// metadata must converge.
func TestCheck_WatchesMetaGood(t *testing.T) {
	run := metaWatchLog().run(nil)
	run.Sessions = []history.WatchSession{
		sess("w0", 0, 0, "resume", ev(kindUp, 2, "a:1"), metaEv(3, false), ev(kindCurrent, 3, ""), ev(kindUp, 4, "b:1")),
		sess("w0", 1, 4, "final", metaEv(6, false), down(7, "a:1", "unregister"), ev(kindCurrent, 7, ""), metaEv(8, true)),
		sess("w1", 0, 0, "final", ev(kindUp, 2, "a:1"), ev(kindUp, 4, "b:1"), metaEv(6, false), ev(kindCurrent, 6, ""),
			down(7, "a:1", "unregister"), metaEv(8, true)),
	}
	v := Watches(run)
	wantOK(t, v)
	if v.Stats["converged_checked"] != 2 {
		t.Errorf("stats %v", v.Stats)
	}
}

// What the watch checker must catch about metadata.
func TestCheck_WatchesMetaViolations(t *testing.T) {
	cases := []struct {
		name string
		s    history.WatchSession
		want want
	}{
		{"a missed meta event", sess("w0", 0, 0, "final", ev(kindUp, 2, "a:1"), ev(kindCurrent, 2, ""), ev(kindUp, 4, "b:1"),
			metaEv(6, false), down(7, "a:1", "unregister"), metaEv(8, true)),
			want{index: 3, msg: "missing committed change at index 3: meta"}},
		{"a meta event for a conflict", sess("w0", 0, 0, "final", ev(kindUp, 2, "a:1"), metaEv(3, false), ev(kindUp, 4, "b:1"),
			ev(kindCurrent, 4, ""), metaEv(5, false), metaEv(6, false), down(7, "a:1", "unregister"), metaEv(8, true)),
			want{index: 5, msg: "event for an entry that never committed"}},
		{"a state block without the metadata", sess("w0", 0, 0, "final", ev(kindUp, 2, "a:1"), ev(kindUp, 4, "b:1"),
			ev(kindCurrent, 4, ""), metaEv(6, false), down(7, "a:1", "unregister"), metaEv(8, true)),
			want{index: 4, msg: "state block at 4 has no metadata, the journals' replay the metadata set at 3"}},
		{"a delete reported as a set", sess("w0", 0, 0, "final", ev(kindUp, 2, "a:1"), ev(kindUp, 4, "b:1"), metaEv(3, false),
			ev(kindCurrent, 4, ""), metaEv(6, false), down(7, "a:1", "unregister"), metaEv(8, false)),
			want{index: 8, msg: "deleted false, the committed change is a delete-meta"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := metaWatchLog().run(nil)
			run.Sessions = []history.WatchSession{tc.s}
			v := Watches(run)
			if v.OK || !strings.Contains(v.Violations[0].Msg, tc.want.msg) || v.Violations[0].Index != tc.want.index {
				t.Fatalf("want a first violation at %d saying %q, got:\n%s", tc.want.index, tc.want.msg, v)
			}
		})
	}
	// A watcher that missed the delete does not converge.
	run := metaWatchLog().run(nil)
	run.Sessions = []history.WatchSession{sess("w0", 0, 0, "final", ev(kindUp, 2, "a:1"), ev(kindUp, 4, "b:1"), metaEv(3, false),
		ev(kindCurrent, 4, ""), metaEv(6, false), down(7, "a:1", "unregister"), ev(kindCurrent, 8, ""))}
	v := Watches(run)
	if v.OK || !strings.Contains(v.String(), "missing committed change at index 8: meta (deleted)") ||
		!strings.Contains(v.String(), "did not converge: its view at 8 has the metadata set at 6") {
		t.Fatalf("want the missed delete and no convergence, got:\n%s", v)
	}
}

// Durability holds metadata writes to the journals: an acknowledged set
// that no journal holds, and a conflict that a journal shows applied, are
// violations.
func TestCheck_DurabilityOfMetaWrites(t *testing.T) {
	b, meta := newLog(), map[string]uint64{}
	i2 := b.setMeta("db", 0, "s1", 10, meta)
	ok := []history.Op{
		opMetaSet(1, "c1", "db", "a", 0, "s1", 5, 15, history.OK, i2),
		conflicted(opMetaSet(2, "c2", "db", "b", 0, "s2", 6, 16, history.OK, 0), i2),
	}
	b.setMeta("db", 0, "s2", 12, meta) // the conflict, unchanged
	wantOK(t, Durability(b.run(ok)))

	lost := append(ok, opMetaSet(3, "c1", "db", "c", i2, "s3", 20, 25, history.OK, 4))
	wantViolations(t, Durability(b.run(lost)), want{service: "db", msg: "acknowledged write missing from every journal: meta-set"})

	b2, meta2 := newLog(), map[string]uint64{}
	b2.setMeta("db", 0, "s1", 10, meta2)
	applied := []history.Op{conflicted(opMetaSet(1, "c1", "db", "a", 0, "s1", 5, 15, history.OK, 0), 0)}
	wantViolations(t, Durability(b2.run(applied)), want{service: "db", index: 2, msg: "reported as definitely failed (conflict) was applied at index 2"})
}
