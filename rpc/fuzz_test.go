package rpc

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/wire"
)

// fuzzPort is one node's port for the fuzzers: a mux (plaintext, or TLS)
// with the RPC server behind it, shared by every input of a run.
type fuzzPort struct {
	addr string
}

var fuzzPorts struct {
	sync.Mutex
	m map[bool]*fuzzPort
}

func portFor(t testing.TB, withTLS bool) *fuzzPort {
	fuzzPorts.Lock()
	defer fuzzPorts.Unlock()
	if p := fuzzPorts.m[withTLS]; p != nil {
		return p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := mux.Config{HandshakeTimeout: time.Second}
	if withTLS {
		ca, err := tlsutil.NewCA(tlsutil.DefaultCluster, 1)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := ca.Issue(tlsutil.CertRequest{Server: true, Name: "n1", Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	}
	m := mux.New(ln, cfg)
	rl := m.Listen(mux.ConnRPC)
	go func() { _ = m.Serve() }()
	s := New(Config{Logger: logging.Discard(), FrameTimeout: time.Second, IdleTimeout: time.Second}, &fakeBackend{watch: make(chan struct{}, 1024)})
	go func() { _ = s.Serve(rl) }()
	// The port lives for the whole test binary: inputs of one fuzz run share it.
	p := &fuzzPort{addr: ln.Addr().String()}
	if fuzzPorts.m == nil {
		fuzzPorts.m = map[bool]*fuzzPort{}
	}
	fuzzPorts.m[withTLS] = p
	return p
}

// feed sends data as the first bytes of a connection, half-closes it, and
// checks the node answers or closes within a bound, holding the connection
// no longer than its timeouts allow.
func feed(t *testing.T, p *fuzzPort, data []byte) {
	c, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(data); err != nil {
		return // closed already: fine
	}
	_ = c.(*net.TCPConn).CloseWrite()
	start := time.Now()
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the node kept a connection open for %v after %d bytes (%x...) and EOF, answering %d bytes",
			time.Since(start), len(data), data[:min(len(data), 16)], n)
	}
}

func fuzzSeeds(f *testing.F) {
	var reg bytes.Buffer
	_ = wire.WriteFrame(&reg, &wire.Header{Seq: 1, Method: wire.MethodRegister}, &wire.RegisterRequest{Name: "web", Addr: "h:1"}, 0)
	for _, s := range [][]byte{
		{},
		{mux.ConnRPC},
		{mux.ConnRPC, 0x00, 0x0f, 0xff, 0xff}, // a 1 MiB frame's length, then nothing
		{mux.ConnRPC, 0x04, 0x00, 0x00, 0x00, 0x81, 0xa3}, // claims 64 MiB
		append([]byte{mux.ConnRPC}, reg.Bytes()...),       // a valid Register
		append(append([]byte{mux.ConnRPC}, reg.Bytes()...), 0x00, 0x00),
		{mux.ConnRaft, 0x00, 0x01, 0x02},
		{0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00, 0xfb}, // the start of a TLS ClientHello
		{0xff, 0xff, 0xff, 0xff},
		bytes.Repeat([]byte{mux.ConnRPC}, 300),
	} {
		f.Add(s)
	}
}

// FuzzRPC_FirstBytes: whatever a stranger sends first on a plaintext port,
// the node answers or closes, within its timeouts, and keeps serving.
func FuzzRPC_FirstBytes(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		feed(t, portFor(t, false), data)
	})
}

// FuzzMux_TLSHandshake: the same on a TLS port, where the first bytes are
// a TLS handshake (the protocol byte comes only inside it).
func FuzzMux_TLSHandshake(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		feed(t, portFor(t, true), data)
	})
}
