package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/discoverd/discoverd/internal/faultbugs"
)

// Leader election on top of a service's registrations.
//
// A service's leader is its online instance registered earliest: the one
// with the smallest CreateIndex (ServiceSet.Leader). CreateIndex is a
// fencing token: a later leader always has a larger one, so a resource the
// leader writes to can refuse writes carrying an index smaller than the
// largest it has seen. Elect stands for leadership: it registers an
// instance and waits until that instance is the leader.

// Leaders yields the set's leader (Leader) now, then again on every change
// of leader — another instance, or the same address registered anew (a new
// CreateIndex) — until the set stops (Close, the client's Close, or its
// watch failing for good: see Err). It yields nil while no instance is
// online. A leader's CreateIndex is its fencing index. A change of the
// leader's attributes alone is not a change of leader.
//
// It never blocks the set: each range over it subscribes (Subscribe) a
// small channel of its own, and when the loop body is slow only the latest
// leader is kept — a leader that came and went meanwhile is skipped, never
// yielded late. Breaking out of the loop unsubscribes.
//
// A stale set (Stale) keeps yielding from the last state it had, as
// Leader does: check Stale, or use Elect, whose Leadership ends when its
// set goes stale.
func (s *ServiceSet) Leaders() iter.Seq[*Service] {
	return func(yield func(*Service) bool) {
		wake := make(chan *ServiceUpdate, 16)
		s.Subscribe(wake)
		defer s.Unsubscribe(wake)
		var last *Service
		first := true
		for {
			cur := s.Leader()
			if first || !sameLeader(last, cur) {
				first, last = false, cur
				if !yield(cur) {
					return
				}
			}
			if !waitWake(wake) {
				// The set stopped; a change published before it stopped
				// was read above, or is read now.
				if cur := s.Leader(); !sameLeader(last, cur) {
					yield(cur)
				}
				return
			}
		}
	}
}

// waitWake waits for an update on wake and drains every other one queued:
// the caller then reads the set's state, which is at least as new as every
// update read (or dropped because wake was full). It reports false once wake
// is closed (the set stopped).
func waitWake(wake <-chan *ServiceUpdate) bool {
	if _, ok := <-wake; !ok {
		return false
	}
	return drainWake(wake)
}

// drainWake reads wake until it is empty; false if it is closed.
func drainWake(wake <-chan *ServiceUpdate) bool {
	for {
		select {
		case _, ok := <-wake:
			if !ok {
				return false
			}
		default:
			return true
		}
	}
}

// sameLeader reports whether a and b are the same leader: both none, or
// the same address with the same CreateIndex.
func sameLeader(a, b *Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Addr == b.Addr && a.CreateIndex == b.CreateIndex
}

// Leadership is a leadership won by Elect. It is safe for concurrent use.
type Leadership struct {
	c          *Client
	set        *ServiceSet
	name, addr string
	fencing    uint64

	done        chan struct{} // closed when the leadership is lost or resigned
	doneOnce    sync.Once
	stop        chan struct{} // closed by Resign: ends the monitor
	monitorDone chan struct{}
	resignOnce  sync.Once
	resignErr   error
}

// Elect stands for leadership of the service name: it registers addr under
// name with attrs (with the client's TTL, heartbeated like RegisterAddr),
// follows the service with a ServiceSet, and returns once this registration
// is the leader — the set's Leader is addr, registered by this client's
// registration (the set reflects it), and the set is not stale. The
// Leadership's FencingIndex is that leader's CreateIndex.
//
// Until then Elect waits, standing in line: when the leader goes away (it
// unregisters, or expires after its TTL) the next oldest registration
// leads. If ctx ends first, Elect unregisters this client's registration
// (best effort, within the client's RequestTimeout) and returns ctx's error
// (wrapped: errors.Is works). It fails with ErrNotFound if the registration
// is removed meanwhile (UnregisterAddr of the same instance), and with the
// set's error, or ErrClosed, if the set stops.
//
// addr should be this candidate's own: a registration of an instance that
// is already registered keeps its CreateIndex, and so its place in line and
// its fencing index. Call Elect once per name and addr on a client.
//
// Leadership is lost, and Done closed, when:
//   - the registration is gone (unregistered, or expired because this client
//     was cut off for longer than its TTL),
//   - another instance is the set's leader (or addr with another CreateIndex),
//   - the set goes stale (Stale: out of contact with the cluster for longer
//     than Config.StreamIdleTimeout): this process can no longer be sure it
//     leads, while the cluster may already have expired its registration and
//     let another win — so a TTL longer than StreamIdleTimeout (the default
//     10 s against 6 s) makes Done close before another can lead, short of
//     pauses, which the fencing index is for;
//   - the set stops (the client's Close, its watch failing for good);
//   - Resign.
//
// On a loss other than Resign, this client's registration is removed too
// (best effort), so that it does not keep the leadership from the others
// nobody exercises. To stand again, call Elect again.
func (c *Client) Elect(ctx context.Context, name, addr string, attrs map[string]string) (*Leadership, error) {
	if err := c.RegisterAddr(ctx, name, addr, attrs, 0); err != nil {
		return nil, fmt.Errorf("elect: %w", err)
	}
	set, err := c.ServicesContext(ctx, name)
	if err != nil {
		c.abandon(name, addr)
		return nil, fmt.Errorf("elect %s %s: %w", name, addr, err)
	}
	wake := make(chan *ServiceUpdate, 16)
	set.Subscribe(wake)
	for {
		if l := c.wonBy(set, name, addr); l != nil {
			ld := &Leadership{c: c, set: set, name: name, addr: addr, fencing: l.CreateIndex,
				done: make(chan struct{}), stop: make(chan struct{}), monitorDone: make(chan struct{})}
			go ld.monitor(wake)
			return ld, nil
		}
		if !c.holds(name, addr) {
			set.Close()
			return nil, fmt.Errorf("elect %s %s: the registration was removed while waiting: %w", name, addr, ErrNotFound)
		}
		select {
		case <-ctx.Done():
			set.Close()
			c.abandon(name, addr)
			return nil, fmt.Errorf("elect %s %s: %w", name, addr, ctx.Err())
		case _, ok := <-wake:
			if !ok || !drainWake(wake) {
				err := set.Err()
				set.Close()
				c.abandon(name, addr)
				if err == nil {
					err = ErrClosed
				}
				return nil, fmt.Errorf("elect %s %s: %w", name, addr, err)
			}
		}
	}
}

