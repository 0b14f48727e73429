package ttl

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
)

// The tests drive a Tracker with a fake clock (fakeclock_test.go), a fake
// Proposer and, mostly, a real *fsm.FSM as the instance source with the
// tracker as its observer: the wiring raftnode uses. Fake times are written
// as offsets from fakeBase: at(12*time.Second) is 12 s after the start.
//
// Nothing waits with time.Sleep. After moving the clock a test calls settle,
// which returns once the Run loop has handled every deadline that has passed
// and every expire proposal that resulted has returned; see settle.

const (
	testGrace = 2 * time.Second
	testRetry = 500 * time.Millisecond
)

// at returns the fake time d after the start.
func at(d time.Duration) time.Time { return fakeBase.Add(d) }

func keyOf(in *fsm.Instance) Key { return Key{Name: in.Name, Addr: in.Addr} }

// errProposeFailed is what the fake proposer returns when told to fail: a
// proposal that never entered the log (so it is safe to try again).
var errProposeFailed = fmt.Errorf("fake raft: expire proposal not accepted: %w", codes.ErrOverloaded)

// call is one ProposeExpire call: which registration, and the fake time it
// was proposed at.
type call struct {
	Name  string
	Addr  string
	Index uint64
	At    time.Time
}

func (c call) String() string {
	return fmt.Sprintf("expire %s %s #%d at +%v", c.Name, c.Addr, c.Index, c.At.Sub(fakeBase))
}

// expiry is the call expected for in's current registration at fake time t.
func expiry(in *fsm.Instance, t time.Time) call {
	return call{Name: in.Name, Addr: in.Addr, Index: in.ModifyIndex, At: t}
}

// propCall is a recorded call. A held call (reply != nil) blocks until the
// test decides its outcome with fakeProposer.release.
type propCall struct {
	call
	reply chan error
}

// fakeProposer is the Raft side. Every ProposeExpire is recorded on calls.
// Then, in order: it fails with codes.ErrNotLeader when not leader; fails with
// errProposeFailed while failNext > 0; waits for release when hold is set;
// else commits the expiry through apply.
type fakeProposer struct {
	clk   *fakeClock
	calls chan *propCall
	apply func(name, addr string, index uint64) (removed bool)

	mu sync.Mutex
	// Guarded by mu:
	leader   bool
	hold     bool
	failNext int
	held     int           // held calls not yet released
	askedCh  chan struct{} // if set, gets a token (non-blocking) on every IsLeader

	// ProposeSuspect (storm_test.go) commits through suspect, if set.
	suspect func(name, addr string, index uint64, v bool) bool
}

func (p *fakeProposer) IsLeader() bool {
	p.mu.Lock()
	leader, ch := p.leader, p.askedCh
	p.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return leader
}

