package check

import (
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

// suspect journals a suspect entry of the registration at regIndex, as the
// FSM does: changed only if that registration is still the instance's and
// unchanged is not given (the marker was not already so).
func (b *logBuilder) suspect(svc, addr string, regIndex uint64, v bool, atMs int64, unchanged ...bool) uint64 {
	e := history.Entry{Type: typeSuspect, Name: svc, Addr: addr, ExpireIndex: regIndex, Suspect: v, At: at(atMs)}
	e.Changed = b.state[instKey{svc, addr}] == regIndex && len(unchanged) == 0
	return b.add(e)
}

// stormRun: ten instances of a 2 s TTL stop at 5 s; nine are held (marked
// suspect at 7 s) and expire at 13 s, 8 s after the stop — the TTL plus a
// max hold of 3 TTLs. s:9 was held and unmarked before its stop, and
// expires 2.2 s after it. The journal's state, the final state and a
// watcher that saw the markers all agree.
func stormRun() *history.Run {
	b := newLog()
	var regs []uint64
	var ops []history.Op
	for i := range 10 {
		addr := string(rune('a'+i)) + ":1"
		regs = append(regs, b.register("storm", addr, "r"+addr, 2000, 5))
		ops = append(ops, opReg(int64(i+1), "h"+addr, "storm", addr, "r"+addr, 0, 10, history.OK, regs[i]))
		ops[i].TTLMillis = 2000
	}
	b.register("storm", "s:9", "rs9", 2000, 5)
	s9 := b.last()
	ops = append(ops, opReg(11, "hs9", "storm", "s:9", "rs9", 0, 10, history.OK, s9))
	b.suspect("storm", "s:9", s9, true, 1000)
	b.suspect("storm", "s:9", s9, false, 2000)
	for i := range 9 {
		b.suspect("storm", string(rune('a'+i))+":1", regs[i], true, 7000)
	}
	b.expire("storm", "s:9", s9, 7199, 7200)
	for i := range 9 {
		b.expire("storm", string(rune('a'+i))+":1", regs[i], 12999, 13000)
	}
	for i := range 9 {
		ops = append(ops, opStop(int64(20+i), "h"+string(rune('a'+i))+":1", "storm", string(rune('a'+i))+":1", 2000, 5000))
	}
	ops = append(ops, opStop(30, "hs9", "storm", "s:9", 2000, 5000))
	run := b.run(ops)
	run.Bounds = bounds
	run.Bounds.StormMaxHold = 3
	return run
}

// TestCheck_TTLLivenessStormHold: a hold adds its max hold to the bound; a
// hold that ended before the stop does not.
func TestCheck_TTLLivenessStormHold(t *testing.T) {
	v := TTLLiveness(stormRun())
	wantOK(t, v)
	if v.Stats["removed"] != 10 || v.Stats["storm_held"] != 9 || v.Stats["delay_max_ms"] != 8000 {
		t.Errorf("stats = %v", v.Stats)
	}
	// Without the allowance, the nine held ones are late.
	run := stormRun()
	run.Bounds.StormMaxHold = 0
	v = TTLLiveness(run)
	if len(v.Violations) != 9 {
		t.Fatalf("without the allowance: %d violations, want 9:\n%s", len(v.Violations), v)
	}
	wantViolations(t, v, want{service: "storm", addr: "a:1", msg: "8000.0ms after its client stopped heartbeating (op 20); bound 2500.0ms (TTL + no-failover bound)"},
		want{addr: "b:1"}, want{addr: "c:1"}, want{addr: "d:1"}, want{addr: "e:1"}, want{addr: "f:1"}, want{addr: "g:1"}, want{addr: "h:1"}, want{addr: "i:1"})
	// A removal later than one max hold past the bound is late.
	run = stormRun()
	run.Bounds.StormMaxHold = 2
	v = TTLLiveness(run)
	if len(v.Violations) != 9 {
		t.Fatalf("with a 2 TTL allowance for an 8 s removal: %d violations, want 9:\n%s", len(v.Violations), v)
	}
	wantViolations(t, v, want{service: "storm", addr: "a:1", msg: "bound 6500.0ms (TTL + no-failover bound, + 4000.0ms for 1 expiry-storm hold(s))"},
		want{addr: "b:1"}, want{addr: "c:1"}, want{addr: "d:1"}, want{addr: "e:1"}, want{addr: "f:1"}, want{addr: "g:1"}, want{addr: "h:1"}, want{addr: "i:1"})
}

// TestCheck_TTLLivenessStormHoldAcrossAFault: with a fault during the
// hold, one more max hold is allowed on top of the failover bound.
func TestCheck_TTLLivenessStormHoldAcrossAFault(t *testing.T) {
	b := newLog()
	r := b.register("storm", "a:1", "r1", 2000, 5)
	b.suspect("storm", "a:1", r, true, 7000)
	b.expire("storm", "a:1", r, 19999, 20000) // 15 s after the stop
	ops := []history.Op{opReg(1, "h1", "storm", "a:1", "r1", 0, 10, history.OK, r), opStop(2, "h1", "storm", "a:1", 2000, 5000)}
	run := b.run(ops)
	run.Bounds = bounds
	run.Bounds.StormMaxHold = 3
	run.Faults = []history.Fault{{Name: "kill-leader", Nodes: []string{"n1"}, Start: at(9000), End: at(10000)}}
	v := TTLLiveness(run)
	wantOK(t, v) // 2·TTL + 3 s + 2 holds of 6 s = 19 s
	run.Faults = nil
	wantViolations(t, TTLLiveness(run), want{service: "storm", addr: "a:1",
		msg: "15000.0ms after its client stopped heartbeating (op 2); bound 8500.0ms (TTL + no-failover bound, + 6000.0ms for 1 expiry-storm hold(s))"})
}

// TestCheck_StormMarkersElsewhere: suspect entries are updates that change
// no registration — safety, durability's final state, replicas and watches
// accept them, and a watch must deliver them like any change.
func TestCheck_StormMarkersElsewhere(t *testing.T) {
	b := newLog()
	a := b.register("web", "a:1", "r1", 2000, 10) // 2
	m := b.suspect("web", "a:1", a, true, 20)     // 3
	b.suspect("web", "a:1", a, true, 30, true)    // 4: unchanged
	c := b.suspect("web", "a:1", a, false, 40)    // 5
	b.register("web", "b:1", "r2", 3_600_000, 50) // 6
	run := b.run([]history.Op{opReg(1, "c1", "web", "a:1", "r1", 5, 11, history.OK, a)})
	run.Sessions = []history.WatchSession{
		sess("w0", 0, 0, "final", ev(kindUp, a, "a:1"), ev(kindCurrent, a, ""), ev(kindUpdate, m, "a:1"), ev(kindUpdate, c, "a:1"), ev(kindUp, 6, "b:1")),
		// A state block after the marker lists a:1 at its registration's index.
		sess("w1", 0, 0, "final", ev(kindUp, a, "a:1"), ev(kindCurrent, m, ""), ev(kindUpdate, c, "a:1"), ev(kindUp, 6, "b:1")),
	}
	for _, v := range []Verdict{Watches(run), Durability(run), Replicas(run), TTLSafety(run)} {
		wantOK(t, v)
	}
	// A watch that skips a marker misses a committed change.
	run.Sessions = []history.WatchSession{sess("w0", 0, 0, "final", ev(kindUp, a, "a:1"), ev(kindCurrent, a, ""), ev(kindUpdate, c, "a:1"), ev(kindUp, 6, "b:1"))}
	wantViolations(t, Watches(run), want{service: "web", addr: "a:1", index: m, msg: "missing committed change at index 3: update a:1"})
}
