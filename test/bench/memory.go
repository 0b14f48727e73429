package main

import (
	"context"
	"fmt"
	"time"
)

// The memory workload (README.md, "Benchmarks").

func (b *bench) memory(ctx context.Context, sys string, cl cluster) error {
	targets := []int{10_000, 100_000}
	if b.quick {
		targets = []int{10_000}
	}
	// discoverd cannot be told to collect garbage: let both systems settle
	// for a few seconds before each measurement instead.
	settle := 5 * time.Second
	if b.quick {
		settle = 3 * time.Second
	}
	ps := cl.procs()
	measure := func() (heap, rss []uint64, err error) { return memOf(ctx, cl) }
	sleepCtx(ctx, settle)
	heap0, rss0, err := measure()
	if err != nil {
		return err
	}
	b.vlogf("[%s] memory: before: heap %v, rss %v", sys, heap0, rss0)
	clients, err := newClients(ctx, cl, 64, false)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	have := 0
	for _, target := range targets {
		ins := make([]*instance, target-have)
		for i := range ins {
			n := b.nextID()
			// One lease per instance on etcd, as discoverd's etcd backend
			// does: the same thing stored in both systems.
			ins[i] = &instance{service: fmt.Sprintf("mem-%02d", n%16), addr: addrOf(n), ttl: time.Hour, ownLease: true}
		}
		lat, took, err := fill(ctx, clients, ins, 64, 10*time.Minute, nil, b.progress(sys, fmt.Sprintf("memory %d", target)))
		if err != nil {
			return err
		}
		have = target
		sleepCtx(ctx, settle)
		if err := ctx.Err(); err != nil {
			return err
		}
		heap1, rss1, err := measure()
		if err != nil {
			return err
		}
		var hsum, rsum float64
		for i := range ps {
			hsum += (float64(heap1[i]) - float64(heap0[i])) / float64(target)
			rsum += (float64(rss1[i]) - float64(rss0[i])) / float64(target)
		}
		s := lat.summary()
		rw := newRow("memory", target, sys, float64(len(ins))/took.Seconds(), s)
		rw.Extra["heap_bytes_per_instance"] = round2(hsum / float64(len(ps)))
		rw.Extra["rss_bytes_per_instance"] = round2(rsum / float64(len(ps)))
		rw.Extra["heap_after_bytes"] = heap1
		rw.Extra["rss_after_bytes"] = rss1
		rw.Extra["heap_before_bytes"] = heap0
		rw.Extra["rss_before_bytes"] = rss0
		if !isDiscoverd(sys) {
			rw.Extra["layout"] = "one lease per instance, as discoverd's etcd backend"
		}
		b.add(rw)
		b.logf("[%s] memory %d instances: heap %.0f B/instance, RSS %.0f B/instance (per node, mean of 3); registered at %.0f/s, %v",
			sys, target, rw.Extra["heap_bytes_per_instance"], rw.Extra["rss_bytes_per_instance"], rw.OpsPerS, s)
	}
	return nil
}

// memOf returns each node's Go heap in use after a forced garbage
// collection, and its resident set size. A node that does not answer is
// asked up to three times (a node busy with a million instances has let
// NodeInfo's 2 s pass).
func memOf(ctx context.Context, cl cluster) (heap, rss []uint64, err error) {
	ps := cl.procs()
	heap, rss = make([]uint64, len(ps)), make([]uint64, len(ps))
	for i, p := range ps {
		for try := 0; try < 3; try++ {
			if heap[i], err = cl.heapInuse(ctx, i); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return nil, nil, err
		}
		if rss[i], err = rssBytes(p.pid()); err != nil {
			return nil, nil, err
		}
	}
	return heap, rss, nil
}
