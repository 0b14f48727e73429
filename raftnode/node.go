// Package raftnode owns this node's hashicorp/raft instance: the bbolt log
// and stable store, file snapshots, the TCP transport (over the node's shared
// port), bootstrap from a static peer list, and leadership notifications.
//
// It sits between the RPC/backend layer above, which proposes commands
// through Apply, and the fsm below, which every committed entry reaches. On
// gaining leadership it runs a barrier and only then tells its observers (the
// TTL tracker), so they see every entry the previous leader committed.
// DESIGN.md has the reasons.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/internal/wire"
)

// LeadershipObserver is told when this node becomes a ready leader (after the
// barrier) and when it stops being leader. Calls are serialized.
type LeadershipObserver interface {
	BecomeLeader()
	StepDown()
}

// Node is one discoverd Raft member.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	fsm       *fsm.FSM
	store     *raftboltdb.BoltStore
	logs      raft.LogStore // store behind a cache of the newest entries
	transport *raft.NetworkTransport
	notifyCh  chan bool
	observers []LeadershipObserver
	peers     map[string]string // initial peers, id -> addr

	leaderMu   sync.Mutex // serializes observer calls and guards the fields below
	leaderGen  uint64     // bumped on every leadership change
	readyTerm  uint64     // term in which this node finished its leader barrier; 0 if none
	cancelTerm context.CancelFunc

	notifier *commitNotifier // nil if cfg.NoCommitNotify
	group    *groupCommit    // nil if cfg.MaxApplyGroups == 0
	appends  appendStats

	verifyMu      sync.Mutex // guards the two fields below
	verifyWaiting []chan error
	verifyRunning bool

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

// Open opens (or creates) the node's state in cfg.DataDir and starts Raft on
// ln, a listener that yields the node's incoming Raft connections. It
// bootstraps the cluster from cfg.Peers only if the data dir has no Raft
// state yet; a restarted node never bootstraps again.
func Open(cfg Config, f *fsm.FSM, ln net.Listener, observers ...LeadershipObserver) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := checkNodeID(cfg.DataDir, cfg.ID); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, fsm: f, observers: observers, notifyCh: make(chan bool, 16),
		peers: map[string]string{}, done: make(chan struct{})}
	for _, p := range cfg.Peers {
		n.peers[p.ID] = p.Addr
	}
	if len(cfg.Peers) == 0 {
		n.peers[cfg.ID] = cfg.Addr
	}

	// bbolt: the hashmap freelist and no freelist sync. The array freelist
	// degrades badly after write bursts (a root cause of a long Consul outage),
	// and syncing the freelist only slows every commit.
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, raftDBFile),
		BoltOptions: &bbolt.Options{
			Timeout:        5 * time.Second,
			FreelistType:   bbolt.FreelistMapType,
			NoFreelistSync: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s (is another discoverd using this data dir?): %w", filepath.Join(cfg.DataDir, raftDBFile), err)
	}
	n.store = store
	hlog := logging.HCLog(cfg.Logger, "raft")
	cfg.Logger = cfg.Logger.With("component", "raftnode")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, snapshotsDir), cfg.SnapshotRetain, hlog)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	tcfg := &raft.NetworkTransportConfig{
		Stream:  newStreamLayer(ln, cfg.Addr),
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog.Named("transport"),
	}
	if len(cfg.DialOverrides) > 0 {
		tcfg.ServerAddressProvider = addrProvider{n}
	}
	n.transport = raft.NewNetworkTransportWithConfig(tcfg)
	var trans raft.Transport = n.transport
	if !cfg.NoCommitNotify {
		n.notifier, trans = newCommitNotifier(n, n.transport)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NotifyCh = n.notifyCh
	rc.Logger = hlog

	fail := cfg.OnDiskFailure
	if fail == nil {
		fail = exitOnDiskFailure(cfg)
	}
	fs := failStopStore{BoltStore: store, fail: fail, stats: &n.appends}
	hasState, err := raft.HasExistingState(fs, fs, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	// The newest entries stay in memory: replication reads every entry it
	// sends back from the log store, and decoding it again from bbolt cost
	// the leader a tenth of its CPU under write load.
	logs, err := raft.NewLogCache(logCacheSize, fs)
	if err != nil {
		n.closeStores()
		return nil, err
	}
	n.logs = logs
	var rf raft.FSM = f
	if n.notifier != nil {
		rf = pokingFSM{FSM: f, n: n.notifier}
	}
	r, err := raft.NewRaft(rc, rf, logs, fs, snaps, trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if !hasState {
		var servers []raft.Server
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
		}
		if len(servers) == 0 {
			servers = []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(cfg.Addr), Suffrage: raft.Voter}}
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			_ = r.Shutdown().Error()
			n.closeStores()
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
		cfg.Logger.Info("bootstrapped new cluster", "voters", len(servers))
	} else {
		cfg.Logger.Info("found existing raft state, not bootstrapping", "data_dir", cfg.DataDir)
	}
	n.wg.Add(1)
	go n.leadershipLoop()
	if cfg.MaxApplyGroups > 0 {
		n.group = newGroupCommit(r, cfg.MaxApplyGroups, cfg.MaxAppendEntries, cfg.ApplyLinger, !cfg.NoBatchEntries)
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
	return n, nil
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
	if n.store != nil {
		_ = n.store.Close()
	}
}

// leadershipLoop turns Raft's leadership notifications into observer calls.
// On gaining leadership it runs a barrier first (MUST: observers arm TTLs
// from the FSM, which must hold every entry committed before this term).
func (n *Node) leadershipLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			n.leaderLost()
			return
		case isLeader := <-n.notifyCh:
			if isLeader {
				n.leaderGained()
			} else {
				n.leaderLost()
			}
		}
	}
}

