package client

import (
	"encoding/json"
	"testing"

	"github.com/discoverd/discoverd/internal/wire"
)

// TestClient_SuspectMarker: the suspect marker of the protocol reaches a
// Service from a list and from a watch event, a ServiceSet publishes an
// update when a resync changes only the marker, and the cache file keeps it.
func TestClient_SuspectMarker(t *testing.T) {
	if s := serviceFromWire(&wire.Instance{Name: "web", Addr: "a:1", CreateIndex: 3, Index: 4, Suspect: true}); !s.Suspect || s.Index != 4 {
		t.Fatalf("from a list: %+v", s)
	}
	w := &Watch{c: &Client{}, name: "web"}
	e := w.deliver(wire.Event{Kind: wire.KindUpdate, Index: 9, Name: "web", Addr: "a:1", CreateIndex: 3, Suspect: true})
	if e.Service == nil || !e.Service.Suspect || e.Service.Index != 9 {
		t.Fatalf("from a watch: %+v (%+v)", e, e.Service)
	}

	set := (&Client{}).newSet("web", map[string]*Service{"a:1": {Name: "web", Addr: "a:1", CreateIndex: 3, Index: 4}}, Meta{}, 8)
	ch := make(chan *ServiceUpdate, 10)
	set.Subscribe(ch)
	<-ch // the instance it holds
	set.replace(&stateBlock{online: map[string]*Service{"a:1": {Name: "web", Addr: "a:1", CreateIndex: 3, Index: 4, Suspect: true}}}, 9)
	select {
	case u := <-ch:
		if !u.Online || !u.Suspect || u.Addr != "a:1" {
			t.Fatalf("update %+v", u)
		}
	default:
		t.Fatal("a resync that only marked the instance published nothing")
	}

	data, err := json.Marshal(set.cacheFileLocked())
	if err != nil {
		t.Fatal(err)
	}
	var cf cacheFile
	if err := json.Unmarshal(data, &cf); err != nil || len(cf.Instances) != 1 || !cf.Instances[0].Suspect {
		t.Fatalf("cache file %s: %+v, %v", data, cf, err)
	}
}
