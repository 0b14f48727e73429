package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

func (f *fakeBackend) Services(_ context.Context, opts backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	f.record(fmt.Sprintf("Services consistent=%v min=%d", opts.Consistent, opts.MinIndex))
	if opts.MinIndex > 100 {
		return 0, nil, fmt.Errorf("node is behind: %w", codes.ErrStaleNode)
	}
	if opts.MinIndex == 50 {
		return 11, nil, nil // no services: the answer must still be an array
	}
	return 10, []backend.ServiceCount{{Name: "db", Instances: 1}, {Name: "web", Instances: 2}}, nil
}

// TestRPC_Services: the request's options reach the backend, the answer
// carries the list (never nil), the index and the node's freshness, a
// backend error comes back with its code, and a body that is not a map is
// refused before the backend sees it.
func TestRPC_Services(t *testing.T) {
	addr, fb := startServer(t, Config{})
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var resp wire.ServicesResponse
	if err := c.Call(ctx, wire.MethodServices, false, &wire.ServicesRequest{Consistent: true, MinIndex: 7}, &resp); err != nil {
		t.Fatal(err)
	}
	want := []wire.ServiceCount{{Name: "db", Instances: 1}, {Name: "web", Instances: 2}}
	if resp.Index != 10 || !slices.Equal(resp.Services, want) || !resp.KnownLeader || resp.LastContactMillis != 7 {
		t.Fatalf("response = %+v; want index 10, %v and the fake's freshness", resp, want)
	}

	var empty map[string]any
	if err := c.Call(ctx, wire.MethodServices, false, &wire.ServicesRequest{MinIndex: 50}, &empty); err != nil {
		t.Fatal(err)
	}
	if s, ok := empty["services"].([]any); !ok || len(s) != 0 {
		t.Fatalf("no services answered %#v; want \"services\": []", empty)
	}

	if err := c.Call(ctx, wire.MethodServices, false, &wire.ServicesRequest{MinIndex: 200}, &resp); !errors.Is(err, codes.ErrStaleNode) {
		t.Fatalf("backend failure: %v, want stale_node", err)
	}

	before := len(fb.Calls())
	err := c.Call(ctx, wire.MethodServices, false, []string{"not", "a", "map"}, &resp)
	if !errors.Is(err, codes.ErrInvalidArgument) || !strings.Contains(err.Error(), "Services body is an array, not a map") {
		t.Fatalf("array body: %v, want invalid_argument", err)
	}
	calls := fb.Calls()
	if len(calls) != before || calls[0] != "Services consistent=true min=7" {
		t.Fatalf("backend calls %q: want the first with the request's options and none for the bad body", calls)
	}
}
