package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// GET /v1/services/{name}/events: a watch as Server-Sent Events
// (docs/http.md). Each event's type is the native event's kind and its data
// the event as JSON, with the native protocol's field names. Change events and `current` markers carry `id:` = their
// index, which a client resumes after with Last-Event-ID (or ?index=): every
// change after it, or a `resync` and a full state block. Events inside a
// state block carry no id, so a client cut off inside one resumes from the
// id before it. An idle stream gets a comment line every StreamKeepalive;
// a reader that does not take a batch within StreamWriteTimeout is cut off
// (the native watch's slow-consumer rule), never holding up the node.

func (a *API) events(w http.ResponseWriter, r *http.Request) {
	var from uint64
	name, ok := named(w, r, func() (err error) { from, err = resumeIndex(r); return err })
	if !ok {
		return
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	st, err := a.be.Subscribe(sctx, name, from, 0)
	scancel()
	if err != nil {
		writeErr(w, a.shutdownErr(err))
		return
	}
	defer st.Close()
	a.streams.Add(1)
	defer a.streams.Add(-1)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	a.freshness(w, from)
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 16<<10)
	// send writes what bw holds within the stream's write timeout.
	// A reader that does not take them in time loses its connection
	// (ErrAbortHandler: closed at once, never reused).
	send := func() {
		_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.StreamWriteTimeout))
		if bw.Flush() != nil || rc.Flush() != nil {
			a.slowCuts.Add(1)
			a.cfg.Logger.Debug("SSE reader cut off: it did not take events in time", "service", name, "remote", r.RemoteAddr)
			panic(http.ErrAbortHandler)
		}
	}
	send()
	inState := from == 0
	for {
		nctx, ncancel := context.WithTimeout(ctx, a.cfg.StreamKeepalive)
		evs, err := st.Next(nctx)
		idle := err != nil && ctx.Err() == nil && nctx.Err() != nil
		ncancel()
		switch {
		case idle:
			_, _ = bw.WriteString(": keepalive\n\n")
		case err != nil:
			if ctx.Err() != nil && a.ctx.Err() == nil {
				return // the client went away
			}
			err = a.shutdownErr(err)
			b, _ := json.Marshal(ErrorBody{Code: string(codes.Of(err)), Message: err.Error()})
			fmt.Fprintf(bw, "event: error\ndata: %s\n\n", b)
			send()
			return
		default:
			for _, ev := range evs {
				if ev.Kind == wire.KindResync {
					inState = true
				}
				writeEvent(bw, ev, !inState || ev.Kind == wire.KindCurrent)
				if ev.Kind == wire.KindCurrent {
					inState = false
				}
			}
		}
		send()
	}
}

func writeEvent(bw *bufio.Writer, ev wire.Event, withID bool) {
	b, _ := json.Marshal(codecJSON(ev))
	_, _ = bw.WriteString("event: " + ev.Kind + "\n")
	if withID {
		_, _ = bw.WriteString("id: " + strconv.FormatUint(ev.Index, 10) + "\n")
	}
	_, _ = bw.WriteString("data: ")
	_, _ = bw.Write(b)
	_, _ = bw.WriteString("\n\n")
}

// resumeIndex is where a stream resumes: Last-Event-ID, else ?index=, else
// 0 (the current state first).
func resumeIndex(r *http.Request) (uint64, error) {
	q := r.URL.Query()
	for k := range q {
		if k != "index" {
			return 0, codes.Invalid("unknown query parameter %q: this path takes index (or the Last-Event-ID header)", k)
		}
	}
	s, what := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if s == "" {
		s, what = q.Get("index"), "index"
	}
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, codes.Invalid("%s %q is not a whole number: give the id of the last event received", what, s)
	}
	return n, nil
}
