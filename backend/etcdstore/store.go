// Package etcdstore is the DiscoveryBackend over an etcd v3 cluster: discoverd
// nodes become stateless front ends and etcd holds the registrations.
//
//	<prefix>/s/<name>/i/<addr>   an instance: JSON {"attrs":…,"ttl_ms":…}, attached to its own lease
//	<prefix>/s/<name>/u/<addr>   a short-lived marker written with an unregistration, so watchers
//	                             can tell "unregister" from "expire" (same revision as the delete)
//	<prefix>/s/<name>/m          the service's metadata: its data as the value, its index the
//	                             key's ModRevision; set and deleted by compare-and-set on it (meta.go)
//	<prefix>/r/<request id>      the result of a write, for idempotent retries (leased, ~10 min)
//
// The etcd revision plays the role of the Raft store's index: every write returns
// it, every event carries it, and watches resume from it. Heartbeats renew
// the instance's lease (KeepAliveOnce); etcd expires the lease, and with it
// the key, when they stop. A watch that resumes from a compacted revision
// gets an explicit resync with the current state, never a silent gap.
//
// What etcd guarantees less than the built-in Raft store is listed in the
// README ("Running on etcd"): leases restart at their full TTL when etcd
// elects a new leader, TTLs are whole seconds (at least etcd's minimum
// lease TTL), and request ids are remembered for a time, not a count.
package etcdstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// Config configures the store.
type Config struct {
	// Endpoints are etcd client URLs, e.g. http://127.0.0.1:2379.
	Endpoints []string
	// Prefix under which discoverd keeps its keys. Default "/discoverd".
	Prefix string
	// DialTimeout bounds connecting to etcd at start. Default 5 s.
	DialTimeout time.Duration
	// RequestIDTTL is how long a write's request id is remembered. Default 10 min.
	RequestIDTTL time.Duration
	// WatchBuffer bounds the events a watcher may fall behind by before it is
	// resynced with the current state. Default 4096.
	WatchBuffer int
	// NodeID names this front end in status output.
	NodeID string
	// Addr is this front end's address, for status output.
	Addr   string
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "/discoverd"
	}
	c.Prefix = strings.TrimSuffix(c.Prefix, "/")
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.RequestIDTTL <= 0 {
		c.RequestIDTTL = 10 * time.Minute
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Store implements backend.DiscoveryBackend over etcd.
type Store struct {
	cfg Config
	cli *clientv3.Client
	log *slog.Logger

	lastOK atomic.Int64 // when etcd last answered a read (Unix ns); 0: never

	reqMu    sync.Mutex
	reqLease clientv3.LeaseID // lease the current request-id keys are attached to
	reqUntil time.Time        // when to start a new one
}

var _ backend.DiscoveryBackend = (*Store)(nil)

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd backend: no endpoints given (-etcd-endpoints)")
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || strings.ContainsAny(cfg.Prefix, " \t\n") {
		return nil, fmt.Errorf("etcd prefix %q: want an absolute key prefix like /discoverd", cfg.Prefix)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(reconnectParams(cfg.DialTimeout))}})
	if err != nil {
		return nil, fmt.Errorf("etcd backend: %w", err)
	}
	// clientv3.New does not wait for a connection; ask each endpoint until one answers.
	sctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var errs []string
	for _, ep := range cfg.Endpoints {
		if _, err := cli.Status(sctx, ep); err == nil {
			return &Store{cfg: cfg, cli: cli, log: cfg.Logger}, nil
		} else {
			errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
		}
	}
	cli.Close()
	return nil, fmt.Errorf("etcd backend: no endpoint answered within %v (%s): is etcd running?", cfg.DialTimeout, strings.Join(errs, "; "))
}

