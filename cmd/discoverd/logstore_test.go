package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/raftnode"
)

// TestCLI_RaftLogStoreFlag: -raft-log-store is bolt by default, takes wal
// from the command line or a config file (for server and dev), and refuses
// anything else and -backend etcd as usage errors; a start that asks for
// another store than the data dir holds exits 1 saying how to change it.
func TestCLI_RaftLogStoreFlag(t *testing.T) {
	configOf := func(t *testing.T, args ...string) string {
		t.Helper()
		f, err := serverFlagsFrom(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := f.config(nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Raft.LogStore
	}
	if got := configOf(t); got != raftnode.LogStoreBolt {
		t.Errorf("default: %q, want bolt", got)
	}
	if got := configOf(t, "-raft-log-store", "wal"); got != raftnode.LogStoreWAL {
		t.Errorf("-raft-log-store wal: %q", got)
	}
	if got := configOf(t, "-config", writeConfig(t, "n1.yaml", "raft-log-store: wal\n")); got != raftnode.LogStoreWAL {
		t.Errorf("raft-log-store: wal in a config file: %q", got)
	}
	if got := configOf(t, "-config", writeConfig(t, "n1.json", `{"raft-log-store": "wal"}`), "-raft-log-store", "bolt"); got != raftnode.LogStoreBolt {
		t.Errorf("the command line's bolt over the file's wal: %q", got)
	}

	// dev shares the flag.
	var f serverFlags
	fs := newFlagSet("dev", "", io.Discard)
	f.register(fs, false)
	if err := parse(fs, []string{"-raft-log-store", "wal"}); err != nil || f.logStore != raftnode.LogStoreWAL {
		t.Errorf("dev -raft-log-store wal: %q, %v", f.logStore, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-raft-log-store", "lmdb"}, `-raft-log-store "lmdb": want bolt or wal`},
		{[]string{"dev", "-raft-log-store", "WAL"}, `-raft-log-store "WAL": want bolt or wal`},
		{[]string{"server", "-backend", "etcd", "-etcd-endpoints", "http://127.0.0.1:2379", "-raft-log-store", "wal"}, "-raft-log-store applies to the raft backend"},
		{[]string{"server", "-config", writeConfig(t, "bad.yaml", "id: n1\nraft-log-store: btree\n"), "-data-dir", t.TempDir()}, `-raft-log-store "btree"`},
	} {
		code, _, errs := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}

	// A data dir that holds bolt, started with wal: refused before it
	// serves, exit status 1 (as for another node's data dir), one line.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "log-store"), []byte("bolt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "server", "-id", "n1", "-data-dir", dir, "-addr", closedAddr(t), "-raft-log-store", "wal", "-log-level", "error")
	if code != 1 || !strings.Contains(errs, "discoverd server: data dir "+dir+" holds a bolt Raft log") ||
		!strings.Contains(errs, "start the node with -raft-log-store bolt") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("a bolt data dir started with wal: exit %d, stderr %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "wal")); !os.IsNotExist(err) {
		t.Errorf("the refused start made %s/wal: %v", dir, err)
	}
}
