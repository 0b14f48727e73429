package run

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/discoverd/discoverd/test/fault/check"
	"github.com/discoverd/discoverd/test/fault/history"
)

// writeReport writes the run's folder:
//
//	summary.md        what ran, what was injected when, op outcomes, verdicts, availability
//	history.jsonl     everything recorded (test/fault/history format)
//	lin-<svc>.html    porcupine's visualisation per service, with the fault timeline
//	nodes/<id>/       each node's log, journal and data dir
//	repro.txt         the command that runs this scenario again with this seed
func writeReport(res *Result, services []check.ServiceResult) error {
	f, err := os.Create(filepath.Join(res.Dir, "history.jsonl"))
	if err != nil {
		return err
	}
	if err := history.Write(f, res.Run); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	html, err := check.Visualize(services, res.Run.Faults, res.Dir)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(res.Dir, "repro.txt"), []byte(res.Repro+"\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(res.Dir, "summary.md"), []byte(summary(res, html)), 0o644)
}

func summary(res *Result, html []string) string {
	sc, run := res.Scenario, res.Run
	var b strings.Builder
	verdict := "PASS"
	if res.Violations > 0 {
		verdict = fmt.Sprintf("FAIL: %d violations", res.Violations)
	}
	fmt.Fprintf(&b, "# Fault run %s — %s\n\n", sc.Name, verdict)
	fmt.Fprintf(&b, "- seed %d, %d nodes, %s network, %v of faults (quiet %v, hold %v), run took %v\n",
		sc.Seed, sc.Nodes, orDefault(sc.Network, "proxy"), sc.Duration, sc.Quiet, sc.Hold, res.Elapsed.Round(time.Second))
	if sc.TLS {
		fmt.Fprintf(&b, "- TLS on: Raft mutual TLS, clients with a client certificate (nodes/tls/)\n")
	}
	switch sc.LogStore {
	case LogStoreWAL:
		fmt.Fprintf(&b, "- log store: the WAL on every node (-raft-log-store wal)\n")
	case LogStoreMixed:
		fmt.Fprintf(&b, "- log store: n1 on the WAL (-raft-log-store wal), the others on bolt\n")
	}
	if sc.ACL && run.ACL != nil {
		fmt.Fprintf(&b, "- ACLs on (-acl): the workload's clients present token %s (%s); the harness the management token\n",
			run.ACL.WorkloadToken, strings.Join(run.ACL.WorkloadRules, ", "))
	}
	if sc.Bug != "" {
		fmt.Fprintf(&b, "- **planted bug: %s** (faultbugs build)\n", sc.Bug)
	}
	fmt.Fprintf(&b, "- reproduce: `%s`\n", res.Repro)
	fmt.Fprintf(&b, "- final state: %d instances at index %d\n\n", len(run.Final), run.FinalIndex)

	start := res.Started.UnixNano()
	rel := func(ns int64) string {
		if ns == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1fs", float64(ns-start)/1e9)
	}
	b.WriteString("## Faults\n\n| # | fault | nodes | from | to | detail |\n| --- | --- | --- | --- | --- | --- |\n")
	for i, f := range run.Faults {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s |\n", i+1, f.Name, strings.Join(f.Nodes, ","), rel(f.Start), rel(f.End), strings.ReplaceAll(f.Detail, "|", `\|`))
	}
	if len(res.Recovery) > 0 {
		b.WriteString("\n**Recovery checks that failed:**\n\n")
		for _, r := range res.Recovery {
			fmt.Fprintf(&b, "- %s\n", r)
		}
	}

	b.WriteString("\n## Operations\n\n| kind | ok | fail | unknown |\n| --- | --- | --- | --- |\n")
	counts := map[string]map[history.Outcome]int{}
	for _, op := range run.Ops {
		if counts[op.Kind] == nil {
			counts[op.Kind] = map[history.Outcome]int{}
		}
		counts[op.Kind][op.Outcome]++
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		c := counts[k]
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", k, c[history.OK], c[history.Fail], c[history.Unknown])
	}
	events := 0
	for _, s := range run.Sessions {
		events += len(s.Events)
	}
	fmt.Fprintf(&b, "\n%d operations, %d watch sessions with %d events, %d journal entries from %d nodes.\n",
		len(run.Ops), len(run.Sessions), events, len(run.Entries), sc.Nodes)

	b.WriteString("\n## Availability (share of writes and consistent reads that succeeded)\n\n")
	before, during, after := availability(run)
	fmt.Fprintf(&b, "| before the first fault | during faults | between and after faults |\n| --- | --- | --- |\n| %s | %s | %s |\n",
		before, during, after)

	b.WriteString("\n## Checkers\n\n")
	for _, v := range res.Verdicts {
		b.WriteString("```\n" + v.String() + "```\n")
	}
	if len(html) > 0 {
		b.WriteString("\nLinearizability visualisations (open in a browser; faults are the \"faults\" track): ")
		for i, h := range html {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "[%s](%s)", filepath.Base(h), filepath.Base(h))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nNode logs, journals and data: `nodes/<id>/`. The full history: `history.jsonl`.\n")
	return b.String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

type rate struct{ ok, all int }

func (r rate) String() string {
	if r.all == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%% of %d", 100*float64(r.ok)/float64(r.all), r.all)
}

// availability splits writes and consistent reads by whether they were
// called before the first fault, during a fault, or otherwise.
func availability(run *history.Run) (before, during, after rate) {
	first := int64(0)
	for _, f := range run.Faults {
		if first == 0 || f.Start < first {
			first = f.Start
		}
	}
	for _, op := range run.Ops {
		switch op.Kind {
		case history.Register, history.Unregister, history.CList:
		default:
			continue
		}
		ok := op.Outcome == history.OK || op.Code == "not_found"
		var r *rate
		switch {
		case first == 0 || op.Call < first:
			r = &before
		case inFault(run.Faults, op.Call):
			r = &during
		default:
			r = &after
		}
		r.all++
		if ok {
			r.ok++
		}
	}
	return
}

func inFault(faults []history.Fault, t int64) bool {
	for _, f := range faults {
		if t >= f.Start && (f.End == 0 || t <= f.End) {
			return true
		}
	}
	return false
}

// Line is the one-line summary `make fault` ends with.
func Line(results []*Result) string {
	ops, faults, violations := 0, 0, 0
	for _, r := range results {
		if r.Run != nil {
			ops += len(r.Run.Ops)
			faults += len(r.Run.Faults)
		}
		violations += r.Violations
	}
	return fmt.Sprintf("fault: %d scenarios, %d ops, %d faults, %d violations", len(results), ops, faults, violations)
}
