package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The watch workload (README.md, "Benchmarks"), and the watch measurement
// the replicas workload shares with it.

// watchEvents is how many registrations a watch measurement makes, 100 ms
// apart.
const watchEvents = 20

func (b *bench) watch(ctx context.Context, sys string, cl cluster) error {
	counts := []int{100, 1000}
	if b.quick {
		counts = []int{100}
	}
	for _, nw := range counts {
		// 10 connections over the three nodes (4, 3, 3), a random node per
		// write: the layout of every earlier run.
		run := watchRun{workload: "watch", watchers: nw, spread: watchSpread{nodes: []int{0, 1, 2}, conns: 10}, events: watchEvents}
		if err := b.watchOnce(ctx, sys, cl, run); err != nil {
			return err
		}
	}
	return nil
}

// watchRun is one watch measurement: watchers of a new service spread over
// some of the nodes, events registrations 100 ms apart through one writer.
type watchRun struct {
	workload string // the row's
	layout   string // the nodes' layout, said in the row and the log ("": none)
	watchers int
	spread   watchSpread
	events   int
	// writeToLeader: the writer's calls go to the leader (discoverd); else
	// each to a random node.
	writeToLeader bool
}

// watchSpread places watchers on nodes: connection k is on node
// nodes[k mod len(nodes)], watcher j on connection j mod conns.
type watchSpread struct {
	nodes []int // indexes of the nodes the watchers read from
	conns int
}

func (s watchSpread) home(k int) int { return s.nodes[k%len(s.nodes)] }

// node returns the node watcher j reads from.
func (s watchSpread) node(j int) int { return s.home(j % s.conns) }

// spreadEvenly spreads nw watchers over nodes, at most perConn on one
// connection, with as many connections on every node (a multiple of
// len(nodes)), so that the nodes' watcher counts differ by one at most.
func spreadEvenly(nw int, nodes []int, perConn int) watchSpread {
	perNode := (nw + len(nodes) - 1) / len(nodes)
	return watchSpread{nodes: nodes, conns: len(nodes) * max(1, (perNode+perConn-1)/perConn)}
}

// nodeRoles says what each of a discoverd cluster's nodes is: leader,
// follower (a voter) or nonvoter; nil for another system.
func nodeRoles(ctx context.Context, cl cluster) ([]string, error) {
	dc, ok := cl.(*discoverdCluster)
	if !ok {
		return nil, nil
	}
	roles := make([]string, len(dc.addrs))
	for i := range dc.addrs {
		st, err := dc.nodeInfo(ctx, i)
		if err != nil {
			return nil, err
		}
		switch {
		case st.State == "Leader":
			roles[i] = "leader"
		case st.Voter:
			roles[i] = "follower"
		default:
			roles[i] = "nonvoter"
		}
	}
	if !slices.Contains(roles, "leader") {
		return nil, errors.New("no node reports state Leader")
	}
	return roles, nil
}

func (b *bench) watchOnce(ctx context.Context, sys string, cl cluster, run watchRun) error {
	nw, events, conns := run.watchers, run.events, run.spread.conns
	what := fmt.Sprintf("%s %d watchers", run.workload, nw)
	if run.layout != "" {
		what += " (" + run.layout + ")"
	}
	service := fmt.Sprintf("watch-%d-%d", nw, b.nextID())
	// Followers apply an entry only once the leader tells them it is
	// committed: latencies are split by the role of the watcher's node.
	roles, err := nodeRoles(ctx, cl)
	if err != nil {
		return err
	}
	homes := make([]int, conns)
	for k := range homes {
		homes[k] = run.spread.home(k)
	}
	clients, err := newClientsOn(ctx, cl, homes, true)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	var writers []client
	if run.writeToLeader && roles != nil {
		writers, err = newClientsOn(ctx, cl, []int{slices.Index(roles, "leader")}, true)
	} else {
		writers, err = newClients(ctx, cl, 1, false)
	}
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

	cpu := startCPU(cl.procs())
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
	serverCPU, _ := cpu.pct()
	clientCPU := cpu.clientPct()
	stopWatch()
	rwg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}

	lat := &latencies{}
	r := lat.worker()
	byRole := map[string]*latencies{}
	recs := map[string]*rec{}
	for _, i := range run.spread.nodes {
		if roles == nil {
			break
		}
		if role := roles[i]; byRole[role] == nil {
			byRole[role] = &latencies{}
			recs[role] = byRole[role].worker()
		}
	}
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
			if roles != nil {
				recs[roles[run.spread.node(j)]].ok(d)
			}
			if t.After(last) {
				last = t
			}
		}
	}
	r.flush()
	for _, rr := range recs {
		rr.flush()
	}
	s := lat.summary()
	missing := int(want) - s.n
	rw := newRow(run.workload, nw, sys, float64(s.n)/last.Sub(start).Seconds(), s)
	rw.Extra["watchers"] = nw
	rw.Extra["events"] = events
	rw.Extra["connections"] = conns
	rw.Extra["watched_nodes"] = len(run.spread.nodes)
	rw.Extra["missing"] = missing
	rw.Extra["before_ack"] = early
	rw.Extra["server_cpu_pct"] = serverCPU
	rw.Extra["client_cpu_pct"] = clientCPU
	if run.layout != "" {
		rw.Extra["layout"] = run.layout
	}
	var perRole []string
	for _, role := range []string{"leader", "follower", "nonvoter"} {
		if l := byRole[role]; l != nil {
			sr := l.summary()
			rw.Extra[role+"_p50_ms"], rw.Extra[role+"_p99_ms"] = sr.p50, sr.p99
			perRole = append(perRole, fmt.Sprintf("on the %s(s): %v", role, sr))
		}
	}
	if len(perRole) > 0 {
		b.vlogf("[%s] %s: watchers %s", sys, what, strings.Join(perRole, "; "))
	}
	if n := watchErrs.Load(); n > 0 {
		rw.Extra["watch_errors"] = n
		rw.Extra["first_watch_error"] = firstWatchErr.Load()
	}
	b.add(rw)
	b.logf("[%s] %s x %d events over %d connections: %d deliveries, write ack → event %v (%d before the ack)", sys, what, events, conns, s.n, s, early)
	if missing > 0 {
		b.failf("[%s] %s: %d of %d (watcher, event) deliveries MISSING (watch errors: %d, first: %v)",
			sys, what, missing, want, watchErrs.Load(), firstWatchErr.Load())
	}
	return nil
}
