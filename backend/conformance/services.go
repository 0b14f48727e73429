package conformance

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// testServices: listing every service gives each service that has
// instances, with its count, sorted by name; a service whose last instance
// went is left out; every node answers a consistent read with the same
// counts, and the writer reads its own writes.
func testServices(t *testing.T, s *suite) {
	c := s.client(t)
	base := svc(t)
	a, b, gone := base+"-a", base+"-b", base+"-gone"
	for _, r := range []struct{ name, addr string }{
		{b, "10.0.20.1:80"}, {a, "10.0.21.1:80"}, {a, "10.0.21.2:80"}, {gone, "10.0.22.1:80"},
	} {
		if err := c.RegisterAddr(ctx(t, 10*time.Second), r.name, r.addr, nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RegisterAddr(ctx(t, 10*time.Second), a, "10.0.21.1:80", map[string]string{"v": "2"}, time.Hour); err != nil {
		t.Fatal(err) // registered again: still two instances
	}
	if err := c.UnregisterAddr(ctx(t, 10*time.Second), gone, "10.0.22.1:80"); err != nil {
		t.Fatal(err)
	}
	written := c.LastIndex()

	// mine returns the counts of this test's services, and checks the
	// whole list's shape.
	mine := func(list []client.ServiceCount, via string) string {
		t.Helper()
		if !slices.IsSortedFunc(list, func(x, y client.ServiceCount) int { return strings.Compare(x.Name, y.Name) }) {
			t.Fatalf("via %s: services not sorted by name: %v", via, list)
		}
		var out []string
		for i, sc := range list {
			if sc.Instances == 0 {
				t.Fatalf("via %s: %s listed with no instances", via, sc.Name)
			}
			if i > 0 && list[i-1].Name == sc.Name {
				t.Fatalf("via %s: %s listed twice", via, sc.Name)
			}
			if strings.HasPrefix(sc.Name, base+"-") {
				out = append(out, fmt.Sprintf("%s=%d", strings.TrimPrefix(sc.Name, base+"-"), sc.Instances))
			}
		}
		return strings.Join(out, " ")
	}
	const want = "a=2 b=1"

	list, idx, err := c.ServiceNames(ctx(t, 10*time.Second), client.ServiceNamesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mine(list, "the writer"); got != want || idx < written {
		t.Fatalf("the writer's ServiceNames = %s at index %d; want %s at index >= %d", got, idx, want, written)
	}
	for _, server := range s.tg.Servers {
		list, _, err := s.client(t, server).ServiceNames(ctx(t, 10*time.Second), client.ServiceNamesOptions{Consistent: true})
		if err != nil {
			t.Fatalf("consistent ServiceNames via %s: %v", server, err)
		}
		if got := mine(list, server); got != want {
			t.Fatalf("consistent ServiceNames via %s = %s; want %s", server, got, want)
		}
	}
}
