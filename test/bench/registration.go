package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The registration workload (README.md, "Benchmarks").
//
// One run of a level is a few seconds of one system's disk and CPU, and the
// machine (another job, the disk's mood) moves between two such spans as
// much as the systems differ. So every level is run registrationRuns times
// per system, interleaved: each system's cluster is started first and kept
// running, and the runs of one level follow each other system by system,
// the order reversed every other run (discoverd, etcd, etcd, discoverd,
// discoverd, etcd), so that neither system always goes first. The table
// compares the median of the per-run ratios; a run and the other
// system's run with the same number were taken seconds apart.

// registrationLevels are the concurrent clients of the registration runs.
var registrationLevels = []int{1, 16, 64, 256}

// registrationRuns is how many times each level is run per system.
const registrationRuns = 3

// registrationRunTime is how long one run of one level lasts.
func (b *bench) registrationRunTime() time.Duration {
	if b.quick {
		return 2 * time.Second
	}
	return 5 * time.Second
}

// regCluster is one system's cluster during the registration rounds.
type regCluster struct {
	sys     system
	cl      cluster // nil once it failed: the system's remaining runs are skipped
	clients []client
}

func (r *regCluster) stop() {
	if r.cl != nil {
		closeClients(r.clients)
		r.cl.stop()
		r.cl = nil
	}
}

// runOrder returns the order the systems run in for run (1-based): as
// given in odd runs, reversed in even ones.
func runOrder[T any](systems []T, run int) []T {
	out := slices.Clone(systems)
	if run%2 == 0 {
		slices.Reverse(out)
	}
	return out
}

// registrationRounds runs the registration workload against every system,
// the clusters side by side, each level registrationRuns times, interleaved
// (see above). The clusters are stopped at the end: the other workloads
// start their own.
func (b *bench) registrationRounds(ctx context.Context, systems []system) {
	var rcs []*regCluster
	defer func() {
		for _, rc := range rcs {
			rc.stop()
		}
	}()
	for _, sys := range systems {
		if ctx.Err() != nil {
			return
		}
		cl, err := b.startCluster(ctx, sys, "registration")
		if err != nil {
			b.failf("[%s] registration: %v", sys.name(), err)
			continue
		}
		// 256 workers share 64 clients (4 per connection set); below that
		// every worker has a client of its own.
		clients, err := newClients(ctx, cl, 64, false)
		if err != nil {
			cl.stop()
			b.failf("[%s] registration: %v", sys.name(), err)
			continue
		}
		rcs = append(rcs, &regCluster{sys: sys, cl: cl, clients: clients})
	}
	names := make([]string, len(rcs))
	for i, rc := range rcs {
		names[i] = rc.sys.name()
	}
	b.logf("bench: registration: %d runs of %v per level, interleaved: %s, then the reverse order",
		registrationRuns, b.registrationRunTime(), strings.Join(names, ", "))
	for _, C := range registrationLevels {
		for run := 1; run <= registrationRuns; run++ {
			for _, rc := range runOrder(rcs, run) {
				if rc.cl == nil || ctx.Err() != nil {
					continue
				}
				var others []*proc
				for _, o := range rcs {
					if o != rc && o.cl != nil {
						others = append(others, o.cl.procs()...)
					}
				}
				if err := b.registrationRun(ctx, rc, C, run, others); err != nil && ctx.Err() == nil {
					var tails []string
					for _, p := range rc.cl.procs() {
						tails = append(tails, p.describe())
					}
					b.failf("[%s] registration C=%d run %d: %v\n%s", rc.sys.name(), C, run, err, strings.Join(tails, "\n"))
					rc.stop() // in an unknown state: no more runs on it
				}
			}
		}
	}
}

// registrationRun is one run of one level on one system: C workers register
// distinct instances, each call to a random node, for registrationRunTime.
// others are the processes of the other systems' clusters, idle meanwhile:
// their CPU is reported with the row.
func (b *bench) registrationRun(ctx context.Context, rc *regCluster, C, run int, others []*proc) error {
	sys, cl, clients := rc.sys.name(), rc.cl, rc.clients
	dc, isD := cl.(*discoverdCluster)
	var logs0 [][3]uint64
	if isD {
		logs0 = dc.logAppends(ctx)
	}
	cpu, idle := startCPU(cl.procs()), startCPU(others)
	profiled := b.profileServers(ctx, sys, fmt.Sprintf("registration-%d-run%d", C, run), cl, b.registrationRunTime())
	lat, _, elapsed := timedLoop(ctx, C, b.registrationRunTime(), func(octx context.Context, w, i int) (int, error) {
		n := b.nextID()
		in := &instance{service: fmt.Sprintf("reg-%02d", n%16), addr: addrOf(n), ttl: time.Hour}
		return 1, clients[w%len(clients)].register(octx, in, 0)
	})
	profiled()
	if err := ctx.Err(); err != nil {
		return err
	}
	s := lat.summary()
	if s.n == 0 {
		return fmt.Errorf("no registration succeeded in %v (%d errors, first: %s)", elapsed.Round(time.Millisecond), s.errs, s.firstErr)
	}
	row := newRow("registration", C, sys, float64(s.n)/elapsed.Seconds(), s)
	row.Run = run
	row.Extra["ops"] = s.n
	row.Extra["seconds"] = round2(elapsed.Seconds())
	row.Extra["connections"] = min(C, len(clients))
	each, total := cpu.pct()
	row.Extra["node_cpu_pct"], row.Extra["cluster_cpu_pct"], row.Extra["client_cpu_pct"] = each, total, cpu.clientPct()
	_, idleTotal := idle.pct()
	row.Extra["idle_clusters_cpu_pct"] = round2(idleTotal)
	if isD {
		row.Extra["log_entries_per_append"], row.Extra["writes_per_append"], row.Extra["log_append_ms"] = appendExtra(logs0, dc.logAppends(ctx), s.n)
		b.vlogf("[%s] registration C=%d run %d: log entries per append %v, writes per append %v, ms per append %v",
			sys, C, run, row.Extra["log_entries_per_append"], row.Extra["writes_per_append"], row.Extra["log_append_ms"])
	}
	b.add(row)
	b.logf("[%s] registration C=%d run %d: %d ops in %.1fs = %.0f ops/s, %v; CPU %% of a core: servers %v, clients %v, the other (idle) clusters %.1f",
		sys, C, run, s.n, elapsed.Seconds(), row.OpsPerS, s, each, row.Extra["client_cpu_pct"], idleTotal)
	return nil
}
