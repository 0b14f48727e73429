package fsm

import (
	"slices"
	"testing"
)

// TestFSM_Services: every service with at least one instance, sorted by
// name, with its count and the applied index; a service whose instances all
// went (unregistered, expired) is not listed although the FSM keeps it for
// its history; the list survives a snapshot.
func TestFSM_Services(t *testing.T) {
	h := newHarness(t, Config{})
	if idx, got := h.f.Services(); idx != 0 || got == nil || len(got) != 0 {
		t.Fatalf("empty FSM: Services() = %d, %v; want 0 and an empty, non-nil list", idx, got)
	}
	h.register("web", "10.0.0.1:80", nil)
	h.register("web", "10.0.0.2:80", nil)
	h.register("db", "10.0.1.1:5432", nil)
	h.register("cache", "10.0.2.1:6379", nil)
	h.register("web", "10.0.0.1:80", map[string]string{"v": "2"}) // again: still one instance
	h.unregister("cache", "10.0.2.1:6379")
	h.register("queue", "10.0.3.1:1", nil)
	reg := h.register("queue", "10.0.3.2:1", nil)
	h.expire("queue", "10.0.3.2:1", reg.Index)
	h.register("Alpha", "10.0.4.1:1", nil) // byte order: upper case first

	want := []ServiceCount{{"Alpha", 1}, {"db", 1}, {"queue", 1}, {"web", 2}}
	idx, got := h.f.Services()
	if !slices.Equal(got, want) {
		t.Fatalf("Services() = %v, want %v", got, want)
	}
	if idx != h.f.AppliedIndex() || idx != h.index {
		t.Fatalf("index %d, want the applied index %d", idx, h.index)
	}
	if !hasService(h.f, "cache") {
		t.Fatalf("the emptied service was forgotten: this test no longer checks that empty services are left out")
	}

	restored := restoreNew(t, Config{}, persistBytes(t, h.f))
	if ridx, rgot := restored.Services(); ridx != idx || !slices.Equal(rgot, want) {
		t.Fatalf("after a snapshot: Services() = %d, %v; want %d, %v", ridx, rgot, idx, want)
	}
}
