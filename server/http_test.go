package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/tlsutil"
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

// TestHTTP_TLSListenerServesTheReloadedCertificate: with TLS the HTTP
// listener presents the node's certificate, and after a reload the new one
// to new connections; without a client certificate /metrics is refused and
// the health paths answer.
func TestHTTP_TLSListenerServesTheReloadedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.NewCA(tlsutil.DefaultCluster, 1)
	if err != nil {
		t.Fatal(err)
	}
	files := tlsutil.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "n1.pem"), Key: filepath.Join(dir, "n1-key.pem")}
	issue := func() *x509.Certificate {
		t.Helper()
		p, err := ca.Issue(tlsutil.CertRequest{Server: true, Name: "n1", Hosts: []string{"127.0.0.1"}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		for path, data := range map[string][]byte{files.Cert: p.CertPEM, files.Key: p.KeyPEM} {
			if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".tmp", path); err != nil {
				t.Fatal(err)
			}
		}
		block, _ := pem.Decode(p.CertPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	if err := os.WriteFile(files.CA, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	first := issue()
	st, err := tlsutil.Load(files, tlsutil.Options{VerifyClients: true})
	if err != nil {
		t.Fatal(err)
	}
	c := tc.New(t, tc.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.TLS, cfg.HTTP.Addr = st, "127.0.0.1:0"
	}})
	addr := c.Nodes[0].Srv.HTTPAddr()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	presented := func() *big.Int {
		t.Helper()
		cn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		return cn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	if got := presented(); got.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("HTTPS presents serial %v, want the node's %v", got, first.SerialNumber)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	defer hc.CloseIdleConnections()
	for path, want := range map[string]int{"/health/live": http.StatusOK, "/metrics": http.StatusForbidden} {
		resp, err := hc.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s without a client certificate: %d, want %d", path, resp.StatusCode, want)
		}
	}
	second := issue()
	if err := st.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := presented(); got.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a reload HTTPS presents serial %v, want the new %v", got, second.SerialNumber)
	}
}
