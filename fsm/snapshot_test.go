package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// memSink is a raft.SnapshotSink over a bytes.Buffer. With failAfter >= 0,
// writes fail once that many bytes have been accepted.
type memSink struct {
	buf       bytes.Buffer
	failAfter int
	closed    int
	cancelled int
}

var errSinkBroken = errors.New("sink broken")

var _ raft.SnapshotSink = (*memSink)(nil)

func newMemSink() *memSink { return &memSink{failAfter: -1} }

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAfter >= 0 {
		room := s.failAfter - s.buf.Len()
		if room < len(p) {
			n, _ := s.buf.Write(p[:max(room, 0)])
			return n, errSinkBroken
		}
	}
	return s.buf.Write(p)
}

func (s *memSink) Close() error  { s.closed++; return nil }
func (s *memSink) Cancel() error { s.cancelled++; return nil }
func (s *memSink) ID() string    { return "mem" }

// trackingReader is the io.ReadCloser given to Restore; it records Close.
type trackingReader struct {
	*bytes.Reader
	closed bool
}

func newTrackingReader(b []byte) *trackingReader { return &trackingReader{Reader: bytes.NewReader(b)} }

func (r *trackingReader) Close() error { r.closed = true; return nil }

// persistBytes snapshots f and returns what Persist wrote.
func persistBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := newMemSink()
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if sink.closed != 1 || sink.cancelled != 0 {
		t.Fatalf("Persist: sink closed %d times, cancelled %d times; want 1, 0", sink.closed, sink.cancelled)
	}
	return sink.buf.Bytes()
}

// restoreNew restores a snapshot into a fresh FSM.
func restoreNew(t *testing.T, cfg Config, b []byte) *FSM {
	t.Helper()
	f := New(cfg)
	rc := newTrackingReader(b)
	if err := f.Restore(rc); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !rc.closed {
		t.Errorf("Restore did not close its reader")
	}
	return f
}

// dump is a comparable copy of everything replicated.
type dump struct {
	Applied          uint64
	ForgottenThrough uint64
	EmptyCount       int
	EmptyQueue       []emptyEntry // live entries only, in order
	Services         []dumpService
	Requests         []snapshotRequest
	ACLBootstrap     uint64
	ACLIndex         uint64
	ACLTokens        []ACLToken // sorted; nil when there are none
}

type dumpService struct {
	Name             string
	Instances        []Instance
	History          []Event
	TruncatedThrough uint64
	LastIndex        uint64
	EmptySince       uint64
	Meta             *Meta
}

func dumpState(f *FSM) dump {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st
	d := dump{Applied: st.applied, ForgottenThrough: st.forgottenThrough, EmptyCount: st.emptyCount, Requests: st.requests.ordered()}
	for _, e := range st.emptyQueue {
		if svc := st.services[e.name]; svc != nil && svc.emptySince == e.since {
			d.EmptyQueue = append(d.EmptyQueue, e)
		}
	}
	for _, svc := range st.services {
		ds := dumpService{
			Name:             svc.name,
			History:          svc.history.all(),
			TruncatedThrough: svc.history.truncatedThrough,
			LastIndex:        svc.lastIndex,
			EmptySince:       svc.emptySince,
			Meta:             svc.meta,
		}
		for _, in := range svc.instances {
			ds.Instances = append(ds.Instances, *in)
		}
		slices.SortFunc(ds.Instances, func(a, b Instance) int { return strings.Compare(a.Addr, b.Addr) })
		d.Services = append(d.Services, ds)
	}
	slices.SortFunc(d.Services, func(a, b dumpService) int { return strings.Compare(a.Name, b.Name) })
	d.ACLBootstrap, d.ACLIndex = st.acl.bootstrapIndex, st.acl.index
	for _, t := range st.acl.sortedTokens() {
		d.ACLTokens = append(d.ACLTokens, *t)
	}
	return d
}

func serviceNames(d dump) []string {
	var out []string
	for _, s := range d.Services {
		out = append(out, s.Name)
	}
	return out
}

// diffDump reports the first difference between two dumps, for messages.
func diffDump(a, b dump) string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return fmt.Sprintf("%s:\n  %+v\nvs\n  %+v", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface())
		}
	}
	return "no difference"
}

