package fsm

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// ---------------------------------------------------------------------------
// Helpers shared by the package's tests.

// mustEncode encodes a command or fails the test.
func mustEncode(t testing.TB, typ MessageType, cmd any) []byte {
	t.Helper()
	b, err := Encode(typ, cmd)
	if err != nil {
		t.Fatalf("encode %s: %v", typ, err)
	}
	return b
}

// harness drives an FSM without Raft: it hands out increasing log indices.
type harness struct {
	t     *testing.T
	f     *FSM
	index uint64 // index of the last log built
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	return &harness{t: t, f: New(cfg)}
}

// log builds the next command entry without applying it.
func (h *harness) log(typ MessageType, cmd any) *raft.Log {
	h.t.Helper()
	h.index++
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: mustEncode(h.t, typ, cmd)}
}

// configLog builds the next non-command entry.
func (h *harness) configLog() *raft.Log {
	h.index++
	conf := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "n2", Address: "127.0.0.1:2"},
		{Suffrage: raft.Nonvoter, ID: "n3", Address: "127.0.0.1:3"},
		{Suffrage: raft.Voter, ID: "n1", Address: "127.0.0.1:1"},
	}}
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(conf)}
}

func (h *harness) apply(typ MessageType, cmd any) *Result {
	h.t.Helper()
	return resultOf(h.t, h.f.Apply(h.log(typ, cmd)))
}

func (h *harness) register(name, addr string, attrs map[string]string) *Result {
	h.t.Helper()
	return h.apply(RegisterType, RegisterCommand{Name: name, Addr: addr, Attrs: attrs, TTL: 10 * time.Second})
}

func (h *harness) unregister(name, addr string) *Result {
	h.t.Helper()
	return h.apply(UnregisterType, UnregisterCommand{Name: name, Addr: addr})
}

func (h *harness) expire(name, addr string, idx uint64) *Result {
	h.t.Helper()
	return h.apply(ExpireType, ExpireCommand{Name: name, Addr: addr, Index: idx})
}

// resultOf converts what Apply returned to a *Result.
func resultOf(t testing.TB, v any) *Result {
	t.Helper()
	r, ok := v.(*Result)
	if !ok || r == nil {
		t.Fatalf("Apply returned %T(%v), want non-nil *Result", v, v)
	}
	return r
}

// historyOf returns the retained events of a service (nil if unknown).
func historyOf(f *FSM, name string) []Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if svc := f.st.services[name]; svc != nil {
		return svc.history.all()
	}
	return nil
}

// hasService reports whether the FSM still knows a service.
func hasService(f *FSM, name string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.services[name] != nil
}

func forgottenThrough(f *FSM) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.forgottenThrough
}

// addrs returns the addresses of instances, in order.
func addrs(ins []*Instance) []string {
	out := make([]string, 0, len(ins))
	for _, in := range ins {
		out = append(out, in.Addr)
	}
	return out
}

// fakeObserver records every Observer call.
type fakeObserver struct {
	mu    sync.Mutex
	calls []string
}

func (o *fakeObserver) InstanceRegistered(in *Instance) {
	o.record(fmt.Sprintf("registered %s %s create=%d modify=%d", in.Name, in.Addr, in.CreateIndex, in.ModifyIndex))
}

func (o *fakeObserver) VotersApplied(voters []string) {
	o.record(fmt.Sprintf("voters %v", voters))
}

func (o *fakeObserver) InstanceRemoved(name, addr string) {
	o.record(fmt.Sprintf("removed %s %s", name, addr))
}

func (o *fakeObserver) Restored() { o.record("restored") }

func (o *fakeObserver) record(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, s)
}

// take returns the calls recorded since the last take.
func (o *fakeObserver) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.calls
	o.calls = nil
	return c
}

// ---------------------------------------------------------------------------
// Config and small types.

