package raftnode_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/server"
	"github.com/discoverd/discoverd/server/servertest"
)

// TestRaftnode_WALKeepsTheLogAcrossRestarts: a 3-node cluster on the WAL
// keeps its log in <data-dir>/wal (no raft.db), says so in its status, and
// every node, stopped or killed and started again, comes back with the
// cluster's state (its appends timed meanwhile as bolt's are): its log, term and vote were on disk. One node's log is
// compacted behind a snapshot first, so a restart reads both.
func TestRaftnode_WALKeepsTheLogAcrossRestarts(t *testing.T) {
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.Raft.LogStore = raftnode.LogStoreWAL
		cfg.Raft.TrailingLogs = 4
	}})
	cl := c.Client()
	ctx := servertest.Context(t, time.Minute)
	register := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := cl.RegisterAddr(ctx, "web", fmt.Sprintf("10.0.0.%d:80", i+1), nil, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
	}
	register(0, 20)
	if err := c.Nodes[1].Srv.Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	register(20, 30)
	for _, n := range c.Nodes {
		st := n.Srv.Node().Status()
		if st.LogStore != raftnode.LogStoreWAL {
			t.Errorf("%s: status says log store %q", n.ID, st.LogStore)
		}
		// The appends are timed as bolt's are (status, /metrics).
		h := n.Srv.Node().Histograms()
		if st.LogAppends == 0 || st.LogEntries < st.LogAppends || st.LogAppendUS == 0 ||
			h.AppendUS.Count < st.LogAppends || h.AppendEntries.Sum < st.LogEntries { // read after the status
			t.Errorf("%s: appends %d, entries %d, %d µs; histograms %d appends, %d entries", n.ID,
				st.LogAppends, st.LogEntries, st.LogAppendUS, h.AppendUS.Count, h.AppendEntries.Sum)
		}
		if b, err := os.ReadFile(filepath.Join(n.Dir, "log-store")); err != nil || string(b) != "wal\n" {
			t.Errorf("%s: log-store holds %q, %v", n.ID, b, err)
		}
		if _, err := os.Stat(filepath.Join(n.Dir, "raft.db")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: raft.db: %v, want none", n.ID, err)
		}
		if segs, _ := filepath.Glob(filepath.Join(n.Dir, "wal", "*.wal")); len(segs) == 0 {
			t.Errorf("%s: no WAL segment in %s", n.ID, filepath.Join(n.Dir, "wal"))
		}
	}
	same := func(what string) {
		t.Helper()
		idx, hash := c.WaitLeader().Srv.FSM().Hash()
		servertest.WaitFor(t, 20*time.Second, what, func() bool {
			for _, n := range c.Running() {
				if i, h := n.Srv.FSM().Hash(); i != idx || h != hash {
					return false
				}
			}
			return len(c.Running()) == len(c.Nodes)
		})
	}
	same("every node at the same state")
	for i := range c.Nodes {
		c.Stop(i)
		c.Restart(i)
		c.WaitLeader()
	}
	same("every node at the same state after a stop and a start")
	for i := range c.Nodes {
		c.Kill(i)
		register(30+i, 31+i) // the others go on
		c.Restart(i)
		c.WaitLeader()
	}
	same("every node at the same state after a kill and a start")
	_, ins := c.WaitLeader().Srv.FSM().List("web", nil)
	if len(ins) != 33 {
		t.Errorf("%d instances, want 33", len(ins))
	}
}

