// Package raftnode owns this node's hashicorp/raft instance: the log and
// stable store (bbolt, or raft-wal: logstore.go), file snapshots, the TCP transport (over the node's shared
// port), bootstrap from a static peer list, leadership notifications, group
// commit and the leader's commit notices.
//
// It knows no commands. Above it, backend/raftstore encodes the FSM's
// commands and proposes them as opaque entries through Apply, which answers
// with what the state machine returned for them and their Raft index. Below
// it, the state machine (a Machine: fsm.FSM in discoverd) receives every
// committed entry on every node. On gaining leadership the node runs a
// barrier and only then tells its observers (the TTL tracker), so they see
// every entry the previous leader committed.
//
// A node starts in two steps, so that nothing needs wiring after the fact:
// Open prepares the stores and the transport, then the caller builds what
// needs the node (the TTL tracker proposes through it), and Start runs Raft
// with the state machine and the leadership observers. DESIGN.md has the
// reasons for the rest.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/logging"
)

// Machine is the state machine a node replicates: hashicorp/raft's
// BatchingFSM, which can also carry several entries in one log entry (group
// commit, groupcommit.go).
type Machine interface {
	raft.BatchingFSM
	// JoinEntries returns one log entry that carries entries (each as it
	// would have been proposed alone), to be applied in order. The machine
	// must answer that entry with a []any holding one response per entry.
	JoinEntries(entries [][]byte) ([]byte, error)
}

// LeadershipObserver is told when this node becomes a ready leader (after the
// barrier) and when it stops being leader. Calls are serialized.
type LeadershipObserver interface {
	BecomeLeader()
	StepDown()
}

// Node is one discoverd Raft member.
//
// Lock order: leaderMu is taken before the observers' own locks (the TTL
// tracker's); Raft calls the Machine, which takes its own lock (the FSM's)
// and calls its observer with it held (the tracker again). So across
// packages: raftnode → fsm → ttl, never the other way.
type Node struct {
	cfg Config
	log *slog.Logger

	// Set by Open.
	store     string        // LogStoreBolt or LogStoreWAL: the data dir's
	storeFile string        // the file (or directory) in the data dir that holds it
	raw       rawStore      // the log and stable store, as opened
	stable    failStopStore // raw, stopping the node on a failed write
	logs      raft.LogStore // stable behind a cache of the newest entries
	snaps     raft.SnapshotStore
	hasState  bool // the data dir held Raft state when opened: never bootstrap
	transport *raft.NetworkTransport
	trans     raft.Transport  // transport, wrapped by the notifier if any
	notifier  *commitNotifier // nil if cfg.NoCommitNotify
	peers     map[string]string
	appends   *appendStats
	hlog      hclog.Logger // hashicorp/raft's logs, into the node's logger

	// Set by Start; read-only after.
	raft *raft.Raft
	// live is raft once Start set it, for the transport's goroutines
	// (which may dial before Start returns).
	live      atomic.Pointer[raft.Raft]
	observers []LeadershipObserver
	group     *groupCommit // nil if cfg.MaxApplyGroups == 0
	notifyCh  chan bool

	leaderMu   sync.Mutex // serializes observer calls and guards the fields below
	leaderGen  uint64     // bumped on every leadership change
	readyTerm  uint64     // term in which this node finished its leader barrier; 0 if none
	cancelTerm context.CancelFunc

	verifyMu      sync.Mutex // guards the two fields below
	verifyWaiting []chan error
	verifyRunning bool

	pause *pauseWatch // this process's own stalls (pause.go)

	// fence is held for reading by every Apply and for writing by a
	// restore (backup.go: FenceWrites), so that no write enters the log
	// while a backup is being restored.
	fence sync.RWMutex

	done chan struct{}
	wg   sync.WaitGroup
}

// logCacheSize is how many of the newest log entries are kept in memory.
const logCacheSize = 1024

// File names inside the data dir.
const (
	raftDBFile   = "raft.db"
	snapshotsDir = "snapshots"
	nodeIDFile   = "node-id"
)

