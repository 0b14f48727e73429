// Package server is the composition root of one discoverd node: it wires
// the shared listener and its protocol mux, the FSM, the Raft node, the TTL
// tracker, the Raft-backed DiscoveryBackend and the RPC server together —
// or, with the etcd backend, the RPC server over etcd — and takes them down
// again in order. cmd/discoverd builds a Config from flags and calls Start;
// in-process cluster tests call Start through server/servertest.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/backend/etcdstore"
	"github.com/discoverd/discoverd/backend/raftstore"
	"github.com/discoverd/discoverd/dnsserver"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/rpc"
	"github.com/discoverd/discoverd/ttl"
)

// Config is everything a node needs.
type Config struct {
	// Raft holds the node's id, advertised address, data dir, peers and timings.
	Raft raftnode.Config
	// BindAddr is the host:port to listen on; empty means Raft.Addr.
	BindAddr string
	// Listener, if set, is used instead of listening on BindAddr (tests).
	Listener net.Listener
	// FSM bounds the state machine's memory.
	FSM fsm.Config
	// TTL configures the leader's heartbeat tracker.
	TTL ttl.Config
	// Store tunes the Raft-backed DiscoveryBackend.
	Store raftstore.Config
	// RPC tunes the protocol server.
	RPC rpc.Config
	// Journal, if set, is a file every applied entry is appended to as a
	// JSON line (testing and forensics; see journal.go).
	Journal string
	// Clock, if set, replaces the TTL tracker's clock (fault-injection builds).
	Clock ttl.Clock
	// Backend is the store: "raft" (default, the built-in Raft store) or
	// "etcd" (Etcd says where; the node is a stateless front end and
	// Raft, FSM, TTL and Journal settings do not apply).
	Backend string
	// Etcd configures the etcd backend.
	Etcd etcdstore.Config
	// TLS, if set, makes the port TLS and the node's connections to its
	// peers (Raft, forwarding, status) mutual TLS; a Raft connection is
	// accepted only from a certificate naming a server of the cluster.
	// Nil: plaintext (cmd/discoverd allows it on loopback, or with -insecure).
	TLS *tlsutil.Store
	// TLSReload is how often the TLS files are checked for a change (they
	// are reloaded when one changed). Default 5 s.
	TLSReload time.Duration
	// Join lists members' addresses a new node asks to be added through
	// (server -join): with a new data dir and an id that Raft.Peers does
	// not name, the node does not bootstrap; it asks them until one adds
	// it, as a voter (promoted once caught up) or, with JoinNonVoter, as a
	// non-voter.
	Join         []string
	JoinNonVoter bool
	// LeaveOnStop makes a graceful stop remove this node from the cluster
	// once it has handed leadership over.
	LeaveOnStop bool
	// DeadServerAfter, if positive, makes the leader remove a member that
	// has failed for longer (backend/raftstore/cleanup.go).
	DeadServerAfter time.Duration
	// ACL turns access control on (server -acl, docs/acl.md): every call
	// on every interface is checked against the caller's token, default
	// deny. The Raft store only.
	ACL bool
	// ACLToken is the token this node presents for its own calls to the
	// cluster — asking to join, leaving on stop, an address change — which
	// need operator write when ACLs are on.
	ACLToken string
	// Mux bounds the port's connections (its TLS and Authorize come from TLS).
	Mux mux.Config
	// HTTP configures the HTTP listener: health, metrics, profiler (http.go).
	HTTP HTTPConfig
	// DNS configures the DNS listener (dns.go, package dnsserver).
	DNS    dnsserver.Config
	Logger *slog.Logger
}

// Backend names.
const (
	BackendRaft = "raft"
	BackendEtcd = "etcd"
)

