package fsm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// ---------------------------------------------------------------------------
// Helpers.

// summarize renders events as "kind addr@index" (markers: "kind@index").
func summarize(evs []Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		if e.Instance != nil {
			out = append(out, fmt.Sprintf("%s %s@%d", e.Kind, e.Instance.Addr, e.Index))
		} else {
			out = append(out, fmt.Sprintf("%s@%d", e.Kind, e.Index))
		}
	}
	return out
}

// drainNow returns every event Next can give without waiting: Next is called
// with a cancelled context, which it only looks at when nothing is ready.
func drainNow(t *testing.T, w *Watcher) []Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []Event
	for {
		evs, err := w.Next(ctx, 0)
		if errors.Is(err, context.Canceled) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, evs...)
	}
}

// next calls Next once, failing the test if it errors or takes over 5 s.
func next(t *testing.T, w *Watcher, max int) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := w.Next(ctx, max)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return evs
}

// collectUntil reads until an event with Index >= idx that is a change or a
// current marker has been returned.
func collectUntil(t *testing.T, w *Watcher, idx uint64) []Event {
	t.Helper()
	var out []Event
	for {
		evs := next(t, w, 0)
		out = append(out, evs...)
		for _, e := range evs {
			if e.Index >= idx && e.Kind != EventResync {
				return out
			}
		}
	}
}

type nextResult struct {
	evs      []Event
	err      error
	panicked any
}

// goNext calls Next in a goroutine; a panic is reported, not fatal.
func goNext(ctx context.Context, w *Watcher, max int) <-chan nextResult {
	ch := make(chan nextResult, 1)
	go func() {
		var r nextResult
		defer func() {
			r.panicked = recover()
			ch <- r
		}()
		r.evs, r.err = w.Next(ctx, max)
	}()
	return ch
}

// waitBlockedInNext polls until at least n goroutines are parked in the
// select of (*Watcher).Next.
func waitBlockedInNext(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		m := runtime.Stack(buf, true)
		if m == len(buf) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		count := 0
		for _, g := range strings.Split(string(buf[:m]), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(header, "[select") && strings.Contains(g, "fsm.(*Watcher).Next(") {
				count++
			}
		}
		if count >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d goroutines blocked in Next after 5s", count, n)
		}
		runtime.Gosched()
	}
}

// replica rebuilds a service's state from watch events.
type replica map[string]uint64 // addr -> ModifyIndex

func (r replica) apply(e Event) {
	switch e.Kind {
	case EventResync:
		clear(r)
	case EventUp, EventUpdate:
		r[e.Instance.Addr] = e.Instance.ModifyIndex
	case EventDown:
		delete(r, e.Instance.Addr)
	}
}

func replicaOf(ins []*Instance) replica {
	r := replica{}
	for _, in := range ins {
		r[in.Addr] = in.ModifyIndex
	}
	return r
}

// ---------------------------------------------------------------------------
// History ring.

