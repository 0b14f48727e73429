package wire_test

import (
	"reflect"
	"testing"

	"github.com/discoverd/discoverd/internal/wire"
)

// TestWire_ServicesRoundTrip: the Services request and response survive a
// frame, and the response's keys are the documented ones.
func TestWire_ServicesRoundTrip(t *testing.T) {
	for _, m := range []message{
		{"services", wire.Header{Seq: 10, Method: wire.MethodServices},
			&wire.ServicesRequest{Consistent: true, MinIndex: 42},
			func() any { return new(wire.ServicesRequest) }},
		{"services response", wire.Header{Seq: 10},
			&wire.ServicesResponse{Index: 43, Services: []wire.ServiceCount{{Name: "db", Instances: 1}, {Name: "web", Instances: 3}},
				Freshness: wire.Freshness{KnownLeader: true, LastContactMillis: 12}},
			func() any { return new(wire.ServicesResponse) }},
	} {
		t.Run(m.name, func(t *testing.T) {
			f, err := wire.ReadFrame(reader(encode(t, m.hdr, m.body)), wire.DefaultMaxFrame)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			got := m.fresh()
			if err := f.DecodeRequest(got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, m.body) {
				t.Errorf("body = %+v, want %+v", got, m.body)
			}
		})
	}
	// The keys a client in another language reads (docs/protocol.md).
	f, err := wire.ReadFrame(reader(encode(t, wire.Header{Seq: 1},
		&wire.ServicesResponse{Index: 7, Services: []wire.ServiceCount{{Name: "web", Instances: 2}}})), wire.DefaultMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	var generic struct {
		Index    any              `codec:"index"`
		Services []map[string]any `codec:"services"`
	}
	if err := f.Decode(&generic); err != nil {
		t.Fatal(err)
	}
	if generic.Index == nil || len(generic.Services) != 1 {
		t.Fatalf("response = %#v, want keys index and services", generic)
	}
	if one := generic.Services[0]; one["name"] != "web" || one["instances"] == nil {
		t.Fatalf("service = %#v, want keys name and instances", one)
	}
}
