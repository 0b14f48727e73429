package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// The httpapi workload (README.md, "Benchmarks"; run only when named, and
// for discoverd without TLS): the HTTP API against the native protocol in
// the same run on the same cluster.
//
//   - reads: GET /v1/services/{name} against the native List, 16 workers
//     each, spread over the three nodes, a service of 10 instances;
//   - wakeups: 1000 blocking queries (?index=N&wait) waiting on a service
//     spread over the nodes, then one registration; the time from its
//     acknowledgement to each query's answer; against 1000 native watchers
//     of the same change.

const (
	httpapiReaders  = 16
	httpapiWaiters  = 1000
	httpapiRounds   = 5
	httpapiReadTime = 5 * time.Second
)

func (b *bench) httpapi(ctx context.Context, sys string, cl cluster) error {
	dc, ok := cl.(*discoverdCluster)
	if !ok || dc.tls != nil {
		b.logf("[%s] httpapi: measured for discoverd without TLS only", sys)
		return nil
	}
	readTime := httpapiReadTime
	if b.quick {
		readTime = 2 * time.Second
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: httpapiWaiters, MaxConnsPerHost: 0}}
	defer hc.CloseIdleConnections()
	native, err := dc.newClient(ctx, 0, false)
	if err != nil {
		return err
	}
	defer native.close()
	nc := native.(*dclient)
	for i := range 10 {
		if err := nc.register(ctx, &instance{service: "bench-read", addr: fmt.Sprintf("10.1.0.%d:80", i), ttl: time.Hour}, 30*time.Second); err != nil {
			return err
		}
	}
	if err := dc.waitApplied(ctx, "bench-read", 10); err != nil {
		return err
	}
	// Reads.
	lat, _, took := timedLoop(ctx, httpapiReaders, readTime, func(ctx context.Context, w, _ int) (int, error) {
		var l struct{ Instances []json.RawMessage }
		err := httpGetJSON(ctx, hc, dc.debug[w%len(dc.debug)]+"/v1/services/bench-read", &l)
		if err == nil && len(l.Instances) != 10 {
			err = fmt.Errorf("GET answered %d instances, want 10", len(l.Instances))
		}
		return 1, err
	})
	s := lat.summary()
	b.add(newRow("httpapi-read-http", httpapiReaders, sys, float64(s.n)/took.Seconds(), s))
	b.logf("[%s] httpapi: GET /v1/services/{name}: %.0f/s, p50 %.2f ms, p99 %.2f ms (%d errors)", sys, float64(s.n)/took.Seconds(), s.p50, s.p99, s.errs)
	lat, _, took = timedLoop(ctx, httpapiReaders, readTime, func(ctx context.Context, w, _ int) (int, error) {
		var resp wire.ListResponse
		err := nc.pool.Call(ctx, dc.addrs[w%len(dc.addrs)], wire.MethodList, false, &wire.ListRequest{Name: "bench-read"}, &resp)
		if err == nil && len(resp.Instances) != 10 {
			err = fmt.Errorf("List answered %d instances, want 10", len(resp.Instances))
		}
		return 1, err
	})
	s = lat.summary()
	b.add(newRow("httpapi-read-native", httpapiReaders, sys, float64(s.n)/took.Seconds(), s))
	b.logf("[%s] httpapi: native List: %.0f/s, p50 %.2f ms, p99 %.2f ms (%d errors)", sys, float64(s.n)/took.Seconds(), s.p50, s.p99, s.errs)

	// Wakeups.
	if err := b.httpapiWakeups(ctx, sys, dc, hc, nc); err != nil {
		return err
	}
	return nil
}

