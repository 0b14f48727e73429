package mux

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// newMux serves a Mux on 127.0.0.1:0 with a handshake timeout of hs and
// listeners for protocols 1 and 2. Serve's result arrives on the returned
// channel; Close runs at cleanup.
func newMux(t *testing.T, hs time.Duration) (*Mux, *Listener, *Listener, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveMux(t, ln, hs)
}

func serveMux(t *testing.T, ln net.Listener, hs time.Duration) (*Mux, *Listener, *Listener, <-chan error) {
	t.Helper()
	m := New(ln, Config{HandshakeTimeout: hs})
	a, b := m.Listen(1), m.Listen(2)
	served := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		served <- m.Serve()
		close(done)
	}()
	t.Cleanup(func() {
		_ = m.Close()
		<-done
	})
	return m, a, b, served
}

// notifyListener reports every connection it accepts on accepted.
type notifyListener struct {
	net.Listener
	accepted chan struct{}
}

func (l *notifyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- struct{}{}
	}
	return c, err
}

// accept returns the next connection of l, failing the test after 5 s.
func accept(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { _ = r.c.Close() })
		return r.c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted within 5s")
		return nil
	}
}

// dial connects with protocol byte b.
func dial(t *testing.T, addr string, b byte) net.Conn {
	t.Helper()
	c, err := Dial(addr, b, 2*time.Second, nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readN reads exactly n bytes from c with a deadline.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf)
}

// closedByPeer asserts that a read on c ends with EOF (or a reset) within d.
func closedByPeer(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", d)
	}
	if err == nil {
		t.Fatal("read data from a connection the mux should have closed")
	}
}

func TestMux_TwoProtocolsGetTheirOwnConnections(t *testing.T) {
	m, a, b, _ := newMux(t, time.Second)
	const n = 5
	// Each client names itself; each protocol's listener must see only its own.
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		for _, p := range []byte{1, 2} {
			c := dial(t, m.Addr().String(), p)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = fmt.Fprintf(c, "proto%d-%d", p, i)
			}()
		}
	}
	wg.Wait()
	for _, l := range []struct {
		l *Listener
		p byte
	}{{a, 1}, {b, 2}} {
		seen := map[string]bool{}
		for i := 0; i < n; i++ {
			c := accept(t, l.l)
			got := readN(t, c, len("protoX-0"))
			if got[:6] != fmt.Sprintf("proto%d", l.p) {
				t.Errorf("listener %d got a connection saying %q", l.p, got)
			}
			seen[got] = true
			// Both directions work after the handoff.
			if _, err := c.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) != n {
			t.Errorf("listener %d saw %d distinct connections, want %d", l.p, len(seen), n)
		}
	}
	if l := a.Addr().String(); l != m.Addr().String() {
		t.Errorf("sub-listener Addr %s, want the shared %s", l, m.Addr())
	}
}

func TestMux_UnknownFirstByteIsClosed(t *testing.T) {
	m, a, b, _ := newMux(t, time.Second)
	c := dial(t, m.Addr().String(), 9)
	_, _ = c.Write([]byte("hello"))
	closedByPeer(t, c, 5*time.Second)

	// Neither listener saw it: the next connection each accepts is a good one.
	for _, p := range []byte{1, 2} {
		_, _ = fmt.Fprintf(dial(t, m.Addr().String(), p), "good%d", p)
	}
	if got := readN(t, accept(t, a), 5); got != "good1" {
		t.Errorf("listener 1 got %q", got)
	}
	if got := readN(t, accept(t, b), 5); got != "good2" {
		t.Errorf("listener 2 got %q", got)
	}
}

func TestMux_SilentConnectionClosedAfterHandshakeTimeout(t *testing.T) {
	m, a, _, _ := newMux(t, 100*time.Millisecond)
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	closedByPeer(t, silent, 5*time.Second)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("closed after %v, before the handshake timeout", d)
	}

	// A late byte is too late, but the deadline is lifted for those on time:
	// a connection idle well past the timeout after its byte stays open.
	c := dial(t, m.Addr().String(), 1)
	sc := accept(t, a)
	time.Sleep(300 * time.Millisecond) // idle for 3 handshake timeouts, on purpose
	_, _ = c.Write([]byte("x"))
	if got := readN(t, sc, 1); got != "x" {
		t.Errorf("got %q", got)
	}
}

func TestMux_CloseEndsAcceptAndServe(t *testing.T) {
	m, a, b, served := newMux(t, time.Second)
	errs := make(chan error, 2)
	for _, l := range []*Listener{a, b} {
		go func() {
			_, err := l.Accept()
			errs <- err
		}()
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Accept after Close: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Accept still blocked after Close")
		}
	}
	select {
	case err := <-served:
		if err == nil {
			t.Error("Serve returned nil after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running after Close")
	}
	if _, err := a.Accept(); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept on a closed listener: %v", err)
	}
	if _, err := net.DialTimeout("tcp", m.Addr().String(), time.Second); err == nil {
		t.Error("the shared port still accepts after Close")
	}
}