func (p *fakeProposer) ProposeExpire(ctx context.Context, name, addr string, index uint64) (bool, error) {
	c := &propCall{call: call{Name: name, Addr: addr, Index: index, At: p.clk.current()}}
	p.mu.Lock()
	leader := p.leader
	fail := leader && p.failNext > 0
	if fail {
		p.failNext--
	}
	if leader && !fail && p.hold {
		c.reply = make(chan error, 1)
	}
	p.mu.Unlock()
	select {
	case p.calls <- c:
	default:
		panic("fakeProposer: too many unread calls")
	}
	switch {
	case !leader:
		return false, fmt.Errorf("fake raft: %w", codes.ErrNotLeader)
	case fail:
		return false, errProposeFailed
	}
	if c.reply != nil {
		// Counted only now that the call is visible on calls (settle relies on it).
		p.mu.Lock()
		p.held++
		p.mu.Unlock()
		select {
		case err := <-c.reply:
			if err != nil {
				return false, err
			}
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return p.apply(name, addr, index), nil
}

func (p *fakeProposer) setLeader(v bool) { p.mu.Lock(); p.leader = v; p.mu.Unlock() }
func (p *fakeProposer) setHold(v bool)   { p.mu.Lock(); p.hold = v; p.mu.Unlock() }
func (p *fakeProposer) failNextN(n int)  { p.mu.Lock(); p.failNext = n; p.mu.Unlock() }

func (p *fakeProposer) heldCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// watchIsLeader returns a channel that gets a token whenever IsLeader is asked.
func (p *fakeProposer) watchIsLeader() <-chan struct{} {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.askedCh = ch
	p.mu.Unlock()
	return ch
}

// release decides a held call: nil commits the expiry, an error fails it.
func (p *fakeProposer) release(c *propCall, err error) {
	if c.reply == nil {
		panic("release of a call that was not held: " + c.String())
	}
	p.mu.Lock()
	p.held--
	p.mu.Unlock()
	c.reply <- err
}

// staticSource is an InstanceSource with a fixed set of instances. Nothing
// tells the tracker when one is removed.
type staticSource []*fsm.Instance

func (s staticSource) WithInstances(fn func(applied uint64, all iter.Seq[*fsm.Instance])) {
	fn(0, slices.Values([]*fsm.Instance(s)))
}

// gatedSource wraps a source; after holdNext, its next WithInstances waits
// for open before reading the source.
type gatedSource struct {
	InstanceSource

	mu                     sync.Mutex
	armed                  bool // guarded by mu: the next WithInstances waits
	gate, entered, through chan struct{}
}

func (g *gatedSource) holdNext() (entered, through chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.gate, g.entered, g.through = make(chan struct{}), make(chan struct{}), make(chan struct{})
	return g.entered, g.through
}

func (g *gatedSource) open() { close(g.gate) }

func (g *gatedSource) WithInstances(fn func(applied uint64, all iter.Seq[*fsm.Instance])) {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if !armed {
		g.InstanceSource.WithInstances(fn)
		return
	}
	close(g.entered)
	<-g.gate
	g.InstanceSource.WithInstances(fn)
	close(g.through)
}

// harness is one Tracker with its Run loop, fake clock and fake proposer.
type harness struct {
	t    *testing.T
	clk  *fakeClock
	prop *fakeProposer
	fsm  *fsm.FSM // nil with a static source
	tr   *Tracker

	runID atomic.Uint64 // goroutine id of the Run loop

	logMu     sync.Mutex
	lastIndex uint64 // guarded by logMu: index of the last entry applied to fsm
}

type harnessOptions struct {
	config func(*Config)
	static staticSource
	source func(*fsm.FSM) InstanceSource
}

type option func(*harnessOptions)

// withConfig adjusts the tracker's Config.
func withConfig(f func(*Config)) option { return func(o *harnessOptions) { o.config = f } }

// withStatic uses a fixed set of instances instead of an FSM; every expire
// proposal then reports that it removed the instance.
func withStatic(ins []*fsm.Instance) option {
	return func(o *harnessOptions) { o.static = ins }
}

// withSource hands the tracker wrap(fsm) instead of the FSM itself.
func withSource(wrap func(*fsm.FSM) InstanceSource) option {
	return func(o *harnessOptions) { o.source = wrap }
}

// newHarness builds the tracker and starts Run; the test's cleanup stops it.
// By default it is wired as in raftnode: a real FSM is the source, the tracker
// is its observer, and expire proposals are applied to that FSM as log entries.
// The node starts as a follower (IsLeader false, tracker inactive).
func newHarness(t *testing.T, opts ...option) *harness {
	t.Helper()
	var o harnessOptions
	for _, opt := range opts {
		opt(&o)
	}
	h := &harness{t: t, clk: newFakeClock()}
	h.prop = &fakeProposer{clk: h.clk, calls: make(chan *propCall, 1<<15)}
	var src InstanceSource
	if o.static != nil {
		src = o.static
		h.prop.apply = func(string, string, uint64) bool { return true }
	} else {
		h.fsm = fsm.New(fsm.Config{})
		src = h.fsm
		if o.source != nil {
			src = o.source(h.fsm)
		}
		h.prop.apply = func(name, addr string, index uint64) bool {
			return h.apply(fsm.ExpireType, &fsm.ExpireCommand{Name: name, Addr: addr, Index: index}).Changed
		}
	}
	cfg := Config{
		Grace:         testGrace,
		RetryInterval: testRetry,
		Clock:         h.clk,
		Logger:        slog.New(slog.DiscardHandler),
	}
	if o.config != nil {
		o.config(&cfg)
	}
	h.tr = New(cfg, h.prop, src)
	if h.fsm != nil {
		h.fsm.SetObserver(h.tr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.runID.Store(goid())
		h.tr.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Error("Run did not return after its context ended")
		}
	})
	return h
}

// apply commits one command to the FSM as the next log entry. It is called
// from proposal goroutines too, so it panics instead of failing the test.
func (h *harness) apply(t fsm.MessageType, cmd any) *fsm.Result {
	data, err := fsm.Encode(t, cmd)
	if err != nil {
		panic(err)
	}
	h.logMu.Lock()
	defer h.logMu.Unlock()
	h.lastIndex++
	out := h.fsm.ApplyBatch([]*raft.Log{{Index: h.lastIndex, Term: 1, Type: raft.LogCommand, Data: data}})
	return out[0].(*fsm.Result)
}

// register commits a registration and returns the stored instance.
func (h *harness) register(name, addr string, ttl time.Duration) *fsm.Instance {
	h.t.Helper()
	r := h.apply(fsm.RegisterType, &fsm.RegisterCommand{Name: name, Addr: addr, TTL: ttl})
	in := h.fsm.Get(name, addr)
	if r.Err != nil || in == nil || in.ModifyIndex != r.Index {
		h.t.Fatalf("register %s %s: result %+v, stored %+v", name, addr, r, in)
	}
	return in
}

// unregister commits an unregistration.
func (h *harness) unregister(name, addr string) {
	h.t.Helper()
	if r := h.apply(fsm.UnregisterType, &fsm.UnregisterCommand{Name: name, Addr: addr}); r.Err != nil {
		h.t.Fatalf("unregister %s %s: %v", name, addr, r.Err)
	}
}

// becomeLeader makes the node leader and calls BecomeLeader, as raftnode does
// after its barrier.
func (h *harness) becomeLeader() {
	h.t.Helper()
	h.prop.setLeader(true)
	h.tr.BecomeLeader()
	if !h.tr.Active() {
		h.t.Fatal("tracker not active after BecomeLeader")
	}
}

// advanceTo moves the fake clock to t and settles.
func (h *harness) advanceTo(t time.Time) {
	h.t.Helper()
	h.clk.Set(t)
	h.settle()
}

// settle returns once (1) the Run loop has made a full pass that started
// after settle was called, so it has collected every deadline that has passed
// (the clock does not move meanwhile) and started its proposals, and (2) every
// proposal in flight has returned to the tracker, except those the fake
// proposer holds. After settle, h.takeCalls sees every call that the state
// warrants, and a missing call is a real absence, not a slow goroutine.
//
// (1) uses the loop's wake channel (buffered 1): a token put in after the
// previous one was taken can only be taken by a select that Run reaches after
// finishing the pass the previous token started. Run makes no other use of
// the channel.
func (h *harness) settle() {
	h.t.Helper()
	h.wakeRound()
	h.wakeRound()
	h.eventually("expire proposals to return", func() bool { return len(h.tr.sem) == h.prop.heldCount() })
	// A failed proposal re-queues its instance and wakes Run: let that pass finish too.
	h.wakeRound()
	h.wakeRound()
}

// park settles, then waits until the Run loop is blocked in its select with
// no wake-up pending: from then on only a timer firing (the clock moving) or
// a wake-up from the tracker itself makes it look at the state again. Tests
// use it before checking that an event wakes Run by itself, which settle's
// own wake-ups would hide.
func (h *harness) park() {
	h.t.Helper()
	h.settle()
	h.eventually("the Run loop to block in its select", func() bool {
		if len(h.tr.wake) != 0 || len(h.tr.sem) == cap(h.tr.sem) {
			return false
		}
		state, stack := goroutineState(h.runID.Load())
		return strings.HasPrefix(state, "select") && strings.Contains(stack, "ttl.(*Tracker).Run(")
	})
}

// goroutineState returns the state ("select", "runnable", ...) and stack of
// the goroutine with the given id, from a dump of all goroutines.
func goroutineState(id uint64) (state, stack string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	prefix := fmt.Sprintf("goroutine %d [", id)
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if rest, ok := strings.CutPrefix(g, prefix); ok {
			state, _, _ = strings.Cut(rest, "]")
			return state, g
		}
	}
	return "", ""
}

