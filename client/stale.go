package client

import (
	"context"
	"errors"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
)

// A ServiceSet's contact with the cluster.
//
// The set is in contact while its watch holds the stream that delivered the
// last current marker — the end of a state block, or of a resumed stream's
// catch-up. The watch gives a stream up when the server ends it, its
// connection breaks, or no frame (not even a keepalive: servers send one
// every 2 s) came for Config.StreamIdleTimeout; then it reconnects, and
// resumes once a server answers. The set is stale when it has been out of
// contact for longer than StreamIdleTimeout: a failover that resumes within
// it goes unnoticed. It is fresh again at the current marker of the resumed
// stream, after the state it brought (a resync's, for one) is applied.

// contactCheck is how often a set checks that its watch still holds the
// stream it resumed on (and saves its cache file when due).
const contactCheck = 250 * time.Millisecond

// Stale reports whether the set may be behind the cluster: it has been out
// of contact with every server for longer than Config.StreamIdleTimeout (6 s
// by default) — its watch lost its stream and has not resumed since — or it
// started from Config.CacheDir's cached state and has not reached the
// cluster yet, or its watch failed for good (Err). A stale set keeps
// serving the last state it had; it never reports instances gone because
// the cluster is unreachable. When its watch resumes, the set resyncs with
// the cluster's state and is fresh again. Each change is announced to
// subscribers by a notice (ServiceUpdate.Notice). A closed set keeps the
// value it had.
func (s *ServiceSet) Stale() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stale
}

// LastContact returns when the set last knew itself in contact with a
// server: when its watch last delivered an event, or was last seen (every
// 250 ms) still holding the stream it resumed on. A watch gives its stream
// up after StreamIdleTimeout without any frame, keepalives included, so
// while the set is fresh LastContact is at most that old, and usually a
// fraction of a second; when a server stops answering without closing the
// connection (paused, cut off) it may run up to StreamIdleTimeout ahead of
// the last frame. A set started from the cache returns the contact time the
// cache recorded until it reaches the cluster.
func (s *ServiceSet) LastContact() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastContact
}

// heard records an event of the watch, read from stream st (the one the
// watch holds). A current marker means the watch has caught up: the set is
// fresh. A resync says nothing of contact: the watch makes one itself when
// a stream breaks in the middle of a state block.
func (s *ServiceSet) heard(kind EventKind, st *rpcconn.Stream) {
	if kind == EventResync {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastContact = time.Now()
	if kind == EventCurrent {
		s.resumed = st
		s.setStaleLocked(false)
	}
}

// monitor checks the set's contact with the cluster, and saves its cache
// file when due, until ctx ends.
func (s *ServiceSet) monitor(ctx context.Context) {
	t := time.NewTicker(contactCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkContact(time.Now())
			s.saveCacheIfDue(time.Now())
		}
	}
}

// checkContact refreshes LastContact while the watch holds the stream it
// resumed on, and marks the set stale once it has been out of contact for
// longer than StreamIdleTimeout.
func (s *ServiceSet) checkContact(now time.Time) {
	var st *rpcconn.Stream
	if w := s.watch.Load(); w != nil {
		st = w.getStream()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case st != nil && st == s.resumed && st.Conn().Err() == nil:
		s.lastContact = now
	case !s.stale && now.Sub(s.lastContact) > s.c.cfg.StreamIdleTimeout:
		s.setStaleLocked(true)
	}
}

// setStaleLocked changes the set's staleness, announcing a change to
// subscribers and the log. Lock must be held.
func (s *ServiceSet) setStaleLocked(stale bool) {
	if s.stale == stale {
		return
	}
	s.stale = stale
	if stale {
		s.c.log.Warn("discoverd: service set is stale: no contact with the cluster, serving the last state", "service", s.name,
			"index", s.index, "last_contact", s.lastContact)
	} else {
		s.c.log.Info("discoverd: service set is fresh again", "service", s.name, "index", s.index)
	}
	s.publishLocked(s.noticeLocked())
}

// noticeLocked returns a notice of the set's staleness. Lock must be held.
func (s *ServiceSet) noticeLocked() *ServiceUpdate {
	return &ServiceUpdate{Name: s.name, Notice: true, Stale: s.stale, Index: s.index}
}

// isUnreachable reports whether err says the cluster could not be reached,
// or gave no usable answer, in time — what a retry later may cure — as
// opposed to a refusal (a bad name) or the caller's cancellation.
func isUnreachable(err error) bool {
	if errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	return codes.Retryable(err) || errors.Is(err, context.DeadlineExceeded)
}
