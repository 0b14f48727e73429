package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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

// TestWALTable_AgainstEtcd: discoverd-wal's rows are set against etcd's
// as the main table sets discoverd's (the batched heartbeat against etcd's
// per-lease one), and workloads without a discoverd-wal row are left out.
func TestWALTable_AgainstEtcd(t *testing.T) {
	b := &bench{results: []row{
		{Workload: "registration", Clients: 1, System: "discoverd", OpsPerS: 500, Extra: map[string]any{}},
		{Workload: "registration", Clients: 1, System: "discoverd-wal", OpsPerS: 800, Extra: map[string]any{}},
		{Workload: "registration", Clients: 1, System: "etcd", OpsPerS: 640, Extra: map[string]any{}},
		{Workload: "heartbeat", Clients: 64, System: "discoverd-wal", OpsPerS: 36000, Extra: map[string]any{}},
		{Workload: "heartbeat", Clients: 64, System: "etcd", OpsPerS: 7200, Extra: map[string]any{}},
		{Workload: "heartbeat-batched", Clients: 64, System: "discoverd-wal", OpsPerS: 720000, Extra: map[string]any{}},
		{Workload: "watch", Clients: 100, System: "discoverd", P99: 4, Extra: map[string]any{}},
		{Workload: "watch", Clients: 100, System: "etcd", P99: 8, Extra: map[string]any{}},
	}}
	rows := b.walTable(b.table())
	got := map[string]string{}
	for _, r := range rows {
		got[fmt.Sprintf("%s/%d", r.workload, r.clients)] = r.ratio
	}
	want := map[string]string{"registration/1": "1.25", "heartbeat/64": "5.00", "heartbeat-batched/64": "100.00"}
	if !maps.Equal(got, want) {
		t.Errorf("wal ratios %v, want %v", got, want)
	}
}

func TestMedian_OddEvenNone(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1}, 2}, // two runs: their mean
		{[]float64{0.5, 9, 1}, 1},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(c.in)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its argument: %v", c.in)
		}
	}
}

// TestRunOrder_ReversedEveryOtherRun: the systems run in the given order,
// then the reverse, so that neither always goes first.
func TestRunOrder_ReversedEveryOtherRun(t *testing.T) {
	systems := []string{"discoverd", "discoverd-acl", "etcd"}
	want := map[int][]string{1: systems, 2: {"etcd", "discoverd-acl", "discoverd"}, 3: systems}
	for run, w := range want {
		if got := runOrder(systems, run); !slices.Equal(got, w) {
			t.Errorf("run %d: order %v, want %v", run, got, w)
		}
	}
	if systems[0] != "discoverd" {
		t.Errorf("runOrder changed its argument: %v", systems)
	}
}

// regRuns makes one row per run of registration at 64 clients.
func regRuns(sys string, ops ...float64) []row {
	var out []row
	for i, o := range ops {
		out = append(out, row{Workload: "registration", Clients: 64, System: sys, Run: i + 1, OpsPerS: o, P50: 10, P99: 20 + float64(i), Extra: map[string]any{}})
	}
	return out
}

