package check

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/discoverd/discoverd/test/fault/history"
)

const linTimeout = 10 * time.Second

// A history with concurrency, a not_found unregister, failed writes and
// unknown reads is linearizable; List, Heartbeat and Stop ops are ignored.
func TestCheck_LinearizableGood(t *testing.T) {
	ops := []history.Op{
		opReg(1, "c1", "lin0", "a:1", "r1", 0, 10, history.OK, 2),
		opReg(2, "c2", "lin0", "b:1", "r2", 5, 15, history.OK, 3),      // concurrent with 1
		opList(3, "c3", "lin0", 8, 12, 2, "a:1"),                       // b not yet
		opList(4, "c3", "lin0", 20, 25, 3, "a:1", "b:1"),               // both
		opUnreg(5, "c1", "lin0", "a:1", "r5", 30, 40, history.OK, 4),   //
		opUnreg(6, "c2", "lin0", "a:1", "r6", 45, 50, history.Fail, 5), // not_found
		opReg(7, "c1", "lin0", "c:1", "r7", 55, 60, history.Fail, 0),   // no_leader: did not happen
		opList(8, "c3", "lin0", 65, 70, 5, "b:1"),                      //
		{ID: 9, Client: "c3", Kind: history.CList, Service: "lin0", Call: at(71), Return: at(90), Outcome: history.Unknown},
		{ID: 10, Client: "c4", Kind: history.List, Service: "lin0", Call: at(72), Return: at(73), Outcome: history.OK, Result: []string{"zzz"}},
		opReg(11, "c1", "lin1", "a:1", "r11", 0, 10, history.OK, 6), // another service
		opList(12, "c2", "lin1", 11, 12, 6, "a:1"),
	}
	ops[5].Code = "not_found"
	ops[6].Code = "no_leader"
	v, results := Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantOK(t, v)
	if len(results) != 2 || results[0].Service != "lin0" || results[0].Ops != 7 || results[0].Result != porcupine.Ok ||
		results[1].Service != "lin1" || results[1].Ops != 2 {
		t.Fatalf("results = %+v", results)
	}
	if v.Stats["services"] != 2 || v.Stats["ops"] != 9 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// A consistent list that misses a registration acknowledged before the
// list was called is a stale read.
func TestCheck_LinearizableStaleRead(t *testing.T) {
	ops := []history.Op{
		opReg(1, "c1", "lin0", "a:1", "r1", 0, 10, history.OK, 2),
		opReg(2, "c2", "lin0", "b:1", "r2", 0, 12, history.OK, 3),
		opList(3, "c3", "lin0", 20, 25, 2, "a:1"), // b:1 missing: stale
		opList(4, "c3", "lin0", 30, 35, 3, "a:1", "b:1"),
	}
	v, results := Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "lin0", addr: "b:1", index: 2, msg: "misses b:1"})
	if results[0].Result != porcupine.Illegal {
		t.Errorf("result %v", results[0].Result)
	}
}

// A list showing an address whose unregistration was acknowledged before it.
func TestCheck_LinearizableListShowsRemoved(t *testing.T) {
	ops := []history.Op{
		opReg(1, "c1", "lin0", "a:1", "r1", 0, 10, history.OK, 2),
		opUnreg(2, "c1", "lin0", "a:1", "r2", 20, 30, history.OK, 3),
		opList(3, "c2", "lin0", 40, 45, 2, "a:1"),
	}
	v, _ := Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "lin0", addr: "a:1", index: 2, msg: "shows a:1"})
}

// An unregister answering not_found while the instance certainly exists
// cannot be linearized; the violation names the op no linearization reached.
func TestCheck_LinearizableNotFoundWhilePresent(t *testing.T) {
	ops := []history.Op{
		opReg(1, "c1", "lin0", "a:1", "r1", 0, 10, history.OK, 2),
		opUnreg(2, "c2", "lin0", "a:1", "r2", 20, 30, history.Fail, 3),
		opList(3, "c2", "lin0", 40, 45, 3, "a:1"),
	}
	v, _ := Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "lin0", addr: "a:1", msg: "unregister(a:1) → not_found"})
}

