package ttl

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
)

// The expiry-storm guard (storm.go) on the harness of tracker_test.go: a
// real FSM, a fake clock moved second by second, instances of a 10 s TTL
// that heartbeat every second until a test stops them.

const stormTTL = 10 * time.Second

var stormCfg = StormConfig{Threshold: 0.5, MinInstances: 10, MaxHold: 3}

// ProposeSuspect makes the fake proposer a SuspectProposer: it commits
// through p.suspect (nothing when unset), and fails when not leader.
func (p *fakeProposer) ProposeSuspect(_ context.Context, name, addr string, index uint64, v bool) (bool, error) {
	p.mu.Lock()
	leader, fn := p.leader, p.suspect
	p.mu.Unlock()
	if !leader {
		return false, fmt.Errorf("fake raft: %w", codes.ErrNotLeader)
	}
	if fn == nil {
		return false, nil
	}
	return fn(name, addr, index, v), nil
}

// markCall is one committed ProposeSuspect.
type markCall struct {
	Addr    string
	Index   uint64
	Suspect bool
	At      time.Duration // since fakeBase
}

type stormHarness struct {
	*harness
	mu    sync.Mutex
	marks []markCall // guarded by mu
}

// newStormHarness is a leader's tracker with the guard configured as cfg.
func newStormHarness(t *testing.T, cfg StormConfig, more ...func(*Config)) *stormHarness {
	t.Helper()
	h := newHarness(t, withConfig(func(c *Config) {
		c.Storm = cfg
		for _, f := range more {
			f(c)
		}
	}))
	s := &stormHarness{harness: h}
	h.prop.mu.Lock()
	h.prop.suspect = func(name, addr string, index uint64, v bool) bool {
		r := h.apply(fsm.SuspectType, &fsm.SuspectCommand{Name: name, Addr: addr, Index: index, Suspect: v})
		s.mu.Lock()
		s.marks = append(s.marks, markCall{Addr: addr, Index: index, Suspect: v, At: h.clk.current().Sub(fakeBase)})
		s.mu.Unlock()
		return r.Changed
	}
	h.prop.mu.Unlock()
	h.becomeLeader()
	h.settle()
	return s
}

// registerN registers n instances of name, 10.0.0.1:80 and on.
func (s *stormHarness) registerN(name string, n int) []*fsm.Instance {
	s.t.Helper()
	var out []*fsm.Instance
	for i := range n {
		out = append(out, s.register(name, fmt.Sprintf("10.0.0.%d:80", i+1), stormTTL))
	}
	return out
}

func keysOf(ins []*fsm.Instance) []Key {
	var out []Key
	for _, in := range ins {
		out = append(out, keyOf(in))
	}
	return out
}

// stepTo moves the clock second by second to to, settling and then
// heartbeating alive at every step.
func (s *stormHarness) stepTo(to time.Time, alive []*fsm.Instance) {
	s.t.Helper()
	for now := s.clk.current(); now.Before(to); {
		now = now.Add(time.Second)
		if now.After(to) {
			now = to
		}
		s.advanceTo(now)
		if len(alive) > 0 {
			s.expectHeartbeatOK(keysOf(alive)...)
		}
	}
}

// takeMarks returns the markers committed since the last call.
func (s *stormHarness) takeMarks() []markCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.marks
	s.marks = nil
	slices.SortFunc(m, func(a, b markCall) int { return int(a.Index) - int(b.Index) })
	return m
}

// expectMarks checks that the markers committed since the last call are
// exactly one per instance of ins, set to v, at +at.
func (s *stormHarness) expectMarks(ins []*fsm.Instance, v bool, at time.Duration) {
	s.t.Helper()
	var want []markCall
	for _, in := range ins {
		want = append(want, markCall{Addr: in.Addr, Index: in.ModifyIndex, Suspect: v, At: at})
	}
	if got := s.takeMarks(); !slices.Equal(got, want) {
		s.t.Fatalf("suspect markers at +%v:\n got  %+v\n want %+v", s.clk.current().Sub(fakeBase), got, want)
	}
}

// expectSuspect checks the FSM's marker of every instance of ins.
func (s *stormHarness) expectSuspect(ins []*fsm.Instance, v bool) {
	s.t.Helper()
	for _, in := range ins {
		got := s.fsm.Get(in.Name, in.Addr)
		if got == nil || got.Suspect != v {
			s.t.Fatalf("%s %s in the FSM: %+v, want suspect %v", in.Name, in.Addr, got, v)
		}
	}
}

