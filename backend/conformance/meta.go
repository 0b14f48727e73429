package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// getMeta reads a service's metadata with a consistent read, through the
// given client.
func getMeta(t *testing.T, c *client.Client, name string) client.Meta {
	t.Helper()
	m, err := c.GetMeta(ctx(t, 10*time.Second), name, client.MetaOptions{Consistent: true})
	if err != nil {
		t.Fatalf("get metadata of %s: %v", name, err)
	}
	return m
}

// wantConflict fails unless err is a conflict reporting current.
func wantConflict(t *testing.T, what string, err error, current uint64) {
	t.Helper()
	idx, ok := client.ConflictIndex(err)
	if !ok || !errors.Is(err, client.ErrConflict) || idx != current {
		t.Fatalf("%s: %v (conflict %v, index %d), want a conflict at current index %d", what, err, ok, idx, current)
	}
}

// testMetaCompareAndSet: 0 creates only; a set applies only at the current
// index, and the metadata's index is the write's; a losing set is a
// conflict carrying the winner's index; every node reads the result.
func testMetaCompareAndSet(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if m := getMeta(t, c, name); m.Index != 0 || m.Data != nil {
		t.Fatalf("metadata of a new service: %+v, want none", m)
	}
	i1, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("primary=10.0.20.1"), 0)
	if err != nil || i1 == 0 {
		t.Fatalf("create: %d, %v", i1, err)
	}
	_, err = c.SetMeta(ctx(t, 10*time.Second), name, []byte("other"), 0)
	wantConflict(t, "a second create", err, i1)
	i2, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("primary=10.0.20.2"), i1)
	if err != nil || i2 <= i1 {
		t.Fatalf("set at the current index %d: %d, %v", i1, i2, err)
	}
	_, err = c.SetMeta(ctx(t, 10*time.Second), name, []byte("stale"), i1)
	wantConflict(t, "a set at the old index", err, i2)
	// Every node answers the winner, and the client that lost reads it
	// with a default read too (it has seen the conflict's index).
	for _, server := range s.tg.Servers {
		if m := getMeta(t, s.client(t, server), name); m.Index != i2 || string(m.Data) != "primary=10.0.20.2" {
			t.Fatalf("consistent read via %s: %q at %d, want the second set at %d", server, m.Data, m.Index, i2)
		}
	}
	if m, err := c.GetMeta(ctx(t, 10*time.Second), name, client.MetaOptions{}); err != nil || m.Index != i2 {
		t.Fatalf("default read after the conflict: %+v, %v", m, err)
	}
	// Binary data, and empty data (metadata nonetheless), round-trip.
	bin := []byte{0, 1, 0xfe, 0xff, '\n'}
	i3, err := c.SetMeta(ctx(t, 10*time.Second), name, bin, i2)
	if err != nil {
		t.Fatal(err)
	}
	if m := getMeta(t, c, name); !bytes.Equal(m.Data, bin) || m.Index != i3 {
		t.Fatalf("binary metadata read back as %q at %d", m.Data, m.Index)
	}
	i4, err := c.SetMeta(ctx(t, 10*time.Second), name, nil, i3)
	if err != nil {
		t.Fatal(err)
	}
	if m := getMeta(t, c, name); m.Index != i4 || len(m.Data) != 0 {
		t.Fatalf("empty metadata read back as %+v, want index %d", m, i4)
	}
}

// testMetaDelete: a delete at a wrong index is a conflict, at the current
// one it applies; an unconditional delete takes whatever is there, and of
// nothing is not_found.
func testMetaDelete(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	i1, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("a"), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteMeta(ctx(t, 10*time.Second), name, i1+1000)
	wantConflict(t, "delete at a wrong index", err, i1)
	if _, err := c.DeleteMeta(ctx(t, 10*time.Second), name, i1); err != nil {
		t.Fatalf("delete at the current index: %v", err)
	}
	if m := getMeta(t, c, name); m.Index != 0 {
		t.Fatalf("after delete: %+v", m)
	}
	_, err = c.DeleteMeta(ctx(t, 10*time.Second), name, i1)
	wantConflict(t, "delete expecting an index, none there", err, 0)
	_, err = c.SetMeta(ctx(t, 10*time.Second), name, []byte("b"), i1)
	wantConflict(t, "set expecting an index, none there", err, 0)
	if _, err := c.DeleteMeta(ctx(t, 10*time.Second), name, 0); !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), "no metadata") {
		t.Fatalf("unconditional delete of nothing: %v, want ErrNotFound saying there is no metadata", err)
	}
	if _, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("c"), 0); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
	if _, err := c.DeleteMeta(ctx(t, 10*time.Second), name, 0); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
	if m := getMeta(t, c, name); m.Index != 0 {
		t.Fatalf("after the unconditional delete: %+v", m)
	}
}

