// Package workload drives a discoverd cluster the way the fault suite needs
// it: many services with a few clients each, doing registrations,
// unregistrations, heartbeats and default and consistent lists, clients
// racing compare-and-sets of two services' metadata (meta.go), TTL clients
// of which some stop heartbeating on purpose, clients that only ever talk to
// one follower, a reader on every node that reads it again as soon as it is
// back after a restart, and watchers that drop their stream and resume it on
// another node, and electors (Go clients) that win, hold and resign the
// leadership of one service (elector.go). Every operation is recorded with its call and return time and
// an outcome — ok, fail (definitely not applied) or unknown — for the
// checkers.
//
// Each operation is one attempt on one node over the native protocol
// (internal/rpcconn), never failed over to another, so Op.Node is the node
// that answered and the outcome is exactly what that node said (a node that
// forwards a write or a consistent read to the leader answers with the
// leader's reply). A read refused by a node that has not caught up since it
// started (not_ready) or that is behind the client (stale_node) is a fail:
// a read changes nothing. A client that gets an unknown outcome retires; a
// fresh client id takes its place.
package workload

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/history"
)

// Config shapes the load.
type Config struct {
	Services          int           // services checked for linearizability (TTL 1 h, no expiry)
	ClientsPerService int           // concurrent clients per such service (≤ 6 keeps porcupine fast)
	AddrsPerService   int           // instance addresses the clients of a service fight over
	FollowerOnly      float64       // share of those clients pinned to one node that was a follower at start
	TTLServices       int           // services of heartbeating instances
	TTLClients        int           // heartbeating instances per TTL service
	TTL               time.Duration // their TTL
	StopShare         float64       // share of TTL clients that stop heartbeating on purpose mid-run
	NodeReaders       int           // readers pinned to each node: default lists without MinIndex, retried promptly while the node is down
	Watchers          int           // watchers, spread over all services
	ResumeEvery       time.Duration // a watcher drops its stream and resumes on another node this often
	OpTimeout         time.Duration // one attempt's deadline
	Think             time.Duration // pause between a client's operations (randomized ±50%)
	Seed              int64
	MetaServices      int           // services (the first lin services) whose metadata meta clients work on
	MetaClients       int           // meta clients per such service, racing compare-and-sets
	Electors          int           // Go clients (client.Elect) standing for leadership of one service, elect-0
	ElectTTL          time.Duration // their registrations' TTL
	Storm             Storm         // a service most of whose clients go silent at once (storm.go)
	// TLS gives the nodes' TLS for an address (nil: plaintext).
	TLS func(addr string) *tls.Config
	// ClientTLS is the same TLS for the Go client, which verifies each
	// server by the host it dials (nil: plaintext).
	ClientTLS *tls.Config
	// Token is the ACL credential every client presents with each request
	// (nodes with -acl; "" without): the harness creates it with the rules
	// the workload needs (harness.WorkloadRules) and nothing revokes it.
	Token string
}

// DefaultConfig is a moderate load for a 3-node cluster on 2 cores.
func DefaultConfig() Config {
	return Config{Services: 4, ClientsPerService: 4, AddrsPerService: 3, FollowerOnly: 0.25,
		TTLServices: 2, TTLClients: 4, TTL: 2 * time.Second, StopShare: 0.25, NodeReaders: 1,
		Watchers: 6, ResumeEvery: 3 * time.Second, OpTimeout: 2 * time.Second, Think: 40 * time.Millisecond,
		MetaServices: 2, MetaClients: 3, Electors: 3, ElectTTL: 2 * time.Second, Seed: 1}
}

// Node is a node the workload may talk to.
type Node struct {
	ID   string
	Addr string
}

