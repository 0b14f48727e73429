package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/rpcconn"
)

// maxOffline bounds how many departed instances a ServiceSet remembers.
const maxOffline = 1024

// ServiceUpdate is one change pushed to a ServiceSet's subscribers: an
// instance came, changed or went away — or, when MetaChange is true, the
// service's metadata changed — or, when Notice is true, the set itself
// became stale or fresh again.
//
// A notice and a metadata change carry no instance: their Addr is ""
// (every instance update has one), Online is false, Attrs nil, Created 0
// and Reason "". Code that keys on Addr can skip updates with Addr "".
type ServiceUpdate struct {
	Name string
	Addr string // "" on a notice
	// Notice marks a state-of-the-set notice, not an instance change: the
	// set became stale (Stale true) or fresh again (Stale false); see
	// ServiceSet.Stale. Index is then the index of the state the set holds.
	Notice bool
	// Stale, on a notice, says whether the set is now stale. Always false
	// on an instance update.
	Stale bool
	// MetaChange marks a change of the service's metadata: Meta is the new
	// metadata (the set's Meta from now on), nil when it was deleted.
	// Index is the change's index (on a deletion seen through a resync,
	// the resynced state's). Subscribe delivers the metadata the set holds
	// as one, after the instances. Meta.Data is shared: do not modify it.
	MetaChange bool
	Meta       *Meta
	Online     bool              // false: the instance went away (or a notice)
	Attrs      map[string]string // the instance's attributes (as they were, for a departed one)
	Index      uint64            // the index that produced the change
	Created    uint64            // CreateIndex of the instance
	Reason     string            // why it went away: "unregister", "expire" or "resync"
	// Suspect: the instance is online but suspect (Service.Suspect); an
	// update that only sets or clears it is an update like any other.
	Suspect bool
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
//
// When the cluster cannot be reached the set keeps serving the last state
// it had, and says so: Stale, LastContact and a notice to subscribers
// (stale.go). Its watch keeps trying, and when it resumes the set resyncs
// and is fresh again. With Config.CacheDir the state is also kept on disk
// (cache.go), for a set of a later client to start from.
type ServiceSet struct {
	c      *Client
	name   string
	cancel context.CancelFunc
	done   chan struct{}

	watch atomic.Pointer[Watch] // once opened (a set started from the cache opens it late)

	mu      sync.RWMutex
	online  map[string]*Service
	meta    Meta       // Index 0: none
	offline []*Service // oldest first, at most maxOffline
	subs    []*subscriber
	stopped bool // no more updates: every subscriber's channel is closed
	index   uint64
	err     error // set when the watch failed for good

	// Contact with the cluster (stale.go).
	stale       bool
	lastContact time.Time
	resumed     *rpcconn.Stream // the stream that delivered the last current marker

	// The cache file (cache.go).
	dirty       bool      // changed since it was last saved
	savedAt     time.Time // when it was last saved (or tried)
	cacheFailed bool      // the last save failed (and was warned of)
}

// Services returns a live set of name's instances. It returns once the
// set holds the current state — or, with Config.CacheDir set and the
// cluster unreachable, the state cached by an earlier set, marked stale.
func (c *Client) Services(name string) (*ServiceSet, error) {
	ctx, cancel := c.withTimeout()
	defer cancel()
	return c.ServicesContext(ctx, name)
}

// ServicesContext is Services with a context for the initial state; the set
// lives on until Close (or the client's Close).
//
// When the cluster cannot be reached before ctx ends (or every server
// refuses the connection) and Config.CacheDir holds a valid cache file of
// name, the set starts from it: Stale is true and the set keeps trying to
// reach the cluster in the background, then resyncs. Without one the error
// is returned.
func (c *Client) ServicesContext(ctx context.Context, name string) (*ServiceSet, error) {
	w, block, index, err := c.initialState(ctx, name)
	if err != nil {
		s := c.cachedSet(name, err)
		if s == nil {
			return nil, err
		}
		if err := c.startSet(s, nil); err != nil {
			return nil, err
		}
		return s, nil
	}
	s := c.newSet(name, block.online, block.meta, index)
	s.lastContact, s.resumed = time.Now(), w.getStream()
	s.dirty = c.cfg.CacheDir != ""
	if err := c.startSet(s, w); err != nil {
		w.Close()
		return nil, err
	}
	return s, nil
}

// stateBlock is a state block being read: the instances, and the
// metadata (Index 0: none).
type stateBlock struct {
	online map[string]*Service
	meta   Meta
}

func newBlock() *stateBlock { return &stateBlock{online: map[string]*Service{}} }

// add adds a state block's event to it.
func (b *stateBlock) add(e *Event) {
	switch {
	case e.Kind == EventMeta:
		b.meta = metaOf(e)
	case e.Service != nil:
		b.online[e.Service.Addr] = e.Service
	}
}

// metaOf is the metadata a meta event leaves (Index 0: deleted).
func metaOf(e *Event) Meta {
	if e.Meta == nil {
		return Meta{}
	}
	return *e.Meta
}

// initialState opens a watch of name and reads its first state block.
func (c *Client) initialState(ctx context.Context, name string) (*Watch, *stateBlock, uint64, error) {
	w, err := c.Watch(ctx, name, 0)
	if err != nil {
		return nil, nil, 0, err
	}
	block := newBlock()
	for {
		e, err := w.Next(ctx)
		if err != nil {
			w.Close()
			return nil, nil, 0, fmt.Errorf("services %s: initial state: %w", name, err)
		}
		switch e.Kind {
		case EventCurrent:
			return w, block, e.Index, nil
		case EventResync:
			block = newBlock()
		default:
			block.add(e)
		}
	}
}

func (c *Client) newSet(name string, online map[string]*Service, meta Meta, index uint64) *ServiceSet {
	return &ServiceSet{c: c, name: name, done: make(chan struct{}), online: online, meta: meta, index: index}
}

// startSet registers s with the client and starts following the service
// with w — or, when w is nil, with a watch it opens in the background.
func (c *Client) startSet(s *ServiceSet, w *Watch) error {
	lctx, cancel := context.WithCancel(c.ctx)
	s.cancel = cancel
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return ErrClosed
	}
	c.sets[s] = struct{}{}
	c.mu.Unlock()
	go s.follow(lctx, w)
	return nil
}

