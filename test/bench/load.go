package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// What the workloads share: clients, timed loops, filling a cluster with
// instances, progress lines. Each workload has a file of its own.
//
// Every loop of a workload ends on a deadline or a count, whichever comes
// first, and every call has its own timeout; ctx (Ctrl-C) ends them all
// early.

const opTimeout = 10 * time.Second

// newClients makes n clients of cl and opens their connections. sticky
// clients are spread over the nodes (client k on node k mod 3).
func newClients(ctx context.Context, cl cluster, n int, sticky bool) ([]client, error) {
	homes := make([]int, n)
	for k := range homes {
		homes[k] = k
	}
	return newClientsOn(ctx, cl, homes, sticky)
}

// newClientsOn makes a client of cl for each of homes (client k's home
// node is homes[k]) and opens their connections.
func newClientsOn(ctx context.Context, cl cluster, homes []int, sticky bool) ([]client, error) {
	n := len(homes)
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
			c, err := cl.newClient(ctx, homes[k], sticky)
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

// progress returns a fill progress reporter for a workload.
func (b *bench) progress(sys, what string) func(done, total int, took time.Duration) {
	return func(done, total int, took time.Duration) {
		b.logf("[%s] %s: registered %d of %d (%.0fs)", sys, what, done, total, took.Seconds())
	}
}

// runRow passes a row and its error through (it lets a call site read as
// one expression).
func (b *bench) runRow(r row, err error) (row, error) { return r, err }
