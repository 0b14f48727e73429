// Command bench compares discoverd with etcd on the same machine in the same
// run: it builds both (etcd from the etcd server module in go.mod, see
// etcdserver/), starts a 3-node cluster of each as real processes on
// loopback — one system at a time, but for registration, whose runs
// alternate between the systems' clusters — and runs the same workloads
// against both: registration throughput and latency, heartbeats, 100 000
// instances kept alive, watch fan-out latency, leader failover and memory
// per instance; and, for discoverd alone, watch fan-out latency with read
// replicas (replicas); registrations, heartbeats and failover of discoverd
// with the WAL log store (discoverd-wal) against etcd; and registrations
// and heartbeats of discoverd with ACLs on (discoverd-acl) against
// without. It prints a table and writes results.json and results.md.
//
//	go run ./test/bench [-quick] [-out DIR] [-systems discoverd,discoverd-wal,discoverd-acl,discoverd-tls,etcd]
//	    [-workloads registration,heartbeat,heartbeat100k,watch,idle,failover,memory,replicas,scale] [-v]
//	    [-scale-instances 1000000] [-scale-duration 2m]
//
// -workloads scale (full mode, discoverd only) keeps a million instances
// alive on one cluster, with a snapshot, a follower's catch-up by snapshot
// install and watches meanwhile (scale.go); it wants ~8 GiB free.
// -workloads removal (not run by default) measures how long a stopped
// instance takes to go away across a leader kill (50 kills, quick 5);
// -workloads httpapi (not run by default) the HTTP API against the native
// protocol (httpapi.go).
// -workloads dns (not run by default either) A queries per second over UDP
// against one node's -dns-addr (dns.go).
//
// Not part of `go test ./...`: it takes minutes and wants the machine to
// itself. README.md (section "Benchmarks") says what each workload measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/test/prockit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

var allWorkloads = []string{"registration", "heartbeat", "heartbeat100k", "watch", "idle", "failover", "memory", "replicas", "scale"}

// optionalWorkloads run only when named in -workloads: removal takes about
// ten minutes on its own (50 leader kills; README); httpapi compares the
// HTTP API with the native protocol (httpapi.go); dns measures DNS queries
// per second (dns.go).
var optionalWorkloads = []string{"removal", "httpapi", "dns"}

// bench is one run of the command.
type bench struct {
	quick         bool
	verbose       bool
	discoverdArgs []string // extra flags for every discoverd server
	out           io.Writer

	dir, binDir, dataDir, logDir string
	discoverdBin, etcdBin        string

	// The scale workload's size and measured span (scale.go).
	scaleInstances int
	scaleDuration  time.Duration

	profileDir string // -server-profiles: where the nodes' CPU profiles go (profile.go)

	procs procs
	id    atomic.Int64 // instance numbers, unique in the run

	mu       sync.Mutex
	results  []row
	disk     []row // the disk's synced-write latency, at the start and at the end (disk.go)
	failures []string
	clusters int
}

func (b *bench) nextID() int { return int(b.id.Add(1)) }

func (b *bench) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.out, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (b *bench) vlogf(format string, args ...any) {
	if b.verbose {
		b.logf(format, args...)
	}
}

// failf reports a failure loudly; the run then exits 1.
func (b *bench) failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.logf("!!! FAILURE: %s", msg)
	b.mu.Lock()
	b.failures = append(b.failures, msg)
	b.mu.Unlock()
}

