package etcdstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/etcdtest"
)

// TestEtcdStore_ServicesPagesAndCounts: Services reads the keys page by
// page (a page of 2 here), counts only instance keys (not unregistration
// markers, not other keys), sorts by name although key order differs
// ("web-x/" before "web/"), and honours MinIndex.
func TestEtcdStore_ServicesPagesAndCounts(t *testing.T) {
	defer func(n int64) { servicesPage = n }(servicesPage)
	servicesPage = 2
	e := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{Endpoints: []string{e.Endpoint}, Prefix: "/svc-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rev, got, err := s.Services(ctx, backend.ServicesOptions{}); err != nil || got == nil || len(got) != 0 || rev == 0 {
		t.Fatalf("empty store: Services = %d, %v, %v; want a revision and an empty, non-nil list", rev, got, err)
	}
	var last int64
	for _, k := range []string{
		"/svc-test/s/web/i/10.0.0.1:80", "/svc-test/s/web/i/10.0.0.2:80", "/svc-test/s/web/u/10.0.0.3:80",
		"/svc-test/s/web/i/10.0.0.4:80", "/svc-test/s/web-x/i/10.0.1.1:80", "/svc-test/s/db/u/10.0.2.1:5432",
		"/svc-test/s/a/i/h:1", "/svc-test/r/some-request", "/svc-test-other/s/zz/i/h:1",
	} {
		pr, err := s.Client().Put(ctx, k, "{}")
		if err != nil {
			t.Fatal(err)
		}
		last = pr.Header.Revision
	}
	want := []backend.ServiceCount{{Name: "a", Instances: 1}, {Name: "web", Instances: 3}, {Name: "web-x", Instances: 1}}
	for _, opts := range []backend.ServicesOptions{{}, {Consistent: true}, {MinIndex: uint64(last)}} {
		rev, got, err := s.Services(ctx, opts)
		if err != nil || !slices.Equal(got, want) || rev < uint64(last) {
			t.Fatalf("Services(%+v) = %d, %v, %v; want %v at revision >= %d", opts, rev, got, err, want, last)
		}
	}
	if _, _, err := s.Services(ctx, backend.ServicesOptions{MinIndex: uint64(last) + 1000}); !errors.Is(err, codes.ErrStaleNode) {
		t.Fatalf("Services beyond the current revision: %v, want ErrStaleNode", err)
	}
}