// Writes with unknown outcomes may have taken effect or not, at any time
// after their call: both must pass.
func TestCheck_LinearizableUnknownWrites(t *testing.T) {
	unknown := func(op history.Op) history.Op {
		op.Outcome, op.Code, op.Return, op.Index = history.Unknown, "unknown_outcome", op.Call+int64(time.Second), 0
		return op
	}
	ops := []history.Op{
		// Took effect: seen by a later list, long after the client gave up.
		unknown(opReg(1, "c1#0", "lin0", "a:1", "r1", 0, 0, history.Unknown, 0)),
		opList(2, "c2", "lin0", 5000, 5010, 9, "a:1"),
		// Did not take effect: never seen.
		unknown(opReg(3, "c1#1", "lin0", "b:1", "r3", 6000, 0, history.Unknown, 0)),
		opList(4, "c2", "lin0", 9000, 9010, 10, "a:1"),
		opList(5, "c2", "lin0", 9100, 9110, 10, "a:1"),
		// An unknown unregister that took effect late: seen, then gone.
		unknown(opUnreg(6, "c1#2", "lin0", "a:1", "r6", 9200, 0, history.Unknown, 0)),
		opList(7, "c2", "lin0", 9300, 9310, 10, "a:1"),
		opList(8, "c2", "lin0", 15000, 15010, 11),
		// And one that did not: a:2 stays.
		opReg(9, "c3", "lin0", "a:2", "r9", 16000, 16010, history.OK, 12),
		unknown(opUnreg(10, "c3", "lin0", "a:2", "r10", 16020, 0, history.Unknown, 0)),
		opList(11, "c2", "lin0", 20000, 20010, 12, "a:2"),
	}
	v, results := Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantOK(t, v)
	if results[0].Ops != len(ops) {
		t.Errorf("ops = %d, want %d (unknown writes kept)", results[0].Ops, len(ops))
	}
	// But an unknown write takes effect once: a:1, registered and
	// unregistered, cannot come back.
	ops = append(ops, opList(12, "c2", "lin0", 20100, 20110, 12, "a:1", "a:2"))
	v, _ = Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantViolations(t, v, want{service: "lin0"})
}

// Services whose registrations carry short TTLs may expire instances; they
// are skipped, with a note, even when their history looks wrong.
func TestCheck_LinearizableSkipsTTLServices(t *testing.T) {
	r := opReg(1, "c1", "ttl0", "a:1", "r1", 0, 10, history.OK, 2)
	r.TTLMillis = 2000
	ops := []history.Op{r, opList(2, "c2", "ttl0", 5000, 5010, 3)}
	v, results := Linearizable(&history.Run{Ops: ops}, linTimeout)
	wantOK(t, v)
	wantNote(t, v, "service ttl0 skipped")
	if len(results) != 0 {
		t.Errorf("results = %+v", results)
	}
}

// A check that runs out of time is a violation, never a pass.
func TestCheck_LinearizableTimeout(t *testing.T) {
	var ops []history.Op
	// Many concurrent unknown registers and a list no subset explains: the
	// search has to try them all.
	for i := range 40 {
		op := opReg(int64(i), fmt.Sprintf("c%d", i), "lin0", fmt.Sprintf("a:%d", i), fmt.Sprint("r", i), 0, 0, history.Unknown, 0)
		op.Return = at(100)
		ops = append(ops, op)
	}
	ops = append(ops, opList(100, "reader", "lin0", 50, 60, 9, "zzz"))
	began := time.Now()
	v, results := Linearizable(&history.Run{Ops: ops}, time.Nanosecond)
	wantViolations(t, v, want{service: "lin0", msg: "checker timed out"})
	if results[0].Result != porcupine.Unknown {
		t.Errorf("result %v", results[0].Result)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("timed-out check took %s", d)
	}
	// What porcupine got through can still be drawn.
	paths, err := Visualize(results, nil, t.TempDir())
	if err != nil || len(paths) != 1 {
		t.Fatalf("visualize: %v %v", paths, err)
	}
}

