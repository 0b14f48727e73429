package main

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Every loop below ends on a deadline or a count, whichever comes first,
// and every call has its own timeout; ctx (Ctrl-C) ends them all early.

const opTimeout = 10 * time.Second

// newClients makes n clients of cl and opens their connections. sticky
// clients are spread over the nodes (client k on node k mod 3).
func newClients(ctx context.Context, cl cluster, n int, sticky bool) ([]client, error) {
	out := make([]client, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := cl.newClient(ctx, k, sticky)
			if err != nil {
				errs[k] = err
				return
			}
			out[k] = c
			wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			errs[k] = c.warm(wctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeClients(out)
		return nil, fmt.Errorf("open clients: %w", err)
	}
	return out, nil
}

func closeClients(cs []client) {
	for _, c := range cs {
		if c != nil {
			c.close()
		}
	}
}

// timedLoop calls op from workers goroutines (worker w's i-th call is op(ctx,
// w, i), bounded by opTimeout) until dur has passed, and returns the
// latencies of the calls that succeeded, the sum of what they returned, and
// how long it all took.
func timedLoop(ctx context.Context, workers int, dur time.Duration, op func(ctx context.Context, w, i int) (int, error)) (*latencies, int64, time.Duration) {
	lat := &latencies{}
	var sum atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := lat.worker()
			defer r.flush()
			for i := 0; i < 100_000_000 && ctx.Err() == nil && time.Now().Before(deadline); i++ {
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				t0 := time.Now()
				n, err := op(octx, w, i)
				d := time.Since(t0)
				cancel()
				if err != nil {
					r.fail(err)
					continue
				}
				r.ok(d)
				sum.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	return lat, sum.Load(), time.Since(start)
}

// fill registers ins with workers concurrent registrations over clients
// (worker w uses clients[w mod len]); each registration is retried across
// nodes for up to 30 s. onDone, if set, runs after each success; progress,
// if set, is called every 10 s. It returns
// the latencies of the successful registrations and how long it took.
func fill(ctx context.Context, clients []client, ins []*instance, workers int, bound time.Duration, onDone func(*instance), progress func(done, total int, took time.Duration)) (*latencies, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	lat := &latencies{}
	var next, done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	if progress != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(10 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					progress(int(done.Load()), len(ins), time.Since(start))
				case <-stop:
					return
				}
			}
		}()
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := lat.worker()
			defer r.flush()
			cli := clients[w%len(clients)]
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(ins) {
					return
				}
				t0 := time.Now()
				if err := cli.register(ctx, ins[i], 30*time.Second); err != nil {
					r.fail(err)
					continue
				}
				r.ok(time.Since(t0))
				done.Add(1)
				if onDone != nil {
					onDone(ins[i])
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	s := lat.summary()
	if s.n < len(ins) {
		return lat, took, fmt.Errorf("registered %d of %d instances in %v (%d errors, first: %s)", s.n, len(ins), took.Round(time.Millisecond), s.errs, s.firstErr)
	}
	return lat, took, nil
}

// ---------------------------------------------------------------------------
// 1. registration

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

// ---------------------------------------------------------------------------
// 2. heartbeat

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
		lat, acked, elapsed := timedLoop(ctx, W, dur, beat)
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
	if sys != "discoverd" {
		rw.Extra["routing"] = "clientv3 balances over the 3 endpoints; KeepAliveOnce of the instance's own lease"
	}
	b.add(rw)

	if sys != "discoverd" {
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

// progress returns a fill progress reporter for a workload.
func (b *bench) progress(sys, what string) func(done, total int, took time.Duration) {
	return func(done, total int, took time.Duration) {
		b.logf("[%s] %s: registered %d of %d (%.0fs)", sys, what, done, total, took.Seconds())
	}
}

// runRow passes a row and its error through (it lets a call site read as
// one expression).
func (b *bench) runRow(r row, err error) (row, error) { return r, err }

// ---------------------------------------------------------------------------
// 3. heartbeat100k

// hbQueue holds one client's instances by their next heartbeat time.
type hbQueue struct {
	mu sync.Mutex
	h  hbHeap
}

type hbHeap []*instance

func (h hbHeap) Len() int           { return len(h) }
func (h hbHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h hbHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *hbHeap) Push(x any) {
	in := x.(*instance)
	in.idx = len(*h)
	*h = append(*h, in)
}
func (h *hbHeap) Pop() any {
	old := *h
	in := old[len(old)-1]
	*h = old[:len(old)-1]
	return in
}

func (q *hbQueue) push(in *instance) {
	q.mu.Lock()
	heap.Push(&q.h, in)
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
	if wait := q.h[0].next.Sub(now); wait > 0 {
		return nil, wait
	}
	var out []*instance
	for len(out) < max && q.h.Len() > 0 && q.h[0].next.Sub(now) <= slack {
		out = append(out, heap.Pop(&q.h).(*instance))
	}
	return out, 0
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
	if sys != "discoverd" {
		loops, slack, maxBatch = 32, 0, 1
	}
	clients, err := newClients(ctx, cl, nClients, true)
	if err != nil {
		return err
	}
	defer closeClients(clients)

	var (
		phase      atomic.Int32 // 0 registering, 1 measuring
		acked      atomic.Int64 // in the window
		notFound   atomic.Int64
		registered atomic.Int64
		lat        = &latencies{}
		hbWG       sync.WaitGroup
	)
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	queues := make([]*hbQueue, nClients)
	for k := range nClients {
		queues[k] = &hbQueue{}
		for range loops {
			hbWG.Add(1)
			go func() {
				defer hbWG.Done()
				r := lat.worker()
				defer r.flush()
				cli, q := clients[k], queues[k]
				for i := 0; i < 100_000_000 && hbCtx.Err() == nil; i++ {
					batch, wait := q.popDue(time.Now(), slack, maxBatch)
					if len(batch) == 0 {
						sleepCtx(hbCtx, min(wait, 50*time.Millisecond))
						continue
					}
					rctx, cancel := context.WithTimeout(hbCtx, ttl/3)
					t0 := time.Now()
					nf, err := cli.heartbeat(rctx, batch)
					now := time.Now()
					cancel()
					measuring := phase.Load() == 1
					if err != nil {
						if hbCtx.Err() != nil {
							return
						}
						if measuring {
							r.fail(err)
						}
						for _, in := range batch {
							in.next = now.Add(retryDelay())
							q.push(in)
						}
						continue
					}
					if measuring {
						r.ok(now.Sub(t0))
					}
					for j, in := range batch {
						if nf[j] {
							in.lost = true // expired; the Go client would register it again
							notFound.Add(1)
							continue
						}
						if measuring {
							acked.Add(1)
						}
						in.next = now.Add(jitter(ttl / 3))
						q.push(in)
					}
				}
			}()
		}
	}

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
				in.next = time.Now().Add(jitter(ttl / 3))
				registered.Add(1)
				queues[k].push(in)
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
	lostBefore := notFound.Load()
	phase.Store(1)
	winStart := time.Now()
	sleepCtx(ctx, window)
	if err := ctx.Err(); err != nil {
		return err
	}
	phase.Store(2)
	elapsed := time.Since(winStart)
	ticks1 := make([]uint64, len(ps))
	for i, p := range ps {
		ticks1[i], _ = cpuTicks(p.pid())
	}
	stopHB()
	hbWG.Wait()
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
	s := lat.summary()
	rw := newRow("heartbeat100k", nClients, sys, float64(acked.Load())/elapsed.Seconds(), s)
	rw.Extra["instances"] = nReg
	rw.Extra["lost"] = nReg - int64(alive)
	rw.Extra["not_found_before_window"] = lostBefore
	rw.Extra["not_found"] = notFound.Load()
	rw.Extra["target_heartbeats_per_s"] = round2(float64(nReg) / (ttl / 3).Seconds())
	rw.Extra["requests_per_s"] = round2(float64(s.n) / elapsed.Seconds())
	rw.Extra["leader_cpu_pct"] = round2(cpu(li))
	rw.Extra["cluster_cpu_pct"] = round2(total)
	rw.Extra["register_s"] = round2(regTook.Seconds())
	rw.Extra["window_s"] = round2(elapsed.Seconds())
	if li2 != li {
		rw.Extra["leader_changed"] = 1
	}
	if sys == "discoverd" {
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

// ---------------------------------------------------------------------------
// 4. watch

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
	if sys == "discoverd" {
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
	if sys == "discoverd" {
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

// ---------------------------------------------------------------------------
// 5. failover

func (b *bench) failover(ctx context.Context, sys string, cl cluster) error {
	rounds := 5
	if b.quick {
		rounds = 1
	}
	var res []failoverResult
	for round := range rounds {
		r, err := b.failoverRound(ctx, sys, cl)
		if err != nil {
			return err
		}
		res = append(res, r)
		b.logf("[%s] failover %d/%d: killed %s; outage %.0f ms, max gap %.0f ms; steady %.0f ops/s (%v); %d writes after the kill, %d gave up",
			sys, round+1, rounds, r.killed, ms(r.outage), ms(r.maxGap), r.steadyOps, r.steady, r.after, r.gaveUp)
		if r.outage < 0 {
			b.failf("[%s] failover: no write started after the kill succeeded", sys)
		}
		if round < rounds-1 {
			// Bring the killed node back and let the cluster settle.
			if err := cl.restart(ctx, r.victim); err != nil {
				return fmt.Errorf("restart %s: %w", r.killed, err)
			}
		}
	}
	outages := make([]time.Duration, len(res))
	var outagesMS, gapsMS []float64
	var killed []string
	lat := &latencies{}
	rec := lat.worker()
	steadySum, maxGap, gaveUp, after := 0.0, time.Duration(0), 0, 0
	for i, r := range res {
		outages[i] = r.outage
		outagesMS = append(outagesMS, ms(r.outage))
		gapsMS = append(gapsMS, ms(r.maxGap))
		killed = append(killed, r.killed)
		rec.d = append(rec.d, r.steadyLat...)
		steadySum += r.steadyOps
		maxGap = max(maxGap, r.maxGap)
		gaveUp += r.gaveUp
		after += r.after
	}
	rec.flush()
	slices.Sort(outages)
	median := outages[len(outages)/2]
	s := lat.summary()
	rw := newRow("failover", failoverWriters, sys, steadySum/float64(len(res)), s)
	rw.Max = ms(outages[len(outages)-1])
	rw.Extra["outage_ms"] = ms(median)
	rw.Extra["outages_ms"] = outagesMS
	rw.Extra["max_gap_ms"] = ms(maxGap)
	rw.Extra["max_gaps_ms"] = gapsMS
	rw.Extra["killed"] = killed
	rw.Extra["kills"] = len(res)
	rw.Extra["writes_after_kill"] = after
	rw.Extra["gave_up"] = gaveUp
	rw.Extra["attempt_timeout_ms"] = 5000
	rw.Extra["definition"] = "outage: kill -> first ack of a write started after the kill (median of the kills; max_ms is the worst); max_gap: longest time between consecutive acks of one writer; p50/p99: write latency before the kills"
	b.add(rw)
	b.logf("[%s] failover: outage median %.0f ms over %d kills %v; max gap %.0f ms", sys, ms(median), len(res), outagesMS, ms(maxGap))
	return nil
}

const failoverWriters = 16

// failoverResult is one leader kill under write load.
type failoverResult struct {
	victim         int
	killed         string
	outage, maxGap time.Duration // outage < 0: no write after the kill succeeded
	steadyOps      float64
	steady         summary
	steadyLat      []time.Duration
	after, gaveUp  int
}

// failoverRound runs failoverWriters writers for a steady period, SIGKILLs
// the leader, and runs on until every writer has had a write it started
// after the kill acknowledged (plus 2 s, at most 37 s after the kill).
func (b *bench) failoverRound(ctx context.Context, sys string, cl cluster) (failoverResult, error) {
	const (
		W       = failoverWriters
		steady  = 5 * time.Second
		persist = 30 * time.Second
	)
	var res failoverResult
	clients, err := newClients(ctx, cl, W, false)
	if err != nil {
		return res, err
	}
	defer closeClients(clients)

	type op struct{ start, ack time.Time }
	ops := make([][]op, W)
	gaveUp := make([]int, W)
	var firstErr atomic.Value
	// killedAt is the kill's time (Unix ns), 0 before; recovered counts the
	// writers that have had a write started after the kill acknowledged.
	var killedAt, recovered atomic.Int64
	runCtx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range W {
		wg.Add(1)
		go func() {
			defer wg.Done()
			back := false
			for i := 0; i < 10_000_000 && runCtx.Err() == nil; i++ {
				n := b.nextID()
				in := &instance{service: fmt.Sprintf("fo-%02d", n%16), addr: addrOf(n), ttl: time.Hour}
				t0 := time.Now()
				if err := clients[w].register(runCtx, in, persist); err != nil {
					if runCtx.Err() == nil {
						gaveUp[w]++
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				ops[w] = append(ops[w], op{t0, time.Now()})
				if k := killedAt.Load(); k != 0 && t0.UnixNano() >= k && !back {
					back = true
					recovered.Add(1)
				}
			}
		}()
	}
	sleepCtx(ctx, steady)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	li, err := cl.leader(ctx)
	if err != nil {
		return res, err
	}
	victim := cl.procs()[li]
	kill := time.Now()
	killedAt.Store(kill.UnixNano())
	if err := victim.kill(); err != nil {
		return res, err
	}
	res.victim, res.killed = li, victim.name
	b.vlogf("[%s] failover: SIGKILL %s at %s (compare with the servers' logs)", sys, victim.name, kill.UTC().Format("15:04:05.000"))

	// ops[w] is only read after the writers stop.
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
	}()
	for end := kill.Add(persist + 5*time.Second); recovered.Load() < W && time.Now().Before(end) && ctx.Err() == nil; {
		sleepCtx(ctx, 20*time.Millisecond)
	}
	sleepCtx(ctx, 2*time.Second)
	stopWriters()
	select {
	case <-done:
	case <-time.After(persist + 10*time.Second):
		return res, errors.New("failover writers did not stop")
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	lat := &latencies{}
	r := lat.worker()
	before := 0
	res.outage = -1
	var lastAck time.Time
	for w := range W {
		var prev time.Time
		for _, o := range ops[w] {
			if o.ack.Before(kill) {
				before++
				r.ok(o.ack.Sub(o.start))
			} else {
				res.after++
				if !o.start.Before(kill) {
					if d := o.ack.Sub(kill); res.outage < 0 || d < res.outage {
						res.outage = d
					}
				}
			}
			if !prev.IsZero() && o.ack.Sub(prev) > res.maxGap {
				res.maxGap = o.ack.Sub(prev)
			}
			prev = o.ack
			if o.ack.After(lastAck) {
				lastAck = o.ack
			}
		}
	}
	res.steadyLat = r.d
	r.flush()
	res.steady = lat.summary()
	res.steadyOps = float64(before) / kill.Sub(start).Seconds()
	for _, n := range gaveUp {
		res.gaveUp += n
	}
	if res.gaveUp > 0 {
		b.logf("[%s] failover: %d writes gave up after %v; first error: %v", sys, res.gaveUp, persist, firstErr.Load())
	}
	return res, nil
}

// ---------------------------------------------------------------------------
// 6. memory

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
	measure := func() (heap, rss []uint64, err error) {
		heap, rss = make([]uint64, len(ps)), make([]uint64, len(ps))
		for i, p := range ps {
			if heap[i], err = cl.heapInuse(ctx, i); err != nil {
				return nil, nil, err
			}
			if rss[i], err = rssBytes(p.pid()); err != nil {
				return nil, nil, err
			}
		}
		return heap, rss, nil
	}
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
		if sys != "discoverd" {
			rw.Extra["layout"] = "one lease per instance, as discoverd's etcd backend"
		}
		b.add(rw)
		b.logf("[%s] memory %d instances: heap %.0f B/instance, RSS %.0f B/instance (per node, mean of 3); registered at %.0f/s, %v",
			sys, target, rw.Extra["heap_bytes_per_instance"], rw.Extra["rss_bytes_per_instance"], rw.OpsPerS, s)
	}
	return nil
}
