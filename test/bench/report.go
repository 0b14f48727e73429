package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// rowOrder is the order of workloads in the table.
var rowOrder = []string{"registration", "heartbeat", "heartbeat-batched", "heartbeat100k", "watch", replicaVoters.workload, replicaNonVoters.workload, "idle", "failover", "memory", "removal", "scale", "scale-watch"}

type tableRow struct {
	workload        string
	clients         int
	d, e            string // cells
	ratio, ratioWhy string
}

func num(x any) float64 {
	switch v := x.(type) {
	case float64:
		return v
	case int:
		return float64(v)
	case int64:
		return float64(v)
	}
	return 0
}

// cell describes one system's row for the table.
func cell(r *row) string {
	if r == nil {
		return "n/a"
	}
	var s string
	switch r.Workload {
	case "heartbeat100k":
		s = fmt.Sprintf("%.0f hb/s (target %.0f), p99 %.1f ms, lost %.0f, leader CPU %.0f%%",
			r.OpsPerS, num(r.Extra["target_heartbeats_per_s"]), r.P99, num(r.Extra["lost"]), num(r.Extra["leader_cpu_pct"]))
	case "watch", "scale-watch":
		s = fmt.Sprintf("%.1f/%.1f/%.1f ms, missing %.0f", r.P50, r.P99, r.Max, num(r.Extra["missing"]))
	case "scale":
		s = fmt.Sprintf("%.0f instances: %.0f hb/s (at TTL/3: %.0f), lost %.0f, leader CPU %.0f%%, per instance per node heap %s B, RSS %s B, snapshot %.0f MiB written in %.1f s, catch-up %.1f s (%s)",
			num(r.Extra["instances"]), r.OpsPerS, num(r.Extra["target_heartbeats_per_s"]), num(r.Extra["lost"]), num(r.Extra["leader_cpu_pct"]),
			perNode(r.Extra["heap_bytes_per_instance"]), perNode(r.Extra["rss_bytes_per_instance"]),
			num(r.Extra["snapshot_state_bytes"])/(1<<20), num(r.Extra["snapshot_persist_s"]), num(r.Extra["catchup_s"]), r.Extra["catchup_by"])
	case replicaVoters.workload, replicaNonVoters.workload:
		s = fmt.Sprintf("%s: %.1f/%.1f/%.1f ms, missing %.0f", r.Extra["layout"], r.P50, r.P99, r.Max, num(r.Extra["missing"]))
	case "failover":
		s = fmt.Sprintf("outage %.0f ms (median of %.0f kills, worst %.0f), max gap %.0f ms (steady %.0f ops/s)",
			num(r.Extra["outage_ms"]), num(r.Extra["kills"]), r.Max, num(r.Extra["max_gap_ms"]), r.OpsPerS)
	case "memory":
		s = fmt.Sprintf("heap %.0f B/inst, RSS %.0f B/inst", num(r.Extra["heap_bytes_per_instance"]), num(r.Extra["rss_bytes_per_instance"]))
	case "idle":
		s = fmt.Sprintf("heap %.0f B/conn", num(r.Extra["heap_bytes_per_conn"]))
	case "removal":
		s = fmt.Sprintf("stopped instance gone after a leader kill: %.0f/%.0f/%.0f/%.0f/%.0f ms min/p50/p90/p99/max over %.0f kills (bounds: old 2·TTL+E+G %.0f ms, TTL+E+G %.0f ms; over them %.0f, %.0f); no kill: max %.0f ms of %.0f",
			num(r.Extra["min_ms"]), r.P50, num(r.Extra["p90_ms"]), r.P99, r.Max, num(r.Extra["kills"]),
			num(r.Extra["old_bound_ms"]), num(r.Extra["new_bound_ms"]), num(r.Extra["over_old_bound"]), num(r.Extra["over_new_bound"]),
			num(r.Extra["nokill_max_ms"]), num(r.Extra["no_kill_trials"]))
	default:
		s = fmt.Sprintf("%.0f ops/s (%.1f/%.1f/%.1f ms)", r.OpsPerS, r.P50, r.P99, r.Max)
	}
	if n := num(r.Extra["errors"]); n > 0 {
		s += fmt.Sprintf(" [%.0f errors]", n)
	}
	return s
}