// expectStorm checks the guard's counters.
func (s *stormHarness) expectStorm(held int, holds, released, unheld uint64) {
	s.t.Helper()
	st := s.tr.Stats()
	if st.StormHeld != held || st.StormHolds != holds || st.StormReleased != released || st.StormUnheld != unheld {
		s.t.Fatalf("at +%v: storm held %d, holds %d, released %d, unheld %d; want %d, %d, %d, %d",
			s.clk.current().Sub(fakeBase), st.StormHeld, st.StormHolds, st.StormReleased, st.StormUnheld, held, holds, released, unheld)
	}
}

func expiries(ins []*fsm.Instance, t time.Time) []call {
	var out []call
	for _, in := range ins {
		out = append(out, expiry(in, t))
	}
	return out
}

// TestStorm_FewExpiriesGoAheadOnTime: 1 of 10 stopping, or 5 of 10 (the
// threshold, not beyond it), or 8 of 9 (below the minimum instance count),
// or any share with the guard off: every expiry on its deadline, none held,
// no marker.
func TestStorm_FewExpiriesGoAheadOnTime(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        StormConfig
		n, stopped int
	}{
		{"1 of 10", stormCfg, 10, 1},
		{"5 of 10 is the threshold", stormCfg, 10, 5},
		{"8 of 9 is below the minimum", stormCfg, 9, 8},
		{"9 of 10 with the guard off", StormConfig{}, 10, 9},
		{"9 of 10 with only a cluster threshold below the minimum", StormConfig{ClusterThreshold: 0.5, MinInstances: 11}, 10, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStormHarness(t, tc.cfg)
			ins := s.registerN("web", tc.n)
			s.stepTo(at(5*time.Second), ins)
			stopped, alive := ins[:tc.stopped], ins[tc.stopped:]
			s.stepTo(at(14*time.Second), alive)
			s.noCalls()
			s.stepTo(at(15*time.Second), alive)
			s.expectCalls(expiries(stopped, at(15*time.Second))...)
			s.expectMarks(nil, false, 0)
			s.expectStorm(0, 0, 0, 0)
			s.stepTo(at(60*time.Second), alive)
			s.noCalls()
		})
	}
}

// TestStorm_HoldsBeyondThreshold: when 6, 9 or all 10 of 10 instances stop
// heartbeating at once, none expires at its deadline: every one is held and
// marked suspect, and each expires exactly at its max hold (3 TTLs past its
// deadline); the others live on.
func TestStorm_HoldsBeyondThreshold(t *testing.T) {
	for _, stoppedN := range []int{6, 9, 10} {
		t.Run(fmt.Sprintf("%d of 10", stoppedN), func(t *testing.T) {
			s := newStormHarness(t, stormCfg)
			ins := s.registerN("web", 10)
			s.stepTo(at(5*time.Second), ins)
			stopped, alive := ins[:stoppedN], ins[stoppedN:]
			s.stepTo(at(15*time.Second), alive)
			s.noCalls()
			s.expectMarks(stopped, true, 15*time.Second)
			s.expectSuspect(stopped, true)
			s.expectSuspect(alive, false)
			s.expectStorm(stoppedN, uint64(stoppedN), 0, 0)

			s.stepTo(at(45*time.Second-time.Nanosecond), alive)
			s.noCalls()
			s.expectMarks(nil, false, 0)
			s.stepTo(at(45*time.Second), alive)
			s.expectCalls(expiries(stopped, at(45*time.Second))...)
			s.expectStorm(0, uint64(stoppedN), uint64(stoppedN), 0)
			for _, in := range stopped {
				if s.fsm.Get(in.Name, in.Addr) != nil {
					t.Fatalf("%s still registered after its max hold", in.Addr)
				}
			}
			s.stepTo(at(90*time.Second), alive)
			s.noCalls()
			s.expectSuspect(alive, false)
		})
	}
}