func TestMux_ListenerCloseLeavesOthersServing(t *testing.T) {
	m, a, b, _ := newMux(t, time.Second)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	_ = a.Close() // twice is fine
	if _, err := a.Accept(); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept: %v, want ErrClosed", err)
	}
	_, _ = dial(t, m.Addr().String(), 2).Write([]byte("b"))
	if got := readN(t, accept(t, b), 1); got != "b" {
		t.Errorf("got %q", got)
	}
}

func TestMux_DialSendsTheByte(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, p := range []byte{1, 2, 0xff} {
		c, err := Dial(ln.Addr().String(), p, time.Second, nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := readN(t, sc, 1); got[0] != p {
			t.Errorf("first byte %#x, want %#x", got[0], p)
		}
		// No deadline is left behind on the dialled connection.
		_, _ = sc.Write([]byte("y"))
		if got := readN(t, c, 1); got != "y" {
			t.Errorf("got %q", got)
		}
		_ = c.Close()
		_ = sc.Close()
	}
}

func TestMux_DialClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if c, err := Dial(addr, 1, time.Second, nil); err == nil {
		_ = c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}
}

// Regression: Close used not to interrupt connections still waiting for
// their protocol byte, so Serve (and with it server.Server's Shutdown, which
// waits for Serve) took up to the handshake timeout to return whenever a
// silent client was connected.
func TestMux_CloseInterruptsHandshakes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nl := &notifyListener{Listener: ln, accepted: make(chan struct{}, 1)}
	m, _, _, served := serveMux(t, nl, 3*time.Second)
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	select {
	case <-nl.accepted: // Serve has it: its handoff waits for the byte
	case <-time.After(5 * time.Second):
		t.Fatal("the mux never accepted the connection")
	}
	start := time.Now()
	_ = m.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Serve returned %v after Close, held by a connection that never sent its byte", d.Round(time.Millisecond))
	}
	expectClosed(t, silent, "a connection in its handshake after Mux.Close")
}

// expectClosed fails unless the peer of c closes it within a second.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s is still open: its peer waits forever", what)
	}
}

// Regression: connections handed to a sub-listener but not yet accepted used
// to sit in a 16-slot queue that Mux.Close never drained, so their peers hung.
// Hand-over is now synchronous with Accept.
func TestMux_CloseLeavesNoConnectionWaitingForAccept(t *testing.T) {
	m, _, _, served := newMux(t, time.Second)
	conns := make([]net.Conn, 5)
	for i := range conns {
		conns[i] = dial(t, m.Addr().String(), 1) // nobody calls Accept
	}
	_ = m.Close()
	<-served
	for _, c := range conns {
		expectClosed(t, c, "a connection for a protocol nobody accepted")
	}
}

// Regression: a connection for a protocol whose Listener is closed was
// queued (and so never closed) about half the time: handoff's select picked
// at random between a free queue slot and the closed done channel.
func TestMux_ClosedListenerClosesNewConnections(t *testing.T) {
	m, a, _, _ := newMux(t, time.Second)
	_ = a.Close()
	for range 10 {
		expectClosed(t, dial(t, m.Addr().String(), 1), "a connection for a closed protocol")
	}
}

// TestMux_StatsCountConnectionsByProtocolAndRefusalsByLimit: a connection
// handed over counts under its protocol until it is closed; one over a
// limit counts under that limit.
func TestMux_StatsCountConnectionsByProtocolAndRefusalsByLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(ln, Config{HandshakeTimeout: 5 * time.Second, MaxConns: 3})
	raft, rpc := m.Listen(ConnRaft), m.Listen(ConnRPC)
	go func() { _ = m.Serve() }()
	t.Cleanup(func() { _ = m.Close() })
	dial(t, ln.Addr().String(), ConnRaft)
	dial(t, ln.Addr().String(), ConnRPC)
	r1 := accept(t, raft)
	accept(t, rpc)
	if st := m.Stats(); st.Raft != 1 || st.RPC != 1 || st.Peer != 0 || st.Conns != 2 {
		t.Fatalf("stats %+v, want one raft and one rpc connection", st)
	}
	silent, err := net.Dial("tcp", ln.Addr().String()) // in its handshake: the third place
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })
	waitFor(t, "the third connection in its handshake", func() bool { return m.Stats().Handshakes == 1 })
	over, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = over.Close() })
	closedByPeer(t, over, 5*time.Second)
	if st := m.Stats(); st.RefusedBy[LimitConns] != 1 || st.Refused != 1 || st.RefusedBy[LimitConnsPerIP] != 0 {
		t.Fatalf("stats %+v, want one refusal for MaxConns", st)
	}
	_ = r1.Close()
	waitFor(t, "the raft connection to be given back", func() bool { return m.Stats().Raft == 0 })
	if st := m.Stats(); st.RPC != 1 {
		t.Fatalf("stats %+v after closing the raft connection, want the rpc one still counted", st)
	}
}