// perNode formats one value per node (a []float64 in a row's extra).
func perNode(x any) string {
	v, ok := x.([]float64)
	if !ok || len(v) == 0 {
		return "-"
	}
	return joinRuns(v, "%.0f")
}

// ratio compares the two rows so that > 1 means discoverd did better, and
// says on what.
func ratio(d, e *row) (string, string) {
	v, ok, why := ratioValue(d, e)
	if why == "" {
		return "", ""
	}
	return fmtRatio(v, ok), why
}

func fmtRatio(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

// ratioValue is ratio's number: ok false if a side is 0, why "" if a row
// is missing.
func ratioValue(d, e *row) (v float64, ok bool, why string) {
	if d == nil || e == nil {
		return 0, false, ""
	}
	div := func(a, b float64) (float64, bool) {
		if b == 0 || a == 0 {
			return 0, false
		}
		return a / b, true
	}
	switch d.Workload {
	case "heartbeat100k":
		// CPU per heartbeat, so that a system that fell behind is not
		// credited for doing less work.
		dc := num(d.Extra["leader_cpu_pct"]) / max(d.OpsPerS, 1)
		ec := num(e.Extra["leader_cpu_pct"]) / max(e.OpsPerS, 1)
		v, ok = div(ec, dc)
		return v, ok, "leader CPU per heartbeat, etcd/discoverd"
	case "watch":
		v, ok = div(e.P99, d.P99)
		return v, ok, "p99 latency, etcd/discoverd"
	case "failover":
		v, ok = div(num(e.Extra["outage_ms"]), num(d.Extra["outage_ms"]))
		return v, ok, "outage, etcd/discoverd"
	case "memory":
		v, ok = div(num(e.Extra["heap_bytes_per_instance"]), num(d.Extra["heap_bytes_per_instance"]))
		return v, ok, "heap/instance, etcd/discoverd"
	case "heartbeat-batched":
		v, ok = div(d.OpsPerS, e.OpsPerS)
		return v, ok, "instance hb/s, discoverd batched/etcd per lease"
	}
	v, ok = div(d.OpsPerS, e.OpsPerS)
	return v, ok, "ops/s, discoverd/etcd"
}

// pairMedian pairs a's runs with b's by their order (run k of one system
// with run k of the other, taken seconds apart) and returns the median of
// f over the pairs that give a value, and those values in run order.
func pairMedian(a, b []*row, f func(x, y *row) (float64, bool)) (med float64, each []float64, ok bool) {
	for k := range min(len(a), len(b)) {
		if v, ok := f(a[k], b[k]); ok {
			each = append(each, v)
		}
	}
	if len(each) == 0 {
		return 0, nil, false
	}
	return median(each), each, true
}

// joinRuns formats one number per run, in run order.
func joinRuns(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " · ")
}

// ratioRuns is ratio over repeated runs: the median of the runs' ratios,
// and, in the why, each run's. One run on each side: ratio.
func ratioRuns(ds, es []*row) (string, string) {
	if len(ds) <= 1 && len(es) <= 1 {
		return ratio(first(ds), first(es))
	}
	_, _, why := ratioValue(first(ds), first(es))
	if why == "" {
		return "", ""
	}
	med, each, ok := pairMedian(ds, es, func(d, e *row) (float64, bool) {
		v, ok, _ := ratioValue(d, e)
		return v, ok
	})
	if !ok {
		return "-", why
	}
	what := "median"
	if len(each) == 2 {
		what = "median (the mean of two)"
	}
	return fmt.Sprintf("%.2f", med), fmt.Sprintf("%s of %d runs' ratios (%s), %s", what, len(each), joinRuns(each, "%.2f"), why)
}

// cellRuns is cell over repeated runs: each run's ops/s and p99, in run
// order. One run: cell.
func cellRuns(rs []*row) string {
	if len(rs) <= 1 {
		return cell(first(rs))
	}
	ops, p99 := make([]float64, len(rs)), make([]float64, len(rs))
	errs := 0.0
	for i, r := range rs {
		ops[i], p99[i] = r.OpsPerS, r.P99
		errs += num(r.Extra["errors"])
	}
	s := fmt.Sprintf("%s ops/s (p99 %s ms)", joinRuns(ops, "%.0f"), joinRuns(p99, "%.1f"))
	if errs > 0 {
		s += fmt.Sprintf(" [%.0f errors]", errs)
	}
	return s
}

