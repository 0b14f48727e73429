package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/testport"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/wire"
)

// discoverdSystem runs `discoverd server` processes with their production
// defaults (500 ms Raft timings, fsync on every log write); with tls, with
// TLS on as a production cluster runs (discoverd-tls: Raft mutual TLS,
// clients with a client certificate); with acl, with ACLs on and no TLS
// (discoverd-acl: -acl, bootstrapped, every client presenting a token with
// aclClientRules, the bench's own calls the management token).
//
// With wal, the Raft log in hashicorp/raft-wal's segments instead of bbolt
// (discoverd-wal: -raft-log-store wal), on the workloads the log store
// moves (walWorkloads).
type discoverdSystem struct {
	tls, acl, wal bool
	extra         []string // flags of this system's servers, before -discoverd-args (the scale workload's)
}

func (s discoverdSystem) name() string {
	switch {
	case s.tls:
		return "discoverd-tls"
	case s.acl:
		return "discoverd-acl"
	case s.wal:
		return "discoverd-wal"
	}
	return "discoverd"
}

// walWorkloads are the workloads discoverd-wal runs: those whose writes
// wait for the log's fsyncs, and the failover, whose new leader appends
// to it.
var walWorkloads = []string{"registration", "heartbeat", "failover"}

// aclClientRules are the rules of the token every client of discoverd-acl
// presents: what a service's own clients would have.
var aclClientRules = []string{`service "*" write`}

// aclWorkloads are the workloads discoverd-acl runs: what the check of a
// token costs is measured on the calls it is made for, writes and
// heartbeats.
var aclWorkloads = []string{"registration", "heartbeat"}

// isDiscoverd reports whether a system is discoverd, with TLS or without.
func isDiscoverd(sys string) bool { return strings.HasPrefix(sys, "discoverd") }

type discoverdCluster struct {
	b       *bench
	ids     []string
	addrs   []string
	debug   []string // profiler base URLs (-http-addr with -enable-pprof)
	dns     []string // -dns-addr of each node (the dns workload)
	ps      []*proc
	dataDir string
	tls     func(addr string) *tls.Config // clients' TLS; nil without
	admin   *rpcconn.Pool                 // NodeInfo, counts; with ACLs, the management token
	// With ACLs on (discoverd-acl): the management token and the clients'
	// token, set once by the first probe that gets them.
	acl                bool
	mgmt, clientToken  atomic.Value // string
	bootstrapAttempted bool         // a bootstrap was sent and its answer lost
}

