package raftnode

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/mux"
)

// testLayer is a stream layer on its own loopback port, behind a mux as in
// a node.
func testLayer(t *testing.T) *streamLayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := mux.New(ln, mux.Config{})
	raftLn := m.Listen(mux.ConnRaft)
	go func() { _ = m.Serve() }()
	t.Cleanup(func() { _ = m.Close() })
	return newStreamLayer(raftLn, ln.Addr().String(), nil)
}

// readFails waits (bounded) for a read on c to fail, as it does once the
// other end is closed.
func readFails(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("%s: read = %v, want the connection closed", what, err)
	}
}

// connect has from dial to, and returns both ends of the connection.
func connect(t *testing.T, from, to *streamLayer) (dialled, accepted net.Conn) {
	t.Helper()
	dialled, err := from.Dial(raft.ServerAddress(to.addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if accepted, err = to.Accept(); err != nil {
		t.Fatal(err)
	}
	return dialled, accepted
}

// TestStreamLayer_CloseClosesEveryRaftConnection: a stopped node's Raft
// connections end, dialled and accepted alike, so its peers see it gone.
func TestStreamLayer_CloseClosesEveryRaftConnection(t *testing.T) {
	a, b := testLayer(t), testLayer(t)
	defer b.Close()
	// a dials b; b dials a.
	out, outAtB := connect(t, a, b)
	in, inAtA := connect(t, b, a)
	// A connection a closes itself is forgotten, not closed twice later.
	extra, _ := connect(t, a, b)
	_ = extra.Close()
	a.mu.Lock()
	open := len(a.conns)
	a.mu.Unlock()
	if open != 2 {
		t.Fatalf("a tracks %d connections, want 2", open)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	readFails(t, outAtB, "b's end of the connection a dialled")
	readFails(t, in, "b's end of the connection a accepted")
	readFails(t, out, "a's own dialled connection")
	readFails(t, inAtA, "a's own accepted connection")
	if _, err := a.Dial(raft.ServerAddress(b.addr), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after close: %v, want net.ErrClosed", err)
	}
}