// buildRichState fills an FSM with instances, re-registrations, truncated
// history, empty and forgotten services, a re-created service and request ids.
func buildRichState(h *harness) {
	h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", Attrs: map[string]string{"v": "1"}, TTL: time.Second, RequestID: "req-a"}) // 1
	h.register("web", "b", map[string]string{"zone": "x"})                                                                                   // 2
	h.register("db", "x", nil)                                                                                                               // 3
	h.register("web", "a", map[string]string{"v": "2"})                                                                                      // 4
	h.register("web", "c", nil)                                                                                                              // 5
	h.unregister("web", "b")                                                                                                                 // 6
	h.register("web", "b", map[string]string{"zone": "y"})                                                                                   // 7
	h.expire("web", "c", 5)                                                                                                                  // 8: web history (limit 4) truncated
	for _, s := range []string{"gone1", "gone2", "gone3"} {                                                                                  // 9..14: gone1 forgotten
		h.register(s, "a", nil)
		h.unregister(s, "a")
	}
	h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "zzz", RequestID: "req-nf"})                        // 15: not found
	h.f.Apply(h.configLog())                                                                                         // 16
	h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "d", Attrs: map[string]string{}, TTL: 5 * time.Minute}) // 17
	h.register("gone1", "again", nil)                                                                                // 18: re-created after being forgotten
}

var richConfig = Config{HistoryPerService: 4, MaxEmptyServices: 2, MaxRequestIDs: 8}

// ---------------------------------------------------------------------------

func TestFSM_SnapshotRoundTrip(t *testing.T) {
	h := newHarness(t, richConfig)
	buildRichState(h)
	orig := h.f
	want := dumpState(orig)
	if want.ForgottenThrough == 0 || len(historyOf(orig, "web")) != 4 || want.EmptyCount != 2 {
		t.Fatalf("setup did not build the intended state: %+v", want)
	}

	restored := restoreNew(t, richConfig, persistBytes(t, orig))

	if got := dumpState(restored); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs: %s", diffDump(got, want))
	}
	if got, want := restored.AppliedIndex(), orig.AppliedIndex(); got != want || got != 18 {
		t.Errorf("AppliedIndex = %d, want %d", got, want)
	}
	if got, want := restored.Stats(), orig.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	for _, name := range []string{"web", "db", "gone1", "gone2", "gone3", "nope"} {
		for _, filter := range []map[string]string{nil, {"zone": "y"}, {"v": "2"}} {
			i1, l1 := orig.List(name, filter)
			i2, l2 := restored.List(name, filter)
			if i1 != i2 || !reflect.DeepEqual(l1, l2) {
				t.Errorf("List(%s, %v): restored %d %v, original %d %v", name, filter, i2, addrs(l2), i1, addrs(l1))
			}
		}
	}

	// Watches resume the same way on both, from the retained history or not.
	for _, svc := range []string{"web", "gone1", "gone2"} {
		for from := uint64(0); from <= 18; from++ {
			w1, err1 := orig.Watch(svc, from)
			w2, err2 := restored.Watch(svc, from)
			if err1 != nil || err2 != nil {
				t.Fatalf("Watch(%s, %d): %v / %v", svc, from, err1, err2)
			}
			e1, e2 := drainNow(t, w1), drainNow(t, w2)
			if !reflect.DeepEqual(e1, e2) {
				t.Errorf("Watch(%s, %d): restored gives %v, original %v", svc, from, summarize(e2), summarize(e1))
			}
			w1.Close()
			w2.Close()
		}
	}
	// Spot-check one resume on the restored FSM: web's history holds 5..8,17.
	w, err := restored.Watch("web", 6)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if got, want := summarize(drainNow(t, w)), []string{"up b@7", "down c@8", "up d@17", "current@18"}; !slices.Equal(got, want) {
		t.Errorf("restored resume from 6 = %v, want %v", got, want)
	}
	w.Close()

	// Request ids survive: both retries are answered with the first result.
	for _, f := range []*FSM{orig, restored} {
		hh := &harness{t: t, f: f, index: 18}
		r := hh.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", Attrs: map[string]string{"v": "new"}, RequestID: "req-a"})
		if *r != (Result{Index: 1, Changed: true}) {
			t.Errorf("retried register = %+v, want the first result {Index:1 Changed:true}", *r)
		}
		if got := f.Get("web", "a"); got.Attrs["v"] != "2" || got.ModifyIndex != 4 {
			t.Errorf("retried register changed the instance: %+v", *got)
		}
		r = hh.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "zzz", RequestID: "req-nf"})
		if r.Index != 15 || r.Changed || !errors.Is(r.Err, codes.ErrNotFound) {
			t.Errorf("retried unregister = %+v, want the first not_found at 15", *r)
		}
	}

	// Both go on identically, including evictions driven by the rebuilt queue.
	for _, f := range []*FSM{orig, restored} {
		hh := &harness{t: t, f: f, index: 20}
		hh.unregister("db", "x")        // db empty: 3 empty, gone2 forgotten
		hh.register("gone3", "b", nil)  // gone3 alive again
		hh.unregister("gone1", "again") // gone1 empty
		hh.register("new", "n", nil)    //
		hh.apply(RegisterType, RegisterCommand{Name: "new", Addr: "m", RequestID: "r-new"})
		hh.unregister("web", "a")
	}
	if a, b := dumpState(orig), dumpState(restored); !reflect.DeepEqual(a, b) {
		t.Errorf("after the same log, restored diverged: %s", diffDump(b, a))
	}
	if hasService(restored, "gone2") || !hasService(restored, "gone1") || !hasService(restored, "db") {
		t.Errorf("want gone2 forgotten and gone1, db kept; have %v", serviceNames(dumpState(restored)))
	}
}

