package check

import (
	"bytes"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

// allGoodRun is durableRun's history with state hashes and a watcher that
// follows the web service to the end.
func allGoodRun(t *testing.T) *history.Run {
	b, ops := durableRun()
	meta := map[string]uint64{}
	m := b.setMeta("cfg", 0, "m1", 100, meta)
	ops = append(ops,
		opList(30, "c4", "web", 72, 80, 10, "b:1", "c:1"),
		opBeat(31, "h1", "ttl", "t:1", 90, 95, history.OK),
		opMetaSet(32, "c5", "cfg", "x", 0, "m1", 98, 102, history.OK, m),
		opMetaGet(33, "c5", "cfg", 103, 104, "x", m))
	run := b.run(ops)
	run.Hashes = hashes(b.last(), "feed", "n1", "n2", "n3")
	run.Sessions = []history.WatchSession{
		sess("w0", 0, 0, "resume", ev(kindUp, 2, "a:1"), ev(kindUp, 3, "b:1"), ev(kindCurrent, 5, "")),
		sess("w0", 1, 5, "final", ev(kindUp, 8, "c:1"), ev(kindUpdate, 9, "c:1"), down(10, "a:1", "unregister"),
			ev(kindCurrent, 11, ""), ev(kindUp, 13, "d:1")),
	}
	run.Faults = []history.Fault{{Name: "pause-leader", Nodes: []string{"n1"}, Start: at(20), End: at(60)}}
	run.Bounds = bounds
	// Through the file format and back, as the suite stores it.
	var buf bytes.Buffer
	if err := history.Write(&buf, run); err != nil {
		t.Fatal(err)
	}
	back, err := history.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

func TestCheck_AllGood(t *testing.T) {
	vs := All(allGoodRun(t))
	names := []string{NameReplicas, NameLinearizable, NameMetaLinearizable, NameDurability, NameTTLSafety, NameTTLLiveness, NameWatches,
		NameMonotonicReads, NameElection, NameACL}
	if len(vs) != len(names) {
		t.Fatalf("%d verdicts", len(vs))
	}
	for i, v := range vs {
		if v.Checker != names[i] {
			t.Errorf("verdict %d is %s, want %s", i, v.Checker, names[i])
		}
		wantOK(t, v)
	}
	if vs[1].Stats["services"] != 1 || vs[1].Stats["services_skipped"] != 1 || vs[2].Stats["ops"] != 2 || vs[6].Stats["converged_checked"] != 1 ||
		vs[7].Stats["reads"] != 1 {
		t.Errorf("stats: %v %v %v %v", vs[1].Stats, vs[2].Stats, vs[6].Stats, vs[7].Stats)
	}
}

// Every verdict of All on a broken run names its checker in each violation
// and renders readably.
func TestCheck_AllReportsViolations(t *testing.T) {
	run := allGoodRun(t)
	run.Ops = append(run.Ops, opList(32, "c4", "web", 72, 80, 10, "c:1")) // misses b:1
	run.Hashes[2].Hash = "beef"
	vs := All(run)
	var failed []string
	for _, v := range vs {
		if !v.OK {
			failed = append(failed, v.Checker)
		}
		for _, x := range v.Violations {
			if x.Checker != v.Checker {
				t.Errorf("violation %s in verdict %s", x, v.Checker)
			}
		}
	}
	if strings.Join(failed, ",") != "replicas,linearizable" {
		t.Errorf("failed checkers: %v", failed)
	}
	s := vs[1].String()
	if !strings.Contains(s, "linearizable: FAILED (1 violations)") || !strings.Contains(s, "service=web addr=b:1") {
		t.Errorf("rendering:\n%s", s)
	}
}