// wonBy returns the set's leader if it is this client's registration of
// addr and the set is fresh; else nil.
func (c *Client) wonBy(set *ServiceSet, name, addr string) *Service {
	c.mu.Lock()
	r := c.regs[regKey{name, addr}]
	var index uint64
	if r != nil {
		index = r.index
	}
	c.mu.Unlock()
	if r == nil || set.Stale() {
		return nil
	}
	l := electLeader(set, addr)
	if l == nil || l.Addr != addr || l.Index < index {
		return nil // not addr, or the set does not reflect this client's registration yet
	}
	return l
}

// holds reports whether this client keeps a registration of addr under name.
func (c *Client) holds(name, addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.regs[regKey{name, addr}] != nil
}

// abandon removes this client's registration of addr (best effort, within
// RequestTimeout).
func (c *Client) abandon(name, addr string) {
	ctx, cancel := c.withTimeout()
	defer cancel()
	_ = c.unregisterOwn(ctx, name, addr)
}

// unregisterOwn is UnregisterAddr for an instance this client registered
// only: if the client holds no registration of it (never, or no longer:
// Close, UnregisterAddr) it does nothing, where UnregisterAddr would
// remove the instance whoever registered it.
func (c *Client) unregisterOwn(ctx context.Context, name, addr string) error {
	key := regKey{name, addr}
	c.mu.Lock()
	r := c.regs[key]
	if r == nil {
		c.mu.Unlock()
		return nil
	}
	delete(c.regs, key)
	rereg := r.rereg
	c.mu.Unlock()
	if rereg != nil {
		<-rereg // a registration-again in flight must not land after the unregistration
	}
	c.mu.Lock()
	index := r.index
	c.mu.Unlock()
	return c.unregister(ctx, name, addr, index)
}

// monitor watches the leadership until it is lost or resigned.
func (l *Leadership) monitor(wake chan *ServiceUpdate) {
	defer close(l.monitorDone)
	for l.holding() {
		select {
		case <-l.stop:
			return // Resign does the rest
		case _, ok := <-wake:
			if !ok || !drainWake(wake) {
				l.lose()
				return
			}
		}
	}
	l.lose()
}

// holding reports whether the leadership still holds.
func (l *Leadership) holding() bool {
	if !l.c.holds(l.name, l.addr) || l.set.Stale() {
		return false
	}
	cur := electLeader(l.set, l.addr)
	return cur != nil && cur.Addr == l.addr && cur.CreateIndex == l.fencing
}

// electLeader is the set's leader as Elect and a Leadership judge it, for
// the candidate addr: the set's Leader.
func electLeader(set *ServiceSet, addr string) *Service {
	if faultbugs.On("elect-not-oldest") {
		// Planted (fault suite): the candidate's own instance, once it is
		// online, whether or not an older one is — every candidate leads
		// as soon as its registration shows, and until it is gone.
		for _, s := range set.sortedOnline() {
			if s.Addr == addr {
				return s
			}
		}
		return nil
	}
	return set.Leader()
}

// lose ends a lost leadership: Done first, then the registration and the set.
func (l *Leadership) lose() {
	l.closeDone()
	l.c.abandon(l.name, l.addr)
	l.set.Close()
}

func (l *Leadership) closeDone() { l.doneOnce.Do(func() { close(l.done) }) }

// FencingIndex is the leadership's fencing token: the leader's CreateIndex.
// Every later leader of the service has a larger one.
func (l *Leadership) FencingIndex() uint64 { return l.fencing }

// Done is closed when the leadership is lost or resigned (see Elect). From
// then on this process must act as leader no more.
func (l *Leadership) Done() <-chan struct{} { return l.done }

// Resign gives the leadership up: it closes Done, stops following the
// service and unregisters this client's registration (UnregisterAddr: only
// this client's own), so that the next candidate leads. It returns the
// unregistration's error (none if the registration was gone already: then
// it expires, or was removed, on its own). Calling it again returns the
// first call's result; after a loss it only stops what is left.
func (l *Leadership) Resign(ctx context.Context) error {
	l.resignOnce.Do(func() {
		close(l.stop)
		<-l.monitorDone
		l.closeDone()
		l.set.Close()
		err := l.c.unregisterOwn(ctx, l.name, l.addr)
		if errors.Is(err, ErrNotFound) {
			err = nil
		}
		l.resignErr = err
	})
	return l.resignErr
}
