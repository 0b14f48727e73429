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
var rowOrder = []string{"registration", "heartbeat", "heartbeat-batched", "heartbeat100k", "watch", replicaVoters.workload, replicaNonVoters.workload, "idle", "failover", "memory", "removal"}

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
	case "watch":
		s = fmt.Sprintf("%.1f/%.1f/%.1f ms, missing %.0f", r.P50, r.P99, r.Max, num(r.Extra["missing"]))
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

// ratio compares the two rows so that > 1 means discoverd did better, and
// says on what.
func ratio(d, e *row) (string, string) {
	if d == nil || e == nil {
		return "", ""
	}
	div := func(a, b float64) string {
		if b == 0 || a == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	switch d.Workload {
	case "heartbeat100k":
		// CPU per heartbeat, so that a system that fell behind is not
		// credited for doing less work.
		dc := num(d.Extra["leader_cpu_pct"]) / max(d.OpsPerS, 1)
		ec := num(e.Extra["leader_cpu_pct"]) / max(e.OpsPerS, 1)
		return div(ec, dc), "leader CPU per heartbeat, etcd/discoverd"
	case "watch":
		return div(e.P99, d.P99), "p99 latency, etcd/discoverd"
	case "failover":
		return div(num(e.Extra["outage_ms"]), num(d.Extra["outage_ms"])), "outage, etcd/discoverd"
	case "memory":
		return div(num(e.Extra["heap_bytes_per_instance"]), num(d.Extra["heap_bytes_per_instance"])), "heap/instance, etcd/discoverd"
	case "heartbeat-batched":
		return div(d.OpsPerS, e.OpsPerS), "instance hb/s, discoverd batched/etcd per lease"
	}
	return div(d.OpsPerS, e.OpsPerS), "ops/s, discoverd/etcd"
}

// find returns the row of a workload, client count and system.
func (b *bench) find(w string, c int, sys string) *row {
	for i := range b.results {
		r := &b.results[i]
		if r.Workload == w && r.Clients == c && r.System == sys {
			return r
		}
	}
	return nil
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

// aclTable pairs discoverd's rows with discoverd-acl's (none if either did
// not run): d and e hold the two cells, ratio ACLs on ÷ off.
func (b *bench) aclTable(rows []tableRow) []tableRow {
	var out []tableRow
	for _, r := range rows {
		off, on := b.find(r.workload, r.clients, "discoverd"), b.find(r.workload, r.clients, "discoverd-acl")
		if off == nil || on == nil {
			continue
		}
		out = append(out, tableRow{workload: r.workload, clients: r.clients, d: cell(off), e: cell(on), ratio: aclRatio(off, on)})
	}
	return out
}

// aclAbout says what the ACL table shows.
const aclAbout = "discoverd-acl: -acl, bootstrapped, every client presenting a token with `service \"*\" write`; same run, no TLS for either. " +
	"ACL on ÷ off: ops/s below 1 and latencies above 1 are the cost of the check"

func (b *bench) table() []tableRow {
	find := b.find
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
		d, e := find(k.w, k.c, "discoverd"), find(k.w, k.c, "etcd")
		tr := tableRow{workload: k.w, clients: k.c, d: cell(d), e: cell(e)}
		if k.w == "heartbeat-batched" {
			e = find("heartbeat", k.c, "etcd")
		}
		tr.ratio, tr.ratioWhy = ratio(d, e)
		out = append(out, tr)
	}
	return out
}

// tlsTable pairs discoverd's rows with discoverd-tls's (none if either did
// not run): d and e hold the two cells, ratio what TLS changed.
func (b *bench) tlsTable(rows []tableRow) []tableRow {
	var out []tableRow
	for _, r := range rows {
		plain, tls := b.find(r.workload, r.clients, "discoverd"), b.find(r.workload, r.clients, "discoverd-tls")
		if plain == nil || tls == nil {
			continue
		}
		out = append(out, tableRow{workload: r.workload, clients: r.clients, d: cell(plain), e: cell(tls), ratio: tlsCost(plain, tls)})
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
	fmt.Fprintf(b.out, "\nbench: %s mode, wall time %.0fs. Cells: ops/s (p50/p99/max ms) unless stated.\n\n", mode, wall.Seconds())
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", r.workload, r.clients, r.d, r.e, r.ratio, r.ratioWhy)
	}
	_ = tw.Flush()
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

	results := b.results
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
	fmt.Fprintf(&md, "- date: %s\n- machine: `%s`, %s, %d cores\n- mode: %s, wall time %.0f s\n- %s; etcd server v3.6 from go.mod (test/bench/etcdserver)\n\n",
		time.Now().Format(time.RFC3339), arch, cpu, cores, mode, wall.Seconds(), runtime.Version())
	fmt.Fprintf(&md, "Cells: ops/s (p50/p99/max ms) unless stated. The ratio is oriented so that > 1 means discoverd did better.\n\n")
	fmt.Fprintf(&md, "| %s |\n|%s\n", strings.Join(tableHeader, " | "), strings.Repeat(" --- |", len(tableHeader)))
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %d | %s | %s | %s | %s |\n", r.workload, r.clients, r.d, r.e, r.ratio, r.ratioWhy)
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