func (s discoverdSystem) start(ctx context.Context, b *bench, tag string) (cluster, error) {
	ports, err := testport.Pick(9)
	if err != nil {
		return nil, err
	}
	c := &discoverdCluster{b: b, dataDir: filepath.Join(b.dataDir, tag), acl: s.acl}
	c.mgmt.Store("")
	c.clientToken.Store("")
	var peers []string
	for i, p := range ports[:3] {
		c.ids = append(c.ids, fmt.Sprintf("n%d", i+1))
		c.addrs = append(c.addrs, fmt.Sprintf("127.0.0.1:%d", p))
		peers = append(peers, c.ids[i]+"="+c.addrs[i])
	}
	var tlsArgs func(i int) []string
	if s.tls {
		var err error
		if tlsArgs, c.tls, err = benchTLS(filepath.Join(c.dataDir, "tls"), c.ids); err != nil {
			return nil, err
		}
	}
	c.admin = rpcconn.NewPool(rpcconn.Options{TLS: c.tls, Token: func(context.Context) string { return c.mgmt.Load().(string) }})
	for i := range c.ids {
		dir := filepath.Join(c.dataDir, c.ids[i])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			c.stop()
			return nil, err
		}
		httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[3+i])
		args := []string{"server", "-id", c.ids[i], "-addr", c.addrs[i], "-data-dir", dir,
			"-peers", strings.Join(peers, ","), "-log-level", "warn",
			"-http-addr", httpAddr, "-enable-pprof", "-http-max-conns", "4096", "-dns-addr", fmt.Sprintf("127.0.0.1:%d", ports[6+i])}
		c.dns = append(c.dns, fmt.Sprintf("127.0.0.1:%d", ports[6+i]))
		scheme := "http"
		if tlsArgs != nil {
			args = append(args, tlsArgs(i)...)
			scheme = "https" // the HTTP listener serves HTTPS with the node's certificate
		}
		if s.acl {
			args = append(args, "-acl")
		}
		if s.wal {
			args = append(args, "-raft-log-store", "wal")
		}
		args = append(args, s.extra...)
		args = append(args, b.discoverdArgs...)
		c.debug = append(c.debug, scheme+"://"+httpAddr)
		b.vlogf("[discoverd] %s-%s: profiler at %s://%s/debug/pprof/", tag, c.ids[i], scheme, httpAddr)
		p, err := b.procs.start(tag+"-"+c.ids[i], b.discoverdBin, args, filepath.Join(b.logDir, tag+"-"+c.ids[i]+".log"))
		if err != nil {
			c.stop()
			return nil, err
		}
		c.ps = append(c.ps, p)
	}
	if err := c.waitReady(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// waitReady waits until all three nodes answer and agree on a leader, and a
// consistent read through that leader (which fails until the leader has
// taken office) succeeds.
func (c *discoverdCluster) waitReady(ctx context.Context) error {
	return waitReady(ctx, "discoverd cluster", c.ps, c.probe)
}

func (c *discoverdCluster) probe(ctx context.Context) error {
	leader := ""
	for i := range c.addrs {
		st, err := c.nodeInfo(ctx, i)
		if err != nil {
			return err
		}
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			return fmt.Errorf("node %s sees leader %q", st.ID, st.Leader)
		}
		leader = st.Leader
	}
	li := -1
	for i, id := range c.ids {
		if id == leader {
			li = i
		}
	}
	if li < 0 {
		return fmt.Errorf("unknown leader %q", leader)
	}
	if c.acl {
		if err := c.bootstrapACL(ctx, li); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var resp wire.ListResponse
	return c.admin.Call(cctx, c.addrs[li], wire.MethodList, false, &wire.ListRequest{Name: "bench-ready", Consistent: true}, &resp)
}

// bootstrapACL bootstraps the cluster's ACLs through node li and creates
// the clients' token, unless done already (a restart probes again). A
// bootstrap whose answer was lost cannot be repeated — a second one is
// refused and the first one's secret is gone — so the cluster cannot be
// used: the error says so, and the bench starts another one.
func (c *discoverdCluster) bootstrapACL(ctx context.Context, li int) error {
	call := func(method string, req, resp any) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return c.admin.Call(cctx, c.addrs[li], method, false, req, resp)
	}
	if c.mgmt.Load().(string) == "" {
		var res wire.ACLTokenSecret
		err := call(wire.MethodACLBootstrap, &wire.ACLBootstrapRequest{}, &res)
		if err != nil {
			if errors.Is(err, codes.ErrRefused) && c.bootstrapAttempted {
				return fmt.Errorf("acl bootstrap: %w, after an attempt whose answer was lost: the management token is unknown", err)
			}
			if !codes.NotApplied(err) {
				c.bootstrapAttempted = true
			}
			return fmt.Errorf("acl bootstrap: %w", err)
		}
		c.mgmt.Store(res.Secret)
	}
	if c.clientToken.Load().(string) == "" {
		var res wire.ACLTokenSecret
		if err := call(wire.MethodACLTokenCreate, &wire.ACLTokenCreateRequest{Description: "bench clients", Rules: aclClientRules}, &res); err != nil {
			return fmt.Errorf("create the clients' token: %w", err)
		}
		c.clientToken.Store(res.Secret)
	}
	return nil
}

func (c *discoverdCluster) nodeInfo(ctx context.Context, i int) (*wire.NodeStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var st wire.NodeStatus
	if err := c.admin.Call(cctx, c.addrs[i], wire.MethodNodeInfo, false, &wire.NodeInfoRequest{}, &st); err != nil {
		return nil, fmt.Errorf("NodeInfo %s: %w", c.addrs[i], err)
	}
	return &st, nil
}