// Server is one running node.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	mux     *mux.Mux
	fsm     *fsm.FSM
	node    *raftnode.Node
	tracker *ttl.Tracker
	store   *raftstore.Store
	rpc     *rpc.Server
	// be is what clients reach on every interface: the store, or with
	// ACLs on the guard over it.
	be    backend.DiscoveryBackend
	guard *acl.Guard
	pool  *rpcconn.Pool
	// peerPool dials the other nodes' peer protocol; deadlines serves it.
	peerPool  *rpcconn.Pool
	deadlines *raftstore.Deadlines
	journal   *journalWriter
	etcd      *etcdstore.Store  // the etcd backend, instead of all of the above but rpc
	http      *httpServer       // the HTTP listener, if any (http.go)
	dns       *dnsserver.Server // the DNS listener, if any (dns.go)

	stopTracker context.CancelFunc
	stopMembers context.CancelFunc // ends joining and the dead-server cleanup
	stopTLS     context.CancelFunc // ends the TLS files' watch
	wg          sync.WaitGroup
	once        sync.Once
}

// listen opens the node's port (or takes cfg.Listener) and its mux, with the
// TLS and limits of cfg, and starts watching the TLS files.
func (s *Server) listen(bind string) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", bind); err != nil {
			return fmt.Errorf("listen on %s: %w", bind, err)
		}
	}
	mcfg := s.cfg.Mux
	mcfg.Logger = s.log.With("component", "mux")
	s.stopTLS = func() {}
	if st := s.cfg.TLS; st != nil {
		mcfg.TLS = st.ServerConfig()
		cluster := st.Cluster()
		mcfg.Authorize = func(proto byte, cs *tls.ConnectionState) error {
			if proto != mux.ConnRaft && proto != mux.ConnPeer {
				return nil
			}
			if cs == nil {
				return tlsutil.ErrNotServer
			}
			return tlsutil.IsServer(*cs, cluster)
		}
		interval := s.cfg.TLSReload
		if interval <= 0 {
			interval = 5 * time.Second
		}
		ctx, cancel := context.WithCancel(context.Background())
		s.stopTLS = cancel
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			st.Watch(ctx, interval)
		}()
	}
	s.ln = ln
	s.mux = mux.New(ln, mcfg)
	return nil
}

// peerTLS is the TLS option of the node's connections to its peers.
func (s *Server) peerTLS() func(string) *tls.Config {
	if s.cfg.TLS == nil {
		return nil
	}
	return func(string) *tls.Config { return s.cfg.TLS.PeerConfig() }
}