func TestFSM_HistoryRing(t *testing.T) {
	tests := []struct {
		limit     int
		n         int // events pushed, at indices 10, 20, ..., 10n
		wantFirst int // first retained event number (1-based)
	}{
		{0, 3, 3}, // limit < 1 means 1
		{1, 1, 1},
		{1, 3, 3},
		{3, 2, 1},
		{3, 3, 1},
		{3, 7, 5},
		{5, 5, 1},
		{6, 13, 8}, // grows 4 -> 6, then wraps
		{8, 100, 93},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("limit%d_n%d", tc.limit, tc.n), func(t *testing.T) {
			h := newHistory(tc.limit, 0)
			for i := 1; i <= tc.n; i++ {
				h.push(Event{Kind: EventUp, Index: uint64(10 * i)})
			}
			var want []uint64
			for i := tc.wantFirst; i <= tc.n; i++ {
				want = append(want, uint64(10*i))
			}
			var got []uint64
			for _, e := range h.all() {
				got = append(got, e.Index)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("all() = %v, want %v", got, want)
			}
			wantTrunc := uint64(10 * (tc.wantFirst - 1))
			if h.truncatedThrough != wantTrunc {
				t.Errorf("truncatedThrough = %d, want %d", h.truncatedThrough, wantTrunc)
			}
			for idx := uint64(0); idx <= uint64(10*tc.n+5); idx++ {
				if got, want := h.canResumeFrom(idx), idx >= wantTrunc; got != want {
					t.Errorf("canResumeFrom(%d) = %v, want %v", idx, got, want)
				}
				for _, max := range []int{0, 1, 2, 1000} {
					var exp []uint64
					for _, x := range want {
						if x > idx && len(exp) < max {
							exp = append(exp, x)
						}
					}
					var res []uint64
					for _, e := range h.after(nil, idx, max) {
						res = append(res, e.Index)
					}
					if !slices.Equal(res, exp) {
						t.Errorf("after(%d, %d) = %v, want %v", idx, max, res, exp)
					}
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Watch basics.

func TestFSM_WatchFromZero(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil)   // 1
	h.register("web", "b", nil)   // 2
	h.register("other", "x", nil) // 3
	h.register("web", "a", nil)   // 4: a's last registration
	h.f.Apply(h.configLog())      // 5

	w, err := h.f.Watch("web", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()
	first := next(t, w, 0)
	if got, want := summarize(first), []string{"up b@2", "up a@4", "current@5"}; !slices.Equal(got, want) {
		t.Fatalf("initial state = %v, want %v", got, want)
	}
	if first[1].Instance.CreateIndex != 1 || first[0].Name != "web" || first[2].Name != "web" {
		t.Errorf("state events carry wrong data: %+v", first)
	}

	// Later changes arrive in order, each once, with strictly increasing index.
	h.register("web", "c", nil)   // 6
	h.unregister("web", "b")      // 7
	h.expire("web", "a", 4)       // 8
	h.register("other", "y", nil) // 9: another service
	h.expire("web", "c", 1)       // 10: stale, no event
	h.register("web", "a", nil)   // 11
	h.register("web", "c", nil)   // 12
	evs := collectUntil(t, w, 12)
	want := []string{"up c@6", "down b@7", "down a@8", "up a@11", "update c@12"}
	if got := summarize(evs); !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
	if evs[1].Reason != ReasonUnregister || evs[2].Reason != ReasonExpire || evs[0].Reason != ReasonNone {
		t.Errorf("reasons = %v %v %v", evs[0].Reason, evs[1].Reason, evs[2].Reason)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Index <= evs[i-1].Index {
			t.Errorf("index not strictly increasing: %v", summarize(evs))
		}
	}
	if w.cursor != 12 {
		t.Errorf("Cursor = %d, want 12", w.cursor)
	}
	if evs := drainNow(t, w); len(evs) != 0 {
		t.Errorf("extra events %v", summarize(evs))
	}

	// A service nobody registered: just the current marker.
	w2, err := h.f.Watch("nope", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w2.Close()
	if got, want := summarize(drainNow(t, w2)), []string{"current@12"}; !slices.Equal(got, want) {
		t.Errorf("unknown service = %v, want %v", got, want)
	}
}

func TestFSM_WatchResumeFromHistory(t *testing.T) {
	tests := []struct {
		from uint64
		want []string
	}{
		{1, []string{"up b@2", "update a@4", "down b@5", "up c@7", "up d@8"}},
		{2, []string{"update a@4", "down b@5", "up c@7", "up d@8"}},
		{3, []string{"update a@4", "down b@5", "up c@7", "up d@8"}}, // 3 is another service's index
		{4, []string{"down b@5", "up c@7", "up d@8"}},
		{6, []string{"up c@7", "up d@8"}},
		{7, []string{"up d@8"}}, // the applied index
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("from", tc.from), func(t *testing.T) {
			h := newHarness(t, Config{})
			h.register("web", "a", nil)   // 1
			h.register("web", "b", nil)   // 2
			h.register("other", "x", nil) // 3
			h.register("web", "a", nil)   // 4
			h.unregister("web", "b")      // 5
			h.register("other", "y", nil) // 6
			h.register("web", "c", nil)   // 7

			w, err := h.f.Watch("web", tc.from)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			defer w.Close()
			if w.cursor != tc.from {
				t.Errorf("Cursor = %d, want %d", w.cursor, tc.from)
			}
			h.register("web", "d", nil) // 8
			if got := summarize(collectUntil(t, w, 8)); !slices.Equal(got, tc.want) {
				t.Errorf("resume from %d = %v, want %v", tc.from, got, tc.want)
			}
		})
	}
}

func TestFSM_WatchResumeTooOld(t *testing.T) {
	// History keeps 3 events: after 6 of them it holds 4, 5, 6 (3 dropped).
	resync := []string{"resync@6", "up a@4", "up b@5", "up c@6", "current@6"}
	tests := []struct {
		from uint64
		want []string
	}{
		{1, resync},
		{2, resync},
		{3, []string{"update a@4", "update b@5", "update c@6", "current@6"}}, // exactly the dropped index: nothing missing
		{4, []string{"update b@5", "update c@6", "current@6"}},
		{5, []string{"update c@6", "current@6"}},
		{6, []string{"current@6"}}, // caught up already: only the marker
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("from", tc.from), func(t *testing.T) {
			h := newHarness(t, Config{HistoryPerService: 3})
			for _, a := range []string{"a", "b", "c", "a", "b", "c"} { // 1..6
				h.register("web", a, nil)
			}
			w, err := h.f.Watch("web", tc.from)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			defer w.Close()
			if got := summarize(drainNow(t, w)); !slices.Equal(got, tc.want) {
				t.Errorf("resume from %d = %v, want %v", tc.from, got, tc.want)
			}
			h.register("web", "d", nil) // 7: changes follow either way
			if got, want := summarize(drainNow(t, w)), []string{"up d@7"}; !slices.Equal(got, want) {
				t.Errorf("then %v, want %v", got, want)
			}
		})
	}
}

func TestFSM_WatchFromFutureIsStale(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil) // 1
	h.register("web", "b", nil) // 2
	for _, from := range []uint64{3, 4, 1 << 40} {
		w, err := h.f.Watch("web", from)
		if !errors.Is(err, codes.ErrStaleNode) || w != nil {
			t.Errorf("Watch(web, %d) = %v, %v; want nil and an error wrapping codes.ErrStaleNode", from, w, err)
		}
	}
	if s := h.f.Stats(); s.Watchers != 0 {
		t.Errorf("failed Watch left %d watchers counted", s.Watchers)
	}
	w, err := h.f.Watch("web", 2)
	if err != nil {
		t.Fatalf("Watch at the applied index: %v", err)
	}
	w.Close()
}

func TestFSM_WatchNextMax(t *testing.T) {
	h := newHarness(t, Config{})
	for i := range 5 { // 1..5
		h.register("web", fmt.Sprint("i", i), nil)
	}
	w, err := h.f.Watch("web", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()

	// The initial state: 5 ups and a current marker, 2 at a time.
	var sizes []int
	var all []Event
	for len(all) < 6 {
		evs := next(t, w, 2)
		sizes = append(sizes, len(evs))
		all = append(all, evs...)
	}
	if !slices.Equal(sizes, []int{2, 2, 2}) || all[5].Kind != EventCurrent {
		t.Errorf("state in chunks %v ending %v", sizes, summarize(all[len(all)-1:]))
	}

	// Changes from the history, 3 at a time.
	for i := range 5 { // 6..10
		h.register("web", fmt.Sprint("i", i), nil)
	}
	sizes, all = nil, nil
	for len(all) < 5 {
		evs := next(t, w, 3)
		sizes = append(sizes, len(evs))
		all = append(all, evs...)
	}
	if !slices.Equal(sizes, []int{3, 2}) || all[0].Index != 6 || all[4].Index != 10 {
		t.Errorf("changes in chunks %v: %v", sizes, summarize(all))
	}

	// max <= 0 means 256.
	for _, max := range []int{0, -1} {
		var logs []*raft.Log
		for i := range 300 {
			logs = append(logs, h.log(RegisterType, RegisterCommand{Name: "web", Addr: fmt.Sprint("i", i%7)}))
		}
		h.f.ApplyBatch(logs)
		first := next(t, w, max)
		rest := next(t, w, max)
		if len(first) != 256 || len(rest) != 44 {
			t.Errorf("max %d: chunks of %d and %d, want 256 and 44", max, len(first), len(rest))
		}
		if first[255].Index+1 != rest[0].Index {
			t.Errorf("max %d: gap between chunks: %d then %d", max, first[255].Index, rest[0].Index)
		}
	}
}

func TestFSM_WatchNextContext(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil) // 1
	w, err := h.f.Watch("web", 1)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()
	if got, want := summarize(next(t, w, 0)), []string{"current@1"}; !slices.Equal(got, want) {
		t.Fatalf("resumed watch first says %v, want %v", got, want)
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Next(cancelled, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Next(cancelled) = %v, want context.Canceled", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := w.Next(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next(deadline) = %v, want context.DeadlineExceeded", err)
	}

	// Cancelled while blocked.
	ctx, cancel3 := context.WithCancel(context.Background())
	resCh := goNext(ctx, w, 0)
	waitBlockedInNext(t, 1)
	cancel3()
	if r := <-resCh; !errors.Is(r.err, context.Canceled) || r.panicked != nil || len(r.evs) != 0 {
		t.Errorf("blocked Next after cancel = %v %v %v, want context.Canceled", r.evs, r.err, r.panicked)
	}

	// The watcher is still usable and lost nothing.
	h.register("web", "b", nil) // 2
	if got, want := summarize(next(t, w, 0)), []string{"up b@2"}; !slices.Equal(got, want) {
		t.Errorf("after cancellations got %v, want %v", got, want)
	}
}

func TestFSM_WatchClose(t *testing.T) {
	h := newHarness(t, Config{})
	f := h.f
	h.register("web", "a", nil)
	w1, _ := f.Watch("web", 1)
	next(t, w1, 0) // the resumed watch's current marker
	// A second watcher of the same service keeps its notifier alive while w1
	// closes; TestFSM_WatchCloseRacesNext covers the last watcher.
	w2, _ := f.Watch("web", 1)
	if got := f.Stats().Watchers; got != 2 {
		t.Fatalf("Watchers = %d, want 2", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resCh := goNext(ctx, w1, 0)
	waitBlockedInNext(t, 1)
	w1.Close()
	if r := <-resCh; !errors.Is(r.err, ErrWatcherClosed) || r.panicked != nil {
		t.Errorf("blocked Next after Close = %v %v, want ErrWatcherClosed", r.err, r.panicked)
	}
	if got := f.Stats().Watchers; got != 1 {
		t.Errorf("Watchers after Close = %d, want 1", got)
	}
	w1.Close() // again: no effect
	if got := f.Stats().Watchers; got != 1 {
		t.Errorf("Watchers after a second Close = %d, want 1", got)
	}
	if _, err := w1.Next(ctx, 0); !errors.Is(err, ErrWatcherClosed) {
		t.Errorf("Next after Close = %v, want ErrWatcherClosed", err)
	}
	h.register("web", "b", nil) // an event does not revive it
	if _, err := w1.Next(ctx, 0); !errors.Is(err, ErrWatcherClosed) {
		t.Errorf("Next after Close and a change = %v, want ErrWatcherClosed", err)
	}

	// Concurrent Closes of one watcher count once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w2.Close()
		}()
	}
	wg.Wait()
	f.mu.RLock()
	nNotifiers := len(f.notifiers)
	f.mu.RUnlock()
	if got := f.Stats().Watchers; got != 0 || nNotifiers != 0 {
		t.Errorf("after closing all: Watchers = %d, notifiers = %d; want 0, 0", got, nNotifiers)
	}
}

func TestFSM_WatchStats(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil)
	var ws []*Watcher
	for _, name := range []string{"web", "web", "db", "nope"} {
		w, err := h.f.Watch(name, 0)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		ws = append(ws, w)
		if got := h.f.Stats().Watchers; got != len(ws) {
			t.Errorf("Watchers = %d, want %d", got, len(ws))
		}
	}
	if _, err := h.f.Watch("web", 99); err == nil {
		t.Fatalf("Watch beyond applied succeeded")
	}
	for i, w := range ws {
		w.Close()
		if got, want := h.f.Stats().Watchers, len(ws)-i-1; got != want {
			t.Errorf("after %d closes Watchers = %d, want %d", i+1, got, want)
		}
	}
	if s := h.f.Stats(); s.Services != 1 || s.Instances != 1 {
		t.Errorf("watches changed the registry: %+v", s)
	}
}

// ---------------------------------------------------------------------------
// Watchers that fall behind, many watchers, forgotten services.

func TestFSM_WatchSlowConsumer(t *testing.T) {
	const hist = 8
	h := newHarness(t, Config{HistoryPerService: hist})
	h.register("web", "a", nil)
	h.register("web", "b", nil)
	w, err := h.f.Watch("web", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()
	drainNow(t, w)

	// 10x the history, applied while the watcher reads nothing; Apply must
	// never wait for it.
	var logs []*raft.Log
	for i := range 10 * hist {
		addr := fmt.Sprint("i", i%5)
		if i%3 == 2 {
			logs = append(logs, h.log(UnregisterType, UnregisterCommand{Name: "web", Addr: addr}))
		} else {
			logs = append(logs, h.log(RegisterType, RegisterCommand{Name: "web", Addr: addr}))
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, l := range logs {
			h.f.Apply(l)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("Apply blocked on a watcher that does not read")
	}

	evs := drainNow(t, w)
	applied := h.f.AppliedIndex()
	if len(evs) < 2 || evs[0].Kind != EventResync || evs[0].Index != applied || evs[len(evs)-1].Kind != EventCurrent || evs[len(evs)-1].Index != applied {
		t.Fatalf("slow consumer got %v, want resync@%d, state, current@%d", summarize(evs), applied, applied)
	}
	rep := replica{"stale": 1}
	for _, e := range evs {
		rep.apply(e)
	}
	_, ins := h.f.List("web", nil)
	if want := replicaOf(ins); !maps.Equal(rep, want) {
		t.Errorf("rebuilt state %v, want %v", rep, want)
	}
	// And it follows normally afterwards.
	h.register("web", "z", nil)
	if got, want := summarize(drainNow(t, w)), []string{fmt.Sprintf("up z@%d", applied+1)}; !slices.Equal(got, want) {
		t.Errorf("then %v, want %v", got, want)
	}
}

func TestFSM_WatchManyWatchers(t *testing.T) {
	const n = 1000
	h := newHarness(t, Config{})
	h.register("other", "o", nil) // 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ws := make([]*Watcher, n)
	results := make([]<-chan nextResult, n)
	for i := range ws {
		w, err := h.f.Watch("web", 1)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		next(t, w, 0) // the resumed watch's current marker
		ws[i] = w
		results[i] = goNext(ctx, w, 0)
	}
	if got := h.f.Stats().Watchers; got != n {
		t.Errorf("Watchers = %d, want %d", got, n)
	}
	waitBlockedInNext(t, n)

	h.register("web", "a", nil) // 2
	for i, ch := range results {
		r := <-ch
		if r.err != nil || r.panicked != nil || !slices.Equal(summarize(r.evs), []string{"up a@2"}) {
			t.Fatalf("watcher %d got %v %v %v", i, summarize(r.evs), r.err, r.panicked)
		}
	}
	for _, w := range ws {
		w.Close()
	}
	if got := h.f.Stats().Watchers; got != 0 {
		t.Errorf("Watchers after closing all = %d", got)
	}
}

func TestFSM_WatchForgottenService(t *testing.T) {
	h := newHarness(t, Config{MaxEmptyServices: 1})
	f := h.f
	h.register("s1", "a", nil) // 1
	behind, _ := f.Watch("s1", 0)
	defer behind.Close()
	uptodate, _ := f.Watch("s1", 0)
	defer uptodate.Close()
	drainNow(t, behind)
	drainNow(t, uptodate)

	h.unregister("s1", "a") // 2: s1 empty
	if got, want := summarize(drainNow(t, uptodate)), []string{"down a@2"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	h.register("s2", "a", nil) // 3
	h.unregister("s2", "a")    // 4: two empty services, s1 forgotten
	if hasService(f, "s1") || forgottenThrough(f) != 2 {
		t.Fatalf("want s1 forgotten through 2, have %v %d", hasService(f, "s1"), forgottenThrough(f))
	}

	// The watcher that missed the down event cannot replay it: it resyncs.
	if got, want := summarize(drainNow(t, behind)), []string{"resync@4", "current@4"}; !slices.Equal(got, want) {
		t.Errorf("watcher behind the forgotten events got %v, want %v", got, want)
	}
	// The one that saw everything just waits.
	if evs := drainNow(t, uptodate); len(evs) != 0 {
		t.Errorf("up-to-date watcher got %v, want nothing", summarize(evs))
	}
	// New watches on the forgotten service, resuming from before or after it.
	resumeTests := []struct {
		from uint64
		want []string
	}{
		{1, []string{"resync@4", "current@4"}},
		{2, []string{"current@4"}},
		{4, []string{"current@4"}},
	}
	for _, tc := range resumeTests {
		w, err := f.Watch("s1", tc.from)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		if got := summarize(drainNow(t, w)); !slices.Equal(got, tc.want) {
			t.Errorf("Watch(s1, %d) on the forgotten service = %v, want %v", tc.from, got, tc.want)
		}
		w.Close()
	}

	// The service comes back: open watchers see it; a new watch resuming from
	// before the forgotten events must still resync.
	h.register("s1", "b", nil) // 5
	for _, w := range []*Watcher{behind, uptodate} {
		if got, want := summarize(drainNow(t, w)), []string{"up b@5"}; !slices.Equal(got, want) {
			t.Errorf("after re-creation got %v, want %v", got, want)
		}
	}
	recreatedTests := []struct {
		from uint64
		want []string
	}{
		{1, []string{"resync@5", "up b@5", "current@5"}},
		{2, []string{"up b@5", "current@5"}},
		{4, []string{"up b@5", "current@5"}},
		{5, []string{"current@5"}},
	}
	for _, tc := range recreatedTests {
		w, err := f.Watch("s1", tc.from)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		if got := summarize(drainNow(t, w)); !slices.Equal(got, tc.want) {
			t.Errorf("Watch(s1, %d) on the re-created service = %v, want %v", tc.from, got, tc.want)
		}
		w.Close()
	}
}

// ---------------------------------------------------------------------------
// Concurrency.

// TestFSM_WatchConcurrent applies a random log in batches from one goroutine
// while watchers with different speeds and page sizes follow one service, and
// a snapshotter and a reader run alongside. Each watcher checks that change
// events have strictly increasing indices and that the state it rebuilds (reset
// on resync) ends equal to List.
func TestFSM_WatchConcurrent(t *testing.T) {
	const (
		svc     = "web"
		entries = 3000
		nAddrs  = 12
	)
	cfg := Config{HistoryPerService: 32, MaxEmptyServices: 4}
	h := newHarness(t, cfg)
	f := h.f

	// Build the log up front, tracking the expected state so expires hit
	// both current and stale registrations.
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]uint64{}
	var logs []*raft.Log
	for len(logs) < entries {
		addr := fmt.Sprint("10.0.0.", rng.IntN(nAddrs))
		switch p := rng.IntN(100); {
		case p < 45:
			logs = append(logs, h.log(RegisterType, RegisterCommand{Name: svc, Addr: addr, Attrs: map[string]string{"n": fmt.Sprint(len(logs))}}))
			model[addr] = h.index
		case p < 65:
			logs = append(logs, h.log(UnregisterType, UnregisterCommand{Name: svc, Addr: addr, RequestID: fmt.Sprint("u", rng.IntN(50))}))
		case p < 80:
			idx := model[addr]
			if rng.IntN(2) == 0 && idx > 1 {
				idx-- // stale: a no-op
			}
			logs = append(logs, h.log(ExpireType, ExpireCommand{Name: svc, Addr: addr, Index: idx}))
		case p < 90:
			other := fmt.Sprint("other", rng.IntN(8))
			logs = append(logs, h.log(RegisterType, RegisterCommand{Name: other, Addr: addr}))
			logs = append(logs, h.log(UnregisterType, UnregisterCommand{Name: other, Addr: addr}))
		default:
			logs = append(logs, h.configLog())
		}
	}
	logs = append(logs, h.log(RegisterType, RegisterCommand{Name: svc, Addr: "final"}))
	final := h.index

	var wg sync.WaitGroup
	start := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	// The applier.
	applierDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(applierDone)
		<-start
		r := rand.New(rand.NewPCG(3, 4))
		for rest := logs; len(rest) > 0; {
			n := min(1+r.IntN(6), len(rest))
			out := f.ApplyBatch(rest[:n])
			if len(out) != n {
				t.Errorf("ApplyBatch returned %d results for %d logs", len(out), n)
				return
			}
			rest = rest[n:]
			if r.IntN(8) == 0 {
				runtime.Gosched()
			}
		}
	}()

	// Readers that touch the state concurrently.
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		for {
			select {
			case <-applierDone:
				return
			default:
			}
			snap, err := f.Snapshot()
			if err != nil {
				t.Errorf("Snapshot: %v", err)
				return
			}
			sink := newMemSink()
			if err := snap.Persist(sink); err != nil {
				t.Errorf("Persist: %v", err)
				return
			}
			_, _ = f.List(svc, map[string]string{"n": "1"})
			_ = f.Stats()
			_ = f.Get(svc, "10.0.0.1")
		}
	}()

	type watcherSpec struct {
		max     int
		slow    bool // yields between reads, so it falls behind and resyncs
		listing bool // starts from List + Watch(fromIndex) instead of Watch(0)
	}
	specs := []watcherSpec{
		{max: 0}, {max: 1}, {max: 3, slow: true}, {max: 7},
		{max: 0, listing: true}, {max: 2, listing: true, slow: true}, {max: 1, slow: true}, {max: 64, listing: true},
	}
	finals := make([]replica, len(specs))
	resyncs := make([]int, len(specs))
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rep := replica{}
			var w *Watcher
			var err error
			var last uint64 // index of the last change or current marker applied
			inState := true // reading a state: ups sorted by index, then current
			if spec.listing {
				idx, ins := f.List(svc, nil)
				rep = replicaOf(ins)
				w, err = f.Watch(svc, idx)
				// Watch(name, 0) means "send the state", not "resume from 0".
				last, inState = idx, idx == 0
			} else {
				w, err = f.Watch(svc, 0)
			}
			if err != nil {
				t.Errorf("watcher %d: Watch: %v", i, err)
				return
			}
			defer w.Close()
			var stateLast uint64
			for {
				evs, err := w.Next(ctx, spec.max)
				if err != nil {
					t.Errorf("watcher %d: Next: %v", i, err)
					return
				}
				if spec.max > 0 && len(evs) > spec.max {
					t.Errorf("watcher %d: %d events for max %d", i, len(evs), spec.max)
				}
				for _, e := range evs {
					if e.Name != svc {
						t.Errorf("watcher %d: event for %q", i, e.Name)
					}
					switch {
					case e.Kind == EventResync:
						if e.Index < last {
							t.Errorf("watcher %d: resync@%d after %d", i, e.Index, last)
						}
						resyncs[i]++
						inState, stateLast = true, 0
					case e.Kind == EventCurrent:
						// Ends a state, or marks that a resumed watch caught up.
						if e.Index < last || e.Index < stateLast {
							t.Errorf("watcher %d: current@%d out of place (last %d, state %d, inState %v)", i, e.Index, last, stateLast, inState)
						}
						inState, last = false, e.Index
					case inState:
						if e.Kind != EventUp || e.Index <= stateLast && stateLast != 0 {
							t.Errorf("watcher %d: state event %s@%d after %d", i, e.Kind, e.Index, stateLast)
						}
						stateLast = e.Index
					default:
						if e.Index <= last {
							t.Errorf("watcher %d: change %s@%d not after %d", i, e.Kind, e.Index, last)
						}
						last = e.Index
					}
					rep.apply(e)
				}
				if !inState && last >= final {
					finals[i] = rep
					return
				}
				if spec.slow {
					for range 20 {
						runtime.Gosched()
					}
				}
			}
		}()
	}

	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	_, ins := f.List(svc, nil)
	want := replicaOf(ins)
	if want["final"] != final {
		t.Fatalf("final registration missing from List: %v", want)
	}
	for i, got := range finals {
		if !maps.Equal(got, want) {
			t.Errorf("watcher %d (%+v) rebuilt %v, want %v", i, specs[i], got, want)
		}
	}
	t.Logf("resyncs per watcher: %v", resyncs)
}

// ---------------------------------------------------------------------------
// Regressions.

// Regression: Close running concurrently with Next. If Close ran after Next
// had checked w.done but before it took the read lock, and the watcher was
// the last one of its service, Close deleted the service's notifier and Next
// dereferenced a nil *notifier with the FSM's read lock held — a crash, or a
// lock never released. The window is a few instructions wide, so the test
// retries for a second with at least two Ps; it hit within a fraction of a
// second before the fix.
func TestFSM_WatchCloseRacesNext(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	var spin atomic.Int64
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		f := New(Config{})
		w, err := f.Watch("web", 0)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		drainNow(t, w) // the current marker; the next Next waits

		var started atomic.Bool
		res := make(chan any, 1)
		go func() {
			defer func() { res <- recover() }()
			started.Store(true)
			_, _ = w.Next(context.Background(), 0)
		}()
		for !started.Load() {
			runtime.Gosched()
		}
		for range (i % 32) * 4 { // vary the phase of Close against Next
			spin.Add(1)
		}
		w.Close()
		if p := <-res; p != nil {
			lockHeld := !f.mu.TryLock()
			t.Fatalf("iteration %d: Next panicked while Close ran concurrently: %v (FSM lock left held: %v)", i, p, lockHeld)
		}
	}
}
