package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/backend/etcdstore"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/server"
)

// serverFlags are the flags of `discoverd server`; dev reuses the tuning ones.
type serverFlags struct {
	id, addr, advertise, dataDir, peers, peerDial string
	journal                                       string
	join                                          string
	nonvoter, leaveOnStop                         bool
	acl                                           bool
	aclToken                                      string
	deadServerAfter                               time.Duration
	backend, etcdEndpoints, etcdPrefix            string
	etcdDialTimeout                               time.Duration
	heartbeat, election, lease, commit            time.Duration
	snapInterval                                  time.Duration
	snapThreshold, trailing                       uint64
	applyGroups                                   int
	applyLinger                                   time.Duration
	applyBatch                                    bool
	heartbeatRelays                               int
	logStore                                      string
	grace, shutdownTimeout                        time.Duration
	maxFrame                                      int
	maxRestoreSize                                int64
	restoreTimeout                                time.Duration
	logLevel, logFormat                           string
	tls                                           serverTLSFlags
	maxConns, maxConnsPerIP, maxHandshakes        int
	handshakeTimeout, frameTimeout, idleTimeout   time.Duration
	storm                                         stormFlags // storm.go
	http                                          httpFlags  // http.go
	dns                                           dnsFlags   // dns.go
}

func (f *serverFlags) register(fs *flag.FlagSet, withIdentity bool) {
	d := raftnode.DefaultConfig()
	if withIdentity {
		fs.StringVar(&f.id, "id", "", "this node's id, unique in the cluster (required)")
		fs.StringVar(&f.addr, "addr", "127.0.0.1:1111", "host:port to listen on for Raft and clients (one port for both)")
		fs.StringVar(&f.advertise, "advertise", "", "host:port peers and clients reach this node at, when it differs from -addr (e.g. -addr 0.0.0.0:1111)")
		fs.StringVar(&f.dataDir, "data-dir", "", "directory for this node's Raft log, snapshots and id (required)")
		fs.StringVar(&f.peers, "peers", "", "initial voters id=host:port,... — identical on every node, used only on first start; empty: a single-node cluster")
		fs.StringVar(&f.join, "join", "", "host:port,... of members to ask, on a first start (new data dir) of a node -peers does not name, to add this node to their cluster: as a non-voter promoted to voter once caught up")
		fs.BoolVar(&f.nonvoter, "nonvoter", false, "with -join: join as a non-voter and stay one (a read replica: serves reads and watches, does not vote)")
		fs.BoolVar(&f.leaveOnStop, "leave-on-stop", false, "on a graceful stop (SIGTERM), leave the cluster: hand leadership over, then have the leader remove this node (for scaling down; not for restarts)")
		fs.DurationVar(&f.deadServerAfter, "dead-server-after", 0, "when leader, remove a member that has not answered or followed for this long, if the voters left keep a healthy quorum and number at least 3 (0: off)")
		fs.StringVar(&f.peerDial, "peer-dial", "", "id=host:port,... addresses to dial instead of peers' advertised ones (proxies, tests)")
		fs.StringVar(&f.journal, "journal", "", "append every applied log entry to this file as a JSON line (testing, forensics)")
		fs.StringVar(&f.backend, "backend", "raft", "store: raft (built-in Raft cluster) or etcd (stateless front end over an etcd v3 cluster)")
		fs.StringVar(&f.etcdEndpoints, "etcd-endpoints", "", "with -backend etcd: etcd client URLs, comma-separated (e.g. http://127.0.0.1:2379)")
		fs.StringVar(&f.etcdPrefix, "etcd-prefix", "/discoverd", "with -backend etcd: key prefix for discoverd's data")
		fs.DurationVar(&f.etcdDialTimeout, "etcd-dial-timeout", 5*time.Second, "with -backend etcd: how long to wait for etcd to answer at start")
		fs.StringVar(&f.aclToken, "acl-token", "", "with -acl: the token this node presents for its own membership calls (-join, -leave-on-stop, an address change); needs operator write")
		f.tls.register(fs)
	}
	fs.BoolVar(&f.acl, "acl", false, "access control: every call needs a token allowing it, default deny; set on every server, then run 'discoverd acl bootstrap' once (docs/acl.md)")
	fs.IntVar(&f.maxConns, "max-conns", mux.DefaultMaxConns, "most connections open at once on the port (beyond it new ones are closed at once)")
	fs.IntVar(&f.maxConnsPerIP, "max-conns-per-ip", mux.DefaultMaxConnsPerIP, "most connections open at once from one remote IP")
	fs.IntVar(&f.maxHandshakes, "max-handshakes", mux.DefaultMaxHandshakes, "most connections at once still in their handshake (TLS and the protocol byte: not yet authenticated)")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", mux.DefaultHandshakeTimeout, "how long a new connection may take for its TLS handshake and protocol byte")
	fs.DurationVar(&f.frameTimeout, "frame-timeout", 10*time.Second, "how long a client frame may take to arrive once its length has (then the connection is closed)")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 5*time.Minute, "close a client connection with no call, no watch and no frame for this long (clients redial)")
	fs.DurationVar(&f.heartbeat, "raft-heartbeat-timeout", d.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&f.election, "raft-election-timeout", d.ElectionTimeout, "Raft election timeout")
	fs.DurationVar(&f.lease, "raft-leader-lease-timeout", d.LeaderLeaseTimeout, "Raft leader lease timeout (at most the heartbeat timeout)")
	fs.DurationVar(&f.commit, "raft-commit-timeout", d.CommitTimeout, "Raft commit timeout")
	fs.DurationVar(&f.snapInterval, "snapshot-interval", d.SnapshotInterval, "how often to check whether to snapshot")
	fs.Uint64Var(&f.snapThreshold, "snapshot-threshold", d.SnapshotThreshold, "new log entries that trigger a snapshot")
	fs.Uint64Var(&f.trailing, "trailing-logs", d.TrailingLogs, "log entries kept after a snapshot")
	fs.IntVar(&f.applyGroups, "raft-apply-groups", d.MaxApplyGroups, "group commit: groups of writes in flight before new writes queue and go to Raft together (0: off)")
	fs.DurationVar(&f.applyLinger, "raft-apply-linger", d.ApplyLinger, "group commit: longest a group waits to grow to the size of the last one (0: never)")
	fs.BoolVar(&f.applyBatch, "raft-apply-batch", !d.NoBatchEntries, "group commit: a group of writes is one Raft entry (false: one entry per write, for clusters with nodes older than batch entries)")
	fs.IntVar(&f.heartbeatRelays, "heartbeat-relays", 2, "on a follower: calls in flight to the leader, per token, that relay clients' heartbeats together (0: forward each heartbeat in a call of its own)")
	fs.StringVar(&f.logStore, "raft-log-store", raftnode.LogStoreBolt, "the Raft log's store: bolt (bbolt, two fsyncs per append) or wal (raft-wal, one); a data dir keeps the one it was first started with (docs/operations.md to change it)")
	fs.DurationVar(&f.grace, "ttl-grace", time.Second, "extra time a new leader gives every instance, on top of the deadline it learned from the other nodes (or of its TTL), before expiring it")
	f.storm.register(fs)
	f.http.register(fs)
	f.dns.register(fs)
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a stop waits for requests in flight and the leader's handover (Raft then gets 15s more before the process exits anyway)")
	fs.IntVar(&f.maxFrame, "max-frame", wire.DefaultMaxFrame, "largest client request frame in bytes")
	fs.Int64Var(&f.maxRestoreSize, "max-restore-size", 1<<30, "largest backup file 'discoverd snapshot restore' may upload, in bytes")
	fs.DurationVar(&f.restoreTimeout, "restore-timeout", 10*time.Minute, "how long a snapshot save may take, and a restore from the start of its upload to its answer")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
}