// Start opens the node and starts serving.
func Start(cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	switch cfg.Backend {
	case "", BackendRaft:
	case BackendEtcd:
		if cfg.ACL {
			return nil, fmt.Errorf("-acl needs the built-in Raft store, which replicates the tokens; with -backend etcd use etcd's own users and roles")
		}
		return startEtcd(cfg, log)
	default:
		return nil, fmt.Errorf("backend %q: want raft or etcd", cfg.Backend)
	}
	cfg.Raft.Logger = log
	cfg.TTL.Logger = log.With("component", "ttl")
	cfg.Store.Logger = log.With("component", "store")
	cfg.RPC.Logger = log.With("component", "rpc")
	if cfg.TLS != nil {
		cfg.Raft.PeerTLS = cfg.TLS.PeerConfig
	}
	s := &Server{cfg: cfg, log: log}
	bind := cfg.BindAddr
	if bind == "" {
		bind = cfg.Raft.Addr
	}
	if err := s.listen(bind); err != nil {
		return nil, err
	}
	ln := s.ln
	raftLn := s.mux.Listen(mux.ConnRaft)
	rpcLn := s.mux.Listen(mux.ConnRPC)
	peerLn := s.mux.Listen(mux.ConnPeer)

	// The steps below run in order, each using only what the ones before
	// it built: nothing is wired after the fact.
	//
	// 1. The state machine, with its journal if asked for.
	s.fsm = fsm.New(cfg.FSM)
	if cfg.Journal != "" {
		j, err := openJournal(cfg.Journal, log.With("component", "journal"))
		if err != nil {
			s.stopTLS()
			_ = ln.Close()
			s.wg.Wait()
			return nil, err
		}
		s.journal = j
		s.fsm.SetJournal(j)
	}
	// 2. The port's mux, serving before Raft starts: Raft may dial itself,
	// or be dialled, at once.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.mux.Serve()
	}()
	fail := func(err error) (*Server, error) {
		s.stopTLS()
		_ = s.mux.Close()
		s.wg.Wait()
		if s.journal != nil {
			_ = s.journal.Close()
		}
		return nil, err
	}
	// 3. The Raft node's stores and transport; Raft does not run yet. A
	// node that joins a cluster does not bootstrap one.
	cfg.Raft.NoBootstrap = Joining(cfg)
	node, err := raftnode.Open(cfg.Raft, raftLn)
	if err != nil {
		return fail(err)
	}
	s.node = node
	if err := restoreDir(&cfg); err != nil {
		_ = node.Shutdown()
		return fail(err)
	}
	// 4. The deadline table and its peer protocol: heartbeats are
	// acknowledged once a majority holds their deadlines, and a new leader
	// arms from the tables (backend/raftstore/deadlines.go). Served once
	// Raft runs (step 6): answering a push reads Raft's term.
	if cfg.Clock != nil {
		cfg.TTL.Clock = cfg.Clock
	}
	table := ttl.NewTable(cfg.TTL.Clock)
	s.peerPool = rpcconn.NewPool(rpcconn.Options{TLS: s.peerTLS(), Proto: mux.ConnPeer, MaxRequest: 64 << 20})
	s.deadlines = raftstore.NewDeadlines(raftstore.DeadlinesConfig{Logger: log.With("component", "deadlines")}, node, table, s.peerPool)
	// 5. The TTL tracker: it proposes expiries through the node, arms its
	// deadlines from the FSM and the tables, and hears from the FSM of
	// every change.
	cfg.TTL.Table, cfg.TTL.Peers = table, s.deadlines
	s.tracker = ttl.New(cfg.TTL, raftstore.NewProposer(node), s.fsm)
	s.fsm.SetObserver(s.tracker)
	// 6. Raft, applying to the FSM and telling the tracker of leadership;
	// then the peer protocol (peers' connections waited in the mux).
	if err := node.Start(s.fsm, s.tracker); err != nil {
		_ = node.Shutdown()
		return fail(err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.deadlines.ServePeers(peerLn)
	}()
	// 7. Expiry, the store over all of the above, and the RPC server.
	tctx, cancel := context.WithCancel(context.Background())
	s.stopTracker = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.tracker.Run(tctx)
	}()

	// A request forwarded to the leader carries its caller's token, never
	// this node's: the leader checks the caller's rights again.
	s.pool = rpcconn.NewPool(rpcconn.Options{TLS: s.peerTLS(), Token: func(ctx context.Context) string { return backend.CallerFrom(ctx).Token }})
	s.store = raftstore.New(cfg.Store, node, s.fsm, s.tracker, s.deadlines, s.pool)
	s.be = s.store
	if cfg.ACL {
		s.guard = acl.NewGuard(s.store, s.store, log.With("component", "acl"))
		s.be = s.guard
	}
	s.rpc = rpc.New(cfg.RPC, s.be)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.rpc.Serve(rpcLn)
	}()
	// 8. Membership: joining, a changed address, dead-server cleanup.
	mctx, mcancel := context.WithCancel(context.Background())
	s.stopMembers = mcancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.reconcileMembership(mctx, !node.HadState())
	}()
	if cfg.DeadServerAfter > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.store.RunCleanup(mctx, cfg.DeadServerAfter)
		}()
	}
	// 9. The HTTP listener, reading all of the above.
	if err := s.startHTTP(); err != nil {
		_ = s.Kill()
		return nil, err
	}
	// 10. The DNS listener, reading the store.
	if err := s.startDNS(s.be); err != nil {
		_ = s.Kill()
		return nil, err
	}
	log.Info("discoverd node started", "id", cfg.Raft.ID, "addr", cfg.Raft.Addr, "listen", ln.Addr().String(), "data_dir", cfg.Raft.DataDir)
	return s, nil
}

