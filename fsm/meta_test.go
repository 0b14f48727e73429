package fsm

import (
	"bytes"
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

func (h *harness) setMeta(name, data string, expect uint64) *Result {
	h.t.Helper()
	return h.apply(SetMetaType, SetMetaCommand{Name: name, Data: []byte(data), ExpectIndex: expect})
}

func (h *harness) deleteMeta(name string, expect uint64) *Result {
	h.t.Helper()
	return h.apply(DeleteMetaType, DeleteMetaCommand{Name: name, ExpectIndex: expect})
}

// wantConflict fails unless r is a conflict carrying current.
func wantConflict(t *testing.T, what string, r *Result, current uint64) {
	t.Helper()
	idx, ok := codes.ConflictIndex(r.Err)
	if !ok || idx != current || r.Changed {
		t.Errorf("%s = %+v, want an unchanged conflict at current index %d", what, *r, current)
	}
}

func metaOf(t *testing.T, f *FSM, name string) (string, uint64) {
	t.Helper()
	_, m := f.GetMeta(name)
	if m == nil {
		return "", 0
	}
	return string(m.Data), m.Index
}

// TestFSM_MetaCompareAndSet: expect 0 creates only; a set or a delete
// applies only at the metadata's current index, else a conflict names it;
// an unconditional delete of nothing is not_found.
func TestFSM_MetaCompareAndSet(t *testing.T) {
	h := newHarness(t, Config{})
	if r := h.setMeta("db", "v1", 0); r.Err != nil || !r.Changed || r.Index != 1 { // 1
		t.Fatalf("create = %+v", *r)
	}
	if d, i := metaOf(t, h.f, "db"); d != "v1" || i != 1 {
		t.Fatalf("GetMeta = %q@%d", d, i)
	}
	wantConflict(t, "a second create", h.setMeta("db", "other", 0), 1)  // 2
	wantConflict(t, "set at a wrong index", h.setMeta("db", "x", 7), 1) // 3
	if r := h.setMeta("db", "v2", 1); r.Err != nil || r.Index != 4 {    // 4
		t.Fatalf("set at the current index = %+v", *r)
	}
	wantConflict(t, "set at the old index", h.setMeta("db", "v3", 1), 4) // 5
	wantConflict(t, "delete at the old index", h.deleteMeta("db", 1), 4) // 6
	if d, i := metaOf(t, h.f, "db"); d != "v2" || i != 4 {
		t.Fatalf("after conflicts: %q@%d, want v2@4", d, i)
	}
	if r := h.deleteMeta("db", 4); r.Err != nil || !r.Changed { // 7
		t.Fatalf("delete at the current index = %+v", *r)
	}
	if _, m := h.f.GetMeta("db"); m != nil {
		t.Fatalf("deleted metadata still there: %+v", *m)
	}
	wantConflict(t, "delete expecting an index, none there", h.deleteMeta("db", 4), 0) // 8
	wantConflict(t, "set expecting an index, none there", h.setMeta("db", "v", 4), 0)  // 9
	if r := h.deleteMeta("db", 0); !errors.Is(r.Err, codes.ErrNotFound) || r.Changed { // 10
		t.Fatalf("unconditional delete of nothing = %+v, want not_found", *r)
	} else if want := "delete metadata of db: the service has no metadata"; r.Err.Error() != want {
		t.Errorf("not_found says %q, want %q", r.Err, want)
	}
	h.setMeta("db", "v4", 0)                                    // 11: created again
	if r := h.deleteMeta("db", 0); r.Err != nil || !r.Changed { // 12: unconditional delete
		t.Fatalf("unconditional delete = %+v", *r)
	}
	// Empty data is metadata too (index 13), distinct from none.
	h.setMeta("db", "", 0)
	if _, m := h.f.GetMeta("db"); m == nil || m.Index != 13 || len(m.Data) != 0 {
		t.Fatalf("empty metadata: %+v", m)
	}
	if h.f.AppliedIndex() != 13 {
		t.Errorf("AppliedIndex = %d: every command, conflicts too, takes an index", h.f.AppliedIndex())
	}
	// The conflict's message says what was expected and what is there.
	r := h.setMeta("db", "x", 12)
	if want := "set metadata of db expecting index 12, but the metadata is at index 13: metadata index does not match"; r.Err == nil || r.Err.Error() != want {
		t.Errorf("conflict says %q, want %q", r.Err, want)
	}
}

// TestFSM_MetaOutlivesInstances: removing a service's last instance keeps
// its metadata (and the service, which is not forgotten as empty, nor
// listed by Services); deleting the metadata of a service without
// instances makes it empty, so it can be forgotten.
func TestFSM_MetaOutlivesInstances(t *testing.T) {
	h := newHarness(t, Config{MaxEmptyServices: 1})
	h.register("db", "a:1", nil)    // 1
	h.setMeta("db", "primary=a", 0) // 2
	h.unregister("db", "a:1")       // 3
	for i := range 3 {              // 4..9: other services come and go, past MaxEmptyServices
		h.register(fmt.Sprintf("tmp%d", i), "x:1", nil)
		h.unregister(fmt.Sprintf("tmp%d", i), "x:1")
	}
	if !hasService(h.f, "db") {
		t.Fatal("a service with metadata was forgotten")
	}
	if d, i := metaOf(t, h.f, "db"); d != "primary=a" || i != 2 {
		t.Fatalf("metadata after the last instance went: %q@%d", d, i)
	}
	if _, list := h.f.Services(); slices.ContainsFunc(list, func(c ServiceCount) bool { return c.Name == "db" }) {
		t.Errorf("Services lists db, which has metadata and no instances: %v", list)
	}
	if st := h.f.Stats(); st.Instances != 0 {
		t.Errorf("Stats = %+v", st)
	}
	h.deleteMeta("db", 2) // 10: db is empty now
	for i := range 2 {    // 11..14: db is the longest empty, so it goes first
		h.register(fmt.Sprintf("more%d", i), "x:1", nil)
		h.unregister(fmt.Sprintf("more%d", i), "x:1")
	}
	if hasService(h.f, "db") {
		t.Error("db, empty since its metadata was deleted, was not forgotten")
	}
	// Metadata set on a service that never had instances keeps it too, and
	// an instance coming and going leaves it.
	h.setMeta("cfg", "x", 0)
	h.register("cfg", "a:1", nil)
	h.unregister("cfg", "a:1")
	if d, _ := metaOf(t, h.f, "cfg"); d != "x" || dumpState(h.f).EmptyCount != 1 {
		t.Errorf("cfg metadata %q, empty count %d", d, dumpState(h.f).EmptyCount)
	}
}

// TestFSM_MetaIdempotentRetry: a retried set or delete (same request id) is
// answered with the first result — a conflict with its current index
// too — and changes nothing.
func TestFSM_MetaIdempotentRetry(t *testing.T) {
	h := newHarness(t, Config{})
	set := SetMetaCommand{Name: "db", Data: []byte("a"), RequestID: "r1"}
	h.apply(SetMetaType, set) // 1
	h.setMeta("db", "b", 1)   // 2
	if r := h.apply(SetMetaType, set); r.Index != 1 || !r.Changed || r.Err != nil {
		t.Errorf("retried set = %+v, want the first result", *r)
	}
	if d, i := metaOf(t, h.f, "db"); d != "b" || i != 2 {
		t.Errorf("a retried set changed the metadata: %q@%d", d, i)
	}
	lose := SetMetaCommand{Name: "db", Data: []byte("c"), ExpectIndex: 1, RequestID: "r2"}
	wantConflict(t, "stale set", h.apply(SetMetaType, lose), 2) // 4
	h.setMeta("db", "d", 2)                                     // 5
	wantConflict(t, "its retry", h.apply(SetMetaType, lose), 2) // the first result, not the current index 5
	del := DeleteMetaCommand{Name: "db", ExpectIndex: 5, RequestID: "r3"}
	h.apply(DeleteMetaType, del) // 7
	h.setMeta("db", "e", 0)      // 8
	if r := h.apply(DeleteMetaType, del); r.Index != 7 || !r.Changed {
		t.Errorf("retried delete = %+v", *r)
	}
	if d, i := metaOf(t, h.f, "db"); d != "e" || i != 8 {
		t.Errorf("a retried delete deleted newer metadata: %q@%d", d, i)
	}
	// The conflict's index survives a snapshot of the request table.
	restored := restoreNew(t, Config{}, persistBytes(t, h.f))
	hh := &harness{t: t, f: restored, index: h.index}
	wantConflict(t, "retry after a restore", hh.apply(SetMetaType, lose), 2)
}

// TestFSM_MetaWatch: a state block holds a meta event before its current
// marker; every set and delete is a meta event, and a resumed watch
// replays them like any other change.
func TestFSM_MetaWatch(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("db", "a:1", nil) // 1
	h.setMeta("db", "one", 0)    // 2
	h.register("db", "b:1", nil) // 3
	w, err := h.f.Watch("db", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	evs := drainNow(t, w)
	if got, want := summarize(evs), []string{"up a:1@1", "up b:1@3", "meta@2", "current@3"}; !slices.Equal(got, want) {
		t.Fatalf("state block = %v, want %v", got, want)
	}
	if string(evs[2].Meta.Data) != "one" {
		t.Errorf("state block's meta = %+v", evs[2].Meta)
	}
	h.setMeta("db", "two", 2)    // 4
	h.setMeta("db", "lost", 2)   // 5: a conflict is no event
	h.unregister("db", "a:1")    // 6
	h.deleteMeta("db", 4)        // 7
	h.register("db", "c:1", nil) // 8
	evs = drainNow(t, w)
	if got, want := summarize(evs), []string{"meta@4", "down a:1@6", "meta@7", "up c:1@8"}; !slices.Equal(got, want) {
		t.Fatalf("changes = %v, want %v", got, want)
	}
	if string(evs[0].Meta.Data) != "two" || evs[0].Meta.Index != 4 || evs[2].Meta != nil {
		t.Errorf("meta events: set %+v, delete %+v (want nil: deleted)", evs[0].Meta, evs[2].Meta)
	}
	// Resuming from any index replays the meta events after it.
	for from, want := range map[uint64][]string{
		1: {"meta@2", "up b:1@3", "meta@4", "down a:1@6", "meta@7", "up c:1@8", "current@8"},
		3: {"meta@4", "down a:1@6", "meta@7", "up c:1@8", "current@8"},
		6: {"meta@7", "up c:1@8", "current@8"},
	} {
		r, err := h.f.Watch("db", from)
		if err != nil {
			t.Fatal(err)
		}
		if got := summarize(drainNow(t, r)); !slices.Equal(got, want) {
			t.Errorf("resume from %d = %v, want %v", from, got, want)
		}
		r.Close()
	}
	// A service with metadata alone has a state block of it.
	h.setMeta("cfg", "x", 0) // 9
	r, err := h.f.Watch("cfg", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summarize(drainNow(t, r)), []string{"meta@9", "current@9"}; !slices.Equal(got, want) {
		t.Errorf("metadata-only state block = %v, want %v", got, want)
	}
	r.Close()
}

// TestFSM_MetaHistoryIsBoundedInBytes: large metadata written often pushes
// old events out of the history once their data passes HistoryMetaBytes;
// a watcher resuming from before them resyncs.
func TestFSM_MetaHistoryIsBoundedInBytes(t *testing.T) {
	h := newHarness(t, Config{HistoryMetaBytes: 250})
	h.register("db", "a:1", nil) // 1
	var idx uint64
	for i := range 5 { // 2..6, 100 bytes each
		idx = h.setMeta("db", strings.Repeat(fmt.Sprint(i), 100), idx).Index
	}
	evs := historyOf(h.f, "db")
	var held int
	for _, e := range evs {
		held += metaSize(e)
	}
	if len(evs) != 2 || held != 200 || evs[0].Index != 5 {
		t.Fatalf("history holds %v (%d bytes of metadata), want the last two meta events", summarize(evs), held)
	}
	w, err := h.f.Watch("db", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := summarize(drainNow(t, w)); len(got) == 0 || got[0] != "resync@6" {
		t.Errorf("resume from 3 = %v, want a resync", got)
	}
	// One event larger than the budget is kept alone.
	h.setMeta("db", strings.Repeat("x", 300), idx) // 7
	if evs := historyOf(h.f, "db"); len(evs) != 1 || evs[0].Index != 7 {
		t.Errorf("history = %v, want the one large event", summarize(evs))
	}
}

// TestFSM_MetaSnapshotRoundTrip: metadata, meta events and conflicts
// survive a snapshot, which is then version 2; a state without them is
// still written as version 1.
func TestFSM_MetaSnapshotRoundTrip(t *testing.T) {
	plain := newHarness(t, richConfig)
	buildRichState(plain)
	if v := snapshotVersionOf(t, persistBytes(t, plain.f)); v != snapshotVersion {
		t.Errorf("a state without metadata is written as version %d, want %d (older nodes read it)", v, snapshotVersion)
	}

	h := newHarness(t, richConfig)
	buildRichState(h)                                                                                           // 1..18
	h.setMeta("web", "w", 0)                                                                                    // 19
	h.setMeta("cfg", "c", 0)                                                                                    // 20: no instances
	h.setMeta("web", "x", 7)                                                                                    // 21: conflict
	h.apply(SetMetaType, SetMetaCommand{Name: "web", Data: []byte("y"), ExpectIndex: 3, RequestID: "cas-lost"}) // 22
	b := persistBytes(t, h.f)
	if v := snapshotVersionOf(t, b); v != snapshotVersionMeta {
		t.Errorf("version %d, want %d", v, snapshotVersionMeta)
	}
	restored := restoreNew(t, richConfig, b)
	if got, want := dumpState(restored), dumpState(h.f); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs: %s", diffDump(got, want))
	}
	if _, a := h.f.Hash(); a != func() string { _, b := restored.Hash(); return b }() {
		t.Error("restored replica hashes differently")
	}
	for _, from := range []uint64{0, 18, 19, 20} {
		w1, _ := h.f.Watch("web", from)
		w2, _ := restored.Watch("web", from)
		if a, b := drainNow(t, w1), drainNow(t, w2); !reflect.DeepEqual(a, b) {
			t.Errorf("watch from %d: restored %v, original %v", from, summarize(b), summarize(a))
		}
		w1.Close()
		w2.Close()
	}
	hh := &harness{t: t, f: restored, index: h.index}
	wantConflict(t, "retried lost CAS after restore", hh.apply(SetMetaType, SetMetaCommand{Name: "web", RequestID: "cas-lost"}), 19)
}

func snapshotVersionOf(t *testing.T, b []byte) int {
	t.Helper()
	var hdr snapshotHeader
	if err := codec.NewDecoderBytes(b, codecHandle).Decode(&hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Version
}

// Snapshot types as they were before metadata (version 1): no Meta in a
// service or an event, no ConflictIndex in a request.
type (
	oldSnapshotService struct {
		Name             string
		Instances        []*Instance
		History          []oldEvent
		TruncatedThrough uint64
		LastIndex        uint64
		EmptySince       uint64
	}
	oldEvent struct {
		Kind     EventKind
		Index    uint64
		Name     string
		Instance *Instance
		Reason   Reason
	}
	oldSnapshotRequest struct {
		ID      string
		Index   uint64
		Changed bool
		Code    string
		Error   string
	}
	oldSnapshotHeader struct {
		Version          int
		Applied          uint64
		ForgottenThrough uint64
		Services         int
		Requests         []oldSnapshotRequest
	}
)

// TestFSM_RestoresASnapshotFromBeforeMetadata: a snapshot written in the
// format before metadata existed restores to the same state, without
// metadata, and metadata can be set on it afterwards.
func TestFSM_RestoresASnapshotFromBeforeMetadata(t *testing.T) {
	h := newHarness(t, richConfig)
	buildRichState(h)
	want := dumpState(h.f)

	var buf bytes.Buffer
	enc := codec.NewEncoder(&buf, codecHandle)
	hdr := oldSnapshotHeader{Version: 1, Applied: want.Applied, ForgottenThrough: want.ForgottenThrough, Services: len(want.Services)}
	for _, r := range want.Requests {
		hdr.Requests = append(hdr.Requests, oldSnapshotRequest{ID: r.ID, Index: r.Index, Changed: r.Changed, Code: r.Code, Error: r.Error})
	}
	if err := enc.Encode(&hdr); err != nil {
		t.Fatal(err)
	}
	for _, ds := range want.Services {
		os := oldSnapshotService{Name: ds.Name, TruncatedThrough: ds.TruncatedThrough, LastIndex: ds.LastIndex, EmptySince: ds.EmptySince}
		for i := range ds.Instances {
			os.Instances = append(os.Instances, &ds.Instances[i])
		}
		for _, e := range ds.History {
			os.History = append(os.History, oldEvent{Kind: e.Kind, Index: e.Index, Name: e.Name, Instance: e.Instance, Reason: e.Reason})
		}
		if err := enc.Encode(&os); err != nil {
			t.Fatal(err)
		}
	}
	restored := restoreNew(t, richConfig, buf.Bytes())
	if got := dumpState(restored); !reflect.DeepEqual(got, want) {
		t.Fatalf("old snapshot restored to a different state: %s", diffDump(got, want))
	}
	if _, a := h.f.Hash(); a != func() string { _, b := restored.Hash(); return b }() {
		t.Error("old snapshot restored to a different hash")
	}
	hh := &harness{t: t, f: restored, index: h.index}
	if r := hh.setMeta("web", "after", 0); r.Err != nil || !r.Changed {
		t.Fatalf("set metadata after restoring an old snapshot: %+v", *r)
	}
}

// TestFSM_MetaHashAndJournal: metadata is part of the state hash, and the
// journal records what each meta command expected and found.
func TestFSM_MetaHashAndJournal(t *testing.T) {
	j := &memJournal{}
	h := newHarness(t, Config{})
	h.f.SetJournal(j)
	h.register("db", "a:1", nil) // 1
	_, before := h.f.Hash()
	h.setMeta("db", "x", 0) // 2
	_, withMeta := h.f.Hash()
	if withMeta == before {
		t.Error("setting metadata did not change the hash")
	}
	other := newHarness(t, Config{})
	other.register("db", "a:1", nil)
	other.setMeta("db", "y", 0) // same index, other data
	if _, h2 := other.f.Hash(); h2 == withMeta {
		t.Error("different metadata hashes the same")
	}
	h.setMeta("db", "z", 7) // 3: conflict
	h.deleteMeta("db", 2)   // 4
	h.deleteMeta("db", 0)   // 5: not found
	want := []JournalEntry{
		{Index: 1, Type: RegisterType, Name: "db", Addr: "a:1", TTL: 10 * time.Second, Changed: true},
		{Index: 2, Type: SetMetaType, Name: "db", Changed: true},
		{Index: 3, Type: SetMetaType, Name: "db", MetaExpect: 7, MetaIndex: 2},
		{Index: 4, Type: DeleteMetaType, Name: "db", MetaExpect: 2, MetaIndex: 2, Changed: true},
		{Index: 5, Type: DeleteMetaType, Name: "db"},
	}
	if len(j.entries) != len(want) {
		t.Fatalf("journal has %d entries, want %d", len(j.entries), len(want))
	}
	for i, e := range j.entries {
		w := want[i]
		w.Term, w.RaftIndex = 1, w.Index
		hasErr := e.Err != nil
		e.Err = nil
		if e != w || hasErr != (i >= 2 && i != 3) {
			t.Errorf("journal %d = %+v (err %v), want %+v", i, e, hasErr, w)
		}
	}
}

// TestFSM_MetaCommandsEncode: the meta commands round-trip through Encode
// and decode, and a type this node does not know (12, the first unused one)
// stops Apply rather than being skipped.
func TestFSM_MetaCommandsEncode(t *testing.T) {
	for _, cmd := range []any{
		&SetMetaCommand{Name: "db", Data: []byte{0, 1, 0xff}, ExpectIndex: 1 << 40, RequestID: "r"},
		&SetMetaCommand{Name: "db", Data: bytes.Repeat([]byte("x"), 65536)},
		&DeleteMetaCommand{Name: "db", ExpectIndex: 3, RequestID: "r"},
	} {
		typ := SetMetaType
		var back any = new(SetMetaCommand)
		if _, ok := cmd.(*DeleteMetaCommand); ok {
			typ, back = DeleteMetaType, new(DeleteMetaCommand)
		}
		b, err := Encode(typ, cmd)
		if err != nil || MessageType(b[0]) != typ {
			t.Fatalf("Encode(%s) = %x, %v", typ, b[:1], err)
		}
		if err := decode(b[1:], back); err != nil || !reflect.DeepEqual(back, cmd) {
			t.Errorf("%s round trip = %+v, %v", typ, back, err)
		}
	}
	if SetMetaType.String() != "set-meta" || DeleteMetaType.String() != "delete-meta" || EventMeta.String() != "meta" {
		t.Errorf("names: %s %s %s", SetMetaType, DeleteMetaType, EventMeta)
	}
	f := New(Config{})
	p := func() (p any) {
		defer func() { p = recover() }()
		f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{12, 0x80}})
		return nil
	}()
	if !strings.Contains(fmt.Sprint(p), "unknown message type 12") {
		t.Errorf("type 12 (the first unused one): panic %v", p)
	}
}
