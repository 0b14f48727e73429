package etcdstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// Subscribe implements backend.DiscoveryBackend with an etcd prefix watch
// of the service's keys, its metadata key among them (meta events).
// From 0: a consistent read at revision N (the state block), then a watch
// from N+1. From X > 0: a watch from X+1 and, once it has caught up (a
// progress notification), a current marker; if etcd compacted past X, a
// resync marker and the state instead. The watch runs in its own goroutine
// into a bounded buffer; a consumer that falls further behind is resynced.
func (s *Store) Subscribe(ctx context.Context, name string, fromIndex, minIndex uint64) (backend.UpdateStream, error) {
	st := &stream{s: s, name: name, prefix: s.servicePrefix(name), wake: make(chan struct{}, 1)}
	st.ctx, st.cancel = context.WithCancel(context.Background())
	if fromIndex == 0 {
		if err := st.resyncLocked(ctx, false); err != nil {
			st.cancel()
			return nil, err
		}
		if uint64(st.rev) < minIndex {
			st.cancel()
			return nil, fmt.Errorf("etcd is at revision %d, not yet %d: %w", st.rev, minIndex, codes.ErrStaleNode)
		}
		return st, nil
	}
	gr, err := s.cli.Get(ctx, s.cfg.Prefix+"/", clientv3.WithCountOnly())
	if err != nil {
		st.cancel()
		return nil, readErr("watch", err)
	}
	if uint64(gr.Header.Revision) < max(fromIndex, minIndex) {
		st.cancel()
		return nil, fmt.Errorf("etcd is at revision %d, not yet %d: %w", gr.Header.Revision, max(fromIndex, minIndex), codes.ErrStaleNode)
	}
	st.rev = int64(fromIndex)
	st.owesCurrent = true
	st.startWatch(int64(fromIndex) + 1)
	return st, nil
}

type stream struct {
	s      *Store
	name   string
	prefix string
	ctx    context.Context // the stream's life; Next's ctx only bounds one call
	cancel context.CancelFunc

	mu          sync.Mutex
	pending     []wire.Event // ready for Next
	rev         int64        // revision of the last event queued (or state)
	owesCurrent bool         // a resumed watch still owes its "caught up" marker
	needResync  bool         // history was lost or the consumer fell behind
	err         error        // a failure the stream cannot recover from
	watchCancel context.CancelFunc
	gen         int // watch generation; events of an older watch are dropped
	wake        chan struct{}
}

// startWatch starts a watch from rev. Lock need not be held (called before
// the stream is shared, or with mu held by resync's caller).
func (st *stream) startWatch(rev int64) {
	if st.watchCancel != nil {
		st.watchCancel()
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(st.ctx))
	st.watchCancel = cancel
	st.gen++
	gen := st.gen
	wc := st.s.cli.Watch(wctx, st.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV(),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	go st.pump(wctx, gen, wc)
}

// pump moves watch responses into the stream's buffer.
func (st *stream) pump(ctx context.Context, gen int, wc clientv3.WatchChan) {
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-wc:
			st.mu.Lock()
			if gen != st.gen {
				st.mu.Unlock()
				return
			}
			switch {
			case !ok:
				if st.ctx.Err() == nil {
					st.needResync = true // the watch ended (etcd unreachable for long, leader lost): start over
				}
			case resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted):
				st.needResync = true
			case resp.Err() != nil:
				st.needResync = true
			case resp.Created:
				if st.owesCurrent {
					go st.askProgress(ctx)
				}
			case resp.IsProgressNotify():
				if st.owesCurrent && resp.Header.Revision >= st.rev {
					st.owesCurrent = false
					st.rev = resp.Header.Revision
					st.pending = append(st.pending, wire.Event{Kind: wire.KindCurrent, Index: uint64(st.rev), Name: st.name})
				}
			default:
				st.pending = append(st.pending, st.convert(resp.Events)...)
				if len(st.pending) > st.s.cfg.WatchBuffer {
					st.needResync = true // slow consumer: coalesce into a resync
					st.pending = nil
				}
			}
			resync := st.needResync
			st.mu.Unlock()
			select {
			case st.wake <- struct{}{}:
			default:
			}
			if !ok || resync {
				return
			}
		}
	}
}

