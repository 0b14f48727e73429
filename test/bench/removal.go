package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// The removal workload (README.md, "Benchmarks"): how long after its last
// acknowledged heartbeat a stopped instance is gone, when the leader is
// SIGKILLed right after that heartbeat, against ttl/DESIGN.md's bounds.
// discoverd only: etcd's leases survive a leader change with their own
// remaining time, so the question does not arise the same way.

const (
	removalTTL = 2 * time.Second
	// removalGrace is `-ttl-grace`'s default, removalOldGrace the default
	// before deadline tables, removalElection ttl/DESIGN.md's upper end of
	// E (leader failure to a new leader past its barrier) with the default
	// 500 ms election timeout.
	removalGrace    = time.Second
	removalOldGrace = 2 * time.Second
	removalElection = 1500 * time.Millisecond
	// removalOldBound is the bound across one failover before deadline
	// tables, 2·TTL + E + G (+ c, a few ms); removalNewBound DESIGN.md's
	// bound with them, TTL + E + G.
	removalOldBound = 2*removalTTL + removalElection + removalOldGrace
	removalNewBound = removalTTL + removalElection + removalGrace
	// removalWait is how long a trial waits for the removal after the last
	// heartbeat before it counts as never removed.
	removalWait = 25 * time.Second
)

// removalTrial is one stopped instance.
type removalTrial struct {
	kill       bool
	victim     int
	killed     string
	call, ack  time.Time     // the last acknowledged heartbeat: its call, its acknowledgement
	killAt     time.Time     // zero without a kill
	election   time.Duration // kill → a survivor reports state Leader (-1: not seen)
	gone       time.Time     // first down event on a survivor; zero: never
	goneOn     string
	reason     string
	fromAck    time.Duration // gone - ack: the latency reported
	fromCall   time.Duration // gone - call: the safety side (must be ≥ TTL)
	killDelay  time.Duration // ack → SIGKILL sent
	violations []string
}

