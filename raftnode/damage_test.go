package raftnode_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/server"
	"github.com/discoverd/discoverd/server/servertest"
)

// damageCase is one way to damage a copy of a data dir, and the file the
// refusal must name ("" when the node starts all the same: what the check
// cannot see; it then holds left of the 25 registrations).
type damageCase struct {
	name   string
	damage func(dir string) error
	file   string
	left   int
}

// TestRaftnode_DamagedDataDirIsRefused: a node's data dir written by a real
// node, then damaged in each way a disk or an operator damages files, is
// refused at start with ErrDataDirDamaged and a message naming the file;
// the undamaged copy starts.
func TestRaftnode_DamagedDataDirIsRefused(t *testing.T) {
	dir, snapRel := damageSource(t, raftnode.LogStoreBolt)
	fi, err := os.Stat(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	cases := []damageCase{
		{"raft.db truncated after its meta pages", func(dir string) error { return os.Truncate(filepath.Join(dir, "raft.db"), 8192) }, "raft.db", 0},
		{"raft.db truncated to 100 bytes", func(dir string) error { return os.Truncate(filepath.Join(dir, "raft.db"), 100) }, "raft.db", 0},
		{"raft.db garbled past its meta pages", overwrite("raft.db", 8192, random(int(size)-8192)), "raft.db", 0},
		{"both meta pages of raft.db zeroed", overwrite("raft.db", 0, make([]byte, 8192)), "raft.db", 0},
		{"a log entry after the snapshot missing", func(dir string) error {
			// A hole below the newest snapshot is what a restore leaves
			// (backup_test.go); one above it is entries lost.
			store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
			if err != nil {
				return err
			}
			defer store.Close()
			last, err := store.LastIndex()
			if err != nil {
				return err
			}
			return store.DeleteRange(last-1, last-1)
		}, "raft.db", 0},
	}
	runDamage(t, raftnode.LogStoreBolt, dir, append(cases, snapshotDamage(snapRel)...))
}

// TestRaftnode_DamagedWALDataDirIsRefused: the same with the WAL. What
// the check cannot see is pinned down too (raftnode/DESIGN.md, "Storage"):
// raft-wal takes damage inside its newest segment for a write torn by a
// crash and drops the entries from there on, and makes a missing newest
// segment anew, empty. The node starts without them (a member of a
// cluster gets them back from its peers).
func TestRaftnode_DamagedWALDataDirIsRefused(t *testing.T) {
	dir, snapRel := damageSource(t, raftnode.LogStoreWAL)
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments %v, want one", segs)
	}
	seg, _ := filepath.Rel(dir, segs[0])
	meta := filepath.Join("wal", "wal-meta.db")
	fi, err := os.Stat(filepath.Join(dir, meta))
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	cases := []damageCase{
		{"wal-meta.db truncated to 100 bytes", func(dir string) error { return os.Truncate(filepath.Join(dir, meta), 100) }, "wal", 0},
		{"wal-meta.db garbled past its meta pages", overwrite(meta, 8192, random(int(size)-8192)), "wal", 0},
		{"both meta pages of wal-meta.db zeroed", overwrite(meta, 0, make([]byte, 8192)), "wal", 0},
		{"the segment's header garbled", overwrite(seg, 0, random(32)), "wal", 0},
		// The 5 registrations after the snapshot are lost.
		{"the segment garbled after its header (not seen)", overwrite(seg, 32, random(64)), "", 20},
		{"the segment removed (not seen)", func(dir string) error { return os.Remove(filepath.Join(dir, seg)) }, "", 20},
	}
	runDamage(t, raftnode.LogStoreWAL, dir, append(cases, snapshotDamage(snapRel)...))
}