func (b *bench) add(r row) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.results = append(b.results, r)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "small sizes and short runs (about two minutes)")
	out := fs.String("out", "", "output directory (default <module>/test/reports/bench-<date-time>)")
	systemsFlag := fs.String("systems", "discoverd,discoverd-wal,discoverd-acl,discoverd-tls,etcd",
		"systems to benchmark, comma-separated: discoverd, discoverd-wal (-raft-log-store wal: registration, heartbeat and failover only), discoverd-acl (with ACLs on: registration and heartbeat only), discoverd-tls (with TLS on), etcd")
	workloadsFlag := fs.String("workloads", strings.Join(allWorkloads, ","), "workloads to run, comma-separated (also: "+strings.Join(optionalWorkloads, ",")+", only when named)")
	verbose := fs.Bool("v", false, "more progress output")
	dArgs := fs.String("discoverd-args", "", "extra flags for every `discoverd server`, space-separated (e.g. \"-raft-apply-groups 1\")")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench process itself (the clients) to this file")
	scaleInstances := fs.Int("scale-instances", 1_000_000, "instances of the scale workload (full mode only; it wants about 8 KiB of free memory per instance)")
	scaleDuration := fs.Duration("scale-duration", 2*time.Minute, "how long the scale workload heartbeats its instances once they are registered")
	profileDir := fs.String("server-profiles", "", "write CPU profiles of every discoverd node, taken during each measured registration and heartbeat run, into this directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *profileDir != "" {
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "bench: -server-profiles: %v\n", err)
			return 2
		}
	}
	if *scaleInstances < scaleClients || *scaleInstances > 10_000_000 || *scaleDuration < 10*time.Second || *scaleDuration > time.Hour {
		fmt.Fprintf(stderr, "bench: -scale-instances %d (%d to 10 000 000) or -scale-duration %v (10s to 1h) out of range\n", *scaleInstances, scaleClients, *scaleDuration)
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "bench: -cpuprofile: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench: -cpuprofile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var systems []system
	for _, name := range splitList(*systemsFlag) {
		switch name {
		case "discoverd":
			systems = append(systems, discoverdSystem{})
		case "discoverd-acl":
			systems = append(systems, discoverdSystem{acl: true})
		case "discoverd-tls":
			systems = append(systems, discoverdSystem{tls: true})
		case "discoverd-wal":
			systems = append(systems, discoverdSystem{wal: true})
		case "etcd":
			systems = append(systems, etcdSystem{})
		default:
			fmt.Fprintf(stderr, "bench: unknown system %q (discoverd, discoverd-wal, discoverd-acl, discoverd-tls, etcd)\n", name)
			return 2
		}
	}
	workloads := map[string]bool{}
	for _, w := range splitList(*workloadsFlag) {
		if !slices.Contains(allWorkloads, w) && !slices.Contains(optionalWorkloads, w) {
			fmt.Fprintf(stderr, "bench: unknown workload %q (%s)\n", w, strings.Join(append(slices.Clone(allWorkloads), optionalWorkloads...), ", "))
			return 2
		}
		workloads[w] = true
	}
	if len(systems) == 0 || len(workloads) == 0 {
		fmt.Fprintln(stderr, "bench: nothing to run")
		return 2
	}

	b := &bench{quick: *quick, verbose: *verbose, out: stdout, discoverdArgs: strings.Fields(*dArgs),
		scaleInstances: *scaleInstances, scaleDuration: *scaleDuration, profileDir: *profileDir}
	// However the run ends (an error, Ctrl-C), stop every server started.
	defer b.procs.stopAll()
	if err := b.setup(ctx, *out, systems); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	started := time.Now()
	mode := "full"
	if b.quick {
		mode = "quick"
	}
	b.logf("bench: %s mode, systems %s, output %s", mode, *systemsFlag, b.dir)
	b.probeDiskInto("start")
	for _, w := range []string{"heartbeat100k", "scale"} {
		if b.quick && workloads[w] {
			b.logf("bench: %s runs in full mode only; skipped", w)
			delete(workloads, w)
		}
	}
	if workloads["scale"] && slices.ContainsFunc(systems, func(s system) bool { return s.name() != "discoverd" }) {
		b.logf("bench: scale runs against discoverd without TLS or ACLs only (%d instances, %v)", b.scaleInstances, b.scaleDuration)
	}
	if workloads["removal"] && slices.ContainsFunc(systems, func(s system) bool { return s.name() == "etcd" }) {
		b.logf("bench: removal runs against discoverd only (etcd's leases keep their own remaining time across a leader change)")
	}
	if workloads["replicas"] && slices.ContainsFunc(systems, func(s system) bool { return s.name() != "discoverd" }) {
		b.logf("bench: replicas runs against discoverd without TLS or ACLs only (etcd's learners serve no watches; the run's certificates name three nodes)")
	}
	for _, only := range []struct {
		sys, why  string
		workloads []string
	}{{"discoverd-acl", "ACLs on against off", aclWorkloads}, {"discoverd-wal", "the workloads the log store moves", walWorkloads}} {
		if !slices.ContainsFunc(systems, func(s system) bool { return s.name() == only.sys }) {
			continue
		}
		var others []string
		for w := range workloads {
			if !slices.Contains(only.workloads, w) {
				others = append(others, w)
			}
		}
		if len(others) > 0 {
			slices.Sort(others)
			b.logf("bench: %s runs %s only (%s); not %s", only.sys, strings.Join(only.workloads, ", "), only.why, strings.Join(others, ", "))
		}
	}
	if workloads["heartbeat100k"] && slices.ContainsFunc(systems, func(s system) bool { return s.name() == "etcd" }) {
		b.logf("bench: heartbeat100k runs against discoverd only (etcd, a lease and KeepAliveOnce per instance, registered 40 294 of 100 000 in 5 minutes and lost them all; README)")
	}
	if workloads["registration"] {
		// Every system's cluster side by side, the runs interleaved
		// (registration.go); the other workloads then one system at a time.
		b.registrationRounds(ctx, systems)
	}
	for _, sys := range systems {
		if ctx.Err() != nil {
			break
		}
		b.runSystem(ctx, sys, workloads)
	}
	if ctx.Err() != nil {
		b.procs.stopAll()
		fmt.Fprintln(stderr, "bench: interrupted; servers stopped")
		b.failures = append(b.failures, "interrupted")
	}
	if ctx.Err() == nil {
		b.probeDiskInto("end")
	}
	wall := time.Since(started)
	if err := b.report(wall, mode); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if len(b.failures) > 0 {
		fmt.Fprintf(stderr, "bench: %d failure(s):\n  %s\n", len(b.failures), strings.Join(b.failures, "\n  "))
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// setup creates the output directories and builds the binaries.
func (b *bench) setup(ctx context.Context, out string, systems []system) error {
	prockit.CleanLeftovers()
	root, err := prockit.ModuleRoot()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, "test", "reports", "bench-"+time.Now().Format("20060102-150405"))
	}
	if b.dir, err = filepath.Abs(out); err != nil {
		return err
	}
	b.binDir, b.dataDir, b.logDir = filepath.Join(b.dir, "bin"), filepath.Join(b.dir, "data"), filepath.Join(b.dir, "logs")
	for _, d := range []string{b.binDir, b.dataDir, b.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for _, sys := range systems {
		start := time.Now()
		switch sys.name() {
		case "discoverd", "discoverd-wal", "discoverd-acl", "discoverd-tls":
			b.discoverdBin, err = prockit.BuildInto(b.binDir)
		case "etcd":
			b.etcdBin = filepath.Join(b.binDir, "etcd")
			err = prockit.BuildPackage(bctx, "./test/bench/etcdserver", b.etcdBin)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "bench: built %s in %.1fs\n", sys.name(), time.Since(start).Seconds())
	}
	return nil
}

// startCluster starts a fresh cluster, trying again (on new ports) if the
// first attempt fails — another program may take a port we picked.
func (b *bench) startCluster(ctx context.Context, sys system, purpose string) (cluster, error) {
	var errs []error
	for attempt := range 3 {
		b.mu.Lock()
		b.clusters++
		tag := fmt.Sprintf("%s-%d-%s", sys.name(), b.clusters, purpose)
		b.mu.Unlock()
		start := time.Now()
		cl, err := sys.start(ctx, b, tag)
		if err == nil {
			b.vlogf("[%s] cluster %s ready in %.1fs", sys.name(), tag, time.Since(start).Seconds())
			return cl, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
		b.logf("[%s] cluster %s failed to start (attempt %d of 3): %v", sys.name(), tag, attempt+1, err)
	}
	return nil, fmt.Errorf("start %s cluster: %w", sys.name(), errors.Join(errs...))
}

// runSystem runs the selected workloads against one system, registration
// aside (registrationRounds runs it for all the systems at once).
// heartbeat, watch and idle share one cluster; heartbeat100k, failover,
// memory, removal and replicas each get a fresh one (a clean state;
// failover and removal kill nodes, replicas adds two).
func (b *bench) runSystem(ctx context.Context, sys system, workloads map[string]bool) {
	type step struct {
		name string
		fn   func(context.Context, string, cluster) error
	}
	shared := []step{{"heartbeat", b.heartbeat}, {"watch", b.watch}, {"idle", b.idle}}
	fresh := []step{{"heartbeat100k", b.heartbeat100k}, {"failover", b.failover}, {"memory", b.memory}, {"removal", b.removal}, {"replicas", b.replicas}, {"httpapi", b.httpapi}, {"dns", b.dns}, {"scale", b.scale}}
	if !isDiscoverd(sys.name()) {
		// heartbeat100k and removal are discoverd's alone (see run).
		fresh = slices.DeleteFunc(fresh, func(st step) bool { return st.name == "heartbeat100k" || st.name == "removal" })
	}
	if sys.name() != "discoverd" {
		// replicas and scale: discoverd without TLS alone (see run).
		fresh = slices.DeleteFunc(fresh, func(st step) bool { return st.name == "replicas" || st.name == "scale" })
	}
	if sys.name() == "discoverd-acl" {
		// ACLs on against off: the calls a token is checked on (see run).
		notACL := func(st step) bool { return !slices.Contains(aclWorkloads, st.name) }
		shared, fresh = slices.DeleteFunc(shared, notACL), slices.DeleteFunc(fresh, notACL)
	}
	if sys.name() == "discoverd-wal" {
		// The workloads the log store moves (see run).
		notWAL := func(st step) bool { return !slices.Contains(walWorkloads, st.name) }
		shared, fresh = slices.DeleteFunc(shared, notWAL), slices.DeleteFunc(fresh, notWAL)
	}

	var cl cluster
	defer func() {
		if cl != nil {
			cl.stop()
		}
	}()
	for _, st := range shared {
		if !workloads[st.name] || ctx.Err() != nil {
			continue
		}
		if cl == nil {
			var err error
			if cl, err = b.startCluster(ctx, sys, "main"); err != nil {
				b.failf("[%s] %s: %v", sys.name(), st.name, err)
				return
			}
		}
		if err := b.step(ctx, sys, cl, st.name, st.fn); err != nil {
			// The cluster may be in any state: the next step gets a new one.
			cl.stop()
			cl = nil
		}
	}
	if cl != nil {
		cl.stop()
		cl = nil
	}
	for _, st := range fresh {
		if !workloads[st.name] || ctx.Err() != nil {
			continue
		}
		csys := sys
		if st.name == "scale" {
			csys = discoverdSystem{extra: scaleServerArgs}
		}
		c, err := b.startCluster(ctx, csys, st.name)
		if err != nil {
			b.failf("[%s] %s: %v", sys.name(), st.name, err)
			continue
		}
		_ = b.step(ctx, sys, c, st.name, st.fn)
		c.stop()
	}
}

func (b *bench) step(ctx context.Context, sys system, cl cluster, name string, fn func(context.Context, string, cluster) error) error {
	start := time.Now()
	b.vlogf("[%s] %s: start", sys.name(), name)
	err := fn(ctx, sys.name(), cl)
	if err != nil && ctx.Err() == nil {
		var tails []string
		for _, p := range cl.procs() {
			tails = append(tails, p.describe())
		}
		b.failf("[%s] %s: %v\n%s", sys.name(), name, err, strings.Join(tails, "\n"))
		return err
	}
	b.vlogf("[%s] %s: done in %.1fs", sys.name(), name, time.Since(start).Seconds())
	return err
}