// wakeRound wakes the Run loop and waits until it has taken the wake-up.
func (h *harness) wakeRound() {
	h.t.Helper()
	h.tr.nudge()
	h.eventually("the Run loop to take a wake-up", func() bool { return len(h.tr.wake) == 0 })
}

// eventually polls cond until it holds, failing the test after waitLimit.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	eventually(h.t, what, cond)
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(50 * time.Microsecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// recv receives from ch, failing the test after waitLimit.
func recv[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// takeCalls returns the proposals recorded since the last takeCalls, in the
// order they were made.
func (h *harness) takeCalls() []*propCall {
	var out []*propCall
	for {
		select {
		case c := <-h.prop.calls:
			out = append(out, c)
		default:
			return out
		}
	}
}

// expectCalls takes the recorded proposals and checks them against want,
// ignoring order (order is checked where it is defined).
func (h *harness) expectCalls(want ...call) []*propCall {
	h.t.Helper()
	got := h.takeCalls()
	gotCalls := make([]call, len(got))
	for i, c := range got {
		gotCalls[i] = c.call
	}
	byIndex := func(a, b call) int { return int(a.Index) - int(b.Index) }
	slices.SortFunc(gotCalls, byIndex)
	want = slices.Clone(want)
	slices.SortFunc(want, byIndex)
	if !slices.EqualFunc(gotCalls, want, func(a, b call) bool {
		return a.Name == b.Name && a.Addr == b.Addr && a.Index == b.Index && a.At.Equal(b.At)
	}) {
		h.t.Fatalf("expire proposals at +%v:\n got  %v\n want %v", h.clk.current().Sub(fakeBase), gotCalls, want)
	}
	slices.SortFunc(got, func(a, b *propCall) int { return byIndex(a.call, b.call) })
	return got
}

// noCalls checks that nothing was proposed since the last takeCalls.
func (h *harness) noCalls() {
	h.t.Helper()
	h.expectCalls()
}

// heartbeat sends one Heartbeat, which must succeed as a whole.
func (h *harness) heartbeat(keys ...Key) []error {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	errs, err := h.tr.Heartbeat(ctx, keys)
	if err != nil || len(errs) != len(keys) {
		h.t.Fatalf("Heartbeat(%v) = %v, %v", keys, errs, err)
	}
	return errs
}

// expectHeartbeatOK checks that a heartbeat for keys is accepted for each.
func (h *harness) expectHeartbeatOK(keys ...Key) {
	h.t.Helper()
	for i, err := range h.heartbeat(keys...) {
		if err != nil {
			h.t.Fatalf("heartbeat %v at +%v: %v", keys[i], h.clk.current().Sub(fakeBase), err)
		}
	}
}

// expectNotFound checks that err is a per-instance "register again" error.
func expectNotFound(t testing.TB, k Key, err error) {
	t.Helper()
	if !errors.Is(err, codes.ErrNotFound) || codes.Of(err) != codes.CodeNotFound {
		t.Fatalf("heartbeat %v: got %v, want an error wrapping codes.ErrNotFound", k, err)
	}
}

func (h *harness) expectStats(want Stats) {
	h.t.Helper()
	if got := h.tr.Stats(); got != want {
		h.t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestTTL_InactiveTrackerIgnoresEverything(t *testing.T) {
	h := newHarness(t)
	// Registered while the tracker is inactive: the observer call is ignored.
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	k := keyOf(web)

	errs, err := h.tr.Heartbeat(context.Background(), []Key{k})
	if errs != nil || !errors.Is(err, ErrNotActive) || !errors.Is(err, codes.ErrNotLeader) {
		t.Fatalf("Heartbeat on a follower = %v, %v; want nil, an error wrapping ErrNotActive and codes.ErrNotLeader", errs, err)
	}
	if codes.Of(err) != codes.CodeNotLeader {
		t.Fatalf("code of %v = %q, want %q", err, codes.Of(err), codes.CodeNotLeader)
	}

	// BecomeLeader from a node Raft does not consider leader is refused.
	h.tr.BecomeLeader()
	if h.tr.Active() {
		t.Fatal("BecomeLeader activated the tracker of a non-leader")
	}

	// Observer calls are ignored.
	h.tr.InstanceRegistered(&fsm.Instance{Name: "api", Addr: "10.0.0.2:80", TTL: time.Second, CreateIndex: 7, ModifyIndex: 7})
	h.tr.InstanceRemoved("web", "10.0.0.1:80")
	h.tr.Restored()
	h.expectStats(Stats{})

	// Nothing is ever timed or expired.
	h.advanceTo(at(24 * time.Hour))
	h.noCalls()
	if n := h.clk.Created(); n != 0 {
		t.Fatalf("an inactive tracker made %d timers", n)
	}
	if h.fsm.Get(k.Name, k.Addr) == nil {
		t.Fatal("instance was removed")
	}
	h.expectStats(Stats{})
}

func TestTTL_BecomeLeaderArmsEveryInstanceWithGrace(t *testing.T) {
	h := newHarness(t)
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	api := h.register("api", "10.0.0.2:80", 30*time.Second)

	// Leadership arrives a minute later: deadlines count from BecomeLeader.
	h.advanceTo(at(time.Minute))
	h.park()
	timers := h.clk.Created()
	h.becomeLeader()
	h.expectStats(Stats{Active: true, Tracked: 2})

	// Run now waits for the earliest deadline: now + TTL + grace.
	webDeadline := at(time.Minute + 10*time.Second + testGrace)
	apiDeadline := at(time.Minute + 30*time.Second + testGrace)
	h.clk.WaitForTimer(t, timers, func(d time.Time) bool { return d.Equal(webDeadline) })

	for _, c := range []struct {
		in       *fsm.Instance
		deadline time.Time
	}{{web, webDeadline}, {api, apiDeadline}} {
		h.advanceTo(c.deadline.Add(-time.Nanosecond))
		h.noCalls()
		h.advanceTo(c.deadline)
		h.expectCalls(expiry(c.in, c.deadline)) // exactly one, for its index
		if h.fsm.Get(c.in.Name, c.in.Addr) != nil {
			t.Fatalf("%s still registered after its expiry", c.in.Name)
		}
	}
	h.advanceTo(at(48 * time.Hour))
	h.noCalls()
	h.expectStats(Stats{Active: true, Expired: 2})
}

func TestTTL_RegistrationAfterBecomeLeaderIsArmedWithoutGrace(t *testing.T) {
	h := newHarness(t)
	h.becomeLeader()
	h.advanceTo(at(7 * time.Second))
	web := h.register("web", "10.0.0.1:80", 10*time.Second) // observed: armed at now + TTL

	h.advanceTo(at(17*time.Second - time.Nanosecond))
	h.noCalls()
	h.advanceTo(at(17 * time.Second))
	h.expectCalls(expiry(web, at(17*time.Second)))
	h.expectStats(Stats{Active: true, Expired: 1})
}

func TestTTL_HeartbeatsKeepAnInstanceAliveUntilTheyStop(t *testing.T) {
	const ttl = 10 * time.Second
	h := newHarness(t)
	h.becomeLeader()
	web := h.register("web", "10.0.0.1:80", ttl)

	// A heartbeat every TTL/2 for 10 TTLs: never expired.
	now := fakeBase
	for now.Before(at(10 * ttl)) {
		now = now.Add(ttl / 2)
		h.advanceTo(now)
		h.noCalls()
		h.expectHeartbeatOK(keyOf(web))
	}
	h.expectStats(Stats{Active: true, Tracked: 1})

	// The last heartbeat was at +100 s: expired at +110 s, not a moment before.
	last := now
	h.advanceTo(last.Add(ttl - time.Nanosecond))
	h.noCalls()
	h.advanceTo(last.Add(ttl))
	h.expectCalls(expiry(web, last.Add(ttl)))
}

func TestTTL_HeartbeatForUnknownOrExpiringInstanceIsNotFound(t *testing.T) {
	h := newHarness(t)
	h.becomeLeader()
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	k := keyOf(web)

	unknownAddr := Key{Name: "web", Addr: "10.0.0.9:80"}
	unknownName := Key{Name: "nosuch", Addr: "10.0.0.1:80"}
	errs := h.heartbeat(unknownAddr, k, unknownName)
	expectNotFound(t, unknownAddr, errs[0])
	if errs[1] != nil {
		t.Fatalf("heartbeat %v: %v", k, errs[1])
	}
	expectNotFound(t, unknownName, errs[2])

	// Its TTL ran out and the expiry is in flight: too late to heartbeat.
	h.prop.setHold(true)
	h.advanceTo(at(10 * time.Second))
	calls := h.expectCalls(expiry(web, at(10*time.Second)))
	expectNotFound(t, k, h.heartbeat(k)[0])
	h.expectStats(Stats{Active: true, Tracked: 1, Expiring: 1})

	// Committed: gone for good.
	h.prop.release(calls[0], nil)
	h.settle()
	expectNotFound(t, k, h.heartbeat(k)[0])
	h.expectStats(Stats{Active: true, Expired: 1})
}

func TestTTL_InstanceRemovedStopsTracking(t *testing.T) {
	h := newHarness(t)
	h.becomeLeader()
	web1 := h.register("web", "10.0.0.1:80", 10*time.Second)
	web2 := h.register("web", "10.0.0.2:80", 10*time.Second)
	h.unregister(web1.Name, web1.Addr)
	h.tr.InstanceRemoved("nosuch", "10.9.9.9:80") // unknown: harmless
	h.expectStats(Stats{Active: true, Tracked: 1})
	expectNotFound(t, keyOf(web1), h.heartbeat(keyOf(web1))[0])

	h.advanceTo(at(10 * time.Second))
	h.expectCalls(expiry(web2, at(10*time.Second)))
	h.advanceTo(at(24 * time.Hour))
	h.noCalls()
}

func TestTTL_ReRegistrationWhileExpiryIsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outcome error // of the expiry of the old registration
		late    bool  // its result arrives only once the new registration is being expired too
	}{
		{"old expiry commits and removes nothing", nil, false},
		{"old expiry fails and is not retried", errProposeFailed, false},
		{"old expiry commits after the new one expired", nil, true},
		{"old expiry fails after the new one expired", errProposeFailed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.becomeLeader()
			old := h.register("web", "10.0.0.1:80", 10*time.Second)
			k := keyOf(old)

			h.prop.setHold(true)
			h.advanceTo(at(10 * time.Second))
			oldCall := h.expectCalls(expiry(old, at(10*time.Second)))[0]

			// The client registers again while the expiry is in flight.
			h.advanceTo(at(13 * time.Second))
			cur := h.register("web", "10.0.0.1:80", 10*time.Second)
			if cur.ModifyIndex == old.ModifyIndex {
				t.Fatal("re-registration kept its index")
			}
			h.expectStats(Stats{Active: true, Tracked: 1})
			h.expectHeartbeatOK(k) // the new registration takes heartbeats (at +13 s: no extension)

			releaseOld := func() {
				t.Helper()
				h.prop.release(oldCall, tc.outcome)
				h.settle()
				h.noCalls()
				if in := h.fsm.Get(k.Name, k.Addr); in == nil || in.ModifyIndex != cur.ModifyIndex {
					t.Fatalf("after the old expiry: stored %+v, want the re-registration #%d", in, cur.ModifyIndex)
				}
			}
			if !tc.late {
				releaseOld()
				h.expectStats(Stats{Active: true, Tracked: 1})
				h.prop.setHold(false)
			}

			// The new registration expires at its own deadline: +13 s + TTL.
			h.advanceTo(at(23*time.Second - time.Nanosecond))
			h.noCalls()
			h.advanceTo(at(23 * time.Second))
			newCalls := h.expectCalls(expiry(cur, at(23*time.Second)))

			if tc.late {
				// The old result must not disturb the new expiry in flight:
				// no retry of either, later.
				releaseOld()
				h.expectStats(Stats{Active: true, Tracked: 1, Expiring: 1})
				h.advanceTo(at(23*time.Second + 10*testRetry))
				h.noCalls()
				h.prop.release(newCalls[0], nil)
				h.settle()
			}
			if h.fsm.Get(k.Name, k.Addr) != nil {
				t.Fatal("still registered after the expiry of its current registration")
			}
			h.expectStats(Stats{Active: true, Expired: 1})
		})
	}
}

func TestTTL_FailedExpiryIsRetried(t *testing.T) {
	t.Run("while still leader", func(t *testing.T) {
		h := newHarness(t)
		h.becomeLeader()
		web := h.register("web", "10.0.0.1:80", 10*time.Second)

		h.prop.failNextN(1)
		h.park()
		h.clk.Set(at(10 * time.Second))
		c := recv(t, "the expire proposal", h.prop.calls)
		if c.call != expiry(web, at(10*time.Second)) {
			t.Fatalf("proposal %v, want %v", c.call, expiry(web, at(10*time.Second)))
		}
		// It failed: the tracker re-queues the instance and wakes Run, which
		// then waits for the retry.
		retry := at(10*time.Second + testRetry)
		h.clk.WaitForTimer(t, 0, func(d time.Time) bool { return d.Equal(retry) })
		h.settle()
		h.noCalls()
		h.expectStats(Stats{Active: true, Tracked: 1})

		h.advanceTo(retry.Add(-time.Nanosecond))
		h.noCalls()
		h.advanceTo(retry)
		h.expectCalls(expiry(web, retry))
		if h.fsm.Get(web.Name, web.Addr) != nil {
			t.Fatal("still registered after the retried expiry")
		}
		h.expectStats(Stats{Active: true, Expired: 1})
	})

	t.Run("not once leadership is lost", func(t *testing.T) {
		h := newHarness(t)
		h.becomeLeader()
		web := h.register("web", "10.0.0.1:80", 10*time.Second)

		h.prop.failNextN(1)
		h.advanceTo(at(10 * time.Second))
		h.expectCalls(expiry(web, at(10*time.Second)))

		// Leadership is lost before the retry fires (raftnode has not told
		// the tracker yet): the tracker checks when the timer fires, proposes
		// nothing and steps down.
		h.prop.setLeader(false)
		h.advanceTo(at(10*time.Second + testRetry))
		h.noCalls()
		if h.tr.Active() {
			t.Fatal("tracker still active after finding it is no longer leader")
		}
		h.expectStats(Stats{})
		if h.fsm.Get(web.Name, web.Addr) == nil {
			t.Fatal("instance removed")
		}
		if _, err := h.tr.Heartbeat(context.Background(), []Key{keyOf(web)}); !errors.Is(err, ErrNotActive) {
			t.Fatalf("Heartbeat after stepping down: %v, want ErrNotActive", err)
		}
	})
}

func TestTTL_StepDownDropsDeadlinesAndLateResultsDoNotResurrect(t *testing.T) {
	h := newHarness(t)
	h.becomeLeader()
	web1 := h.register("web", "10.0.0.1:80", 10*time.Second)
	web2 := h.register("web", "10.0.0.2:80", 10*time.Second)

	h.prop.setHold(true)
	h.advanceTo(at(10 * time.Second))
	calls := h.expectCalls(expiry(web1, at(10*time.Second)), expiry(web2, at(10*time.Second)))
	h.expectStats(Stats{Active: true, Tracked: 2, Expiring: 2})

	h.prop.setLeader(false)
	h.tr.StepDown()
	h.expectStats(Stats{})
	if _, err := h.tr.Heartbeat(context.Background(), []Key{keyOf(web2)}); !errors.Is(err, ErrNotActive) {
		t.Fatalf("Heartbeat after StepDown: %v, want ErrNotActive", err)
	}

	// web1's expiry had been committed; its result arrives only now.
	h.prop.release(calls[0], nil)
	h.settle()
	if h.fsm.Get(web1.Name, web1.Addr) != nil {
		t.Fatal("web1's committed expiry was not applied")
	}
	if st := h.tr.Stats(); st.Active || st.Tracked != 0 || st.Expiring != 0 {
		t.Fatalf("a result after StepDown changed the tracker: %+v", st)
	}
	h.advanceTo(at(time.Hour))
	h.noCalls()

	// Leader again: every instance left is re-armed with grace.
	h.becomeLeader()
	h.expectStats(Stats{Active: true, Tracked: 1})
	// web2's expiry from the previous term fails only now. It must not
	// re-queue web2 for a retry at now + RetryInterval: the new term's
	// deadline, with grace, stands.
	h.prop.release(calls[1], errProposeFailed)
	h.prop.setHold(false)
	deadline := at(time.Hour + 10*time.Second + testGrace)
	h.advanceTo(deadline.Add(-time.Nanosecond))
	h.noCalls()
	h.expectStats(Stats{Active: true, Tracked: 1})
	h.advanceTo(deadline)
	h.expectCalls(expiry(web2, deadline))
	h.expectStats(Stats{Active: true, Expired: 1})
}

type heartbeatResult struct {
	errs []error
	err  error
}

// startWaitingHeartbeat sends a Heartbeat for k from another goroutine while
// the node is Raft leader but the tracker is not armed yet, and returns once
// the Heartbeat has found the tracker inactive and asked Raft whether this
// node leads: from then on it waits for BecomeLeader or ctx.
func startWaitingHeartbeat(h *harness, ctx context.Context, k Key) <-chan heartbeatResult {
	h.t.Helper()
	asked := h.prop.watchIsLeader()
	done := make(chan heartbeatResult, 1)
	go func() {
		errs, err := h.tr.Heartbeat(ctx, []Key{k})
		done <- heartbeatResult{errs, err}
	}()
	recv(h.t, "Heartbeat to ask whether this node leads", asked)
	return done
}

func TestTTL_HeartbeatWhileLeaderIsArming(t *testing.T) {
	t.Run("succeeds once BecomeLeader is called", func(t *testing.T) {
		h := newHarness(t)
		web := h.register("web", "10.0.0.1:80", 10*time.Second)
		h.prop.setLeader(true) // Raft leader, barrier still running
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		done := startWaitingHeartbeat(h, ctx, keyOf(web))
		select {
		case r := <-done:
			t.Fatalf("Heartbeat returned before BecomeLeader: %v, %v", r.errs, r.err)
		default:
		}

		h.tr.BecomeLeader()
		r := recv(t, "Heartbeat to return", done)
		if r.err != nil || len(r.errs) != 1 || r.errs[0] != nil {
			t.Fatalf("Heartbeat = %v, %v; want success", r.errs, r.err)
		}
		// A heartbeat does not cut the grace short: expiry at TTL + grace.
		h.advanceTo(at(12*time.Second - time.Nanosecond))
		h.noCalls()
		h.advanceTo(at(12 * time.Second))
		h.expectCalls(expiry(web, at(12*time.Second)))
	})

	t.Run("fails with ErrNoLeader when ctx ends first", func(t *testing.T) {
		h := newHarness(t)
		web := h.register("web", "10.0.0.1:80", 10*time.Second)
		h.prop.setLeader(true)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		r := recv(t, "Heartbeat to return", startWaitingHeartbeat(h, ctx, keyOf(web)))
		if r.errs != nil || !errors.Is(r.err, codes.ErrNoLeader) || errors.Is(r.err, codes.ErrNotLeader) {
			t.Fatalf("Heartbeat = %v, %v; want nil and an error wrapping codes.ErrNoLeader", r.errs, r.err)
		}
		if h.tr.Active() {
			t.Fatal("tracker active without BecomeLeader")
		}
	})
}

// Regression: a Heartbeat waiting for the arming must be released when
// leadership is lost before BecomeLeader. StepDown used to return early on an
// inactive tracker without signalling the waiters, so the heartbeat hung until
// its ctx ended and reported codes.ErrNoLeader, instead of returning
// ErrNotActive (codes.ErrNotLeader) at once so the caller finds the real leader.
func TestTTL_StepDownReleasesHeartbeatWaitingForArming(t *testing.T) {
	h := newHarness(t)
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	h.prop.setLeader(true) // Raft leader, barrier still running
	// The bound is how long the bug makes the heartbeat hang.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := startWaitingHeartbeat(h, ctx, keyOf(web))
	h.prop.setLeader(false) // deposed during the barrier
	h.tr.StepDown()         // what raftnode's leaderLost does
	r := recv(t, "Heartbeat to return", done)
	if !errors.Is(r.err, ErrNotActive) {
		t.Errorf("Heartbeat after leadership was lost = %v, %v; want ErrNotActive (codes.ErrNotLeader) as soon as StepDown is called, not a wait for ctx", r.errs, r.err)
	}
}

func TestTTL_Stats(t *testing.T) {
	h := newHarness(t)
	h.expectStats(Stats{})
	web1 := h.register("web", "10.0.0.1:80", 10*time.Second)
	web2 := h.register("web", "10.0.0.2:80", 20*time.Second)
	web3 := h.register("web", "10.0.0.3:80", 30*time.Second)
	h.expectStats(Stats{}) // a follower tracks nothing

	h.becomeLeader()
	h.expectStats(Stats{Active: true, Tracked: 3})

	h.prop.setHold(true)
	h.advanceTo(at(12 * time.Second))
	calls := h.expectCalls(expiry(web1, at(12*time.Second)))
	h.expectStats(Stats{Active: true, Tracked: 3, Expiring: 1})
	h.prop.release(calls[0], nil)
	h.settle()
	h.expectStats(Stats{Active: true, Tracked: 2, Expired: 1})

	h.advanceTo(at(22 * time.Second))
	calls = h.expectCalls(expiry(web2, at(22*time.Second)))
	h.expectStats(Stats{Active: true, Tracked: 2, Expiring: 1, Expired: 1})
	h.prop.release(calls[0], errProposeFailed) // re-queued for a retry
	h.settle()
	h.expectStats(Stats{Active: true, Tracked: 2, Expired: 1})

	h.unregister(web3.Name, web3.Addr)
	h.expectStats(Stats{Active: true, Tracked: 1, Expired: 1})

	h.prop.setHold(false)
	h.advanceTo(at(22*time.Second + testRetry))
	h.expectCalls(expiry(web2, at(22*time.Second+testRetry)))
	h.expectStats(Stats{Active: true, Expired: 2})

	// Expired is a running count; stepping down drops only the deadlines.
	h.prop.setLeader(false)
	h.tr.StepDown()
	h.expectStats(Stats{Expired: 2})
}

func TestTTL_ManyInstancesExpireInDeadlineOrderExactlyOnce(t *testing.T) {
	const n = 10000
	for _, tc := range []struct {
		name        string
		maxInFlight int
		ordered     bool // proposals one at a time: their order is the tracker's order
	}{
		{"one proposal at a time", 1, true},
		{"concurrent proposals", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			// Staggered TTLs, 1 ms apart, in shuffled order.
			perm := rng.Perm(n)
			ins := make([]*fsm.Instance, n)
			byDeadline := make([]*fsm.Instance, n)
			rank := make(map[uint64]int, n) // ModifyIndex -> position in byDeadline
			for i := range ins {
				in := &fsm.Instance{
					Name:        fmt.Sprintf("svc-%02d", i%37),
					Addr:        fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256),
					TTL:         time.Second + time.Duration(perm[i])*time.Millisecond,
					CreateIndex: uint64(i + 1),
					ModifyIndex: uint64(i + 1),
				}
				ins[i], byDeadline[perm[i]], rank[in.ModifyIndex] = in, in, perm[i]
			}
			h := newHarness(t, withStatic(ins), withConfig(func(c *Config) { c.MaxInFlight = tc.maxInFlight }))
			h.becomeLeader()
			deadline := func(r int) time.Time { return at(byDeadline[r].TTL + testGrace) }

			// Move the clock in uneven steps, each landing on a deadline or
			// 1 ns before one; after each, exactly the instances whose deadline
			// has come are proposed, once.
			next := 0 // byDeadline[:next] have been proposed
			for next < n {
				now := deadline(min(next+rng.IntN(700), n-1))
				if rng.IntN(2) == 0 {
					now = now.Add(-time.Nanosecond)
				}
				h.advanceTo(now)
				var want []call
				for next < n && !deadline(next).After(now) {
					want = append(want, expiry(byDeadline[next], now))
					next++
				}
				got := h.takeCalls()
				if !tc.ordered {
					slices.SortFunc(got, func(a, b *propCall) int { return rank[a.Index] - rank[b.Index] })
				}
				if len(got) != len(want) {
					t.Fatalf("at +%v: %d proposals, want %d", now.Sub(fakeBase), len(got), len(want))
				}
				for i := range want {
					if got[i].call != want[i] {
						t.Fatalf("at +%v: proposal %d is %v, want %v", now.Sub(fakeBase), i, got[i].call, want[i])
					}
				}
			}
			h.advanceTo(at(48 * time.Hour))
			h.noCalls()
			// The static source never reports removals, so every entry stays
			// marked as expiring; none was proposed twice.
			h.expectStats(Stats{Active: true, Tracked: n, Expiring: n, Expired: n})
		})
	}
}

