package raftnode

import (
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/logging"
)

// TestPauseWatch_StallHoldsVerificationsOff: a gap between the ticker's runs
// longer than half a heartbeat timeout is a stall; verifications are held
// off from then for one heartbeat timeout — also when a verification asks
// before the ticker has run again — and not after.
func TestPauseWatch_StallHoldsVerificationsOff(t *testing.T) {
	p := newPauseWatch(200*time.Millisecond, logging.Discard())
	if p.gap != 100*time.Millisecond || p.holdOff != 200*time.Millisecond {
		t.Fatalf("gap %v hold-off %v, want 100ms and 200ms", p.gap, p.holdOff)
	}
	p.lastTick.Store(p.now())
	p.tick()
	if p.recentlyPaused() {
		t.Fatal("paused after regular ticks")
	}

	// A stall seen first by a verification (the ticker has not run since).
	p.lastTick.Store(p.now() - int64(150*time.Millisecond))
	if !p.recentlyPaused() {
		t.Fatal("a 150 ms gap not seen as a stall by the verification")
	}
	p.tick() // the ticker runs again: the hold-off goes on
	if !p.recentlyPaused() {
		t.Fatal("hold-off ended when the ticker ran")
	}

	// The hold-off ends one heartbeat timeout after the stall.
	p.pausedUntil.Store(p.now() - 1)
	p.tick()
	if p.recentlyPaused() {
		t.Fatal("still paused after the hold-off")
	}

	// A stall seen by the ticker.
	p.lastTick.Store(p.now() - int64(time.Second))
	p.tick()
	if !p.recentlyPaused() {
		t.Fatal("a 1 s gap seen by the ticker did not hold verifications off")
	}
	if until := time.Duration(p.pausedUntil.Load() - p.now()); until <= 0 || until > 200*time.Millisecond {
		t.Fatalf("hold-off for %v more, want up to 200ms", until)
	}
}

// TestPauseWatch_ShortGapsAreNoStall: gaps up to half a heartbeat timeout
// (scheduling, a garbage collection) hold nothing off, and the floor of the
// gap is two ticks however short the heartbeat timeout.
func TestPauseWatch_ShortGapsAreNoStall(t *testing.T) {
	p := newPauseWatch(500*time.Millisecond, logging.Discard())
	p.lastTick.Store(p.now() - int64(200*time.Millisecond))
	p.tick()
	if p.recentlyPaused() {
		t.Fatal("a 200 ms gap with a 500 ms heartbeat timeout held verifications off")
	}
	if q := newPauseWatch(5*time.Millisecond, logging.Discard()); q.gap != 2*pauseTick {
		t.Fatalf("gap %v with a 5 ms heartbeat timeout, want %v", q.gap, 2*pauseTick)
	}
}