func TestFSM_ConfigDefaults(t *testing.T) {
	d := DefaultConfig()
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero value", Config{}, d},
		{"negative", Config{HistoryPerService: -1, MaxEmptyServices: -5, MaxRequestIDs: -9, HistoryMetaBytes: -1}, d},
		{"custom kept", Config{HistoryPerService: 3, MaxEmptyServices: 2, MaxRequestIDs: 1, HistoryMetaBytes: 10}, Config{3, 2, 1, 10}},
		{"partial", Config{MaxEmptyServices: 7}, Config{d.HistoryPerService, 7, d.MaxRequestIDs, d.HistoryMetaBytes}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.withDefaults(); got != tc.want {
				t.Errorf("withDefaults() = %+v, want %+v", got, tc.want)
			}
			if got := New(tc.in).cfg; got != tc.want {
				t.Errorf("New().cfg = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFSM_Strings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{EventUp.String(), "up"},
		{EventUpdate.String(), "update"},
		{EventDown.String(), "down"},
		{EventCurrent.String(), "current"},
		{EventResync.String(), "resync"},
		{EventKind(42).String(), "kind(42)"},
		{RegisterType.String(), "register"},
		{UnregisterType.String(), "unregister"},
		{ExpireType.String(), "expire"},
		{MessageType(12).String(), "type(12)"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestFSM_EncodeLayout(t *testing.T) {
	b := mustEncode(t, ExpireType, ExpireCommand{Name: "web", Addr: "10.0.0.1:80", Index: 7})
	if MessageType(b[0]) != ExpireType {
		t.Fatalf("first byte = %d, want %d", b[0], ExpireType)
	}
	var c ExpireCommand
	if err := decode(b[1:], &c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if want := (ExpireCommand{Name: "web", Addr: "10.0.0.1:80", Index: 7}); c != want {
		t.Errorf("decoded %+v, want %+v", c, want)
	}
}

// ---------------------------------------------------------------------------
// Register, unregister, expire.

func TestFSM_Register(t *testing.T) {
	h := newHarness(t, Config{})
	f := h.f

	r := h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", Attrs: map[string]string{"v": "1"}, TTL: 10 * time.Second})
	if *r != (Result{Index: 1, Changed: true}) {
		t.Fatalf("first register result = %+v", *r)
	}
	want := Instance{Name: "web", Addr: "a", Attrs: map[string]string{"v": "1"}, TTL: 10 * time.Second, CreateIndex: 1, ModifyIndex: 1}
	if got := f.Get("web", "a"); got == nil || !reflect.DeepEqual(*got, want) {
		t.Fatalf("after register Get = %+v, want %+v", got, want)
	}
	first := f.Get("web", "a")

	h.register("other", "x", nil) // index 2, another service

	r = h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", Attrs: map[string]string{"v": "2"}, TTL: 20 * time.Second})
	if *r != (Result{Index: 3, Changed: true}) {
		t.Fatalf("re-register result = %+v", *r)
	}
	want = Instance{Name: "web", Addr: "a", Attrs: map[string]string{"v": "2"}, TTL: 20 * time.Second, CreateIndex: 1, ModifyIndex: 3}
	if got := f.Get("web", "a"); got == nil || !reflect.DeepEqual(*got, want) {
		t.Fatalf("after re-register Get = %+v, want %+v", got, want)
	}
	// Stored instances are immutable: the pointer handed out earlier is unchanged.
	if first.ModifyIndex != 1 || first.Attrs["v"] != "1" {
		t.Errorf("earlier *Instance was mutated: %+v", *first)
	}

	h.register("web", "b", nil) // index 4

	hist := historyOf(f, "web")
	type ev struct {
		Kind  EventKind
		Index uint64
		Addr  string
	}
	var got []ev
	for _, e := range hist {
		if e.Name != "web" || e.Instance == nil || e.Reason != ReasonNone {
			t.Errorf("bad event %+v", e)
		}
		got = append(got, ev{e.Kind, e.Index, e.Instance.Addr})
	}
	wantEv := []ev{{EventUp, 1, "a"}, {EventUpdate, 3, "a"}, {EventUp, 4, "b"}}
	if !reflect.DeepEqual(got, wantEv) {
		t.Errorf("history = %+v, want %+v", got, wantEv)
	}
	if hist[1].Instance.ModifyIndex != 3 || hist[1].Instance.CreateIndex != 1 {
		t.Errorf("update event carries %+v, want the new instance", *hist[1].Instance)
	}
	if s := f.Stats(); s != (Stats{Services: 2, Instances: 3, Applied: 4}) {
		t.Errorf("Stats = %+v", s)
	}
	if f.AppliedIndex() != 4 {
		t.Errorf("AppliedIndex = %d, want 4", f.AppliedIndex())
	}
}

// TestFSM_UnregisterIf: a conditional unregistration removes the instance
// only while its last registration is the one named; one registered again
// since (another registrant) stays, with an up-to-date not_found. The
// journal records it as an unregistration.
func TestFSM_UnregisterIf(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil)                                                           // 1: registrant A
	h.register("web", "a", map[string]string{"by": "b"})                                  // 2: registrant B, same instance
	r := h.apply(UnregisterIfType, UnregisterCommand{Name: "web", Addr: "a", IfIndex: 1}) // A stops
	if r.Changed || !errors.Is(r.Err, codes.ErrNotFound) || !strings.Contains(r.Err.Error(), "registered again at index 2") {
		t.Fatalf("A's unregistration: %+v, want unchanged, not_found naming index 2", *r)
	}
	if _, list := h.f.List("web", nil); len(list) != 1 || list[0].Attrs["by"] != "b" {
		t.Fatalf("after A stopped: %+v, want B's registration", list)
	}
	r = h.apply(UnregisterIfType, UnregisterCommand{Name: "web", Addr: "a", IfIndex: 2}) // B stops
	if !r.Changed || r.Err != nil {
		t.Fatalf("B's unregistration: %+v, want the instance removed", *r)
	}
	if _, list := h.f.List("web", nil); len(list) != 0 {
		t.Fatalf("after B stopped: %+v, want none", list)
	}
	r = h.apply(UnregisterIfType, UnregisterCommand{Name: "web", Addr: "a", IfIndex: 2})
	if r.Changed || !errors.Is(r.Err, codes.ErrNotFound) {
		t.Fatalf("again: %+v, want not_found", *r)
	}
}

func TestFSM_Unregister(t *testing.T) {
	tests := []struct {
		name        string
		svc, addr   string
		wantErr     bool
		wantChanged bool
		wantLeft    []string
		wantSvcs    int
	}{
		{"existing", "web", "a", false, true, []string{"b"}, 1},
		{"unknown addr", "web", "zzz", true, false, []string{"a", "b"}, 1},
		{"unknown service", "nope", "a", true, false, []string{"a", "b"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.register("web", "a", nil) // 1
			h.register("web", "b", nil) // 2
			r := h.unregister(tc.svc, tc.addr)
			if r.Index != 3 || r.Changed != tc.wantChanged {
				t.Errorf("result = %+v, want Index 3 Changed %v", *r, tc.wantChanged)
			}
			if tc.wantErr {
				if !errors.Is(r.Err, codes.ErrNotFound) {
					t.Errorf("Err = %v, want wrapping codes.ErrNotFound", r.Err)
				}
				if codes.Of(r.Err) != codes.CodeNotFound {
					t.Errorf("codes.Of = %q", codes.Of(r.Err))
				}
			} else if r.Err != nil {
				t.Errorf("Err = %v, want nil", r.Err)
			}
			_, ins := h.f.List("web", nil)
			if got := addrs(ins); !slices.Equal(got, tc.wantLeft) {
				t.Errorf("instances left = %v, want %v", got, tc.wantLeft)
			}
			if s := h.f.Stats(); s.Services != tc.wantSvcs {
				t.Errorf("Services = %d, want %d (a failed unregister must not create a service)", s.Services, tc.wantSvcs)
			}
			if h.f.AppliedIndex() != 3 {
				t.Errorf("AppliedIndex = %d, want 3 (a failed command still advances it)", h.f.AppliedIndex())
			}
			hist := historyOf(h.f, "web")
			last := hist[len(hist)-1]
			if tc.wantChanged {
				if last.Kind != EventDown || last.Index != 3 || last.Reason != ReasonUnregister || last.Instance.Addr != tc.addr || last.Instance.ModifyIndex != 1 {
					t.Errorf("last event = %+v, want down of %s at 3 (reason unregister) carrying the removed instance", last, tc.addr)
				}
			} else if len(hist) != 2 {
				t.Errorf("history has %d events, want 2 (no event for a failed unregister)", len(hist))
			}
		})
	}
}

func TestFSM_Expire(t *testing.T) {
	// Setup: web/a registered at 1, registered again at 2 (ModifyIndex 2).
	tests := []struct {
		name        string
		svc, addr   string
		index       uint64
		wantChanged bool
	}{
		{"current registration is removed", "web", "a", 2, true},
		{"older registration raced by re-register is kept", "web", "a", 1, false},
		{"future index is a no-op", "web", "a", 99, false},
		{"unknown addr", "web", "zzz", 2, false},
		{"unknown service", "nope", "a", 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			obs := &fakeObserver{}
			h.f.SetObserver(obs)
			h.register("web", "a", nil) // 1
			h.register("web", "a", nil) // 2
			obs.take()

			r := h.expire(tc.svc, tc.addr, tc.index) // 3
			if *r != (Result{Index: 3, Changed: tc.wantChanged}) {
				t.Errorf("result = %+v, want {Index:3 Changed:%v}", *r, tc.wantChanged)
			}
			got := h.f.Get("web", "a")
			hist := historyOf(h.f, "web")
			calls := obs.take()
			if tc.wantChanged {
				if got != nil {
					t.Errorf("instance still registered: %+v", *got)
				}
				last := hist[len(hist)-1]
				if last.Kind != EventDown || last.Reason != ReasonExpire || last.Index != 3 {
					t.Errorf("last event = %+v, want down/expire at 3", last)
				}
				if want := []string{"removed web a"}; !slices.Equal(calls, want) {
					t.Errorf("observer calls = %q, want %q", calls, want)
				}
			} else {
				if got == nil || got.ModifyIndex != 2 {
					t.Errorf("Get = %+v, want the registration at 2 kept", got)
				}
				if len(hist) != 2 {
					t.Errorf("history has %d events, want 2", len(hist))
				}
				if len(calls) != 0 {
					t.Errorf("observer calls = %q, want none", calls)
				}
				if hasService(h.f, "nope") {
					t.Errorf("expire created a service")
				}
			}
			if h.f.AppliedIndex() != 3 {
				t.Errorf("AppliedIndex = %d, want 3", h.f.AppliedIndex())
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Request id deduplication.

func TestFSM_RequestIDDedup(t *testing.T) {
	tests := []struct {
		name string
		// setup runs first, then first and second are applied (second at a
		// later index, after between).
		setup       func(h *harness)
		first       func(h *harness) *Result
		between     func(h *harness)
		second      func(h *harness) *Result
		wantSame    bool // second result equals the first
		wantAddrs   []string
		wantHistLen int
	}{
		{
			name: "register applied once",
			first: func(h *harness) *Result {
				return h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", RequestID: "r1"})
			},
			second: func(h *harness) *Result {
				return h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", Attrs: map[string]string{"x": "y"}, RequestID: "r1"})
			},
			wantSame: true, wantAddrs: []string{"a"}, wantHistLen: 1,
		},
		{
			name:  "unregister returns first success, not not_found",
			setup: func(h *harness) { h.register("web", "a", nil) },
			first: func(h *harness) *Result {
				return h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "a", RequestID: "u1"})
			},
			second: func(h *harness) *Result {
				return h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "a", RequestID: "u1"})
			},
			wantSame: true, wantAddrs: nil, wantHistLen: 2,
		},
		{
			name:  "retried unregister does not remove a newer registration",
			setup: func(h *harness) { h.register("web", "a", nil) },
			first: func(h *harness) *Result {
				return h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "a", RequestID: "u1"})
			},
			between: func(h *harness) { h.register("web", "a", nil) },
			second: func(h *harness) *Result {
				return h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "a", RequestID: "u1"})
			},
			wantSame: true, wantAddrs: []string{"a"}, wantHistLen: 3,
		},
		{
			name: "not_found is remembered too",
			first: func(h *harness) *Result {
				return h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "a", RequestID: "u1"})
			},
			between: func(h *harness) { h.register("web", "a", nil) },
			second: func(h *harness) *Result {
				return h.apply(UnregisterType, UnregisterCommand{Name: "web", Addr: "a", RequestID: "u1"})
			},
			wantSame: true, wantAddrs: []string{"a"}, wantHistLen: 1,
		},
		{
			name:        "empty request id is never deduplicated",
			first:       func(h *harness) *Result { return h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a"}) },
			second:      func(h *harness) *Result { return h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a"}) },
			wantSame:    false,
			wantAddrs:   []string{"a"},
			wantHistLen: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			if tc.setup != nil {
				tc.setup(h)
			}
			r1 := tc.first(h)
			if tc.between != nil {
				tc.between(h)
			}
			r2 := tc.second(h)
			if tc.wantSame {
				if r2.Index != r1.Index || r2.Changed != r1.Changed || !errors.Is(r2.Err, r1.Err) || (r1.Err == nil) != (r2.Err == nil) {
					t.Errorf("second result = %+v, want the first %+v", *r2, *r1)
				}
			} else if r2.Index == r1.Index {
				t.Errorf("second result = %+v, want a fresh one", *r2)
			}
			if h.f.AppliedIndex() != h.index {
				t.Errorf("AppliedIndex = %d, want %d (a duplicate still advances it)", h.f.AppliedIndex(), h.index)
			}
			_, ins := h.f.List("web", nil)
			if got := addrs(ins); !slices.Equal(got, tc.wantAddrs) {
				t.Errorf("instances = %v, want %v", got, tc.wantAddrs)
			}
			if got := len(historyOf(h.f, "web")); got != tc.wantHistLen {
				t.Errorf("history length = %d, want %d", got, tc.wantHistLen)
			}
		})
	}
}

