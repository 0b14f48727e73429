package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/discoverd/discoverd/internal/codes"
)

// backupState is a state with two services, metadata, a removal and
// request ids: index 5.
func backupState(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, Config{})
	h.register("web", "10.0.0.1:80", map[string]string{"zone": "a"})
	h.register("web", "10.0.0.2:80", nil)
	h.apply(RegisterType, RegisterCommand{Name: "db", Addr: "10.0.1.1:5432", TTL: time.Minute, RequestID: "r1"})
	h.setMeta("db", "primary", 0)
	h.unregister("web", "10.0.0.2:80")
	return h
}

// prepared runs PrepareRestore and restores what it wrote into a new FSM.
func prepared(t *testing.T, snap []byte, opts RestoreOptions) (*FSM, SnapshotSummary, uint64) {
	t.Helper()
	var out bytes.Buffer
	sum, index, err := PrepareRestore(bytes.NewReader(snap), &out, opts)
	if err != nil {
		t.Fatalf("PrepareRestore(%+v): %v", opts, err)
	}
	return restoreNew(t, Config{}, out.Bytes()), sum, index
}

// TestFSM_PrepareRestoreKeepsAStateAheadOfTheCluster: restored into a
// cluster behind the snapshot (a fresh one), the state is the snapshot's
// exactly — the same hash at the same index — and the summary counts it.
func TestFSM_PrepareRestoreKeepsAStateAheadOfTheCluster(t *testing.T) {
	h := backupState(t)
	snap := persistBytes(t, h.f)
	f, sum, index := prepared(t, snap, RestoreOptions{Current: 1})
	wantIdx, wantHash := h.f.Hash()
	gotIdx, gotHash := f.Hash()
	if index != wantIdx || gotIdx != wantIdx || gotHash != wantHash {
		t.Errorf("restored at %d (PrepareRestore said %d) with hash %.12s; the snapshot is at %d with %.12s", gotIdx, index, gotHash, wantIdx, wantHash)
	}
	want := SnapshotSummary{Version: snapshotVersionMeta, Applied: 5, Services: 2, Instances: 2, Meta: 1, Requests: 1}
	if sum != want {
		t.Errorf("summary = %+v, want %+v", sum, want)
	}
	if s, err := SummarizeSnapshot(bytes.NewReader(snap)); err != nil || s != want {
		t.Errorf("SummarizeSnapshot = %+v, %v; want %+v", s, err, want)
	}
}

// TestFSM_PrepareRestoreMovesPastTheCluster: restored into a cluster that
// has reached the snapshot's index (or with a bump), the state's index
// moves past it, the instances keep their own indices, and a watcher
// resuming from any index before the restore resyncs instead of reading
// the restored history as if it followed what it saw.
func TestFSM_PrepareRestoreMovesPastTheCluster(t *testing.T) {
	h := backupState(t)
	snap := persistBytes(t, h.f)
	for _, tc := range []struct {
		name string
		opts RestoreOptions
		want uint64
	}{
		{"cluster at the snapshot's index", RestoreOptions{Current: 5}, 6},
		{"cluster ahead", RestoreOptions{Current: 900}, 901},
		{"bumped", RestoreOptions{Current: 1, Bump: 1000}, 1005},
		{"bumped, cluster further ahead", RestoreOptions{Current: 5000, Bump: 1000}, 5001},
	} {
		f, _, index := prepared(t, snap, tc.opts)
		if index != tc.want || f.AppliedIndex() != tc.want {
			t.Errorf("%s: restored at %d (PrepareRestore said %d), want %d", tc.name, f.AppliedIndex(), index, tc.want)
		}
		if in := f.Get("web", "10.0.0.1:80"); in == nil || in.ModifyIndex != 1 || in.Attrs["zone"] != "a" {
			t.Errorf("%s: web 10.0.0.1:80 = %+v, want it as registered at index 1", tc.name, in)
		}
		for _, from := range []uint64{3, 5, tc.want - 1} {
			w, err := f.Watch("web", from)
			if err != nil {
				t.Fatalf("%s: Watch from %d: %v", tc.name, from, err)
			}
			evs := drainNow(t, w)
			w.Close()
			if len(evs) == 0 || evs[0].Kind != EventResync || evs[0].Index != tc.want {
				t.Errorf("%s: a watch resuming from %d got %v, want a resync at %d", tc.name, from, summarize(evs), tc.want)
			}
		}
		if w, err := f.Watch("gone", 4); err != nil {
			t.Errorf("%s: Watch of a service the state does not hold: %v", tc.name, err)
		} else if evs := drainNow(t, w); len(evs) == 0 || evs[0].Kind != EventResync {
			t.Errorf("%s: a watch of a service the state does not hold, from 4, got %v, want a resync", tc.name, summarize(evs))
		}
	}
}

