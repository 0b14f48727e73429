package main

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The heartbeat100k workload (README.md, "Benchmarks").

// hbQueue holds one client's instances by their next heartbeat time.
type hbQueue struct {
	mu sync.Mutex
	h  hbHeap
}

// hbEntry is an instance in a queue, with when it is due (Unix
// nanoseconds) beside it: the heap compares the times in its own array
// instead of following a pointer to each instance, which at a million
// instances cost the bench a fifth of its CPU in cache misses.
type hbEntry struct {
	due int64
	in  *instance
}

type hbHeap []hbEntry

func (h hbHeap) Len() int           { return len(h) }
func (h hbHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h hbHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *hbHeap) Push(x any)        { *h = append(*h, x.(hbEntry)) }
func (h *hbHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// push queues in, due at due.
func (q *hbQueue) push(in *instance, due time.Time) {
	q.mu.Lock()
	heap.Push(&q.h, hbEntry{due: due.UnixNano(), in: in})
	q.mu.Unlock()
}

// popDue works like the Go client's dueBatch: once the earliest instance is
// due, it takes every instance due within slack of now, most overdue first,
// at most max; until then it says how long to wait.
func (q *hbQueue) popDue(now time.Time, slack time.Duration, max int) ([]*instance, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.h.Len() == 0 {
		return nil, 100 * time.Millisecond
	}
	t := now.UnixNano()
	if wait := time.Duration(q.h[0].due - t); wait > 0 {
		return nil, wait
	}
	var out []*instance
	for len(out) < max && q.h.Len() > 0 && time.Duration(q.h[0].due-t) <= slack {
		out = append(out, heap.Pop(&q.h).(hbEntry).in)
	}
	return out, 0
}

// heartbeater keeps instances alive as the Go client does (client/heartbeat.go):
// per client, loops goroutines take the due instances from the client's
// queue in batches (every instance due within slack of now, at most
// maxBatch, most overdue first), one request in flight per loop; an
// acknowledged instance is due again in TTL/3 ± 10 %, a failed request's
// instances in 200–400 ms, and one the server no longer knows is lost (the
// Go client would register it again). Heartbeats, requests and not-found
// answers are counted throughout; latencies and the acks of the window
// while measuring.
type heartbeater struct {
	ttl, slack time.Duration
	maxBatch   int
	clients    []client
	queues     []*hbQueue

	measuring atomic.Bool
	acked     atomic.Int64 // instance heartbeats acknowledged while measuring
	total     atomic.Int64 // instance heartbeats acknowledged, all along
	notFound  atomic.Int64 // instances the server no longer knew (expired)
	failed    atomic.Int64 // requests that failed as a whole
	lat       *latencies   // requests while measuring

	stop func()
	wg   sync.WaitGroup
}

// startHeartbeater starts loops heartbeat loops per client (all idle until
// instances are added).
func startHeartbeater(ctx context.Context, clients []client, loops int, ttl, slack time.Duration, maxBatch int) *heartbeater {
	hctx, stop := context.WithCancel(ctx)
	h := &heartbeater{ttl: ttl, slack: slack, maxBatch: maxBatch, clients: clients, lat: &latencies{}, stop: stop}
	h.queues = make([]*hbQueue, len(clients))
	for k := range clients {
		h.queues[k] = &hbQueue{}
		for range loops {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.loop(hctx, k)
			}()
		}
	}
	return h
}

// add has client k heartbeat in from now on, the first beat in TTL/3 ± 10 %.
func (h *heartbeater) add(k int, in *instance) {
	h.queues[k].push(in, time.Now().Add(jitter(h.ttl/3)))
}

// halt stops every loop and waits for them.
func (h *heartbeater) halt() {
	h.stop()
	h.wg.Wait()
}

func (h *heartbeater) loop(ctx context.Context, k int) {
	r := h.lat.worker()
	defer r.flush()
	cli, q := h.clients[k], h.queues[k]
	for i := 0; i < 100_000_000 && ctx.Err() == nil; i++ {
		batch, wait := q.popDue(time.Now(), h.slack, h.maxBatch)
		if len(batch) == 0 {
			sleepCtx(ctx, min(wait, 50*time.Millisecond))
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, h.ttl/3)
		t0 := time.Now()
		nf, err := cli.heartbeat(rctx, batch)
		now := time.Now()
		cancel()
		measuring := h.measuring.Load()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.failed.Add(1)
			if measuring {
				r.fail(err)
			}
			for _, in := range batch {
				q.push(in, now.Add(retryDelay()))
			}
			continue
		}
		if measuring {
			r.ok(now.Sub(t0))
		}
		n := 0
		for j, in := range batch {
			if nf[j] {
				in.lost = true // expired; the Go client would register it again
				h.notFound.Add(1)
				continue
			}
			n++
			q.push(in, now.Add(jitter(h.ttl/3)))
		}
		h.total.Add(int64(n))
		if measuring {
			h.acked.Add(int64(n))
		}
	}
}

