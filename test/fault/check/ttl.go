package check

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/discoverd/discoverd/test/fault/history"
)

// defaultTTL is the TTL discoverd gives a registration with ttl_ms 0.
const defaultTTL = 10 * time.Second

// TTLSafety checks that no instance was expired early (ttl/DESIGN.md,
// "Safety — never early").
//
// For every journal entry of type expire with Changed true (one per index,
// from the union of journals), the registration it removed is the register
// entry at its ExpireIndex; it must be a register of the same service and
// address (a violation otherwise). Let R be the call time of the client
// operation that made that registration (found by its request id; the
// promise of ttl/DESIGN.md is about call times), or, when no operation
// carries the id, the earliest time any node applied the entry; and T the
// latest sign of life of that
// registration: the maximum of R and the Call of every Heartbeat op on the
// instance with outcome ok whose Call lies after R and before the expiry was
// applied (its earliest apply time; a later heartbeat is for a registration
// made after the expiry). With TTL the register entry's TTL (0 means the
// 10 s default, noted), the expiry is early — a violation with the expire
// entry's index — if DecidedAt < T + TTL. An expire entry without DecidedAt
// is judged by its earliest apply time instead (noted). An ExpireIndex no
// journal holds is noted and not checked.
//
// Apply times are journaled after the leader armed the deadline, so they
// are later than the moment that counts; a registration's call time is not.
func TTLSafety(run *history.Run) Verdict {
	v := newVerdict(NameTTLSafety)
	lv := newLogView(run)
	beats := map[instKey][]history.Op{}
	regCall := map[string]int64{} // request id → call time of the register op
	for _, op := range run.Ops {
		if op.Kind == history.Heartbeat && op.Outcome == history.OK {
			k := instKey{op.Service, op.Addr}
			beats[k] = append(beats[k], op)
		}
		if op.Kind == history.Register && op.RequestID != "" {
			regCall[op.RequestID] = op.Call
		}
	}
	minMargin := int64(math.MaxInt64)
	noDecided := 0
	for _, i := range lv.idx {
		s := lv.slots[i]
		e := s.e
		if e.Type != typeExpire || !e.Changed {
			continue
		}
		v.Stats["expiries"]++
		reg, ok := lv.at(e.ExpireIndex)
		if !ok {
			v.note("expire of %s %s at index %d names registration index %d, which no journal holds; not checked", e.Name, e.Addr, i, e.ExpireIndex)
			continue
		}
		if reg.e.Type != typeRegister || reg.e.Name != e.Name || reg.e.Addr != e.Addr {
			v.fail(Violation{Service: e.Name, Addr: e.Addr, Index: i, At: e.DecidedAt,
				Msg: fmt.Sprintf("expire at index %d names index %d, which is not a registration of this instance: %s", i, e.ExpireIndex, describeEntry(reg.e))})
			continue
		}
		r := reg.firstAt
		last, why := r, fmt.Sprintf("registration at index %d applied", e.ExpireIndex)
		if c, ok := regCall[reg.e.RequestID]; ok && reg.e.RequestID != "" {
			last, why = c, fmt.Sprintf("registration at index %d called", e.ExpireIndex)
		}
		for _, hb := range beats[instKey{e.Name, e.Addr}] {
			if hb.Call > r && hb.Call < s.firstAt && hb.Call > last {
				last, why = hb.Call, fmt.Sprintf("heartbeat op %d (client %s, node %s) called", hb.ID, hb.Client, hb.Node)
			}
		}
		ttl := time.Duration(reg.e.TTLMillis) * time.Millisecond
		if ttl == 0 {
			ttl = defaultTTL
			v.note("registration at index %d has no TTL in the journal; using the default %s", e.ExpireIndex, defaultTTL)
		}
		decided := e.DecidedAt
		if decided == 0 {
			decided = s.firstAt
			noDecided++
		}
		v.Stats["checked"]++
		margin := decided - (last + int64(ttl))
		minMargin = min(minMargin, margin)
		if margin < 0 {
			v.fail(Violation{Service: e.Name, Addr: e.Addr, Index: i, At: decided,
				Msg: fmt.Sprintf("expired early: decided %s after the last sign of life (%s), TTL %s — %s too soon",
					ms(decided-last), why, ttl, ms(-margin))})
		}
	}
	if noDecided > 0 {
		v.note("%d expire entries carry no decision time; judged by when they were first applied", noDecided)
	}
	if minMargin != math.MaxInt64 {
		v.Stats["min_margin_ms"] = int(minMargin / 1e6)
		v.note("closest expiry: decided %s after last sign of life + TTL (negative: early)", ms(minMargin))
	}
	return v.done()
}

