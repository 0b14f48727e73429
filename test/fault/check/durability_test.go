package check

import (
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

// durableRun is a good history: acknowledged writes, a retried write the
// FSM deduplicated, a not_found unregister, a failed write that never
// reached the log, unknown writes of both fates, an expiry, a registration
// superseded by a later one, and a leader change (its no-op and barrier
// are in no journal).
func durableRun() (*logBuilder, []history.Op) {
	b := newLog()
	i2 := b.register("web", "a:1", "r1", 3_600_000, 10) // 2
	b.register("web", "b:1", "r2", 3_600_000, 20)       // 3: unknown to its client
	b.register("web", "b:1", "r2", 3_600_000, 30)       // 4: its retry, deduplicated
	i5 := b.unregister("web", "c:1", "r3", 40)          // 5: not_found
	b.newTerm()                                         //
	b.skip(2)                                           // 6, 7: no-op, barrier
	i8 := b.register("web", "c:1", "r4", 3_600_000, 50) // 8
	i9 := b.register("web", "c:1", "r5", 3_600_000, 60) // 9: supersedes 8
	i10 := b.unregister("web", "a:1", "r6", 70)         // 10
	i11 := b.register("ttl", "t:1", "r7", 2000, 80)     // 11
	b.expire("ttl", "t:1", i11, 2100, 2101)             // 12
	b.register("web", "d:1", "r8", 3_600_000, 300)      // 13: unknown, applied
	ops := []history.Op{
		opReg(1, "c1", "web", "a:1", "r1", 0, 11, history.OK, i2),
		opReg(2, "c2#0", "web", "b:1", "r2", 15, 25, history.Unknown, 0),
		opReg(3, "c2#1", "web", "b:1", "r2", 28, 31, history.OK, 3), // same id: answers the first index
		opUnreg(4, "c3", "web", "c:1", "r3", 35, 41, history.Fail, i5),
		opReg(5, "c1", "web", "c:1", "r4", 45, 51, history.OK, i8),
		opReg(6, "c3", "web", "c:1", "r5", 55, 61, history.OK, i9),
		opUnreg(7, "c1", "web", "a:1", "r6", 65, 71, history.OK, i10),
		opReg(8, "h1", "ttl", "t:1", "r7", 75, 81, history.OK, i11),
		opReg(9, "c3", "web", "e:1", "r9", 200, 201, history.Fail, 0), // no_leader
		opReg(10, "c1#0", "web", "d:1", "r8", 290, 9000, history.Unknown, 0),
		opReg(11, "c1#1", "web", "f:1", "r10", 9100, 9200, history.Unknown, 0), // never applied
	}
	ops[7].TTLMillis = 2000
	ops[8].Code = "no_leader"
	return b, ops
}

func TestCheck_DurabilityGood(t *testing.T) {
	b, ops := durableRun()
	run := b.run(ops)
	v := Durability(run)
	wantOK(t, v)
	wantNote(t, v, "2 indices missing from every journal at term boundaries")
	if v.Stats["acknowledged_writes"] != 6 || v.Stats["final_instances"] != 3 {
		t.Errorf("stats = %v", v.Stats)
	}
	// A node that installed a snapshot over 3..9 changes nothing: the
	// others hold those entries.
	var kept []history.Entry
	for _, e := range run.Entries {
		if e.Node != "n3" || e.Index < 3 || e.Index > 9 {
			kept = append(kept, e)
		}
	}
	run.Entries = kept
	wantOK(t, Durability(run))
}

// An acknowledged registration that no journal holds was never committed
// (e.g. acknowledged before commit, then lost with its leader).
func TestCheck_DurabilityAckedWriteMissing(t *testing.T) {
	b, ops := durableRun()
	ops = append(ops, opReg(20, "c9", "web", "g:1", "r20", 400, 410, history.OK, 14))
	v := Durability(b.run(ops))
	wantViolations(t, v, want{service: "web", addr: "g:1", index: 14, msg: "acknowledged write missing from every journal"})
}

// One request id that changed the state at two indices was applied twice.
func TestCheck_DurabilityAppliedTwice(t *testing.T) {
	b, ops := durableRun()
	b.unregister("web", "b:1", "r30", 500) // 14
	i := b.register("web", "b:1", "r2", 3_600_000, 510)
	b.entries[len(b.entries)-1].Changed = true // dedup failed: applied again
	b.state[instKey{"web", "b:1"}] = i
	v := Durability(b.run(ops))
	wantViolations(t, v, want{service: "web", addr: "b:1", index: i, msg: "request r2 applied twice: register changed the state at index 3 and again at index 15"})
}

// A write the client was told definitely failed must not be in the log.
func TestCheck_DurabilityFailedButApplied(t *testing.T) {
	b, ops := durableRun()
	i := b.register("web", "e:1", "r9", 3_600_000, 205) // op 9's request id
	v := Durability(b.run(ops))
	wantViolations(t, v, want{service: "web", addr: "e:1", index: i, msg: "reported as definitely failed (no_leader) was applied"})
}

// An acknowledged write answered with an index where its entry is not.
func TestCheck_DurabilityAckedWrongIndex(t *testing.T) {
	b, ops := durableRun()
	ops[0].Index = 3
	v := Durability(b.run(ops))
	wantViolations(t, v, want{service: "web", addr: "a:1", index: 3, msg: "acknowledged with index 3, but its request id first committed at index 2"})
}

// A registration that is committed but missing from the final state, with
// nothing removing it, was lost; the final state then also disagrees with
// the journals' replay.
func TestCheck_DurabilityRegistrationLost(t *testing.T) {
	b, ops := durableRun()
	run := b.run(ops)
	var final []history.Instance
	for _, in := range run.Final {
		if in.Addr != "b:1" {
			final = append(final, in)
		}
	}
	run.Final = final
	v := Durability(run)
	wantViolations(t, v,
		want{service: "web", addr: "b:1", index: 3, msg: "acknowledged registration (op 3, index 3) is not in the final state"},
		want{service: "web", addr: "b:1", index: 3, msg: "journals hold b:1 (registered at index 3) at index 13, the final state does not"},
	)
}

// The final state must be the journals' state: same addresses, same
// registration indices.
func TestCheck_DurabilityFinalDisagrees(t *testing.T) {
	b, ops := durableRun()
	run := b.run(ops)
	run.Final = append(run.Final, history.Instance{Service: "web", Addr: "z:1", Index: 7})
	for i := range run.Final {
		if run.Final[i].Addr == "c:1" {
			run.Final[i].Index = 8 // the superseded registration
		}
	}
	v := Durability(run)
	wantViolations(t, v,
		want{service: "web", addr: "c:1", index: 8, msg: "final state has c:1 registered at index 8, journals at index 9"},
		want{service: "web", addr: "z:1", index: 7, msg: "final state has z:1 (index 7), the journals' replay to index 13 does not"},
	)
}

// A gap inside one term (no journal holds the index) makes the final
// replay unknowable: it is skipped with a note, not guessed.
func TestCheck_DurabilityJournalGapSkipsReplay(t *testing.T) {
	b, ops := durableRun()
	b.skip(1) // 14: lost from every journal, same term around it
	b.register("web", "h:1", "r40", 3_600_000, 600)
	run := b.run(ops)
	run.Final = append(run.Final, history.Instance{Service: "web", Addr: "z:1", Index: 14})
	v := Durability(run)
	wantOK(t, v)
	wantNote(t, v, "journal gap at 14, final-state replay skipped")
}