func first(rs []*row) *row {
	if len(rs) == 0 {
		return nil
	}
	return rs[0]
}

// find returns the row of a workload, client count and system (its first
// run, if it was run several times).
func (b *bench) find(w string, c int, sys string) *row { return first(b.runs(w, c, sys)) }

// runs returns the rows of a workload, client count and system, by run.
func (b *bench) runs(w string, c int, sys string) []*row {
	var out []*row
	for i := range b.results {
		r := &b.results[i]
		if r.Workload == w && r.Clients == c && r.System == sys {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(x, y *row) int { return x.Run - y.Run })
	return out
}

// tlsCost says what TLS changed, from discoverd's row to discoverd-tls's,
// in the measure each workload is judged by.
func tlsCost(plain, tls *row) string {
	if plain == nil || tls == nil {
		return ""
	}
	pct := func(a, b float64) string {
		if a == 0 {
			return "-"
		}
		return fmt.Sprintf("%+.1f%%", (b/a-1)*100)
	}
	switch plain.Workload {
	case "watch":
		return "p99 " + pct(plain.P99, tls.P99)
	case "failover":
		return "outage " + pct(num(plain.Extra["outage_ms"]), num(tls.Extra["outage_ms"]))
	case "memory":
		return "heap/instance " + pct(num(plain.Extra["heap_bytes_per_instance"]), num(tls.Extra["heap_bytes_per_instance"]))
	case "removal":
		return "max " + pct(plain.Max, tls.Max)
	case "idle":
		return fmt.Sprintf("%+.0f B/conn", num(tls.Extra["heap_bytes_per_conn"])-num(plain.Extra["heap_bytes_per_conn"]))
	}
	return "ops/s " + pct(plain.OpsPerS, tls.OpsPerS)
}

// tlsCostRuns is tlsCost over repeated runs (registration's): the median
// of the runs' changes in ops/s, and each run's.
func tlsCostRuns(plains, tlss []*row) string {
	if len(plains) <= 1 && len(tlss) <= 1 {
		return tlsCost(first(plains), first(tlss))
	}
	med, each, ok := pairMedian(plains, tlss, func(p, t *row) (float64, bool) {
		return (t.OpsPerS/p.OpsPerS - 1) * 100, p.OpsPerS > 0
	})
	if !ok {
		return ""
	}
	return fmt.Sprintf("ops/s %+.1f%% (median of %s%%)", med, joinRuns(each, "%+.1f"))
}

// aclRatio is ACLs on ÷ off, from discoverd's row to discoverd-acl's:
// throughput (below 1: slower with ACLs), and the p50 and p99 latencies
// (above 1: slower with ACLs).
func aclRatio(off, on *row) string {
	if off == nil || on == nil {
		return ""
	}
	div := func(a, b float64) string {
		if b == 0 || a == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	return fmt.Sprintf("ops/s %s, p50 %s, p99 %s", div(on.OpsPerS, off.OpsPerS), div(on.P50, off.P50), div(on.P99, off.P99))
}

// aclRatioRuns is aclRatio over repeated runs (registration's): the
// median of the runs' ratios, each of the three.
func aclRatioRuns(offs, ons []*row) string {
	if len(offs) <= 1 && len(ons) <= 1 {
		return aclRatio(first(offs), first(ons))
	}
	part := func(f func(r *row) float64) string {
		med, _, ok := pairMedian(offs, ons, func(off, on *row) (float64, bool) {
			return f(on) / f(off), f(on) > 0 && f(off) > 0
		})
		return fmtRatio(med, ok)
	}
	return fmt.Sprintf("ops/s %s, p50 %s, p99 %s (medians of %d runs)",
		part(func(r *row) float64 { return r.OpsPerS }), part(func(r *row) float64 { return r.P50 }),
		part(func(r *row) float64 { return r.P99 }), min(len(offs), len(ons)))
}

// aclTable pairs discoverd's rows with discoverd-acl's (none if either did
// not run): d and e hold the two cells, ratio ACLs on ÷ off.
func (b *bench) aclTable(rows []tableRow) []tableRow {
	var out []tableRow
	for _, r := range rows {
		off, on := b.runs(r.workload, r.clients, "discoverd"), b.runs(r.workload, r.clients, "discoverd-acl")
		if len(off) == 0 || len(on) == 0 {
			continue
		}
		out = append(out, tableRow{workload: r.workload, clients: r.clients, d: cellRuns(off), e: cellRuns(on), ratio: aclRatioRuns(off, on)})
	}
	return out
}

// aclAbout says what the ACL table shows.
const aclAbout = "discoverd-acl: -acl, bootstrapped, every client presenting a token with `service \"*\" write`; same run, no TLS for either. " +
	"ACL on ÷ off: ops/s below 1 and latencies above 1 are the cost of the check"

// runsAbout says how the table shows a workload run several times.
var runsAbout = fmt.Sprintf("registration: each level run %d times per system, interleaved between the systems' clusters "+
	"(all running; the order reversed every other run); a cell lists every run's ops/s and p99, "+
	"the ratio is the median of the runs' ratios, run k against run k", registrationRuns)

// multiRun reports whether a workload was run several times.
func (b *bench) multiRun() bool {
	return slices.ContainsFunc(b.results, func(r row) bool { return r.Run > 1 })
}

func (b *bench) table() []tableRow {
	type key struct {
		w string
		c int
	}
	var keys []key
	for _, r := range b.results {
		k := key{r.Workload, r.Clients}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	slices.SortStableFunc(keys, func(a, b key) int {
		if ia, ib := slices.Index(rowOrder, a.w), slices.Index(rowOrder, b.w); ia != ib {
			return ia - ib
		}
		return a.c - b.c
	})
	var out []tableRow
	for _, k := range keys {
		out = append(out, b.againstEtcd(k.w, k.c, "discoverd"))
	}
	return out
}

// againstEtcd is the row of a workload and client count of sys (discoverd
// or discoverd-wal) beside etcd's, with their ratio (the batched heartbeat
// against etcd's per-lease one).
func (b *bench) againstEtcd(w string, c int, sys string) tableRow {
	ds, es := b.runs(w, c, sys), b.runs(w, c, "etcd")
	tr := tableRow{workload: w, clients: c, d: cellRuns(ds), e: cellRuns(es)}
	if w == "heartbeat-batched" {
		es = b.runs("heartbeat", c, "etcd")
	}
	tr.ratio, tr.ratioWhy = ratioRuns(ds, es)
	return tr
}

// walTable is the main table for discoverd-wal instead of discoverd (none
// if it did not run): discoverd-wal's cells against etcd's, and their
// ratio as the main table reads it.
func (b *bench) walTable(rows []tableRow) []tableRow {
	var out []tableRow
	for _, r := range rows {
		if len(b.runs(r.workload, r.clients, "discoverd-wal")) > 0 {
			out = append(out, b.againstEtcd(r.workload, r.clients, "discoverd-wal"))
		}
	}
	return out
}

// walAbout says what the WAL table shows.
const walAbout = "discoverd-wal: -raft-log-store wal (hashicorp/raft-wal, one fsync per append) instead of bbolt (two), " +
	"same run, against the same etcd rows; ratio > 1: discoverd-wal did better"

var walHeader = []string{"workload", "clients", "discoverd-wal", "etcd", "ratio", "ratio of"}

// tlsTable pairs discoverd's rows with discoverd-tls's (none if either did
// not run): d and e hold the two cells, ratio what TLS changed.
func (b *bench) tlsTable(rows []tableRow) []tableRow {
	var out []tableRow
	for _, r := range rows {
		plain, tls := b.runs(r.workload, r.clients, "discoverd"), b.runs(r.workload, r.clients, "discoverd-tls")
		if len(plain) == 0 || len(tls) == 0 {
			continue
		}
		out = append(out, tableRow{workload: r.workload, clients: r.clients, d: cellRuns(plain), e: cellRuns(tls), ratio: tlsCostRuns(plain, tls)})
	}
	return out
}

var tableHeader = []string{"workload", "clients", "discoverd", "etcd", "ratio (>1: discoverd better)", "ratio of"}

// machine describes the host for results.md.
func machine() (arch, cpu string, cores int) {
	arch = runtime.GOARCH
	if out, err := exec.Command("uname", "-m").Output(); err == nil {
		arch = strings.TrimSpace(string(out))
	}
	cpu = "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return arch, cpu, runtime.NumCPU()
}

func (b *bench) report(wall time.Duration, mode string) error {
	rows := b.table()
	fmt.Fprintf(b.out, "\nbench: %s mode, wall time %.0fs.\nbench: %s.\nCells: ops/s (p50/p99/max ms) unless stated.\n\n", mode, wall.Seconds(), b.diskLine())
	if b.multiRun() {
		fmt.Fprintf(b.out, "%s\n\n", runsAbout)
	}
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", r.workload, r.clients, r.d, r.e, r.ratio, r.ratioWhy)
	}
	_ = tw.Flush()
	if walRows := b.walTable(rows); len(walRows) > 0 {
		fmt.Fprintf(b.out, "\nThe WAL log store (%s):\n\n", walAbout)
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(walHeader, "\t"))
		for _, r := range walRows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", r.workload, r.clients, r.d, r.e, r.ratio, r.ratioWhy)
		}
		_ = tw.Flush()
	}
	if aclRows := b.aclTable(rows); len(aclRows) > 0 {
		fmt.Fprintf(b.out, "\nACLs on and off (%s):\n\n", aclAbout)
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "workload\tclients\tdiscoverd\tdiscoverd-acl\tACL on ÷ off")
		for _, r := range aclRows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.workload, r.clients, r.d, r.e, r.ratio)
		}
		_ = tw.Flush()
	}
	if tlsRows := b.tlsTable(rows); len(tlsRows) > 0 {
		fmt.Fprintf(b.out, "\nTLS on and off (discoverd-tls against discoverd, same run):\n\n")
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "workload\tclients\tdiscoverd\tdiscoverd-tls\twith TLS")
		for _, r := range tlsRows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.workload, r.clients, r.d, r.e, r.ratio)
		}
		_ = tw.Flush()
	}
	if lines := b.replicaTable(); len(lines) > 0 {
		fmt.Fprintf(b.out, "\nRead replicas (%s):\n\n", replicaAbout)
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(replicaHeader, "\t"))
		for _, l := range lines {
			fmt.Fprintln(tw, strings.Join(l, "\t"))
		}
		_ = tw.Flush()
	}

	results := append(slices.Clone(b.disk), b.results...)
	if results == nil {
		results = []row{}
	}
	js, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}

	arch, cpu, cores := machine()
	var md bytes.Buffer
	fmt.Fprintf(&md, "# discoverd vs etcd\n\n")
	fmt.Fprintf(&md, "- date: %s\n- machine: `%s`, %s, %d cores\n- mode: %s, wall time %.0f s\n- %s\n- %s; etcd server v3.6 from go.mod (test/bench/etcdserver)\n\n",
		time.Now().Format(time.RFC3339), arch, cpu, cores, mode, wall.Seconds(), b.diskLine(), runtime.Version())
	fmt.Fprintf(&md, "Cells: ops/s (p50/p99/max ms) unless stated. The ratio is oriented so that > 1 means discoverd did better.\n\n")
	if b.multiRun() {
		fmt.Fprintf(&md, "%s\n\n", runsAbout)
	}
	fmt.Fprintf(&md, "| %s |\n|%s\n", strings.Join(tableHeader, " | "), strings.Repeat(" --- |", len(tableHeader)))
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %d | %s | %s | %s | %s |\n", r.workload, r.clients, r.d, r.e, r.ratio, r.ratioWhy)
	}
	if walRows := b.walTable(rows); len(walRows) > 0 {
		fmt.Fprintf(&md, "\n## The WAL log store\n\n%s.\n\n", walAbout)
		fmt.Fprintf(&md, "| %s |\n|%s\n", strings.Join(walHeader, " | "), strings.Repeat(" --- |", len(walHeader)))
		for _, r := range walRows {
			fmt.Fprintf(&md, "| %s | %d | %s | %s | %s | %s |\n", r.workload, r.clients, r.d, r.e, r.ratio, r.ratioWhy)
		}
	}
	if aclRows := b.aclTable(rows); len(aclRows) > 0 {
		fmt.Fprintf(&md, "\n## ACLs on and off\n\n%s.\n\n", aclAbout)
		fmt.Fprintf(&md, "| workload | clients | discoverd | discoverd-acl | ACL on ÷ off |\n| --- | --- | --- | --- | --- |\n")
		for _, r := range aclRows {
			fmt.Fprintf(&md, "| %s | %d | %s | %s | %s |\n", r.workload, r.clients, r.d, r.e, r.ratio)
		}
	}
	if tlsRows := b.tlsTable(rows); len(tlsRows) > 0 {
		fmt.Fprintf(&md, "\n## TLS on and off\n\ndiscoverd with TLS (Raft mutual TLS, clients with a client certificate) against the same without, same run.\n\n")
		fmt.Fprintf(&md, "| workload | clients | discoverd | discoverd-tls | with TLS |\n| --- | --- | --- | --- | --- |\n")
		for _, r := range tlsRows {
			fmt.Fprintf(&md, "| %s | %d | %s | %s | %s |\n", r.workload, r.clients, r.d, r.e, r.ratio)
		}
	}
	if lines := b.replicaTable(); len(lines) > 0 {
		fmt.Fprintf(&md, "\n## Read replicas\n\n%s\n\n", replicaAbout)
		fmt.Fprintf(&md, "| %s |\n|%s\n", strings.Join(replicaHeader, " | "), strings.Repeat(" --- |", len(replicaHeader)))
		for _, l := range lines {
			fmt.Fprintf(&md, "| %s |\n", strings.Join(l, " | "))
		}
	}
	if len(b.failures) > 0 {
		fmt.Fprintf(&md, "\n## Failures\n\n")
		for _, f := range b.failures {
			first, _, _ := strings.Cut(f, "\n")
			fmt.Fprintf(&md, "- %s\n", first)
		}
	}
	fmt.Fprintf(&md, "\nEvery row's details (errors, counts, CPU, per-node memory) are in `results.json` (`extra`); server logs in `logs/`.\n")
	if err := os.WriteFile(filepath.Join(b.dir, "results.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\nbench: wrote %s and %s\n", filepath.Join(b.dir, "results.json"), filepath.Join(b.dir, "results.md"))
	return nil
}