// waitApplied waits (up to 10 s) until every node's local state lists n
// instances of service, so that reads measured from any node find them all
// rather than racing the replication of the setup's registrations.
func (c *discoverdCluster) waitApplied(ctx context.Context, service string, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for i, addr := range c.addrs {
		for {
			cctx, cancel := context.WithTimeout(ctx, opTimeout)
			var resp wire.ListResponse
			err := c.admin.Call(cctx, addr, wire.MethodList, false, &wire.ListRequest{Name: service}, &resp)
			cancel()
			if err == nil && len(resp.Instances) == n {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("node %s does not list the %d instances of %s after 10s (%d, %v)", c.ids[i], n, service, len(resp.Instances), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (c *discoverdCluster) procs() []*proc { return c.ps }

func (c *discoverdCluster) restart(ctx context.Context, i int) error {
	p, err := c.b.procs.restart(c.ps[i])
	if err != nil {
		return err
	}
	c.ps[i] = p
	return c.waitReady(ctx)
}

func (c *discoverdCluster) leader(ctx context.Context) (int, error) {
	var errs []error
	for i := range c.addrs {
		if c.ps[i].exited() {
			continue
		}
		st, err := c.nodeInfo(ctx, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.State == "Leader" {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no node reports state Leader: %w", errors.Join(errs...))
}

func (c *discoverdCluster) heapInuse(ctx context.Context, i int) (uint64, error) {
	var tlsCfg *tls.Config
	if c.tls != nil {
		tlsCfg = c.tls(strings.TrimPrefix(c.debug[i], "https://"))
	}
	if err := forceGC(ctx, c.debug[i], tlsCfg); err != nil {
		return 0, err
	}
	st, err := c.nodeInfo(ctx, i)
	if err != nil {
		return 0, err
	}
	if st.HeapInuse == 0 {
		return 0, fmt.Errorf("node %s: NodeInfo carries no heap_inuse_bytes", st.ID)
	}
	return st.HeapInuse, nil
}

func (c *discoverdCluster) count(ctx context.Context, services []string) (int, error) {
	cl := &dclient{addrs: c.addrs, pool: c.admin, home: 0}
	n := 0
	for _, svc := range services {
		var resp wire.ListResponse
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := cl.persistCall(cctx, wire.MethodList, &wire.ListRequest{Name: svc, Consistent: true}, &resp)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("consistent List %s: %w", svc, err)
		}
		n += len(resp.Instances)
	}
	return n, nil
}

func (c *discoverdCluster) newClient(ctx context.Context, home int, sticky bool) (client, error) {
	opts := rpcconn.Options{TLS: c.tls}
	if token := c.clientToken.Load().(string); token != "" {
		opts.Token = func(context.Context) string { return token }
	}
	return &dclient{addrs: c.addrs, pool: rpcconn.NewPool(opts), home: home % len(c.addrs), sticky: sticky}, nil
}

func (c *discoverdCluster) stop() {
	c.admin.Close()
	stopProcs(c.b, c.ps)
	_ = os.RemoveAll(c.dataDir)
}

// dclient speaks the native protocol through internal/rpcconn, one
// connection per node it uses.
type dclient struct {
	addrs  []string
	pool   *rpcconn.Pool
	home   int
	sticky bool
}

func (c *dclient) warm(ctx context.Context) error {
	targets := []int{c.home}
	if !c.sticky {
		targets = []int{0, 1, 2}
	}
	for _, i := range targets {
		if _, err := c.pool.Get(ctx, c.addrs[i]); err != nil {
			return err
		}
	}
	return nil
}

// pick returns the node for the next call: home if sticky, else random.
func (c *dclient) pick() int {
	if c.sticky {
		return c.home
	}
	return mrand.IntN(len(c.addrs))
}

// call makes one attempt and, after a retryable error, one quick retry on
// another node, as the Go client would move on (without its 200–400 ms pause:
// a benchmark wants to see the error, not wait it out).
func (c *dclient) call(ctx context.Context, method string, req, resp any) error {
	i := c.pick()
	err := c.pool.Call(ctx, c.addrs[i], method, false, req, resp)
	if err == nil || !codes.Retryable(err) || ctx.Err() != nil {
		return err
	}
	j := (i + 1 + mrand.IntN(len(c.addrs)-1)) % len(c.addrs)
	return c.pool.Call(ctx, c.addrs[j], method, false, req, resp)
}

// persistCall retries on any error, each time on the next node, until it
// succeeds or ctx ends. Each attempt is bounded by 5 s.
func (c *dclient) persistCall(ctx context.Context, method string, req, resp any) error {
	i := c.pick()
	var last error
	for attempt := 0; attempt < 100000 && ctx.Err() == nil; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.pool.Call(actx, c.addrs[i], method, false, req, resp)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, codes.ErrInvalidArgument) || errors.Is(err, codes.ErrTooLarge) {
			return err // our own bug: retrying cannot help
		}
		last = err
		i = (i + 1) % len(c.addrs)
		sleepCtx(ctx, 20*time.Millisecond)
	}
	if last == nil {
		last = ctx.Err()
	}
	return fmt.Errorf("gave up: %w", last)
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (c *dclient) register(ctx context.Context, in *instance, persist time.Duration) error {
	req := &wire.RegisterRequest{Name: in.service, Addr: in.addr, Attrs: attrs,
		TTLMillis: in.ttl.Milliseconds(), RequestID: newRequestID()}
	var resp wire.WriteResponse
	if persist > 0 {
		pctx, cancel := context.WithTimeout(ctx, persist)
		defer cancel()
		return c.persistCall(pctx, wire.MethodRegister, req, &resp)
	}
	return c.call(ctx, wire.MethodRegister, req, &resp)
}

func (c *dclient) heartbeat(ctx context.Context, ins []*instance) ([]bool, error) {
	req := &wire.HeartbeatRequest{Instances: make([]wire.InstanceKey, len(ins))}
	for i, in := range ins {
		req.Instances[i] = wire.InstanceKey{Name: in.service, Addr: in.addr}
	}
	var resp wire.HeartbeatResponse
	if err := c.call(ctx, wire.MethodHeartbeat, req, &resp); err != nil {
		return nil, err
	}
	if len(resp.Results) != len(ins) {
		return nil, fmt.Errorf("heartbeat: %d results for %d instances", len(resp.Results), len(ins))
	}
	nf := make([]bool, len(ins))
	for i, r := range resp.Results {
		if err := r.Err(); err != nil {
			if !errors.Is(err, codes.ErrNotFound) {
				return nil, fmt.Errorf("heartbeat %s: %w", ins[i].addr, err)
			}
			nf[i] = true
		}
	}
	return nf, nil
}

// watch opens a Watch stream from index 0 on the home node and reads the
// initial state block up to its current marker.
func (c *dclient) watch(ctx context.Context, service string) (watcher, error) {
	conn, err := c.pool.Get(ctx, c.addrs[c.home])
	if err != nil {
		return nil, err
	}
	st, err := conn.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: service})
	if err != nil {
		return nil, err
	}
	w := &dwatcher{st: st}
	for range 1000 { // the service is empty: one frame, maybe a keepalive first
		var evs wire.WatchEvents
		if err := st.Recv(ctx, &evs); err != nil {
			st.Close()
			return nil, fmt.Errorf("watch %s: %w", service, err)
		}
		for i, e := range evs.Events {
			if e.Kind == wire.KindCurrent {
				w.pending = append(w.pending, evs.Events[i+1:]...)
				return w, nil
			}
		}
	}
	st.Close()
	return nil, fmt.Errorf("watch %s: no current marker", service)
}

func (c *dclient) close() { c.pool.Close() }

type dwatcher struct {
	st      *rpcconn.Stream
	pending []wire.Event
}

func (w *dwatcher) next(ctx context.Context) (string, error) {
	for range 100000 { // bounded; keepalives come every 2 s
		for len(w.pending) > 0 {
			e := w.pending[0]
			w.pending = w.pending[1:]
			switch e.Kind {
			case wire.KindUp:
				return e.Addr, nil
			case wire.KindResync:
				return "", errors.New("watch resynced: history lost")
			}
		}
		var evs wire.WatchEvents
		if err := w.st.Recv(ctx, &evs); err != nil {
			return "", err
		}
		w.pending = evs.Events
	}
	return "", errors.New("watch: too many frames without an event")
}

func (w *dwatcher) close() { w.st.Close() }

// logAppends reads every node's Raft log append counters.
func (c *discoverdCluster) logAppends(ctx context.Context) [][3]uint64 {
	out := make([][3]uint64, len(c.addrs))
	for i := range c.addrs {
		if st, err := c.nodeInfo(ctx, i); err == nil {
			out[i] = [3]uint64{st.LogAppends, st.LogEntries, st.LogAppendUS}
		}
	}
	return out
}

// appendExtra describes the log appends between two readings: per node,
// entries per append and mean append time.
func appendExtra(before, after [][3]uint64, writes int) (entriesPerAppend, writesPerAppend, msPerAppend []float64) {
	for i := range before {
		n := float64(after[i][0] - before[i][0])
		if n == 0 {
			entriesPerAppend, writesPerAppend, msPerAppend = append(entriesPerAppend, 0), append(writesPerAppend, 0), append(msPerAppend, 0)
			continue
		}
		entriesPerAppend = append(entriesPerAppend, round2(float64(after[i][1]-before[i][1])/n))
		writesPerAppend = append(writesPerAppend, round2(float64(writes)/n))
		msPerAppend = append(msPerAppend, round2(float64(after[i][2]-before[i][2])/n/1000))
	}
	return entriesPerAppend, writesPerAppend, msPerAppend
}

// tlsFor is the TLS configuration for a client connection to addr (nil
// without TLS).
func (c *discoverdCluster) tlsFor(addr string) *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls(addr)
}

// benchTLS makes a CA, a server certificate per node (for 127.0.0.1) and a
// client certificate in dir, and returns each node's TLS flags and the
// clients' TLS option.
func benchTLS(dir string, ids []string) (func(i int) []string, func(string) *tls.Config, error) {
	ca, err := tlsutil.NewCA(tlsutil.DefaultCluster, 2)
	if err != nil {
		return nil, nil, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := tlsutil.WriteNew(caFile, ca.CertPEM); err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		p, err := ca.Issue(tlsutil.CertRequest{Server: true, Name: id, Hosts: []string{"127.0.0.1"}, Days: 2})
		if err != nil {
			return nil, nil, err
		}
		if err := tlsutil.WriteNew(filepath.Join(dir, id+".pem"), p.CertPEM); err != nil {
			return nil, nil, err
		}
		if err := tlsutil.WriteNew(filepath.Join(dir, id+"-key.pem"), p.KeyPEM); err != nil {
			return nil, nil, err
		}
	}
	p, err := ca.Issue(tlsutil.CertRequest{Name: "bench", Days: 2})
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, nil, err
	}
	pool, err := tlsutil.LoadPool(caFile)
	if err != nil {
		return nil, nil, err
	}
	args := func(i int) []string {
		base := filepath.Join(dir, ids[i])
		return []string{"-tls-ca", caFile, "-tls-cert", base + ".pem", "-tls-key", base + "-key.pem"}
	}
	return args, rpcconn.ForServer(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}}), nil
}

