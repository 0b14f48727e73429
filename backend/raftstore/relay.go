package raftstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
)

// The heartbeat relay: a follower passes the heartbeats its clients send it
// on to the leader together. Forwarded one by one, every heartbeat cost the
// leader a request of its own — a frame to read and decode, a handler, an
// answer to encode and a write(2) — and under load those, not the tracker,
// were most of the leader's work (README.md, "Benchmarks": per-request
// heartbeats).
//
// Heartbeats of callers with the same credential are relayed in one call,
// at most cfg.HeartbeatRelays calls in flight per credential; heartbeats
// that arrive while they are all in flight wait for the next call, which
// carries all of them (up to validate.MaxHeartbeats instances). There is no
// linger: a lone heartbeat leaves at once, so an idle follower adds no
// latency, and batches only form when calls are already in flight. The
// leader checks the credential of the call, and every instance in it was
// sent with that credential, so its ACL answers (per instance, acl/guard.go)
// are those of the requests one by one.
//
// Each caller gets the results of its own instances. An error of the whole
// call (no leader, a timeout) is every caller's error; heartbeats are safe
// to retry, and a caller that gets an error retries as it would have.

// relayMaxKeys: a heartbeat of this many instances or more is forwarded in
// a call of its own. It is a batch already (the Go client sends up to 1024
// instances a call), and queued behind other calls it would only wait.
const relayMaxKeys = 64

// relayTimeout bounds one relayed call; a caller stops waiting at its own
// deadline before that.
const relayTimeout = 10 * time.Second

type relay struct {
	s   *Store
	max int // calls in flight per credential
	// What the relay sent (RelayStats): calls to the leader, and the
	// instance heartbeats they carried.
	calls, relayed atomic.Uint64
	mu             sync.Mutex
	groups         map[string]*relayGroup // by credential (guarded by mu)
}

// relayGroup is one credential's heartbeats: those waiting for a call, and
// the calls in flight.
type relayGroup struct {
	caller   backend.Caller // the first waiting caller's: the credential is what counts
	waiting  []*relayWaiter
	inFlight int
}

type relayWaiter struct {
	keys []backend.InstanceKey
	done chan relayResult // buffered: the sender never blocks on a caller gone
}

type relayResult struct {
	res []error
	err error
}

func newRelay(s *Store, max int) *relay {
	return &relay{s: s, max: max, groups: map[string]*relayGroup{}}
}

// heartbeat relays keys to the leader with the next call of its caller's
// credential and returns its results.
func (r *relay) heartbeat(ctx context.Context, keys []backend.InstanceKey) ([]error, error) {
	caller := backend.CallerFrom(ctx)
	w := &relayWaiter{keys: keys, done: make(chan relayResult, 1)}
	r.mu.Lock()
	g := r.groups[caller.Token]
	if g == nil {
		g = &relayGroup{caller: caller}
		r.groups[caller.Token] = g
	}
	g.waiting = append(g.waiting, w)
	start := g.inFlight < r.max
	if start {
		g.inFlight++
	}
	r.mu.Unlock()
	if start {
		go r.send(caller.Token, g)
	}
	select {
	case out := <-w.done:
		return out.res, out.err
	case <-ctx.Done():
		return nil, fmt.Errorf("heartbeat relayed to the leader: no answer yet: %w", codes.ErrTimeout)
	}
}

// send makes calls for g's waiting heartbeats until none wait.
func (r *relay) send(token string, g *relayGroup) {
	for {
		r.mu.Lock()
		n, take := 0, 0
		for _, w := range g.waiting {
			if take > 0 && n+len(w.keys) > validate.MaxHeartbeats {
				break
			}
			n += len(w.keys)
			take++
		}
		if take == 0 {
			g.inFlight--
			if g.inFlight == 0 && len(g.waiting) == 0 {
				delete(r.groups, token)
			}
			r.mu.Unlock()
			return
		}
		batch := g.waiting[:take:take]
		g.waiting = g.waiting[take:]
		caller := g.caller
		r.mu.Unlock()

		keys := batch[0].keys
		if len(batch) > 1 {
			keys = make([]backend.InstanceKey, 0, n)
			for _, w := range batch {
				keys = append(keys, w.keys...)
			}
		}
		r.calls.Add(1)
		r.relayed.Add(uint64(len(keys)))
		ctx, cancel := context.WithTimeout(backend.WithCaller(context.Background(), caller), relayTimeout)
		res, err := r.s.heartbeatOnLeader(ctx, keys)
		cancel()
		off := 0
		for _, w := range batch {
			if err != nil {
				w.done <- relayResult{err: err}
				continue
			}
			w.done <- relayResult{res: res[off : off+len(w.keys) : off+len(w.keys)]}
			off += len(w.keys)
		}
	}
}

// RelayStats returns how many calls this node made to the leader relaying
// its clients' heartbeats together, and how many instance heartbeats they
// carried (relay.go; both 0 with the relay off).
func (s *Store) RelayStats() (calls, heartbeats uint64) {
	if s.relay == nil {
		return 0, 0
	}
	return s.relay.calls.Load(), s.relay.relayed.Load()
}