func TestFSM_SnapshotIsPointInTime(t *testing.T) {
	h := newHarness(t, richConfig)
	buildRichState(h)
	want := dumpState(h.f)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()

	// Changes after Snapshot are not in what Persist writes.
	h.register("web", "late", nil)
	h.unregister("web", "a")
	h.register("db", "x", map[string]string{"changed": "yes"})
	h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "e", RequestID: "late-id"})

	sink := newMemSink()
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	restored := restoreNew(t, richConfig, sink.buf.Bytes())
	if got := dumpState(restored); !reflect.DeepEqual(got, want) {
		t.Errorf("persisted state is not the state at Snapshot: %s", diffDump(got, want))
	}
}

func TestFSM_SnapshotEmpty(t *testing.T) {
	restored := restoreNew(t, Config{}, persistBytes(t, New(Config{})))
	if s := restored.Stats(); s != (Stats{}) {
		t.Errorf("Stats = %+v, want zero", s)
	}
}

func TestFSM_SnapshotPersistErrorCancels(t *testing.T) {
	small := func(t *testing.T) *FSM {
		h := newHarness(t, Config{})
		h.register("web", "a", nil)
		return h.f
	}
	// Larger than Persist's 256 KiB buffer, so writes happen while encoding.
	large := func(t *testing.T) *FSM {
		h := newHarness(t, Config{HistoryPerService: 2})
		attrs := map[string]string{"k": strings.Repeat("v", 200)}
		var logs []*raft.Log
		for i := range 3000 {
			logs = append(logs, h.log(RegisterType, RegisterCommand{Name: fmt.Sprint("svc", i%50), Addr: fmt.Sprint("addr", i), Attrs: attrs}))
		}
		h.f.ApplyBatch(logs)
		return h.f
	}
	tests := []struct {
		name      string
		fsm       func(*testing.T) *FSM
		failAfter int
	}{
		{"small, first write fails", small, 0},
		{"small, short write", small, 10},
		{"large, fails mid-stream", large, 100_000},
		{"large, fails at once", large, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := tc.fsm(t).Snapshot()
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			sink := newMemSink()
			sink.failAfter = tc.failAfter
			err = snap.Persist(sink)
			// The codec reports a write error during encoding as text
			// (its error does not unwrap), so check the message.
			if err == nil || !strings.Contains(err.Error(), errSinkBroken.Error()) {
				t.Errorf("Persist = %v, want the sink's error", err)
			}
			if sink.cancelled != 1 || sink.closed != 0 {
				t.Errorf("sink cancelled %d, closed %d times; want 1, 0", sink.cancelled, sink.closed)
			}
		})
	}
}

