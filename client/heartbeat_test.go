package client

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/wire"
)

// countingServer answers Register and Heartbeat and counts heartbeat
// requests and the instances they carry.
type countingServer struct {
	mu        sync.Mutex
	requests  int
	instances map[string]int
}

func (s *countingServer) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := mux.New(ln, mux.Config{})
	rl := m.Listen(mux.ConnRPC)
	go func() { _ = m.Serve() }()
	t.Cleanup(func() { _ = m.Close() })
	go func() {
		for {
			nc, err := rl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				var wmu sync.Mutex
				for {
					f, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
					if err != nil {
						return
					}
					var body any = &wire.WriteResponse{Index: 1}
					if f.Header.Method == wire.MethodHeartbeat {
						var req wire.HeartbeatRequest
						_ = f.Decode(&req)
						s.mu.Lock()
						s.requests++
						for _, k := range req.Instances {
							s.instances[k.Addr]++
						}
						s.mu.Unlock()
						body = &wire.HeartbeatResponse{Results: make([]wire.Result, len(req.Instances))}
					}
					wmu.Lock()
					_ = wire.WriteFrame(nc, &wire.Header{Seq: f.Header.Seq}, body, 0)
					wmu.Unlock()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestClient_HeartbeatsAreBatched: one client keeping 300 instances alive
// sends a few heartbeat requests per TTL/3, each carrying many instances,
// and every instance is heartbeated.
func TestClient_HeartbeatsAreBatched(t *testing.T) {
	srv := &countingServer{instances: map[string]int{}}
	addr := srv.serve(t)
	c, err := NewWithConfig(Config{Servers: []string{addr}, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 300
	for i := range n {
		if err := c.RegisterAddr(ctx, "web", fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1), nil, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.mu.Lock()
		covered, reqs := len(srv.instances), srv.requests
		srv.mu.Unlock()
		if covered == n {
			// Every instance heartbeated within ~TTL/3 of its registration,
			// in far fewer requests than instances.
			if reqs > n/10 {
				t.Fatalf("%d heartbeat requests for %d instances: not batched", reqs, n)
			}
			t.Logf("%d instances heartbeated in %d requests", n, reqs)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s only %d of %d instances heartbeated (%d requests)", covered, n, reqs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