// addNode starts one more `discoverd server`, id, in the cluster's data dir
// on a new loopback port, with args after its identity (the replicas
// workload: -join … -nonvoter), and counts it among the cluster's nodes
// (clients, leader, stop) at once: waiting until it is a member is the
// caller's. Without TLS only (the run's certificates name the first three
// nodes), and without a profiler: heapInuse is for the first three.
func (c *discoverdCluster) addNode(id string, args ...string) error {
	if c.tls != nil {
		return fmt.Errorf("add node %s: not with TLS (the run's certificates name n1-n3 only)", id)
	}
	ports, err := testport.Pick(1)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	dir := filepath.Join(c.dataDir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tag := filepath.Base(c.dataDir) // start named it after the cluster's tag
	full := append([]string{"server", "-id", id, "-addr", addr, "-data-dir", dir, "-log-level", "warn"}, args...)
	full = append(full, c.b.discoverdArgs...)
	p, err := c.b.procs.start(tag+"-"+id, c.b.discoverdBin, full, filepath.Join(c.b.logDir, tag+"-"+id+".log"))
	if err != nil {
		return err
	}
	c.ids, c.addrs, c.ps = append(c.ids, id), append(c.addrs, addr), append(c.ps, p)
	return nil
}

// snapshotDir is where node i's snapshots are: raftnode keeps its snapshot
// store in <data dir>/snapshots, and hashicorp/raft's FileSnapshotStore
// puts its snapshots in a snapshots directory of its own there.
func (c *discoverdCluster) snapshotDir(i int) string {
	return filepath.Join(c.dataDir, c.ids[i], "snapshots", "snapshots")
}

// takeSnapshot has node i (the leader) take a snapshot for a backup
// (SnapshotSave) and returns the time to the stream's first frame — a
// barrier, the snapshot written to the leader's snapshot store, and read
// through once for the backup's checksum — and the backup file's size the
// frame announces. It reads no further: it closes the connection, which
// ends the leader's sending. (A bench client decodes a 256 KiB frame of the
// stream in ~0.1 s — wire.Handle's MaxInitLen makes the decoder grow the
// byte slice in small steps — so reading a large backup to its end would
// take minutes, and overflow the stream's 64-frame buffer meanwhile.)
func (c *discoverdCluster) takeSnapshot(ctx context.Context, i int) (taken time.Duration, size uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	pool := rpcconn.NewPool(rpcconn.Options{TLS: c.tls, Token: func(context.Context) string { return c.mgmt.Load().(string) }})
	defer pool.Close()
	conn, err := pool.Get(ctx, c.addrs[i])
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	st, err := conn.Stream(ctx, wire.MethodSnapshotSave, &wire.SnapshotSaveRequest{})
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	var chunk wire.SnapshotChunk
	if err := st.Recv(ctx, &chunk); err != nil {
		return 0, 0, fmt.Errorf("SnapshotSave from %s: %w", c.addrs[i], err)
	}
	if chunk.Size == 0 {
		return 0, 0, fmt.Errorf("SnapshotSave from %s: the first frame gives no size", c.addrs[i])
	}
	return time.Since(start), chunk.Size, nil
}

// snapshotOnDisk describes the newest snapshot in a node's snapshot store
// (hashicorp/raft's FileSnapshotStore: <term>-<index>-<ms>/, the
// milliseconds those of its creation; meta.json is written once state.bin
// is complete and synced).
type snapshotOnDisk struct {
	index   uint64
	size    int64         // state.bin
	persist time.Duration // created → meta.json written
}

// newestSnapshot reads the newest complete snapshot in dir.
func newestSnapshot(dir string) (snapshotOnDisk, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return snapshotOnDisk{}, err
	}
	var best snapshotOnDisk
	var bestMS int64 = -1
	for _, e := range entries {
		parts := strings.Split(e.Name(), "-")
		if !e.IsDir() || len(parts) != 3 {
			continue
		}
		index, err1 := strconv.ParseUint(parts[1], 10, 64)
		ms, err2 := strconv.ParseInt(parts[2], 10, 64)
		if err1 != nil || err2 != nil || ms <= bestMS {
			continue // a .tmp one, still being written, does not parse
		}
		state, err := os.Stat(filepath.Join(dir, e.Name(), "state.bin"))
		if err != nil {
			continue
		}
		meta, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		best, bestMS = snapshotOnDisk{index: index, size: state.Size(), persist: meta.ModTime().Sub(time.UnixMilli(ms))}, ms
	}
	if bestMS < 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return snapshotOnDisk{}, fmt.Errorf("no complete snapshot in %s (%d entries: %s)", dir, len(names), strings.Join(names, ", "))
	}
	return best, nil
}

// metrics reads node i's /metrics and returns the values of the series
// named (a name with its labels as the exposition writes them, e.g.
// `discoverd_instances_removed_total{reason="expired"}`).
func (c *discoverdCluster) metrics(ctx context.Context, i int, series ...string) (map[string]float64, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, c.debug[i]+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	hc := http.DefaultClient
	if c.tls != nil {
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls(strings.TrimPrefix(c.debug[i], "https://"))}}
		defer hc.CloseIdleConnections()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", c.ids[i], err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", c.ids[i], err)
	}
	return parseMetrics(string(body), series...)
}

// parseMetrics finds each series' value in a Prometheus text exposition.
func parseMetrics(text string, series ...string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		for _, s := range series {
			if v, ok := strings.CutPrefix(line, s+" "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					return nil, fmt.Errorf("metric %s: %w", s, err)
				}
				out[s] = f
			}
		}
	}
	for _, s := range series {
		if _, ok := out[s]; !ok {
			return nil, fmt.Errorf("no metric %s", s)
		}
	}
	return out, nil
}
