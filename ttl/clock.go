package ttl

import "time"

// Clock is the tracker's time source. Real code uses SystemClock; tests use a
// fake that they advance by hand. Deadlines are compared with time.Time values
// from Now, which carry Go's monotonic reading, so wall-clock steps do not
// move them.
type Clock interface {
	Now() time.Time
	// TimerAt returns a timer that fires once when the clock reaches t (at
	// once if it already has). Taking an instant rather than a duration keeps
	// the deadline exact however long the caller took since it read Now.
	TimerAt(t time.Time) Timer
}

// Timer is the part of *time.Timer the tracker uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// TimerAt returns a real timer; t's monotonic reading decides when it fires.
func (SystemClock) TimerAt(t time.Time) Timer { return sysTimer{time.NewTimer(time.Until(t))} }

type sysTimer struct{ t *time.Timer }

func (s sysTimer) C() <-chan time.Time { return s.t.C }
func (s sysTimer) Stop() bool          { return s.t.Stop() }