func TestTTL_ReRegistrationChangesTheTTL(t *testing.T) {
	t.Run("shortened 1h to 1s expires at the earlier deadline", func(t *testing.T) {
		h := newHarness(t)
		h.becomeLeader()
		h.register("web", "10.0.0.1:80", time.Hour)
		h.advanceTo(at(10 * time.Second))
		h.park() // waiting for +1 h
		timers := h.clk.Created()
		cur := h.register("web", "10.0.0.1:80", time.Second)
		// Run wakes by itself and now waits for the earlier deadline.
		h.clk.WaitForTimer(t, timers, func(d time.Time) bool { return d.Equal(at(11 * time.Second)) })

		h.advanceTo(at(11*time.Second - time.Nanosecond))
		h.noCalls()
		h.advanceTo(at(11 * time.Second))
		h.expectCalls(expiry(cur, at(11*time.Second)))
		h.advanceTo(at(2 * time.Hour))
		h.noCalls()
	})

	t.Run("lengthened 1s to 1h expires at the later deadline", func(t *testing.T) {
		h := newHarness(t)
		h.becomeLeader()
		h.register("web", "10.0.0.1:80", time.Second)
		h.advanceTo(at(500 * time.Millisecond))
		cur := h.register("web", "10.0.0.1:80", time.Hour)

		h.advanceTo(at(time.Second))
		h.noCalls()
		deadline := at(time.Hour + 500*time.Millisecond)
		h.advanceTo(deadline.Add(-time.Nanosecond))
		h.noCalls()
		h.advanceTo(deadline)
		h.expectCalls(expiry(cur, deadline))
	})
}

