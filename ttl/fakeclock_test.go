package ttl

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBase is the instant every fake clock starts at. It carries no monotonic
// reading, so times derived from it compare exactly and print readably.
var fakeBase = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

// waitLimit bounds, in real time, every wait of these tests for something that
// must happen; reaching it is a test failure, never a pass.
const waitLimit = 10 * time.Second

// fakeClock is a Clock that moves only when a test moves it (Set, Advance).
// It is safe for concurrent use.
//
// A timer fires when the clock is moved to or past its deadline (or at once,
// if its deadline has already been reached when it is made): the current fake
// time is sent on its channel, which is buffered 1, without blocking. Stop
// works like time.Timer's: true if it stopped a pending timer.
type fakeClock struct {
	mu sync.Mutex
	// Guarded by mu:
	now     time.Time
	timers  []*fakeTimer  // every timer made, oldest first (seq = index+1)
	pending []*fakeTimer  // timers that have neither fired nor been stopped
	changed chan struct{} // closed and replaced on every change; wakes waiters
}

type timerState uint8

const (
	timerPending timerState = iota
	timerFired
	timerStopped
)

func (s timerState) String() string {
	return [...]string{"pending", "fired", "stopped"}[s]
}

type fakeTimer struct {
	clk      *fakeClock
	seq      int // 1 for the first timer the clock made
	deadline time.Time
	ch       chan time.Time
	state    timerState // guarded by clk.mu
}

var _ Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: fakeBase, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *fakeClock) Now() time.Time { return c.current() }

// current returns the fake time.
func (c *fakeClock) current() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// TimerAt returns a timer for the instant at.
func (c *fakeClock) TimerAt(at time.Time) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, seq: len(c.timers) + 1, deadline: at, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	if t.deadline.After(c.now) {
		c.pending = append(c.pending, t)
	} else {
		t.fireLocked()
	}
	c.signalLocked()
	return t
}

// Set moves the clock to t, which must not be earlier than the current fake
// time, and fires every pending timer whose deadline is not after t, earliest
// first. It returns how many fired.
func (c *fakeClock) Set(t time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.now) {
		panic(fmt.Sprintf("fake clock moved backwards: from %v to %v", c.now, t))
	}
	return c.setLocked(t)
}

// Advance moves the clock forward by d (see Set).
func (c *fakeClock) Advance(d time.Duration) int {
	if d < 0 {
		panic(fmt.Sprintf("fake clock advanced by negative %v", d))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setLocked(c.now.Add(d))
}

// setLocked moves the clock to t and fires the due timers. Lock must be held.
func (c *fakeClock) setLocked(t time.Time) int {
	c.now = t
	slices.SortStableFunc(c.pending, func(a, b *fakeTimer) int { return a.deadline.Compare(b.deadline) })
	n := 0
	for n < len(c.pending) && !c.pending[n].deadline.After(t) {
		c.pending[n].fireLocked()
		n++
	}
	c.pending = slices.Delete(c.pending, 0, n)
	c.signalLocked()
	return n
}

// Created returns how many timers have been made.
func (c *fakeClock) Created() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Pending returns the deadlines of the pending timers, earliest first.
func (c *fakeClock) Pending() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, 0, len(c.pending))
	for _, t := range c.pending {
		out = append(out, t.deadline)
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// WaitForTimer waits until the newest timer is one of those made after the
// first `after`, is still pending, and has a deadline ok accepts; it returns
// that timer's sequence number and deadline. The tracker's Run loop makes one
// timer per pass (for its earliest deadline) and stops it before making the
// next, so this is how a test waits until Run has looked at the state and is
// waiting for a given moment. It fails the test after waitLimit of real time.
func (c *fakeClock) WaitForTimer(tb testing.TB, after int, ok func(deadline time.Time) bool) (seq int, deadline time.Time) {
	tb.Helper()
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for {
		c.mu.Lock()
		if n := len(c.timers); n > after {
			if t := c.timers[n-1]; t.state == timerPending && ok(t.deadline) {
				c.mu.Unlock()
				return t.seq, t.deadline
			}
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-limit.C:
			tb.Fatalf("timed out waiting for a timer made after #%d with the wanted deadline; clock: %s", after, c.describe())
		}
	}
}

// describe summarises the clock for failure messages.
func (c *fakeClock) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "now=+%v, %d timers made", c.now.Sub(fakeBase), len(c.timers))
	for _, t := range c.timers[max(0, len(c.timers)-5):] {
		fmt.Fprintf(&b, "; #%d at +%v %s", t.seq, t.deadline.Sub(fakeBase), t.state)
	}
	return b.String()
}

