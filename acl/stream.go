package acl

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/discoverd/discoverd/backend"
)

// guardedStream is a watch whose caller's right to read is checked again
// whenever the tokens change and whenever a token expires: a stream whose
// token is gone, expired or no longer grants read ends with
// permission_denied.
type guardedStream struct {
	g     *Guard
	inner backend.UpdateStream
	name  string
	token string

	once  sync.Once
	ended chan struct{}
	err   error
}

// Next implements backend.UpdateStream.
func (s *guardedStream) Next(ctx context.Context) ([]backend.Event, error) {
	select {
	case <-s.ended:
		return nil, s.err
	default:
	}
	evs, err := s.inner.Next(ctx)
	select {
	case <-s.ended:
		return nil, s.err
	default:
	}
	return evs, err
}

// Close implements backend.UpdateStream.
func (s *guardedStream) Close() {
	s.g.mu.Lock()
	delete(s.g.streams, s)
	s.g.mu.Unlock()
	s.inner.Close()
}

// end stops the stream with err: a Next waiting returns it.
func (s *guardedStream) end(err error) {
	s.once.Do(func() {
		s.err = fmt.Errorf("watch of service %q ended: %w", s.name, err)
		close(s.ended)
		s.inner.Close()
	})
}

// recheck ends s if its caller may no longer read its service.
func (g *Guard) recheck(s *guardedStream) {
	id, err := g.st.ACLTable().Resolve(s.token, g.now())
	if err == nil {
		err = id.CheckService(fmt.Sprintf("watching service %q", s.name), s.name, Read)
	}
	if err != nil {
		s.end(err)
	}
}

// watchTable rechecks every open stream when the tokens change and when
// the next token expires, until Close.
func (g *Guard) watchTable() {
	defer close(g.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t := g.st.ACLTable()
		g.mu.Lock()
		open := make([]*guardedStream, 0, len(g.streams))
		for s := range g.streams {
			open = append(open, s)
		}
		g.mu.Unlock()
		for _, s := range open {
			g.recheck(s)
		}
		// Wake at the next expiry still to come (an hour at most, so a
		// clock that jumps is noticed).
		now := g.now()
		wait := time.Hour
		for _, tok := range t.Tokens() {
			if !tok.ExpiresAt.IsZero() && tok.ExpiresAt.After(now) {
				wait = min(wait, tok.ExpiresAt.Sub(now)+time.Millisecond)
			}
		}
		timer.Reset(wait)
		select {
		case <-t.Changed():
		case <-timer.C:
		case <-g.stop:
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
