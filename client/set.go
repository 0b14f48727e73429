package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
)

// maxOffline bounds how many departed instances a ServiceSet remembers.
const maxOffline = 1024

// ServiceUpdate is one change pushed to a ServiceSet's subscribers.
type ServiceUpdate struct {
	Name    string
	Addr    string
	Online  bool              // false: the instance went away
	Attrs   map[string]string // the instance's attributes (as they were, for a departed one)
	Index   uint64            // the index that produced the change
	Created uint64            // CreateIndex of the instance
	Reason  string            // why it went away: "unregister", "expire" or "resync"
	// Missed counts updates dropped for this subscriber since the previous one
	// it received, because its channel was full. When it is not zero, re-read
	// Online() to catch up.
	Missed uint64
}

type subscriber struct {
	ch     chan<- *ServiceUpdate
	missed uint64
}

// ServiceSet is a live view of a service, kept current by a watch stream.
// It is safe for concurrent use.
type ServiceSet struct {
	c      *Client
	name   string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.RWMutex
	online  map[string]*Service
	offline []*Service // oldest first, at most maxOffline
	subs    []*subscriber
	index   uint64
	err     error // set when the watch failed for good
}

// Services returns a live set of name's instances. It returns once the
// set holds the current state.
func (c *Client) Services(name string) (*ServiceSet, error) {
	ctx, cancel := c.withTimeout()
	defer cancel()
	return c.ServicesContext(ctx, name)
}

// ServicesContext is Services with a context for the initial state; the set
// lives on until Close (or the client's Close).
func (c *Client) ServicesContext(ctx context.Context, name string) (*ServiceSet, error) {
	w, err := c.Watch(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	s := &ServiceSet{c: c, name: name, done: make(chan struct{}), online: map[string]*Service{}}
	// Read the initial state before returning.
	next := map[string]*Service{}
	for {
		e, err := w.Next(ctx)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("services %s: initial state: %w", name, err)
		}
		if e.Kind == EventCurrent {
			s.online, s.index = next, e.Index
			break
		}
		if e.Kind == EventResync {
			next = map[string]*Service{}
		} else if e.Service != nil {
			next[e.Service.Addr] = e.Service
		}
	}
	lctx, cancel := context.WithCancel(c.ctx)
	s.cancel = cancel
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		w.Close()
		return nil, ErrClosed
	}
	c.sets[s] = struct{}{}
	c.mu.Unlock()
	go s.run(lctx, w)
	return s, nil
}

func (s *ServiceSet) run(ctx context.Context, w *Watch) {
	defer close(s.done)
	defer w.Close()
	var block map[string]*Service // non-nil inside a resync's state block
	for {
		e, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, ErrClosed) {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
			return
		}
		switch {
		case e.Kind == EventResync:
			block = map[string]*Service{}
		case block != nil && e.Kind == EventCurrent:
			s.replace(block, e.Index)
			block = nil
		case block != nil && e.Service != nil:
			block[e.Service.Addr] = e.Service
		case e.Kind == EventUp || e.Kind == EventUpdate:
			s.mu.Lock()
			s.online[e.Service.Addr] = e.Service
			s.index = e.Index
			s.publishLocked(updateFor(e.Service, true, e.Index, ""))
			s.mu.Unlock()
		case e.Kind == EventDown:
			s.mu.Lock()
			old := s.online[e.Service.Addr]
			delete(s.online, e.Service.Addr)
			gone := e.Service
			if old != nil {
				gone = old
			}
			s.addOfflineLocked(gone)
			s.index = e.Index
			s.publishLocked(updateFor(gone, false, e.Index, e.Reason))
			s.mu.Unlock()
		}
	}
}

// replace installs a resynced state and publishes the difference.
func (s *ServiceSet) replace(next map[string]*Service, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, old := range s.online {
		if _, ok := next[addr]; !ok {
			s.addOfflineLocked(old)
			s.publishLocked(updateFor(old, false, index, "resync"))
		}
	}
	for addr, svc := range next {
		if old, ok := s.online[addr]; !ok || old.Index != svc.Index {
			s.publishLocked(updateFor(svc, true, svc.Index, ""))
		}
	}
	s.online, s.index = next, index
}

