package check

import (
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

func replicaLog() *logBuilder {
	b := newLog()
	b.register("web", "a:1", "r1", 10000, 10)
	b.register("web", "b:1", "r2", 10000, 20)
	b.unregister("web", "a:1", "r3", 30)
	b.newTerm()
	b.skip(2) // the new leader's no-op and barrier
	b.register("db", "c:1", "r4", 10000, 40)
	b.expire("web", "b:1", 3, 50, 51)
	return b
}

func hashes(applied uint64, h string, nodes ...string) []history.Hash {
	var out []history.Hash
	for _, n := range nodes {
		out = append(out, history.Hash{Node: n, Applied: applied, Hash: h})
	}
	return out
}

// Agreeing journals pass even with a node that replayed entries after a
// restart and one that skipped a range by installing a snapshot.
func TestCheck_ReplicasAgree(t *testing.T) {
	b := replicaLog()
	run := b.run(nil)
	// n2 restarted and applied indices 3.. again.
	for _, e := range b.entries[2:] {
		e.Node, e.At = "n2", e.At+5e9
		run.Entries = append(run.Entries, e)
	}
	// n3 installed a snapshot covering 2..4: drop them from its journal.
	var kept []history.Entry
	for _, e := range run.Entries {
		if e.Node == "n3" && e.Index >= 2 && e.Index <= 4 {
			continue
		}
		kept = append(kept, e)
	}
	run.Entries = kept
	run.Hashes = hashes(b.last(), "abc", "n1", "n2", "n3")
	v := Replicas(run)
	wantOK(t, v)
	if v.Stats["replayed_lines"] != len(b.entries)-2 || v.Stats["nodes"] != 3 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// A replica that applied a different entry at one index, and so reached a
// different state hash, is reported twice: the entry and the hash.
func TestCheck_ReplicasDivergentEntryAndHash(t *testing.T) {
	b := replicaLog()
	run := b.run(nil)
	for i, e := range run.Entries {
		if e.Node == "n3" && e.Index == 3 {
			run.Entries[i].Addr = "x:9"
		}
	}
	run.Hashes = append(hashes(b.last(), "abc", "n1", "n2"), hashes(b.last(), "def", "n3")...)
	v := Replicas(run)
	wantViolations(t, v,
		want{service: "web", addr: "b:1", node: "n1,n3", index: 3, msg: `addr "b:1"≠"x:9"`},
		want{node: "n1,n2,n3", index: b.last(), msg: "n1,n2=abc n3=def"},
	)
}

// Two lines of one node that disagree (a replay that applied something
// else) are a divergence too; so is a different Changed flag or error.
func TestCheck_ReplicasSameNodeReplayDiffers(t *testing.T) {
	b := replicaLog()
	run := b.run(nil)
	bad := b.entries[3] // the unregister of a:1 at index 4
	bad.Node, bad.Changed, bad.Err = "n2", false, "not found"
	run.Entries = append(run.Entries, bad)
	run.Hashes = hashes(b.last(), "abc", "n1", "n2", "n3")
	v := Replicas(run)
	wantViolations(t, v, want{service: "web", addr: "a:1", node: "n1,n2", index: 4, msg: "changed true≠false"})
}

func TestCheck_ReplicasHashesAtDifferentIndices(t *testing.T) {
	b := replicaLog()
	run := b.run(nil)
	run.Hashes = append(hashes(b.last(), "abc", "n1", "n3"), hashes(b.last()-1, "old", "n2")...)
	v := Replicas(run)
	wantViolations(t, v, want{node: "n1,n2,n3", index: b.last(), msg: "different applied indices"})

	run.Hashes = nil
	v = Replicas(run)
	wantOK(t, v)
	wantNote(t, v, "no state hashes")
}
