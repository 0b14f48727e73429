package wire

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the connection and the write
// deadlines set on it.
type countingConn struct {
	net.Conn
	writes    atomic.Int64
	deadlines atomic.Int64
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.deadlines.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestFrameWriter_ConcurrentWritersFramesArriveWhole: frames of many
// goroutines arrive whole and each writer's in its order, although groups of
// them share one flush; fewer writes reach the connection than frames.
func TestFrameWriter_ConcurrentWritersFramesArriveWhole(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := &countingConn{Conn: a}
	w := NewFrameWriter(cc, 5*time.Second)
	const writers, each = 32, 200
	got := make(chan map[uint64][]uint64, 1)
	go func() {
		br := bufio.NewReader(b)
		seen := map[uint64][]uint64{}
		for range writers * each {
			f, err := ReadFrame(br, DefaultMaxFrame)
			if err != nil {
				t.Errorf("read: %v", err)
				break
			}
			var body Event
			if err := f.Decode(&body); err != nil {
				t.Errorf("decode: %v", err)
				break
			}
			seen[f.Header.Seq] = append(seen[f.Header.Seq], body.Index)
		}
		got <- seen
	}()
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := w.WriteFrame(&Header{Seq: uint64(g)}, &Event{Kind: KindUp, Index: uint64(i)}, 0); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := <-got
	for g := range writers {
		idx := seen[uint64(g)]
		if len(idx) != each {
			t.Fatalf("writer %d: %d frames arrived, want %d", g, len(idx), each)
		}
		for i, x := range idx {
			if x != uint64(i) {
				t.Fatalf("writer %d: frame %d carries %d: out of order", g, i, x)
			}
		}
	}
	if n := cc.writes.Load(); n >= writers*each {
		t.Errorf("%d writes for %d frames: concurrent frames were not flushed together", n, writers*each)
	}
	t.Logf("%d frames in %d writes", writers*each, cc.writes.Load())
}

// TestFrameWriter_EncodingErrorWritesNothing: a frame that cannot be encoded
// or is over the limit leaves the connection usable and untouched.
func TestFrameWriter_EncodingErrorWritesNothing(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := &countingConn{Conn: a}
	w := NewFrameWriter(cc, 5*time.Second)
	if err := w.WriteFrame(&Header{Seq: 1}, complex(1, 2), 0); !errors.Is(err, ErrEncode) {
		t.Fatalf("unencodable body: %v, want ErrEncode", err)
	}
	var tl *TooLargeError
	if err := w.WriteFrame(&Header{Seq: 2}, &Event{Name: string(make([]byte, 2000))}, 1000); !errors.As(err, &tl) {
		t.Fatalf("frame over the limit: %v, want *TooLargeError", err)
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes reached the connection", n)
	}
	done := make(chan error, 1)
	go func() { done <- w.WriteFrame(&Header{Seq: 3}, &Event{Kind: KindUp, Index: 7}, 0) }()
	f, err := ReadFrame(bufio.NewReader(b), DefaultMaxFrame)
	if err != nil || f.Header.Seq != 3 {
		t.Fatalf("next frame: %+v, %v", f, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestFrameWriter_WritersWokenTogetherShareWrites: goroutines woken at once
// (a change's watchers on one connection) each write one frame without
// overlapping in the lock; their frames still leave in a few writes, not one
// each.
func TestFrameWriter_WritersWokenTogetherShareWrites(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := &countingConn{Conn: a}
	w := NewFrameWriter(cc, 5*time.Second)
	const writers = 100
	read := make(chan int, 1)
	go func() {
		br := bufio.NewReader(b)
		n := 0
		for ; n < writers; n++ {
			if _, err := ReadFrame(br, DefaultMaxFrame); err != nil {
				t.Errorf("read: %v", err)
				break
			}
		}
		read <- n
	}()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := w.WriteFrame(&Header{Seq: uint64(g), More: true}, &WatchEvents{Events: []Event{{Kind: KindUp, Index: 9, Name: "web", Addr: "a:1"}}}, 0); err != nil {
				t.Errorf("write: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := <-read; n != writers {
		t.Fatalf("%d of %d frames arrived", n, writers)
	}
	n := cc.writes.Load()
	t.Logf("%d frames in %d writes", writers, n)
	if n > writers/2 { // without the yield: 74-100
		t.Errorf("%d writes for %d frames of writers woken together", n, writers)
	}
}

// TestFrameWriter_WriteDeadlineSetRarelyAndStillHolds: a stream of flushes
// moves the write deadline on only once it has come an eighth of the timeout
// closer (each set is a timer update), yet a peer that stops reading still
// fails the write within about the timeout.
func TestFrameWriter_WriteDeadlineSetRarelyAndStillHolds(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	dc := &countingConn{Conn: a}
	const timeout = 400 * time.Millisecond
	w := NewFrameWriter(dc, timeout)
	w.SetSolo(func() bool { return true }) // every frame flushed at once
	read := make(chan int, 1)
	stop := make(chan struct{})
	go func() {
		br := bufio.NewReader(b)
		n := 0
		for {
			select {
			case <-stop:
				read <- n
				return
			default:
			}
			if _, err := ReadFrame(br, DefaultMaxFrame); err != nil {
				read <- n
				return
			}
			n++
		}
	}()
	// Flushes spread over more than two timeouts: each must find a live
	// deadline ahead of it, so the deadline was moved on, but rarely.
	const frames = 300
	start := time.Now()
	for i := range frames {
		if err := w.WriteFrame(&Header{Seq: uint64(i)}, &Event{Kind: KindUp, Index: uint64(i)}, 0); err != nil {
			t.Fatalf("frame %d after %v: %v", i, time.Since(start), err)
		}
		time.Sleep(3 * time.Millisecond) // pacing, not waiting for a state
	}
	spread := time.Since(start)
	if spread < 2*timeout {
		t.Fatalf("the frames took %v, want them spread over more than %v", spread, 2*timeout)
	}
	// At most one set per eighth of the timeout that passed, plus the first.
	if max := int64(spread/(timeout/deadlineSlack)) + 1; dc.deadlines.Load() > max || dc.deadlines.Load() < 2 {
		t.Fatalf("%d write deadlines set for %d flushes over %v, want 2..%d", dc.deadlines.Load(), frames, spread, max)
	}
	close(stop)
	// The reader stops after at most one more frame; then a write must
	// fail on the deadline.
	_ = w.WriteFrame(&Header{Seq: 1}, &Event{Kind: KindUp}, 0)
	<-read
	blocked := time.Now()
	err := w.WriteFrame(&Header{Seq: 2}, &Event{Kind: KindUp}, 0)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that stopped reading: %v, want a deadline error", err)
	}
	if took := time.Since(blocked); took > timeout+timeout/2 {
		t.Fatalf("the write failed after %v, want at most about the timeout %v", took, timeout)
	}
}
