package wire

import (
	"bufio"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// FrameWriter writes the frames of many goroutines to one connection. Each
// frame is encoded before the lock is taken, and frames written together
// leave in one write(2): a writer with others queued behind it leaves the
// flush to them, and a writer with none first yields the processor once,
// so that goroutines already runnable — a change's hundred watchers on one
// connection, woken together — add their frames before it flushes. (Without
// the yield, on two cores each of them found no one queued and flushed
// alone: one write(2) per watcher, a third of a fan-out's CPU.)
type FrameWriter struct {
	conn    net.Conn
	timeout time.Duration
	waiting atomic.Int64 // writers between encoding and the lock
	mu      sync.Mutex
	bw      *bufio.Writer // made on the first write: a connection that never gets a frame holds none (guarded by mu)
	written uint64        // frames written to bw (guarded by mu)
	flushed uint64        // frames flushed, or failed to (guarded by mu)
	solo    func() bool   // SetSolo
	// deadline is the write deadline last set on conn (guarded by mu): it
	// is moved on only once it has come timeout/deadlineSlack closer: each
	// set is a timer update, 4 % of a leader's CPU when it set one per
	// flush under per-request heartbeats.
	deadline time.Time
}

// deadlineSlack: a flush gets at least timeout - timeout/deadlineSlack.
const deadlineSlack = 8

// armDeadline makes sure a write to conn now has (nearly) timeout to finish.
// Called with mu held.
func (w *FrameWriter) armDeadline() {
	at := time.Now().Add(w.timeout)
	if at.Sub(w.deadline) < w.timeout/deadlineSlack {
		return
	}
	w.deadline = at
	_ = w.conn.SetWriteDeadline(at)
}

// SetSolo gives the writer a way to know that no other frame can be on
// its way (one call in flight on the connection, no stream): then a frame
// is flushed at once, without the yield, which only delays it there. Call
// it before the first write.
func (w *FrameWriter) SetSolo(solo func() bool) { w.solo = solo }

// writeBuffer is the size of a FrameWriter's buffer: frames written together
// (a fan-out's events) leave in one write(2) up to this size.
const writeBuffer = 32 << 10

// NewFrameWriter returns a writer to conn that bounds each flush by timeout.
func NewFrameWriter(conn net.Conn, timeout time.Duration) *FrameWriter {
	return &FrameWriter{conn: conn, timeout: timeout}
}

// WriteFrame writes one frame. An encoding error (wrapping ErrEncode, or a
// *TooLargeError past limit) means nothing was written and the connection
// is fine. Any other error means the connection is broken. A nil error means
// the frame is on its way: written, or buffered for a writer queued right
// behind this one, which flushes it (a failed flush breaks the connection,
// and every later write fails).
func (w *FrameWriter) WriteFrame(hdr *Header, body any, limit int) error {
	buf, err := encodeFrame(hdr, body, limit)
	if err != nil {
		return err
	}
	defer releaseFrame(buf)
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(w.conn, writeBuffer)
	}
	if buf.Len() > w.bw.Available() { // bw writes to conn to make room
		w.armDeadline()
	}
	if _, err := w.bw.Write(buf.Bytes()); err != nil {
		w.mu.Unlock()
		return err
	}
	w.written++
	mine := w.written
	if w.waiting.Load() > 0 {
		w.mu.Unlock()
		return nil // the writer queued behind us flushes
	}
	if w.solo != nil && w.solo() {
		defer w.mu.Unlock()
		return w.flushLocked()
	}
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.flushed >= mine:
		// A writer that came meanwhile flushed ours too; a failure there
		// stays in bw and fails every later write.
		return nil
	case w.waiting.Load() > 0:
		return nil
	}
	return w.flushLocked()
}

// flushLocked writes out everything buffered. Called with mu held.
func (w *FrameWriter) flushLocked() error {
	w.flushed = w.written
	w.armDeadline()
	return w.bw.Flush()
}
