package fsm

import (
	"bufio"
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

func (h *harness) suspect(name, addr string, idx uint64, v bool) *Result {
	h.t.Helper()
	return h.apply(SuspectType, SuspectCommand{Name: name, Addr: addr, Index: idx, Suspect: v})
}

// TestFSM_Suspect: the suspect marker is set and cleared only on the exact
// registration named, as an update event that keeps both indices; it tells
// the observer nothing; a registration clears it; an expire naming the
// registration still removes a marked instance.
func TestFSM_Suspect(t *testing.T) {
	h := newHarness(t, Config{})
	obs := &fakeObserver{}
	h.f.SetObserver(obs)
	h.register("web", "a", map[string]string{"z": "1"}) // 1
	h.register("web", "b", nil)                         // 2
	obs.take()

	steps := []struct {
		name        string
		do          func() *Result
		wantChanged bool
		wantSuspect bool // web a afterwards
	}{
		{"mark", func() *Result { return h.suspect("web", "a", 1, true) }, true, true},                       // 3
		{"mark again", func() *Result { return h.suspect("web", "a", 1, true) }, false, true},                // 4
		{"older registration", func() *Result { return h.suspect("web", "a", 0, false) }, false, true},       // 5
		{"newer index", func() *Result { return h.suspect("web", "a", 99, false) }, false, true},             // 6
		{"unknown address", func() *Result { return h.suspect("web", "zzz", 1, true) }, false, true},         // 7
		{"unknown service", func() *Result { return h.suspect("nope", "a", 1, true) }, false, true},          // 8
		{"clear", func() *Result { return h.suspect("web", "a", 1, false) }, true, false},                    // 9
		{"clear again", func() *Result { return h.suspect("web", "a", 1, false) }, false, false},             // 10
		{"mark once more", func() *Result { return h.suspect("web", "a", 1, true) }, true, true},             // 11
		{"registration clears", func() *Result { return h.register("web", "a", nil) }, true, false},          // 12
		{"old registration", func() *Result { return h.suspect("web", "a", 1, true) }, false, false},         // 13
		{"mark the new registration", func() *Result { return h.suspect("web", "a", 12, true) }, true, true}, // 14
	}
	for i, s := range steps {
		before := historyOf(h.f, "web")
		r := s.do()
		idx := uint64(i + 3)
		if r.Index != idx || r.Changed != s.wantChanged || r.Err != nil {
			t.Fatalf("%s: result %+v, want index %d changed %v", s.name, *r, idx, s.wantChanged)
		}
		in := h.f.Get("web", "a")
		if in == nil || in.Suspect != s.wantSuspect || in.CreateIndex != 1 {
			t.Fatalf("%s: web a = %+v, want suspect %v and create index 1", s.name, in, s.wantSuspect)
		}
		after := historyOf(h.f, "web")
		switch {
		case !s.wantChanged && len(after) != len(before):
			t.Fatalf("%s: unchanged, but the history grew to %d events", s.name, len(after))
		case s.wantChanged:
			e := after[len(after)-1]
			if e.Kind != EventUpdate || e.Index != idx || e.Instance != in {
				t.Fatalf("%s: last event %+v, want an update at %d of the stored instance", s.name, e, idx)
			}
		}
		if h.f.AppliedIndex() != idx {
			t.Fatalf("%s: applied %d, want %d", s.name, h.f.AppliedIndex(), idx)
		}
	}
	if got, want := obs.take(), []string{"registered web a create=1 modify=12"}; !slices.Equal(got, want) {
		t.Errorf("observer calls %q, want only the registration's %q", got, want)
	}
	if b := h.f.Get("web", "b"); b.Suspect {
		t.Errorf("web b was marked: %+v", b)
	}
	// Marking kept ModifyIndex: the leader's expire names it and removes it.
	if in := h.f.Get("web", "a"); in.ModifyIndex != 12 {
		t.Fatalf("ModifyIndex %d after marking, want 12", in.ModifyIndex)
	}
	if r := h.expire("web", "a", 12); !r.Changed || h.f.Get("web", "a") != nil {
		t.Fatalf("expire of the marked registration: %+v, instance %+v", *r, h.f.Get("web", "a"))
	}
}

// TestFSM_SuspectInListsAndWatches: a list shows the marker; a watch from
// the current state shows it in the up event (at the registration's index);
// a running watch sees the change as an update.
func TestFSM_SuspectInListsAndWatches(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a", nil) // 1
	h.register("web", "b", nil) // 2
	running, err := h.f.Watch("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	h.suspect("web", "b", 2, true) // 3

	_, list := h.f.List("web", nil)
	if len(list) != 2 || list[0].Suspect || !list[1].Suspect {
		t.Fatalf("List = %+v, %+v; want b suspect, a not", list[0], list[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := running.Next(ctx, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("running watch: %v, %v", evs, err)
	}
	if e := evs[0]; e.Kind != EventUpdate || e.Index != 3 || e.Instance.Addr != "b" || !e.Instance.Suspect || e.Instance.ModifyIndex != 2 {
		t.Fatalf("running watch got %+v (%+v), want an update of b at 3, suspect, registration 2", e, e.Instance)
	}
	fresh, err := h.f.Watch("web", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	evs, err = fresh.Next(ctx, 0)
	if err != nil || len(evs) != 3 {
		t.Fatalf("fresh watch: %v, %v", evs, err)
	}
	if e := evs[1]; e.Kind != EventUp || e.Index != 2 || !e.Instance.Suspect {
		t.Fatalf("state block event %+v (%+v), want b up at its registration 2, suspect", e, e.Instance)
	}
	if e := evs[2]; e.Kind != EventCurrent || e.Index != 3 {
		t.Fatalf("state block ends with %+v, want current at 3", e)
	}
}

// TestFSM_SuspectJournalHashSnapshot: the journal records the marker with
// the registration it names; the hash covers it; a snapshot keeps it.
func TestFSM_SuspectJournalHashSnapshot(t *testing.T) {
	h := newHarness(t, Config{})
	j := &memJournal{}
	h.f.SetJournal(j)
	h.register("web", "a", nil) // 1
	_, plain := h.f.Hash()
	h.suspect("web", "a", 1, true) // 2
	h.suspect("web", "a", 1, true) // 3: unchanged
	want := []JournalEntry{
		{Index: 2, Term: 1, RaftIndex: 2, Type: SuspectType, Name: "web", Addr: "a", ExpireIndex: 1, Suspect: true, Changed: true},
		{Index: 3, Term: 1, RaftIndex: 3, Type: SuspectType, Name: "web", Addr: "a", ExpireIndex: 1, Suspect: true},
	}
	if got := j.entries[1:]; !slices.Equal(got, want) {
		t.Errorf("journal %+v\nwant %+v", got, want)
	}
	_, marked := h.f.Hash()
	if marked == plain {
		t.Error("the hash does not change with the marker")
	}
	g := restoreNew(t, Config{}, persistBytes(t, h.f))
	if in := g.Get("web", "a"); in == nil || !in.Suspect {
		t.Fatalf("restored %+v, want it suspect", in)
	}
	if _, got := g.Hash(); got != marked {
		t.Errorf("restored hash %s, want %s", got, marked)
	}
	if d1, d2 := dumpState(h.f), dumpState(g); diffDump(d1, d2) != "no difference" {
		t.Errorf("restored state differs: %s", diffDump(d1, d2))
	}
}

// preSuspectInstance is Instance as snapshots held it before the suspect marker.
type preSuspectInstance struct {
	Name        string
	Addr        string
	Attrs       map[string]string
	TTL         time.Duration
	CreateIndex uint64
	ModifyIndex uint64
}

type preSuspectEvent struct {
	Kind     EventKind
	Index    uint64
	Name     string
	Instance *preSuspectInstance
	Reason   Reason
}

type preSuspectService struct {
	Name             string
	Instances        []*preSuspectInstance
	History          []preSuspectEvent
	TruncatedThrough uint64
	LastIndex        uint64
	EmptySince       uint64
}

// TestFSM_RestoresSnapshotWithoutSuspect: a snapshot written before the
// marker existed restores, every instance unmarked; an unmarked instance is
// written as before (the field is left out).
func TestFSM_RestoresSnapshotWithoutSuspect(t *testing.T) {
	in := &preSuspectInstance{Name: "web", Addr: "a", Attrs: map[string]string{"z": "1"}, TTL: time.Second, CreateIndex: 1, ModifyIndex: 1}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	enc := codec.NewEncoder(w, codecHandle)
	if err := enc.Encode(&snapshotHeader{Version: snapshotVersion, Applied: 1, Services: 1, Requests: []snapshotRequest{}}); err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(&preSuspectService{Name: "web", Instances: []*preSuspectInstance{in}, History: []preSuspectEvent{{Kind: EventUp, Index: 1, Name: "web", Instance: in}}, LastIndex: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f := restoreNew(t, Config{}, buf.Bytes())
	got := f.Get("web", "a")
	if got == nil || got.Suspect || got.ModifyIndex != 1 || got.Attrs["z"] != "1" || got.TTL != time.Second {
		t.Fatalf("restored %+v", got)
	}
	// Written again, the unmarked state is byte for byte the old one.
	if now := persistBytes(t, f); !bytes.Equal(now, buf.Bytes()) {
		t.Errorf("an unmarked snapshot changed:\n now %x\n old %x", now, buf.Bytes())
	}
}

// TestFSM_SuspectInBatch: a suspect command in a batch entry takes its own
// index like any other.
func TestFSM_SuspectInBatch(t *testing.T) {
	f := New(Config{})
	reg := mustEncode(t, RegisterType, RegisterCommand{Name: "web", Addr: "a"})
	sus := mustEncode(t, SuspectType, SuspectCommand{Name: "web", Addr: "a", Index: 5, Suspect: true})
	batch, err := EncodeBatch([][]byte{reg, sus})
	if err != nil {
		t.Fatal(err)
	}
	out := f.ApplyBatch([]*raft.Log{{Index: 5, Term: 1, Type: raft.LogCommand, Data: batch}})
	rs := out[0].([]any)
	if r := rs[1].(*Result); r.Index != 6 || !r.Changed {
		t.Fatalf("suspect in a batch: %+v", *r)
	}
	if in := f.Get("web", "a"); !in.Suspect || in.ModifyIndex != 5 {
		t.Fatalf("after the batch: %+v", in)
	}
	if SuspectType.String() != "suspect" {
		t.Errorf("SuspectType.String() = %q", SuspectType.String())
	}
}
