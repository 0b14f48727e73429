package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The scale workload (README.md, "Benchmarks"; "A million instances"):
// discoverd alone, full mode only.
//
//  1. A fresh 3-node cluster (with scaleServerArgs); each node's heap and
//     RSS.
//  2. -scale-instances instances (default 1 000 000) with the default TTL of
//     10 s are registered by scaleClients clients, scaleRegWorkers
//     registrations in flight each, the clients spread over the leader and
//     one follower; every instance joins its client's heartbeat queue once
//     registered, heartbeated as the Go client does (heartbeater).
//  3. The other follower is killed (SIGKILL) once scaleKillAt of the
//     instances are registered.
//  4. For -scale-duration (default 2 minutes) the heartbeats are measured,
//     and meanwhile: (a) the leader takes a snapshot (SnapshotSave's first
//     frame; the snapshot store's newest): its size and time; (b) the
//     killed follower is started again: the time until it answers, until
//     its applied index reaches the leader's — by snapshot install, as the
//     leader's log no longer reaches back to where it stopped — and until
//     it is ready; (c) the watch measurement with 100 watchers over the
//     three nodes (row scale-watch).
//  5. At the end, heartbeats still going: the instances every node holds
//     and a consistent List finds, the expiries every node counted
//     (/metrics: any is a lost instance), and each node's heap and RSS.

const (
	scaleTTL        = 10 * time.Second
	scaleClients    = 32   // heartbeat loops (one client, one request in flight each)
	scaleRegWorkers = 8    // registrations in flight per client while loading
	scalePerService = 1000 // instances per service
	scaleWatchers   = 100
	// scaleKillAt is the share of the instances registered when a follower
	// is killed: the leader and the other follower register the rest, a
	// quorum of two with no room for a stall. (Killed before the load, on
	// a machine other jobs loaded, it cost a run two leader changes to
	// stalls and 21 612 of the 838 671 instances registered by then.)
	scaleKillAt = 0.75
	// scaleBytesPerInstance is the memory the workload wants free per
	// instance: three nodes' RSS (~1.5 KB each at 100 000 instances, more
	// while loading) and the bench's own, with room.
	scaleBytesPerInstance = 8 << 10
)

// scaleServerArgs are the scale cluster's own flags. -trailing-logs 256
// instead of 10 240: the registrations the killed follower misses (a
// quarter of a million), grouped up to 256 to a log entry, are at least
// 977 entries, which the default would keep after the snapshot — the
// follower would replay the log instead of being sent the snapshot. A node
// down through more writes than the setting keeps is sent the snapshot
// whatever the setting; this makes the workload measure that case.
var scaleServerArgs = []string{"-trailing-logs", "256"}

// scaleResult is what a scale run measured beside the heartbeats.
type scaleResult struct {
	snapTaken              time.Duration // SnapshotSave: to its first frame
	snapFile               uint64        // the backup file's bytes
	snapState              int64         // the snapshot store's state.bin, bytes
	snapPersist            time.Duration // the snapshot store's: created → meta.json written
	snapIndex              uint64
	answered, caught, rdy  time.Duration // the follower, from its restart
	followerSnap           uint64        // its snapshot index once caught up
	byInstall              bool
	leaderIndex, lastIndex uint64
}

