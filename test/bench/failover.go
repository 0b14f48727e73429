package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The failover workload (README.md, "Benchmarks").

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
	res.victim, res.killed = li, victim.Name()
	b.vlogf("[%s] failover: SIGKILL %s at %s (compare with the servers' logs)", sys, victim.Name(), kill.UTC().Format("15:04:05.000"))

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
