package raftnode_test

import (
	"crypto/rand"
	"errors"
	"fmt"
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

// TestRaftnode_DamagedDataDirIsRefused: a node's data dir written by a real
// node, then damaged in each way a disk or an operator damages files, is
// refused at start with ErrDataDirDamaged and a message naming the file;
// the undamaged copy starts.
func TestRaftnode_DamagedDataDirIsRefused(t *testing.T) {
	c := servertest.New(t, servertest.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.Raft.TrailingLogs = 2 // compact: the log then starts after the snapshot
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
	snapRel, _ := filepath.Rel(n.Dir, snapDirs[0]) // snapshots/snapshots/<id>
	fi, err := os.Stat(filepath.Join(n.Dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()

	// Each damage is done to a fresh copy of the data dir.
	overwrite := func(rel string, off int64, b []byte) func(dir string) error {
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
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	for _, tc := range []struct {
		name   string
		damage func(dir string) error
		file   string // the file the message must name
	}{
		{"raft.db truncated after its meta pages", func(dir string) error { return os.Truncate(filepath.Join(dir, "raft.db"), 8192) }, "raft.db"},
		{"raft.db truncated to 100 bytes", func(dir string) error { return os.Truncate(filepath.Join(dir, "raft.db"), 100) }, "raft.db"},
		{"raft.db garbled past its meta pages", overwrite("raft.db", 8192, random(int(size)-8192)), "raft.db"},
		{"both meta pages of raft.db zeroed", overwrite("raft.db", 0, make([]byte, 8192)), "raft.db"},
		{"state.bin truncated", func(dir string) error { return os.Truncate(filepath.Join(dir, snapRel, "state.bin"), 10) }, "snapshots"},
		{"state.bin garbled", overwrite(filepath.Join(snapRel, "state.bin"), 20, random(30)), "snapshots"},
		{"meta.json garbled", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, snapRel, "meta.json"), []byte("garbage"), 0o600)
		}, filepath.Join(snapRel, "meta.json")},
		{"the snapshot removed, the log compacted", func(dir string) error { return os.RemoveAll(filepath.Join(dir, snapRel)) }, "snapshots"},
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
		}, "raft.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, n.Dir)
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			cfg := c.Config(0)
			cfg.Raft.DataDir = dir
			cfg.BindAddr = "127.0.0.1:0"
			srv, err := server.Start(cfg)
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
		cfg := c.Config(0)
		cfg.Raft.DataDir = copyDir(t, n.Dir)
		cfg.BindAddr = "127.0.0.1:0"
		srv, err := server.Start(cfg)
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

func copyDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}