// reconnectParams: how the etcd client redials a member it lost. gRPC's
// default backs off up to 120 s (1 s, 1.6 s, 2.6 s, 4.1 s, … after the
// first failures), so after a few seconds of etcd outage a front end could
// stay away for seconds after etcd was back, and every instance whose TTL
// is shorter than that gap would expire although its client heartbeated the
// whole time. Redialling at most every second keeps that gap under a second
// (measured before this: up to 2 s after a 5 s outage).
func reconnectParams(dialTimeout time.Duration) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: dialTimeout,
	}
}

// Close closes the etcd client.
func (s *Store) Close() error { return s.cli.Close() }

// Client exposes the etcd client to tests in this module.
func (s *Store) Client() *clientv3.Client { return s.cli }

func (s *Store) servicePrefix(name string) string { return s.cfg.Prefix + "/s/" + name + "/" }
func (s *Store) instanceKey(name, addr string) string {
	return s.servicePrefix(name) + "i/" + addr
}
func (s *Store) markerKey(name, addr string) string { return s.servicePrefix(name) + "u/" + addr }
func (s *Store) metaKey(name string) string         { return s.servicePrefix(name) + "m" }
func (s *Store) requestKey(id string) string        { return s.cfg.Prefix + "/r/" + id }

type value struct {
	Attrs     map[string]string `json:"attrs,omitempty"`
	TTLMillis int64             `json:"ttl_ms"`
}

// ttlSeconds converts a TTL to etcd's whole seconds, rounding up.
func ttlSeconds(ttl time.Duration) int64 {
	return int64((ttl + time.Second - 1) / time.Second)
}

// writeErr classifies an error from a write that may have reached etcd.
func writeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var c *codes.Error
	if errors.As(err, &c) {
		return err
	}
	return fmt.Errorf("%s in etcd: %v: %w", op, err, codes.ErrUnknownOutcome)
}

// readErr classifies an error from a read.
func readErr(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s in etcd: %v: %w", op, err, codes.ErrTimeout)
	}
	return fmt.Errorf("%s in etcd: %v: %w", op, err, codes.ErrUnavailable)
}

// requestLease returns the lease for request-id keys: a new one every
// tenth of RequestIDTTL, each living RequestIDTTL, so an id is remembered
// for between 0.9 and 1 RequestIDTTL.
func (s *Store) requestLease(ctx context.Context) (clientv3.LeaseID, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	if s.reqLease != 0 && time.Now().Before(s.reqUntil) {
		return s.reqLease, nil
	}
	resp, err := s.cli.Grant(ctx, ttlSeconds(s.cfg.RequestIDTTL))
	if err != nil {
		return 0, err
	}
	s.reqLease, s.reqUntil = resp.ID, time.Now().Add(s.cfg.RequestIDTTL/10)
	return resp.ID, nil
}

// result is what a request-id key holds: "<revision> <code>".
func encodeResult(rev int64, code codes.Code) string { return fmt.Sprintf("%d %s", rev, code) }

func decodeResult(v []byte) (uint64, error) {
	revS, code, _ := strings.Cut(string(v), " ")
	rev, _ := strconv.ParseUint(revS, 10, 64)
	return rev, codes.FromWire(codes.Code(code), "")
}