func (b *bench) removal(ctx context.Context, sys string, cl cluster) error {
	dc, ok := cl.(*discoverdCluster)
	if !ok {
		b.logf("[%s] removal: measured for discoverd only", sys)
		return nil
	}
	kills, plain := 50, 10
	if b.quick {
		kills, plain = 5, 3
	}
	started := time.Now()
	var withKill, noKill []removalTrial
	skipped := 0
	for i := 0; i < plain+kills && ctx.Err() == nil; i++ {
		kill := i >= plain
		var t removalTrial
		var err error
		for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
			if t, err = b.removalTrial(ctx, dc, i, kill); err == nil {
				break
			}
			skipped++
			b.logf("[%s] removal trial %d: set-up failed (attempt %d of 3), not counted: %v", sys, i+1, attempt+1, err)
			if err := dc.waitStable(ctx); err != nil {
				return err
			}
		}
		if err != nil {
			return fmt.Errorf("removal trial %d: %w", i+1, err)
		}
		what := "no kill"
		if kill {
			what = fmt.Sprintf("killed %s (new leader after %.0f ms, SIGKILL %.1f ms after the ack)", t.killed, ms(t.election), ms(t.killDelay))
		}
		b.logf("[%s] removal %d/%d: %s; gone on %s after %.0f ms from the ack (%.0f from the call), reason %q",
			sys, i+1, plain+kills, what, t.goneOn, ms(t.fromAck), ms(t.fromCall), t.reason)
		for _, v := range t.violations {
			b.failf("[%s] removal trial %d: %s", sys, i+1, v)
		}
		if kill {
			withKill = append(withKill, t)
			if err := dc.restart(ctx, t.victim); err != nil {
				return fmt.Errorf("restart %s: %w", t.killed, err)
			}
			if err := dc.waitStable(ctx); err != nil {
				return err
			}
		} else {
			noKill = append(noKill, t)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rw := removalRow(sys, withKill, noKill)
	rw.Extra["skipped_setups"] = skipped
	rw.Extra["wall_s"] = round2(time.Since(started).Seconds())
	b.add(rw)
	b.logf("[%s] removal across a leader kill, %d kills, from the last acknowledged heartbeat: min %.0f, p50 %.0f, p90 %.0f, p99 %.0f, max %.0f ms; "+
		"bound before deadline tables 2·TTL+E+G = %.1f s (exceeded %v times), bound with them TTL+E+G = %.1f s (exceeded %v times); "+
		"without a kill (%d): min %.0f, p50 %.0f, max %.0f ms (bound TTL + c = %.1f s + c); shortest from a call %.0f ms (TTL %.0f); %.0f s",
		sys, len(withKill), rw.Extra["min_ms"], rw.P50, rw.Extra["p90_ms"], rw.P99, rw.Max,
		removalOldBound.Seconds(), rw.Extra["over_old_bound"], removalNewBound.Seconds(), rw.Extra["over_new_bound"],
		len(noKill), rw.Extra["nokill_min_ms"], rw.Extra["nokill_p50_ms"], rw.Extra["nokill_max_ms"], removalTTL.Seconds(),
		rw.Extra["min_from_call_ms"], ms(removalTTL), time.Since(started).Seconds())
	return nil
}

// removalRow summarises the trials; latencies are from the last acknowledged
// heartbeat, over the trials with a kill.
func removalRow(sys string, withKill, noKill []removalTrial) row {
	dist := func(ts []removalTrial) []time.Duration {
		var d []time.Duration
		for _, t := range ts {
			if !t.gone.IsZero() {
				d = append(d, t.fromAck)
			}
		}
		slices.Sort(d)
		return d
	}
	d, nd := dist(withKill), dist(noKill)
	rw := row{Workload: "removal", Clients: 1, System: sys, Extra: map[string]any{}}
	rw.Extra["kills"] = len(withKill)
	rw.Extra["no_kill_trials"] = len(noKill)
	rw.Extra["ttl_ms"] = ms(removalTTL)
	rw.Extra["old_bound_ms"] = ms(removalOldBound)
	rw.Extra["new_bound_ms"] = ms(removalNewBound)
	rw.Extra["bounds"] = fmt.Sprintf("old (before deadline tables) 2·TTL+E+G = 2·%v+%v+%v = %v (+c); new TTL+E+G = %v+%v+%v = %v (+c); E = DESIGN.md's upper end for 500 ms timeouts",
		removalTTL, removalElection, removalOldGrace, removalOldBound, removalTTL, removalElection, removalGrace, removalNewBound)
	rw.Extra["definition"] = "removal latency: last acknowledged heartbeat's acknowledgement → first down event for the instance on a surviving node's watch stream; the leader is SIGKILLed right after that acknowledgement. Safety: down must come ≥ TTL after that heartbeat's call"
	if len(d) > 0 {
		rw.P50, rw.P99, rw.Max = ms(pct(d, 0.5)), ms(pct(d, 0.99)), ms(d[len(d)-1])
		rw.Extra["min_ms"], rw.Extra["p90_ms"] = ms(d[0]), ms(pct(d, 0.9))
	}
	if len(nd) > 0 {
		rw.Extra["nokill_min_ms"], rw.Extra["nokill_p50_ms"], rw.Extra["nokill_max_ms"] = ms(nd[0]), ms(pct(nd, 0.5)), ms(nd[len(nd)-1])
	}
	overOld, overNew, never, overOwnOld, overOwnNew := 0, 0, 0, 0, 0
	minCall := time.Duration(-1)
	var all, elections []float64
	var killed []string
	for _, t := range append(slices.Clone(withKill), noKill...) {
		if t.gone.IsZero() {
			never++
			continue
		}
		if minCall < 0 || t.fromCall < minCall {
			minCall = t.fromCall
		}
	}
	for _, t := range withKill {
		killed = append(killed, t.killed)
		elections = append(elections, ms(t.election))
		if t.gone.IsZero() {
			continue
		}
		all = append(all, ms(t.fromAck))
		if t.fromAck > removalOldBound {
			overOld++
		}
		if t.fromAck > removalNewBound {
			overNew++
		}
		// The same bounds with this kill's own E (kill → a survivor is
		// Leader, counted from the ack: a little under the real E, which
		// ends after the barrier).
		if e := t.killAt.Sub(t.ack) + t.election; t.election >= 0 {
			if t.fromAck > 2*removalTTL+e+removalOldGrace {
				overOwnOld++
			}
			if t.fromAck > removalTTL+e+removalGrace {
				overOwnNew++
			}
		}
	}
	rw.Extra["over_old_bound"], rw.Extra["over_new_bound"] = overOld, overNew
	rw.Extra["over_old_bound_measured_e"], rw.Extra["over_new_bound_measured_e"] = overOwnOld, overOwnNew
	rw.Extra["never_removed"] = never
	rw.Extra["min_from_call_ms"] = ms(minCall)
	rw.Extra["removals_ms"] = all
	rw.Extra["elections_ms"] = elections
	rw.Extra["killed"] = killed
	return rw
}

// removalTrial registers one instance with TTL 2 s, heartbeats it three
// times, stops, optionally SIGKILLs the leader right after the last
// acknowledgement, and waits for the first down event on a surviving node.
// An error means the set-up failed before the instance was left to expire
// (the trial is not counted); what happens after is in the result.
func (b *bench) removalTrial(ctx context.Context, dc *discoverdCluster, trial int, kill bool) (removalTrial, error) {
	t := removalTrial{kill: kill, election: -1, victim: -1}
	n := b.nextID()
	in := &instance{service: fmt.Sprintf("rm-%03d-%d", trial, n), addr: addrOf(n), ttl: removalTTL}
	cl := &dclient{addrs: dc.addrs, pool: rpcconn.NewPool(rpcconn.Options{TLS: dc.tls})}
	defer cl.close()
	if err := cl.register(ctx, in, 10*time.Second); err != nil {
		return t, fmt.Errorf("register: %w", err)
	}

	// A watch on every node, each on its own connection, opened before the
	// instance can expire; the killed node's watch is ignored.
	tctx, cancel := context.WithTimeout(ctx, removalWait+10*time.Second)
	defer cancel()
	type down struct {
		node   int
		at     time.Time
		reason string
		err    error
	}
	downs := make(chan down, len(dc.addrs)+1) // + the election watcher: no send blocks
	for i, addr := range dc.addrs {
		pool := rpcconn.NewPool(rpcconn.Options{TLS: dc.tls})
		defer pool.Close()
		st, err := openRemovalWatch(tctx, pool, addr, in.service)
		if err != nil {
			return t, err
		}
		defer st.Close()
		go func() {
			at, reason, err := waitDown(tctx, st, in.addr)
			downs <- down{i, at, reason, err}
		}()
	}

	// Heartbeats ~TTL/4 apart; the last acknowledged one is the reference.
	for k := range 3 {
		if k > 0 {
			sleepCtx(ctx, removalTTL/4)
		}
		hctx, hcancel := context.WithTimeout(ctx, time.Second)
		call := time.Now()
		nf, err := cl.heartbeat(hctx, []*instance{in})
		ack := time.Now()
		hcancel()
		if err != nil {
			return t, fmt.Errorf("heartbeat %d: %w", k+1, err)
		}
		if nf[0] {
			return t, fmt.Errorf("heartbeat %d: instance not found %v after registering", k+1, ack.Sub(call))
		}
		t.call, t.ack = call, ack
	}
	if kill {
		li, err := dc.leader(ctx)
		if err != nil {
			// Leadership moved on its own: the instance still expires,
			// but this is not the trial asked for.
			return t, err
		}
		t.victim, t.killed = li, dc.ps[li].Name()
		t.killAt = time.Now()
		t.killDelay = t.killAt.Sub(t.ack)
		if err := dc.ps[li].kill(); err != nil {
			return t, fmt.Errorf("kill %s: %w", t.killed, err)
		}
		killAt, victim := t.killAt, t.victim
		go func() {
			// kill → a survivor reports Leader, for the per-kill bound.
			for end := killAt.Add(removalWait); time.Now().Before(end) && tctx.Err() == nil; {
				if li, err := dc.leader(tctx); err == nil && li != victim {
					downs <- down{node: -1, at: time.Now()}
					return
				}
				sleepCtx(tctx, 20*time.Millisecond)
			}
		}()
	}

	// Wait for a survivor's down event (and, after a kill, the new leader).
	var errs []error
	pending := len(dc.addrs)
	if kill {
		pending-- // the victim's watch ends with an error, ignored
	}
wait:
	for pending > 0 || (kill && t.election < 0) {
		var d down
		select {
		case d = <-downs:
		case <-time.After(time.Until(t.ack.Add(removalWait))):
			if !t.gone.IsZero() {
				break wait // removed; only the new leader was not seen
			}
			t.violations = append(t.violations, fmt.Sprintf("instance %s not removed within %v of its last heartbeat (%v)", in.addr, removalWait, errors.Join(errs...)))
			return t, nil
		}
		if d.node < 0 {
			t.election = d.at.Sub(t.killAt)
			continue
		}
		if d.node == t.victim {
			continue
		}
		pending--
		if d.err != nil {
			errs = append(errs, d.err)
			continue
		}
		if t.gone.IsZero() {
			t.gone, t.goneOn, t.reason = d.at, dc.ids[d.node], d.reason
			// The first survivor's event is the measurement; the others'
			// need not be waited for, the new leader's report may be.
			pending = 0
		}
	}
	if t.gone.IsZero() {
		t.violations = append(t.violations, fmt.Sprintf("instance %s: no survivor's watch saw it go: %v", in.addr, errors.Join(errs...)))
		return t, nil
	}
	t.fromAck, t.fromCall = t.gone.Sub(t.ack), t.gone.Sub(t.call)
	if t.fromCall < removalTTL {
		t.violations = append(t.violations, fmt.Sprintf("SAFETY: instance %s removed %v after its last acknowledged heartbeat's call, under TTL %v", in.addr, t.fromCall, removalTTL))
	}
	if t.reason != wire.ReasonExpire {
		t.violations = append(t.violations, fmt.Sprintf("instance %s went down with reason %q, want %q", in.addr, t.reason, wire.ReasonExpire))
	}
	return t, nil
}

// openRemovalWatch opens a Watch of service on addr from the start.
func openRemovalWatch(ctx context.Context, pool *rpcconn.Pool, addr, service string) (*rpcconn.Stream, error) {
	conn, err := pool.Get(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("watch %s on %s: %w", service, addr, err)
	}
	st, err := conn.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: service})
	if err != nil {
		return nil, fmt.Errorf("watch %s on %s: %w", service, addr, err)
	}
	return st, nil
}

