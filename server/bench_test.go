package server_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// latencies collects per-operation durations and reports percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration, unit string) {
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	pct := func(p float64) float64 {
		return float64(l.d[min(len(l.d)-1, int(float64(len(l.d))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), unit+"/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(l.d[len(l.d)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(0, "ns/op") // the per-op figure of a parallel run misleads; use the rate
}

// runConcurrent runs b.N operations split over n workers.
func runConcurrent(b *testing.B, n int, op func(worker, i int) error) *latencies {
	var lat latencies
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ResetTimer()
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				start := time.Now()
				if err := op(w, i); err != nil {
					errs <- err
					return
				}
				lat.add(time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return &lat
}

// BenchmarkRegister measures registrations through the Go client against an
// in-process 3-node cluster (real TCP on loopback, fsync on every node's
// bbolt log). Each worker has its own client, starting at a random node, so
// most writes are forwarded to the leader, as in production.
func BenchmarkRegister(b *testing.B) {
	for _, workers := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", workers), func(b *testing.B) {
			c := tc.New(b, tc.Options{})
			clients := make([]*client.Client, workers)
			for i := range clients {
				clients[i] = c.Client()
			}
			ctx := context.Background()
			start := time.Now()
			lat := runConcurrent(b, workers, func(w, i int) error {
				return clients[w].RegisterAddr(ctx, fmt.Sprintf("bench%d", i%100), fmt.Sprintf("10.%d.%d.%d:80", w, i/250%250, i%250), map[string]string{"i": "x"}, time.Hour)
			})
			lat.report(b, time.Since(start), "registrations")
			// Stop heartbeating the instances before the cluster stops.
			for _, cl := range clients {
				_ = cl.Close()
			}
		})
	}
}

// BenchmarkHeartbeat measures heartbeats answered by the leader (sent to it
// directly, one instance per request, from 64 concurrent connections). Each
// acknowledgement waits for a batched quorum round (see ttl/DESIGN.md).
func BenchmarkHeartbeat(b *testing.B) {
	c := tc.New(b, tc.Options{})
	leader := c.Leader()
	ctx := context.Background()
	const instances = 10000
	registerAll(b, c, ctx, instances, 16, func(i int) backend.Registration {
		return backend.Registration{Name: "hb", Addr: fmt.Sprintf("10.0.%d.%d:1", i/250, i%250), TTL: time.Hour}
	})
	const workers = 64
	conns := make([]*rpcconn.Conn, workers)
	for i := range conns {
		cn, err := rpcconn.Dial(ctx, leader.Addr, rpcconn.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer cn.Close()
		conns[i] = cn
	}
	start := time.Now()
	lat := runConcurrent(b, workers, func(w, i int) error {
		k := i % instances
		var resp wire.HeartbeatResponse
		req := &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: "hb", Addr: fmt.Sprintf("10.0.%d.%d:1", k/250, k%250)}}}
		if err := conns[w].Call(ctx, wire.MethodHeartbeat, false, req, &resp); err != nil {
			return err
		}
		return resp.Results[0].Err()
	})
	lat.report(b, time.Since(start), "heartbeats")
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkMemory_100kInstances registers 100k instances (each with two
// attributes) in an in-process 3-node cluster and reports the heap growth
// per instance, for the whole cluster and per node (all three nodes share
// this process's heap).
func BenchmarkMemory_100kInstances(b *testing.B) {
	for range b.N {
		c := tc.New(b, tc.Options{})
		ctx := context.Background()
		const n = 100000
		before := heapInUse()
		registerAll(b, c, ctx, n, 64, func(i int) backend.Registration {
			return backend.Registration{Name: fmt.Sprintf("svc%d", i%1000),
				Addr: fmt.Sprintf("10.%d.%d.%d:8080", i/62500, i/250%250, i%250), Attrs: map[string]string{"zone": "eu-1", "version": "1.2.3"}, TTL: time.Hour}
		})
		leader := c.Leader()
		c.WaitApplied(leader.Srv.FSM().AppliedIndex())
		after := heapInUse()
		per := float64(after-before) / n
		b.ReportMetric(per, "heap-B/instance-3nodes")
		b.ReportMetric(per/3, "heap-B/instance/node")
		if got := leader.Srv.Tracker().Stats().Tracked; got != n {
			b.Fatalf("tracker holds %d instances, want %d", got, n)
		}
		c.StopAll()
	}
}

// BenchmarkWatchFanout measures one change reaching 1000 watchers of its
// service, on an in-process 3-node cluster: 10 connections (to the three
// nodes in turn), 100 watch streams each. Each iteration registers one
// instance and waits until every stream has delivered it; the percentiles
// are of the time from the write's acknowledgement to its last delivery.
// Profile it with -cpuprofile to see what one delivery costs (server and
// client share the process).
func BenchmarkWatchFanout(b *testing.B) {
	const conns, perConn = 10, 100
	c := tc.New(b, tc.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		got      = map[string]int{} // addr -> deliveries
		openErrs atomic.Int64
		wg       sync.WaitGroup
	)
	ready := make(chan struct{}, conns*perConn)
	for i := range conns {
		n := c.Nodes[i%len(c.Nodes)]
		cn, err := rpcconn.Dial(ctx, n.Addr, rpcconn.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer cn.Close()
		for range perConn {
			st, err := cn.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: "fan"})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				current := false
				for {
					var evs wire.WatchEvents
					if err := st.Recv(ctx, &evs); err != nil {
						if ctx.Err() == nil {
							openErrs.Add(1)
						}
						if !current {
							ready <- struct{}{}
						}
						return
					}
					for _, e := range evs.Events {
						switch {
						case e.Kind == wire.KindCurrent && !current:
							current = true
							ready <- struct{}{}
						case e.Kind == wire.KindUp:
							mu.Lock()
							got[e.Addr]++
							if got[e.Addr] == conns*perConn {
								cond.Broadcast()
							}
							mu.Unlock()
						}
					}
				}
			}()
		}
	}
	for range conns * perConn {
		<-ready
	}
	if n := openErrs.Load(); n > 0 {
		b.Fatalf("%d watch streams failed", n)
	}
	cl := c.Client()
	defer cl.Close()
	var lat latencies
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		addr := fmt.Sprintf("10.9.%d.%d:80", i/250, i%250)
		if err := cl.RegisterAddr(ctx, "fan", addr, nil, time.Hour); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		deadline := time.AfterFunc(10*time.Second, func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
		mu.Lock()
		for got[addr] < conns*perConn && time.Since(acked) < 10*time.Second {
			cond.Wait()
		}
		n := got[addr]
		mu.Unlock()
		deadline.Stop()
		if n < conns*perConn {
			b.Fatalf("change %d reached %d of %d watchers in 10 s", i, n, conns*perConn)
		}
		lat.add(time.Since(acked))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*conns*perConn)/elapsed.Seconds(), "deliveries/s")
	lat.report(b, elapsed, "changes")
	cancel()
	wg.Wait()
}