// damageSource writes a one-node data dir with store: 20 registrations, a
// snapshot, the log compacted past it, 5 more. It returns the stopped
// node's data dir and its snapshot's directory, relative to it.
func damageSource(t *testing.T, store string) (dir, snapRel string) {
	c := servertest.New(t, servertest.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.Raft.TrailingLogs = 2 // compact: the log then starts after the snapshot
		cfg.Raft.LogStore = store
	}})
	n := c.Nodes[0]
	cl := c.Client()
	ctx := servertest.Context(t, 20*time.Second)
	for i := range 20 {
		if err := cl.RegisterAddr(ctx, "web", fmt.Sprintf("10.0.0.%d:80", i+1), nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Srv.Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // entries after the snapshot too
		if err := cl.RegisterAddr(ctx, "web", fmt.Sprintf("10.0.1.%d:80", i+1), nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	c.Stop(0)
	snapDirs, _ := filepath.Glob(filepath.Join(n.Dir, "snapshots", "snapshots", "*"))
	if len(snapDirs) != 1 {
		t.Fatalf("snapshots %v, want one", snapDirs)
	}
	snapRel, _ = filepath.Rel(n.Dir, snapDirs[0]) // snapshots/snapshots/<id>
	return n.Dir, snapRel
}

// snapshotDamage are the damages to the snapshot, the same for both stores.
func snapshotDamage(snapRel string) []damageCase {
	return []damageCase{
		{"state.bin truncated", func(dir string) error { return os.Truncate(filepath.Join(dir, snapRel, "state.bin"), 10) }, "snapshots", 0},
		{"state.bin garbled", overwrite(filepath.Join(snapRel, "state.bin"), 20, random(30)), "snapshots", 0},
		{"meta.json garbled", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, snapRel, "meta.json"), []byte("garbage"), 0o600)
		}, filepath.Join(snapRel, "meta.json"), 0},
		{"the snapshot removed, the log compacted", func(dir string) error { return os.RemoveAll(filepath.Join(dir, snapRel)) }, "snapshots", 0},
	}
}

// runDamage starts a node on a damaged copy of src for each case: refused,
// naming the file, or (file "") started; then on an undamaged copy, which
// must hold all 25 registrations.
func runDamage(t *testing.T, store, src string, cases []damageCase) {
	start := func(dir string) (*server.Server, error) {
		cfg := server.Config{Raft: raftnode.DefaultConfig(), Logger: slog.New(slog.DiscardHandler)}
		cfg.Raft.ID, cfg.Raft.Addr, cfg.Raft.DataDir, cfg.Raft.LogStore = "n1", "127.0.0.1:1", dir, store
		cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = servertest.HeartbeatTimeout, servertest.ElectionTimeout, servertest.HeartbeatTimeout/2
		cfg.TTL.Grace = time.Second
		cfg.BindAddr = "127.0.0.1:0"
		return server.Start(cfg)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, src)
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			srv, err := start(dir)
			if tc.file == "" {
				if err != nil {
					t.Fatalf("damage the check cannot see refused the start: %v", err)
				}
				defer srv.Kill()
				servertest.WaitFor(t, 10*time.Second, fmt.Sprintf("%d registrations", tc.left), func() bool {
					_, ins := srv.FSM().List("web", nil)
					return len(ins) == tc.left
				})
				return
			}
			if err == nil {
				_ = srv.Kill()
				t.Fatal("a damaged data dir started")
			}
			if !errors.Is(err, raftnode.ErrDataDirDamaged) {
				t.Fatalf("error %v is not ErrDataDirDamaged", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "data dir "+dir+" is damaged: "+tc.file) || strings.Contains(msg, "\n") ||
				!strings.Contains(msg, "move the data dir aside") {
				t.Errorf("message %q: want one line naming %s and what to do", msg, tc.file)
			}
		})
	}
	t.Run("undamaged", func(t *testing.T) {
		srv, err := start(copyDir(t, src))
		if err != nil {
			t.Fatalf("the undamaged copy: %v", err)
		}
		defer srv.Kill()
		servertest.WaitFor(t, 10*time.Second, "the restored state", func() bool {
			_, ins := srv.FSM().List("web", nil)
			return len(ins) == 25
		})
	})
}

// overwrite returns a damage that writes b at off into the file rel.
func overwrite(rel string, off int64, b []byte) func(dir string) error {
	return func(dir string) error {
		f, err := os.OpenFile(filepath.Join(dir, rel), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(b, off)
		return err
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func copyDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}