// Register implements backend.DiscoveryBackend: a fresh lease with the TTL,
// the instance key put on it, and the request id recorded, in one transaction.
func (s *Store) Register(ctx context.Context, r backend.Registration) (uint64, error) {
	ttl := r.TTL
	if ttl == 0 {
		ttl = validate.DefaultTTL
	}
	val, err := json.Marshal(value{Attrs: r.Attrs, TTLMillis: ttl.Milliseconds()})
	if err != nil {
		return 0, fmt.Errorf("encode instance: %v: %w", err, codes.ErrInternal)
	}
	key := s.instanceKey(r.Name, r.Addr)
	lease, err := s.cli.Grant(ctx, ttlSeconds(ttl))
	if err != nil {
		return 0, fmt.Errorf("grant lease in etcd: %v: %w", err, codes.ErrUnavailable) // nothing written yet
	}
	// The instance's previous lease, if any, is revoked once the new one holds it.
	var old clientv3.LeaseID
	if gr, err := s.cli.Get(ctx, key, clientv3.WithSerializable()); err == nil && len(gr.Kvs) > 0 {
		old = clientv3.LeaseID(gr.Kvs[0].Lease)
	}
	put := clientv3.OpPut(key, string(val), clientv3.WithLease(lease.ID))
	var rev uint64
	if r.RequestID == "" {
		resp, err := s.cli.Txn(ctx).Then(put).Commit()
		if err != nil {
			return 0, writeErr("register", err)
		}
		rev = uint64(resp.Header.Revision)
	} else {
		rl, err := s.requestLease(ctx)
		if err != nil {
			return 0, fmt.Errorf("grant request-id lease in etcd: %v: %w", err, codes.ErrUnavailable)
		}
		rk := s.requestKey(r.RequestID)
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(rk), "=", 0)).
			Then(put, clientv3.OpPut(rk, "", clientv3.WithLease(rl))).
			Else(clientv3.OpGet(rk)).Commit()
		if err != nil {
			return 0, writeErr("register", err)
		}
		if !resp.Succeeded {
			// A retry: answer with the first result.
			_, _ = s.cli.Revoke(context.Background(), lease.ID)
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 0 {
				return 0, fmt.Errorf("request id %q vanished: %w", r.RequestID, codes.ErrUnknownOutcome)
			}
			if len(kvs[0].Value) == 0 {
				return uint64(kvs[0].CreateRevision), nil
			}
			return decodeResult(kvs[0].Value)
		}
		rev = uint64(resp.Header.Revision)
	}
	if old != 0 && old != lease.ID {
		go func() { _, _ = s.cli.Revoke(context.Background(), old) }()
	}
	return rev, nil
}

// Unregister implements backend.DiscoveryBackend: the instance key deleted
// together with an "unregistered" marker (so watchers report the right
// reason), or codes.ErrNotFound.
func (s *Store) Unregister(ctx context.Context, u backend.Unregistration) (uint64, error) {
	name, addr, requestID := u.Name, u.Addr, u.RequestID
	key, marker := s.instanceKey(name, addr), s.markerKey(name, addr)
	ml, err := s.requestLease(ctx) // markers live as long as request ids; only watchers read them
	if err != nil {
		return 0, fmt.Errorf("grant lease in etcd: %v: %w", err, codes.ErrUnavailable)
	}
	exists := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	notFound := fmt.Errorf("unregister %s %s: %w", name, addr, codes.ErrNotFound)
	if u.IfIndex != 0 {
		// Only the registration the caller made: its revision is the key's
		// ModRevision (a missing key has ModRevision 0, never IfIndex).
		exists = clientv3.Compare(clientv3.ModRevision(key), "=", int64(u.IfIndex))
		notFound = fmt.Errorf("unregister %s %s: not registered, or registered again since the registration at %d (left in place): %w",
			name, addr, u.IfIndex, codes.ErrNotFound)
	}
	del := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpPut(marker, "", clientv3.WithLease(ml))}
	if requestID == "" {
		resp, err := s.cli.Txn(ctx).If(exists).Then(del...).Commit()
		if err != nil {
			return 0, writeErr("unregister", err)
		}
		if !resp.Succeeded {
			return uint64(resp.Header.Revision), notFound
		}
		return uint64(resp.Header.Revision), nil
	}
	rk := s.requestKey(requestID)
	inner := clientv3.OpTxn([]clientv3.Cmp{exists},
		append(del, clientv3.OpPut(rk, "", clientv3.WithLease(ml))),
		[]clientv3.Op{clientv3.OpPut(rk, encodeResult(0, codes.CodeNotFound), clientv3.WithLease(ml))})
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(rk), "=", 0)).
		Then(inner).
		Else(clientv3.OpGet(rk)).Commit()
	if err != nil {
		return 0, writeErr("unregister", err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0, fmt.Errorf("request id %q vanished: %w", requestID, codes.ErrUnknownOutcome)
		}
		if len(kvs[0].Value) == 0 {
			return uint64(kvs[0].CreateRevision), nil
		}
		if _, err := decodeResult(kvs[0].Value); err != nil {
			return uint64(kvs[0].CreateRevision), notFound
		}
		return uint64(kvs[0].CreateRevision), nil
	}
	if !resp.Responses[0].GetResponseTxn().Succeeded {
		return uint64(resp.Header.Revision), notFound
	}
	return uint64(resp.Header.Revision), nil
}

