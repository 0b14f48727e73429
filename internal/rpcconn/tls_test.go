package rpcconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/wire"
)

// A node that requires a client certificate refuses a client without one
// after the TLS 1.3 handshake; whether the client then sees the node's
// alert or a broken pipe on its first write, its error says a client
// certificate is missing.
func TestConn_MissingClientCertificateIsNamed(t *testing.T) {
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
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := mux.New(ln, mux.Config{TLS: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}})
	rpcLn := m.Listen(mux.ConnRPC)
	go func() { _ = m.Serve() }()
	defer m.Close()
	go func() {
		for {
			c, err := rpcLn.Accept()
			if err != nil {
				return
			}
			_ = c.Close() // never reached: the mux refuses the handshake
		}
	}()
	for i := range 20 { // the race between alert and write goes either way
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, ln.Addr().String(), Options{TLS: ForServer(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool})})
		if err == nil {
			err = c.Call(ctx, wire.MethodStatus, false, nil, &wire.StatusResponse{})
			_ = c.Close()
		}
		cancel()
		if err == nil || !strings.Contains(err.Error(), "client certificate") {
			t.Fatalf("attempt %d: %v, want an error naming the missing client certificate", i, err)
		}
	}
}