// replicaAbout says what the read-replicas table shows.
const replicaAbout = "discoverd, watch ack → event p50/p99/max, the watchers spread evenly over every node, the writer on the leader"

var replicaHeader = []string{"watchers", replicaVoters.label, replicaNonVoters.label, "p99 change", "p99 on leader/followers/non-voters (with replicas)"}

// replicaTable pairs the replicas workload's two layouts at each watcher
// count (none if it did not run): one line of cells per count.
func (b *bench) replicaTable() [][]string {
	var counts []int
	for _, r := range b.results {
		if r.Workload == replicaVoters.workload || r.Workload == replicaNonVoters.workload {
			if !slices.Contains(counts, r.Clients) {
				counts = append(counts, r.Clients)
			}
		}
	}
	slices.Sort(counts)
	latCell := func(r *row) string {
		if r == nil {
			return "n/a"
		}
		s := fmt.Sprintf("%.1f/%.1f/%.1f ms", r.P50, r.P99, r.Max)
		if n := num(r.Extra["missing"]); n > 0 {
			s += fmt.Sprintf(", %.0f missing", n)
		}
		return s
	}
	var out [][]string
	for _, c := range counts {
		v, nv := b.find(replicaVoters.workload, c, "discoverd"), b.find(replicaNonVoters.workload, c, "discoverd")
		change, roles := "", ""
		if v != nil && nv != nil && v.P99 > 0 {
			change = fmt.Sprintf("%+.1f%%", (nv.P99/v.P99-1)*100)
		}
		if nv != nil {
			roles = fmt.Sprintf("%.1f/%.1f/%.1f ms", num(nv.Extra["leader_p99_ms"]), num(nv.Extra["follower_p99_ms"]), num(nv.Extra["nonvoter_p99_ms"]))
		}
		out = append(out, []string{fmt.Sprint(c), latCell(v), latCell(nv), change, roles})
	}
	return out
}