func (b *bench) httpapiWakeups(ctx context.Context, sys string, dc *discoverdCluster, hc *http.Client, nc *dclient) error {
	var httpLat, nativeLat []time.Duration
	var httpTook, nativeTook time.Duration
	for round := range httpapiRounds {
		svc := fmt.Sprintf("bench-wake-%d", round)
		if err := nc.register(ctx, &instance{service: svc, addr: "10.2.0.1:80", ttl: time.Hour}, 30*time.Second); err != nil {
			return err
		}
		var l wire.ListResponse
		if err := nc.persistCall(ctx, wire.MethodList, &wire.ListRequest{Name: svc, Consistent: true}, &l); err != nil {
			return err
		}
		hc.CloseIdleConnections()
		base, err := settledHTTPConns(ctx, hc, dc.debug)
		if err != nil {
			return err
		}
		// HTTP blocking queries at the current index.
		answered := make(chan time.Time, httpapiWaiters)
		errs := make(chan error, httpapiWaiters)
		var wg sync.WaitGroup
		for i := range httpapiWaiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var body struct{ Instances []json.RawMessage }
				url := fmt.Sprintf("%s/v1/services/%s?index=%d&wait=60s", dc.debug[i%len(dc.debug)], svc, l.Index)
				err := httpGetJSON(ctx, hc, url, &body)
				if err == nil && len(body.Instances) != 2 {
					err = fmt.Errorf("woken with %d instances, want 2", len(body.Instances))
				}
				if err != nil {
					errs <- err
					return
				}
				answered <- time.Now()
			}()
		}
		// Native watchers of the same service.
		watchers := make([]watcher, httpapiWaiters)
		wclients := make([]*dclient, 10)
		for i := range wclients {
			c, _ := dc.newClient(ctx, i, true)
			wclients[i] = c.(*dclient)
		}
		for i := range watchers {
			w, err := wclients[i%len(wclients)].watch(ctx, svc)
			if err != nil {
				return err
			}
			watchers[i] = w
		}
		// Every blocking query is waiting once the HTTP listeners hold
		// 1000 requests; a fixed pause is not that, so wait for the
		// metrics to show the connections.
		if err := waitHTTPConns(ctx, hc, dc.debug, base+httpapiWaiters); err != nil {
			return err
		}
		seen := make(chan time.Time, httpapiWaiters)
		for _, w := range watchers {
			go func() {
				if addr, err := w.next(ctx); err == nil && addr == "10.2.0.2:80" {
					seen <- time.Now()
				} else {
					seen <- time.Time{}
				}
			}()
		}
		if err := nc.register(ctx, &instance{service: svc, addr: "10.2.0.2:80", ttl: time.Hour}, 30*time.Second); err != nil {
			return err
		}
		acked := time.Now()
		var lastHTTP, lastNative time.Time
		for range httpapiWaiters {
			select {
			case t := <-answered:
				httpLat = append(httpLat, t.Sub(acked))
				lastHTTP = maxTime(lastHTTP, t)
			case err := <-errs:
				return fmt.Errorf("blocking query: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for range httpapiWaiters {
			t := <-seen
			if t.IsZero() {
				return fmt.Errorf("a native watcher did not see the change")
			}
			nativeLat = append(nativeLat, t.Sub(acked))
			lastNative = maxTime(lastNative, t)
		}
		wg.Wait()
		httpTook += lastHTTP.Sub(acked)
		nativeTook += lastNative.Sub(acked)
		for _, w := range watchers {
			w.close()
		}
		for _, c := range wclients {
			c.close()
		}
	}
	for _, m := range []struct {
		workload string
		lat      []time.Duration
		took     time.Duration
	}{{"httpapi-wakeup-http", httpLat, httpTook}, {"httpapi-wakeup-native-watch", nativeLat, nativeTook}} {
		s := summarize(m.lat)
		perS := float64(len(m.lat)) / m.took.Seconds()
		b.add(newRow(m.workload, httpapiWaiters, sys, perS, s))
		b.logf("[%s] httpapi: %s: %d waiting, %.0f wakeups/s (acknowledgement → last answer), p50 %.2f ms, p99 %.2f ms", sys, m.workload, httpapiWaiters, perS, s.p50, s.p99)
	}
	return nil
}

func summarize(d []time.Duration) summary {
	l := &latencies{all: slices.Clone(d)}
	return l.summary()
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func httpGetJSON(ctx context.Context, hc *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitHTTPConns waits until the nodes' HTTP listeners hold at least n
// connections together.
func waitHTTPConns(ctx context.Context, hc *http.Client, bases []string, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		total, err := httpConns(ctx, hc, bases)
		if err != nil || total >= n {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d connections reached the nodes in 60 s", total, n)
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// settledHTTPConns is httpConns once it reads the same twice 100 ms apart
// (at most 5 s): connections the client just closed are still counted
// until each node has seen them end, and a base counted too high made the
// wait for the waiters' connections fail.
func settledHTTPConns(ctx context.Context, hc *http.Client, bases []string) (int, error) {
	prev, err := httpConns(ctx, hc, bases)
	for deadline := time.Now().Add(5 * time.Second); err == nil && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		var n int
		if n, err = httpConns(ctx, hc, bases); err == nil && n == prev {
			return n, nil
		}
		prev = n
	}
	return prev, err
}

// httpConns sums discoverd_connections{kind="http"} over the nodes, less
// the scrapes' own connections.
func httpConns(ctx context.Context, hc *http.Client, bases []string) (int, error) {
	total := 0
	for _, base := range bases {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			var v float64
			if _, err := fmt.Sscanf(line, `discoverd_connections{kind="http"} %g`, &v); err == nil {
				total += int(v) - 1
			}
		}
	}
	return total, nil
}
