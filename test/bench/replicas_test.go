package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/prockit"
)

// TestReplicasCaughtUp_SaysWhatIsMissing: the second layout waits for
// every replica to be a non-voter that follows, serves reads and has
// applied the leader's commit index, and says which is not.
func TestReplicasCaughtUp_SaysWhatIsMissing(t *testing.T) {
	good := func(id string) wire.Member {
		return wire.Member{ID: id, Status: wire.NodeStatus{ID: id, State: "Follower", Ready: true}}
	}
	caughtUp := good("n5")
	voter := good("n5")
	voter.Voter = true
	lagging := good("n5")
	lagging.Lag = 3
	notReady := good("n5")
	notReady.Status.Ready = false
	down := good("n5")
	down.Status = wire.NodeStatus{Error: "dial tcp: connection refused"}
	candidate := good("n5")
	candidate.Status.State = "Candidate"
	for _, c := range []struct {
		name string
		n5   *wire.Member
		want string // "" for nil
	}{
		{"caught up", &caughtUp, ""},
		{"absent", nil, "n5 is not a member yet"},
		{"voter", &voter, "n5 is a voter"},
		{"lagging", &lagging, "lags the leader's commit index by 3"},
		{"not ready", &notReady, "not ready"},
		{"unreachable", &down, "does not answer"},
		{"candidate", &candidate, `state "Candidate"`},
	} {
		resp := wire.MembersResponse{Leader: "n1", Members: []wire.Member{{ID: "n1", Voter: true}, good("n4")}}
		if c.n5 != nil {
			resp.Members = append(resp.Members, *c.n5)
		}
		err := replicasCaughtUp(resp, []string{"n4", "n5"})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want nil", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// TestReplicaTable_PairsLayoutsByWatchers: one line per watcher count,
// sorted, with both layouts, the p99's change and each role's p99; a
// layout that did not run is n/a.
func TestReplicaTable_PairsLayoutsByWatchers(t *testing.T) {
	b := &bench{results: []row{
		{Workload: replicaVoters.workload, Clients: 10_000, System: "discoverd", P50: 5, P99: 40, Max: 60, Extra: map[string]any{"missing": 0}},
		{Workload: replicaVoters.workload, Clients: 1000, System: "discoverd", P50: 1, P99: 10, Max: 12, Extra: map[string]any{}},
		{Workload: replicaNonVoters.workload, Clients: 1000, System: "discoverd", P50: 1, P99: 8, Max: 11, Extra: map[string]any{
			"leader_p99_ms": 7.0, "follower_p99_ms": 8.0, "nonvoter_p99_ms": 8.5, "missing": 2}},
		{Workload: "watch", Clients: 1000, System: "discoverd", P99: 99, Extra: map[string]any{}},
	}}
	got := b.replicaTable()
	want := [][]string{
		{"1000", "1.0/10.0/12.0 ms", "1.0/8.0/11.0 ms, 2 missing", "-20.0%", "7.0/8.0/8.5 ms"},
		{"10000", "5.0/40.0/60.0 ms", "n/a", "", ""},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("replica table\n got %q\nwant %q", got, want)
	}
	if lines := (&bench{}).replicaTable(); len(lines) != 0 {
		t.Errorf("without replicas rows: %q, want none", lines)
	}
}

// TestReplicas_RealNodes runs the workload at a small size on real
// `discoverd server` processes: two nodes join with -join -nonvoter, every
// watcher on every node sees every event, and the rows say which layout
// they measured.
func TestReplicas_RealNodes(t *testing.T) {
	var out bytes.Buffer
	b := &bench{out: &out}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sys := discoverdSystem{}
	// Not b.setup: its CleanLeftovers is for the command (and TestMain).
	b.dir = t.TempDir()
	t.Cleanup(b.procs.stopAll) // before the temporary directory goes
	b.binDir, b.dataDir, b.logDir = filepath.Join(b.dir, "bin"), filepath.Join(b.dir, "data"), filepath.Join(b.dir, "logs")
	for _, d := range []string{b.dataDir, b.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if b.discoverdBin, err = prockit.BuildInto(b.binDir); err != nil {
		t.Fatal(err)
	}
	cl, err := b.startCluster(ctx, sys, "replicas")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.stop()
	if err := b.replicasWith(ctx, sys.name(), cl, []int{25}, 3); err != nil {
		t.Fatalf("replicas: %v\n%s", err, out.String())
	}
	if len(b.failures) > 0 {
		t.Fatalf("failures: %q\n%s", b.failures, out.String())
	}
	if n := len(cl.procs()); n != 5 {
		t.Fatalf("%d nodes after the replicas joined, want 5", n)
	}
	roles, err := nodeRoles(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if got := roles[3:]; !slices.Equal(got, []string{"nonvoter", "nonvoter"}) {
		t.Errorf("the added nodes are %q, want non-voters", got)
	}
	for _, c := range []struct {
		layout replicaLayout
		nodes  int
	}{{replicaVoters, 3}, {replicaNonVoters, 5}} {
		r := b.find(c.layout.workload, 25, "discoverd")
		if r == nil {
			t.Fatalf("no %s row in %+v", c.layout.workload, b.results)
		}
		if r.Extra["layout"] != c.layout.label || r.Extra["watched_nodes"] != c.nodes || r.Extra["missing"] != 0 {
			t.Errorf("%s row: layout %v, watched nodes %v, missing %v; want %q, %d, 0",
				c.layout.workload, r.Extra["layout"], r.Extra["watched_nodes"], r.Extra["missing"], c.layout.label, c.nodes)
		}
		_, onReplicas := r.Extra["nonvoter_p99_ms"]
		if onReplicas != (c.nodes == 5) {
			t.Errorf("%s row: p99 on non-voters given %v, want %v", c.layout.workload, onReplicas, c.nodes == 5)
		}
	}
	t.Log(out.String())
	if lines := b.replicaTable(); len(lines) != 1 || lines[0][1] == "n/a" || lines[0][2] == "n/a" {
		t.Errorf("replica table %q, want one line with both layouts", lines)
	}
}
