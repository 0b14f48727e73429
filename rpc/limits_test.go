package rpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// closedWithin waits for the server to close c; it returns how long that took.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // an answer: keep reading until the close
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", d)
		}
		return time.Since(start)
	}
}

// frame encodes one request frame.
func frame(t *testing.T, seq uint64, method string, body any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := wire.WriteFrame(&b, &wire.Header{Seq: seq, Method: method}, body, 0); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRPC_StalledFrameClosedAfterFrameTimeout(t *testing.T) {
	addr, _ := startServer(t, Config{FrameTimeout: 200 * time.Millisecond, IdleTimeout: time.Hour})
	c := dialRaw(t, addr).nc
	// The length of a 1 MiB frame, then nothing.
	if _, err := c.Write([]byte{0x00, 0x0f, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	if took := closedWithin(t, c, 5*time.Second); took < 150*time.Millisecond {
		t.Errorf("closed after %v, before the frame timeout", took)
	}
	// Half a frame, then nothing: the same.
	c2 := dialRaw(t, addr).nc
	f := frame(t, 1, wire.MethodList, &wire.ListRequest{Name: "web"})
	if _, err := c2.Write(f[:len(f)/2]); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, c2, 5*time.Second)
}

func TestRPC_SlowSteadyFrameStillArrives(t *testing.T) {
	addr, _ := startServer(t, Config{FrameTimeout: 2 * time.Second, IdleTimeout: time.Hour})
	c := dialRaw(t, addr).nc
	f := frame(t, 7, wire.MethodList, &wire.ListRequest{Name: "web"})
	for i := 0; i < len(f); i += 4 { // a few bytes every 20 ms, well inside the frame timeout
		if _, err := c.Write(f[i:min(i+4, len(f))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the pace of the sender, not a wait for a state
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := wire.ReadFrame(bufio.NewReader(c), 1<<20)
	if err != nil {
		t.Fatalf("no answer to a slow frame: %v", err)
	}
	if got.Header.Seq != 7 || got.Header.Code != "" {
		t.Errorf("answer %+v", got.Header)
	}
}

func TestRPC_IdleConnectionClosedButNotOneWithAStream(t *testing.T) {
	addr, _ := startServer(t, Config{IdleTimeout: 300 * time.Millisecond, StreamKeepalive: 100 * time.Millisecond})
	idle := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp wire.ListResponse
	if err := idle.Call(ctx, wire.MethodList, false, &wire.ListRequest{Name: "web"}, &resp); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case <-idle.Done():
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Errorf("closed %v after its last call, before the idle timeout", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection was not closed")
	}

	watching := dial(t, addr)
	st, err := watching.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Three idle timeouts: a connection with an open stream stays.
	deadline := time.Now().Add(900 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case <-watching.Done():
			t.Fatalf("a connection with an open watch was closed as idle: %v", watching.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Once the stream ends, the idle clock runs again.
	st.Close()
	select {
	case <-watching.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection stayed open after its stream ended")
	}
}
