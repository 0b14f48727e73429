// Command fault runs discoverd's fault suite: real discoverd processes under
// kill, pause, partitions, link, disk and clock faults, with a recorded
// history and checkers. It writes one report folder per scenario and ends
// with one line:
//
//	fault: <scenarios> scenarios, <ops> ops, <faults> faults, <violations> violations
//
// Usage:
//
//	go run ./test/fault/cmd/fault -tier ci             # what `make fault` and CI run
//	go run ./test/fault/cmd/fault -tier long           # `make fault-long`
//	go run ./test/fault/cmd/fault -tier wal            # `make fault-wal`: the WAL log store
//	go run ./test/fault/cmd/fault -scenario kill -seed 7 -duration 60s
//
// The exit status is 1 when any checker found a violation, 2 on bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/internal/faultbugs"
	"github.com/discoverd/discoverd/test/fault/check"
	"github.com/discoverd/discoverd/test/fault/history"
	"github.com/discoverd/discoverd/test/fault/run"
	"github.com/discoverd/discoverd/test/prockit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func realMain(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("fault", flag.ContinueOnError)
	tier := fs.String("tier", "ci", "short, ci, long or wal")
	scenario := fs.String("scenario", "", "run only this scenario (of any tier)")
	seed := fs.Int64("seed", 1, "seed of the fault schedule and the workload")
	duration := fs.Duration("duration", 0, "fault phase length of each scenario (0: the scenario's own)")
	out := fs.String("out", "", "report root (default test/reports/<date-time>)")
	network := fs.String("network", "", "override the network backend: proxy, netns or loopback")
	bug := fs.String("bug", "", "plant a bug (faultbugs build): stale-read, ack-before-commit, expire-early, drop-watch-event, read-before-caught-up; elect-not-oldest is in the client, in this process: go run -tags faultbugs")
	quiet := fs.Bool("q", false, "print only the summary lines")
	recheck := fs.String("check", "", "run the checkers again on a recorded history.jsonl and print their verdicts")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *recheck != "" {
		return checkFile(*recheck)
	}
	var scs []run.Scenario
	if *scenario != "" {
		sc, err := run.ByName(*scenario, *seed)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fault:", err)
			return 2
		}
		if *duration > 0 {
			sc.Duration = *duration
		}
		scs = []run.Scenario{sc}
	} else {
		var err error
		if scs, err = run.Tier(*tier, *seed, *duration); err != nil {
			fmt.Fprintln(os.Stderr, "fault:", err)
			return 2
		}
	}
	root, err := prockit.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	if *out == "" {
		*out = filepath.Join(root, "test", "reports", time.Now().Format("20060102-150405"))
	}
	logf := func(format string, a ...any) {
		if !*quiet {
			fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		}
	}
	var results []*run.Result
	for _, sc := range scs {
		if *network != "" {
			sc.Network = *network
		}
		if *bug != "" {
			sc.Bug = *bug
		}
		tags := ""
		if faultbugs.InClient(sc.Bug) {
			tags = "-tags faultbugs "
		}
		repro := fmt.Sprintf("go run %s./test/fault/cmd/fault -scenario %s -seed %d -duration %v", tags, sc.Name, sc.Seed, sc.Duration)
		if *network != "" {
			repro += " -network " + *network
		}
		if sc.Bug != "" {
			repro += " -bug " + sc.Bug
		}
		fmt.Printf("=== %s (seed %d, %d nodes, %s, %v)\n", sc.Name, sc.Seed, sc.Nodes, strings.Join(sc.Nemeses, "+"), sc.Duration)
		res, err := run.Run(ctx, sc, run.Options{Out: *out, BinDir: filepath.Join(*out, "bin"), Logf: logf, Repro: repro})
		if err != nil {
			fmt.Fprintf(os.Stderr, "fault: %s: %v\n", sc.Name, err)
			res = &run.Result{Scenario: sc, Violations: 1}
		} else {
			fmt.Printf("--- %s: %d ops, %d faults, %d violations (%v) %s\n", sc.Name, len(res.Run.Ops), len(res.Run.Faults),
				res.Violations, res.Elapsed.Round(time.Second), res.Dir)
			for _, v := range res.Verdicts {
				if !v.OK {
					fmt.Print(v.String())
				}
			}
			for _, r := range res.Recovery {
				fmt.Println("  recovery:", r)
			}
		}
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Println(run.Line(results))
	fmt.Println("report:", *out)
	for _, r := range results {
		if r.Violations > 0 {
			return 1
		}
	}
	return 0
}

// checkFile runs every checker on a recorded history.
func checkFile(path string) int {
	h, err := history.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 2
	}
	violations := 0
	for _, v := range check.All(h) {
		fmt.Print(v.String())
		violations += len(v.Violations)
	}
	fmt.Printf("%d violations\n", violations)
	if violations > 0 {
		return 1
	}
	return 0
}
