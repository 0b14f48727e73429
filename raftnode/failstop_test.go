package raftnode

import (
	"errors"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestRaftnode_StoreWriteFailureStopsTheNode: any failed write to the log or
// stable store reaches the fail-stop hook (the node exits in production),
// with either store.
func TestRaftnode_StoreWriteFailureStopsTheNode(t *testing.T) {
	for _, name := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var store rawStore
			var err error
			if name == LogStoreWAL {
				store, err = openWAL(dir, hclog.NewNullLogger())
			} else {
				store, err = openBolt(dir)
			}
			if err != nil {
				t.Fatal(err)
			}
			var failed []error
			fs := failStopStore{rawStore: store, fail: func(err error) { failed = append(failed, err) }}
			if err := fs.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")}); err != nil || len(failed) != 0 {
				t.Fatalf("healthy write: %v, hook called %d times", err, len(failed))
			}
			_ = store.Close() // every write fails from now on
			ops := map[string]func() error{
				"StoreLog":    func() error { return fs.StoreLog(&raft.Log{Index: 2, Term: 1}) },
				"StoreLogs":   func() error { return fs.StoreLogs([]*raft.Log{{Index: 2, Term: 1}}) },
				"DeleteRange": func() error { return fs.DeleteRange(1, 1) },
				"Set":         func() error { return fs.Set([]byte("k"), []byte("v")) },
				"SetUint64":   func() error { return fs.SetUint64([]byte("k"), 1) },
			}
			for op, call := range ops {
				before := len(failed)
				err := call()
				if err == nil || len(failed) != before+1 || !errors.Is(failed[before], err) {
					t.Errorf("%s on a broken store: err %v, hook calls %d→%d", op, err, before, len(failed))
				}
			}
		})
	}
}