// Workload runs the clients and records what they did.
type Workload struct {
	cfg    Config
	nodes  []Node
	leader int // node index that led at the start (for follower-only clients)

	nextOp atomic.Int64
	mu     sync.Mutex
	ops    []history.Op

	watchers    []*watcher
	holdings    []history.Holding // under mu
	stopClients atomic.Bool
	clientsStop chan struct{} // closed by StopClients
	stopOnce    sync.Once
	stop        context.CancelFunc
	clients     sync.WaitGroup
	watchWG     sync.WaitGroup
	finalIndex  atomic.Uint64 // once set, watchers run until they reach it, then end
}

// New prepares a workload against nodes; leader is the index of the node
// that leads now.
func New(cfg Config, nodes []Node, leader int) *Workload {
	return &Workload{cfg: cfg, nodes: nodes, leader: leader, clientsStop: make(chan struct{})}
}

// LinServices and TTLServices name the services the workload uses.
func (w *Workload) LinServices() []string {
	var out []string
	for i := range w.cfg.Services {
		out = append(out, fmt.Sprintf("lin%d", i))
	}
	return out
}

func (w *Workload) TTLServiceNames() []string {
	var out []string
	for i := range w.cfg.TTLServices {
		out = append(out, fmt.Sprintf("ttl%d", i))
	}
	return out
}

// ElectServiceNames names the service the electors stand for (none without
// electors).
func (w *Workload) ElectServiceNames() []string {
	if w.cfg.Electors == 0 {
		return nil
	}
	return []string{"elect-0"}
}

// Start launches every client and watcher; they run until Stop.
func (w *Workload) Start(ctx context.Context) {
	ctx, w.stop = context.WithCancel(ctx)
	seed := uint64(w.cfg.Seed)
	for s, svc := range w.LinServices() {
		for c := range w.cfg.ClientsPerService {
			rng := rand.New(rand.NewPCG(seed, uint64(s*100+c+1)))
			pinned := -1
			if rng.Float64() < w.cfg.FollowerOnly && len(w.nodes) > 1 {
				pinned = (w.leader + 1 + rng.IntN(len(w.nodes)-1)) % len(w.nodes)
			}
			w.clients.Add(1)
			go func() {
				defer w.clients.Done()
				w.linClient(ctx, svc, fmt.Sprintf("%s-c%d", svc, c), rng, pinned)
			}()
		}
	}
	for s, svc := range w.MetaServiceNames() {
		for c := range w.cfg.MetaClients {
			rng := rand.New(rand.NewPCG(seed, uint64(50000+s*100+c)))
			pinned := -1
			if rng.Float64() < w.cfg.FollowerOnly && len(w.nodes) > 1 {
				pinned = (w.leader + 1 + rng.IntN(len(w.nodes)-1)) % len(w.nodes)
			}
			w.clients.Add(1)
			go func() {
				defer w.clients.Done()
				w.metaClient(ctx, svc, fmt.Sprintf("%s-m%d", svc, c), rng, pinned)
			}()
		}
	}
	for s, svc := range w.TTLServiceNames() {
		for c := range w.cfg.TTLClients {
			rng := rand.New(rand.NewPCG(seed, uint64(10000+s*100+c)))
			addr := fmt.Sprintf("10.%d.%d.%d:80", 100+s, c/250, c%250+1)
			w.clients.Add(1)
			go func() {
				defer w.clients.Done()
				w.ttlClient(ctx, svc, addr, fmt.Sprintf("%s-h%d", svc, c), rng, nil)
			}()
		}
	}
	for _, svc := range w.ElectServiceNames() {
		for e := range w.cfg.Electors {
			rng := rand.New(rand.NewPCG(seed, uint64(40000+e)))
			w.clients.Add(1)
			go func() {
				defer w.clients.Done()
				w.elector(ctx, svc, fmt.Sprintf("%s-e%d", svc, e), fmt.Sprintf("10.200.0.%d:80", e+1), rng)
			}()
		}
	}
	w.startStorm(ctx, seed)
	all := slices.Concat(w.LinServices(), w.TTLServiceNames(), w.StormServiceNames())
	for n := range w.nodes {
		for r := range w.cfg.NodeReaders {
			rng := rand.New(rand.NewPCG(seed, uint64(30000+n*100+r)))
			w.clients.Add(1)
			go func() {
				defer w.clients.Done()
				w.nodeReader(ctx, n, all, fmt.Sprintf("read-%s-r%d", w.nodes[n].ID, r), rng)
			}()
		}
	}
	for i := range w.cfg.Watchers {
		rng := rand.New(rand.NewPCG(seed, uint64(20000+i)))
		wt := &watcher{w: w, name: fmt.Sprintf("w%d", i), service: all[i%len(all)], rng: rng}
		w.watchers = append(w.watchers, wt)
		w.watchWG.Add(1)
		go func() {
			defer w.watchWG.Done()
			wt.run(ctx)
		}()
	}
}