// TestStorm_HeartbeatWhileHeld: a held instance that heartbeats again is
// simply alive: no longer held, its marker cleared, never expired.
func TestStorm_HeartbeatWhileHeld(t *testing.T) {
	s := newStormHarness(t, stormCfg)
	ins := s.registerN("web", 10)
	s.stepTo(at(5*time.Second), ins)
	stopped, alive := ins[:7], ins[7:]
	s.stepTo(at(15*time.Second), alive)
	s.expectStorm(7, 7, 0, 0)
	s.expectMarks(stopped, true, 15*time.Second)

	// Back (the cut healed) at +20 s: heartbeats are accepted at once, and
	// within a TTL/8 the guard notices and clears the markers.
	s.stepTo(at(20*time.Second), alive)
	s.expectHeartbeatOK(keysOf(stopped)...)
	s.stepTo(at(22*time.Second), ins)
	s.expectStorm(0, 7, 0, 7)
	var cleared []markCall
	for _, m := range s.takeMarks() {
		if m.Suspect || m.At < 20*time.Second || m.At > 22*time.Second {
			t.Fatalf("marker %+v, want only clears between +20 s and +22 s", m)
		}
		cleared = append(cleared, markCall{Addr: m.Addr, Index: m.Index})
	}
	if len(cleared) != len(stopped) {
		t.Fatalf("cleared %d markers, want %d", len(cleared), len(stopped))
	}
	s.expectSuspect(ins, false)
	s.stepTo(at(120*time.Second), ins)
	s.noCalls()
	s.expectMarks(nil, false, 0)
}

// TestStorm_UnregisterNeverHeld: unregistrations are never held, in a storm
// or as one: they remove the instance at once; a held instance that is
// unregistered is no longer held.
func TestStorm_UnregisterNeverHeld(t *testing.T) {
	t.Run("nine of ten unregistered", func(t *testing.T) {
		s := newStormHarness(t, stormCfg)
		ins := s.registerN("web", 10)
		s.stepTo(at(5*time.Second), ins)
		for _, in := range ins[:9] {
			s.unregister(in.Name, in.Addr)
		}
		if _, list := s.fsm.List("web", nil); len(list) != 1 {
			t.Fatalf("after 9 unregistrations the FSM lists %d instances", len(list))
		}
		s.stepTo(at(60*time.Second), ins[9:])
		s.noCalls()
		s.expectMarks(nil, false, 0)
		s.expectStorm(0, 0, 0, 0)
	})
	t.Run("held ones unregistered", func(t *testing.T) {
		s := newStormHarness(t, stormCfg)
		ins := s.registerN("web", 10)
		s.stepTo(at(5*time.Second), ins)
		stopped, alive := ins[:6], ins[6:]
		s.stepTo(at(15*time.Second), alive)
		s.expectStorm(6, 6, 0, 0)
		s.takeMarks()
		s.unregister(stopped[0].Name, stopped[0].Addr)
		s.unregister(stopped[1].Name, stopped[1].Addr)
		s.expectStorm(4, 6, 0, 2)
		s.stepTo(at(45*time.Second), alive)
		s.expectCalls(expiries(stopped[2:], at(45*time.Second))...)
		s.expectStorm(0, 6, 4, 2)
		s.expectMarks(nil, false, 0)
	})
}

// TestStorm_Window: expiries let go within one TTL count toward a storm;
// older ones do not. Five of ten expire at +15 s (the threshold, not
// beyond); a sixth whose deadline comes within a TTL of them is held, one
// whose deadline comes later is not.
func TestStorm_Window(t *testing.T) {
	cfg := stormCfg
	cfg.MinInstances = 4
	for _, tc := range []struct {
		name     string
		stopAt   time.Duration // the sixth stops heartbeating
		held     bool
		deadline time.Duration
	}{
		{"within a TTL", 11 * time.Second, true, 21 * time.Second},
		{"beyond a TTL", 26 * time.Second, false, 36 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStormHarness(t, cfg)
			ins := s.registerN("web", 10)
			s.stepTo(at(5*time.Second), ins)
			s.stepTo(at(tc.stopAt), ins[5:])
			s.stepTo(at(15*time.Second), ins[6:]) // a no-op when the sixth stops later
			s.stepTo(at(tc.stopAt), ins[5:])
			sixth, alive := ins[5], ins[6:]
			s.expectCalls(expiries(ins[:5], at(15*time.Second))...)
			s.stepTo(at(tc.deadline), alive)
			if tc.held {
				s.noCalls()
				s.expectStorm(1, 1, 0, 0)
				s.expectSuspect([]*fsm.Instance{sixth}, true)
				s.stepTo(at(tc.deadline+3*stormTTL), alive)
				s.expectCalls(expiry(sixth, at(tc.deadline+3*stormTTL)))
			} else {
				s.expectCalls(expiry(sixth, at(tc.deadline)))
				s.expectStorm(0, 0, 0, 0)
			}
		})
	}
}