// TestTable_RegistrationRunsMedianRatio: the table shows every run and
// compares the median of the runs' ratios, run k against run k, so that one
// noisy run does not decide the ratio.
func TestTable_RegistrationRunsMedianRatio(t *testing.T) {
	// etcd's second run was disturbed (1000 instead of ~2000): its ratio,
	// 5.0, is the outlier; the median is run 3's 2.5.
	b := &bench{results: append(regRuns("discoverd", 4000, 5000, 5000), regRuns("etcd", 2000, 1000, 2000)...)}
	rows := b.table()
	if len(rows) != 1 {
		t.Fatalf("rows %+v, want one for registration at 64", rows)
	}
	r := rows[0]
	if r.ratio != "2.50" {
		t.Errorf("ratio %q, want 2.50 (the median of 2.00, 5.00, 2.50)", r.ratio)
	}
	if !strings.Contains(r.ratioWhy, "median of 3 runs' ratios (2.00 · 5.00 · 2.50)") {
		t.Errorf("ratio of %q does not give each run's ratio", r.ratioWhy)
	}
	if !strings.Contains(r.d, "4000 · 5000 · 5000 ops/s") || !strings.Contains(r.e, "2000 · 1000 · 2000 ops/s") {
		t.Errorf("cells %q, %q do not show every run", r.d, r.e)
	}
	if !strings.Contains(r.d, "p99 20.0 · 21.0 · 22.0 ms") {
		t.Errorf("cell %q does not show every run's p99", r.d)
	}

	// Two runs: the median is their mean, and says so.
	b = &bench{results: append(regRuns("discoverd", 3000, 3000), regRuns("etcd", 1000, 2000)...)}
	r = b.table()[0]
	if r.ratio != "2.25" || !strings.Contains(r.ratioWhy, "the mean of two") {
		t.Errorf("two runs: ratio %q (%q), want 2.25, the mean of 3.00 and 1.50", r.ratio, r.ratioWhy)
	}

	// ACLs and TLS: the medians of the runs too.
	b = &bench{results: append(regRuns("discoverd", 4000, 5000, 5000), append(regRuns("discoverd-acl", 2000, 5000, 4500), regRuns("discoverd-tls", 4400, 4000, 4500)...)...)}
	rows = b.table()
	if acl := b.aclTable(rows); len(acl) != 1 || acl[0].ratio != "ops/s 0.90, p50 1.00, p99 1.00 (medians of 3 runs)" {
		t.Errorf("acl rows %+v", acl)
	}
	if tls := b.tlsTable(rows); len(tls) != 1 || tls[0].ratio != "ops/s -10.0% (median of +10.0 · -20.0 · -10.0%)" {
		t.Errorf("tls rows %+v", tls)
	}
}

