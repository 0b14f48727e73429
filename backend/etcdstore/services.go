package etcdstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
)

// servicesPage is how many keys one range request of Services reads (a
// variable for the tests).
var servicesPage int64 = 1000

// Services implements backend.DiscoveryBackend: a keys-only range over
// <prefix>/s/, read page by page at one revision, counting each service's
// instance keys (<prefix>/s/<name>/i/…; unregistration markers are not
// instances). Like List, default reads are served by the etcd member this
// front end talks to (serializable), and are read again linearizably when
// that member is behind MinIndex; consistent reads are linearizable.
func (s *Store) Services(ctx context.Context, opts backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	rev, counts, err := s.countServices(ctx, !opts.Consistent)
	if err == nil && !opts.Consistent && rev < opts.MinIndex {
		rev, counts, err = s.countServices(ctx, false)
	}
	if err != nil {
		return 0, nil, err
	}
	if rev < opts.MinIndex {
		return 0, nil, fmt.Errorf("etcd is at revision %d, not yet %d: %w", rev, opts.MinIndex, codes.ErrStaleNode)
	}
	return rev, counts, nil
}

// countServices reads every key under <prefix>/s/ (keys only, servicesPage
// at a time, every page at the first page's revision) and returns the
// services with at least one instance, sorted by name.
func (s *Store) countServices(ctx context.Context, serializable bool) (uint64, []backend.ServiceCount, error) {
	prefix := s.cfg.Prefix + "/s/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	var (
		rev  int64
		out  []backend.ServiceCount
		from = prefix
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(servicesPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if serializable {
			opts = append(opts, clientv3.WithSerializable())
		}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		gr, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, nil, readErr("list services", err)
		}
		if rev == 0 {
			rev = gr.Header.Revision
		}
		// A service's keys share the prefix <name>/, so they are adjacent
		// in key order (and may continue on the next page).
		for _, kv := range gr.Kvs {
			name, rest, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/")
			if !ok || !strings.HasPrefix(rest, "i/") {
				continue
			}
			if n := len(out); n > 0 && out[n-1].Name == name {
				out[n-1].Instances++
			} else {
				out = append(out, backend.ServiceCount{Name: name, Instances: 1})
			}
		}
		if !gr.More || len(gr.Kvs) == 0 {
			break
		}
		from = string(gr.Kvs[len(gr.Kvs)-1].Key) + "\x00"
	}
	// Key order is not name order ("web-x/" sorts before "web/").
	slices.SortFunc(out, func(a, b backend.ServiceCount) int { return strings.Compare(a.Name, b.Name) })
	if out == nil {
		out = []backend.ServiceCount{}
	}
	return uint64(rev), out, nil
}