// TestStorm_ClusterThreshold: with a cluster-wide threshold, a storm across
// services each too small for the per-service guard is held.
func TestStorm_ClusterThreshold(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  StormConfig
		held bool
	}{
		{"cluster-wide", StormConfig{ClusterThreshold: 0.5, MinInstances: 10}, true},
		{"per service only", StormConfig{Threshold: 0.5, MinInstances: 10}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStormHarness(t, tc.cfg)
			var ins []*fsm.Instance
			for i := range 5 {
				ins = append(ins, s.registerN(fmt.Sprintf("svc%d", i), 2)...)
			}
			s.stepTo(at(5*time.Second), ins)
			stopped, alive := ins[:6], ins[6:] // svc0, svc1, svc2
			s.stepTo(at(15*time.Second), alive)
			if !tc.held {
				s.expectCalls(expiries(stopped, at(15*time.Second))...)
				s.expectStorm(0, 0, 0, 0)
				return
			}
			s.noCalls()
			s.expectStorm(6, 6, 0, 0)
			s.expectSuspect(stopped, true)
			s.stepTo(at(45*time.Second), alive)
			s.expectCalls(expiries(stopped, at(45*time.Second))...)
		})
	}
}

// TestStorm_LeaderChange: holds end with the leadership, but not the
// markers: a new leader keeps the markers it finds, clears those of the
// instances that heartbeat again, and lets the others expire at the
// deadline it armed — one hold per registration, whatever the leader
// changes, so the guard delays a removal by one max hold at most.
func TestStorm_LeaderChange(t *testing.T) {
	s := newStormHarness(t, stormCfg)
	ins := s.registerN("web", 10)
	s.stepTo(at(5*time.Second), ins)
	stopped, alive := ins[:6], ins[6:]
	s.stepTo(at(16*time.Second), alive)
	s.expectStorm(6, 6, 0, 0)
	s.expectMarks(stopped, true, 15*time.Second)

	s.prop.setLeader(false)
	s.tr.StepDown()
	s.expectStorm(0, 6, 0, 6)
	s.advanceTo(at(17 * time.Second))
	s.becomeLeader() // armed at +17 s + TTL + grace = +29 s
	s.settle()
	s.expectMarks(nil, false, 0)
	s.expectSuspect(stopped, true)

	// Two come back at +20 s: their markers are cleared within a TTL/8.
	back, still := stopped[:2], stopped[2:]
	s.stepTo(at(20*time.Second), alive)
	s.expectHeartbeatOK(keysOf(back)...)
	live := append(slices.Clone(alive), back...)
	s.stepTo(at(22*time.Second), live)
	var cleared []*fsm.Instance
	for _, m := range s.takeMarks() {
		if m.Suspect || m.At < 20*time.Second || m.At > 22*time.Second {
			t.Fatalf("marker %+v, want only clears between +20 s and +22 s", m)
		}
		cleared = append(cleared, s.fsm.Get("web", m.Addr))
	}
	if len(cleared) != len(back) {
		t.Fatalf("cleared %d markers, want %d", len(cleared), len(back))
	}
	s.expectSuspect(back, false)
	s.expectSuspect(still, true)

	// The rest expire at the deadline this leader armed, not held again.
	s.stepTo(at(29*time.Second-time.Nanosecond), live)
	s.noCalls()
	s.stepTo(at(29*time.Second), live)
	s.expectCalls(expiries(still, at(29*time.Second))...)
	s.expectMarks(nil, false, 0)
	s.expectStorm(0, 6, 4, 6)
	s.stepTo(at(60*time.Second), live)
	s.noCalls()
	s.expectMarks(nil, false, 0)
}

// TestStorm_ReleasedExpiryIsNotHeldAgain: an expiry let go at its max hold
// whose proposal failed is retried as usual, not held again.
func TestStorm_ReleasedExpiryIsNotHeldAgain(t *testing.T) {
	s := newStormHarness(t, stormCfg)
	ins := s.registerN("web", 10)
	s.stepTo(at(5*time.Second), ins)
	stopped, alive := ins[:6], ins[6:]
	s.stepTo(at(44*time.Second), alive)
	s.noCalls()
	s.prop.failNextN(len(stopped))
	s.stepTo(at(45*time.Second), alive)
	s.expectCalls(expiries(stopped, at(45*time.Second))...)
	s.stepTo(at(46*time.Second), alive) // retried 500 ms later
	s.expectCalls(expiries(stopped, at(46*time.Second))...)
	s.expectStorm(0, 6, 6, 0)
}

