package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The watch workload (README.md, "Benchmarks").

func (b *bench) watch(ctx context.Context, sys string, cl cluster) error {
	counts := []int{100, 1000}
	if b.quick {
		counts = []int{100}
	}
	for _, nw := range counts {
		if err := b.watchOnce(ctx, sys, cl, nw); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) watchOnce(ctx context.Context, sys string, cl cluster, nw int) error {
	const (
		conns  = 10
		events = 20
	)
	service := fmt.Sprintf("watch-%d-%d", nw, b.nextID())
	clients, err := newClients(ctx, cl, conns, true)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	writers, err := newClients(ctx, cl, 1, false)
	if err != nil {
		return err
	}
	defer closeClients(writers)

	// Open every watcher (16 at a time) before the first write.
	watchers := make([]watcher, nw)
	errs := make([]error, nw)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	octx, cancel := context.WithTimeout(ctx, 60*time.Second)
	for j := range nw {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			watchers[j], errs[j] = clients[j%conns].watch(octx, service)
		}()
	}
	wg.Wait()
	cancel()
	defer func() {
		for _, w := range watchers {
			if w != nil {
				w.close()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("open %d watchers: %w", nw, err)
	}

	addrs := make([]string, events)
	index := map[string]int{}
	for e := range addrs {
		addrs[e] = addrOf(b.nextID())
		index[addrs[e]] = e
	}
	recv := make([][]time.Time, nw)
	var got atomic.Int64
	var watchErrs atomic.Int64
	var firstWatchErr atomic.Value
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var rwg sync.WaitGroup
	for j := range nw {
		recv[j] = make([]time.Time, events)
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			seen := 0
			for k := 0; k < 10*events && seen < events; k++ {
				addr, err := watchers[j].next(wctx)
				if err != nil {
					if wctx.Err() == nil {
						watchErrs.Add(1)
						firstWatchErr.CompareAndSwap(nil, err.Error())
					}
					return
				}
				now := time.Now()
				if e, ok := index[addr]; ok && recv[j][e].IsZero() {
					recv[j][e] = now
					seen++
					got.Add(1)
				}
			}
		}()
	}

	// discoverd watchers on client k read from node k mod 3: split their
	// latencies by whether that node leads (followers apply an entry only
	// once the leader tells them it is committed).
	leader := -1
	if isDiscoverd(sys) {
		if leader, err = cl.leader(ctx); err != nil {
			return err
		}
	}
	onLeader := func(j int) bool { return (j%conns)%len(cl.procs()) == leader }

	acks := make([]time.Time, events)
	start := time.Now()
	for e := range events {
		in := &instance{service: service, addr: addrs[e], ttl: time.Hour}
		if err := writers[0].register(ctx, in, 10*time.Second); err != nil {
			return fmt.Errorf("watch writer: %w", err)
		}
		acks[e] = time.Now()
		if e < events-1 {
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
	// Wait (at most 10 s) for every watcher to see every event.
	want := int64(nw * events)
	for wait := time.Now().Add(10 * time.Second); got.Load() < want && time.Now().Before(wait) && ctx.Err() == nil; {
		sleepCtx(ctx, 20*time.Millisecond)
	}
	stopWatch()
	rwg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}

	lat, latL, latF := &latencies{}, &latencies{}, &latencies{}
	r, rL, rF := lat.worker(), latL.worker(), latF.worker()
	early, last := 0, start
	for j := range nw {
		for e := range events {
			t := recv[j][e]
			if t.IsZero() {
				continue
			}
			d := t.Sub(acks[e])
			if d < 0 {
				early++ // delivered before the write call returned
				d = 0
			}
			r.ok(d)
			if onLeader(j) {
				rL.ok(d)
			} else {
				rF.ok(d)
			}
			if t.After(last) {
				last = t
			}
		}
	}
	r.flush()
	rL.flush()
	rF.flush()
	s := lat.summary()
	missing := int(want) - s.n
	rw := newRow("watch", nw, sys, float64(s.n)/last.Sub(start).Seconds(), s)
	rw.Extra["watchers"] = nw
	rw.Extra["events"] = events
	rw.Extra["connections"] = conns
	rw.Extra["missing"] = missing
	rw.Extra["before_ack"] = early
	if isDiscoverd(sys) {
		sl, sf := latL.summary(), latF.summary()
		rw.Extra["leader_p50_ms"], rw.Extra["leader_p99_ms"] = sl.p50, sl.p99
		rw.Extra["follower_p50_ms"], rw.Extra["follower_p99_ms"] = sf.p50, sf.p99
		b.vlogf("[%s] watch %d: watchers on the leader %v; on followers %v", sys, nw, sl, sf)
	}
	if n := watchErrs.Load(); n > 0 {
		rw.Extra["watch_errors"] = n
		rw.Extra["first_watch_error"] = firstWatchErr.Load()
	}
	b.add(rw)
	b.logf("[%s] watch %d watchers x %d events: %d deliveries, write ack → event %v (%d before the ack)", sys, nw, events, s.n, s, early)
	if missing > 0 {
		b.failf("[%s] watch %d watchers: %d of %d (watcher, event) deliveries MISSING (watch errors: %d, first: %v)",
			sys, nw, missing, want, watchErrs.Load(), firstWatchErr.Load())
	}
	return nil
}
