package test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/tlsutil"
)

// testPKI is a cluster CA made with `discoverd tls`, as an operator would.
type testPKI struct {
	h              *harness
	dir, ca, caKey string
}

func (h *harness) newPKI() *testPKI {
	h.t.Helper()
	dir := filepath.Join(h.dir, "pki")
	h.mustCLI(10*time.Second, "tls", "ca", "create", "-out", dir)
	return &testPKI{h: h, dir: dir, ca: filepath.Join(dir, "ca.pem"), caKey: filepath.Join(dir, "ca-key.pem")}
}

// server makes node id's certificate for 127.0.0.1 into dir (p.dir if "").
func (p *testPKI) server(id, dir string) (cert, key string) {
	p.h.t.Helper()
	if dir == "" {
		dir = p.dir
	}
	p.h.mustCLI(10*time.Second, "tls", "cert", "create", "-server", "-node", id, "-addr", "127.0.0.1",
		"-ca", p.ca, "-ca-key", p.caKey, "-out", dir)
	return filepath.Join(dir, "server-"+id+".pem"), filepath.Join(dir, "server-"+id+"-key.pem")
}

// client makes a client certificate.
func (p *testPKI) client(name string) (cert, key string) {
	p.h.t.Helper()
	p.h.mustCLI(10*time.Second, "tls", "cert", "create", "-client", "-name", name, "-ca", p.ca, "-ca-key", p.caKey, "-out", p.dir)
	return filepath.Join(p.dir, "client-"+name+".pem"), filepath.Join(p.dir, "client-"+name+"-key.pem")
}

// clientTLS makes a client certificate and returns a client configuration
// with it, trusting the CA (ServerName unset: per address, as clients do).
func (p *testPKI) clientTLS(name string) *tls.Config {
	p.h.t.Helper()
	pool, err := tlsutil.LoadPool(p.ca)
	if err != nil {
		p.h.t.Fatal(err)
	}
	cert, key := p.client(name)
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		p.h.t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{kp}}
}

// tlsCluster starts a 3-node TLS cluster whose certificates the CLI made,
// and points the harness's CLI calls at them with $DISCOVERD_CA and friends.
func (h *harness) tlsCluster(extra func(nd *node) []string) (*cluster, *testPKI) {
	h.t.Helper()
	p := h.newPKI()
	for _, id := range []string{"n1", "n2", "n3"} {
		p.server(id, "")
	}
	cert, key := p.client("test")
	h.env = append(h.env, "DISCOVERD_CA="+p.ca, "DISCOVERD_CERT="+cert, "DISCOVERD_KEY="+key)
	c := h.startClusterWith(3, func(nd *node) []string {
		args := []string{"-tls-ca", p.ca, "-tls-cert", filepath.Join(p.dir, "server-"+nd.id+".pem"),
			"-tls-key", filepath.Join(p.dir, "server-"+nd.id+"-key.pem")}
		if extra != nil {
			args = append(args, extra(nd)...)
		}
		return args
	})
	return c, p
}

