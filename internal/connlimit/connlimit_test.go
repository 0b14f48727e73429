package connlimit

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestConnLimit_ClosesConnectionsBeyondTheCap: with max open, a new
// connection is closed at once and counted; closing one frees its place,
// once however often it is closed.
func TestConnLimit_ClosesConnectionsBeyondTheCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}
	dial()
	dial()
	a, _ := next(), next()
	over := dial()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = over.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a third connection with a cap of 2: read %v, want it closed", err)
	}
	if l.Refused() != 1 || l.Open() != 2 {
		t.Fatalf("refused %d open %d, want 1 and 2", l.Refused(), l.Open())
	}
	_ = a.Close()
	_ = a.Close()
	if l.Open() != 1 {
		t.Fatalf("open %d after closing one twice, want 1", l.Open())
	}
	dial()
	next()
	if l.Refused() != 1 || l.Open() != 2 {
		t.Fatalf("refused %d open %d after a place freed, want 1 and 2", l.Refused(), l.Open())
	}
}
