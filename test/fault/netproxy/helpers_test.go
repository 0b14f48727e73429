package netproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// patience bounds every wait in these tests; generous for -race on 2 cores.
const patience = 5 * time.Second

// target stands in for a node: a TCP server on 127.0.0.1:0 that hands every
// connection it accepts to the test, which owns it from then on.
type target struct {
	ln    net.Listener
	conns chan net.Conn
}

func newTarget(t *testing.T) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, conns: make(chan net.Conn, 64)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(tg.conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for c := range tg.conns {
			c.Close()
		}
	})
	return tg
}

func (tg *target) addr() string { return tg.ln.Addr().String() }

// accept returns the next connection the target accepted.
func (tg *target) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c, ok := <-tg.conns:
		if !ok {
			t.Fatal("target closed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(patience):
		t.Fatal("target accepted no connection")
		return nil
	}
}

// newMesh starts n targets and a mesh in front of them, closed at cleanup.
func newMesh(t *testing.T, n int, seed int64) (*Mesh, []*target) {
	t.Helper()
	tgs := make([]*target, n)
	addrs := make([]string, n)
	for i := range tgs {
		tgs[i] = newTarget(t)
		addrs[i] = tgs[i].addr()
	}
	m, err := NewMesh(addrs, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, tgs
}

// dial makes node `from` dial node `to` through the mesh. It returns from's
// end and to's end of the relayed connection.
func dial(t *testing.T, m *Mesh, tgs []*target, from, to int) (fromEnd, toEnd net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", m.Addr(from, to), patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, tgs[to].accept(t)
}

func send(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(patience))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
}

// expect reads exactly len(want) bytes from c and compares them with want.
func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("expecting %q: got %q then %v", want, got, err)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// expectClosed waits until c reports the connection closed or reset,
// failing on a timeout or on data.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 {
		t.Fatalf("expected a closed connection, read %q", buf[:n])
	}
	if !closedErr(err) {
		t.Fatalf("expected a closed connection, got %v", err)
	}
}

// expectRefused dials addr and expects the connection to be reset at once:
// either the dial itself fails (the reset beat the dialer's check of the
// connect) or the connection reads as closed.
func expectRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		if !closedErr(err) {
			t.Fatalf("dial %s: %v, want a reset", addr, err)
		}
		return
	}
	defer c.Close()
	expectClosed(t, c)
}

func closedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// waitFor polls cond until it holds, failing after patience.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitDropped waits until link from→to has dropped at least want bytes.
func waitDropped(t *testing.T, m *Mesh, from, to int, want int64) {
	t.Helper()
	waitFor(t, "bytes dropped", func() bool { return m.Stats().Link(from, to).BytesDropped >= want })
}

// readN reads exactly n bytes from c.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return buf
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}