// TestProbeDisk_SaneValues: the disk probe times every write, its
// percentiles are ordered, and it leaves no file behind.
func TestProbeDisk_SaneValues(t *testing.T) {
	dir := t.TempDir()
	d, err := probeDisk(dir, 20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if d.writes != 20 || d.bytes != 4096 {
		t.Errorf("probe %+v: want 20 writes of 4096 B", d)
	}
	if !(d.p50 > 0 && d.p50 <= d.p99 && d.p99 <= d.max && d.mean > 0 && d.mean <= d.max) {
		t.Errorf("probe %+v: want 0 < p50 <= p99 <= max, 0 < mean <= max", d)
	}
	if d.max > 10_000 {
		t.Errorf("probe %+v: a synced 4 KiB write over 10 s", d)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the probe left %d file(s) in %s", len(left), dir)
	}
	rw := diskRow(d, "start")
	if rw.Workload != "disk" || rw.P99 != d.p99 || rw.Extra["when"] != "start" {
		t.Errorf("disk row %+v", rw)
	}
	b := &bench{disk: []row{rw}, results: regRuns("discoverd", 1000)}
	if line := b.diskLine(); !strings.Contains(line, "at the start p50") {
		t.Errorf("disk line %q", line)
	}
	if rows := b.table(); len(rows) != 1 || rows[0].workload != "registration" {
		t.Errorf("the table holds %+v: the disk is not a workload row", rows)
	}
}

// TestParseMetrics_SeriesWithLabels: the scale workload reads a series by
// its name and labels as the exposition writes them, and a missing one is
// an error rather than a zero.
func TestParseMetrics_SeriesWithLabels(t *testing.T) {
	text := `# HELP discoverd_instances Registered instances, in this node's state.
# TYPE discoverd_instances gauge
discoverd_instances 1e+06
discoverd_instances_removed_total{reason="expired"} 3
discoverd_instances_removed_total{reason="unregistered"} 7
`
	m, err := parseMetrics(text, `discoverd_instances`, `discoverd_instances_removed_total{reason="expired"}`)
	if err != nil {
		t.Fatal(err)
	}
	if m[`discoverd_instances`] != 1e6 || m[`discoverd_instances_removed_total{reason="expired"}`] != 3 {
		t.Errorf("parsed %v", m)
	}
	if _, err := parseMetrics(text, `discoverd_watch_streams`); err == nil {
		t.Error("a missing series parsed without an error")
	}
}

// TestNewestSnapshot_ReadsTheStore: the newest complete snapshot by its
// creation time, its size and the time from its creation to meta.json; one
// still being written (.tmp) is not one.
func TestNewestSnapshot_ReadsTheStore(t *testing.T) {
	dir := t.TempDir()
	created := time.Now().Add(-10 * time.Second).Truncate(time.Millisecond)
	mk := func(name string, size int, meta bool, metaAt time.Time) {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "state.bin"), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		if meta {
			p := filepath.Join(d, "meta.json")
			if err := os.WriteFile(p, []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, metaAt, metaAt); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := newestSnapshot(dir); err == nil {
		t.Error("an empty store gave a snapshot")
	}
	mk(fmt.Sprintf("2-100-%d", created.Add(-time.Minute).UnixMilli()), 10, true, created.Add(-time.Minute+time.Second))
	mk(fmt.Sprintf("3-5000-%d", created.UnixMilli()), 4096, true, created.Add(1500*time.Millisecond))
	mk(fmt.Sprintf("3-6000-%d.tmp", created.Add(time.Second).UnixMilli()), 8192, false, time.Time{})
	s, err := newestSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.index != 5000 || s.size != 4096 || s.persist != 1500*time.Millisecond {
		t.Errorf("newest %+v, want index 5000, 4096 bytes, written in 1.5s", s)
	}
}

// TestHBQueue_PopDueLikeTheGoClient: nothing until the earliest instance
// is due (and how long to wait); then every instance due within the slack,
// most overdue first, at most max.
func TestHBQueue_PopDueLikeTheGoClient(t *testing.T) {
	now := time.Unix(1000, 0)
	q := &hbQueue{}
	ins := map[string]*instance{}
	for _, c := range []struct {
		addr string
		due  time.Duration
	}{{"c", 300 * time.Millisecond}, {"a", 100 * time.Millisecond}, {"e", 5 * time.Second}, {"b", 200 * time.Millisecond}, {"d", 900 * time.Millisecond}} {
		ins[c.addr] = &instance{addr: c.addr}
		q.push(ins[c.addr], now.Add(c.due))
	}
	if got, wait := q.popDue(now, time.Second, 10); got != nil || wait != 100*time.Millisecond {
		t.Fatalf("before the first is due: %v, wait %v; want none, 100ms", got, wait)
	}
	addrs := func(in []*instance) string {
		var s []string
		for _, x := range in {
			s = append(s, x.addr)
		}
		return strings.Join(s, "")
	}
	at := now.Add(150 * time.Millisecond)
	if got, wait := q.popDue(at, 800*time.Millisecond, 3); addrs(got) != "abc" || wait != 0 {
		t.Errorf("due at 150ms with 800ms slack, max 3: %q, wait %v; want abc, 0", addrs(got), wait)
	}
	if got, wait := q.popDue(at, 800*time.Millisecond, 3); got != nil || wait != 750*time.Millisecond {
		t.Errorf("then: %q, wait %v; want none until d is due, in 750ms", addrs(got), wait)
	}
	if got, _ := q.popDue(now.Add(900*time.Millisecond), 800*time.Millisecond, 3); addrs(got) != "d" {
		t.Errorf("at 900ms: %q, want d (e is due beyond the slack)", addrs(got))
	}
	if q.h.Len() != 1 {
		t.Errorf("%d left, want 1 (e)", q.h.Len())
	}
}
