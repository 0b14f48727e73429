package raftnode

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"
)

// Peer is one voter of the initial cluster.
type Peer struct {
	ID   string
	Addr string
}

// ParsePeers parses "id=host:port,id=host:port,...".
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	seenID, seenAddr := map[string]bool{}, map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %q: want id=host:port", part)
		}
		if err := ValidateID(id); err != nil {
			return nil, fmt.Errorf("peer %q: %w", part, err)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("peer %q: address is not host:port: %v", part, err)
		}
		if seenID[id] {
			return nil, fmt.Errorf("peer id %q appears twice", id)
		}
		if seenAddr[addr] {
			return nil, fmt.Errorf("peer address %q appears twice", addr)
		}
		seenID[id], seenAddr[addr] = true, true
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// ValidateID checks a node id: 1-64 letters, digits, '-', '_' and '.'.
func ValidateID(id string) error {
	if len(id) > 64 {
		return fmt.Errorf("node id %q is longer than 64 bytes", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("node id %q: use letters, digits, '-', '_' and '.'", id)
		}
	}
	if id == "" {
		return errors.New("node id is empty")
	}
	return nil
}

// Config configures a Node.
type Config struct {
	// ID is this node's Raft server id, unique in the cluster.
	ID string
	// Addr is the address peers reach this node at (host:port).
	Addr string
	// DataDir holds the log and stable store (raft.db, or wal/), the
	// record of which one it is (log-store) and snapshots/.
	DataDir string
	// LogStore is the store of the Raft log and stable store: LogStoreBolt
	// or LogStoreWAL (logstore.go). A data dir records the one it was
	// first started with and refuses to start with the other
	// (ErrLogStoreMismatch); empty takes the one it records (bolt for a
	// new data dir).
	LogStore string
	// Peers is the initial voter set, identical on every node, used only when
	// DataDir has no Raft state yet. Empty means a single-node cluster of this node.
	Peers []Peer
	// NoBootstrap: a data dir without Raft state is not bootstrapped; the
	// node waits to be added to a cluster (server -join).
	NoBootstrap bool
	// DialOverrides maps a peer id to the address this node dials instead of
	// the peer's advertised one, for Raft and for forwarding (tests, proxies).
	DialOverrides map[string]string
	// PeerTLS, if set, gives the TLS configuration of each Raft connection
	// this node dials (called per connection, so reloaded certificates
	// apply). Nil: plaintext. Incoming connections are the port's (mux).
	PeerTLS func() *tls.Config

	// Raft timings. The defaults are half of hashicorp/raft's (500 ms): a
	// follower checks for a silent leader every 1-2 heartbeat timeouts, so
	// with 1 s a leader's death stopped writes for 1.7-2.7 s (etcd, with its
	// 1 s election timeout: 1.0-1.5 s). Slow or distant networks raise them.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// SnapshotInterval is how often Raft checks whether to snapshot.
	SnapshotInterval time.Duration
	// SnapshotThreshold is how many new entries trigger a snapshot.
	SnapshotThreshold uint64
	// TrailingLogs is how many entries are kept after a snapshot, so slightly
	// lagging followers catch up from the log rather than a snapshot.
	TrailingLogs uint64
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
	// MaxAppendEntries bounds entries per append (and per group commit).
	MaxAppendEntries int
	// BarrierTimeout bounds the barrier a new leader runs before serving.
	BarrierTimeout time.Duration
	// MaxApplyGroups is how many groups of writes may be in flight (proposed,
	// not yet applied) before new writes queue and go to Raft together
	// (groupcommit.go). 0 hands every write to Raft at once.
	MaxApplyGroups int
	// ApplyLinger is the longest a group of writes waits to grow to the size
	// of the last group (writers of the last group coming back). 0: never.
	ApplyLinger time.Duration
	// NoBatchEntries makes group commit propose each write of a group as its
	// own log entry instead of the group as one entry (groupcommit.go). For
	// comparisons, and for a cluster with nodes older than batch entries.
	NoBatchEntries bool
	// NoCommitNotify turns off the leader's immediate commit notices to
	// followers (commitnotify.go); followers then learn of a commit with the
	// next entries or after CommitTimeout. For tests and comparisons.
	NoCommitNotify bool

	// OnDiskFailure is called when a write to the Raft log or stable store
	// fails (e.g. fsync returned EIO). Default: log and exit with status 70
	// — the node must not go on with a log whose durability is unknown.
	OnDiskFailure func(error)

	// Logger receives Raft's and the node's logs.
	Logger *slog.Logger
}

// DefaultConfig returns production defaults; ID, Addr and DataDir must be set.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
		MaxAppendEntries:   256,
		MaxApplyGroups:     1,
		ApplyLinger:        3 * time.Millisecond,
		BarrierTimeout:     10 * time.Second,
		Logger:             slog.Default(),
	}
}

// checkBootstrapAddr checks, before a first start bootstraps the cluster
// from Peers, that Peers gives this node the address it advertises: every
// node must bootstrap the same configuration. (After the first start a
// changed address is the cluster's to apply: server/members.go.)
func (c *Config) checkBootstrapAddr() error {
	for _, p := range c.Peers {
		if p.ID == c.ID && p.Addr != c.Addr {
			return fmt.Errorf("peers list %s=%s but this node advertises %s: they must match on the first start", p.ID, p.Addr, c.Addr)
		}
	}
	return nil
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if err := ValidateID(c.ID); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("node address %q is not host:port: %v", c.Addr, err)
	}
	if c.DataDir == "" {
		return errors.New("data dir is not set")
	}
	if !validLogStore(c.LogStore) {
		return fmt.Errorf("log store %q: want %s or %s", c.LogStore, LogStoreBolt, LogStoreWAL)
	}
	if len(c.Peers) > 0 && !c.NoBootstrap && !slices.ContainsFunc(c.Peers, func(p Peer) bool { return p.ID == c.ID }) {
		return fmt.Errorf("node id %q is not in the peers list (a node joining a running cluster uses -join)", c.ID)
	}
	if c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < 5*time.Millisecond {
		return fmt.Errorf("raft heartbeat (%v) and election (%v) timeouts must be at least 5ms", c.HeartbeatTimeout, c.ElectionTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return fmt.Errorf("leader lease timeout %v must not exceed the heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		return fmt.Errorf("max append entries %d: want 1-1024", c.MaxAppendEntries)
	}
	if c.SnapshotRetain < 1 {
		return fmt.Errorf("snapshot retain %d: want at least 1", c.SnapshotRetain)
	}
	return nil
}
