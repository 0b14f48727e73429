package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/validate"
)

func TestPct_NearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := pct(d, c.p); got != c.want {
			t.Errorf("pct(1..100 ms, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := pct([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("pct of one = %v", got)
	}
}

// TestRatio_GreaterMeansDiscoverdBetter: throughput divides discoverd by
// etcd, latencies, outages and memory divide etcd by discoverd.
func TestRatio_GreaterMeansDiscoverdBetter(t *testing.T) {
	d := &row{Workload: "registration", OpsPerS: 200, Extra: map[string]any{}}
	e := &row{Workload: "registration", OpsPerS: 100, Extra: map[string]any{}}
	if r, _ := ratio(d, e); r != "2.00" {
		t.Errorf("registration ratio %s, want 2.00", r)
	}
	d = &row{Workload: "watch", P99: 5, Extra: map[string]any{}}
	e = &row{Workload: "watch", P99: 10, Extra: map[string]any{}}
	if r, _ := ratio(d, e); r != "2.00" {
		t.Errorf("watch ratio %s, want 2.00 (discoverd's p99 half etcd's)", r)
	}
	d = &row{Workload: "failover", Extra: map[string]any{"outage_ms": 3000.0}}
	e = &row{Workload: "failover", Extra: map[string]any{"outage_ms": 1500.0}}
	if r, _ := ratio(d, e); r != "0.50" {
		t.Errorf("failover ratio %s, want 0.50 (discoverd's outage twice etcd's)", r)
	}
	d = &row{Workload: "memory", Extra: map[string]any{"heap_bytes_per_instance": 1000.0}}
	e = &row{Workload: "memory", Extra: map[string]any{"heap_bytes_per_instance": 3000.0}}
	if r, _ := ratio(d, e); r != "3.00" {
		t.Errorf("memory ratio %s, want 3.00", r)
	}
	if r, _ := ratio(d, nil); r != "" {
		t.Errorf("ratio without etcd row = %q", r)
	}
}

// TestAddrOf_ValidAndDistinct: the instance addresses the benchmark makes
// pass discoverd's validation and do not repeat.
func TestAddrOf_ValidAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range []int{0, 1, 255, 256, 65535, 65536, 1 << 20, 5_000_000, 16_777_215, 16_777_216, 40_000_000} {
		a := addrOf(n)
		if err := validate.Addr(a); err != nil {
			t.Errorf("addrOf(%d) = %q: %v", n, a, err)
		}
		if seen[a] {
			t.Errorf("addrOf(%d) = %q repeats", n, a)
		}
		seen[a] = true
	}
}

func TestRun_BadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-systems", "consul"},
		{"-workloads", "registration,nope"},
		{"-systems", ""},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), args, &out, &errb); code != 2 {
			t.Errorf("run %q = %d, want 2 (stderr %q)", args, code, errb.String())
		}
		if !strings.Contains(errb.String(), "bench:") && !strings.Contains(errb.String(), "flag") {
			t.Errorf("run %q: stderr %q does not say what is wrong", args, errb.String())
		}
	}
}

// TestRemovalRow_DistributionAndBounds: the removal row takes its
// distribution from the kill trials, measured from the acknowledgement, and
// counts the removals over each bound.
func TestRemovalRow_DistributionAndBounds(t *testing.T) {
	base := time.Unix(1000, 0)
	trial := func(kill bool, fromAck time.Duration) removalTrial {
		tr := removalTrial{kill: kill, call: base, ack: base.Add(time.Millisecond), election: -1}
		tr.gone = tr.ack.Add(fromAck)
		tr.fromAck, tr.fromCall = fromAck, tr.gone.Sub(tr.call)
		if kill {
			tr.killAt, tr.election, tr.killed = tr.ack.Add(time.Millisecond), time.Second, "n1"
		}
		return tr
	}
	var kills []removalTrial
	for _, s := range []float64{4, 5, 5.2, 8} {
		kills = append(kills, trial(true, time.Duration(s*float64(time.Second))))
	}
	never := trial(true, 0)
	never.gone = time.Time{}
	kills = append(kills, never)
	rw := removalRow("discoverd", kills, []removalTrial{trial(false, 2010*time.Millisecond)})
	if rw.P50 != 5000 || rw.Max != 8000 || num(rw.Extra["min_ms"]) != 4000 {
		t.Errorf("p50 %v max %v min %v, want 5000, 8000, 4000", rw.P50, rw.Max, rw.Extra["min_ms"])
	}
	if rw.Extra["over_old_bound"] != 1 || rw.Extra["over_new_bound"] != 3 || rw.Extra["never_removed"] != 1 {
		t.Errorf("over old %v, over new %v, never %v; want 1, 3, 1", rw.Extra["over_old_bound"], rw.Extra["over_new_bound"], rw.Extra["never_removed"])
	}
	if rw.Extra["kills"] != 5 || num(rw.Extra["nokill_max_ms"]) != 2010 {
		t.Errorf("kills %v, no-kill max %v", rw.Extra["kills"], rw.Extra["nokill_max_ms"])
	}
	if removalOldBound != 7500*time.Millisecond || removalNewBound != 4500*time.Millisecond {
		t.Errorf("bounds %v, %v; want 7.5s, 4.5s (ttl/DESIGN.md)", removalOldBound, removalNewBound)
	}
}

// TestACLTable_OnOverOff: discoverd-acl's rows are paired with discoverd's
// of the same workload and client count, the ratio ACLs on ÷ off.
func TestACLTable_OnOverOff(t *testing.T) {
	b := &bench{results: []row{
		{Workload: "registration", Clients: 64, System: "discoverd", OpsPerS: 5000, P50: 10, P99: 20, Extra: map[string]any{}},
		{Workload: "registration", Clients: 64, System: "discoverd-acl", OpsPerS: 4500, P50: 11, P99: 30, Extra: map[string]any{}},
		{Workload: "heartbeat", Clients: 64, System: "discoverd", OpsPerS: 12000, P50: 4, P99: 15, Extra: map[string]any{}},
		{Workload: "heartbeat", Clients: 64, System: "etcd", OpsPerS: 3000, P50: 16, P99: 57, Extra: map[string]any{}},
		{Workload: "watch", Clients: 100, System: "discoverd", P99: 4, Extra: map[string]any{}},
	}}
	rows := b.aclTable(b.table())
	if len(rows) != 1 || rows[0].workload != "registration" || rows[0].clients != 64 {
		t.Fatalf("acl rows = %+v, want registration at 64 alone (heartbeat and watch have no discoverd-acl row)", rows)
	}
	if want := "ops/s 0.90, p50 1.10, p99 1.50"; rows[0].ratio != want {
		t.Errorf("ratio %q, want %q", rows[0].ratio, want)
	}
	if !strings.Contains(rows[0].e, "4500 ops/s") {
		t.Errorf("discoverd-acl cell %q", rows[0].e)
	}
}
