package main

import (
	"context"
	"fmt"
	"time"
)

// The heartbeat and heartbeat-batched workloads (README.md, "Benchmarks").

func (b *bench) heartbeat(ctx context.Context, sys string, cl cluster) error {
	const W = 64
	N, dur := 10_000, 15*time.Second
	if b.quick {
		N, dur = 2_000, 3*time.Second
	}
	// Each worker's client talks to one node (worker w: node w mod 3), as
	// the Go client keeps one connection: two requests in three are
	// forwarded to the leader by a follower.
	clients, err := newClients(ctx, cl, W, true)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	ins := make([]*instance, N)
	for i := range ins {
		n := b.nextID()
		ins[i] = &instance{service: fmt.Sprintf("hb-%02d", n%16), addr: addrOf(n), ttl: time.Hour, ownLease: true}
	}
	flat, took, err := fill(ctx, clients, ins, W, 5*time.Minute, nil, b.progress(sys, "heartbeat"))
	if err != nil {
		return err
	}
	b.vlogf("[%s] heartbeat: registered %d instances (one lease each on etcd) in %.1fs, %v", sys, N, took.Seconds(), flat.summary())

	// run has every worker call beat in a loop for dur; beat returns how
	// many instance heartbeats were acknowledged.
	run := func(name string, beat func(ctx context.Context, w, i int) (int, error)) (row, error) {
		cpu := startCPU(cl.procs())
		profiled := b.profileServers(ctx, sys, name, cl, dur)
		lat, acked, elapsed := timedLoop(ctx, W, dur, beat)
		profiled()
		if err := ctx.Err(); err != nil {
			return row{}, err
		}
		s := lat.summary()
		rw := newRow(name, W, sys, float64(acked)/elapsed.Seconds(), s)
		rw.Extra["instances"] = N
		rw.Extra["requests_per_s"] = round2(float64(s.n) / elapsed.Seconds())
		rw.Extra["instance_heartbeats"] = acked
		each, total := cpu.pct()
		rw.Extra["node_cpu_pct"], rw.Extra["cluster_cpu_pct"], rw.Extra["client_cpu_pct"] = each, total, cpu.clientPct()
		b.logf("[%s] %s W=%d: %d instance heartbeats in %d requests in %.1fs = %.0f/s, per request %v; CPU %% of a core: servers %v, clients %v",
			sys, name, W, acked, s.n, elapsed.Seconds(), rw.OpsPerS, s, each, rw.Extra["client_cpu_pct"])
		return rw, nil
	}

	// One instance per request; worker w beats its own instances w, w+W, …
	per := func(ctx context.Context, w, i int) (int, error) {
		mine := (N - w + W - 1) / W // instances w, w+W, w+2W, … below N
		in := ins[w+(i%mine)*W]
		nf, err := clients[w].heartbeat(ctx, []*instance{in})
		if err != nil {
			return 0, err
		}
		if nf[0] {
			return 0, fmt.Errorf("heartbeat %s: not found", in.addr)
		}
		return 1, nil
	}
	rw, err := b.runRow(run("heartbeat", per))
	if err != nil {
		return err
	}
	rw.Extra["routing"] = "each worker on one node (w mod 3)"
	if !isDiscoverd(sys) {
		rw.Extra["routing"] = "clientv3 balances over the 3 endpoints; KeepAliveOnce of the instance's own lease"
	}
	b.add(rw)

	if !isDiscoverd(sys) {
		return nil
	}
	// The Go client's batching: one request carries up to 1024 instances.
	// Worker w starts at its own offset and walks all instances in batches.
	batch := min(1024, N)
	batched := func(ctx context.Context, w, i int) (int, error) {
		off := (w*N/W + i*batch) % N
		group := make([]*instance, 0, batch)
		for j := range batch {
			group = append(group, ins[(off+j)%N])
		}
		nf, err := clients[w].heartbeat(ctx, group)
		if err != nil {
			return 0, err
		}
		n := 0
		for _, x := range nf {
			if !x {
				n++
			}
		}
		if n != len(group) {
			return n, fmt.Errorf("%d of %d instances not found", len(group)-n, len(group))
		}
		return n, nil
	}
	rw, err = b.runRow(run("heartbeat-batched", batched))
	if err != nil {
		return err
	}
	rw.Extra["batch"] = batch
	rw.Extra["routing"] = "each worker on one node (w mod 3)"
	b.add(rw)
	return nil
}