func TestFSM_RestoreRejectsBadSnapshot(t *testing.T) {
	encode := func(vs ...any) []byte {
		var buf bytes.Buffer
		enc := codec.NewEncoder(&buf, codecHandle)
		for _, v := range vs {
			if err := enc.Encode(v); err != nil {
				t.Fatalf("encode: %v", err)
			}
		}
		return buf.Bytes()
	}
	src := newHarness(t, richConfig)
	buildRichState(src)
	good := persistBytes(t, src.f)

	tests := []struct {
		name     string
		data     []byte
		wantText string
	}{
		{"empty", nil, "decode header"},
		{"garbage", []byte{0xc1, 0x00, 0x01}, "decode header"},
		{"newer version", encode(&snapshotHeader{Version: 4, Applied: 99}), "version 4"},
		{"version zero", encode(&snapshotHeader{Applied: 99}), "version 0"},
		{"services missing", encode(&snapshotHeader{Version: snapshotVersion, Applied: 99, Services: 2}), "decode service 1 of 2"},
		{"one service missing", encode(&snapshotHeader{Version: snapshotVersion, Applied: 99, Services: 2}, &snapshotService{Name: "x"}), "decode service 2 of 2"},
		{"truncated", good[:len(good)-7], "decode service"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.register("web", "a", nil)
			obs := &fakeObserver{}
			h.f.SetObserver(obs)
			w, err := h.f.Watch("web", 0)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			defer w.Close()
			drainNow(t, w)
			before := dumpState(h.f)

			rc := newTrackingReader(tc.data)
			err = h.f.Restore(rc)
			if err == nil || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("Restore = %v, want an error mentioning %q", err, tc.wantText)
			}
			if !rc.closed {
				t.Errorf("Restore did not close its reader")
			}
			if got := dumpState(h.f); !reflect.DeepEqual(got, before) {
				t.Errorf("a failed Restore changed the state: %s", diffDump(got, before))
			}
			if calls := obs.take(); len(calls) != 0 {
				t.Errorf("observer calls = %q, want none", calls)
			}
			if evs := drainNow(t, w); len(evs) != 0 {
				t.Errorf("a failed Restore disturbed a watcher: %v", summarize(evs))
			}
		})
	}
}

func TestFSM_RestoreResyncsWatchers(t *testing.T) {
	// The snapshot: web has x (modified at 3) and y (at 2); applied 5.
	src := newHarness(t, Config{})
	src.register("web", "x", nil)   // 1
	src.register("web", "y", nil)   // 2
	src.register("web", "x", nil)   // 3
	src.register("other", "o", nil) // 4
	src.f.Apply(src.configLog())    // 5
	snap := persistBytes(t, src.f)

	h := newHarness(t, Config{})
	h.register("web", "a", nil)  // 1
	h.register("web", "b", nil)  // 2
	h.register("gone", "g", nil) // 3
	f := h.f

	blocked, err := f.Watch("web", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer blocked.Close()
	idle, _ := f.Watch("web", 0)
	defer idle.Close()
	gone, _ := f.Watch("gone", 0)
	defer gone.Close()
	for _, w := range []*Watcher{blocked, idle, gone} {
		drainNow(t, w)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resCh := goNext(ctx, blocked, 0)
	waitBlockedInNext(t, 1)

	waitErr := make(chan error, 1)
	go func() { waitErr <- f.WaitApplied(ctx, 5) }()

	if err := f.Restore(newTrackingReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}

	want := []string{"resync@5", "up y@2", "up x@3", "current@5"}
	res := <-resCh
	if res.err != nil || res.panicked != nil {
		t.Fatalf("blocked Next: %v %v", res.err, res.panicked)
	}
	if got := summarize(res.evs); !slices.Equal(got, want) {
		t.Errorf("blocked watcher got %v, want %v", got, want)
	}
	if got := summarize(drainNow(t, idle)); !slices.Equal(got, want) {
		t.Errorf("idle watcher got %v, want %v", got, want)
	}
	if got, want := summarize(drainNow(t, gone)), []string{"resync@5", "current@5"}; !slices.Equal(got, want) {
		t.Errorf("watcher of a service absent from the snapshot got %v, want %v", got, want)
	}
	if err := <-waitErr; err != nil {
		t.Errorf("WaitApplied(5) across Restore = %v", err)
	}

	// Watching goes on from the restored state.
	hh := &harness{t: t, f: f, index: 5}
	hh.unregister("web", "y") // 6
	if got, want := summarize(next(t, blocked, 0)), []string{"down y@6"}; !slices.Equal(got, want) {
		t.Errorf("after Restore got %v, want %v", got, want)
	}
	if s := f.Stats(); s.Watchers != 3 {
		t.Errorf("Watchers = %d, want 3 (Restore keeps watchers open)", s.Watchers)
	}
}