// serialOf dials addr over TLS (as a client, with cfg) and returns the
// serial of the certificate the node presents.
func serialOf(t *testing.T, addr string, cfg *tls.Config) *big.Int {
	t.Helper()
	c, err := mux.Dial(addr, mux.ConnRPC, 3*time.Second, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

func serialInFile(t *testing.T, path string) *big.Int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber
}

// TestTLS_ClusterOfProcessesAndRotation: a cluster whose certificates
// `discoverd tls` made serves the CLI over TLS with client certificates;
// a client without a certificate, or without TLS, gets nothing; a node's
// certificate is rotated by SIGHUP and by a file change, and a watch
// stream opened before the rotation keeps working.
func TestTLS_ClusterOfProcessesAndRotation(t *testing.T) {
	h := newHarness(t)
	// n1 notices a changed file within 200 ms; n2 and n3 look only every
	// hour, so only SIGHUP can rotate theirs in time.
	c, p := h.tlsCluster(func(nd *node) []string {
		if nd.id == "n1" {
			return []string{"-tls-reload", "200ms"}
		}
		return []string{"-tls-reload", "1h"}
	})
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)

	if l, err := h.services(all, "web"); err != nil || len(l) != 0 {
		t.Fatalf("services over TLS: %v %v", l, err)
	}

	// Without a client certificate, and without TLS at all: refused.
	saved := h.env
	h.env = append(append([]string(nil), saved...), "DISCOVERD_CERT=", "DISCOVERD_KEY=")
	// The node's alert ("certificate required") can lose the race with the
	// client's first write ("broken pipe"); either way the client says a
	// certificate is missing.
	if r := h.cli(10*time.Second, "status", "-servers", all, "-timeout", "2s"); r.code != 1 || !strings.Contains(r.stderr, "client certificate") {
		t.Errorf("status without a client certificate: %v", r)
	}
	h.env = append(append([]string(nil), saved...), "DISCOVERD_CA=", "DISCOVERD_CERT=", "DISCOVERD_KEY=")
	if r := h.cli(10*time.Second, "status", "-servers", all, "-timeout", "2s"); r.code != 1 {
		t.Errorf("status without TLS: %v", r)
	}
	h.env = saved

	w := h.startWatch("watch-web", all, "web")
	if e := w.next(t, 10*time.Second); e.Kind != "current" {
		t.Fatalf("first watch event %+v, want current", e)
	}
	watched := c.connectedNode(w.p, 10*time.Second)

	probe := p.clientTLS("prober")
	probe.ServerName = "127.0.0.1"

	// Rotate every node's certificate: n1's by the file change alone, the
	// others' by SIGHUP.
	for _, nd := range c.nodes {
		fresh := filepath.Join(h.dir, "pki-"+nd.id+"-new")
		newCert, newKey := p.server(nd.id, fresh)
		want := serialInFile(t, newCert)
		if got := serialOf(t, nd.addr, probe); got.Cmp(want) == 0 {
			t.Fatalf("%s already presents the new certificate", nd.id)
		}
		for from, to := range map[string]string{newCert: filepath.Join(p.dir, "server-"+nd.id+".pem"), newKey: filepath.Join(p.dir, "server-"+nd.id+"-key.pem")} {
			if err := os.Rename(from, to); err != nil {
				t.Fatal(err)
			}
		}
		if nd.id != "n1" {
			nd.p.signal(t, syscall.SIGHUP)
		}
		poll(t, 10*time.Second, 50*time.Millisecond, nd.id+" to present its new certificate", func() (bool, string) {
			got := serialOf(t, nd.addr, probe)
			return got.Cmp(want) == 0, fmt.Sprintf("serial %v, want %v", got, want)
		})
		if !nd.p.logContains("tls: certificates reloaded") {
			t.Errorf("%s logged no reload", nd.id)
		}
	}
	// The cluster still works, on new connections between its nodes too,
	// and the stream opened before the rotation delivers the next change.
	h.waitStable(all, c.ids(), 30*time.Second)
	reg := h.start("register-web", "register", "-servers", all, "web", "10.9.0.2:80")
	if e := w.next(t, 15*time.Second); e.Kind != "up" || e.Addr != "10.9.0.2:80" {
		t.Fatalf("watch after the rotation: %+v", e)
	}
	if now := c.connectedNode(w.p, 5*time.Second); now != watched {
		t.Errorf("the watch moved from %s to %s: its connection was dropped by the rotation", watched, now)
	}
	h.waitServices(all, "web", func(l []instance) bool { return len(l) == 1 }, "the instance registered over TLS")
	reg.signal(t, syscall.SIGTERM)
	if code := reg.wait(t, 10*time.Second); code != 0 {
		t.Errorf("register exited %d", code)
	}
}
