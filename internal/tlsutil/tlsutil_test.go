package tlsutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// files writes a pair (and the CA) into dir and returns their paths.
func writeFiles(t *testing.T, dir, base string, ca *CA, p *Pair) Files {
	t.Helper()
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, base+".pem"), Key: filepath.Join(dir, base+"-key.pem")}
	for path, data := range map[string][]byte{f.CA: ca.CertPEM, f.Cert: p.CertPEM, f.Key: p.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func mustCA(t *testing.T, cluster string) *CA {
	t.Helper()
	ca, err := NewCA(cluster, 30)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, r CertRequest) *Pair {
	t.Helper()
	p, err := ca.Issue(r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTLS_LoadChecksTheFilesBelongTogether(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "prod")
	other := mustCA(t, "prod")
	server := mustIssue(t, ca, CertRequest{Server: true, Name: "n1", Cluster: "prod", Hosts: []string{"10.0.0.7", "node1.example.com"}})
	client := mustIssue(t, ca, CertRequest{Name: "alice", Cluster: "prod"})
	foreign := mustIssue(t, other, CertRequest{Server: true, Name: "n1", Cluster: "prod"})
	wrongCluster := mustIssue(t, ca, CertRequest{Server: true, Name: "n1", Cluster: "test"})

	good := writeFiles(t, dir, "server", ca, server)
	st, err := Load(good, Options{Cluster: "prod"})
	if err != nil {
		t.Fatalf("a server certificate of the cluster: %v", err)
	}
	leaf := st.Leaf()
	if !containsAll(leaf.DNSNames, "server.prod.discoverd", "n1.server.prod.discoverd", "node1.example.com") ||
		len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) {
		t.Errorf("server certificate names %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	for name, tc := range map[string]struct {
		files Files
		want  string
	}{
		"a client certificate":          {writeFiles(t, t.TempDir(), "client", ca, client), "is not a server certificate"},
		"another CA's certificate":      {writeFiles(t, t.TempDir(), "foreign", ca, foreign), "is not a server certificate"},
		"another cluster's certificate": {writeFiles(t, t.TempDir(), "wrong", ca, wrongCluster), "is not a server certificate"},
		"a key that is not the cert's":  {Files{CA: good.CA, Cert: good.Cert, Key: writeFiles(t, t.TempDir(), "c", ca, client).Key}, "private key does not match"},
		"a missing file":                {Files{CA: good.CA, Cert: good.Cert, Key: filepath.Join(dir, "nope.pem")}, "no such file"},
		"a missing CA bundle":           {Files{CA: good.Key + ".txt", Cert: good.Cert, Key: good.Key}, "no such file"},
	} {
		if _, err := Load(tc.files, Options{Cluster: "prod"}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Files{CA: garbage, Cert: good.Cert, Key: good.Key}, Options{Cluster: "prod"}); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a CA bundle of garbage: %v", err)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// handshake runs a TLS handshake between a client and a server config over
// a pipe and returns the server's view of the connection.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cerr := make(chan error, 1)
	go func() {
		c := tls.Client(a, client)
		err := c.HandshakeContext(ctx)
		if err == nil {
			// TLS 1.3: the server's verdict on our certificate comes after
			// our side of the handshake: a byte it writes, or an alert.
			_, err = c.Read(make([]byte, 1))
		}
		cerr <- err
	}()
	s := tls.Server(b, server)
	err := s.HandshakeContext(ctx)
	st := s.ConnectionState()
	if err == nil {
		_, err = s.Write([]byte{1})
	}
	if err != nil {
		_ = s.Close()
	}
	if cerr := <-cerr; err == nil && cerr != nil {
		err = fmt.Errorf("client: %w", cerr)
	}
	return st, err
}

func TestTLS_ServerConfigAndIsServer(t *testing.T) {
	ca := mustCA(t, DefaultCluster)
	n1 := writeFiles(t, t.TempDir(), "n1", ca, mustIssue(t, ca, CertRequest{Server: true, Name: "n1", Hosts: []string{"127.0.0.1"}}))
	n2 := writeFiles(t, t.TempDir(), "n2", ca, mustIssue(t, ca, CertRequest{Server: true, Name: "n2", Hosts: []string{"127.0.0.1"}}))
	s1, err := Load(n1, Options{VerifyClients: true})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Load(n2, Options{VerifyClients: true})
	if err != nil {
		t.Fatal(err)
	}
	// A peer dialling with its node certificate is a server of the cluster.
	st, err := handshake(t, s1.ServerConfig(), s2.PeerConfig())
	if err != nil {
		t.Fatalf("peer handshake: %v", err)
	}
	if err := IsServer(st, DefaultCluster); err != nil {
		t.Errorf("peer with a server certificate: %v", err)
	}
	if err := IsServer(st, "other"); !errors.Is(err, ErrNotServer) {
		t.Errorf("a server of another cluster name: %v", err)
	}
	// A client with a client certificate gets in, but is no server.
	cdir := t.TempDir()
	cl := writeFiles(t, cdir, "client", ca, mustIssue(t, ca, CertRequest{Name: "alice"}))
	ccfg, err := ClientConfig(ClientFiles{CA: cl.CA, Cert: cl.Cert, Key: cl.Key})
	if err != nil {
		t.Fatal(err)
	}
	ccfg.ServerName = "127.0.0.1"
	st, err = handshake(t, s1.ServerConfig(), ccfg)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := IsServer(st, DefaultCluster); !errors.Is(err, ErrNotServer) {
		t.Errorf("client certificate taken for a server: %v", err)
	}
	// Without a client certificate: refused when clients must have one,
	// admitted (and no server) when it is optional.
	bare, err := ClientConfig(ClientFiles{CA: cl.CA})
	if err != nil {
		t.Fatal(err)
	}
	bare.ServerName = "127.0.0.1"
	if _, err := handshake(t, s1.ServerConfig(), bare); err == nil {
		t.Error("no client certificate accepted with VerifyClients")
	}
	opt, err := Load(n1, Options{VerifyClients: false})
	if err != nil {
		t.Fatal(err)
	}
	st, err = handshake(t, opt.ServerConfig(), bare)
	if err != nil {
		t.Fatalf("no client certificate with optional verification: %v", err)
	}
	if err := IsServer(st, DefaultCluster); !errors.Is(err, ErrNotServer) {
		t.Errorf("anonymous client taken for a server: %v", err)
	}
	// Another CA's certificates are refused both ways.
	other := mustCA(t, DefaultCluster)
	ofiles := writeFiles(t, t.TempDir(), "x", other, mustIssue(t, other, CertRequest{Server: true, Name: "x", Hosts: []string{"127.0.0.1"}}))
	ostore, err := Load(ofiles, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, s1.ServerConfig(), ostore.PeerConfig()); err == nil {
		t.Error("a peer with another CA's certificate was accepted")
	}
}

func TestTLS_ReloadSwapsCertificatesAndKeepsThemOnBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, DefaultCluster)
	f := writeFiles(t, dir, "n1", ca, mustIssue(t, ca, CertRequest{Server: true, Name: "n1"}))
	st, err := Load(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := st.Leaf().SerialNumber
	next := mustIssue(t, ca, CertRequest{Server: true, Name: "n1"})
	if err := os.WriteFile(f.Cert, next.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, next.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.Watch(ctx, 10*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for st.Leaf().SerialNumber.Cmp(first) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the changed files were not reloaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := st.Leaf().SerialNumber
	if err := os.WriteFile(f.Cert, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err == nil {
		t.Fatal("a broken certificate file was loaded")
	}
	if got := st.Leaf().SerialNumber; got.Cmp(second) != 0 {
		t.Errorf("serial %v after a failed reload, want the one loaded before (%v)", got, second)
	}
}

func TestTLS_IssueRules(t *testing.T) {
	ca := mustCA(t, DefaultCluster)
	if _, err := ca.Issue(CertRequest{Name: "c", Hosts: []string{"10.0.0.1"}}); err == nil {
		t.Error("a client certificate with hosts")
	}
	if _, err := ca.Issue(CertRequest{Server: true}); err == nil {
		t.Error("a certificate without a name")
	}
	if _, err := NewCA(DefaultCluster, 0); err == nil {
		t.Error("a CA valid for 0 days")
	}
	p := mustIssue(t, ca, CertRequest{Server: true, Name: "n1", Days: 100000})
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("certificate valid until %v, after its CA (%v)", leaf.NotAfter, ca.Cert.NotAfter)
	}
	path := filepath.Join(t.TempDir(), "x.pem")
	if err := WriteNew(path, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("written with mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if err := WriteNew(path, []byte("b")); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Errorf("overwrote a file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "a" {
		t.Errorf("file holds %q after a refused write", b)
	}
}
