package check

import (
	"testing"
	"time"

	"github.com/discoverd/discoverd/test/fault/history"
)

// safetyRun: t:1 (TTL 5 s) registered at 100 ms, heartbeats called at 1, 2
// and 3 s, expired as decided at 8.1 s; registered again at 8.5 s and kept
// alive. u:1's expiry carries no decision time. v:1's expiry lost a race
// with a re-registration (Changed false) and is not an expiry.
func safetyRun(decidedMs int64) (*history.Run, uint64) {
	b := newLog()
	i := b.register("ttl", "t:1", "r1", 5000, 100)
	u := b.register("ttl", "u:1", "r2", 1000, 100)
	w := b.register("ttl", "v:1", "r3", 1000, 100)
	b.register("ttl", "v:1", "r4", 1000, 1050)
	b.expire("ttl", "v:1", w, 1100, 1101) // names the old registration: no-op
	b.expire("ttl", "u:1", 0, 0, 1500)
	b.entries[len(b.entries)-1].ExpireIndex, b.entries[len(b.entries)-1].DecidedAt = u, 0
	b.entries[len(b.entries)-1].Changed = true
	delete(b.state, instKey{"ttl", "u:1"})
	e := b.expire("ttl", "t:1", i, decidedMs, decidedMs+1)
	b.register("ttl", "t:1", "r5", 5000, 8500)
	ops := []history.Op{
		opBeat(1, "h1", "ttl", "t:1", 50, 60, history.OK), // before the registration: ignored
		opBeat(2, "h1", "ttl", "t:1", 1000, 1010, history.OK),
		opBeat(3, "h1", "ttl", "t:1", 2000, 2010, history.OK),
		opBeat(4, "h1", "ttl", "t:1", 3000, 3010, history.OK),
		opBeat(5, "h1", "ttl", "t:1", 4000, 4010, history.Fail), // not acknowledged
		opBeat(6, "h1", "ttl", "t:1", 9000, 9010, history.OK),   // the new registration's
		opBeat(7, "h2", "ttl", "v:1", 1200, 1210, history.OK),
	}
	return b.run(ops), e
}