// StopClients stops every client (not the watchers) and waits for them.
func (w *Workload) StopClients() {
	w.stopClients.Store(true)
	w.stopOnce.Do(func() { close(w.clientsStop) })
	w.clients.Wait()
}

// FinishWatchers lets every watcher run until it has delivered an index at
// least finalIndex (or until timeout), closes them, and waits.
func (w *Workload) FinishWatchers(finalIndex uint64, timeout time.Duration) {
	w.finalIndex.Store(max(finalIndex, 1))
	done := make(chan struct{})
	go func() { w.watchWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		w.stop()
		<-done
	}
	w.stop()
}

// History returns the recorded operations and watch sessions.
func (w *Workload) History() ([]history.Op, []history.WatchSession) {
	w.mu.Lock()
	ops := slices.Clone(w.ops)
	w.mu.Unlock()
	var sessions []history.WatchSession
	for _, wt := range w.watchers {
		sessions = append(sessions, wt.sessions...)
	}
	return ops, sessions
}

// Holdings returns the leaderships the electors held.
func (w *Workload) Holdings() []history.Holding {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.holdings)
}

func (w *Workload) record(op history.Op) {
	op.ID = w.nextOp.Add(1)
	w.mu.Lock()
	w.ops = append(w.ops, op)
	w.mu.Unlock()
}

func now() int64 { return time.Now().UnixNano() }

// outcome classifies a call's error.
func outcome(err error) (history.Outcome, string, string) {
	if err == nil {
		return history.OK, "", ""
	}
	if codes.NotApplied(err) {
		return history.Fail, string(codes.Of(err)), err.Error()
	}
	return history.Unknown, string(codes.Of(err)), err.Error()
}

// conns is one client's connections, one per node.
type conns struct {
	pool *rpcconn.Pool
}

func (w *Workload) newConns() *conns {
	return &conns{pool: rpcconn.NewPool(w.connOptions())}
}

// connOptions are the options of every connection a client opens: its
// dial timeout, TLS and, with ACLs on, the workload's token in each
// request's header.
func (w *Workload) connOptions() rpcconn.Options {
	opts := rpcconn.Options{DialTimeout: 500 * time.Millisecond, TLS: w.cfg.TLS}
	if token := w.cfg.Token; token != "" {
		opts.Token = func(context.Context) string { return token }
	}
	return opts
}

func (w *Workload) call(ctx context.Context, cs *conns, node int, method string, req, resp any) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	return cs.pool.Call(ctx, w.nodes[node].Addr, method, false, req, resp)
}