// TTLLiveness checks that an instance whose client stopped heartbeating on
// purpose is removed within the bound ttl/DESIGN.md promises.
//
// For every Stop op (the client stops heartbeating the instance at its
// Call; TTL from the op's TTLMillis, 0 meaning 10 s): a removal is expected
// only if the instance existed — some Register op of it with outcome ok
// returned by the Stop's Call (otherwise noted and skipped). The removal is
// the first changed unregister or expire entry of the instance whose
// earliest apply time is at or after the Stop's Call, and its delay is that
// apply time minus the Stop's Call. The bound is TTL +
// Bounds.RemovalNoFailoverNanos if no fault overlaps [Stop, Stop + TTL +
// RemovalNoFailoverNanos] (a fault without an end lasts to the end of the
// run). Otherwise it is failoverBound: TTL + Bounds.RemovalFailoverNanos —
// a new leader arms from the deadline tables of a majority (ttl/DESIGN.md,
// "Deadline tables") — unless an overlapping fault killed a majority of the
// nodes: then no leader exists until they are back, and their tables are
// younger than the TTL, so the new leader arms at now + TTL + grace; the
// bound is TTL + RemovalFailoverNanos after the later of the stop + TTL and
// the fault's end. An instance the expiry-storm guard held gets stormHold's
// allowance on top, on the bound and on that window. A delay over the bound
// is a violation. With no removal: if the instance was registered again after
// the Stop (a Register op that did not fail, called before any removal), it
// is noted and skipped; if it is still in run.Final, it is a violation
// ("never removed") unless the run ended before the bound passed (noted);
// otherwise (gone, but no entry found) it is noted.
//
// Stats and a note give the measured delays (max and median).
func TTLLiveness(run *history.Run) Verdict {
	v := newVerdict(NameTTLLiveness)
	lv := newLogView(run)
	logs := lv.services()
	final := finalState(run)
	end := runEnd(run)
	b := run.Bounds
	if b.RemovalNoFailoverNanos == 0 && b.RemovalFailoverNanos == 0 {
		v.note("no removal bounds recorded: removal must happen within TTL (or 2·TTL across faults)")
	}
	var stops []history.Op
	regs := map[instKey][]history.Op{}
	for _, op := range run.Ops {
		switch op.Kind {
		case history.Stop:
			stops = append(stops, op)
		case history.Register:
			k := instKey{op.Service, op.Addr}
			regs[k] = append(regs[k], op)
		}
	}
	sort.SliceStable(stops, func(i, j int) bool {
		if stops[i].Call != stops[j].Call {
			return stops[i].Call < stops[j].Call
		}
		return stops[i].ID < stops[j].ID
	})
	var delays []int64
	for _, st := range stops {
		k := instKey{st.Service, st.Addr}
		v.Stats["stops"]++
		ttl := int64(time.Duration(st.TTLMillis) * time.Millisecond)
		if ttl == 0 {
			ttl = int64(defaultTTL)
		}
		existed := false
		reReg := int64(math.MaxInt64)
		for _, r := range regs[k] {
			if r.Outcome == history.OK && r.Return <= st.Call {
				existed = true
			}
			if r.Outcome != history.Fail && r.Call > st.Call {
				reReg = min(reReg, r.Call)
			}
		}
		if !existed {
			v.note("stop of %s %s (op %d): no acknowledged registration before it; no removal expected", st.Service, st.Addr, st.ID)
			v.Stats["skipped"]++
			continue
		}
		hold, holds := stormHold(logs[st.Service], st, ttl, b) // 0 unless the expiry-storm guard held it
		winEnd := st.Call + ttl + b.RemovalNoFailoverNanos + int64(holds)*hold
		bound, boundWhy := ttl+b.RemovalNoFailoverNanos, "TTL + no-failover bound"
		if fb, why, ok := failoverBound(run.Faults, st.Call, winEnd, end, ttl, b); ok {
			bound, boundWhy = fb, why
			v.Stats["faulted"]++
		}
		if holds > 0 {
			if _, ok := overlappingFault(run.Faults, st.Call, winEnd, end); ok {
				holds++ // a leader that failed may have held it without its marker committing
			}
			bound += int64(holds) * hold
			boundWhy += fmt.Sprintf(", + %s for %d expiry-storm hold(s)", ms(int64(holds)*hold), holds)
			v.Stats["storm_held"]++
		}
		var removal *change
		if sl := logs[st.Service]; sl != nil {
			for i := range sl.changes {
				c := &sl.changes[i]
				if c.addr == st.Addr && c.kind == kindDown && c.at >= st.Call {
					removal = c
					break
				}
			}
		}
		switch {
		case removal != nil && removal.at < reReg:
			d := removal.at - st.Call
			delays = append(delays, d)
			v.Stats["removed"]++
			if d > bound {
				v.fail(Violation{Service: st.Service, Addr: st.Addr, Index: removal.index, At: removal.at,
					Msg: fmt.Sprintf("removed (%s at index %d) %s after its client stopped heartbeating (op %d); bound %s (%s)",
						removal.reason, removal.index, ms(d), st.ID, ms(bound), boundWhy)})
			}
		case reReg != math.MaxInt64:
			v.note("stop of %s %s (op %d): registered again %s later, before any removal; not checked", st.Service, st.Addr, st.ID, ms(reReg-st.Call))
			v.Stats["skipped"]++
		default:
			idx, inFinal := final[st.Service][st.Addr]
			switch {
			case inFinal && st.Call+bound > end:
				v.note("stop of %s %s (op %d): the run ended %s after it, before the bound %s; not checked", st.Service, st.Addr, st.ID, ms(end-st.Call), ms(bound))
				v.Stats["skipped"]++
			case inFinal:
				v.fail(Violation{Service: st.Service, Addr: st.Addr, Index: idx, At: st.Call,
					Msg: fmt.Sprintf("never removed: still in the final state %s after its client stopped heartbeating (op %d); bound %s (%s)",
						ms(end-st.Call), st.ID, ms(bound), boundWhy)})
			default:
				v.note("stop of %s %s (op %d): not in the final state, but no removal entry after the stop was found", st.Service, st.Addr, st.ID)
				v.Stats["skipped"]++
			}
		}
	}
	if len(delays) > 0 {
		sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
		p50 := delays[(len(delays)-1)/2]
		mx := delays[len(delays)-1]
		v.Stats["delay_max_ms"] = int(mx / 1e6)
		v.Stats["delay_p50_ms"] = int(p50 / 1e6)
		var all []string
		for _, d := range delays {
			all = append(all, ms(d))
		}
		v.note("removal delays after stop: max %s, p50 %s (n=%d: %s)", ms(mx), ms(p50), len(delays), strings.Join(all, " "))
	}
	return v.done()
}