func TestTTL_RestoredReArmsFromTheSourceWithGrace(t *testing.T) {
	h := newHarness(t)
	h.becomeLeader()
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	h.advanceTo(at(5 * time.Second))
	h.expectHeartbeatOK(keyOf(web)) // deadline +15 s

	h.advanceTo(at(6 * time.Second))
	h.tr.Restored() // a snapshot replaced the FSM's state: reload, with grace
	h.settle()
	h.expectStats(Stats{Active: true, Tracked: 1})

	deadline := at(6*time.Second + 10*time.Second + testGrace)
	h.advanceTo(deadline.Add(-time.Nanosecond))
	h.noCalls()
	h.advanceTo(deadline)
	h.expectCalls(expiry(web, deadline))
}

// Regression: a reload requested by Restored that runs after StepDown must
// not fill the tracker again while it is inactive (load used to replace the
// entries without checking, and StepDown did not clear the pending reload).
func TestTTL_ReloadAfterStepDownLeavesTrackerEmpty(t *testing.T) {
	var src *gatedSource
	h := newHarness(t, withSource(func(f *fsm.FSM) InstanceSource {
		src = &gatedSource{InstanceSource: f}
		return src
	}))
	h.register("web", "10.0.0.1:80", 10*time.Second)
	h.becomeLeader()
	h.settle()

	entered, through := src.holdNext()
	h.tr.Restored()
	recv(t, "Run to start reloading from the source", entered)
	h.prop.setLeader(false)
	h.tr.StepDown() // leadership lost while the reload waits for the FSM's lock
	h.expectStats(Stats{})
	src.open()
	recv(t, "the reload to finish", through)

	if st := h.tr.Stats(); st != (Stats{}) {
		t.Errorf("after StepDown and a reload that finished later: Stats = %+v, want %+v (an inactive tracker holds no deadlines)", st, Stats{})
	}
}

