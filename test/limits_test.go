package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// heapOf is a node's Go heap in use, as the node reports it.
func heapOf(t *testing.T, addr string, tlsOpt func(string) *tls.Config) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := rpcconn.Dial(ctx, addr, rpcconn.Options{TLS: tlsOpt})
	if err != nil {
		t.Fatalf("node info of %s: %v", addr, err)
	}
	defer conn.Close()
	var st wire.NodeStatus
	if err := conn.Call(ctx, wire.MethodNodeInfo, false, &wire.NodeInfoRequest{}, &st); err != nil {
		t.Fatalf("node info of %s: %v", addr, err)
	}
	return st.HeapInuse
}

// stallBound is the documented bound on what a connection that sent a frame
// length and stalled may make a node hold (docs/SECURITY.md, "Limits"):
// the TLS connection, the protocol connection and its small read buffer.
const stallBound = 64 << 10

// TestLimits_StalledConnectionsHoldLittle: 2000 TLS connections that each
// send the length of a 1 MiB frame and then nothing leave the node's heap
// within 64 KiB a connection (not the 1 MiB each claims), and the node keeps
// answering.
func TestLimits_StalledConnectionsHoldLittle(t *testing.T) {
	h := newHarness(t)
	c, p := h.tlsCluster(func(*node) []string {
		return []string{"-max-conns-per-ip", "4000", "-max-conns", "4000", "-frame-timeout", "10m"}
	})
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	target := c.nodes[0]

	clientTLS := p.clientTLS("staller")
	probe := rpcconn.ForServer(clientTLS)
	before := heapOf(t, target.addr, probe)

	const n = 2000
	cfg := clientTLS.Clone()
	cfg.ServerName = "127.0.0.1"
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 { // eight at a time: under -max-handshakes
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				cn, err := mux.Dial(target.addr, mux.ConnRPC, 10*time.Second, cfg)
				if err != nil {
					errs <- err
					return
				}
				if _, err := cn.Write([]byte{0x00, 0x0f, 0xff, 0xff}); err != nil {
					errs <- err
					return
				}
				conns[i] = cn
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, cn := range conns {
			if cn != nil {
				_ = cn.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatalf("opening the stalled connections: %v", err)
	default:
	}
	after := heapOf(t, target.addr, probe)
	per := (int64(after) - int64(before)) / n
	t.Logf("heap %d → %d bytes: %d bytes per stalled connection (bound %d)", before, after, per, stallBound)
	if per > stallBound {
		t.Errorf("%d bytes of heap per stalled connection, the bound is %d", per, stallBound)
	}
	// The node still answers, and the cluster is whole.
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
}

// TestLimits_ConnectionsClosedOnTimeAndPerIP: a connection that sends
// nothing is closed after the handshake timeout, one that sends only the
// protocol byte after the idle timeout, one that stalls inside a frame after
// the frame timeout; beyond the per-IP limit a connection is closed at once,
// while another IP still gets in.
func TestLimits_ConnectionsClosedOnTimeAndPerIP(t *testing.T) {
	h := newHarness(t)
	c := h.startClusterWith(3, func(*node) []string {
		return []string{"-handshake-timeout", "1s", "-idle-timeout", "1s", "-frame-timeout", "1s", "-max-conns-per-ip", "40"}
	})
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	addr := c.nodes[1].addr

	closedAfter := func(what string, c net.Conn, min, max time.Duration) {
		t.Helper()
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(max))
		_, err := io.Copy(io.Discard, c)
		took := time.Since(start)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: still open after %v", what, max)
			return
		}
		if took < min {
			t.Errorf("%s: closed after %v, sooner than %v", what, took, min)
		}
	}
	dial := func(local string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		cn, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cn.Close() })
		return cn
	}
	var wg sync.WaitGroup
	for _, tc := range []struct {
		what  string
		bytes []byte
	}{
		{"silent (handshake timeout)", nil},
		{"only the protocol byte (idle timeout)", []byte{mux.ConnRPC}},
		{"a frame's length and half its header (frame timeout)", []byte{mux.ConnRPC, 0x00, 0x00, 0x00, 0x10, 0x82}},
	} {
		cn := dial("127.0.0.1")
		if _, err := cn.Write(tc.bytes); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			closedAfter(tc.what, cn, 800*time.Millisecond, 10*time.Second)
		}()
	}
	wg.Wait()

	// Per IP: 40 stay open, each in a watch so that no timeout closes them,
	// from an address of their own (the nodes' peers connect from
	// 127.0.0.1 too).
	for i := range 40 {
		cn := dial("127.0.0.3")
		if _, err := cn.Write([]byte{mux.ConnRPC}); err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteFrame(cn, &wire.Header{Seq: 1, Method: wire.MethodWatch}, &wire.WatchRequest{Name: "web"}, 0); err != nil {
			t.Fatal(err)
		}
		_ = cn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if f, err := wire.ReadFrame(bufio.NewReader(cn), 1<<20); err != nil || f.Header.Code != "" {
			t.Fatalf("watch %d from 127.0.0.3: %v %+v", i, err, f)
		}
	}
	extra := dial("127.0.0.3")
	closedAfter("the 41st connection from one IP", extra, 0, 5*time.Second)
	// Another IP is admitted: the node answers a call on it.
	other := dial("127.0.0.4")
	if _, err := other.Write([]byte{mux.ConnRPC}); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteFrame(other, &wire.Header{Seq: 1, Method: wire.MethodList}, &wire.ListRequest{Name: "web"}, 0); err != nil {
		t.Fatal(err)
	}
	_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := wire.ReadFrame(bufio.NewReader(other), 1<<20)
	if err != nil || f.Header.Seq != 1 || f.Header.Code != "" {
		t.Errorf("a connection from another IP: %v %+v", err, f)
	}
}
