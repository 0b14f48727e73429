package main

import (
	"context"
	"fmt"
	"time"
)

// The registration workload (README.md, "Benchmarks").

func (b *bench) registration(ctx context.Context, sys string, cl cluster) error {
	dur := 15 * time.Second
	if b.quick {
		dur = 5 * time.Second
	}
	// 256 workers share 64 clients (4 per connection set); below that every
	// worker has a client of its own.
	clients, err := newClients(ctx, cl, 64, false)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	for _, C := range []int{1, 16, 64, 256} {
		dc, isD := cl.(*discoverdCluster)
		var logs0 [][3]uint64
		if isD {
			logs0 = dc.logAppends(ctx)
		}
		cpu := startCPU(cl.procs())
		lat, _, elapsed := timedLoop(ctx, C, dur, func(octx context.Context, w, i int) (int, error) {
			n := b.nextID()
			in := &instance{service: fmt.Sprintf("reg-%02d", n%16), addr: addrOf(n), ttl: time.Hour}
			return 1, clients[w%len(clients)].register(octx, in, 0)
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		s := lat.summary()
		row := newRow("registration", C, sys, float64(s.n)/elapsed.Seconds(), s)
		row.Extra["ops"] = s.n
		row.Extra["seconds"] = round2(elapsed.Seconds())
		row.Extra["connections"] = min(C, len(clients))
		each, total := cpu.pct()
		row.Extra["node_cpu_pct"], row.Extra["cluster_cpu_pct"], row.Extra["client_cpu_pct"] = each, total, cpu.clientPct()
		if isD {
			row.Extra["log_entries_per_append"], row.Extra["writes_per_append"], row.Extra["log_append_ms"] = appendExtra(logs0, dc.logAppends(ctx), s.n)
			b.vlogf("[%s] registration C=%d: log entries per append %v, writes per append %v, ms per append %v",
				sys, C, row.Extra["log_entries_per_append"], row.Extra["writes_per_append"], row.Extra["log_append_ms"])
		}
		b.add(row)
		b.logf("[%s] registration C=%d: %d ops in %.1fs = %.0f ops/s, %v; CPU %% of a core: servers %v, clients %v",
			sys, C, s.n, elapsed.Seconds(), row.OpsPerS, s, each, row.Extra["client_cpu_pct"])
	}
	return nil
}
