package raftnode_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/server"
	"github.com/discoverd/discoverd/server/servertest"
)

// TestRaftnode_NodesRestartAfterARestore: hashicorp/raft's user restore
// leaves a hole in the log at its snapshot's index, on the leader and on
// every follower that installs it. Every node, restarted after a restore,
// starts (the hole is covered by a snapshot: not damage) and comes back to
// the cluster's state. (Each node used to refuse to start: "log entry N of
// 1–M: log not found".) With the WAL, which takes no hole, raft deletes the
// whole log instead; the nodes restart all the same.
func TestRaftnode_NodesRestartAfterARestore(t *testing.T) {
	for _, store := range []string{raftnode.LogStoreBolt, raftnode.LogStoreWAL} {
		t.Run(store, func(t *testing.T) { restartAfterRestore(t, store) })
	}
}

func restartAfterRestore(t *testing.T, store string) {
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) { cfg.Raft.LogStore = store }})
	st := c.WaitLeader().Srv.Store()
	ctx := servertest.Context(t, time.Minute)
	register := func(addr string) {
		t.Helper()
		if _, err := st.Register(ctx, backend.Registration{Name: "web", Addr: addr, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	register("10.0.0.1:80")
	sf, err := st.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file, err := io.ReadAll(sf)
	_ = sf.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		register(fmt.Sprintf("10.0.1.%d:80", i+1))
	}
	if _, err := st.RestoreSnapshot(ctx, bytes.NewReader(file), int64(len(file)), backend.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	register("10.0.2.1:80") // an entry after the hole
	idx, hash := c.WaitLeader().Srv.FSM().Hash()
	c.WaitApplied(idx)
	for i := range c.Nodes {
		c.Stop(i)
		c.Restart(i) // fails the test if the node does not start
		st = c.WaitLeader().Srv.Store()
	}
	servertest.WaitFor(t, 15*time.Second, "every restarted node at the restored state and the write after it", func() bool {
		for _, n := range c.Running() {
			if i, h := n.Srv.FSM().Hash(); i != idx || h != hash {
				return false
			}
		}
		return len(c.Running()) == 3
	})
}
