package fsm

// history is a bounded ring of a service's most recent events, oldest first.
// When it is full the oldest event is dropped and truncatedThrough remembers
// its index, so a watcher resuming from before it knows it must resync.
// Besides the count, the metadata its meta events carry is bounded: past
// metaLimit bytes the oldest events go too (the newest always stays).
type history struct {
	buf              []Event
	start, n         int
	limit            int
	metaBytes        int // data of the meta events held
	metaLimit        int
	truncatedThrough uint64 // highest index dropped from the ring; 0 if none
}

func newHistory(limit, metaLimit int) *history {
	if limit < 1 {
		limit = 1
	}
	return &history{limit: limit, metaLimit: metaLimit}
}

// metaSize is the metadata an event holds.
func metaSize(e Event) int {
	if e.Meta == nil {
		return 0
	}
	return len(e.Meta.Data)
}

// dropOldest drops the oldest event, remembering its index.
func (h *history) dropOldest() {
	old := h.buf[h.start]
	h.truncatedThrough = old.Index
	h.metaBytes -= metaSize(old)
	h.buf[h.start] = Event{}
	h.start = (h.start + 1) % len(h.buf)
	h.n--
}

func (h *history) push(e Event) {
	h.pushEvent(e)
	for h.metaLimit > 0 && h.metaBytes > h.metaLimit && h.n > 1 {
		h.dropOldest()
	}
}

func (h *history) pushEvent(e Event) {
	if h.n == len(h.buf) {
		if len(h.buf) < h.limit {
			// Grow by doubling up to the limit, keeping order.
			size := max(4, 2*len(h.buf))
			size = min(size, h.limit)
			nb := make([]Event, size)
			h.copyTo(nb)
			h.buf, h.start = nb, 0
		} else {
			h.dropOldest() // full
		}
	}
	h.buf[(h.start+h.n)%len(h.buf)] = e
	h.n++
	h.metaBytes += metaSize(e)
}

func (h *history) at(i int) Event { return h.buf[(h.start+i)%len(h.buf)] }

func (h *history) copyTo(dst []Event) {
	for i := 0; i < h.n; i++ {
		dst[i] = h.at(i)
	}
}

// all returns the retained events, oldest first, in a new slice.
func (h *history) all() []Event {
	out := make([]Event, h.n)
	h.copyTo(out)
	return out
}

// after appends to dst up to max events with an index greater than idx; a
// nil dst is allocated at the exact size (a watcher usually takes one event).
func (h *history) after(dst []Event, idx uint64, max int) []Event {
	// Binary search the first event with Index > idx.
	lo, hi := 0, h.n
	for lo < hi {
		mid := (lo + hi) / 2
		if h.at(mid).Index <= idx {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if dst == nil {
		dst = make([]Event, 0, min(h.n-lo, max))
	}
	for i := lo; i < h.n && max > 0; i++ {
		dst = append(dst, h.at(i))
		max--
	}
	return dst
}

// canResumeFrom reports whether every event after idx is still retained.
func (h *history) canResumeFrom(idx uint64) bool { return idx >= h.truncatedThrough }