// waitDown reads st until a down event for addr and returns when it arrived
// and its reason.
func waitDown(ctx context.Context, st *rpcconn.Stream, addr string) (time.Time, string, error) {
	for range 100000 { // bounded; keepalives come every 2 s
		var evs wire.WatchEvents
		if err := st.Recv(ctx, &evs); err != nil {
			return time.Time{}, "", err
		}
		at := time.Now()
		for _, e := range evs.Events {
			switch {
			case e.Kind == wire.KindDown && e.Addr == addr:
				return at, e.Reason, nil
			case e.Kind == wire.KindResync:
				return time.Time{}, "", errors.New("watch resynced: history lost")
			}
		}
	}
	return time.Time{}, "", errors.New("watch: too many frames without the down event")
}

// waitStable waits (at most 45 s) until every node is up, ready (caught up
// since it started), agrees on one leader, and all have applied the same
// index.
func (c *discoverdCluster) waitStable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	var last error
	for i := 0; i < 450 && ctx.Err() == nil; i++ {
		if last = c.stable(ctx); last == nil {
			return nil
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return fmt.Errorf("discoverd cluster not stable after 45s: %v", last)
}

func (c *discoverdCluster) stable(ctx context.Context) error {
	leaders, leader := 0, ""
	var applied []uint64
	for i := range c.addrs {
		st, err := c.nodeInfo(ctx, i)
		if err != nil {
			return err
		}
		if !st.Ready {
			return fmt.Errorf("node %s not ready", st.ID)
		}
		if st.State == "Leader" {
			leaders++
		}
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			return fmt.Errorf("node %s sees leader %q", st.ID, st.Leader)
		}
		leader = st.Leader
		applied = append(applied, st.AppliedIndex)
	}
	if leaders != 1 {
		return fmt.Errorf("%d nodes report state Leader", leaders)
	}
	if slices.Min(applied) != slices.Max(applied) {
		return fmt.Errorf("applied indexes differ: %v", applied)
	}
	return nil
}