// TestRaftnode_LogStoreIsRecordedAndRefused: a data dir records the log
// store it was first started with; a later start that asks for the other
// is refused with ErrLogStoreMismatch and a message that says how to
// change it, before anything is written; asking for none takes the
// recorded one; and a data dir from before the record (raft.db, no
// log-store file) holds bolt.
func TestRaftnode_LogStoreIsRecordedAndRefused(t *testing.T) {
	start := func(dir, store string) (*server.Server, error) {
		cfg := server.Config{Raft: raftnode.DefaultConfig(), Logger: slog.New(slog.DiscardHandler)}
		cfg.Raft.ID, cfg.Raft.Addr, cfg.Raft.DataDir, cfg.Raft.LogStore = "n1", "127.0.0.1:1", dir, store
		cfg.TTL.Grace = time.Second
		cfg.BindAddr = "127.0.0.1:0"
		return server.Start(cfg)
	}
	mustStart := func(t *testing.T, dir, store string) {
		t.Helper()
		srv, err := start(dir, store)
		if err != nil {
			t.Fatalf("start with %q: %v", store, err)
		}
		ctx := servertest.Context(t, 10*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	record := func(t *testing.T, dir string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "log-store"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	refused := func(t *testing.T, dir, store, holds string) {
		t.Helper()
		before, _ := os.ReadDir(dir)
		srv, err := start(dir, store)
		if err == nil {
			_ = srv.Kill()
			t.Fatalf("a %s data dir started with %s", holds, store)
		}
		if !errors.Is(err, raftnode.ErrLogStoreMismatch) || errors.Is(err, raftnode.ErrDataDirDamaged) {
			t.Fatalf("error %v: want ErrLogStoreMismatch only", err)
		}
		for _, want := range []string{"data dir " + dir + " holds a " + holds + " Raft log", "-raft-log-store " + holds,
			"members remove", "-raft-log-store " + store + " and -join", "docs/operations.md"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not say %q", err, want)
			}
		}
		if after, _ := os.ReadDir(dir); len(after) != len(before) {
			t.Errorf("the refused start changed the data dir: %v → %v", before, after)
		}
	}

	t.Run("bolt", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		mustStart(t, dir, raftnode.LogStoreBolt)
		if r := record(t, dir); r != "bolt" {
			t.Fatalf("recorded %q", r)
		}
		refused(t, dir, raftnode.LogStoreWAL, "bolt")
		mustStart(t, dir, "")
		mustStart(t, dir, raftnode.LogStoreBolt)
	})
	t.Run("wal", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		mustStart(t, dir, raftnode.LogStoreWAL)
		if r := record(t, dir); r != "wal" {
			t.Fatalf("recorded %q", r)
		}
		refused(t, dir, raftnode.LogStoreBolt, "wal")
		mustStart(t, dir, "")
		mustStart(t, dir, raftnode.LogStoreWAL)
		if _, err := os.Stat(filepath.Join(dir, "raft.db")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("raft.db: %v, want none", err)
		}
	})
	t.Run("new data dir, no store asked for", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		mustStart(t, dir, "")
		if r := record(t, dir); r != "bolt" {
			t.Fatalf("recorded %q, want bolt", r)
		}
	})
	t.Run("a data dir from before the record", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		mustStart(t, dir, raftnode.LogStoreBolt)
		if err := os.Remove(filepath.Join(dir, "log-store")); err != nil {
			t.Fatal(err)
		}
		refused(t, dir, raftnode.LogStoreWAL, "bolt")
		mustStart(t, dir, raftnode.LogStoreBolt)
		if r := record(t, dir); r != "bolt" {
			t.Fatalf("recorded %q, want bolt", r)
		}
	})
	t.Run("a record that names no store", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		mustStart(t, dir, raftnode.LogStoreWAL)
		if err := os.WriteFile(filepath.Join(dir, "log-store"), []byte("lmdb\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if srv, err := start(dir, raftnode.LogStoreWAL); err == nil || !strings.Contains(err.Error(), `holds "lmdb"`) {
			if srv != nil {
				_ = srv.Kill()
			}
			t.Fatalf("start on a record of lmdb: %v", err)
		}
	})
}

// TestRaftnode_WALDataDirIsLocked: a second node on a WAL data dir that a
// running node holds is refused within the lock timeout, not left waiting
// for raft-wal's metadata database (which it opens without a timeout).
func TestRaftnode_WALDataDirIsLocked(t *testing.T) {
	c := servertest.New(t, servertest.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.Raft.LogStore = raftnode.LogStoreWAL
	}})
	cfg := c.Config(0)
	cfg.BindAddr = "127.0.0.1:0"
	begin := time.Now()
	srv, err := server.Start(cfg)
	if err == nil {
		_ = srv.Kill()
		t.Fatal("a second node started on a data dir in use")
	}
	if !strings.Contains(err.Error(), "another discoverd holds it") || time.Since(begin) > 10*time.Second {
		t.Fatalf("after %v: %v", time.Since(begin), err)
	}
}