// Open opens (or creates) the node's state in cfg.DataDir and its Raft
// transport on ln, a listener that yields the node's incoming Raft
// connections. Raft does not run until Start; a node that is never started
// must be Shutdown to release its data dir.
func Open(cfg Config, ln net.Listener) (*Node, error) {
	n, err := openState(cfg)
	if err != nil {
		return nil, err
	}
	if !n.hasState && !cfg.NoBootstrap {
		if err := cfg.checkBootstrapAddr(); err != nil {
			n.closeStores()
			return nil, err
		}
	}

	// 7. The transport over the shared port, dialling peers at their dial
	// overrides if any, over TLS if configured (the port's mux checks what
	// dials in); on the leader, the commit notices watch it
	// (commitnotify.go).
	tcfg := &raft.NetworkTransportConfig{
		Stream:  newStreamLayer(ln, cfg.Addr, cfg.PeerTLS),
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  n.hlog.Named("transport"),
	}
	if len(cfg.DialOverrides) > 0 {
		tcfg.ServerAddressProvider = addrProvider{n}
	}
	n.transport = raft.NewNetworkTransportWithConfig(tcfg)
	n.trans = n.transport
	if !cfg.NoCommitNotify {
		n.notifier, n.trans = newCommitNotifier(n, n.transport)
	}
	return n, nil
}

// openState opens the node's stores in cfg.DataDir (steps 1-6 of Open).
func openState(cfg Config) (*Node, error) {
	// 1. The configuration, and the data dir claimed for this node id:
	// two nodes sharing one Raft state would corrupt the cluster.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := checkNodeID(cfg.DataDir, cfg.ID); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("component", "raftnode"), hlog: logging.HCLog(cfg.Logger, "raft"),
		peers: map[string]string{}, done: make(chan struct{}), appends: newAppendStats()}
	for _, p := range cfg.Peers {
		n.peers[p.ID] = p.Addr
	}
	if len(cfg.Peers) == 0 {
		n.peers[cfg.ID] = cfg.Addr
	}

	// 2. The log and stable store: the one the data dir records
	// (logstore.go), bbolt's raft.db or raft-wal's wal/. A data dir
	// started with one store refuses to start with the other.
	store, err := checkLogStore(cfg.DataDir, cfg.LogStore)
	if err != nil {
		return nil, err
	}
	n.store, n.storeFile = store, storeFile(store)
	if store == LogStoreWAL {
		n.raw, err = openWAL(cfg.DataDir, n.hlog.Named("wal"))
	} else {
		n.raw, err = openBolt(cfg.DataDir)
	}
	if err != nil {
		return nil, err
	}
	n.log.Info("opened the raft log", "log_store", store, "path", filepath.Join(cfg.DataDir, n.storeFile))

	// 3. A failed write to the store stops the node (failstop.go).
	fail := cfg.OnDiskFailure
	if fail == nil {
		fail = exitOnDiskFailure(n.log)
	}
	n.stable = failStopStore{rawStore: n.raw, fail: fail, stats: n.appends}

	// 3b. Every entry and the stable store read back: a damaged file stops
	// the node here, with an error that says so (damage.go).
	var missing uint64 // the highest index missing from the log, checked against the snapshots (6)
	if err := guard(func() (err error) { missing, err = verifyLog(n.raw); return err }); err != nil {
		n.closeStores()
		return nil, damaged(cfg.DataDir, n.storeFile, err)
	}

	// 4. The newest entries stay in memory: replication reads every entry
	// it sends back from the log store, and decoding it again from bbolt
	// cost the leader a tenth of its CPU under write load. (The WAL reads
	// an entry with a pread and decodes it too.)
	if n.logs, err = raft.NewLogCache(logCacheSize, n.stable); err != nil {
		n.closeStores()
		return nil, err
	}

	// 5. File snapshots, the newest SnapshotRetain of them kept.
	if n.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, snapshotsDir), cfg.SnapshotRetain, n.hlog); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}

	// 6. Whether this data dir already holds Raft state: only one that
	// does not is bootstrapped (Start), so a restarted node never is. The
	// snapshots must be readable and join up with the log.
	if file, err := verifySnapshots(n.snaps, filepath.Join(cfg.DataDir, snapshotsDir, "snapshots"), n.raw, n.storeFile, missing); err != nil {
		n.closeStores()
		return nil, damaged(cfg.DataDir, file, err)
	}
	if n.hasState, err = raft.HasExistingState(n.stable, n.stable, n.snaps); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	return n, nil
}