// Regression (found by the fault suite, flaky-links seed 2): an expire
// proposal whose commit took longer than a proposal timeout was treated as
// failed; the tracker reset the instance, acknowledged a heartbeat, and then
// the old proposal committed anyway — an instance expired 2 s after a
// heartbeat with a 2 s TTL. An expire in flight must keep the instance
// "expiring" (heartbeats refused) until Raft settles it.
func TestTTL_ExpiryInFlightKeepsRefusingHeartbeats(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outcome error // how the held proposal ends
		removed bool
	}{
		{"commits late", nil, true},
		{"outcome unknown", fmt.Errorf("fake raft: leadership lost: %w", codes.ErrUnknownOutcome), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.becomeLeader()
			web := h.register("web", "10.0.0.1:80", 10*time.Second)
			h.prop.setHold(true)
			h.advanceTo(at(10 * time.Second))
			c := recv(t, "the expire proposal", h.prop.calls)
			// Long after any timeout: still in flight, no retry, heartbeats refused.
			h.advanceTo(at(10 * time.Minute))
			h.noCalls()
			hb := func() error {
				t.Helper()
				errs, err := h.tr.Heartbeat(context.Background(), []Key{{Name: web.Name, Addr: web.Addr}})
				if err != nil {
					t.Fatalf("Heartbeat: %v", err)
				}
				return errs[0]
			}
			if err := hb(); !errors.Is(err, codes.ErrNotFound) {
				t.Fatalf("heartbeat while the expiry is in flight: %v, want ErrNotFound", err)
			}
			h.prop.release(c, tc.outcome)
			h.settle()
			if got := h.fsm.Get(web.Name, web.Addr) == nil; got != tc.removed {
				t.Fatalf("removed = %v, want %v", got, tc.removed)
			}
			if !tc.removed {
				// Fate unknown: never retried, never acknowledged.
				h.advanceTo(at(20 * time.Minute))
				h.noCalls()
				if err := hb(); !errors.Is(err, codes.ErrNotFound) {
					t.Fatalf("heartbeat after an unknown outcome: %v, want ErrNotFound", err)
				}
			}
		})
	}
}