// Heartbeat implements backend.DiscoveryBackend: each instance's current
// lease is renewed to its full TTL.
func (s *Store) Heartbeat(ctx context.Context, keys []backend.InstanceKey) ([]error, error) {
	out := make([]error, len(keys))
	for i, k := range keys {
		gr, err := s.cli.Get(ctx, s.instanceKey(k.Name, k.Addr))
		if err != nil {
			return nil, readErr("heartbeat", err)
		}
		if len(gr.Kvs) == 0 || gr.Kvs[0].Lease == 0 {
			out[i] = fmt.Errorf("heartbeat %s %s: not registered (expired or unregistered), register again: %w", k.Name, k.Addr, codes.ErrNotFound)
			continue
		}
		if _, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(gr.Kvs[0].Lease)); err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				out[i] = fmt.Errorf("heartbeat %s %s: lease expired, register again: %w", k.Name, k.Addr, codes.ErrNotFound)
				continue
			}
			return nil, readErr("heartbeat", err)
		}
	}
	return out, nil
}

func (s *Store) toInstance(name string, kv *instanceKV) (backend.Instance, bool) {
	var v value
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		s.log.Warn("ignoring undecodable instance in etcd", "key", kv.Key, "err", err)
		return backend.Instance{}, false
	}
	return backend.Instance{Name: name, Addr: kv.addr, Attrs: v.Attrs, TTLMillis: v.TTLMillis,
		CreateIndex: uint64(kv.CreateRevision), Index: uint64(kv.ModRevision)}, true
}

type instanceKV struct {
	Key                         string
	addr                        string
	Value                       []byte
	CreateRevision, ModRevision int64
}

// List implements backend.DiscoveryBackend. Default reads are served by the
// etcd member this front end talks to (serializable); consistent reads, and
// reads that member cannot serve at MinIndex, are linearizable.
func (s *Store) List(ctx context.Context, name string, opts backend.ListOptions) (uint64, []backend.Instance, error) {
	rev, kvs, err := s.get(ctx, name, !opts.Consistent)
	if err == nil && !opts.Consistent && rev < opts.MinIndex {
		rev, kvs, err = s.get(ctx, name, false)
	}
	if err != nil {
		return 0, nil, err
	}
	if rev < opts.MinIndex {
		return 0, nil, fmt.Errorf("etcd is at revision %d, not yet %d: %w", rev, opts.MinIndex, codes.ErrStaleNode)
	}
	var out []backend.Instance
	for _, kv := range kvs {
		if in, ok := s.toInstance(name, &kv); ok && matches(in.Attrs, opts.Attrs) {
			out = append(out, in)
		}
	}
	return rev, out, nil
}