// Shutdown stops the node in order: stop serving clients (answers in flight
// go out, streams end), stop proposing expiries, hand leadership over if this
// node leads, stop Raft and close its stores, then close the port.
func (s *Server) Shutdown(ctx context.Context) error { return s.stop(ctx, true) }

// Kill stops the node abruptly, as close to a crash as one process allows:
// connections are dropped without answers and leadership is not handed over.
func (s *Server) Kill() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return s.stop(ctx, false)
}

func (s *Server) stop(ctx context.Context, graceful bool) error {
	var err error
	s.once.Do(func() {
		s.stopServing(ctx, graceful)
		if s.etcd != nil {
			err = s.stopEtcd()
			return
		}
		if graceful {
			s.handOver(ctx)
			if s.cfg.LeaveOnStop {
				s.leave(ctx)
			}
		}
		err = s.stopRaft()
	})
	return err
}

// ShutdownCluster stops srvs, distinct servers that are every node of one
// cluster, all run by this process (`discoverd dev`); a server already
// stopped is skipped. First every node stops serving clients (answers in
// flight go out, streams end) and proposing expiries, then the leader stops
// Raft, then the others. No leadership is handed over: every node stops, so
// a handover would only elect a node about to stop, one election per node.
// The order spares each node the others' stop: a follower whose leader has
// stopped only waits for it — for a heartbeat timeout, far longer than the
// rest of the stop takes — where a leader whose followers stopped first
// logged every append to them that failed, as an error.
func ShutdownCluster(ctx context.Context, srvs []*Server) error {
	leader := -1
	for i, s := range srvs {
		if s.node != nil {
			s.node.Stopping() // every peer is stopping too
			if s.node.IsLeader() {
				leader = i
			}
		}
	}
	var served sync.WaitGroup // every node has stopped serving (or had stopped)
	served.Add(len(srvs))
	leaderDone := make(chan struct{}) // the leader's Raft has stopped
	if leader < 0 {
		close(leaderDone)
	}
	errs := make([]error, len(srvs))
	var wg sync.WaitGroup
	for i, s := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ran := false
			s.once.Do(func() {
				ran = true
				s.stopServing(ctx, true)
				served.Done()
				served.Wait()
				if s.etcd != nil {
					errs[i] = s.stopEtcd()
					return
				}
				if i != leader {
					<-leaderDone
				}
				errs[i] = s.stopRaft()
				if i == leader {
					close(leaderDone)
				}
			})
			if !ran { // stopped before
				served.Done()
				if i == leader {
					close(leaderDone)
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopServing stops serving clients (dropping their connections at once
// unless graceful), the TLS files' watch and, on a Raft node, expiry.
func (s *Server) stopServing(ctx context.Context, graceful bool) {
	s.log.Info("shutting down", "graceful", graceful)
	if !graceful {
		_ = s.ln.Close()
	}
	s.stopHTTP(ctx, graceful)
	s.stopDNS(ctx)
	s.rpc.Shutdown(ctx)
	if s.guard != nil {
		s.guard.Close()
	}
	s.stopTLS()
	if s.stopTracker != nil { // a Raft node
		s.stopTracker()
		s.stopMembers()
	}
}

// handOver hands leadership to another node if this one leads. A graceful
// handover shortens the write outage to one round trip. Raft bounds it by
// its election timeout; the wait is bounded by ctx (the stop's deadline)
// too, so that no transfer can hold a stop past it.
func (s *Server) handOver(ctx context.Context) {
	if !s.node.IsLeader() {
		return
	}
	if err := s.node.TransferLeadership(ctx); err != nil {
		if ctx.Err() != nil {
			s.log.Warn("leadership transfer before shutdown did not finish in time; stopping without it", "err", ctx.Err())
		} else {
			s.log.Info("leadership transfer before shutdown failed", "err", err)
		}
	}
}

// stopRaft stops Raft and closes its stores, the journal, the peer
// connections and the port, and waits for the server's goroutines.
func (s *Server) stopRaft() error {
	s.node.Stopping()
	err := s.node.Shutdown()
	if s.journal != nil {
		_ = s.journal.Close()
	}
	s.pool.Close()
	s.deadlines.Close()
	s.peerPool.Close()
	if cerr := s.mux.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	s.wg.Wait()
	s.log.Info("stopped")
	return err
}

// restoreDir makes the directory where a restore keeps its files — the
// upload and the snapshot it hands to Raft — in the data dir, on the disk
// the snapshots go to, and removes what a restore interrupted by a crash
// left there. Unless the configuration names directories of its own.
func restoreDir(cfg *Config) error {
	if cfg.RPC.Snapshot.Dir != "" && cfg.Store.TempDir != "" {
		return nil
	}
	dir := filepath.Join(cfg.Raft.DataDir, "restore")
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	if cfg.RPC.Snapshot.Dir == "" {
		cfg.RPC.Snapshot.Dir = dir
	}
	if cfg.Store.TempDir == "" {
		cfg.Store.TempDir = dir
	}
	return nil
}

// stopEtcd closes an etcd front end's store and its port.
func (s *Server) stopEtcd() error {
	err := s.etcd.Close()
	_ = s.mux.Close()
	s.wg.Wait()
	s.log.Info("stopped")
	return err
}

// startEtcd starts a stateless front end over etcd: the port serves only
// the client protocol; every node writes to and watches etcd directly.
func startEtcd(cfg Config, log *slog.Logger) (*Server, error) {
	cfg.RPC.Logger = log.With("component", "rpc")
	cfg.Etcd.Logger = log.With("component", "etcd")
	s := &Server{cfg: cfg, log: log}
	if err := s.listen(cfg.BindAddr); err != nil {
		return nil, err
	}
	ln := s.ln
	if cfg.Etcd.Addr == "" {
		cfg.Etcd.Addr = ln.Addr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Etcd.DialTimeout+10*time.Second)
	defer cancel()
	st, err := etcdstore.Open(ctx, cfg.Etcd)
	if err != nil {
		s.stopTLS()
		_ = ln.Close()
		s.wg.Wait()
		return nil, err
	}
	s.etcd = st
	s.be = st
	rpcLn := s.mux.Listen(mux.ConnRPC)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.mux.Serve()
	}()
	s.rpc = rpc.New(cfg.RPC, st)
	go func() {
		defer s.wg.Done()
		_ = s.rpc.Serve(rpcLn)
	}()
	if err := s.startHTTP(); err != nil {
		_ = s.Kill()
		return nil, err
	}
	if err := s.startDNS(st); err != nil {
		_ = s.Kill()
		return nil, err
	}
	log.Info("discoverd etcd front end started", "listen", ln.Addr().String(), "etcd", strings.Join(cfg.Etcd.Endpoints, ","), "prefix", cfg.Etcd.Prefix)
	return s, nil
}

// Etcd returns the etcd store of an etcd front end (nil for the Raft backend).
func (s *Server) Etcd() *etcdstore.Store { return s.etcd }

// Addr returns the address the node listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ID returns the node id.
func (s *Server) ID() string { return s.cfg.Raft.ID }

// RPC is the node's protocol server; Mux the port's (tests, stats).
func (s *Server) RPC() *rpc.Server { return s.rpc }
func (s *Server) Mux() *mux.Mux    { return s.mux }

// Node, FSM, Tracker and Store expose the parts to tests in this module.
func (s *Server) Node() *raftnode.Node    { return s.node }
func (s *Server) FSM() *fsm.FSM           { return s.fsm }
func (s *Server) Tracker() *ttl.Tracker   { return s.tracker }
func (s *Server) Store() *raftstore.Store { return s.store }

// WaitLeader waits until some node of the cluster is known as leader by this one.
func (s *Server) WaitLeader(ctx context.Context) (string, error) {
	for {
		if id, _ := s.node.Leader(); id != "" {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