// failoverBound is the removal bound of an instance stopped at stop when
// faults overlap [stop, winEnd] (see TTLLiveness), and why; ok is false when
// none does.
func failoverBound(faults []history.Fault, stop, winEnd, end, ttl int64, b history.Bounds) (bound int64, why string, ok bool) {
	for _, f := range faults {
		fEnd := f.End
		if fEnd == 0 {
			fEnd = max(end, f.Start)
		}
		if f.Start > winEnd || fEnd < stop {
			continue
		}
		to := "never healed"
		if f.End != 0 {
			to = ms(f.End - stop)
		}
		span := fmt.Sprintf("fault %s overlaps, from %s to %s relative to the stop", f.Name, ms(f.Start-stop), to)
		fb := ttl + b.RemovalFailoverNanos
		w := "TTL + failover bound (deadline tables): " + span
		if f.Name == "member-churn" {
			// The voters changed: within a TTL of that, a new leader arms
			// at now + TTL + grace (ttl/DESIGN.md, "Membership changes").
			fb = 2*ttl + b.RemovalFailoverNanos
			w = "the voters changed (fallback arming): 2·TTL + failover bound: " + span
		}
		if f.Name == "kill-majority" {
			fb = max(ttl, fEnd-stop) + ttl + b.RemovalFailoverNanos
			w = "a majority was killed: TTL + failover bound after the later of stop + TTL and the restart: " + span
		}
		if !ok || fb > bound {
			bound, why, ok = fb, w, true
		}
	}
	return bound, why, ok
}

// stormHold is TTLLiveness's allowance for the expiry-storm guard
// (ttl/DESIGN.md): a leader holds back the expiry of an instance that
// stopped with many others, for at most Bounds.StormMaxHold TTLs past its
// deadline, and marks it suspect while it does. Each changed suspect entry
// setting the marker on the stopped instance after the Stop's call and
// before its removal is one hold, and each adds one max hold
// (StormMaxHold·TTL) to the bound and to the window in which a fault counts
// as overlapping. A hold that began before the Stop and was not ended by
// then (no registration, removal or cleared marker of the instance in
// between) counts too. With a fault overlapping, one more hold is allowed:
// a leader that held the instance and failed before its marker committed
// leaves no trace, and the next leader may hold it again (a later leader
// that finds the marker never does). It returns one max hold and the number
// of holds seen.
func stormHold(sl *serviceLog, st history.Op, ttl int64, b history.Bounds) (int64, int) {
	if sl == nil || b.StormMaxHold <= 0 {
		return 0, 0
	}
	holds := 0
	for _, c := range sl.changes {
		if c.addr != st.Addr {
			continue
		}
		if c.kind == kindDown && c.at >= st.Call {
			break // the removal
		}
		switch {
		case c.mark && c.suspect:
			holds++
		case c.at < st.Call:
			holds = 0 // registered, removed or unmarked before the stop: earlier holds are over
		}
	}
	return int64(b.StormMaxHold * float64(ttl)), holds
}

// overlappingFault returns the first fault overlapping [from, to]; a fault
// that never ended lasts until end.
func overlappingFault(faults []history.Fault, from, to, end int64) (history.Fault, bool) {
	for _, f := range faults {
		fEnd := f.End
		if fEnd == 0 {
			fEnd = max(end, f.Start)
		}
		if f.Start <= to && fEnd >= from {
			return f, true
		}
	}
	return history.Fault{}, false
}
