package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/history"
)

// watcher follows one service through a series of streams (sessions): it
// drops each after ~ResumeEvery (or when it fails) and resumes on another
// node after the last change or state marker it received — or from scratch
// if it was inside a state block, exactly as the Go client does.
type watcher struct {
	w       *Workload
	name    string
	service string
	rng     *rand.Rand

	sessions  []history.WatchSession
	from      uint64 // resume point
	inBlock   bool
	started   bool
	finalNext bool   // the next session is the last: it runs until the final index
	seen      uint64 // highest index received: no later session may start older
}

type session struct {
	history.WatchSession
	final bool
}

func (wt *watcher) run(ctx context.Context) {
	node := wt.rng.IntN(len(wt.w.nodes))
	for ctx.Err() == nil {
		if wt.session(ctx, node) == "final" {
			return
		}
		if ctx.Err() != nil {
			return
		}
		// Resume on another node.
		if len(wt.w.nodes) > 1 {
			node = (node + 1 + wt.rng.IntN(len(wt.w.nodes)-1)) % len(wt.w.nodes)
		}
		if !sleep(ctx, retry(wt.rng)) {
			return
		}
	}
}

// session runs one stream and returns why it ended.
func (wt *watcher) session(ctx context.Context, node int) string {
	from := wt.from
	if !wt.started || wt.inBlock {
		from = 0 // a state block cut short cannot be resumed
	}
	s := session{WatchSession: history.WatchSession{Watcher: wt.name, Session: len(wt.sessions), Service: wt.service,
		Node: wt.w.nodes[node].ID, FromIndex: from, Opened: now()}, final: wt.finalNext}
	defer func() {
		s.Closed = now()
		wt.sessions = append(wt.sessions, s.WatchSession)
	}()
	opts := wt.w.connOptions()
	opts.StreamBuffer = 1024
	conn, err := rpcconn.Dial(ctx, wt.w.nodes[node].Addr, opts)
	if err != nil {
		s.End = "error: " + err.Error()
		return s.End
	}
	defer conn.Close()
	st, err := conn.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: wt.service, FromIndex: from, MinIndex: wt.seen})
	if err != nil {
		s.End, s.Code = "error: "+err.Error(), string(codes.Of(err))
		return s.End
	}
	defer st.Close()
	wt.started = true
	wt.inBlock = from == 0
	resumeAt := time.Now().Add(wt.w.cfg.ResumeEvery/2 + time.Duration(wt.rng.Int64N(int64(wt.w.cfg.ResumeEvery)+1)))
	lastFrame := time.Now()
	for {
		// Once the final index is known, resume once more (a resumed stream
		// ends its catch-up with a current marker) and run until it is reached.
		final := wt.w.finalIndex.Load()
		if final > 0 && !s.final {
			s.End = "resume"
			wt.finalNext = true
			return s.End
		}
		if final > 0 && !wt.inBlock && wt.from >= final {
			s.End = "final"
			return s.End
		}
		if final == 0 && time.Now().After(resumeAt) {
			s.End = "resume"
			return s.End
		}
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		var batch wire.WatchEvents
		err := st.Recv(rctx, &batch)
		timedOut := rctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if timedOut {
				if time.Since(lastFrame) > 6*time.Second {
					s.End = "error: no frame for 6s (server paused or cut off)"
					return s.End
				}
				continue
			}
			s.End, s.Code = fmt.Sprintf("error: %v", err), string(codes.Of(err))
			return s.End
		}
		at := now()
		lastFrame = time.Now()
		for _, e := range batch.Events {
			s.Events = append(s.Events, history.Event{Kind: e.Kind, Index: e.Index, Addr: e.Addr, Reason: e.Reason, Deleted: e.Deleted, At: at})
			wt.seen = max(wt.seen, e.Index)
			switch e.Kind {
			case wire.KindResync:
				wt.inBlock = true
			case wire.KindCurrent:
				wt.inBlock = false
				wt.from = e.Index
			default:
				if !wt.inBlock {
					wt.from = e.Index
				}
			}
		}
	}
}
