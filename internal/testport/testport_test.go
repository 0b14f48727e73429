package testport

import (
	"net"
	"strconv"
	"testing"
)

func TestPick_DistinctFreePortsBelowTheEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	for range 3 {
		ports, err := Pick(20)
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) != 20 {
			t.Fatalf("got %d ports, want 20", len(ports))
		}
		for _, p := range ports {
			if p < Low || p >= High {
				t.Fatalf("port %d outside %d-%d", p, Low, High)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
	// A port that was handed out can be listened on.
	ports, err := Pick(1)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])))
	if err != nil {
		t.Fatalf("listen on picked port: %v", err)
	}
	_ = ln.Close()
}