// askProgress asks etcd, every 100 ms until it answers, for a progress
// notification: etcd sends one only once the watch has caught up (it drops
// requests while a watcher is still replaying), and its revision is the
// index the resumed stream is current at.
func (st *stream) askProgress(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		st.mu.Lock()
		owes := st.owesCurrent
		st.mu.Unlock()
		if !owes {
			return
		}
		_ = st.s.cli.RequestProgress(clientv3.WithRequireLeader(st.ctx))
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// convert turns one watch response's events into change events. Events of
// one revision belong to one transaction: an instance deleted with its
// "unregistered" marker written is a down with reason unregister; deleted
// alone (its lease expired) the reason is expire. Lock must be held.
func (st *stream) convert(evs []*clientv3.Event) []wire.Event {
	unregistered := map[string]int64{}
	for _, e := range evs {
		if k := string(e.Kv.Key); e.Type == mvccpb.PUT && strings.HasPrefix(k, st.prefix+"u/") {
			unregistered[strings.TrimPrefix(k, st.prefix+"u/")] = e.Kv.ModRevision
		}
	}
	var out []wire.Event
	for _, e := range evs {
		k := string(e.Kv.Key)
		if k == st.prefix+"m" {
			// The metadata: a put sets it (its index the put's revision), a
			// delete deletes it.
			ev := wire.Event{Kind: wire.KindMeta, Index: uint64(e.Kv.ModRevision), Name: st.name}
			if e.Type == mvccpb.DELETE {
				ev.Deleted = true
			} else if len(e.Kv.Value) > 0 {
				ev.Data = e.Kv.Value
			}
			out = append(out, ev)
			st.rev = e.Kv.ModRevision
			continue
		}
		if !strings.HasPrefix(k, st.prefix+"i/") {
			continue
		}
		addr := strings.TrimPrefix(k, st.prefix+"i/")
		switch e.Type {
		case mvccpb.PUT:
			kv := instanceKV{Key: k, addr: addr, Value: e.Kv.Value, CreateRevision: e.Kv.CreateRevision, ModRevision: e.Kv.ModRevision}
			in, ok := st.s.toInstance(st.name, &kv)
			if !ok {
				continue
			}
			kind := wire.KindUpdate
			if e.Kv.CreateRevision == e.Kv.ModRevision {
				kind = wire.KindUp
			}
			out = append(out, wire.Event{Kind: kind, Index: uint64(e.Kv.ModRevision), Name: st.name, Addr: addr,
				Attrs: in.Attrs, TTLMillis: in.TTLMillis, CreateIndex: in.CreateIndex})
		case mvccpb.DELETE:
			ev := wire.Event{Kind: wire.KindDown, Index: uint64(e.Kv.ModRevision), Name: st.name, Addr: addr, Reason: wire.ReasonExpire}
			if rev, ok := unregistered[addr]; ok && rev == e.Kv.ModRevision {
				ev.Reason = wire.ReasonUnregister
			}
			if e.PrevKv != nil {
				kv := instanceKV{Key: k, addr: addr, Value: e.PrevKv.Value, CreateRevision: e.PrevKv.CreateRevision}
				if in, ok := st.s.toInstance(st.name, &kv); ok {
					ev.Attrs, ev.TTLMillis, ev.CreateIndex = in.Attrs, in.TTLMillis, in.CreateIndex
				}
			}
			out = append(out, ev)
		}
		st.rev = e.Kv.ModRevision
	}
	return out
}

// resyncLocked reads the state, queues it as a state block (with a resync
// marker unless it is the first), and watches from the next revision.
func (st *stream) resyncLocked(ctx context.Context, marker bool) error {
	rev, kvs, meta, err := st.s.getService(ctx, st.name, false)
	if err != nil {
		return err
	}
	var evs []wire.Event
	if marker {
		evs = append(evs, wire.Event{Kind: wire.KindResync, Index: rev, Name: st.name})
	}
	ups := make([]wire.Event, 0, len(kvs))
	for _, kv := range kvs {
		if in, ok := st.s.toInstance(st.name, &kv); ok {
			ups = append(ups, wire.Event{Kind: wire.KindUp, Index: in.Index, Name: st.name, Addr: in.Addr,
				Attrs: in.Attrs, TTLMillis: in.TTLMillis, CreateIndex: in.CreateIndex})
		}
	}
	sortByIndex(ups)
	evs = append(evs, ups...)
	if meta.Index != 0 {
		evs = append(evs, wire.Event{Kind: wire.KindMeta, Index: meta.Index, Name: st.name, Data: meta.Data})
	}
	evs = append(evs, wire.Event{Kind: wire.KindCurrent, Index: rev, Name: st.name})
	st.pending = evs
	st.rev = int64(rev)
	st.needResync, st.owesCurrent = false, false
	st.startWatch(int64(rev) + 1)
	return nil
}

func sortByIndex(evs []wire.Event) {
	slices.SortFunc(evs, func(a, b wire.Event) int { return cmp.Compare(a.Index, b.Index) })
}

// Next implements backend.UpdateStream.
func (st *stream) Next(ctx context.Context) ([]backend.Event, error) {
	for {
		st.mu.Lock()
		if st.needResync {
			err := st.resyncLocked(ctx, true)
			if err != nil {
				st.mu.Unlock()
				return nil, err
			}
		}
		if len(st.pending) > 0 {
			n := min(len(st.pending), 256)
			evs := st.pending[:n:n]
			st.pending = st.pending[n:]
			st.mu.Unlock()
			return evs, nil
		}
		st.mu.Unlock()
		select {
		case <-st.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-st.ctx.Done():
			return nil, fmt.Errorf("watch closed: %w", codes.ErrShuttingDown)
		}
	}
}

// Close implements backend.UpdateStream.
func (st *stream) Close() { st.cancel() }
