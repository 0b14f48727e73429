package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/discoverd/discoverd/internal/testport"
)

// etcdSystem runs the etcd server of go.mod (built from
// test/bench/etcdserver) with its defaults: 100 ms heartbeat, 1000 ms
// election, fsync on every WAL write.
type etcdSystem struct{}

func (etcdSystem) name() string { return "etcd" }

// keyPrefix is where the benchmark keeps instances: <prefix><service>/<addr>.
const keyPrefix = "/bench/"

func instanceKey(service, addr string) string { return keyPrefix + service + "/" + addr }

type etcdCluster struct {
	b          *bench
	names      []string
	clientURLs []string
	ps         []*proc
	dataDir    string
	admin      *clientv3.Client
}

func newEtcdClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Bounded like discoverd's connections (TCP keep-alive): a dead
		// member is noticed by the connection failing, not by waiting.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	})
}

func (s etcdSystem) start(ctx context.Context, b *bench, tag string) (cluster, error) {
	ports, err := testport.Pick(6)
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{b: b, dataDir: filepath.Join(b.dataDir, tag)}
	var peerURLs, initial []string
	for i := range 3 {
		c.names = append(c.names, fmt.Sprintf("e%d", i+1))
		c.clientURLs = append(c.clientURLs, fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		peerURLs = append(peerURLs, fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
		initial = append(initial, c.names[i]+"="+peerURLs[i])
	}
	for i := range 3 {
		dir := filepath.Join(c.dataDir, c.names[i])
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			c.stop()
			return nil, err
		}
		args := []string{"--name", c.names[i], "--data-dir", dir,
			"--listen-client-urls", c.clientURLs[i], "--advertise-client-urls", c.clientURLs[i],
			"--listen-peer-urls", peerURLs[i], "--initial-advertise-peer-urls", peerURLs[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--log-level", "error", "--enable-pprof"}
		p, err := b.procs.start(tag+"-"+c.names[i], b.etcdBin, args, filepath.Join(b.logDir, tag+"-"+c.names[i]+".log"))
		if err != nil {
			c.stop()
			return nil, err
		}
		c.ps = append(c.ps, p)
	}
	if c.admin, err = newEtcdClient(c.clientURLs); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// waitReady waits until every member answers Status and they agree on a
// leader, and a linearizable read succeeds.
func (c *etcdCluster) waitReady(ctx context.Context) error {
	return waitReady(ctx, "etcd cluster", c.ps, c.probe)
}

func (c *etcdCluster) probe(ctx context.Context) error {
	var leader uint64
	for _, ep := range c.clientURLs {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.admin.Status(cctx, ep)
		cancel()
		if err != nil {
			return fmt.Errorf("status %s: %w", ep, err)
		}
		if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return fmt.Errorf("%s sees leader %x", ep, st.Leader)
		}
		leader = st.Leader
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.admin.Get(cctx, "/bench-ready")
	return err
}

func (c *etcdCluster) procs() []*proc { return c.ps }

func (c *etcdCluster) restart(ctx context.Context, i int) error {
	p, err := c.b.procs.restart(c.ps[i])
	if err != nil {
		return err
	}
	c.ps[i] = p
	return c.waitReady(ctx)
}

func (c *etcdCluster) leader(ctx context.Context) (int, error) {
	var errs []error
	for i, ep := range c.clientURLs {
		if c.ps[i].exited() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.admin.Status(cctx, ep)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member reports itself leader: %w", errors.Join(errs...))
}

// heapInuse collects garbage on the member (--enable-pprof serves the
// profiler on its client URL) and reads go_memstats_heap_inuse_bytes from
// its /metrics.
func (c *etcdCluster) heapInuse(ctx context.Context, i int) (uint64, error) {
	if err := forceGC(ctx, c.clientURLs[i], nil); err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, c.clientURLs[i]+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("go_memstats_heap_inuse_bytes %q: %w", v, err)
			}
			return uint64(f), nil
		}
	}
	return 0, fmt.Errorf("%s/metrics: no go_memstats_heap_inuse_bytes (%v)", c.clientURLs[i], sc.Err())
}

func (c *etcdCluster) count(ctx context.Context, services []string) (int, error) {
	n := 0
	for _, svc := range services {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := c.admin.Get(cctx, keyPrefix+svc+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return 0, fmt.Errorf("count %s: %w", svc, err)
		}
		n += int(resp.Count)
	}
	return n, nil
}

// newClient returns a clientv3 client with all three endpoints (it balances
// across them itself; home and sticky do not apply).
func (c *etcdCluster) newClient(ctx context.Context, home int, sticky bool) (client, error) {
	cli, err := newEtcdClient(c.clientURLs)
	if err != nil {
		return nil, err
	}
	return &eclient{cli: cli}, nil
}

func (c *etcdCluster) stop() {
	if c.admin != nil {
		_ = c.admin.Close()
	}
	stopProcs(c.b, c.ps)
	_ = os.RemoveAll(c.dataDir)
}

// eclient is one go.etcd.io/etcd/client/v3 client.
type eclient struct {
	cli *clientv3.Client

	mu     sync.Mutex
	shared clientv3.LeaseID // granted once (TTL 3600 s) for registrations without a lease of their own
}

// value is what an instance's key holds, as discoverd's etcd backend writes it.
type value struct {
	Attrs     map[string]string `json:"attrs,omitempty"`
	TTLMillis int64             `json:"ttl_ms"`
}

func (c *eclient) warm(ctx context.Context) error {
	_, err := c.sharedLease(ctx)
	return err
}

func (c *eclient) sharedLease(ctx context.Context) (clientv3.LeaseID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shared != 0 {
		return c.shared, nil
	}
	resp, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		return 0, fmt.Errorf("grant shared lease: %w", err)
	}
	c.shared = resp.ID
	return c.shared, nil
}

func (c *eclient) register(ctx context.Context, in *instance, persist time.Duration) error {
	if persist <= 0 {
		return c.registerOnce(ctx, in)
	}
	// Retry on any error until it succeeds or persist has passed. The
	// client balances round-robin over the endpoints that are up, so a
	// retry goes to another member.
	pctx, cancel := context.WithTimeout(ctx, persist)
	defer cancel()
	var last error
	for attempt := 0; attempt < 100000 && pctx.Err() == nil; attempt++ {
		actx, acancel := context.WithTimeout(pctx, 5*time.Second)
		err := c.registerOnce(actx, in)
		acancel()
		if err == nil {
			return nil
		}
		last = err
		sleepCtx(pctx, 20*time.Millisecond)
	}
	if last == nil {
		last = pctx.Err()
	}
	return fmt.Errorf("gave up: %w", last)
}

func (c *eclient) registerOnce(ctx context.Context, in *instance) error {
	val, err := json.Marshal(value{Attrs: attrs, TTLMillis: in.ttl.Milliseconds()})
	if err != nil {
		return err
	}
	var lease clientv3.LeaseID
	if in.ownLease {
		resp, err := c.cli.Grant(ctx, int64(in.ttl/time.Second))
		if err != nil {
			return fmt.Errorf("grant: %w", err)
		}
		lease = resp.ID
	} else if lease, err = c.sharedLease(ctx); err != nil {
		return err
	}
	if _, err := c.cli.Put(ctx, instanceKey(in.service, in.addr), string(val), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	in.lease = int64(lease)
	return nil
}

func (c *eclient) heartbeat(ctx context.Context, ins []*instance) ([]bool, error) {
	if len(ins) != 1 {
		return nil, fmt.Errorf("etcd heartbeats one lease at a time, not %d", len(ins))
	}
	_, err := c.cli.KeepAliveOnce(ctx, clientv3.LeaseID(ins[0].lease))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return []bool{true}, nil
	}
	if err != nil {
		return nil, err
	}
	return []bool{false}, nil
}

// watch watches the service's prefix from the revision after the current one
// and returns once etcd has confirmed the watch (WithCreatedNotify).
func (c *eclient) watch(ctx context.Context, service string) (watcher, error) {
	prefix := keyPrefix + service + "/"
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	ch := c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithCreatedNotify())
	select {
	case wr, ok := <-ch:
		if !ok || wr.Err() != nil || !wr.Created {
			cancel()
			return nil, fmt.Errorf("watch %s not created: ok=%v err=%v", prefix, ok, wr.Err())
		}
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	return &ewatcher{ch: ch, cancel: cancel}, nil
}

func (c *eclient) close() { _ = c.cli.Close() }

type ewatcher struct {
	ch      clientv3.WatchChan
	cancel  context.CancelFunc
	pending []string
}

func (w *ewatcher) next(ctx context.Context) (string, error) {
	for range 100000 { // bounded; every response but progress notifications carries events
		if len(w.pending) > 0 {
			a := w.pending[0]
			w.pending = w.pending[1:]
			return a, nil
		}
		select {
		case wr, ok := <-w.ch:
			if !ok {
				return "", errors.New("watch channel closed")
			}
			if err := wr.Err(); err != nil {
				return "", err
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					k := string(ev.Kv.Key)
					w.pending = append(w.pending, k[strings.LastIndexByte(k, '/')+1:])
				}
			}
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "", errors.New("watch: too many responses without an event")
}

func (w *ewatcher) close() { w.cancel() }
