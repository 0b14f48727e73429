package check

import (
	"strings"
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

// opRead is an ok read of kind (history.List or CList) answered by node.
func opRead(id int64, client, node, kind string, call, ret int64, index uint64) history.Op {
	return history.Op{ID: id, Client: client, Kind: kind, Service: "web", Node: node, Call: at(call), Return: at(ret),
		Outcome: history.OK, Index: index, Result: []string{}}
}

// failed turns a read into one that did not answer.
func failed(op history.Op, out history.Outcome, code string) history.Op {
	op.Outcome, op.Code, op.Index, op.Result = out, code, 0, nil
	return op
}

func readRun(ops ...history.Op) *history.Run { return &history.Run{Ops: ops} }

// monotonicRun is a good history: three nodes answering reads of both kinds
// at their own pace (n3 lags behind the others), writes in between, and n2
// killed and restarted: its reads fail while it is down and until it has
// caught up (not_ready), then it answers from a state at least as new as
// before.
func monotonicRun() *history.Run {
	run := readRun(
		opRead(1, "r-n1#0", "n1", history.List, 0, 5, 10),
		opRead(2, "r-n2#0", "n2", history.List, 1, 4, 10),
		opRead(3, "r-n3#0", "n3", history.List, 2, 6, 7),
		opReg(4, "c1", "web", "a:1", "r1", 6, 9, history.OK, 11),
		opRead(5, "c2", "n2", history.CList, 10, 14, 11),
		opRead(6, "r-n1#0", "n1", history.List, 10, 12, 11),
		opRead(7, "r-n3#0", "n3", history.List, 10, 13, 9),
		opRead(8, "r-n2#0", "n2", history.List, 15, 16, 12),
		// n2 killed at 20, restarted at 40.
		failed(opRead(9, "r-n2#0", "n2", history.List, 25, 25, 0), history.Fail, "unavailable"),
		failed(opRead(10, "r-n2#0", "n2", history.List, 41, 42, 0), history.Fail, "not_ready"),
		failed(opRead(11, "r-n2#0", "n2", history.List, 43, 45, 0), history.Fail, "not_ready"),
		opRead(12, "r-n2#0", "n2", history.List, 46, 47, 12),
		opRead(13, "r-n2#0", "n2", history.CList, 48, 52, 14),
		opRead(14, "r-n3#0", "n3", history.List, 50, 51, 14),
	)
	run.Faults = []history.Fault{{Name: "kill-random", Nodes: []string{"n2"}, Start: at(20), End: at(40)}}
	return run
}

func TestCheck_MonotonicReadsGood(t *testing.T) {
	v := MonotonicReads(monotonicRun())
	wantOK(t, v)
	if v.Stats["reads"] != 10 || v.Stats["nodes"] != 3 || v.Stats["compared"] != 7 ||
		v.Stats["restarts"] != 1 || v.Stats["restarts_checked"] != 1 {
		t.Errorf("stats = %v", v.Stats)
	}
	wantNote(t, v, "n2 restarted at ")
	wantNote(t, v, "(kill-random): first default read answered called 6.0ms later (op 12, index 12), the last before the kill: op 8, index 12; reads failed before it: not_ready ×2")
}

// A node that answers an older index after a newer one went back: e.g. a
// restarted node serving its last snapshot before it has re-applied its log.
func TestCheck_MonotonicReadsOlderAfterNewer(t *testing.T) {
	run := monotonicRun()
	run.Ops[11].Index = 3 // op 12: n2's first answer after the restart
	v := MonotonicReads(run)
	wantViolations(t, v, want{service: "web", node: "n2", index: 3,
		msg: "op 12 (list of web, client r-n2#0, called "})
	x := v.Violations[0]
	for _, s := range []string{"got index 3, but op 8 (list of web, client r-n2#0",
		"got index 12 from the same node and returned 30.0ms before the later read was called", "the node was restarted in between: kill-random healed at "} {
		if !strings.Contains(x.Msg, s) {
			t.Errorf("message lacks %q:\n%s", s, x.Msg)
		}
	}
	if x.At != at(46) {
		t.Errorf("At = %d, want the later read's call %d", x.At, at(46))
	}
	wantNote(t, v, "first default read answered called 6.0ms later (op 12, index 3)")

	// Without any restart, a consistent read is held to the same rule, and
	// is compared with the newest read that returned before it.
	run = readRun(
		opRead(1, "a", "n1", history.List, 0, 2, 20),
		opRead(2, "b", "n1", history.List, 1, 3, 25),
		opRead(3, "a", "n1", history.List, 4, 5, 21),
		opRead(4, "c", "n1", history.CList, 6, 9, 24),
	)
	v = MonotonicReads(run)
	wantViolations(t, v,
		want{node: "n1", index: 21, msg: "op 3 (list of web, client a"},
		want{node: "n1", index: 24, msg: "op 4 (clist of web, client c"})
	for _, x := range v.Violations {
		if !strings.Contains(x.Msg, "but op 2 (list of web, client b") {
			t.Errorf("violation not against op 2: %s", x)
		}
	}
}

// A consistent read sent to a follower is answered by the leader, whose
// state is ahead: a later default read of the follower answers from its own
// state and is held only to its earlier default reads. A consistent read is
// held to every earlier read of its node.
func TestCheck_MonotonicReadsForwardedConsistentRead(t *testing.T) {
	ops := []history.Op{
		opRead(1, "a", "n2", history.List, 0, 1, 28),
		opRead(2, "b", "n2", history.CList, 2, 4, 30), // forwarded to the leader
		opRead(3, "a", "n2", history.List, 5, 6, 29),  // the follower's own state: fine
	}
	v := MonotonicReads(readRun(ops...))
	wantOK(t, v)
	if v.Stats["compared"] != 2 {
		t.Errorf("stats = %v", v.Stats)
	}
	ops = append(ops,
		opRead(4, "a", "n2", history.List, 7, 8, 27),   // behind op 3
		opRead(5, "c", "n2", history.CList, 9, 10, 29), // behind op 2
	)
	v = MonotonicReads(readRun(ops...))
	wantViolations(t, v,
		want{node: "n2", index: 27, msg: "but op 3 (list of web, client a"},
		want{node: "n2", index: 29, msg: "but op 2 (clist of web, client b"})
}

// The same pair on different nodes compares nothing: nodes apply at their
// own pace (a follower may lag the leader).
func TestCheck_MonotonicReadsDifferentNodes(t *testing.T) {
	v := MonotonicReads(readRun(
		opRead(1, "a", "n1", history.List, 0, 2, 20),
		opRead(2, "a", "n2", history.List, 4, 5, 3),
		opRead(3, "b", "n3", history.CList, 6, 7, 19),
	))
	wantOK(t, v)
	if v.Stats["compared"] != 0 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// Reads that overlap in time are concurrent: either may have been served
// first, so they are not compared — not even when one is called exactly as
// the other returns. Once a read returned before another was called, it is.
func TestCheck_MonotonicReadsConcurrentNotCompared(t *testing.T) {
	ops := []history.Op{
		opRead(1, "a", "n1", history.List, 0, 10, 20),
		opRead(2, "b", "n1", history.List, 5, 8, 15),   // inside op 1
		opRead(3, "c", "n1", history.List, 10, 12, 18), // called as op 1 returned; after op 2
		opRead(4, "d", "n1", history.List, 9, 30, 16),  // inside ops 1 and 3; after op 2
	}
	v := MonotonicReads(readRun(ops...))
	wantOK(t, v)
	if v.Stats["compared"] != 2 {
		t.Errorf("stats = %v", v.Stats)
	}
	ops = append(ops, opRead(5, "e", "n1", history.List, 31, 32, 19)) // after all of them
	v = MonotonicReads(readRun(ops...))
	wantViolations(t, v, want{node: "n1", index: 19, msg: "but op 1 (list of web, client a"})
}

// Reads that did not answer (fail, unknown) are ignored both as the later
// read and as the earlier one, and so are writes.
func TestCheck_MonotonicReadsIgnoresNonOK(t *testing.T) {
	high := opRead(2, "b", "n1", history.List, 3, 4, 99)
	high.Outcome = history.Unknown
	v := MonotonicReads(readRun(
		opRead(1, "a", "n1", history.List, 0, 2, 20),
		high, // an unknown read's index (if any) proves nothing
		failed(opRead(3, "a", "n1", history.List, 5, 6, 0), history.Fail, "not_ready"),
		failed(opRead(4, "c", "n1", history.CList, 7, 9, 0), history.Unknown, "timeout"),
		opReg(5, "w", "web", "a:1", "r1", 10, 11, history.OK, 50), // a write answered by n1
		opRead(6, "a", "n1", history.List, 12, 13, 20),
	))
	wantOK(t, v)
	if v.Stats["reads"] != 2 || v.Stats["compared"] != 1 {
		t.Errorf("stats = %v", v.Stats)
	}
}
