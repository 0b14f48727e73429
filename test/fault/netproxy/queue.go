package netproxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// chunk is one read's bytes and the time they may be written on.
type chunk struct {
	data    []byte
	release time.Time
}

// queue is the FIFO between the reader and the writer of one direction of
// one connection. It holds at most MaxQueuedBytes (or one chunk, if a single
// chunk is larger): push blocks beyond that. A chunk counts from push until
// the writer reports it disposed of (release), so the chunk the writer holds
// while its delay runs counts too.
type queue struct {
	gauge *atomic.Int64 // the link's queued-bytes gauge, kept in step with bytes

	mu      sync.Mutex // guards the fields below
	cond    sync.Cond  // on mu; signalled on every change
	items   []chunk    // not yet popped
	bytes   int        // of items and of the popped chunk not yet released
	eof     bool       // no more pushes; pop drains what is left
	aborted bool       // pop and push fail at once; items dropped
}

func newQueue(gauge *atomic.Int64) *queue {
	q := &queue{gauge: gauge}
	q.cond.L = &q.mu
	return q
}

// push appends c, waiting while the queue is full. It reports false if the
// queue was aborted.
func (q *queue) push(c chunk) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.aborted && len(q.items) > 0 && q.bytes+len(c.data) > MaxQueuedBytes {
		q.cond.Wait()
	}
	if q.aborted {
		return false
	}
	q.items = append(q.items, c)
	q.bytes += len(c.data)
	q.gauge.Add(int64(len(c.data)))
	q.cond.Broadcast()
	return true
}

// pop removes the oldest chunk, waiting for one; the caller must release it
// once written or dropped. It reports false once the queue is aborted, or
// closed for input and empty.
func (q *queue) pop() (chunk, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.aborted && !q.eof && len(q.items) == 0 {
		q.cond.Wait()
	}
	if q.aborted || len(q.items) == 0 {
		return chunk{}, false
	}
	c := q.items[0]
	q.items[0] = chunk{}
	q.items = q.items[1:]
	return c, true
}

// release marks a popped chunk of n bytes as disposed of, making room.
func (q *queue) release(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.aborted { // abort has already discounted it
		return
	}
	q.bytes -= n
	q.gauge.Add(-int64(n))
	q.cond.Broadcast()
}

// closeInput marks the end of input: pop returns what is left, then false.
func (q *queue) closeInput() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.eof = true
	q.cond.Broadcast()
}

// abort drops everything queued and makes push and pop fail from now on.
func (q *queue) abort() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.aborted = true
	q.gauge.Add(-int64(q.bytes))
	q.items, q.bytes = nil, 0
	q.cond.Broadcast()
}