// Visualize writes one HTML file per service with ops, carrying the faults.
func TestCheck_Visualize(t *testing.T) {
	ops := []history.Op{
		opReg(1, "c1", "lin0", "a:1", "r1", 0, 10, history.OK, 2),
		opList(2, "c2", "lin0", 20, 25, 2, "a:1"),
		opReg(3, "c1", "lin/1", "a:1", "r3", 0, 10, history.OK, 3),
		opList(4, "c2", "lin/1", 20, 25, 2), // stale
	}
	_, results := Linearizable(&history.Run{Ops: ops}, linTimeout)
	results = append(results, ServiceResult{Service: "empty"}) // no ops: no file
	faults := []history.Fault{{Name: "kill-leader", Nodes: []string{"n1"}, Detail: "SIGKILL", Start: at(5), End: at(15)}}
	dir := t.TempDir() + "/viz"
	paths, err := Visualize(results, faults, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || !strings.HasSuffix(paths[0], "linearizability-lin_1.html") || !strings.HasSuffix(paths[1], "linearizability-lin0.html") {
		t.Fatalf("paths = %v", paths)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"kill-leader", "SIGKILL", `"Tag":"faults"`, "register(a:1)"} {
			if !strings.Contains(string(b), s) {
				t.Errorf("%s lacks %q", p, s)
			}
		}
	}
	// Visualizing again does not pile up annotations in the results.
	if _, err := Visualize(results, faults, dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(paths[1])
	if n := strings.Count(string(b), `"Tag":"faults"`); n != 1 {
		t.Errorf("%d fault annotations after a second Visualize, want 1", n)
	}
}

// Unknown-outcome writes are settled against the journals: one found
// applied took effect by its first apply, so a consistent list called after
// that must see it; one no journal holds (and the journals cover the whole
// log) never happened, so a list must not show it.
func TestCheck_LinearizableResolvesUnknownWrites(t *testing.T) {
	b := newLog()
	reg := b.register("lin0", "a:1", "r1", 3_600_000, 20) // applied at 20 ms
	ops := []history.Op{
		opReg(1, "c1", "lin0", "a:1", "r1", 10, 500, history.Unknown, 0), // client timed out at 500 ms
		opList(2, "c2", "lin0", 100, 110, reg, "a:1"),                    // sees it: fine
	}
	v, _ := Linearizable(b.run(ops), linTimeout)
	wantOK(t, v)
	if v.Stats["unknown_resolved"] != 1 {
		t.Fatalf("stats %v", v.Stats)
	}

	// The same, but a list after the apply misses it: a stale read, which an
	// open-ended unknown write would have hidden.
	ops[1] = opList(2, "c2", "lin0", 100, 110, reg)
	v, _ = Linearizable(b.run(ops), linTimeout)
	if v.OK {
		t.Fatalf("a list missing a write applied before it began passed:\n%s", v)
	}

	// A write no journal holds never happened: a list showing it is wrong.
	b2 := newLog()
	last := b2.register("lin0", "b:1", "r9", 3_600_000, 5)
	ops2 := []history.Op{
		opReg(3, "c3", "lin0", "b:1", "r9", 0, 6, history.OK, last),
		opReg(1, "c1", "lin0", "a:1", "r-lost", 10, 500, history.Unknown, 0),
		opList(2, "c2", "lin0", 600, 610, last, "a:1", "b:1"),
	}
	v, _ = Linearizable(b2.run(ops2), linTimeout)
	if v.OK {
		t.Fatalf("a list showing a write that never committed passed:\n%s", v)
	}
	ops2[2] = opList(2, "c2", "lin0", 600, 610, last, "b:1")
	v, _ = Linearizable(b2.run(ops2), linTimeout)
	wantOK(t, v)
}
