package fsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/faultbugs"
)

// A watcher holds no copy of the events it has not read yet. It keeps only a
// cursor — the index of the last event it returned — and reads straight from
// the service's history ring when woken. Apply therefore does O(1) work per
// change however many watchers there are (it closes one channel), never blocks
// on a watcher, and a watcher that falls further behind than the ring reaches
// is resynced with the current state instead of buffering without bound.

// notifier wakes the watchers of one service. It is local to the node.
type notifier struct {
	ch   chan struct{}
	refs int
}

// wake wakes every watcher waiting on the notifier. FSM lock must be held.
func (n *notifier) wake() {
	close(n.ch)
	n.ch = make(chan struct{})
}

// ErrWatcherClosed is returned by Next after Close.
var ErrWatcherClosed = errors.New("watcher closed")

// Watcher is one open watch on a service.
type Watcher struct {
	f    *FSM
	name string

	// Owned by the goroutine calling Next:
	cursor   uint64 // index of the last event returned (or of the state sent)
	caughtUp bool   // a resumed watch still owes a current marker once it has caught up
	gen      uint64 // the FSM's restore generation the cursor belongs to
	pending  []Event

	closeOnce sync.Once
	done      chan struct{}
}

// Watch opens a watch on a service. With fromIndex 0 the watcher first returns
// the current state: an up event per instance (oldest change first, each with
// the index of its last registration), a meta event if the service has
// metadata, and a current marker at the state's index N; then every change
// after N (meta events among them). With fromIndex > 0 it returns every
// change after fromIndex if the history still holds them all, then a current
// marker at the index it has caught up to; or else a resync marker followed
// by the current state. fromIndex must not be beyond what this
// node has applied (see WaitApplied): that fails with codes.ErrStaleNode.
func (f *FSM) Watch(name string, fromIndex uint64) (*Watcher, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fromIndex > f.st.applied {
		return nil, fmt.Errorf("watch %s from index %d: node has applied only %d: %w", name, fromIndex, f.st.applied, codes.ErrStaleNode)
	}
	n := f.notifiers[name]
	if n == nil {
		n = &notifier{ch: make(chan struct{})}
		f.notifiers[name] = n
	}
	n.refs++
	w := &Watcher{f: f, name: name, gen: f.gen, done: make(chan struct{})}
	switch {
	case fromIndex == 0:
		w.pending, w.cursor = f.stateEventsLocked(name, false)
	case f.canResumeLocked(name, fromIndex):
		w.cursor = fromIndex
		w.caughtUp = true
	default:
		f.counters.resyncs[ResyncResume].Add(1)
		w.pending, w.cursor = f.stateEventsLocked(name, true)
	}
	return w, nil
}

// canResumeLocked reports whether every event of the service after idx is
// still known. Lock must be held.
func (f *FSM) canResumeLocked(name string, idx uint64) bool {
	if svc := f.st.services[name]; svc != nil {
		return svc.history.canResumeFrom(idx)
	}
	return idx >= f.st.forgottenThrough
}

// stateEventsLocked returns the current state of a service as events: an
// optional resync marker, an up event per instance ordered by index, a meta
// event if the service has metadata, and a current marker. It returns the
// state's index. Lock must be held.
func (f *FSM) stateEventsLocked(name string, resync bool) ([]Event, uint64) {
	idx := f.st.applied
	var evs []Event
	if resync {
		evs = append(evs, Event{Kind: EventResync, Index: idx, Name: name})
	}
	if svc := f.st.services[name]; svc != nil {
		start := len(evs)
		for _, in := range svc.instances {
			evs = append(evs, Event{Kind: EventUp, Index: in.ModifyIndex, Name: name, Instance: in})
		}
		s := evs[start:]
		sortEvents(s)
		if svc.meta != nil {
			evs = append(evs, Event{Kind: EventMeta, Index: svc.meta.Index, Name: name, Meta: svc.meta})
		}
	}
	evs = append(evs, Event{Kind: EventCurrent, Index: idx, Name: name})
	return evs, idx
}

func sortEvents(s []Event) {
	slices.SortFunc(s, func(a, b Event) int { return cmpUint(a.Index, b.Index) })
}

// Next returns the next events, at most max (max <= 0 means 256), waiting
// until there is at least one, ctx ends or the watcher is closed. It never
// blocks the FSM: events are read from the history under a read lock.
func (w *Watcher) Next(ctx context.Context, max int) ([]Event, error) {
	if max <= 0 {
		max = 256
	}
	for {
		if len(w.pending) > 0 {
			k := min(max, len(w.pending))
			evs := w.pending[:k:k]
			w.pending = w.pending[k:]
			if len(w.pending) == 0 {
				w.pending = nil
			}
			return evs, nil
		}
		select {
		case <-w.done:
			return nil, ErrWatcherClosed
		default:
		}
		f := w.f
		f.mu.RLock()
		if w.gen != f.gen || !f.canResumeLocked(w.name, w.cursor) {
			// A snapshot replaced the state, or the watcher fell further
			// behind than the history reaches: send the whole state again.
			why := ResyncBehind
			if w.gen != f.gen {
				why = ResyncRestore
			}
			f.counters.resyncs[why].Add(1)
			w.pending, w.cursor = f.stateEventsLocked(w.name, true)
			w.gen = f.gen
			f.mu.RUnlock()
			continue
		}
		if svc := f.st.services[w.name]; svc != nil && svc.lastIndex > w.cursor {
			evs := svc.history.after(nil, w.cursor, max)
			f.mu.RUnlock()
			w.cursor = evs[len(evs)-1].Index
			if faultbugs.On("drop-watch-event") && len(evs) > 0 && evs[0].Index%7 == 0 {
				evs = evs[1:] // planted bug: a change event goes missing
				if len(evs) == 0 {
					continue
				}
			}
			return evs, nil
		}
		if w.caughtUp {
			// A resumed watch has replayed every change it missed: say
			// which index it is now current at, as a fresh one does.
			w.caughtUp = false
			if f.st.applied > w.cursor {
				w.cursor = f.st.applied
			}
			idx := w.cursor
			f.mu.RUnlock()
			return []Event{{Kind: EventCurrent, Index: idx, Name: w.name}}, nil
		}
		n := f.notifiers[w.name]
		if n == nil {
			f.mu.RUnlock()
			return nil, ErrWatcherClosed // Close ran since the check above
		}
		ch := n.ch
		f.mu.RUnlock()
		select {
		case <-ch:
		case <-w.done:
			return nil, ErrWatcherClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close ends the watch and releases its notifier. Safe to call more than once
// and concurrently with Next.
func (w *Watcher) Close() {
	w.closeOnce.Do(func() {
		close(w.done)
		f := w.f
		f.mu.Lock()
		defer f.mu.Unlock()
		if n := f.notifiers[w.name]; n != nil {
			n.refs--
			if n.refs == 0 {
				delete(f.notifiers, w.name)
			}
		}
	})
}