func updateFor(svc *Service, online bool, index uint64, reason string) *ServiceUpdate {
	return &ServiceUpdate{Name: svc.Name, Addr: svc.Addr, Online: online, Attrs: svc.Attrs, Index: index,
		Created: svc.CreateIndex, Reason: reason}
}

// Lock must be held.
func (s *ServiceSet) addOfflineLocked(svc *Service) {
	if len(s.offline) == maxOffline {
		copy(s.offline, s.offline[1:])
		s.offline = s.offline[:maxOffline-1]
	}
	s.offline = append(s.offline, svc)
}

// publishLocked offers u to every subscriber without blocking. Lock must be held.
func (s *ServiceSet) publishLocked(u *ServiceUpdate) {
	for _, sub := range s.subs {
		cu := *u
		cu.Missed = sub.missed
		select {
		case sub.ch <- &cu:
			sub.missed = 0
		default:
			sub.missed++
		}
	}
}

// Name is the service's name.
func (s *ServiceSet) Name() string { return s.name }

// Index is the index of the state the set reflects.
func (s *ServiceSet) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// Err returns why the set stopped following changes, or nil while it follows them.
func (s *ServiceSet) Err() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.err
}

func (s *ServiceSet) sortedOnline() []*Service {
	s.mu.RLock()
	out := make([]*Service, 0, len(s.online))
	for _, svc := range s.online {
		out = append(out, svc)
	}
	s.mu.RUnlock()
	sortByCreate(out)
	return out
}

func sortByCreate(s []*Service) {
	slices.SortFunc(s, func(a, b *Service) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
}

// Online yields the instances online now, oldest registration first.
func (s *ServiceSet) Online() iter.Seq[*Service] {
	return slices.Values(s.sortedOnline())
}

// Offline yields the instances seen going away (the most recent 1024), oldest first.
func (s *ServiceSet) Offline() iter.Seq[*Service] {
	s.mu.RLock()
	out := slices.Clone(s.offline)
	s.mu.RUnlock()
	return slices.Values(out)
}

// Select returns the online instances that carry every attribute in attrs.
func (s *ServiceSet) Select(attrs map[string]string) []*Service {
	var out []*Service
	for _, svc := range s.sortedOnline() {
		match := true
		for k, v := range attrs {
			if got, ok := svc.Attrs[k]; !ok || got != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, svc)
		}
	}
	return out
}

// Leader returns the service's leader — the online instance registered
// earliest — or nil. Its CreateIndex is a fencing token: a later leader
// always has a larger one.
func (s *ServiceSet) Leader() *Service {
	all := s.sortedOnline()
	if len(all) == 0 {
		return nil
	}
	return all[0]
}

// Subscribe sends the instances online now (as online updates), then every
// change, to ch. It never blocks the set: when ch is full an update is
// dropped and the next one delivered says how many were missed.
func (s *ServiceSet) Subscribe(ch chan<- *ServiceUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := &subscriber{ch: ch}
	s.subs = append(s.subs, sub)
	all := make([]*Service, 0, len(s.online))
	for _, svc := range s.online {
		all = append(all, svc)
	}
	sortByCreate(all)
	for _, svc := range all {
		u := updateFor(svc, true, svc.Index, "")
		select {
		case ch <- u:
		default:
			sub.missed++
		}
	}
}

// Unsubscribe stops sending to ch.
func (s *ServiceSet) Unsubscribe(ch chan<- *ServiceUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = slices.DeleteFunc(s.subs, func(sub *subscriber) bool { return sub.ch == ch })
}

// Close stops following the service. Subscribers' channels are not closed.
func (s *ServiceSet) Close() {
	s.cancel()
	<-s.done
	s.c.mu.Lock()
	delete(s.c.sets, s)
	s.c.mu.Unlock()
}