// TestStorm_RegisteredAgainWhileHeld: a held instance registered again is a
// new registration: no longer held, unmarked, alive for a TTL.
func TestStorm_RegisteredAgainWhileHeld(t *testing.T) {
	s := newStormHarness(t, stormCfg)
	ins := s.registerN("web", 10)
	s.stepTo(at(5*time.Second), ins)
	stopped, alive := ins[:6], ins[6:]
	s.stepTo(at(15*time.Second), alive)
	s.takeMarks()
	again := s.register(stopped[0].Name, stopped[0].Addr, stormTTL)
	s.expectSuspect([]*fsm.Instance{again}, false)
	alive = append(alive, again)
	s.stepTo(at(17*time.Second), alive)
	s.expectStorm(5, 6, 0, 1)
	s.expectMarks(nil, false, 0)
	s.stepTo(at(45*time.Second), alive)
	s.expectCalls(expiries(stopped[1:], at(45*time.Second))...)
}

// TestStorm_MarkersLeftWithTheGuardOff: a leader whose guard is off still
// clears the marker an earlier leader left once the instance heartbeats,
// and expires the others on time.
func TestStorm_MarkersLeftWithTheGuardOff(t *testing.T) {
	s := newStormHarness(t, StormConfig{})
	ins := s.registerN("web", 3)
	for _, in := range ins[:2] { // an earlier leader's markers
		s.apply(fsm.SuspectType, &fsm.SuspectCommand{Name: in.Name, Addr: in.Addr, Index: in.ModifyIndex, Suspect: true})
	}
	s.prop.setLeader(false)
	s.tr.StepDown()
	s.advanceTo(at(time.Second))
	s.becomeLeader() // armed at +1 s + TTL + grace = +13 s
	s.settle()
	s.expectMarks(nil, false, 0)
	s.stepTo(at(5*time.Second), nil)
	s.expectHeartbeatOK(keyOf(ins[0]))
	s.stepTo(at(7*time.Second), ins[:1])
	if m := s.takeMarks(); len(m) != 1 || m[0].Addr != ins[0].Addr || m[0].Suspect {
		t.Fatalf("markers %+v, want %s cleared", m, ins[0].Addr)
	}
	s.expectSuspect(ins[:1], false)
	s.expectSuspect(ins[1:2], true)
	s.stepTo(at(13*time.Second), ins[:1])
	s.expectCalls(expiries(ins[1:], at(13*time.Second))...)
	s.expectStorm(0, 0, 0, 0)
}

// logCounter counts a logger's records by level and message.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int // "WARN expiry held: expiry storm" → count
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Level.String()+" "+r.Message]++
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

func (l *logCounter) take() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.n
	l.n = map[string]int{}
	return out
}

// TestStorm_LogsOnceAServiceNotOnceAnInstance: a storm of 40 instances in
// two services writes one warning per service when their holds begin and
// one when their releases begin, each instance's at debug, and one line
// per service when its holds are over.
func TestStorm_LogsOnceAServiceNotOnceAnInstance(t *testing.T) {
	logs := &logCounter{n: map[string]int{}}
	s := newStormHarness(t, stormCfg, func(c *Config) { c.Logger = slog.New(logs) })
	web := s.registerN("web", 20)
	var api []*fsm.Instance
	for i := range 20 {
		api = append(api, s.register("api", fmt.Sprintf("10.0.1.%d:80", i+1), stormTTL))
	}
	s.stepTo(at(5*time.Second), append(slices.Clone(web), api...))
	s.stepTo(at(15*time.Second), nil) // every one of them stops: all held
	s.expectStorm(40, 40, 0, 0)
	got := logs.take()
	if got["WARN expiry held: expiry storm"] != 2 || got["DEBUG expiry held: expiry storm"] != 38 {
		t.Errorf("holds logged %v; want 2 warnings (one a service) and 38 debug lines", got)
	}
	s.heartbeat(keysOf(web[:1])...) // one comes back: no longer held, at debug
	s.stepTo(at(45*time.Second), web[:1])
	s.expectStorm(0, 40, 39, 1)
	got = logs.take()
	want := map[string]int{
		"DEBUG expiry no longer held":                                          1,
		"WARN expiry released: held for the longest allowed":                   2,
		"DEBUG expiry released: held for the longest allowed":                  37,
		"INFO expiry storm over for the service: none of its expiries is held": 2,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%q logged %d times, want %d (all: %v)", k, got[k], n, got)
		}
	}
}
