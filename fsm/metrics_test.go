package fsm

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestFSM_MetricsCountSizesRemovalsAndResyncs: Metrics counts services
// holding something and their instances, removals by reason, open watchers,
// and resyncs by cause: a resume the history no longer reaches, and a
// watcher left further behind than the history.
func TestFSM_MetricsCountSizesRemovalsAndResyncs(t *testing.T) {
	h := newHarness(t, Config{HistoryPerService: 4})
	for i := range 5 {
		h.register("web", fmt.Sprintf("10.0.0.%d:80", i+1), nil)
	}
	h.register("db", "10.0.1.1:5432", nil)
	r := h.register("cache", "10.0.2.1:11211", nil)
	h.unregister("web", "10.0.0.1:80")
	h.unregister("db", "10.0.1.1:5432") // db is empty now: not counted
	h.expire("cache", "10.0.2.1:11211", r.Index)
	m := h.f.Metrics()
	if m.Services != 1 || m.Instances != 4 || m.Unregistered != 2 || m.Expired != 1 {
		t.Fatalf("metrics %+v: want 1 service, 4 instances, 2 unregistered, 1 expired", m)
	}

	w, err := h.f.Watch("web", 1) // history of 4 no longer reaches index 1
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if m := h.f.Metrics(); m.Resyncs[ResyncResume] != 1 || m.Watchers != 1 {
		t.Fatalf("metrics %+v: want one resume resync and one watcher", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for { // read the state up to its current marker
		evs, err := w.Next(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if evs[len(evs)-1].Kind == EventCurrent {
			break
		}
	}
	for i := range 6 { // more changes than the history holds, unread
		h.register("web", fmt.Sprintf("10.0.3.%d:80", i+1), nil)
	}
	if _, err := w.Next(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if m := h.f.Metrics(); m.Resyncs[ResyncBehind] != 1 {
		t.Fatalf("metrics %+v: want one resync of a watcher left behind", m)
	}
	w.Close()
	if m := h.f.Metrics(); m.Watchers != 0 {
		t.Fatalf("metrics %+v: want no watcher once closed", m)
	}
}