func (n *Node) leaderGained() {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	if n.cancelTerm != nil {
		n.cancelTerm()
	}
	n.leaderGen++
	gen := n.leaderGen
	ctx, cancel := context.WithCancel(context.Background())
	n.cancelTerm = cancel
	term := n.raft.CurrentTerm()
	n.cfg.Logger.Info("became leader, running barrier", "term", term)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for ctx.Err() == nil {
			err := n.raft.Barrier(n.cfg.BarrierTimeout).Error()
			if err == nil {
				break
			}
			n.cfg.Logger.Warn("leader barrier failed", "err", err)
			if n.raft.State() != raft.Leader {
				return
			}
		}
		n.leaderMu.Lock()
		defer n.leaderMu.Unlock()
		if n.leaderGen != gen || ctx.Err() != nil || n.raft.State() != raft.Leader {
			return
		}
		n.readyTerm = term
		n.cfg.Logger.Info("leader ready", "term", term)
		if n.notifier != nil {
			n.notifier.poke() // announce the barrier's commit
		}
		for _, o := range n.observers {
			o.BecomeLeader()
		}
	}()
}

func (n *Node) leaderLost() {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	if n.cancelTerm != nil {
		n.cancelTerm()
		n.cancelTerm = nil
	}
	n.leaderGen++
	wasReady := n.readyTerm != 0
	n.readyTerm = 0
	for _, o := range n.observers {
		o.StepDown()
	}
	if wasReady {
		n.cfg.Logger.Info("lost leadership")
	}
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns this node's advertised address.
func (n *Node) Addr() string { return n.cfg.Addr }

// IsLeader reports whether Raft considers this node the leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Ready reports whether this node is the leader and has finished its
// leadership barrier in the current term.
func (n *Node) Ready() bool {
	n.leaderMu.Lock()
	t := n.readyTerm
	n.leaderMu.Unlock()
	return t != 0 && t == n.raft.CurrentTerm() && n.raft.State() == raft.Leader
}

// Leader returns the id and advertised address of the leader this node knows
// of, or empty strings.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

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
	if a, ok := p.n.peers[string(id)]; ok {
		return raft.ServerAddress(a), nil
	}
	return "", fmt.Errorf("no address known for %s", id)
}

// Apply proposes one command and waits until it is committed and applied
// here. Errors say what happened to the write: codes.ErrNotLeader (not
// proposed), codes.ErrShuttingDown, or codes.ErrUnknownOutcome (proposed, fate
// unknown: leadership lost, or ctx ended while waiting for the commit).
func (n *Node) Apply(ctx context.Context, t fsm.MessageType, cmd any) (*fsm.Result, error) {
	b, err := fsm.Encode(t, cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", codes.ErrInternal, err)
	}
	if n.raft.State() != raft.Leader {
		return nil, fmt.Errorf("%s: %w", t, codes.ErrNotLeader)
	}
	enqueue := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		enqueue = max(time.Until(dl), time.Millisecond)
	}
	var r applyResult
	if n.group == nil {
		fut := n.raft.Apply(b, enqueue)
		done := make(chan applyResult, 1)
		go func() { done <- wait(fut) }()
		select {
		case r = <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for commit: %v: %w", t, ctx.Err(), codes.ErrUnknownOutcome)
		}
	} else {
		p := &proposal{data: b, deadline: time.Now().Add(enqueue), result: make(chan applyResult, 1)}
		select {
		case n.group.queue <- p:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: not proposed, the write queue stayed full: %v: %w", t, ctx.Err(), codes.ErrOverloaded)
		case <-n.done:
			return nil, fmt.Errorf("%s: %w", t, codes.ErrShuttingDown)
		}
		select {
		case r = <-p.result:
		case <-ctx.Done():
			p.abandoned.Store(true) // it may have been proposed already
			return nil, fmt.Errorf("%s: waiting for commit: %v: %w", t, ctx.Err(), codes.ErrUnknownOutcome)
		case <-n.done:
			return nil, fmt.Errorf("%s: node shut down while the write waited: %w", t, codes.ErrUnknownOutcome)
		}
		if !r.proposed {
			return nil, fmt.Errorf("%s: not proposed: %w", t, codes.ErrShuttingDown)
		}
	}
	err = r.err
	switch {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader):
		return nil, fmt.Errorf("%s: %w", t, codes.ErrNotLeader)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return nil, fmt.Errorf("%s: raft did not accept the entry in time: %w", t, codes.ErrOverloaded)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return nil, fmt.Errorf("%s: %v: %w", t, err, codes.ErrUnknownOutcome)
	case errors.Is(err, raft.ErrRaftShutdown):
		return nil, fmt.Errorf("%s: %v: %w", t, err, codes.ErrUnknownOutcome)
	default:
		return nil, fmt.Errorf("%s: %v: %w", t, err, codes.ErrUnknownOutcome)
	}
	if n.notifier != nil {
		n.notifier.poke()
	}
	res, ok := r.resp.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected apply response %T: %w", t, r.resp, codes.ErrInternal)
	}
	return res, nil
}