// signalLocked wakes WaitForTimer callers. Lock must be held.
func (c *fakeClock) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// fireLocked fires the timer. The clock's lock must be held.
func (t *fakeTimer) fireLocked() {
	t.state = timerFired
	select {
	case t.ch <- t.clk.now:
	default: // the buffered value was never read; like time.Timer, drop this one
	}
}

// C returns the channel the timer fires on.
func (t *fakeTimer) C() <-chan time.Time { return t.ch }

// Stop stops a pending timer and reports whether it did.
func (t *fakeTimer) Stop() bool {
	c := t.clk
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.state != timerPending {
		return false
	}
	t.state = timerStopped
	c.pending = slices.DeleteFunc(c.pending, func(p *fakeTimer) bool { return p == t })
	c.signalLocked()
	return true
}

// goid returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 42 [running]:"). The harness uses it to find the
// Run loop in a goroutine dump (see harness.park).
func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	f := strings.Fields(string(buf[:n]))
	if len(f) < 2 || f[0] != "goroutine" {
		panic(fmt.Sprintf("goid: unexpected stack header %q", buf[:n]))
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		panic(fmt.Sprintf("goid: unexpected stack header %q: %v", buf[:n], err))
	}
	return id
}

// TestTTL_FakeClock checks the fake clock itself, since every other test
// leans on it.
func TestTTL_FakeClock(t *testing.T) {
	c := newFakeClock()
	if got := c.Now(); !got.Equal(fakeBase) {
		t.Fatalf("Now = %v, want the base %v", got, fakeBase)
	}
	fired := func(tm Timer) bool {
		select {
		case <-tm.C():
			return true
		default:
			return false
		}
	}

	t1 := c.TimerAt(fakeBase.Add(3 * time.Second))
	t2 := c.TimerAt(fakeBase.Add(time.Second))
	t3 := c.TimerAt(fakeBase.Add(2 * time.Second))
	if got, want := c.Pending(), []time.Time{fakeBase.Add(time.Second), fakeBase.Add(2 * time.Second), fakeBase.Add(3 * time.Second)}; !slices.Equal(got, want) {
		t.Fatalf("Pending = %v, want %v", got, want)
	}
	if n := c.Advance(time.Second - time.Nanosecond); n != 0 || fired(t2) {
		t.Fatalf("a timer fired before its deadline (%d fired)", n)
	}
	if n := c.Advance(time.Nanosecond); n != 1 || !fired(t2) {
		t.Fatalf("the timer did not fire exactly at its deadline (%d fired)", n)
	}
	if t2.Stop() {
		t.Fatal("Stop of a fired timer returned true")
	}
	if !t3.Stop() || t3.Stop() {
		t.Fatal("Stop of a pending timer must return true once, then false")
	}
	if n := c.Advance(time.Hour); n != 1 || !fired(t1) || fired(t3) {
		t.Fatalf("Advance fired %d timers; want only the one not stopped", n)
	}

	// A timer whose deadline has already passed fires when it is made.
	if tm := c.TimerAt(c.Now()); !fired(tm) {
		t.Fatal("TimerAt(now) did not fire at once")
	}

	// TimerAt keeps the exact instant even if the clock moved since it was read.
	read := c.Now()
	c.Advance(5 * time.Second)
	tm := c.TimerAt(read.Add(7 * time.Second))
	if got := c.Pending(); len(got) != 1 || !got[0].Equal(read.Add(7*time.Second)) {
		t.Fatalf("Pending = %v, want one timer at %v", got, read.Add(7*time.Second))
	}
	seq, deadline := c.WaitForTimer(t, 0, func(d time.Time) bool { return d.Equal(read.Add(7 * time.Second)) })
	if seq != c.Created() || !deadline.Equal(read.Add(7*time.Second)) {
		t.Fatalf("WaitForTimer = #%d at %v", seq, deadline)
	}
	c.Advance(2 * time.Second)
	if !fired(tm) {
		t.Fatal("timer did not fire at its deadline")
	}

	// Safe for concurrent use (run with -race).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Now()
				tm := c.TimerAt(c.Now().Add(time.Millisecond))
				c.Advance(time.Microsecond)
				tm.Stop()
			}
		})
	}
	wg.Wait()
}