// testMetaLimits: 64 KiB of data is accepted, a byte more is refused with
// too_large by the server (not only by the client), as a bad name is with
// invalid_argument; nothing changes.
func testMetaLimits(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	big := bytes.Repeat([]byte("m"), client.MaxMetaBytes)
	idx, err := c.SetMeta(ctx(t, 10*time.Second), name, big, 0)
	if err != nil {
		t.Fatalf("64 KiB of metadata: %v", err)
	}
	var resp wire.WriteResponse
	err = s.raw(t, wire.MethodSetMeta, &wire.SetMetaRequest{Name: name, Data: append(big, 'x'), ExpectIndex: idx}, &resp)
	if !errors.Is(err, codes.ErrTooLarge) || !strings.Contains(err.Error(), "65537 bytes, the limit is 65536") {
		t.Fatalf("64 KiB + 1 through the protocol: %v, want too_large", err)
	}
	if _, err := c.SetMeta(ctx(t, 10*time.Second), name, append(big, 'x'), idx); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("64 KiB + 1 through the client: %v, want ErrTooLarge", err)
	}
	for _, bad := range []string{"", "db/x", "-db", strings.Repeat("n", 129)} {
		err := s.raw(t, wire.MethodSetMeta, &wire.SetMetaRequest{Name: bad, Data: []byte("x")}, &resp)
		if !errors.Is(err, codes.ErrInvalidArgument) {
			t.Fatalf("set metadata of %q: %v, want invalid_argument", bad, err)
		}
		if err := s.raw(t, wire.MethodDeleteMeta, &wire.DeleteMetaRequest{Name: bad}, &resp); !errors.Is(err, codes.ErrInvalidArgument) {
			t.Fatalf("delete metadata of %q: %v, want invalid_argument", bad, err)
		}
	}
	if m := getMeta(t, c, name); m.Index != idx || !bytes.Equal(m.Data, big) {
		t.Fatalf("after refused writes: %d bytes at %d, want the 64 KiB at %d", len(m.Data), m.Index, idx)
	}
}