// ProposeExpire implements ttl.Proposer.
func (n *Node) ProposeExpire(ctx context.Context, name, addr string, index uint64) (bool, error) {
	res, err := n.Apply(ctx, fsm.ExpireType, &fsm.ExpireCommand{Name: name, Addr: addr, Index: index, DecidedAt: time.Now().UnixNano()})
	if err != nil {
		return false, err
	}
	return res.Changed, res.Err
}

// VerifyLeader confirms with a quorum that this node is still the leader and
// has applied everything committed before its term, so that reading its FSM
// right after is linearizable, and an acknowledgement given after it cannot
// come from a leader already replaced. Concurrent callers share rounds: each
// caller waits for a round that started after it called, so one quorum round
// trip serves a whole batch of reads and heartbeats.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if !n.Ready() {
		if n.IsLeader() {
			return fmt.Errorf("leader is still starting up: %w", codes.ErrNoLeader)
		}
		return codes.ErrNotLeader
	}
	ch := make(chan error, 1)
	n.verifyMu.Lock()
	n.verifyWaiting = append(n.verifyWaiting, ch)
	if !n.verifyRunning {
		n.verifyRunning = true
		go n.verifyRounds()
	}
	n.verifyMu.Unlock()
	select {
	case err := <-ch:
		if err != nil {
			return fmt.Errorf("verify leadership: %v: %w", err, codes.ErrNotLeader)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("verify leadership: %w", codes.ErrTimeout)
	}
}

// verifyRounds runs quorum rounds while callers wait. Every round answers only
// the callers that were waiting when it started.
func (n *Node) verifyRounds() {
	for {
		n.verifyMu.Lock()
		batch := n.verifyWaiting
		n.verifyWaiting = nil
		if len(batch) == 0 {
			n.verifyRunning = false
			n.verifyMu.Unlock()
			return
		}
		n.verifyMu.Unlock()
		err := n.raft.VerifyLeader().Error()
		for _, ch := range batch {
			ch <- err
		}
	}
}

// Status returns this node's view of itself.
func (n *Node) Status() wire.NodeStatus {
	leaderID, _ := n.Leader()
	return wire.NodeStatus{
		ID:            n.cfg.ID,
		Addr:          n.cfg.Addr,
		State:         n.raft.State().String(),
		Term:          n.raft.CurrentTerm(),
		AppliedIndex:  n.raft.AppliedIndex(),
		CommitIndex:   n.raft.CommitIndex(),
		LastIndex:     n.raft.LastIndex(),
		SnapshotIndex: n.snapshotIndex(),
		Leader:        leaderID,
		Voter:         n.isVoter(),
		LogAppends:    n.appends.appends.Load(),
		LogEntries:    n.appends.entries.Load(),
		LogAppendUS:   n.appends.micros.Load(),
	}
}

func (n *Node) snapshotIndex() uint64 {
	v, _ := strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	return v
}

func (n *Node) isVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

// Servers returns the current Raft configuration.
func (n *Node) Servers() ([]Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Peer
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	return out, nil
}

// Snapshot takes a snapshot now (tests, operators).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Raft exposes the raft instance to tests in this module.
func (n *Node) Raft() *raft.Raft { return n.raft }

// Shutdown stops Raft and closes the stores. Safe to call once.
func (n *Node) Shutdown() error {
	err := n.raft.Shutdown().Error()
	close(n.done)
	n.wg.Wait()
	n.closeStores()
	return err
}