// follow keeps the set current until ctx ends or its watch fails for good,
// beside a monitor of its contact with the cluster (and of its cache file).
// Without a watch (a set started from the cache) it opens one first and
// reads its state block as a resync's: the difference is published.
func (s *ServiceSet) follow(ctx context.Context, w *Watch) {
	defer close(s.done)
	mctx, mcancel := context.WithCancel(ctx)
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		s.monitor(mctx)
	}()
	defer s.saveCache() // last, with the final state: on Close, or after a failure
	defer func() { mcancel(); <-monitorDone }()
	defer s.stop()
	var block *stateBlock // non-nil inside a state block
	if w == nil {
		var err error
		if w, err = s.open(ctx); err != nil {
			s.fail(ctx, err)
			return
		}
		block = newBlock()
	}
	defer w.Close()
	s.watch.Store(w)
	s.run(ctx, w, block)
}

// open opens the watch of a set started from the cache, retrying (every
// 200–400 ms, each try a round of the servers) until the cluster answers,
// ctx ends or an error no retry can cure.
func (s *ServiceSet) open(ctx context.Context) (*Watch, error) {
	for {
		w, err := s.c.Watch(ctx, s.name, 0)
		if err == nil {
			return w, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return nil, ErrClosed
		}
		if !isUnreachable(err) {
			return nil, err
		}
		if sleep(ctx, retryDelay()) != nil {
			return nil, ErrClosed
		}
	}
}

// run applies the watch's events to the set; block is the state block
// being read, if the watch starts inside one.
func (s *ServiceSet) run(ctx context.Context, w *Watch, block *stateBlock) {
	for {
		e, err := w.Next(ctx)
		if err != nil {
			s.fail(ctx, err)
			return
		}
		block = s.apply(e, block)
		s.heard(e.Kind, w.getStream())
	}
}

// fail records why the watch failed for good — unless the set was closed —
// and marks the set stale.
func (s *ServiceSet) fail(ctx context.Context, err error) {
	if ctx.Err() != nil || errors.Is(err, ErrClosed) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	s.c.log.Warn("discoverd: service set stopped following changes", "service", s.name, "err", err)
	s.setStaleLocked(true)
}

// apply applies one event and returns the state block being read (nil
// outside one).
func (s *ServiceSet) apply(e *Event, block *stateBlock) *stateBlock {
	switch {
	case e.Kind == EventResync:
		return newBlock()
	case block != nil && e.Kind == EventCurrent:
		s.replace(block, e.Index)
		return nil
	case block != nil:
		block.add(e)
	case e.Kind == EventMeta:
		s.mu.Lock()
		s.meta = metaOf(e)
		s.index, s.dirty = e.Index, true
		s.publishLocked(s.metaUpdateLocked(e.Index))
		s.mu.Unlock()
	case e.Kind == EventUp || e.Kind == EventUpdate:
		s.mu.Lock()
		s.online[e.Service.Addr] = e.Service
		s.index, s.dirty = e.Index, true
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
		s.index, s.dirty = e.Index, true
		s.publishLocked(updateFor(gone, false, e.Index, e.Reason))
		s.mu.Unlock()
	}
	return block
}

