package conformance

import (
	"errors"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/wire"
)

// testTwoRegistrants: two clients register the same instance; the one that
// registered first stops (Close) and leaves the other's registration in
// place — no down event, nothing to register again — and the instance goes
// only when the last registrant stops. A raw conditional unregistration
// naming an older registration is refused with not_found and changes
// nothing; an unconditional one (the CLI's) removes whatever is there.
func testTwoRegistrants(t *testing.T, s *suite) {
	name := svc(t)
	const addr = "10.0.11.1:80"
	first, second, obs := s.client(t), s.client(t), s.client(t)
	if err := first.RegisterAddr(ctx(t, 10*time.Second), name, addr, map[string]string{"by": "first"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	l := list(t, obs, name, client.ListOptions{Consistent: true})
	if len(l) != 1 {
		t.Fatalf("after the first registration: %v", addrs(l))
	}
	firstIndex := l[0].Index
	if err := second.RegisterAddr(ctx(t, 10*time.Second), name, addr, map[string]string{"by": "second"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	list(t, obs, name, client.ListOptions{Consistent: true}) // obs has seen the second registration
	events, _ := watchEvents(t, obs, name, 0)
	if e := next(t, events, 10*time.Second); e.Kind != client.EventUp || e.Service.Attrs["by"] != "second" {
		t.Fatalf("state: %s %+v, want up (second)", e.Kind, e.Service)
	}
	if e := next(t, events, 10*time.Second); e.Kind != client.EventCurrent {
		t.Fatalf("state end: %s, want current", e.Kind)
	}

	// A raw unregistration naming the first registration: refused.
	var resp wire.WriteResponse
	err := s.raw(t, wire.MethodUnregister, &wire.UnregisterRequest{Name: name, Addr: addr, IfIndex: firstIndex}, &resp)
	if !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unregister naming the first registration (%d): %v, want not_found", firstIndex, err)
	}
	// The first registrant stops: the second's registration stays.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if l := list(t, obs, name, client.ListOptions{Consistent: true}); len(l) != 1 || l[0].Attrs["by"] != "second" {
		t.Fatalf("after the first registrant stopped: %+v, want the second's registration", l)
	}
	// The second stops: the instance goes, with one down event and nothing
	// before it.
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventDown || e.Service.Addr != addr || e.Reason != "unregister" {
		t.Fatalf("event %s %+v (%s), want down %s unregister", e.Kind, e.Service, e.Reason, addr)
	}
	if l := list(t, obs, name, client.ListOptions{Consistent: true}); len(l) != 0 {
		t.Fatalf("after both stopped: %v", addrs(l))
	}

	// An unconditional unregistration removes whatever registration is there.
	if err := obs.RegisterAddr(ctx(t, 10*time.Second), name, addr, nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.raw(t, wire.MethodUnregister, &wire.UnregisterRequest{Name: name, Addr: addr}, &resp); err != nil {
		t.Fatalf("unconditional unregister: %v", err)
	}
	if l := list(t, obs, name, client.ListOptions{Consistent: true}); len(l) != 0 {
		t.Fatalf("after an unconditional unregister: %v", addrs(l))
	}
}