func TestFSM_RequestIDEviction(t *testing.T) {
	h := newHarness(t, Config{MaxRequestIDs: 2})
	reg := func(id string) *Result {
		t.Helper()
		return h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "a", RequestID: id})
	}
	reg("A") // 1
	reg("B") // 2
	reg("C") // 3: evicts A; the table holds B, C

	// Oldest first, the table now holds B, C.
	steps := []struct {
		id        string
		wantIndex uint64 // Result.Index expected
		holds     string // the ids remembered afterwards, oldest first
	}{
		{"A", 4, "C A"}, // forgotten: applied again at 4, evicting B
		{"C", 3, "C A"}, // remembered (index 5 is a duplicate)
		{"A", 4, "C A"}, // remembered (index 6 is a duplicate)
		{"B", 7, "A B"}, // forgotten: applied again at 7, evicting C
		{"C", 8, "B C"}, // forgotten: applied again at 8, evicting A
	}
	for i, s := range steps {
		if r := reg(s.id); r.Index != s.wantIndex {
			t.Errorf("step %d: register %s returned Index %d, want %d", i, s.id, r.Index, s.wantIndex)
		}
		h.f.mu.RLock()
		var ids []string
		for _, r := range h.f.st.requests.ordered() {
			ids = append(ids, r.ID)
		}
		h.f.mu.RUnlock()
		if got := strings.Join(ids, " "); got != s.holds {
			t.Errorf("step %d: table holds %q, want %q", i, got, s.holds)
		}
	}
	if got := h.f.Get("web", "a").ModifyIndex; got != 8 {
		t.Errorf("ModifyIndex = %d, want 8", got)
	}
}

