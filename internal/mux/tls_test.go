package mux

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/tlsutil"
)

// pki is a cluster CA and the stores and configs made from it.
type pki struct {
	t  *testing.T
	ca *tlsutil.CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := tlsutil.NewCA(tlsutil.DefaultCluster, 30)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, ca: ca}
}

// store issues a server certificate and loads it.
func (p *pki) store(name string, verifyClients bool) *tlsutil.Store {
	st, _ := p.storeFiles(name, verifyClients)
	return st
}

// storeFiles is store, and the files it loaded.
func (p *pki) storeFiles(name string, verifyClients bool) (*tlsutil.Store, tlsutil.Files) {
	p.t.Helper()
	pair, err := p.ca.Issue(tlsutil.CertRequest{Server: true, Name: name, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		p.t.Fatal(err)
	}
	dir := p.t.TempDir()
	f := tlsutil.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem")}
	for path, data := range map[string][]byte{f.CA: p.ca.CertPEM, f.Cert: pair.CertPEM, f.Key: pair.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	st, err := tlsutil.Load(f, tlsutil.Options{VerifyClients: verifyClients})
	if err != nil {
		p.t.Fatal(err)
	}
	return st, f
}

// client returns a client config; with a client certificate if named.
func (p *pki) client(name string) *tls.Config {
	p.t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: poolOf(p.ca), ServerName: "127.0.0.1"}
	if name != "" {
		pair, err := p.ca.Issue(tlsutil.CertRequest{Name: name})
		if err != nil {
			p.t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
		if err != nil {
			p.t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func poolOf(ca *tlsutil.CA) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// tlsMux serves a TLS mux whose Raft protocol (1) admits only servers of
// the cluster, as server.Start configures it.
func tlsMux(t *testing.T, st *tlsutil.Store, cfg Config) (*Mux, *Listener, *Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = st.ServerConfig()
	cfg.Authorize = func(proto byte, cs *tls.ConnectionState) error {
		if proto != ConnRaft {
			return nil
		}
		if cs == nil {
			return tlsutil.ErrNotServer
		}
		return tlsutil.IsServer(*cs, tlsutil.DefaultCluster)
	}
	m := New(ln, cfg)
	raft, rpc := m.Listen(ConnRaft), m.Listen(ConnRPC)
	done := make(chan struct{})
	go func() {
		_ = m.Serve()
		close(done)
	}()
	t.Cleanup(func() {
		_ = m.Close()
		<-done
	})
	return m, raft, rpc
}

// admitted dials proto over TLS and checks that l gets the connection and
// the bytes written on it.
func admitted(t *testing.T, m *Mux, l *Listener, proto byte, cfg *tls.Config) {
	t.Helper()
	c, err := Dial(m.Addr().String(), proto, 2*time.Second, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	sc := accept(t, l)
	if _, err := fmt.Fprint(c, "hi"); err != nil {
		t.Fatal(err)
	}
	if s := readN(t, sc, 2); s != "hi" {
		t.Fatalf("read %q", s)
	}
}

// refused dials proto over TLS and checks that the connection is closed
// (in the handshake, or right after the protocol byte) and never reaches l.
func refused(t *testing.T, m *Mux, l *Listener, proto byte, cfg *tls.Config) {
	t.Helper()
	before := m.Stats()
	c, err := Dial(m.Addr().String(), proto, 2*time.Second, cfg)
	if err == nil {
		defer c.Close()
		closedByPeer(t, c, 5*time.Second)
	}
	waitFor(t, "the refused connection to be closed", func() bool { return m.Stats().Conns <= before.Conns })
	select {
	case sc := <-l.conns:
		_ = sc.Close()
		t.Fatal("a refused connection was handed to the protocol's listener")
	default:
	}
}

func TestMux_TLSRaftOnlyForServersOfTheCluster(t *testing.T) {
	p := newPKI(t)
	st := p.store("n1", true)
	m, raft, rpc := tlsMux(t, st, Config{})
	peer := p.store("n2", true)

	admitted(t, m, raft, ConnRaft, peer.PeerConfig()) // a server of the cluster
	admitted(t, m, rpc, ConnRPC, p.client("alice"))   // a client
	refused(t, m, raft, ConnRaft, p.client("alice"))  // a client certificate is no server's
	refused(t, m, rpc, ConnRPC, p.client(""))         // clients must have a certificate
	other := newPKI(t)
	refused(t, m, raft, ConnRaft, other.store("n9", true).PeerConfig()) // another CA's server
	// Plaintext to a TLS port: closed.
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{ConnRaft, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	closedByPeer(t, c, 5*time.Second)
}

func TestMux_TLSOptionalClientCertificates(t *testing.T) {
	p := newPKI(t)
	m, raft, rpc := tlsMux(t, p.store("n1", false), Config{})
	admitted(t, m, rpc, ConnRPC, p.client(""))  // optional: RPC without a certificate
	refused(t, m, raft, ConnRaft, p.client("")) // but never Raft
}

func TestMux_TLSRotationKeepsConnections(t *testing.T) {
	p := newPKI(t)
	st, files := p.storeFiles("n1", true)
	m, _, rpc := tlsMux(t, st, Config{})
	cfg := p.client("alice")
	old, err := Dial(m.Addr().String(), ConnRPC, 2*time.Second, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldServer := accept(t, rpc)
	before := old.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber

	// A new certificate in the store's files, reloaded.
	pair, err := p.ca.Issue(tlsutil.CertRequest{Server: true, Name: "n1", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Cert, pair.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Key, pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh, err := Dial(m.Addr().String(), ConnRPC, 2*time.Second, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	accept(t, rpc)
	after := fresh.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
	if after.Cmp(before) == 0 {
		t.Fatal("a new connection still got the old certificate")
	}
	// The connection made before the rotation still works.
	if _, err := fmt.Fprint(old, "ok"); err != nil {
		t.Fatal(err)
	}
	if s := readN(t, oldServer, 2); s != "ok" {
		t.Fatalf("old connection read %q", s)
	}
}

func TestMux_ConnectionLimits(t *testing.T) {
	t.Run("per IP", func(t *testing.T) {
		m, _, rpc, _ := serveMuxCfg(t, Config{MaxConnsPerIP: 3})
		for range 3 {
			dial(t, m.Addr().String(), ConnRPC)
			accept(t, rpc)
		}
		extra := dial(t, m.Addr().String(), ConnRPC)
		closedByPeer(t, extra, 5*time.Second)
		// Another loopback IP is another remote IP.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{ConnRPC}); err != nil {
			t.Fatal(err)
		}
		accept(t, rpc)
		if st := m.Stats(); st.Refused != 1 || st.Conns != 4 {
			t.Errorf("stats %+v, want 4 open and 1 refused", st)
		}
	})
	t.Run("in all, and a closed connection gives its place back", func(t *testing.T) {
		m, _, rpc, _ := serveMuxCfg(t, Config{MaxConns: 2})
		first := dial(t, m.Addr().String(), ConnRPC)
		accept(t, rpc).Close() // the server side closes it
		_ = first
		second := dial(t, m.Addr().String(), ConnRPC)
		accept(t, rpc)
		_ = second
		waitFor(t, "the closed connection to be given back", func() bool { return m.Stats().Conns == 1 })
		dial(t, m.Addr().String(), ConnRPC)
		accept(t, rpc)
		closedByPeer(t, dial(t, m.Addr().String(), ConnRPC), 5*time.Second)
	})
	t.Run("handshakes", func(t *testing.T) {
		m, _, rpc, _ := serveMuxCfg(t, Config{MaxHandshakes: 2, HandshakeTimeout: time.Minute})
		for range 2 { // silent: they stay in their handshake
			c, err := net.Dial("tcp", m.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		waitFor(t, "two connections in their handshake", func() bool { return m.Stats().Handshakes == 2 })
		c, err := net.Dial("tcp", m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedByPeer(t, c, 5*time.Second)
		_ = rpc
	})
}

// serveMuxCfg serves a plaintext mux with cfg on 127.0.0.1:0.
func serveMuxCfg(t *testing.T, cfg Config) (*Mux, *Listener, *Listener, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(ln, cfg)
	a, b := m.Listen(ConnRaft), m.Listen(ConnRPC)
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	t.Cleanup(func() {
		_ = m.Close()
		<-served
	})
	return m, a, b, served
}

// waitFor polls cond every 10 ms for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
