package raftnode

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// A paused process (SIGSTOP, a VM or container freeze, a long stall) can
// make a deposed leader believe, for a moment, that a quorum still follows
// it. hashicorp/raft counts a follower's answer to any heartbeat or append
// as a vote for every VerifyLeader in progress when the answer arrives —
// including answers to requests sent before the pause, which sit in the
// socket buffers and are read the instant the process runs again. Those
// answers say the followers recognised this node before the pause, not now:
// a new leader may have been elected meanwhile. A heartbeat acknowledged on
// that evidence was never seen by the new leader, which could then expire
// the instance earlier than TTL after it (the fault suite's pause-leader
// scenario caught exactly this: an expiry 1.36 s after an acknowledged
// heartbeat with a 2 s TTL).
//
// So the node watches its own clock: a goroutine ticks every pauseTick, and
// a gap between ticks longer than half a heartbeat timeout means the process
// did not run for that long (followers start an election only after a whole
// heartbeat timeout without the leader; a shorter stall cannot have let one
// be elected). After such a gap, and while the gap is still unseen by the
// ticker (the verification may finish before the ticker runs again),
// VerifyLeader fails for a hold-off of one heartbeat timeout: long enough for
// this node's fresh heartbeats to reach the followers and for a node that
// was deposed to learn it from their answers and step down. Heartbeats that
// arrive meanwhile still renew their deadlines on this node; only their
// acknowledgement waits (the client retries on another node).
const pauseTick = 10 * time.Millisecond

// pauseWatch tracks the process's own stalls.
type pauseWatch struct {
	lastTick    atomic.Int64 // monotonic ns (since start) of the ticker's last run
	pausedUntil atomic.Int64 // monotonic ns until which verifications fail
	start       time.Time
	gap         time.Duration // a longer gap between ticks is a stall
	holdOff     time.Duration
	log         *slog.Logger
}

// newPauseWatch watches for stalls that matter with this heartbeat timeout.
func newPauseWatch(heartbeatTimeout time.Duration, log *slog.Logger) *pauseWatch {
	return &pauseWatch{start: time.Now(), gap: max(heartbeatTimeout/2, 2*pauseTick), holdOff: heartbeatTimeout, log: log}
}

func (p *pauseWatch) now() int64 { return int64(time.Since(p.start)) }

// run ticks until done is closed.
func (p *pauseWatch) run(done <-chan struct{}) {
	t := time.NewTicker(pauseTick)
	defer t.Stop()
	p.lastTick.Store(p.now())
	for {
		select {
		case <-done:
			return
		case <-t.C:
			p.tick()
		}
	}
}

// tick records a run of the ticker, and a pause if the last one is too far back.
func (p *pauseWatch) tick() {
	now := p.now()
	if last := p.lastTick.Swap(now); now-last > int64(p.gap) {
		p.notePause(now)
		p.log.Warn("this process was stalled; leadership checks fail until the followers have been heard from again",
			"stalled", time.Duration(now-last).Round(time.Millisecond), "hold_off", p.holdOff)
	}
}

// notePause starts a hold-off at now.
func (p *pauseWatch) notePause(now int64) {
	p.pausedUntil.Store(now + int64(p.holdOff))
}

// recentlyPaused reports whether the process was stalled recently: within
// the hold-off after a stall the ticker saw, or right now, before the ticker
// has run again after one.
func (p *pauseWatch) recentlyPaused() bool {
	now := p.now()
	if now < p.pausedUntil.Load() {
		return true
	}
	if last := p.lastTick.Load(); last != 0 && now-last > int64(p.gap) {
		p.notePause(now)
		return true
	}
	return false
}