// config builds a node's configuration from the flags (identity fields aside).
func (f *serverFlags) config(log *slog.Logger) (server.Config, error) {
	rc := raftnode.DefaultConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout, rc.CommitTimeout = f.heartbeat, f.election, f.lease, f.commit
	rc.SnapshotInterval, rc.SnapshotThreshold, rc.TrailingLogs = f.snapInterval, f.snapThreshold, f.trailing
	rc.Logger = log
	if f.applyGroups < 0 || f.applyGroups > 64 {
		return server.Config{}, usageErr("-raft-apply-groups %d: want 0 (off) to 64", f.applyGroups)
	}
	if f.applyLinger < 0 || f.applyLinger > time.Second {
		return server.Config{}, usageErr("-raft-apply-linger %v: want 0 to 1s", f.applyLinger)
	}
	rc.MaxApplyGroups, rc.ApplyLinger, rc.NoBatchEntries = f.applyGroups, f.applyLinger, !f.applyBatch
	if f.logStore != raftnode.LogStoreBolt && f.logStore != raftnode.LogStoreWAL {
		return server.Config{}, usageErr("-raft-log-store %q: want %s or %s", f.logStore, raftnode.LogStoreBolt, raftnode.LogStoreWAL)
	}
	rc.LogStore = f.logStore
	if f.grace <= 0 {
		return server.Config{}, usageErr("-ttl-grace %v must be positive", f.grace)
	}
	if f.maxFrame < 4096 || f.maxFrame > 64<<20 {
		return server.Config{}, usageErr("-max-frame %d: want 4096 to %d", f.maxFrame, 64<<20)
	}
	if f.maxRestoreSize < 1<<20 || f.maxRestoreSize > 1<<40 {
		return server.Config{}, usageErr("-max-restore-size %d: want 1048576 (1 MiB) to %d (1 TiB)", f.maxRestoreSize, int64(1)<<40)
	}
	if f.restoreTimeout < time.Second || f.restoreTimeout > 24*time.Hour {
		return server.Config{}, usageErr("-restore-timeout %v: want 1s to 24h", f.restoreTimeout)
	}
	if f.snapThreshold == 0 || f.snapInterval <= 0 {
		return server.Config{}, usageErr("-snapshot-threshold and -snapshot-interval must be positive")
	}
	if f.maxConns < 1 || f.maxConnsPerIP < 1 || f.maxHandshakes < 1 {
		return server.Config{}, usageErr("-max-conns, -max-conns-per-ip and -max-handshakes must be positive")
	}
	if f.handshakeTimeout < 100*time.Millisecond || f.handshakeTimeout > time.Minute {
		return server.Config{}, usageErr("-handshake-timeout %v: want 100ms to 1m", f.handshakeTimeout)
	}
	if f.frameTimeout < 100*time.Millisecond || f.frameTimeout > 10*time.Minute {
		return server.Config{}, usageErr("-frame-timeout %v: want 100ms to 10m", f.frameTimeout)
	}
	if f.idleTimeout < time.Second || f.idleTimeout > 24*time.Hour {
		return server.Config{}, usageErr("-idle-timeout %v: want 1s to 24h", f.idleTimeout)
	}
	if f.heartbeatRelays < 0 || f.heartbeatRelays > 64 {
		return server.Config{}, usageErr("-heartbeat-relays %d: want 0 (off) to 64", f.heartbeatRelays)
	}
	storm, err := f.storm.config()
	if err != nil {
		return server.Config{}, err
	}
	cfg := server.Config{Raft: rc, Logger: log, ACL: f.acl}
	cfg.Store.HeartbeatRelays = f.heartbeatRelays
	if f.heartbeatRelays == 0 {
		cfg.Store.HeartbeatRelays = -1 // raftstore: negative is off, 0 its default
	}
	cfg.TTL.Grace, cfg.TTL.Storm = f.grace, storm
	cfg.RPC.MaxFrame = f.maxFrame
	cfg.RPC.FrameTimeout, cfg.RPC.IdleTimeout = f.frameTimeout, f.idleTimeout
	cfg.RPC.Snapshot.MaxRestoreSize, cfg.RPC.Snapshot.Timeout = f.maxRestoreSize, f.restoreTimeout
	cfg.Mux = mux.Config{MaxConns: f.maxConns, MaxConnsPerIP: f.maxConnsPerIP, MaxHandshakes: f.maxHandshakes, HandshakeTimeout: f.handshakeTimeout}
	return cfg, nil
}