func (w *Workload) think(ctx context.Context, rng *rand.Rand) bool {
	d := w.cfg.Think/2 + time.Duration(rng.Int64N(int64(w.cfg.Think)+1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !w.stopClients.Load()
	case <-ctx.Done():
		return false
	}
}

func requestID(client string, rng *rand.Rand) string {
	return fmt.Sprintf("%s-%016x", client, rng.Uint64())
}

// linClient registers, unregisters and lists one service, one attempt per op.
func (w *Workload) linClient(ctx context.Context, svc, base string, rng *rand.Rand, pinned int) {
	cs := w.newConns()
	defer cs.pool.Close()
	gen := 0
	client := fmt.Sprintf("%s#%d", base, gen)
	// Like one Go client: it never reads a state older than what it has seen
	// itself. (Other clients' progress is unknown to it, so a stale read
	// across clients stays possible — and must not happen.)
	var seen uint64
	for w.think(ctx, rng) {
		node := pinned
		if node < 0 {
			node = rng.IntN(len(w.nodes))
		}
		addr := fmt.Sprintf("10.0.%d.%d:80", len(svc), rng.IntN(w.cfg.AddrsPerService)+1)
		op := history.Op{Client: client, Service: svc, Node: w.nodes[node].ID}
		var err error
		switch r := rng.Float64(); {
		case r < 0.35:
			op.Kind, op.Addr, op.TTLMillis = history.Register, addr, time.Hour.Milliseconds()
			op.Attrs = map[string]string{"v": fmt.Sprint(rng.IntN(1000))}
			op.RequestID = requestID(client, rng)
			var resp wire.WriteResponse
			op.Call = now()
			err = w.call(ctx, cs, node, wire.MethodRegister, &wire.RegisterRequest{Name: svc, Addr: addr, Attrs: op.Attrs,
				TTLMillis: op.TTLMillis, RequestID: op.RequestID}, &resp)
			op.Return, op.Index = now(), resp.Index
		case r < 0.60:
			op.Kind, op.Addr = history.Unregister, addr
			op.RequestID = requestID(client, rng)
			var resp wire.WriteResponse
			op.Call = now()
			err = w.call(ctx, cs, node, wire.MethodUnregister, &wire.UnregisterRequest{Name: svc, Addr: addr, RequestID: op.RequestID}, &resp)
			op.Return, op.Index = now(), resp.Index
		default:
			op.Kind = history.CList
			consistent := true
			if r > 0.90 {
				op.Kind, consistent = history.List, false
			}
			var resp wire.ListResponse
			op.Call = now()
			err = w.call(ctx, cs, node, wire.MethodList, &wire.ListRequest{Name: svc, Consistent: consistent, MinIndex: seen}, &resp)
			op.Return, op.Index = now(), resp.Index
			if err == nil {
				op.Result = addrs(resp.Instances)
			}
		}
		op.Outcome, op.Code, op.Err = outcome(err)
		if err == nil {
			seen = max(seen, op.Index)
		}
		w.record(op)
		if op.Outcome == history.Unknown {
			gen++
			client = fmt.Sprintf("%s#%d", base, gen) // this client retires
			seen = 0
		}
	}
}

// nodeReader reads one node again and again with default lists of random
// services and no MinIndex, as a client that knows nothing yet would (a new
// process): every answer is that node's own state, which must never go back
// to an older index (check.MonotonicReads), across restarts too. After a read
// that did not answer — the node is down, restarting, not caught up yet
// (not_ready) — it tries again after a short pause instead of thinking, so
// its first reads reach a restarted node as soon as it listens.
func (w *Workload) nodeReader(ctx context.Context, node int, services []string, base string, rng *rand.Rand) {
	cs := w.newConns()
	defer cs.pool.Close()
	gen := 0
	client := fmt.Sprintf("%s#%d", base, gen)
	pause := w.think
	for pause(ctx, rng) {
		op := history.Op{Client: client, Kind: history.List, Service: services[rng.IntN(len(services))], Node: w.nodes[node].ID}
		var resp wire.ListResponse
		op.Call = now()
		err := w.call(ctx, cs, node, wire.MethodList, &wire.ListRequest{Name: op.Service}, &resp)
		op.Return, op.Index = now(), resp.Index
		op.Outcome, op.Code, op.Err = outcome(err)
		if err == nil {
			op.Result = addrs(resp.Instances)
		}
		w.record(op)
		pause = w.think
		switch op.Outcome {
		case history.Fail:
			pause = w.retrySoon
		case history.Unknown:
			gen++
			client = fmt.Sprintf("%s#%d", base, gen) // this client retires
			pause = w.retrySoon
		}
	}
}

// retrySoon pauses 50 ms: how soon a node reader tries again after a read
// that did not answer.
func (w *Workload) retrySoon(ctx context.Context, _ *rand.Rand) bool {
	return sleep(ctx, 50*time.Millisecond) && !w.stopClients.Load()
}

// addrs returns the instances' addresses, sorted (never nil).
func addrs(ins []wire.Instance) []string {
	out := []string{}
	for _, in := range ins {
		out = append(out, in.Addr)
	}
	slices.Sort(out)
	return out
}

// ttlClient keeps one instance alive with heartbeats every ~TTL/3 to random
// nodes; it registers again when told the instance is gone, and may stop
// heartbeating on purpose (recorded as a Stop op) and end. With a plan (a
// storm client), it stops when the plan says, and is silent during its cut.
func (w *Workload) ttlClient(ctx context.Context, svc, addr, base string, rng *rand.Rand, plan *silence) {
	cs := w.newConns()
	defer cs.pool.Close()
	client := base
	ttl := w.cfg.TTL
	stopAt := time.Time{}
	if rng.Float64() < w.cfg.StopShare {
		stopAt = time.Now().Add(ttl + time.Duration(rng.Int64N(int64(4*ttl))))
	}
	if plan != nil {
		stopAt = plan.stopAt
	}
	registered := false
	for !w.stopClients.Load() && ctx.Err() == nil {
		if plan != nil && plan.cutOff(ctx) {
			continue // silent until the cut ends: nothing reached the cluster
		}
		node := rng.IntN(len(w.nodes))
		if !registered {
			op := history.Op{Client: client, Kind: history.Register, Service: svc, Addr: addr, TTLMillis: ttl.Milliseconds(),
				RequestID: requestID(client, rng), Node: w.nodes[node].ID}
			var resp wire.WriteResponse
			op.Call = now()
			err := w.call(ctx, cs, node, wire.MethodRegister, &wire.RegisterRequest{Name: svc, Addr: addr, TTLMillis: op.TTLMillis, RequestID: op.RequestID}, &resp)
			op.Return, op.Index = now(), resp.Index
			op.Outcome, op.Code, op.Err = outcome(err)
			w.record(op)
			registered = err == nil
			if !registered && !sleep(ctx, retry(rng)) {
				return
			}
			continue
		}
		if !stopAt.IsZero() && time.Now().After(stopAt) {
			w.record(history.Op{Client: client, Kind: history.Stop, Service: svc, Addr: addr, TTLMillis: ttl.Milliseconds(),
				Node: "-", Call: now(), Return: now(), Outcome: history.OK})
			return
		}
		op := history.Op{Client: client, Kind: history.Heartbeat, Service: svc, Addr: addr, TTLMillis: ttl.Milliseconds(), Node: w.nodes[node].ID}
		var resp wire.HeartbeatResponse
		op.Call = now()
		err := w.call(ctx, cs, node, wire.MethodHeartbeat, &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: svc, Addr: addr}}}, &resp)
		op.Return = now()
		if err == nil && len(resp.Results) == 1 {
			err = resp.Results[0].Err()
		}
		op.Outcome, op.Code, op.Err = outcome(err)
		w.record(op)
		wait := ttl/3 - ttl/30 + time.Duration(rng.Int64N(int64(ttl/15)+1)) // TTL/3 ± 10%
		switch {
		case err == nil:
		case codes.Of(err) == codes.CodeNotFound:
			registered = false // expired while cut off: register again
			wait = 0
		default:
			wait = retry(rng)
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

func retry(rng *rand.Rand) time.Duration {
	return 200*time.Millisecond + time.Duration(rng.Int64N(int64(200*time.Millisecond)))
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