// testMetaWatch: a state block holds the metadata before its current
// marker; a set and a delete are meta events on the service's stream, in
// order with instance changes; a resumed watch replays them; a ServiceSet
// follows the metadata and tells its subscribers.
func testMetaWatch(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.21.1:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	i1, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("one"), 0)
	if err != nil {
		t.Fatal(err)
	}
	w := s.client(t, s.tg.Servers[len(s.tg.Servers)-1])
	getMeta(t, w, name) // has seen the writes
	set, err := w.ServicesContext(ctx(t, 10*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if m := set.Meta(); m.Index != i1 || string(m.Data) != "one" {
		t.Fatalf("ServiceSet.Meta = %+v, want one at %d", m, i1)
	}
	updates := make(chan *client.ServiceUpdate, 16)
	set.Subscribe(updates)
	if u := <-updates; u.Addr != "10.0.21.1:80" {
		t.Fatalf("first update %+v, want the instance", u)
	}
	if u := <-updates; !u.MetaChange || u.Meta == nil || string(u.Meta.Data) != "one" || u.Addr != "" {
		t.Fatalf("second update %+v, want the metadata", u)
	}

	events, _ := watchEvents(t, w, name, 0)
	var state []string
	for {
		e := next(t, events, 10*time.Second)
		if e.Kind == client.EventMeta {
			if e.Meta == nil || string(e.Meta.Data) != "one" || e.Index != i1 || e.Meta.Index != i1 {
				t.Fatalf("state block's meta event: %+v %+v", e, e.Meta)
			}
		}
		state = append(state, string(e.Kind))
		if e.Kind == client.EventCurrent {
			break
		}
	}
	if want := []string{"up", "meta", "current"}; !slices.Equal(state, want) {
		t.Fatalf("state block %v, want %v", state, want)
	}
	from := c.LastIndex()
	i2, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("two"), i1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UnregisterAddr(ctx(t, 10*time.Second), name, "10.0.21.1:80"); err != nil {
		t.Fatal(err)
	}
	iDel, err := c.DeleteMeta(ctx(t, 10*time.Second), name, i2)
	if err != nil {
		t.Fatal(err)
	}
	check := func(events <-chan *client.Event, how string) {
		t.Helper()
		if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventMeta || e.Meta == nil || string(e.Meta.Data) != "two" || e.Index != i2 {
			t.Fatalf("%s: %s at %d (%+v), want meta two at %d", how, e.Kind, e.Index, e.Meta, i2)
		}
		if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventDown {
			t.Fatalf("%s: %s, want down", how, e.Kind)
		}
		if e := nextChange(t, events, 10*time.Second); e.Kind != client.EventMeta || e.Meta != nil || e.Index != iDel {
			t.Fatalf("%s: %s at %d (%+v), want the delete's meta event at %d", how, e.Kind, e.Index, e.Meta, iDel)
		}
	}
	check(events, "live watch")
	resumed, _ := watchEvents(t, s.client(t, s.tg.Servers[0]), name, from)
	check(resumed, fmt.Sprintf("watch resumed from %d", from))

	want := []string{"meta two", "down 10.0.21.1:80", "meta none"}
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case u := <-updates:
			switch {
			case u.MetaChange && u.Meta != nil:
				got = append(got, "meta "+string(u.Meta.Data))
			case u.MetaChange:
				got = append(got, "meta none")
			case !u.Online && u.Addr != "":
				got = append(got, "down "+u.Addr)
			}
		case <-deadline:
			t.Fatalf("subscriber got %v, want %v", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("subscriber got %v, want %v", got, want)
	}
	if m := set.Meta(); m.Index != 0 {
		t.Fatalf("ServiceSet.Meta after delete = %+v", m)
	}
}

// testMetaOutlivesInstances: removing a service's last instance leaves its
// metadata; a service with metadata and no instances is not listed by
// Services.
func testMetaOutlivesInstances(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	if err := c.RegisterAddr(ctx(t, 10*time.Second), name, "10.0.22.1:80", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	idx, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("keep"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UnregisterAddr(ctx(t, 10*time.Second), name, "10.0.22.1:80"); err != nil {
		t.Fatal(err)
	}
	if m := getMeta(t, c, name); m.Index != idx || string(m.Data) != "keep" {
		t.Fatalf("metadata after the last instance left: %+v", m)
	}
	list, _, err := c.ServiceNames(ctx(t, 10*time.Second), client.ServiceNamesOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(list, func(sc client.ServiceCount) bool { return sc.Name == name }) {
		t.Fatalf("Services lists %s, which has metadata and no instances", name)
	}
}

// testMetaRetriedWriteAppliedOnce: a set retried with its request id is
// answered with the first index and applied once (a second application
// would conflict with the first, or move the index).
func testMetaRetriedWriteAppliedOnce(t *testing.T, s *suite) {
	name := svc(t)
	req := &wire.SetMetaRequest{Name: name, Data: []byte("x"), RequestID: "conformance-meta-set"}
	var first, second wire.WriteResponse
	if err := s.raw(t, wire.MethodSetMeta, req, &first); err != nil {
		t.Fatal(err)
	}
	if err := s.raw(t, wire.MethodSetMeta, req, &second); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if first.Index == 0 || second.Index != first.Index {
		t.Fatalf("first answered %d, the retry %d", first.Index, second.Index)
	}
	if m := getMeta(t, s.client(t), name); m.Index != first.Index {
		t.Fatalf("metadata at %d, want the first write's %d", m.Index, first.Index)
	}
	del := &wire.DeleteMetaRequest{Name: name, ExpectIndex: first.Index, RequestID: "conformance-meta-delete"}
	if err := s.raw(t, wire.MethodDeleteMeta, del, &first); err != nil {
		t.Fatal(err)
	}
	if err := s.raw(t, wire.MethodDeleteMeta, del, &second); err != nil || second.Index != first.Index {
		t.Fatalf("retried delete: %d, %v; want %d", second.Index, err, first.Index)
	}
}

// testMetaSurvivesSnapshotRestore: metadata, its index, and the conflicts
// it decides survive the store's snapshot and a restart from it.
func testMetaSurvivesSnapshotRestore(t *testing.T, s *suite) {
	c := s.client(t)
	name := svc(t)
	i1, err := c.SetMeta(ctx(t, 10*time.Second), name, []byte("before"), 0)
	if err != nil {
		t.Fatal(err)
	}
	gone := name + "-gone"
	g, err := c.SetMeta(ctx(t, 10*time.Second), gone, []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteMeta(ctx(t, 10*time.Second), gone, g); err != nil {
		t.Fatal(err)
	}
	s.tg.SnapshotRestore(t)
	c2 := s.client(t)
	if m := getMeta(t, c2, name); m.Index != i1 || string(m.Data) != "before" {
		t.Fatalf("after snapshot and restore: %+v, want before at %d", m, i1)
	}
	if m := getMeta(t, c2, gone); m.Index != 0 {
		t.Fatalf("deleted metadata came back: %+v", m)
	}
	_, err = c2.SetMeta(ctx(t, 10*time.Second), name, []byte("x"), 0)
	wantConflict(t, "create after restore", err, i1)
	if _, err := c2.SetMeta(ctx(t, 10*time.Second), name, []byte("after"), i1); err != nil {
		t.Fatalf("set at the restored index: %v", err)
	}
}