func (f *serverFlags) logger(stderr io.Writer) (*slog.Logger, error) {
	lvl, err := logging.ParseLevel(f.logLevel)
	if err != nil {
		return nil, usageErr("-log-level: %v", err)
	}
	log, err := logging.New(stderr, f.logFormat, lvl)
	if err != nil {
		return nil, usageErr("-log-format: %v", err)
	}
	return log, nil
}

func parseOverrides(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	peers, err := raftnode.ParsePeers(s)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range peers {
		out[p.ID] = p.Addr
	}
	return out, nil
}

// parseJoin parses -join: host:port,...
func parseJoin(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%q is not host:port: %v", a, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serverFlags
	fs := newFlagSet("server", "", stderr)
	f.register(fs, true)
	faultClock := faultClockFlag(fs)
	config := fs.String("config", "", "read flags from this YAML or JSON file: one key per flag name, without the dash; flags on the command line win")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *config != "" {
		if err := applyConfigFile(fs, *config); err != nil {
			return err
		}
	}
	switch f.backend {
	case server.BackendEtcd:
		return runEtcdServer(ctx, &f, stderr)
	case server.BackendRaft:
	default:
		return usageErr("-backend %q: want raft or etcd", f.backend)
	}
	if f.etcdEndpoints != "" {
		return usageErr("-etcd-endpoints needs -backend etcd")
	}
	if f.id == "" || f.dataDir == "" {
		return usageErr("-id and -data-dir are required")
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := f.config(log.With("node", f.id))
	if err != nil {
		return err
	}
	cfg.Raft.ID, cfg.Raft.DataDir = f.id, f.dataDir
	cfg.BindAddr = f.addr
	cfg.Raft.Addr = f.addr
	if f.advertise != "" {
		cfg.Raft.Addr = f.advertise
	}
	if cfg.Raft.Peers, err = raftnode.ParsePeers(f.peers); err != nil {
		return usageErr("-peers: %v", err)
	}
	if cfg.Join, err = parseJoin(f.join); err != nil {
		return usageErr("-join: %v", err)
	}
	if f.nonvoter && len(cfg.Join) == 0 {
		return usageErr("-nonvoter needs -join (a non-voter joins an existing cluster)")
	}
	if f.deadServerAfter < 0 || (f.deadServerAfter > 0 && f.deadServerAfter < time.Second) {
		return usageErr("-dead-server-after %v: want 0 (off) or at least 1s", f.deadServerAfter)
	}
	cfg.JoinNonVoter, cfg.LeaveOnStop, cfg.DeadServerAfter = f.nonvoter, f.leaveOnStop, f.deadServerAfter
	if f.aclToken != "" && !f.acl {
		return usageErr("-acl-token is the node's token for a cluster with ACLs on: it needs -acl")
	}
	cfg.ACLToken = f.aclToken
	if cfg.Raft.DialOverrides, err = parseOverrides(f.peerDial); err != nil {
		return usageErr("-peer-dial: %v", err)
	}
	cfg.Raft.NoBootstrap = server.Joining(cfg)
	if err := cfg.Raft.Validate(); err != nil {
		return usageErr("%v", err)
	}
	if cfg.TLS, err = f.tls.store(f.addr, log); err != nil {
		return err
	}
	cfg.TLSReload = f.tls.reload
	cfg.Journal = f.journal
	stopClock := make(chan struct{})
	defer close(stopClock)
	cfg.Clock = faultClock(log, stopClock)
	return serve(ctx, &f, cfg, log)
}

// serve runs a node (either backend) with its HTTP listener, if asked for,
// until ctx ends, then shuts it down in order within -shutdown-timeout.
func serve(ctx context.Context, f *serverFlags, cfg server.Config, log *slog.Logger) error {
	var err error
	if cfg.HTTP, err = f.http.config(f.http.addr, f, cfg.TLS != nil); err != nil {
		return err
	}
	closeHTTP, err := listenHTTP(&cfg.HTTP)
	if err != nil {
		return err
	}
	defer closeHTTP()
	if cfg.DNS, err = f.dns.config(f.dns.addr, f, cfg.TLS != nil); err != nil {
		return err
	}
	closeDNS, err := listenDNS(&cfg.DNS)
	if err != nil {
		return err
	}
	defer closeDNS()
	srv, err := server.Start(cfg)
	if err != nil {
		return err
	}
	// SIGHUP reloads the TLS files (they are also reloaded when they change).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-hup:
			if cfg.TLS == nil {
				log.Info("SIGHUP: nothing to reload (no TLS)")
			} else {
				_ = cfg.TLS.Reload() // logs what it did
			}
		case <-ctx.Done():
		}
	}
	return shutdown(srv.Shutdown, f.shutdownTimeout, stopGrace, log)
}