// stop ends the set's updates: it closes every subscriber's channel, once.
// Under the lock, so no update can be sent on a closed channel.
func (s *ServiceSet) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	closed := make(map[chan<- *ServiceUpdate]bool, len(s.subs))
	for _, sub := range s.subs {
		if !closed[sub.ch] { // a channel subscribed twice is closed once
			closed[sub.ch] = true
			close(sub.ch)
		}
	}
}

// replace installs a resynced state and publishes the difference.
func (s *ServiceSet) replace(block *stateBlock, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := block.online
	for addr, old := range s.online {
		if _, ok := next[addr]; !ok {
			s.addOfflineLocked(old)
			s.publishLocked(updateFor(old, false, index, "resync"))
		}
	}
	for addr, svc := range next {
		if old, ok := s.online[addr]; !ok || old.Index != svc.Index || old.Suspect != svc.Suspect {
			s.publishLocked(updateFor(svc, true, svc.Index, ""))
		}
	}
	s.online, s.index, s.dirty = next, index, true
	if !s.meta.Equal(block.meta) {
		s.meta = block.meta
		at := index
		if s.meta.Index != 0 {
			at = s.meta.Index
		}
		s.publishLocked(s.metaUpdateLocked(at))
	}
}

// metaUpdateLocked is the update announcing the set's metadata, changed
// at index. Lock must be held.
func (s *ServiceSet) metaUpdateLocked(index uint64) *ServiceUpdate {
	u := &ServiceUpdate{Name: s.name, MetaChange: true, Index: index}
	if s.meta.Index != 0 {
		m := s.meta
		u.Meta = &m
	}
	return u
}

func updateFor(svc *Service, online bool, index uint64, reason string) *ServiceUpdate {
	return &ServiceUpdate{Name: svc.Name, Addr: svc.Addr, Online: online, Attrs: svc.Attrs, Index: index,
		Created: svc.CreateIndex, Reason: reason, Suspect: online && svc.Suspect}
}

// Lock must be held.
func (s *ServiceSet) addOfflineLocked(svc *Service) {
	if len(s.offline) == maxOffline {
		copy(s.offline, s.offline[1:])
		s.offline = s.offline[:maxOffline-1]
	}
	s.offline = append(s.offline, svc)
}

// publishLocked offers u to every subscriber without blocking; after the
// set stopped (its channels closed) it sends nothing. Lock must be held.
func (s *ServiceSet) publishLocked(u *ServiceUpdate) {
	if s.stopped {
		return
	}
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

// Meta returns the service's metadata as the set last saw it (Index 0: it
// has none). Like the instances, it follows every change the watch
// delivers; a stale set keeps the last it had. Data is shared: do not
// modify it.
func (s *ServiceSet) Meta() Meta {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.meta
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

// Subscribe sends the instances online now (as online updates) and the
// service's metadata if it has any (an update with MetaChange) — followed,
// if the set is stale, by a stale notice — then every change, to ch. It
// never blocks the set: when ch is full an update is dropped and the next
// one delivered says how many were missed.
//
// The set closes ch when it stops — on Close, on the client's Close, or
// when its watch fails for good (see Err) — so `for u := range ch` ends
// then. Subscribing to a set that has stopped sends the last instances it
// held and closes ch at once. The set is ch's only sender: do not close it
// yourself, nor send on it.
func (s *ServiceSet) Subscribe(ch chan<- *ServiceUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := &subscriber{ch: ch}
	if s.stopped && slices.ContainsFunc(s.subs, func(o *subscriber) bool { return o.ch == ch }) {
		return // closed already, when the set stopped
	}
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
	if s.meta.Index != 0 {
		select {
		case ch <- s.metaUpdateLocked(s.meta.Index):
		default:
			sub.missed++
		}
	}
	if s.stale {
		select {
		case ch <- s.noticeLocked():
		default:
			sub.missed++
		}
	}
	if s.stopped {
		close(ch)
	}
}

// Unsubscribe stops sending to ch; it does not close ch. After the set has
// stopped it does nothing: ch is closed already.
func (s *ServiceSet) Unsubscribe(ch chan<- *ServiceUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.subs = slices.DeleteFunc(s.subs, func(sub *subscriber) bool { return sub.ch == ch })
}

// Close stops following the service and closes every subscribed channel,
// once; with Config.CacheDir it saves the set's last state if it changed
// since the last save. It is safe to call more than once, and concurrently.
func (s *ServiceSet) Close() {
	s.cancel()
	<-s.done
	s.c.mu.Lock()
	delete(s.c.sets, s)
	s.c.mu.Unlock()
}
