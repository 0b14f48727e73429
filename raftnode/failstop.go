package raftnode

import (
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/histogram"
)

// failStopStore wraps the log and stable store (bolt or WAL, as opened:
// rawStore): a write that fails
// (an fsync that returned EIO, a full disk) stops the node instead of
// letting it carry on. After a failed fsync the kernel may already have
// dropped the dirty pages, so what the store holds is no longer known —
// the lesson of PostgreSQL's "fsyncgate"; etcd stops on a failed WAL sync
// for the same reason. Restarted, the node recovers from what is durably on
// disk and catches up from the leader. (hashicorp/raft itself already
// panics when it cannot save its term or vote.)
type failStopStore struct {
	rawStore
	fail  func(error)
	stats *appendStats
}

// appendStats counts the log's appends (each one bbolt transaction with its
// two fsyncs, or one WAL append with its one): how many, how many entries they carried, how long they took, and
// the same per append in histograms (/metrics; nil: not kept).
type appendStats struct {
	appends, entries, micros atomic.Uint64
	latency, size            *histogram.Histogram // microseconds, entries
}

// newAppendStats returns stats with their histograms.
func newAppendStats() *appendStats {
	return &appendStats{latency: histogram.New(histogram.LatencyUS...), size: histogram.New(histogram.Sizes...)}
}

var (
	_ raft.LogStore          = failStopStore{}
	_ raft.StableStore       = failStopStore{}
	_ raft.MonotonicLogStore = failStopStore{}
)

// IsMonotonic passes the store's own answer on (through raft.LogCache, which
// asks the store it wraps): raft-wal takes no gap in the log, so after
// installing or restoring a snapshot hashicorp/raft deletes the whole log
// instead of leaving a hole at the snapshot's index (DESIGN.md, "The hole").
func (s failStopStore) IsMonotonic() bool {
	m, ok := s.rawStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (s failStopStore) check(op string, err error) error {
	if err != nil {
		s.fail(fmt.Errorf("raft store %s failed: %w", op, err))
	}
	return err
}

func (s failStopStore) StoreLog(l *raft.Log) error {
	return s.check("StoreLog", s.rawStore.StoreLog(l))
}

func (s failStopStore) StoreLogs(ls []*raft.Log) error {
	start := time.Now()
	err := s.check("StoreLogs", s.rawStore.StoreLogs(ls))
	if s.stats != nil {
		us := uint64(time.Since(start).Microseconds())
		s.stats.appends.Add(1)
		s.stats.entries.Add(uint64(len(ls)))
		s.stats.micros.Add(us)
		s.stats.latency.Observe(us)
		s.stats.size.Observe(uint64(len(ls)))
	}
	return err
}

func (s failStopStore) DeleteRange(min, max uint64) error {
	return s.check("DeleteRange", s.rawStore.DeleteRange(min, max))
}

func (s failStopStore) Set(k, v []byte) error { return s.check("Set", s.rawStore.Set(k, v)) }

func (s failStopStore) SetUint64(k []byte, v uint64) error {
	return s.check("SetUint64", s.rawStore.SetUint64(k, v))
}

// exitOnDiskFailure is the default Config.OnDiskFailure: log and exit.
func exitOnDiskFailure(log *slog.Logger) func(error) {
	return func(err error) {
		log.Error("stopping: the Raft log could not be written durably; restart the node to recover from disk", "err", err)
		os.Exit(70)
	}
}
