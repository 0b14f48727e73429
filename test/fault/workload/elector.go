package workload

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/test/fault/history"
)

// elector stands for leadership of svc with its own Go client (pointed at
// every node, kept for the whole run, so its holdings share one
// client.LastIndex): Elect with a bounded context, hold for a short random
// time or until Done closes, Resign, pause, again. Every holding is
// recorded (check.Election). The registration's TTL is short (ElectTTL),
// shorter than the client's StreamIdleTimeout: a killed, paused or cut-off
// holder is replaced within a fault's hold, and may well go on believing it
// leads meanwhile — which is what the fencing index is for.
func (w *Workload) elector(ctx context.Context, svc, name, addr string, rng *rand.Rand) {
	var servers []string
	for _, n := range w.nodes {
		servers = append(servers, n.Addr)
	}
	cl, err := client.NewWithConfig(client.Config{Servers: servers, TLS: w.cfg.ClientTLS, TTL: w.cfg.ElectTTL,
		RequestTimeout: 4 * time.Second, DialTimeout: 500 * time.Millisecond, Token: w.cfg.Token})
	if err != nil {
		return
	}
	defer cl.Close()
	// stopping ends when the clients are stopped or the run is.
	stopping, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.clientsStop:
			cancel()
		case <-stopping.Done():
		}
	}()
	for stopping.Err() == nil {
		ectx, ecancel := context.WithTimeout(stopping, 5*time.Second)
		l, err := cl.Elect(ectx, svc, addr, nil)
		won := now()
		ecancel()
		if err != nil {
			if !sleep(stopping, retry(rng)) {
				return
			}
			continue
		}
		h := history.Holding{Elector: name, Service: svc, Addr: addr, FencingIndex: l.FencingIndex(), Won: won}
		hold := time.NewTimer(200*time.Millisecond + time.Duration(rng.Int64N(int64(1300*time.Millisecond))))
		select {
		case <-l.Done():
			h.Lost, h.End = now(), "lost"
		case <-hold.C:
		case <-w.clientsStop:
		case <-ctx.Done():
			h.Lost, h.End = math.MaxInt64, "run-end"
		}
		hold.Stop()
		resigned := now() // Resign closes Done first: from here on it acts as leader no more
		// After a loss Resign only stops what is left; the run's end may
		// have cancelled ctx, so the unregistration gets its own deadline.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*w.cfg.OpTimeout)
		_ = l.Resign(rctx)
		rcancel()
		if h.End == "" {
			h.Lost, h.End = resigned, "resign"
		}
		w.mu.Lock()
		w.holdings = append(w.holdings, h)
		w.mu.Unlock()
		if !sleep(stopping, 100*time.Millisecond+time.Duration(rng.Int64N(int64(400*time.Millisecond)))) {
			return
		}
	}
}
