package client

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// These tests reach the client's internals without a network: timing helpers,
// the ServiceSet's bookkeeping and the Watch's resume point. The behaviour
// against a cluster is tested black-box in client_test.go.

func TestClient_JitterWithinTenPercent(t *testing.T) {
	for _, d := range []time.Duration{time.Second / 3, 10 * time.Second / 3, time.Hour / 3} {
		lo, hi := d-d/10, d+d/10
		for range 2000 {
			if j := jitter(d); j < lo || j > hi {
				t.Fatalf("jitter(%v) = %v, want %v..%v", d, j, lo, hi)
			}
		}
	}
	if j := jitter(0); j != 0 {
		t.Fatalf("jitter(0) = %v", j)
	}
}

func TestClient_RetryDelayRange(t *testing.T) {
	for range 2000 {
		if d := retryDelay(); d < 200*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("retryDelay() = %v, want 200–400 ms", d)
		}
	}
}

func TestClient_SplitServers(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"a:1", []string{"a:1"}},
		{" a:1 ,b:2,, c ", []string{"a:1", "b:2", "c"}},
	}
	for _, tt := range tests {
		if got := splitServers(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("splitServers(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func svc(addr string, create, index uint64) *Service {
	return &Service{Name: "svc", Addr: addr, CreateIndex: create, Index: index, Attrs: map[string]string{"addr": addr}}
}

func TestClient_SetReplacePublishesDifference(t *testing.T) {
	s := &ServiceSet{name: "svc", online: map[string]*Service{
		"a:1": svc("a:1", 5, 5),
		"b:1": svc("b:1", 6, 6),
		"c:1": svc("c:1", 7, 7),
	}, index: 7}
	ch := make(chan *ServiceUpdate, 10)
	s.Subscribe(ch)
	for range 3 {
		<-ch // the current instances
	}
	// A resync: a is gone, b is unchanged, c was registered again, d is new.
	s.replace(&stateBlock{online: map[string]*Service{
		"b:1": svc("b:1", 6, 6),
		"c:1": svc("c:1", 7, 9),
		"d:1": svc("d:1", 8, 8),
	}}, 10)
	var got []string
	for len(ch) > 0 {
		u := <-ch
		got = append(got, fmt.Sprintf("%s online=%v reason=%q index=%d created=%d", u.Addr, u.Online, u.Reason, u.Index, u.Created))
	}
	slices.Sort(got)
	want := []string{
		`a:1 online=false reason="resync" index=10 created=5`,
		`c:1 online=true reason="" index=9 created=7`,
		`d:1 online=true reason="" index=8 created=8`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("updates after resync:\n%s\nwant:\n%s", got, want)
	}
	if s.Index() != 10 {
		t.Fatalf("Index() = %d", s.Index())
	}
	var online []string
	for sv := range s.Online() {
		online = append(online, sv.Addr)
	}
	if !slices.Equal(online, []string{"b:1", "c:1", "d:1"}) {
		t.Fatalf("Online() = %v", online)
	}
	var offline []string
	for sv := range s.Offline() {
		offline = append(offline, sv.Addr)
	}
	if !slices.Equal(offline, []string{"a:1"}) {
		t.Fatalf("Offline() = %v", offline)
	}
	if l := s.Leader(); l == nil || l.Addr != "b:1" {
		t.Fatalf("Leader() = %+v", l)
	}
}

func TestClient_SetOfflineKeepsTheLast1024(t *testing.T) {
	s := &ServiceSet{online: map[string]*Service{}}
	for i := range maxOffline + 6 {
		s.addOfflineLocked(svc(fmt.Sprintf("h:%d", i+1), uint64(i+1), uint64(i+1)))
	}
	var got []string
	for sv := range s.Offline() {
		got = append(got, sv.Addr)
	}
	if len(got) != maxOffline || got[0] != "h:7" || got[len(got)-1] != fmt.Sprintf("h:%d", maxOffline+6) {
		t.Fatalf("Offline() holds %d, from %s to %s", len(got), got[0], got[len(got)-1])
	}
}

func TestClient_SetPublishCountsMissedPerSubscriber(t *testing.T) {
	s := &ServiceSet{online: map[string]*Service{}}
	small, big := make(chan *ServiceUpdate, 1), make(chan *ServiceUpdate, 10)
	s.Subscribe(small)
	s.Subscribe(big)
	publish := func(i int) {
		s.mu.Lock()
		s.publishLocked(updateFor(svc(fmt.Sprintf("h:%d", i), uint64(i), uint64(i)), true, uint64(i), ""))
		s.mu.Unlock()
	}
	for i := 1; i <= 3; i++ {
		publish(i) // small takes the first, drops two
	}
	if u := <-small; u.Addr != "h:1" || u.Missed != 0 {
		t.Fatalf("small got %+v", u)
	}
	publish(4)
	if u := <-small; u.Addr != "h:4" || u.Missed != 2 {
		t.Fatalf("small got %+v, want h:4 with Missed 2", u)
	}
	publish(5)
	if u := <-small; u.Addr != "h:5" || u.Missed != 0 {
		t.Fatalf("small got %+v, want h:5 with Missed 0", u)
	}
	for i := 1; i <= 5; i++ {
		if u := <-big; u.Addr != fmt.Sprintf("h:%d", i) || u.Missed != 0 {
			t.Fatalf("big got %+v", u)
		}
	}
	// Subscribe on a full channel counts the instances it could not deliver.
	s.online = map[string]*Service{"x:1": svc("x:1", 1, 1), "y:1": svc("y:1", 2, 2)}
	full := make(chan *ServiceUpdate, 1)
	full <- &ServiceUpdate{}
	s.Subscribe(full)
	<-full
	publish(6)
	if u := <-full; u.Addr != "h:6" || u.Missed != 2 {
		t.Fatalf("full got %+v, want h:6 with Missed 2", u)
	}
	<-small
	s.Unsubscribe(small)
	publish(7)
	if len(small) != 0 {
		t.Fatal("unsubscribed channel got an update")
	}
}

func TestClient_WatchDeliverResumePoints(t *testing.T) {
	c := &Client{}
	w := &Watch{c: c, name: "svc", inBlock: true} // a watch from index 0
	steps := []struct {
		e        wire.Event
		wantFrom uint64
		inBlock  bool
	}{
		{wire.Event{Kind: wire.KindUp, Index: 5, Name: "svc", Addr: "a:1", TTLMillis: 1500, CreateIndex: 3}, 0, true},
		{wire.Event{Kind: wire.KindUp, Index: 7, Name: "svc", Addr: "b:1", CreateIndex: 7}, 0, true},
		{wire.Event{Kind: wire.KindCurrent, Index: 9, Name: "svc"}, 9, false},
		{wire.Event{Kind: wire.KindUpdate, Index: 10, Name: "svc", Addr: "a:1", CreateIndex: 3}, 10, false},
		{wire.Event{Kind: wire.KindDown, Index: 11, Name: "svc", Addr: "b:1", Reason: wire.ReasonExpire}, 11, false},
		// History was lost: a new state block does not move the resume point
		// until its current marker.
		{wire.Event{Kind: wire.KindResync, Index: 20, Name: "svc"}, 11, true},
		{wire.Event{Kind: wire.KindUp, Index: 15, Name: "svc", Addr: "c:1", CreateIndex: 15}, 11, true},
		{wire.Event{Kind: wire.KindCurrent, Index: 20, Name: "svc"}, 20, false},
	}
	for i, st := range steps {
		e := w.deliver(st.e)
		if w.LastIndex() != st.wantFrom || w.inBlock != st.inBlock {
			t.Fatalf("step %d (%s %d): resume point %d inBlock %v, want %d %v", i, st.e.Kind, st.e.Index, w.LastIndex(), w.inBlock, st.wantFrom, st.inBlock)
		}
		if string(e.Kind) != st.e.Kind || e.Index != st.e.Index || e.Reason != st.e.Reason {
			t.Fatalf("step %d: event %+v", i, e)
		}
		if (e.Service != nil) != (st.e.Addr != "") {
			t.Fatalf("step %d: Service %+v for %+v", i, e.Service, st.e)
		}
	}
	if c.LastIndex() != 20 {
		t.Fatalf("client LastIndex() = %d, want 20", c.LastIndex())
	}
	e := w.deliver(wire.Event{Kind: wire.KindUp, Index: 21, Name: "svc", Addr: "d:1", TTLMillis: 1500, CreateIndex: 21, Attrs: map[string]string{"k": "v"}})
	if s := e.Service; s.TTL != 1500*time.Millisecond || s.CreateIndex != 21 || s.Index != 21 || s.Attrs["k"] != "v" || s.Name != "svc" {
		t.Fatalf("converted service %+v", s)
	}
}

func TestClient_ObserveOnlyMovesForward(t *testing.T) {
	c := &Client{}
	for _, idx := range []uint64{5, 3, 9, 9, 1} {
		c.observe(idx)
	}
	if c.LastIndex() != 9 {
		t.Fatalf("LastIndex() = %d, want 9", c.LastIndex())
	}
}

// TestClient_SetReplacePublishesMetaChange: a resync that brings other
// metadata publishes one meta update; the same metadata none; metadata
// gone, an update without it at the resynced state's index. Subscribe
// sends the metadata held after the instances.
func TestClient_SetReplacePublishesMetaChange(t *testing.T) {
	s := &ServiceSet{name: "svc", online: map[string]*Service{"a:1": svc("a:1", 5, 5)}, meta: Meta{Data: []byte("A"), Index: 6}, index: 7}
	ch := make(chan *ServiceUpdate, 10)
	s.Subscribe(ch)
	if u := <-ch; u.Addr != "a:1" {
		t.Fatalf("first update %+v", u)
	}
	if u := <-ch; !u.MetaChange || u.Meta == nil || string(u.Meta.Data) != "A" || u.Index != 6 || u.Addr != "" || u.Online {
		t.Fatalf("subscribe's meta update %+v", u)
	}
	online := map[string]*Service{"a:1": svc("a:1", 5, 5)}
	s.replace(&stateBlock{online: online, meta: Meta{Data: []byte("A"), Index: 6}}, 8)
	if len(ch) != 0 {
		t.Fatalf("a resync with the same state published %+v", <-ch)
	}
	s.replace(&stateBlock{online: online, meta: Meta{Data: []byte("B"), Index: 9}}, 10)
	if u := <-ch; !u.MetaChange || string(u.Meta.Data) != "B" || u.Index != 9 {
		t.Fatalf("new metadata: %+v", u)
	}
	s.replace(&stateBlock{online: online}, 12)
	if u := <-ch; !u.MetaChange || u.Meta != nil || u.Index != 12 {
		t.Fatalf("metadata gone: %+v", u)
	}
	if m := s.Meta(); m.Index != 0 || len(ch) != 0 {
		t.Fatalf("Meta() = %+v, %d more updates", m, len(ch))
	}
	// A meta event outside a block changes the metadata and says so.
	s.apply(&Event{Kind: EventMeta, Index: 13, Meta: &Meta{Data: []byte("C"), Index: 13}}, nil)
	if u := <-ch; !u.MetaChange || string(u.Meta.Data) != "C" || s.Meta().Index != 13 || s.Index() != 13 {
		t.Fatalf("meta event: %+v, Meta() %+v", u, s.Meta())
	}
}

// TestClient_CacheFileKeepsMeta: a set's cache file holds its metadata,
// and reads back as valid.
func TestClient_CacheFileKeepsMeta(t *testing.T) {
	s := &ServiceSet{name: "svc", online: map[string]*Service{"a:1": svc("a:1", 5, 5)}, meta: Meta{Data: []byte{0, 'x'}, Index: 6}, index: 7,
		lastContact: time.Unix(1_700_000_000, 0)}
	data, err := json.Marshal(s.cacheFileLocked())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := decodeCache(data)
	if err == nil {
		err = cf.check("svc")
	}
	if err != nil || cf.Meta == nil || cf.Meta.Index != 6 || string(cf.Meta.Data) != "\x00x" {
		t.Fatalf("cache file %s: %+v, %v", data, cf, err)
	}
	s.meta = Meta{}
	if data, _ := json.Marshal(s.cacheFileLocked()); strings.Contains(string(data), `"meta"`) {
		t.Errorf("a set without metadata writes %s", data)
	}
}