// TestFSM_PrepareRestoreRefusesWhatRestoreCannotTake: a snapshot that does
// not decode, is of an unknown format, or holds what no state holds (a nil
// instance, which would crash Restore on every node; an instance filed
// under another service; indices beyond the snapshot's; duplicates;
// trailing data) is refused with ErrBadSnapshot, an invalid_argument.
func TestFSM_PrepareRestoreRefusesWhatRestoreCannotTake(t *testing.T) {
	good := func() (snapshotHeader, []snapshotService) {
		in := &Instance{Name: "web", Addr: "10.0.0.1:80", TTL: time.Second, CreateIndex: 2, ModifyIndex: 3}
		return snapshotHeader{Version: snapshotVersion, Applied: 10, Services: 1},
			[]snapshotService{{Name: "web", Instances: []*Instance{in}, History: []Event{{Kind: EventUp, Index: 3, Name: "web", Instance: in}}, LastIndex: 3}}
	}
	cases := []struct {
		name   string
		change func(*snapshotHeader, []snapshotService) []snapshotService
		want   string
	}{
		{"intact", func(*snapshotHeader, []snapshotService) []snapshotService { return nil }, ""},
		{"a newer format", func(h *snapshotHeader, _ []snapshotService) []snapshotService { h.Version = 4; return nil }, "format version 4"},
		{"a nil instance", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].Instances = append(s[0].Instances, nil)
			return s
		}, "missing (nil)"},
		{"another service's instance", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].Instances[0] = &Instance{Name: "db", Addr: "10.0.0.1:80", TTL: time.Second, CreateIndex: 2, ModifyIndex: 3}
			return s
		}, "filed under service web"},
		{"an index beyond the snapshot's", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].Instances[0] = &Instance{Name: "web", Addr: "10.0.0.1:80", TTL: time.Second, CreateIndex: 2, ModifyIndex: 11}
			return s
		}, "<= the snapshot's 10"},
		{"a bad address", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].Instances[0] = &Instance{Name: "web", Addr: "no port", TTL: time.Second, CreateIndex: 2, ModifyIndex: 3}
			return s
		}, "no port"},
		{"an address twice", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].Instances = append(s[0].Instances, s[0].Instances[0])
			return s
		}, "appears twice"},
		{"a service twice", func(h *snapshotHeader, s []snapshotService) []snapshotService {
			h.Services = 2
			return append(s, s[0])
		}, "appears twice"},
		{"a bad service name", func(_ *snapshotHeader, s []snapshotService) []snapshotService { s[0].Name = "../etc"; return s }, "../etc"},
		{"a history out of order", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].History = append(s[0].History, Event{Kind: EventMeta, Index: 2, Name: "web"})
			return s
		}, "increasing indices"},
		{"a marker in the history", func(_ *snapshotHeader, s []snapshotService) []snapshotService {
			s[0].History = append(s[0].History, Event{Kind: EventResync, Index: 9, Name: "web"})
			return s
		}, "never holds"},
		{"fewer services counted than held", func(h *snapshotHeader, s []snapshotService) []snapshotService {
			h.Services = 0
			return s
		}, "more than the 0 services"},
		{"more services counted than held", func(h *snapshotHeader, s []snapshotService) []snapshotService {
			h.Services = 2
			return s
		}, "decode service 2 of 2"},
	}
	for _, tc := range cases {
		hdr, svcs := good()
		if s := tc.change(&hdr, svcs); s != nil {
			svcs = s
		}
		var b bytes.Buffer
		enc := codec.NewEncoder(&b, codecHandle)
		if err := enc.Encode(&hdr); err != nil {
			t.Fatal(err)
		}
		for i := range svcs {
			if err := enc.Encode(&svcs[i]); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := PrepareRestore(bytes.NewReader(b.Bytes()), io.Discard, RestoreOptions{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want == "":
		case err == nil || !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		case !errors.Is(err, ErrBadSnapshot) || codes.Of(err) != codes.CodeInvalidArgument:
			t.Errorf("%s: %v is not an ErrBadSnapshot and invalid_argument", tc.name, err)
		}
	}
	if _, err := SummarizeSnapshot(strings.NewReader("not msgpack at all")); !errors.Is(err, ErrBadSnapshot) {
		t.Errorf("SummarizeSnapshot of text: %v, want ErrBadSnapshot", err)
	}
}