func matches(attrs, filter map[string]string) bool {
	for k, v := range filter {
		if got, ok := attrs[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// get reads a service's instances, oldest registration first.
func (s *Store) get(ctx context.Context, name string, serializable bool) (uint64, []instanceKV, error) {
	rev, out, _, err := s.getService(ctx, name, serializable)
	return rev, out, err
}

// getService reads a service's keys at one revision: its instances, oldest
// registration first, and its metadata (Index 0: none).
func (s *Store) getService(ctx context.Context, name string, serializable bool) (uint64, []instanceKV, backend.Meta, error) {
	prefix := s.servicePrefix(name)
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	gr, err := s.cli.Get(ctx, prefix, opts...)
	if err != nil {
		return 0, nil, backend.Meta{}, readErr("list", err)
	}
	out := make([]instanceKV, 0, len(gr.Kvs))
	var meta backend.Meta
	for _, kv := range gr.Kvs {
		k := string(kv.Key)
		switch {
		case strings.HasPrefix(k, prefix+"i/"):
			out = append(out, instanceKV{Key: k, addr: strings.TrimPrefix(k, prefix+"i/"), Value: kv.Value,
				CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision})
		case k == s.metaKey(name):
			meta = metaOf(kv.Value, kv.ModRevision)
		}
	}
	slices.SortFunc(out, func(a, b instanceKV) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) })
	s.lastOK.Store(time.Now().UnixNano())
	return uint64(gr.Header.Revision), out, meta, nil
}

// ReadIndex implements backend.DiscoveryBackend: the revision of a
// linearizable read.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	gr, err := s.cli.Get(ctx, s.cfg.Prefix+"/", clientv3.WithCountOnly())
	if err != nil {
		return 0, readErr("read index", err)
	}
	s.lastOK.Store(time.Now().UnixNano())
	return uint64(gr.Header.Revision), nil
}

// freshAfter: a front end whose last answer from etcd is older than this
// says it knows no leader.
const freshAfter = 5 * time.Second

// Freshness implements backend.DiscoveryBackend. A front end has no leader
// of its own: it says whether, and how long ago, etcd last answered it (an
// etcd member never serves a state older than one it served before, as it
// replays its log at start).
func (s *Store) Freshness() wire.Freshness {
	t := s.lastOK.Load()
	if t == 0 {
		return wire.Freshness{LastContactMillis: -1}
	}
	since := time.Since(time.Unix(0, t))
	return wire.Freshness{KnownLeader: since < freshAfter, LastContactMillis: since.Milliseconds()}
}

// Status implements backend.DiscoveryBackend: etcd's members as the nodes.
func (s *Store) Status(ctx context.Context) (wire.StatusResponse, error) {
	ml, err := s.cli.MemberList(ctx)
	if err != nil {
		return wire.StatusResponse{}, readErr("member list", err)
	}
	var resp wire.StatusResponse
	for _, m := range ml.Members {
		ns := wire.NodeStatus{ID: m.Name, Voter: !m.IsLearner}
		if len(m.ClientURLs) > 0 {
			ns.Addr = m.ClientURLs[0]
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := s.cli.Status(sctx, ns.Addr)
		cancel()
		if err != nil {
			ns.State, ns.Error = "unreachable", err.Error()
		} else {
			ns.Term, ns.AppliedIndex, ns.CommitIndex, ns.LastIndex = st.RaftTerm, st.RaftAppliedIndex, st.RaftIndex, st.RaftIndex
			ns.State = "Follower"
			ns.Ready, ns.KnownLeader = true, st.Leader != 0
			if st.Leader == m.ID {
				ns.State = "Leader"
				resp.Leader = m.Name
			}
		}
		resp.Nodes = append(resp.Nodes, ns)
	}
	for i := range resp.Nodes {
		resp.Nodes[i].Leader = resp.Leader
	}
	return resp, nil
}

// NodeInfo implements backend.DiscoveryBackend: this front end.
func (s *Store) NodeInfo(ctx context.Context, _ bool) (wire.NodeStatus, error) {
	ns := wire.NodeStatus{ID: s.cfg.NodeID, Addr: s.cfg.Addr, State: "etcd-frontend"}
	gr, err := s.cli.Get(ctx, s.cfg.Prefix+"/", clientv3.WithCountOnly(), clientv3.WithSerializable())
	if err != nil {
		ns.Error = err.Error()
		return ns, nil
	}
	ns.AppliedIndex, ns.CommitIndex = uint64(gr.Header.Revision), uint64(gr.Header.Revision)
	s.lastOK.Store(time.Now().UnixNano())
	ns.Ready, ns.Freshness = true, s.Freshness()
	return ns, nil
}