func (b *bench) scale(ctx context.Context, sys string, cl cluster) error {
	dc, ok := cl.(*discoverdCluster)
	if !ok {
		return errors.New("scale: discoverd only")
	}
	N, window := b.scaleInstances, b.scaleDuration
	if avail, err := memAvailable(); err == nil && avail < uint64(N)*scaleBytesPerInstance {
		return fmt.Errorf("scale: %d instances want about %d MiB free, the machine has %d MiB available (try -scale-instances %d)",
			N, uint64(N)*scaleBytesPerInstance>>20, avail>>20, avail/scaleBytesPerInstance/1000*1000)
	}
	ps := dc.ps
	sleepCtx(ctx, 3*time.Second)
	heap0, rss0, err := memOf(ctx, cl)
	if err != nil {
		return err
	}
	li, err := cl.leader(ctx)
	if err != nil {
		return err
	}
	down, up := (li+1)%3, (li+2)%3
	killAt := int64(float64(N) * scaleKillAt)
	var killErr error
	killed := make(chan struct{})
	kill := func() {
		defer close(killed)
		if l, err := cl.leader(ctx); err == nil && l == down {
			// The leadership moved to the node to be killed: kill the
			// old leader, a follower now (its clients' calls fail over).
			b.logf("[%s] scale: the leadership moved to %s; killing %s instead", sys, dc.ids[down], dc.ids[li])
			down = li
		}
		if killErr = ps[down].kill(); killErr == nil {
			b.logf("[%s] scale: killed follower %s with %d of %d instances registered", sys, dc.ids[down], killAt, N)
		}
	}

	homes := make([]int, scaleClients)
	for k := range homes {
		homes[k] = []int{li, up}[k%2]
	}
	clients, err := newClientsOn(ctx, cl, homes, true)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	hb := startHeartbeater(ctx, clients, 1, scaleTTL, scaleTTL/12, 1024)
	defer hb.halt()

	// Register: instance i is client i mod scaleClients's, of service
	// scale-<i/scalePerService>.
	nServices := (N + scalePerService - 1) / scalePerService
	services := make([]string, nServices)
	for s := range services {
		services[s] = fmt.Sprintf("scale-%04d", s)
	}
	own := make([][]*instance, scaleClients)
	for i := range N {
		own[i%scaleClients] = append(own[i%scaleClients], &instance{service: services[i/scalePerService], addr: addrOf(b.nextID()), ttl: scaleTTL})
	}
	var registered atomic.Int64
	regStart := time.Now()
	regErrs := make([]error, scaleClients)
	var regWG sync.WaitGroup
	for k := range scaleClients {
		regWG.Add(1)
		go func() {
			defer regWG.Done()
			_, _, regErrs[k] = fill(ctx, clients[k:k+1], own[k], scaleRegWorkers, 15*time.Minute, func(in *instance) {
				if registered.Add(1) == killAt {
					go kill()
				}
				hb.add(k, in)
			}, nil)
		}()
	}
	regDone := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		lastReg, lastHB, last := int64(0), int64(0), regStart
		for {
			select {
			case now := <-tick.C:
				r, h := registered.Load(), hb.total.Load()
				secs := now.Sub(last).Seconds()
				b.logf("[%s] scale: registered %d of %d (%.0f/s), heartbeats %.0f/s, not found %d, failed requests %d (%.0fs)",
					sys, r, N, float64(r-lastReg)/secs, float64(h-lastHB)/secs, hb.notFound.Load(), hb.failed.Load(), now.Sub(regStart).Seconds())
				lastReg, lastHB, last = r, h, now
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
	nReg := registered.Load()
	if err := errors.Join(regErrs...); err != nil {
		return fmt.Errorf("scale: registered %d of %d: %w", nReg, N, err)
	}
	<-killed
	if killErr != nil {
		return fmt.Errorf("kill follower %s: %w", dc.ids[down], killErr)
	}
	if li, err = cl.leader(ctx); err != nil {
		return err
	}
	up = 3 - li - down
	b.logf("[%s] scale: registered %d instances (TTL %v) in %.1fs (%.0f/s), not found so far %d; measuring for %v",
		sys, nReg, scaleTTL, regTook.Seconds(), float64(nReg)/regTook.Seconds(), hb.notFound.Load(), window)

	// The window.
	live := []int{li, up}
	ticks0 := map[int]uint64{}
	for _, i := range live {
		ticks0[i], _ = cpuTicks(ps[i].pid())
	}
	self0, _ := cpuTicks(os.Getpid())
	notFound0 := hb.notFound.Load()
	hb.measuring.Store(true)
	winStart := time.Now()
	var res scaleResult
	var errs []error
	if err := b.scaleSnapshot(ctx, sys, dc, li, &res); err != nil {
		errs = append(errs, err)
	}
	var restarted time.Time
	if err := b.scaleCatchUp(ctx, sys, dc, li, down, &res, &restarted); err != nil {
		errs = append(errs, err)
	}
	if ctx.Err() == nil {
		run := watchRun{workload: "scale-watch", watchers: scaleWatchers, spread: watchSpread{nodes: []int{0, 1, 2}, conns: 10}, events: watchEvents}
		if err := b.watchOnce(ctx, sys, cl, run); err != nil {
			errs = append(errs, fmt.Errorf("watch: %w", err))
		}
	}
	sleepCtx(ctx, time.Until(winStart.Add(window)))
	if err := ctx.Err(); err != nil {
		return err
	}
	hb.measuring.Store(false)
	elapsed := time.Since(winStart)
	cpu := map[int]float64{}
	for _, i := range live {
		t, _ := cpuTicks(ps[i].pid())
		cpu[i] = round2(float64(t-ticks0[i]) / clockTicks / elapsed.Seconds() * 100)
	}
	self1, _ := cpuTicks(os.Getpid())
	if !restarted.IsZero() {
		t, _ := cpuTicks(dc.ps[down].pid())
		cpu[down] = round2(float64(t) / clockTicks / time.Since(restarted).Seconds() * 100)
	}

	// The end, heartbeats still going: what every node holds.
	holds := make([]float64, 3)
	expired := make([]float64, 3)
	for i := range 3 {
		m, err := dc.metrics(ctx, i, `discoverd_instances`, `discoverd_instances_removed_total{reason="expired"}`)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		holds[i], expired[i] = m[`discoverd_instances`], m[`discoverd_instances_removed_total{reason="expired"}`]
	}
	alive, err := cl.count(ctx, services)
	if err != nil {
		errs = append(errs, err)
	}
	heap1, rss1, err := memOf(ctx, cl)
	if err != nil {
		errs = append(errs, err)
	}
	hb.halt()
	li2, _ := cl.leader(ctx)

	s := hb.lat.summary()
	rw := newRow("scale", scaleClients, sys, float64(hb.acked.Load())/elapsed.Seconds(), s)
	lost := nReg - int64(alive)
	maxExpired := 0.0
	for _, e := range expired {
		maxExpired = max(maxExpired, e)
	}
	rw.Extra["instances"] = nReg
	rw.Extra["services"] = nServices
	rw.Extra["lost"] = lost
	rw.Extra["expired_per_node"] = expired
	rw.Extra["instances_per_node"] = holds
	rw.Extra["not_found"] = hb.notFound.Load()
	rw.Extra["not_found_in_window"] = hb.notFound.Load() - notFound0
	rw.Extra["failed_requests"] = hb.failed.Load()
	rw.Extra["target_heartbeats_per_s"] = round2(float64(nReg) / (scaleTTL / 3).Seconds())
	rw.Extra["requests_per_s"] = round2(float64(s.n) / elapsed.Seconds())
	rw.Extra["register_s"] = round2(regTook.Seconds())
	rw.Extra["register_per_s"] = round2(float64(nReg) / regTook.Seconds())
	rw.Extra["window_s"] = round2(elapsed.Seconds())
	rw.Extra["leader"] = dc.ids[li]
	roles := make([]string, 3) // the per-node arrays' order
	roles[li], roles[up], roles[down] = dc.ids[li]+" leader", dc.ids[up]+" follower", dc.ids[down]+" restarted follower"
	rw.Extra["nodes"] = roles
	if rw.OpsPerS > 0 {
		// The Go client's cadence is TTL/3; an instance is lost only when
		// its beats are a TTL apart.
		rw.Extra["mean_heartbeat_interval_s"] = round2(float64(nReg) / rw.OpsPerS)
		rw.Extra["minimum_heartbeats_per_s"] = round2(float64(nReg) / scaleTTL.Seconds())
	}
	rw.Extra["leader_cpu_pct"] = cpu[li]
	rw.Extra["follower_cpu_pct"] = cpu[up]
	rw.Extra["restarted_follower_cpu_pct"] = cpu[down]
	rw.Extra["client_cpu_pct"] = round2(float64(self1-self0) / clockTicks / elapsed.Seconds() * 100)
	if li2 != li {
		rw.Extra["leader_changed"] = 1
	}
	if heap1 != nil {
		hper, rper := make([]float64, 3), make([]float64, 3)
		for i := range 3 {
			hper[i] = round2((float64(heap1[i]) - float64(heap0[i])) / float64(nReg))
			rper[i] = round2((float64(rss1[i]) - float64(rss0[i])) / float64(nReg))
		}
		rw.Extra["heap_bytes_per_instance"], rw.Extra["rss_bytes_per_instance"] = hper, rper
		rw.Extra["heap_after_bytes"], rw.Extra["rss_after_bytes"] = heap1, rss1
		rw.Extra["heap_before_bytes"], rw.Extra["rss_before_bytes"] = heap0, rss0
	}
	rw.Extra["snapshot_file_bytes"] = res.snapFile
	rw.Extra["snapshot_state_bytes"] = res.snapState
	rw.Extra["snapshot_taken_s"] = round2(res.snapTaken.Seconds())
	rw.Extra["snapshot_persist_s"] = round2(res.snapPersist.Seconds())
	rw.Extra["snapshot_index"] = res.snapIndex
	rw.Extra["leader_last_index"] = res.lastIndex
	rw.Extra["catchup_answered_s"] = round2(res.answered.Seconds())
	rw.Extra["catchup_s"] = round2(res.caught.Seconds())
	rw.Extra["catchup_ready_s"] = round2(res.rdy.Seconds())
	rw.Extra["catchup_by"] = map[bool]string{true: "snapshot install", false: "log"}[res.byInstall]
	rw.Extra["catchup_follower_snapshot_index"] = res.followerSnap
	rw.Extra["catchup_leader_applied_index"] = res.leaderIndex
	if w := b.find("scale-watch", scaleWatchers, sys); w != nil {
		rw.Extra["watch_p50_ms"], rw.Extra["watch_p99_ms"], rw.Extra["watch_max_ms"] = w.P50, w.P99, w.Max
	}
	rw.Extra["method"] = fmt.Sprintf("%d clients, the Go client's batching (<=1024, due within TTL/12), one request in flight each; on the leader and the follower that stayed up", scaleClients)
	b.add(rw)
	b.logf("[%s] scale: %d instances: %.0f heartbeats/s (the Go client's cadence %.0f, the least a %v TTL takes %.0f), requests %v; lost %d (expired per node %v); leader CPU %.0f%% of a core; heap/instance per node (%v) %v B, RSS %v B",
		sys, nReg, rw.OpsPerS, rw.Extra["target_heartbeats_per_s"], scaleTTL, float64(nReg)/scaleTTL.Seconds(), s, lost, expired, cpu[li],
		strings.Join(roles, ", "), rw.Extra["heap_bytes_per_instance"], rw.Extra["rss_bytes_per_instance"])
	if lost != 0 || maxExpired > 0 {
		b.failf("[%s] scale: %d of %d instances lost (expired per node %v) although the benchmark kept heartbeating", sys, lost, nReg, expired)
	}
	return errors.Join(errs...)
}

// scaleSnapshot has the leader take a snapshot for a backup and reads it
// to the end; then reads the snapshot store's newest snapshot.
func (b *bench) scaleSnapshot(ctx context.Context, sys string, dc *discoverdCluster, li int, res *scaleResult) error {
	taken, size, err := dc.takeSnapshot(ctx, li)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	res.snapTaken, res.snapFile = taken, size
	snap, err := newestSnapshot(dc.snapshotDir(li))
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	res.snapState, res.snapPersist, res.snapIndex = snap.size, snap.persist, snap.index
	b.logf("[%s] scale: the leader's snapshot at index %d: %.1f MiB (backup file %.1f MiB); written in %.2fs (snapshot store: created → meta.json), the backup's first frame after %.2fs",
		sys, snap.index, float64(snap.size)/(1<<20), float64(size)/(1<<20), snap.persist.Seconds(), taken.Seconds())
	return nil
}

// scaleCatchUp starts the killed follower again and times it: until it
// answers NodeInfo, until its applied index reaches the leader's, until it
// is ready (at most 5 minutes).
func (b *bench) scaleCatchUp(ctx context.Context, sys string, dc *discoverdCluster, li, down int, res *scaleResult, restarted *time.Time) error {
	lst, err := dc.nodeInfo(ctx, li)
	if err != nil {
		return err
	}
	res.lastIndex = lst.LastIndex
	p, err := b.procs.restart(dc.ps[down])
	if err != nil {
		return fmt.Errorf("restart %s: %w", dc.ids[down], err)
	}
	dc.ps[down] = p
	start := time.Now()
	*restarted = start
	for deadline := start.Add(5 * time.Minute); ctx.Err() == nil; {
		if time.Now().After(deadline) {
			return fmt.Errorf("follower %s not caught up %v after its restart", dc.ids[down], time.Since(start).Round(time.Second))
		}
		if p.exited() {
			return fmt.Errorf("follower %s exited after its restart:\n%s", dc.ids[down], p.describe())
		}
		lead, err1 := dc.nodeInfo(ctx, li)
		st, err2 := dc.nodeInfo(ctx, down)
		now := time.Since(start)
		if err1 == nil && err2 == nil {
			if res.answered == 0 {
				res.answered = now
			}
			if res.caught == 0 && st.AppliedIndex >= lead.AppliedIndex {
				res.caught, res.leaderIndex, res.followerSnap = now, lead.AppliedIndex, st.SnapshotIndex
				// It was killed before the first snapshot: one it holds now
				// was sent to it.
				res.byInstall = st.SnapshotIndex > 0 && st.SnapshotIndex >= res.snapIndex
			}
			if res.rdy == 0 && st.Ready {
				res.rdy = now
			}
			if res.caught > 0 && res.rdy > 0 {
				how := "from the log"
				if res.byInstall {
					how = fmt.Sprintf("by installing the snapshot (its snapshot index %d)", st.SnapshotIndex)
				}
				b.logf("[%s] scale: follower %s restarted: answering after %.2fs, caught up with the leader (applied index %d) after %.2fs %s, ready after %.2fs",
					sys, dc.ids[down], res.answered.Seconds(), res.leaderIndex, res.caught.Seconds(), how, res.rdy.Seconds())
				return nil
			}
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return ctx.Err()
}

// memAvailable returns the kernel's estimate of the memory available for
// new work (MemAvailable), in bytes.
func memAvailable() (uint64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("MemAvailable: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no MemAvailable in /proc/meminfo")
}