func TestFSM_RequestTableOrdered(t *testing.T) {
	tests := []struct {
		limit int
		ids   []string
		want  []string
	}{
		{3, nil, nil},
		{3, []string{"a", "b"}, []string{"a", "b"}},
		{3, []string{"a", "b", "c"}, []string{"a", "b", "c"}},
		{3, []string{"a", "b", "c", "d"}, []string{"b", "c", "d"}},
		{3, []string{"a", "b", "c", "d", "e", "f", "g"}, []string{"e", "f", "g"}},
		{3, []string{"a", "b", "a", "c"}, []string{"a", "b", "c"}}, // a duplicate put is ignored
		{1, []string{"a", "b"}, []string{"b"}},
		{3, []string{"", "a"}, []string{"a"}}, // empty ids are not stored
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.limit, tc.ids), func(t *testing.T) {
			rt := newRequestTable(tc.limit)
			for i, id := range tc.ids {
				rt.put(id, &Result{Index: uint64(i + 1)})
			}
			var got []string
			for _, r := range rt.ordered() {
				got = append(got, r.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ordered = %v, want %v", got, tc.want)
			}
			if len(rt.results) != len(tc.want) {
				t.Errorf("results holds %d ids, want %d", len(rt.results), len(tc.want))
			}
			if _, ok := rt.get(""); ok {
				t.Errorf("get(\"\") found a result")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// ApplyBatch and corrupt entries.

func TestFSM_ApplyBatch(t *testing.T) {
	h := newHarness(t, Config{})
	logs := []*raft.Log{
		h.log(RegisterType, RegisterCommand{Name: "web", Addr: "a"}), // 1
		h.configLog(), // 2
		h.log(RegisterType, RegisterCommand{Name: "web", Addr: "b"}),       // 3
		h.log(UnregisterType, UnregisterCommand{Name: "web", Addr: "zzz"}), // 4
		h.log(ExpireType, ExpireCommand{Name: "web", Addr: "a", Index: 1}), // 5
		h.configLog(), // 6
	}
	out := h.f.ApplyBatch(logs)
	if len(out) != len(logs) {
		t.Fatalf("ApplyBatch returned %d results for %d logs", len(out), len(logs))
	}
	for i, want := range []*Result{
		{Index: 1, Changed: true},
		nil,
		{Index: 3, Changed: true},
		{Index: 4, Err: codes.ErrNotFound},
		{Index: 5, Changed: true},
		nil,
	} {
		if want == nil {
			if out[i] != nil {
				t.Errorf("result %d = %v, want nil for a non-command entry", i, out[i])
			}
			continue
		}
		got := resultOf(t, out[i])
		if got.Index != want.Index || got.Changed != want.Changed || !errors.Is(got.Err, want.Err) || (got.Err == nil) != (want.Err == nil) {
			t.Errorf("result %d = %+v, want %+v", i, *got, *want)
		}
	}
	if got := h.f.AppliedIndex(); got != 6 {
		t.Errorf("AppliedIndex = %d, want 6 (a trailing configuration entry counts)", got)
	}
	if _, ins := h.f.List("web", nil); !slices.Equal(addrs(ins), []string{"b"}) {
		t.Errorf("instances = %v, want [b]", addrs(ins))
	}

	// Apply of a lone non-command entry returns nil and advances the index.
	if v := h.f.Apply(h.configLog()); v != nil {
		t.Errorf("Apply(configuration) = %v, want nil", v)
	}
	if got := h.f.AppliedIndex(); got != 7 {
		t.Errorf("AppliedIndex = %d, want 7", got)
	}
	// An empty batch changes nothing.
	if out := h.f.ApplyBatch(nil); len(out) != 0 {
		t.Errorf("ApplyBatch(nil) = %v", out)
	}
	if got := h.f.AppliedIndex(); got != 7 {
		t.Errorf("AppliedIndex after empty batch = %d, want 7", got)
	}
}

func TestFSM_ApplyPanicsOnBadEntry(t *testing.T) {
	tests := []struct {
		name     string
		data     []byte
		wantText string
	}{
		{"nil data", nil, "empty log entry"},
		{"empty data", []byte{}, "empty log entry"},
		{"unknown type", []byte{99, 0x80}, "unknown message type 99"},
		{"type zero", []byte{0}, "unknown message type 0"},
		{"register without body", []byte{byte(RegisterType)}, "cannot decode register"},
		{"register garbage body", []byte{byte(RegisterType), 0xc1}, "cannot decode register"},
		{"unregister string body", []byte{byte(UnregisterType), 0xa3, 'a', 'b', 'c'}, "cannot decode unregister"},
		{"expire truncated map", []byte{byte(ExpireType), 0x81}, "cannot decode expire"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.register("web", "a", nil) // 1
			l := &raft.Log{Index: 2, Type: raft.LogCommand, Data: tc.data}
			p := func() (p any) {
				defer func() { p = recover() }()
				h.f.Apply(l)
				return nil
			}()
			if p == nil {
				t.Fatalf("Apply did not panic")
			}
			msg := fmt.Sprint(p)
			if !strings.Contains(msg, tc.wantText) || !strings.Contains(msg, "index 2") {
				t.Errorf("panic %q, want it to mention %q and the index", msg, tc.wantText)
			}
			// The lock was released and the earlier state is intact.
			if !h.f.mu.TryLock() {
				t.Fatalf("FSM lock still held after the panic")
			}
			h.f.mu.Unlock()
			if got := h.f.AppliedIndex(); got != 1 {
				t.Errorf("AppliedIndex = %d, want 1", got)
			}
			if h.f.Get("web", "a") == nil {
				t.Errorf("earlier instance lost")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Reads.

func TestFSM_ListFilterAndOrder(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "c", map[string]string{"env": "prod", "zone": "x"}) // 1
	h.register("web", "a", map[string]string{"env": "dev"})               // 2
	h.register("other", "o", map[string]string{"env": "prod"})            // 3
	h.register("web", "b", map[string]string{"env": "prod", "zone": "y"}) // 4
	h.register("web", "d", nil)                                           // 5
	// Re-registering c keeps its CreateIndex, so it stays first.
	h.register("web", "c", map[string]string{"env": "prod", "zone": "x"}) // 6
	// Unregistering and registering a again gives it a new CreateIndex.
	h.unregister("web", "a")                                // 7
	h.register("web", "a", map[string]string{"env": "dev"}) // 8
	h.f.Apply(h.configLog())                                // 9

	tests := []struct {
		name   string
		svc    string
		filter map[string]string
		want   []string
	}{
		{"no filter", "web", nil, []string{"c", "b", "d", "a"}},
		{"empty filter", "web", map[string]string{}, []string{"c", "b", "d", "a"}},
		{"one attr", "web", map[string]string{"env": "prod"}, []string{"c", "b"}},
		{"two attrs", "web", map[string]string{"env": "prod", "zone": "y"}, []string{"b"}},
		{"no match", "web", map[string]string{"env": "staging"}, []string{}},
		{"empty value needs the key", "web", map[string]string{"zone": ""}, []string{}},
		{"other service", "other", map[string]string{"env": "prod"}, []string{"o"}},
		{"unknown service", "nope", nil, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idx, ins := h.f.List(tc.svc, tc.filter)
			if idx != 9 {
				t.Errorf("List index = %d, want 9 (the applied index)", idx)
			}
			if got := addrs(ins); !slices.Equal(got, tc.want) {
				t.Errorf("List = %v, want %v", got, tc.want)
			}
			if !slices.IsSortedFunc(ins, func(a, b *Instance) int { return cmpUint(a.CreateIndex, b.CreateIndex) }) {
				t.Errorf("List not ordered by CreateIndex")
			}
		})
	}
}

func TestFSM_Matches(t *testing.T) {
	tests := []struct {
		name          string
		attrs, filter map[string]string
		want          bool
	}{
		{"both nil", nil, nil, true},
		{"nil filter", map[string]string{"a": "1"}, nil, true},
		{"empty filter", map[string]string{"a": "1"}, map[string]string{}, true},
		{"nil attrs, filter", nil, map[string]string{"a": "1"}, false},
		{"equal", map[string]string{"a": "1"}, map[string]string{"a": "1"}, true},
		{"subset", map[string]string{"a": "1", "b": "2"}, map[string]string{"b": "2"}, true},
		{"value differs", map[string]string{"a": "1"}, map[string]string{"a": "2"}, false},
		{"key missing", map[string]string{"a": "1"}, map[string]string{"b": "1"}, false},
		{"empty value present", map[string]string{"a": ""}, map[string]string{"a": ""}, true},
		{"empty value absent", map[string]string{}, map[string]string{"a": ""}, false},
		{"superset filter", map[string]string{"a": "1"}, map[string]string{"a": "1", "b": "2"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Matches(tc.attrs, tc.filter); got != tc.want {
				t.Errorf("Matches(%v, %v) = %v, want %v", tc.attrs, tc.filter, got, tc.want)
			}
		})
	}
}

func TestFSM_GetStatsWithInstances(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil) // 1
	h.register("web", "b", nil) // 2
	h.register("db", "x", nil)  // 3
	h.unregister("db", "x")     // 4: db is empty but still known

	if h.f.Get("web", "a") == nil || h.f.Get("web", "zzz") != nil || h.f.Get("nope", "a") != nil {
		t.Errorf("Get returned wrong presence")
	}
	if s := h.f.Stats(); s != (Stats{Services: 2, Instances: 2, Applied: 4}) {
		t.Errorf("Stats = %+v", s)
	}

	var applied uint64
	var got []string
	h.f.WithInstances(func(idx uint64, all iter.Seq[*Instance]) {
		applied = idx
		for in := range all {
			got = append(got, in.Name+"/"+in.Addr)
		}
	})
	slices.Sort(got)
	if applied != 4 || !slices.Equal(got, []string{"web/a", "web/b"}) {
		t.Errorf("WithInstances gave %d %v", applied, got)
	}
	// Breaking out of the iteration early is allowed.
	n := 0
	h.f.WithInstances(func(_ uint64, all iter.Seq[*Instance]) {
		for range all {
			n++
			break
		}
	})
	if n != 1 {
		t.Errorf("early break visited %d instances", n)
	}
}

// ---------------------------------------------------------------------------
// Empty services.

func TestFSM_MaxEmptyServicesEviction(t *testing.T) {
	h := newHarness(t, Config{MaxEmptyServices: 2})
	f := h.f
	empty := func(name string) uint64 {
		t.Helper()
		h.register(name, "a", nil)
		h.unregister(name, "a")
		return h.index
	}
	s1 := empty("s1") // 2
	empty("s2")       // 4
	if !hasService(f, "s1") || !hasService(f, "s2") || forgottenThrough(f) != 0 {
		t.Fatalf("evicted below the limit")
	}
	empty("s3") // 6: three empty, s1 (longest empty) goes
	if hasService(f, "s1") || !hasService(f, "s2") || !hasService(f, "s3") {
		t.Fatalf("want s1 forgotten, s2 and s3 kept")
	}
	if got := forgottenThrough(f); got != s1 {
		t.Errorf("forgottenThrough = %d, want %d (s1's last event)", got, s1)
	}

	// s2 gets an instance again: its queue entry is stale and s2 is not empty.
	h.register("s2", "b", nil) // 7
	empty("s4")                // 9: empty are s3, s4
	if !hasService(f, "s2") || !hasService(f, "s3") || !hasService(f, "s4") {
		t.Fatalf("want s2, s3, s4 kept")
	}
	h.unregister("s2", "b") // 10: s3, s4, s2 empty: s3 goes (s2's old entry is stale)
	if !hasService(f, "s2") || hasService(f, "s3") || !hasService(f, "s4") {
		t.Fatalf("want s3 forgotten, s2 and s4 kept")
	}
	if got := forgottenThrough(f); got != 6 {
		t.Errorf("forgottenThrough = %d, want 6", got)
	}
	if s := f.Stats(); s.Services != 2 || s.Instances != 0 {
		t.Errorf("Stats = %+v", s)
	}

	// A service with instances is never evicted.
	h.register("busy", "x", nil)
	for i := range 5 {
		empty(fmt.Sprint("e", i))
	}
	if !hasService(f, "busy") {
		t.Errorf("service with instances was evicted")
	}
	f.mu.RLock()
	ec := f.st.emptyCount
	f.mu.RUnlock()
	if ec != 2 {
		t.Errorf("emptyCount = %d, want 2", ec)
	}
}

func TestFSM_EmptyQueueStaysBounded(t *testing.T) {
	// A flapping service leaves stale queue entries; they must not pile up.
	h := newHarness(t, Config{MaxEmptyServices: 1})
	h.register("keep", "a", nil)
	for range 500 {
		h.register("flap", "a", nil)
		h.unregister("flap", "a")
	}
	f := h.f
	f.mu.RLock()
	qlen, ec := len(f.st.emptyQueue), f.st.emptyCount
	f.mu.RUnlock()
	if limit := 2*1 + 64 + 1; qlen > limit {
		t.Errorf("empty queue holds %d entries, want at most %d", qlen, limit)
	}
	if ec != 1 || !hasService(f, "flap") || !hasService(f, "keep") {
		t.Errorf("emptyCount = %d, flap known %v", ec, hasService(f, "flap"))
	}
	// The rebuilt queue still evicts correctly.
	h.register("other", "a", nil)
	h.unregister("other", "a")
	if hasService(f, "flap") || !hasService(f, "other") {
		t.Errorf("want flap (longest empty) forgotten, other kept")
	}
}

// TestFSM_EvictionIndependentOfBatching applies the same log to FSMs that
// receive it in different batches. hashicorp/raft forms batches locally (they
// depend on when each node learns the commit index, and on restarts), so the
// replicated state must not depend on them.
func TestFSM_EvictionIndependentOfBatching(t *testing.T) {
	cfg := Config{MaxEmptyServices: 1}
	build := func(t *testing.T) []*raft.Log {
		h := newHarness(t, cfg)
		return []*raft.Log{
			h.log(RegisterType, RegisterCommand{Name: "b", Addr: "1"}),     // 1
			h.log(UnregisterType, UnregisterCommand{Name: "b", Addr: "1"}), // 2: b empty (1 empty)
			h.log(RegisterType, RegisterCommand{Name: "a", Addr: "1"}),     // 3
			h.log(UnregisterType, UnregisterCommand{Name: "a", Addr: "1"}), // 4: a empty too (2 empty > 1)
			h.log(RegisterType, RegisterCommand{Name: "a", Addr: "1"}),     // 5: a has an instance again
		}
	}
	applyIn := func(t *testing.T, sizes []int) *FSM {
		logs := build(t)
		f := New(cfg)
		for _, n := range sizes {
			f.ApplyBatch(logs[:n])
			logs = logs[n:]
		}
		if len(logs) != 0 {
			t.Fatalf("batch sizes do not cover the log")
		}
		return f
	}
	ref := applyIn(t, []int{1, 1, 1, 1, 1}) // one entry at a time, like Apply
	want := dumpState(ref)

	tests := []struct {
		name  string
		sizes []int
	}{
		{"one batch", []int{5}},
		{"split after 3", []int{3, 2}},
		{"split after 4", []int{4, 1}},
		{"pairs", []int{2, 2, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := applyIn(t, tc.sizes)
			if got := dumpState(f); !reflect.DeepEqual(got, want) {
				t.Errorf("replicated state depends on batch boundaries:\n one at a time: services=%v forgottenThrough=%d\n batches %v:  services=%v forgottenThrough=%d",
					serviceNames(want), want.ForgottenThrough, tc.sizes, serviceNames(got), got.ForgottenThrough)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// WaitApplied.

func TestFSM_WaitApplied(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil) // 1

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, idx := range []uint64{0, 1} {
		if err := h.f.WaitApplied(ctx, idx); err != nil {
			t.Errorf("WaitApplied(%d) with %d applied = %v", idx, 1, err)
		}
	}

	// Entries 2..4, applied one by one from another goroutine.
	var logs []*raft.Log
	for i := range 3 {
		logs = append(logs, h.log(RegisterType, RegisterCommand{Name: "web", Addr: fmt.Sprint("x", i)}))
	}
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-release
		for _, l := range logs {
			h.f.Apply(l)
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- h.f.WaitApplied(ctx, 4) }()
	select {
	case err := <-waitErr:
		t.Fatalf("WaitApplied(4) returned %v before index 4 was applied", err)
	default:
	}
	close(release)
	if err := <-waitErr; err != nil {
		t.Fatalf("WaitApplied(4) = %v", err)
	}
	if got := h.f.AppliedIndex(); got < 4 {
		t.Errorf("WaitApplied returned with AppliedIndex %d", got)
	}
	<-done
}

func TestFSM_WaitAppliedStale(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		wantCtx error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.register("web", "a", nil)
			ctx, cancel := tc.ctx()
			defer cancel()
			err := h.f.WaitApplied(ctx, 10)
			if !errors.Is(err, codes.ErrStaleNode) {
				t.Fatalf("WaitApplied = %v, want wrapping codes.ErrStaleNode", err)
			}
			if !strings.Contains(err.Error(), "1") || !strings.Contains(err.Error(), "10") {
				t.Errorf("error %q should name both indices", err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Observer.

func TestFSM_Observer(t *testing.T) {
	h := newHarness(t, Config{})
	obs := &fakeObserver{}
	h.f.SetObserver(obs)

	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"register", func() { h.register("web", "a", nil) }, []string{"registered web a create=1 modify=1"}},
		{"re-register", func() { h.register("web", "a", nil) }, []string{"registered web a create=1 modify=2"}},
		{"register with id", func() {
			h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "b", RequestID: "r"})
		}, []string{"registered web b create=3 modify=3"}},
		{"duplicate request id", func() {
			h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "b", RequestID: "r"})
		}, nil},
		{"stale expire", func() { h.expire("web", "a", 1) }, nil},
		{"expire", func() { h.expire("web", "a", 2) }, []string{"removed web a"}},
		{"unregister unknown", func() { h.unregister("web", "a") }, nil},
		{"unregister", func() { h.unregister("web", "b") }, []string{"removed web b"}},
		{"configuration entry", func() { h.f.Apply(h.configLog()) }, []string{"voters [n1 n2]"}},
		{"batch", func() {
			h.f.ApplyBatch([]*raft.Log{
				h.log(RegisterType, RegisterCommand{Name: "db", Addr: "x"}),
				h.log(UnregisterType, UnregisterCommand{Name: "db", Addr: "x"}),
			})
		}, []string{"registered db x create=10 modify=10", "removed db x"}},
	}
	for _, s := range steps {
		s.do()
		if got := obs.take(); !slices.Equal(got, s.want) {
			t.Errorf("%s: observer calls = %q, want %q", s.name, got, s.want)
		}
	}

	// Restore reports Restored, and nothing per instance.
	snap := persistBytes(t, h.f)
	if err := h.f.Restore(newTrackingReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, want := obs.take(), []string{"restored"}; !slices.Equal(got, want) {
		t.Errorf("after Restore observer calls = %q, want %q", got, want)
	}
}
