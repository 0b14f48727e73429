package etcdstore

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
)

// Metadata lives in one key per service, <prefix>/s/<name>/m: the data is
// the value and the metadata's index is the key's ModRevision, the etcd
// revision of the put that set it. A compare-and-set is a transaction on
// that ModRevision — a missing key has ModRevision 0, so "expect 0" is
// "create only". The key lies under the service's prefix, so the service's
// watch sees every set and delete of it.

// metaOf is the metadata a key holds.
func metaOf(value []byte, modRevision int64) backend.Meta {
	m := backend.Meta{Index: uint64(modRevision)}
	if len(value) > 0 {
		m.Data = value
	}
	return m
}

// currentIndex is the ModRevision of the metadata key in a range answer
// (0: no key).
func currentIndex(r *etcdserverpb.RangeResponse) uint64 {
	if r == nil || len(r.Kvs) == 0 {
		return 0
	}
	return uint64(r.Kvs[0].ModRevision)
}

// metaTxn runs a compare-and-set on the metadata key: then when cond holds,
// else a read of the key (the current index of a conflict). With a request
// id, the id is recorded with the outcome — "" for applied, failed's code
// otherwise — and a retry answers as the first attempt did: the first
// revision, or the same failure (a conflict then carries the metadata's
// index at the time of the retry). It returns the write's revision,
// whether cond held, and the metadata key's current index when it did not.
func (s *Store) metaTxn(ctx context.Context, op, name, requestID string, cond clientv3.Cmp, then clientv3.Op, failed codes.Code) (rev uint64, ok bool, current uint64, err error) {
	key := s.metaKey(name)
	if requestID == "" {
		resp, err := s.cli.Txn(ctx).If(cond).Then(then).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return 0, false, 0, writeErr(op, err)
		}
		if !resp.Succeeded {
			return uint64(resp.Header.Revision), false, currentIndex(resp.Responses[0].GetResponseRange()), nil
		}
		return uint64(resp.Header.Revision), true, 0, nil
	}
	rl, err := s.requestLease(ctx)
	if err != nil {
		return 0, false, 0, fmt.Errorf("grant request-id lease in etcd: %v: %w", err, codes.ErrUnavailable)
	}
	rk := s.requestKey(requestID)
	inner := clientv3.OpTxn([]clientv3.Cmp{cond},
		[]clientv3.Op{then, clientv3.OpPut(rk, "", clientv3.WithLease(rl))},
		[]clientv3.Op{clientv3.OpPut(rk, encodeResult(0, failed), clientv3.WithLease(rl)), clientv3.OpGet(key)})
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(rk), "=", 0)).
		Then(inner).
		Else(clientv3.OpGet(rk), clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, false, 0, writeErr(op, err)
	}
	if !resp.Succeeded {
		// A retry: answer with the first result.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0, false, 0, fmt.Errorf("request id %q vanished: %w", requestID, codes.ErrUnknownOutcome)
		}
		if len(kvs[0].Value) == 0 {
			return uint64(kvs[0].CreateRevision), true, 0, nil
		}
		return uint64(kvs[0].CreateRevision), false, currentIndex(resp.Responses[1].GetResponseRange()), nil
	}
	it := resp.Responses[0].GetResponseTxn()
	if !it.Succeeded {
		return uint64(resp.Header.Revision), false, currentIndex(it.Responses[1].GetResponseRange()), nil
	}
	return uint64(resp.Header.Revision), true, 0, nil
}

// SetMeta implements backend.DiscoveryBackend: a put of the metadata key
// if its ModRevision is ExpectIndex (0: the key does not exist).
func (s *Store) SetMeta(ctx context.Context, w backend.MetaWrite) (uint64, error) {
	cond := clientv3.Compare(clientv3.ModRevision(s.metaKey(w.Name)), "=", int64(w.ExpectIndex))
	rev, ok, cur, err := s.metaTxn(ctx, "set metadata", w.Name, w.RequestID, cond, clientv3.OpPut(s.metaKey(w.Name), string(w.Data)), codes.CodeConflict)
	switch {
	case err != nil:
		return 0, err
	case ok:
		return rev, nil
	case w.ExpectIndex == 0:
		return rev, codes.Conflict(cur, "set metadata of %s only if it has none", w.Name)
	}
	return rev, codes.Conflict(cur, "set metadata of %s expecting index %d", w.Name, w.ExpectIndex)
}

// DeleteMeta implements backend.DiscoveryBackend: a delete of the metadata
// key if its ModRevision is ExpectIndex, or if it exists at all.
func (s *Store) DeleteMeta(ctx context.Context, w backend.MetaWrite) (uint64, error) {
	key := s.metaKey(w.Name)
	cond, failed := clientv3.Compare(clientv3.ModRevision(key), "=", int64(w.ExpectIndex)), codes.CodeConflict
	if w.ExpectIndex == 0 {
		cond, failed = clientv3.Compare(clientv3.CreateRevision(key), ">", 0), codes.CodeNotFound
	}
	rev, ok, cur, err := s.metaTxn(ctx, "delete metadata", w.Name, w.RequestID, cond, clientv3.OpDelete(key), failed)
	switch {
	case err != nil:
		return 0, err
	case ok:
		return rev, nil
	case w.ExpectIndex == 0:
		return rev, codes.Errorf(codes.ErrNotFound, "delete metadata of %s: the service has no metadata", w.Name)
	}
	return rev, codes.Conflict(cur, "delete metadata of %s expecting index %d", w.Name, w.ExpectIndex)
}

// GetMeta implements backend.DiscoveryBackend, like List: default reads
// from the etcd member this front end talks to, read again linearizably
// when it is behind MinIndex; consistent reads linearizable.
func (s *Store) GetMeta(ctx context.Context, name string, opts backend.MetaOptions) (uint64, backend.Meta, error) {
	read := func(serializable bool) (uint64, backend.Meta, error) {
		o := []clientv3.OpOption{}
		if serializable {
			o = append(o, clientv3.WithSerializable())
		}
		gr, err := s.cli.Get(ctx, s.metaKey(name), o...)
		if err != nil {
			return 0, backend.Meta{}, readErr("get metadata", err)
		}
		s.lastOK.Store(time.Now().UnixNano())
		var m backend.Meta
		if len(gr.Kvs) > 0 {
			m = metaOf(gr.Kvs[0].Value, gr.Kvs[0].ModRevision)
		}
		return uint64(gr.Header.Revision), m, nil
	}
	rev, m, err := read(!opts.Consistent)
	if err == nil && !opts.Consistent && rev < opts.MinIndex {
		rev, m, err = read(false)
	}
	if err != nil {
		return 0, backend.Meta{}, err
	}
	if rev < opts.MinIndex {
		return 0, backend.Meta{}, fmt.Errorf("etcd is at revision %d, not yet %d: %w", rev, opts.MinIndex, codes.ErrStaleNode)
	}
	return rev, m, nil
}