func TestCheck_TTLSafetyGood(t *testing.T) {
	run, _ := safetyRun(8100)
	v := TTLSafety(run)
	wantOK(t, v)
	wantNote(t, v, "1 expire entries carry no decision time")
	if v.Stats["expiries"] != 2 || v.Stats["checked"] != 2 || v.Stats["min_margin_ms"] != 100 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// An expiry decided 1 s after the last acknowledged heartbeat of an
// instance with a 5 s TTL is 4 s early.
func TestCheck_TTLSafetyExpiredEarly(t *testing.T) {
	run, e := safetyRun(4000)
	v := TTLSafety(run)
	wantViolations(t, v, want{service: "ttl", addr: "t:1", index: e,
		msg: "expired early: decided 1000.0ms after the last sign of life (heartbeat op 4 (client h1, node n2) called), TTL 5s — 4000.0ms too soon"})
}

// Without heartbeats the registration's apply time is the last sign of life.
func TestCheck_TTLSafetyEarlyAfterRegistration(t *testing.T) {
	b := newLog()
	i := b.register("ttl", "t:1", "r1", 5000, 100)
	e := b.expire("ttl", "t:1", i, 2100, 2101)
	v := TTLSafety(b.run(nil))
	wantViolations(t, v, want{service: "ttl", addr: "t:1", index: e, msg: "registration at index 2 applied"})
}

// An expire must name a registration of the instance it removes.
func TestCheck_TTLSafetyWrongRegistration(t *testing.T) {
	b := newLog()
	b.register("ttl", "t:1", "r1", 5000, 100)
	o := b.register("ttl", "o:1", "r2", 5000, 100)
	e := b.expire("ttl", "t:1", o, 9000, 9001)
	b.entries[len(b.entries)-1].Changed = true
	v := TTLSafety(b.run(nil))
	wantViolations(t, v, want{service: "ttl", addr: "t:1", index: e, msg: "not a registration of this instance"})
}

var bounds = history.Bounds{RemovalNoFailoverNanos: int64(500 * time.Millisecond), RemovalFailoverNanos: int64(3 * time.Second)}

// livenessRun: three TTL clients (TTL 2 s) stop at 5 s; t:1 is expired
// 2.2 s later, t:2 4 s later across a leader kill, t:3 is unregistered.
func livenessRun() *history.Run {
	return livenessRunT2(9000, history.Fault{Name: "kill-leader", Nodes: []string{"n1"}, Start: at(6000), End: at(7000)})
}

// livenessRunT2 is livenessRun with t:2 expired at t2 (ms) under fault.
func livenessRunT2(t2 int64, fault history.Fault) *history.Run {
	b := newLog()
	i1 := b.register("ttl", "t:1", "r1", 2000, 5)
	i2 := b.register("ttl", "t:2", "r2", 2000, 5)
	b.register("ttl", "t:3", "r3", 2000, 5)
	b.expire("ttl", "t:1", i1, 7199, 7200)
	b.unregister("ttl", "t:3", "r4", 7500)
	b.newTerm()
	b.skip(2)
	b.expire("ttl", "t:2", i2, t2-1, t2)
	b.register("ttl", "z:1", "r9", 2000, 30000) // the run goes on
	ops := []history.Op{
		opReg(1, "h1", "ttl", "t:1", "r1", 0, 10, history.OK, 2),
		opReg(2, "h2", "ttl", "t:2", "r2", 0, 10, history.OK, 3),
		opReg(3, "h3", "ttl", "t:3", "r3", 0, 10, history.OK, 4),
		opStop(4, "h1", "ttl", "t:1", 2000, 5000),
		opStop(5, "h2", "ttl", "t:2", 2000, 5000),
		opStop(6, "h3", "ttl", "t:3", 2000, 5000),
		opStop(7, "h4", "ttl", "t:4", 2000, 5000), // never registered
	}
	run := b.run(ops)
	run.Bounds = bounds
	run.Faults = []history.Fault{fault}
	return run
}

// Across a leader failover the bound is TTL + the failover slack (deadline
// tables), no longer 2·TTL + it: 5.5 s after the stop is late, though
// within the old 7 s.
func TestCheck_TTLLivenessFailoverBoundIsTTLPlusSlack(t *testing.T) {
	run := livenessRunT2(10500, history.Fault{Name: "kill-leader", Nodes: []string{"n1"}, Start: at(6000), End: at(7000)})
	v := TTLLiveness(run)
	wantViolations(t, v, want{service: "ttl", addr: "t:2", index: 9,
		msg: "removed (expire at index 9) 5500.0ms after its client stopped heartbeating (op 5); bound 5000.0ms (TTL + failover bound (deadline tables): fault kill-leader overlaps"})
}

// With a majority killed, nothing can be removed until it is back, and the
// restarted nodes' tables are too young to rely on: the bound counts from
// the restart.
func TestCheck_TTLLivenessKillMajorityCountsFromTheRestart(t *testing.T) {
	kill := history.Fault{Name: "kill-majority", Nodes: []string{"n1", "n2"}, Start: at(6000), End: at(12000)}
	// Restart 7 s after the stop: bound 7 + 2 + 3 = 12 s.
	wantOK(t, TTLLiveness(livenessRunT2(16000, kill)))
	v := TTLLiveness(livenessRunT2(17500, kill))
	wantViolations(t, v, want{service: "ttl", addr: "t:2", index: 9,
		msg: "removed (expire at index 9) 12500.0ms after its client stopped heartbeating (op 5); bound 12000.0ms (a majority was killed"})
}

// Within a TTL of a change of the voters a new leader arms at now + TTL +
// grace: across member-churn the bound is 2·TTL + the failover slack.
func TestCheck_TTLLivenessMemberChurnUsesTheFallbackBound(t *testing.T) {
	churn := history.Fault{Name: "member-churn", Nodes: []string{"n1", "n2", "n3"}, Start: at(6000), End: at(9000)}
	// Stop at 5 s, TTL 2 s, slack 3 s: bound 7 s after the stop.
	wantOK(t, TTLLiveness(livenessRunT2(11500, churn)))
	v := TTLLiveness(livenessRunT2(12500, churn))
	wantViolations(t, v, want{service: "ttl", addr: "t:2", index: 9,
		msg: "removed (expire at index 9) 7500.0ms after its client stopped heartbeating (op 5); bound 7000.0ms (the voters changed"})
}

func TestCheck_TTLLivenessGood(t *testing.T) {
	v := TTLLiveness(livenessRun())
	wantOK(t, v)
	wantNote(t, v, "removal delays after stop: max 4000.0ms, p50 2500.0ms (n=3")
	wantNote(t, v, "stop of ttl t:4 (op 7): no acknowledged registration before it")
	if v.Stats["removed"] != 3 || v.Stats["faulted"] != 3 || v.Stats["delay_max_ms"] != 4000 || v.Stats["skipped"] != 1 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// Without the fault the failover bound does not apply: 4 s is over TTL +
// 0.5 s; 2.5 s is just within it.
func TestCheck_TTLLivenessLateWithoutFault(t *testing.T) {
	run := livenessRun()
	run.Faults = []history.Fault{{Name: "pause", Start: at(20000), End: at(21000)}}
	v := TTLLiveness(run)
	wantViolations(t, v, want{service: "ttl", addr: "t:2", index: 9,
		msg: "removed (expire at index 9) 4000.0ms after its client stopped heartbeating (op 5); bound 2500.0ms (TTL + no-failover bound)"})
}

// A stopped instance still in the final state long after the bound was
// never removed.
func TestCheck_TTLLivenessNeverRemoved(t *testing.T) {
	run := livenessRun()
	run.Ops = append(run.Ops,
		opReg(8, "h5", "ttl", "t:5", "r5", 0, 10, history.OK, 11),
		opStop(9, "h5", "ttl", "t:5", 2000, 5000))
	run.Entries = append(run.Entries, history.Entry{Node: "n1", Index: 11, Term: 3, Type: typeRegister, RequestID: "r5",
		Name: "ttl", Addr: "t:5", TTLMillis: 2000, Changed: true, At: at(31000)})
	run.Final = append(run.Final, history.Instance{Service: "ttl", Addr: "t:5", Index: 11})
	v := TTLLiveness(run)
	wantViolations(t, v, want{service: "ttl", addr: "t:5", index: 11, msg: "never removed: still in the final state 26000.0ms after"})
}

// A stop too close to the end of the run, and an instance registered again
// after its stop, are noted, not judged.
func TestCheck_TTLLivenessNotJudged(t *testing.T) {
	run := livenessRun()
	run.Ops = append(run.Ops,
		opReg(8, "h5", "ttl", "t:5", "r5", 0, 10, history.OK, 11),
		opStop(9, "h5", "ttl", "t:5", 2000, 29000),
		opStop(10, "h6", "ttl", "z:1", 2000, 29000), // not yet registered
		opReg(11, "h6", "ttl", "z:1", "r9", 29500, 30000, history.OK, 11))
	run.Final = append(run.Final, history.Instance{Service: "ttl", Addr: "t:5", Index: 11})
	v := TTLLiveness(run)
	wantOK(t, v)
	wantNote(t, v, "stop of ttl t:5 (op 9): the run ended 1002.0ms after it, before the bound")
	wantNote(t, v, "stop of ttl z:1 (op 10): no acknowledged registration before it")
}

// Regression (CI tier, client-cut-off seed 1): the leader arms a new
// registration's deadline while applying it and journals the entry just
// after, so "apply time + TTL" can be microseconds after a correct expiry.
// The promise is about the registration's call time, which comes first.
func TestCheck_TTLSafetyJudgesRegistrationsByCallTime(t *testing.T) {
	b := newLog()
	reg := b.register("ttl0", "a:1", "r1", 2000, 100) // journaled at 100 ms
	b.expire("ttl0", "a:1", reg, 2099, 2110)          // decided 1 ms "early" against the journal
	ops := []history.Op{opReg(1, "c1", "ttl0", "a:1", "r1", 95, 101, history.OK, reg)}
	ops[0].TTLMillis = 2000
	v := TTLSafety(b.run(ops))
	wantOK(t, v)
	// Without the client's op, the journal time is all there is: early.
	v = TTLSafety(b.run(nil))
	if v.OK {
		t.Fatalf("an expiry 1 ms before apply time + TTL passed without the call time to excuse it:\n%s", v)
	}
}
