package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestHTTP_EveryMetricExportedByEachNodeAndDocumented: three nodes in one
// process, each with its own registry, serve health and metrics; every
// metric family of MetricNames has series on every node once it served a
// request, and docs/metrics.md documents each. A node configured without an
// HTTP address has no listener, and a stopped node's listener is closed.
func TestHTTP_EveryMetricExportedByEachNodeAndDocumented(t *testing.T) {
	c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
		if i < 2 {
			cfg.HTTP.Addr = "127.0.0.1:0"
		}
	}})
	docs, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range server.MetricNames() {
		if !strings.Contains(string(docs), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not document %s", name)
		}
	}
	for _, n := range c.Nodes[:2] {
		addr := n.Srv.HTTPAddr()
		if addr == "" {
			t.Fatalf("%s has no HTTP listener", n.ID)
		}
		cl := c.Client(n)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, _, err := cl.Instances(ctx, "web", client.ListOptions{}); err != nil {
			t.Fatalf("%s: list: %v", n.ID, err)
		}
		cancel()
		if code, body := get(t, "http://"+addr+"/health/live"); code != http.StatusOK {
			t.Errorf("%s /health/live: %d %s", n.ID, code, body)
		}
		var body string
		deadline := time.Now().Add(10 * time.Second)
		for {
			var code int
			if code, body = get(t, "http://"+addr+"/health/ready"); code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s /health/ready: %d %s", n.ID, code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		code, metrics := get(t, "http://"+addr+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("%s /metrics: %d", n.ID, code)
		}
		for _, name := range append(server.MetricNames(), "go_goroutines", "process_open_fds") {
			if !strings.Contains(metrics, "\n"+name+"{") && !strings.Contains(metrics, "\n"+name+" ") && !strings.Contains(metrics, "\n"+name+"_count") {
				t.Errorf("%s exports no series of %s", n.ID, name)
			}
		}
		if code, _ := get(t, "http://"+addr+"/debug/pprof/"); code != http.StatusNotFound {
			t.Errorf("%s /debug/pprof/ without Pprof: %d, want 404", n.ID, code)
		}
	}
	if addr := c.Nodes[2].Srv.HTTPAddr(); addr != "" {
		t.Errorf("a node without HTTP.Addr listens on %s", addr)
	}
	addr := c.Nodes[1].Srv.HTTPAddr()
	c.Stop(1)
	if cn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = cn.Close()
		t.Errorf("the HTTP listener of a stopped node still accepts connections")
	}
}