// stopGrace is how long a stop may run past -shutdown-timeout (stopping
// Raft and closing its stores) before the process gives up waiting.
const stopGrace = 15 * time.Second

// shutdown runs stop with timeout for requests in flight, and returns an
// error if it has not finished timeout+grace later: a stop that hangs must
// not keep the process from exiting. Exiting then is as safe as a crash —
// every acknowledged write is already on disk.
func shutdown(stop func(context.Context) error, timeout, grace time.Duration, log *slog.Logger) error {
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stop(sctx) }()
	t := time.NewTimer(timeout + grace)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	case <-t.C:
		log.Error("shutdown did not finish; exiting without it", "waited", timeout+grace)
		return fmt.Errorf("shutdown did not finish within %v (-shutdown-timeout %v plus %v to stop raft): exiting anyway; the data dir is safe to restart from", timeout+grace, timeout, grace)
	}
}

// runEtcdServer runs a stateless front end over etcd.
func runEtcdServer(ctx context.Context, f *serverFlags, stderr io.Writer) error {
	var endpoints []string
	for _, e := range strings.Split(f.etcdEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, e)
		}
	}
	if len(endpoints) == 0 {
		return usageErr("-backend etcd needs -etcd-endpoints (e.g. http://127.0.0.1:2379)")
	}
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageErr("-etcd-endpoints: %q is not an http(s)://host:port URL", e)
		}
	}
	for name, set := range map[string]bool{"-peers": f.peers != "", "-data-dir": f.dataDir != "", "-journal": f.journal != "", "-peer-dial": f.peerDial != "", "-join": f.join != "", "-nonvoter": f.nonvoter, "-leave-on-stop": f.leaveOnStop, "-dead-server-after": f.deadServerAfter != 0, "-acl": f.acl, "-acl-token": f.aclToken != "", "-raft-log-store": f.logStore != raftnode.LogStoreBolt} {
		if set {
			return usageErr("%s applies to the raft backend, not to -backend etcd (etcd holds the data)", name)
		}
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	id := f.id
	if id == "" {
		id = f.addr
	}
	cfg, err := f.config(log.With("node", id))
	if err != nil {
		return err
	}
	cfg.Backend = server.BackendEtcd
	cfg.BindAddr = f.addr
	advertise := f.addr
	if f.advertise != "" {
		advertise = f.advertise
	}
	if f.etcdDialTimeout <= 0 {
		return usageErr("-etcd-dial-timeout must be positive")
	}
	cfg.Etcd = etcdstore.Config{Endpoints: endpoints, Prefix: f.etcdPrefix, NodeID: id, Addr: advertise, DialTimeout: f.etcdDialTimeout}
	if cfg.TLS, err = f.tls.store(f.addr, log); err != nil {
		return err
	}
	cfg.TLSReload = f.tls.reload
	return serve(ctx, f, cfg, log)
}