// Start runs Raft with m as the state machine, telling observers of every
// leadership change, and bootstraps the cluster from the configured peers if
// the data dir had no Raft state. It may be called once. If it fails, call
// Shutdown to release the data dir.
func (n *Node) Start(m Machine, observers ...LeadershipObserver) error {
	if n.raft != nil {
		return errors.New("raft node already started")
	}
	n.observers = observers
	n.notifyCh = make(chan bool, 16)

	// 1. Raft's configuration from the node's.
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.MaxAppendEntries = n.cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NotifyCh = n.notifyCh // leadership changes, drained by leadershipLoop
	rc.Logger = n.hlog

	// 2. Raft itself. With commit notices, the machine is wrapped to poke
	// the notifier whenever committed entries reach it.
	var fsm raft.FSM = m
	if n.notifier != nil {
		fsm = pokingFSM{Machine: m, n: n.notifier}
	}
	// Raft reads the log's newest entries and restores the newest
	// snapshot that it can read (it checks each one's checksum).
	var r *raft.Raft
	err := guard(func() (err error) {
		r, err = raft.NewRaft(rc, fsm, n.logs, n.stable, n.snaps, n.trans)
		return err
	})
	switch {
	case err != nil && strings.Contains(err.Error(), "failed to load any existing snapshots"):
		return damaged(n.cfg.DataDir, snapshotsDir, fmt.Errorf("no snapshot could be restored (their checksums or contents are wrong; the node's log says which): %w", err))
	case err != nil && strings.HasPrefix(err.Error(), "reading it failed"):
		return damaged(n.cfg.DataDir, n.storeFile, err)
	case err != nil:
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.live.Store(r)

	// 3. Bootstrap, only from a data dir without Raft state. Every node
	// bootstraps with the same configuration, which hashicorp/raft
	// allows.
	if !n.hasState && n.cfg.NoBootstrap {
		n.log.Info("new data dir: not bootstrapping, waiting to be added to a cluster")
	} else if !n.hasState {
		var servers []raft.Server
		for _, p := range n.cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
		}
		if len(servers) == 0 {
			servers = []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(n.cfg.Addr), Suffrage: raft.Voter}}
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap cluster: %w", err)
		}
		n.log.Info("bootstrapped new cluster", "voters", len(servers))
	} else {
		n.log.Info("found existing raft state, not bootstrapping", "data_dir", n.cfg.DataDir)
	}

	// 4. The node's own loops: leadership notifications, the stall
	// watch, group commit, commit notices.
	n.pause = newPauseWatch(n.cfg.HeartbeatTimeout, n.log)
	n.wg.Add(1)
	go n.leadershipLoop()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.pause.run(n.done)
	}()
	if n.cfg.MaxApplyGroups > 0 {
		join := m.JoinEntries
		if n.cfg.NoBatchEntries {
			join = nil
		}
		n.group = newGroupCommit(r, n.cfg.MaxApplyGroups, n.cfg.MaxAppendEntries, n.cfg.ApplyLinger, join)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.group.run(n.done)
		}()
	}
	if n.notifier != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.notifier.run(n.done)
		}()
	}
	return nil
}

// checkNodeID records the node id in a fresh data dir and refuses a data dir
// that belongs to another node id: two nodes sharing state would corrupt the cluster.
func checkNodeID(dir, id string) error {
	p := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(p, []byte(id+"\n"), 0o640)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if got := strings.TrimSpace(string(b)); got != id {
		return fmt.Errorf("data dir %s belongs to node %q, not %q: use the node's own data dir", dir, got, id)
	}
	return nil
}

func (n *Node) closeStores() {
	if n.transport != nil {
		_ = n.transport.Close()
	}
	if n.raw != nil {
		_ = n.raw.Close()
	}
}

// Shutdown stops Raft (if started) and closes the stores. Safe to call once.
func (n *Node) Shutdown() error {
	var err error
	if n.raft != nil {
		err = n.raft.Shutdown().Error()
	}
	close(n.done)
	n.wg.Wait()
	n.closeStores()
	return err
}

// HadState reports whether the data dir held Raft state when the node
// opened it (a restart), rather than being new.
func (n *Node) HadState() bool { return n.hasState }

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns this node's advertised address.
func (n *Node) Addr() string { return n.cfg.Addr }

// DialAddr returns the address this node dials to reach peer id, which
// advertises addr: the override if one is configured, else addr. Raft's
// transport and forwarding both go through it.
func (n *Node) DialAddr(id, addr string) string {
	if o, ok := n.cfg.DialOverrides[id]; ok {
		return o
	}
	return addr
}

type addrProvider struct{ n *Node }

func (p addrProvider) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if o, ok := p.n.cfg.DialOverrides[string(id)]; ok {
		return raft.ServerAddress(o), nil
	}
	// A member added after the first start: its address is in the
	// configuration. (The transport asks from its own goroutines, never
	// from Raft's main loop, which answers GetConfiguration.)
	if r := p.n.live.Load(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if s.ID == id {
					return s.Address, nil
				}
			}
		}
	}
	if a, ok := p.n.peers[string(id)]; ok {
		return raft.ServerAddress(a), nil
	}
	return "", fmt.Errorf("no address known for %s", id)
}
