package test

import (
	"syscall"
	"testing"
	"time"
)

// TestRegistrants_EachRemovesOnlyItsOwn: two `discoverd register`
// processes hold the same instance; when the one that registered first
// stops, the instance stays with the other's registration and watchers see
// nothing (before, it was removed and registered again: down, then up).
// When the last one stops, the instance goes, with one down event. And
// `discoverd unregister` removes an instance whatever registered it.
func TestRegistrants_EachRemovesOnlyItsOwn(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)
	const addr = "10.9.0.1:80"
	byIs := func(who string) func([]instance) bool {
		return func(l []instance) bool { return len(l) == 1 && l[0].Attrs["by"] == who }
	}

	first := h.start("register-first", "register", "-servers", all, "-ttl", "3s", "web", addr, "by=first")
	h.waitServices(all, "web", byIs("first"), "the first registration")
	second := h.start("register-second", "register", "-servers", all, "-ttl", "3s", "web", addr, "by=second")
	h.waitServices(all, "web", byIs("second"), "the second registration")

	w := h.startWatch("watch", all, "web")
	if e := w.next(t, 10*time.Second); e.Kind != "up" || e.Attrs["by"] != "second" {
		t.Fatalf("watch state: %s, want up by=second", e.line)
	}
	if e := w.next(t, 10*time.Second); e.Kind != "current" {
		t.Fatalf("watch state end: %s, want current", e.line)
	}

	// The first registrant stops: its unregistration names its own
	// registration, which is no longer the instance's.
	first.signal(t, syscall.SIGTERM)
	if code := first.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("first register exited %d", code)
	}
	l, err := h.services(all, "-consistent", "web")
	if err != nil || !byIs("second")(l) {
		t.Fatalf("after the first registrant stopped: %+v %v, want the second's registration", l, err)
	}

	// The second stops: the next change the watcher sees is the instance
	// going away — not a down and up from the first's exit.
	second.signal(t, syscall.SIGTERM)
	if code := second.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("second register exited %d", code)
	}
	if e := w.next(t, 10*time.Second); e.Kind != "down" || e.Addr != addr || e.Reason != "unregister" {
		t.Fatalf("watch: %s, want down %s unregister (and nothing before it)", e.line, addr)
	}
	h.waitServices(all, "web", func(l []instance) bool { return len(l) == 0 }, "no instance")

	// `discoverd unregister` is unconditional: it removes an instance a
	// running registrant holds (which registers it again on its next
	// heartbeat, as documented).
	third := h.start("register-third", "register", "-servers", all, "-ttl", "30s", "web", addr, "by=third")
	h.waitServices(all, "web", byIs("third"), "the third registration")
	h.mustCLI(10*time.Second, "unregister", "-servers", all, "web", addr)
	if e := w.next(t, 10*time.Second); e.Kind != "up" || e.Attrs["by"] != "third" {
		t.Fatalf("watch: %s, want up by=third", e.line)
	}
	if e := w.next(t, 10*time.Second); e.Kind != "down" || e.Reason != "unregister" {
		t.Fatalf("watch: %s, want down (the CLI's unregister)", e.line)
	}
	third.signal(t, syscall.SIGTERM)
	third.wait(t, 10*time.Second)
}
