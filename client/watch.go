package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// EventKind says what an Event means.
type EventKind string

// Event kinds. A stream starts with a state block — an up event per instance,
// a meta event if the service has metadata, then current — and continues
// with changes. A resync starts a new state
// block: drop what you hold, the instances that follow are the whole state.
const (
	EventUp      EventKind = wire.KindUp
	EventUpdate  EventKind = wire.KindUpdate
	EventDown    EventKind = wire.KindDown
	EventCurrent EventKind = wire.KindCurrent
	EventResync  EventKind = wire.KindResync
	// EventMeta: the service's metadata was set (Meta holds it) or deleted
	// (Meta nil). A state block holds one, before its current marker, when
	// the service has metadata.
	EventMeta EventKind = wire.KindMeta
)

// Event is one event of a Watch.
type Event struct {
	Kind    EventKind
	Index   uint64   // the index of the change (for markers: the state's index); see docs/protocol.md, "Indices"
	Service *Service // nil for current, resync and meta
	Reason  string   // for down: "unregister" or "expire"
	// Meta, on a meta event, is the service's metadata (its Index is the
	// event's); nil when the event deleted it.
	Meta *Meta
}

// Watch is a resumable stream of a service's events. When the server it
// reads from fails, it reconnects — to the same or another server — and
// resumes after the last event it returned; if that history is gone it
// returns a resync event, never a silent gap. It never returns state older
// than an index this client has already seen.
type Watch struct {
	c      *Client
	name   string
	ctx    context.Context // ends with Close or the client's Close
	cancel context.CancelFunc

	// Owned by the goroutine calling Next:
	from    uint64 // resume point: index of the last change or state marker returned
	inBlock bool   // inside a state block (after start/resync, before current)
	blockN  int    // events returned in the current state block
	pending []wire.Event

	mu     sync.Mutex // guards stream, which Close may reach from another goroutine
	stream *rpcconn.Stream
}

// Watch opens a stream of name's events. With fromIndex 0 it starts with the
// current state; otherwise it resumes after fromIndex.
func (c *Client) Watch(ctx context.Context, name string, fromIndex uint64) (*Watch, error) {
	if err := validate.Name(name); err != nil {
		return nil, err
	}
	w := &Watch{c: c, name: name, from: fromIndex, inBlock: fromIndex == 0}
	w.ctx, w.cancel = context.WithCancel(c.ctx)
	ctx, cancel := w.merge(ctx)
	defer cancel()
	if err := w.connect(ctx, true); err != nil {
		w.cancel()
		return nil, err
	}
	return w, nil
}

// LastIndex is the index the watch would resume after.
func (w *Watch) LastIndex() uint64 { return w.from }