func (b *bench) heartbeat100k(ctx context.Context, sys string, cl cluster) error {
	const (
		nClients  = 20
		perClient = 5_000
		ttl       = 10 * time.Second
		window    = 60 * time.Second
	)
	// discoverd: like the Go client, one heartbeat loop per client, one
	// request in flight, batching every instance due within TTL/12 (at most
	// 1024). etcd: KeepAliveOnce per lease from 32 workers per client.
	loops, slack, maxBatch := 1, ttl/12, 1024
	if !isDiscoverd(sys) {
		loops, slack, maxBatch = 32, 0, 1
	}
	clients, err := newClients(ctx, cl, nClients, true)
	if err != nil {
		return err
	}
	defer closeClients(clients)

	var registered atomic.Int64
	hb := startHeartbeater(ctx, clients, loops, ttl, slack, maxBatch)
	defer hb.halt()

	// Register every client's instances (4 at a time per client); each
	// joins its client's heartbeat queue as soon as it is registered.
	services := make([]string, nClients)
	regStart := time.Now()
	var regWG sync.WaitGroup
	regErrs := make([]error, nClients)
	for k := range nClients {
		services[k] = fmt.Sprintf("hb100k-%02d", k)
		ins := make([]*instance, perClient)
		for i := range ins {
			ins[i] = &instance{service: services[k], addr: addrOf(b.nextID()), ttl: ttl, ownLease: true}
		}
		regWG.Add(1)
		go func() {
			defer regWG.Done()
			_, _, regErrs[k] = fill(ctx, clients[k:k+1], ins, 4, 5*time.Minute, func(in *instance) {
				registered.Add(1)
				hb.add(k, in)
			}, nil)
		}()
	}
	regDone := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				b.logf("[%s] heartbeat100k: registered %d of %d (%.0fs), all heartbeating", sys, registered.Load(), nClients*perClient, time.Since(regStart).Seconds())
			case <-regDone:
				return
			}
		}
	}()
	regWG.Wait()
	close(regDone)
	regTook := time.Since(regStart)
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := errors.Join(regErrs...); err != nil {
		b.logf("[%s] heartbeat100k: WARNING registration incomplete: %v", sys, err)
	}
	nReg := registered.Load()
	b.logf("[%s] heartbeat100k: registered %d instances (TTL %v) in %.1fs (%.0f/s); heartbeating for %v",
		sys, nReg, ttl, regTook.Seconds(), float64(nReg)/regTook.Seconds(), window)

	li, err := cl.leader(ctx)
	if err != nil {
		return err
	}
	ps := cl.procs()
	ticks0 := make([]uint64, len(ps))
	for i, p := range ps {
		ticks0[i], _ = cpuTicks(p.pid())
	}
	lostBefore := hb.notFound.Load()
	hb.measuring.Store(true)
	winStart := time.Now()
	sleepCtx(ctx, window)
	if err := ctx.Err(); err != nil {
		return err
	}
	hb.measuring.Store(false)
	elapsed := time.Since(winStart)
	ticks1 := make([]uint64, len(ps))
	for i, p := range ps {
		ticks1[i], _ = cpuTicks(p.pid())
	}
	hb.halt()
	li2, _ := cl.leader(ctx)

	alive, err := cl.count(ctx, services)
	if err != nil {
		return err
	}
	cpu := func(i int) float64 { return float64(ticks1[i]-ticks0[i]) / clockTicks / elapsed.Seconds() * 100 }
	total := 0.0
	for i := range ps {
		total += cpu(i)
	}
	s := hb.lat.summary()
	rw := newRow("heartbeat100k", nClients, sys, float64(hb.acked.Load())/elapsed.Seconds(), s)
	rw.Extra["instances"] = nReg
	rw.Extra["lost"] = nReg - int64(alive)
	rw.Extra["not_found_before_window"] = lostBefore
	rw.Extra["not_found"] = hb.notFound.Load()
	rw.Extra["target_heartbeats_per_s"] = round2(float64(nReg) / (ttl / 3).Seconds())
	rw.Extra["requests_per_s"] = round2(float64(s.n) / elapsed.Seconds())
	rw.Extra["leader_cpu_pct"] = round2(cpu(li))
	rw.Extra["cluster_cpu_pct"] = round2(total)
	rw.Extra["register_s"] = round2(regTook.Seconds())
	rw.Extra["window_s"] = round2(elapsed.Seconds())
	if li2 != li {
		rw.Extra["leader_changed"] = 1
	}
	if isDiscoverd(sys) {
		rw.Extra["method"] = "protocol, Go client's batching (<=1024, due within TTL/12), one request in flight per client"
	} else {
		rw.Extra["method"] = fmt.Sprintf("KeepAliveOnce per lease every ~TTL/3, %d workers", nClients*loops)
	}
	b.add(rw)
	b.logf("[%s] heartbeat100k: %.0f heartbeats/s (target %.0f), %d requests, %v; lost %d of %d; leader CPU %.0f%%, cluster CPU %.0f%%",
		sys, rw.OpsPerS, rw.Extra["target_heartbeats_per_s"], s.n, s, nReg-int64(alive), nReg, cpu(li), total)
	if lost := nReg - int64(alive); lost > 0 {
		b.logf("[%s] heartbeat100k: NOTE %d instances expired although the benchmark kept heartbeating", sys, lost)
	}
	return nil
}