// connect opens a stream on a server, retrying until ctx ends. With
// failFast (opening a watch, as opposed to resuming one) it fails with
// ErrUnavailable once every server refused the connection in refusedRounds
// rounds in a row, as calls do.
func (w *Watch) connect(ctx context.Context, failFast bool) error {
	var last error // why the last attempt failed: an error at the deadline says it
	refused := 0   // rounds in a row in which every server refused the connection
	for {
		if w.ctx.Err() != nil {
			return ErrClosed // the watch or its client was closed
		}
		if err := ctx.Err(); err != nil {
			if last != nil {
				return fmt.Errorf("watch %s: %w (gave up: %w)", w.name, last, err)
			}
			return fmt.Errorf("watch %s not opened: %w", w.name, err)
		}
		conn, err := w.c.getConn(ctx)
		if err == nil {
			from := w.from
			if w.inBlock {
				// A state block cut short cannot be resumed: ask for a fresh one,
				// and if part of the old one was returned, say resync first.
				from = 0
				if w.blockN > 0 {
					w.pending = append(w.pending, wire.Event{Kind: wire.KindResync, Index: w.from, Name: w.name})
					w.blockN = 0
				}
			}
			var st *rpcconn.Stream
			st, err = conn.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: w.name, FromIndex: from, MinIndex: w.c.LastIndex()})
			if err == nil {
				w.setStream(st)
				return nil
			}
			w.c.dropConn(conn)
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			continue // cut short by the caller's deadline: the loop's top says why it gave up
		}
		if !codes.Retryable(err) {
			return err
		}
		last = err
		var ue *unreachableError
		if errors.As(err, &ue) && ue.refused {
			if refused++; failFast && refused >= refusedRounds {
				return fmt.Errorf("watch %s: %w", w.name, err)
			}
		} else {
			refused = 0
		}
		_ = sleep(ctx, retryDelay())
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// merge returns a context that ends with ctx or with the watch.
func (w *Watch) merge(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(w.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (w *Watch) setStream(st *rpcconn.Stream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stream != nil {
		w.stream.Close()
	}
	w.stream = st
	if w.ctx.Err() != nil && st != nil {
		st.Close()
	}
}

func (w *Watch) getStream() *rpcconn.Stream {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stream
}

// Next returns the next event, reconnecting as needed until ctx ends. After
// Close it returns ErrClosed. Call it from one goroutine at a time.
func (w *Watch) Next(ctx context.Context) (*Event, error) {
	ctx, cancel := w.merge(ctx)
	defer cancel()
	for {
		if w.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if len(w.pending) > 0 {
			e := w.pending[0]
			w.pending = w.pending[1:]
			return w.deliver(e), nil
		}
		st := w.getStream()
		if st == nil {
			if err := w.connect(ctx, false); err != nil {
				if w.ctx.Err() != nil {
					return nil, ErrClosed
				}
				return nil, err
			}
			continue
		}
		var batch wire.WatchEvents
		// Every frame, a new stream's first (its state) included, gets the
		// idle timeout: servers send a keepalive every 2 s, so a paused or
		// cut-off server is left after it. A shorter wait for the first
		// frame risks, on a starved machine, the watchers of a shared
		// connection giving up their (large) state frames and resuming
		// together, over and over.
		idle := w.c.cfg.StreamIdleTimeout
		rctx, rcancel := context.WithTimeout(ctx, idle)
		err := st.Recv(rctx, &batch)
		rcancel()
		if err == nil {
			w.pending = batch.Events // empty for a keepalive
			continue
		}
		if w.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// Not even a keepalive: the server is paused or cut off. (Not
			// rctx.Err(): rcancel has ended rctx whatever Recv returned,
			// and the server's own errors must reach the checks below.)
			err = fmt.Errorf("no frame from %s for %v: %w", st.Addr(), idle, codes.ErrUnavailable)
			w.c.avoidServer(st.Addr())
		}
		w.setStream(nil)
		if errors.Is(err, rpcconn.ErrOverflow) {
			// This reader fell behind the connection; the server is fine.
			// A new stream resumes after the last event returned.
			continue
		}
		if !codes.Retryable(err) {
			return nil, fmt.Errorf("watch %s: %w", w.name, err)
		}
		// The server went away or is behind: another server resumes the
		// stream. Drop the stream's own connection, not a newer one.
		if errors.Is(err, codes.ErrStaleNode) || errors.Is(err, codes.ErrNotReady) || errors.Is(err, codes.ErrUnavailable) || errors.Is(err, codes.ErrShuttingDown) {
			w.c.dropConn(st.Conn())
		}
		if err := sleep(ctx, retryDelay()); err != nil {
			return nil, err
		}
	}
}

// deliver updates the resume point for e and converts it.
func (w *Watch) deliver(e wire.Event) *Event {
	switch e.Kind {
	case wire.KindResync:
		w.inBlock, w.blockN = true, 0
	case wire.KindCurrent:
		w.inBlock, w.blockN = false, 0
		w.from = e.Index
	default:
		if w.inBlock {
			w.blockN++
		} else {
			w.from = e.Index
		}
	}
	w.c.observe(e.Index)
	out := &Event{Kind: EventKind(e.Kind), Index: e.Index, Reason: e.Reason}
	if e.Kind == wire.KindMeta && !e.Deleted {
		out.Meta = &Meta{Data: e.Data, Index: e.Index}
	}
	if e.Addr != "" {
		out.Service = &Service{Name: e.Name, Addr: e.Addr, Attrs: e.Attrs, TTL: time.Duration(e.TTLMillis) * time.Millisecond,
			CreateIndex: e.CreateIndex, Index: e.Index, Suspect: e.Suspect}
	}
	return out
}

// Close ends the watch; a Next blocked in another goroutine returns ErrClosed.
func (w *Watch) Close() {
	w.cancel()
	w.setStream(nil)
}
