package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/test/prockit"
)

// The Raft log store (-raft-log-store) with real processes: a cluster on
// the WAL through kill -9, and one node of a bolt cluster moved to the WAL
// the way docs/operations.md says, then killed.

// registrar returns a client of servers that stays open until the test
// ends (closing a client unregisters what it registered).
func registrar(t *testing.T, servers string) *client.Client {
	t.Helper()
	cl, err := client.NewWithConfig(client.Config{Servers: strings.Split(servers, ","), Host: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// registerN registers n instances of service name, addresses from first
// on, through a new registrar of servers, with a TTL that outlives the test.
func registerN(t *testing.T, servers, name string, first, n int) {
	t.Helper()
	if err := register(registrar(t, servers), name, first, n); err != nil {
		t.Fatal(err)
	}
}

func register(cl *client.Client, name string, first, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := first; i < first+n; i++ {
		if err := cl.RegisterAddr(ctx, name, fmt.Sprintf("10.9.%d.%d:80", i/200, i%200+1), nil, time.Hour); err != nil {
			return fmt.Errorf("register %d: %w", i, err)
		}
	}
	return nil
}

// sameState waits until every node of c has applied the same index with the
// same state hash, and that state holds want instances of name.
func sameState(t *testing.T, h *harness, c *cluster, name string, want int) {
	t.Helper()
	poll(t, 30*time.Second, 200*time.Millisecond, "the same state hash on every node", func() (bool, string) {
		vs := views(t, c, nil)
		var first view
		for i, nd := range c.nodes {
			v := vs[nd.id]
			if i == 0 {
				first = v
			}
			if v.applied == 0 || v.applied != first.applied || v.hash != first.hash {
				return false, fmt.Sprint(vs)
			}
		}
		return true, ""
	})
	list, err := h.services(c.servers(), name)
	if err != nil || len(list) != want {
		t.Fatalf("services %s: %d instances, %v; want %d", name, len(list), err, want)
	}
}

// logStores returns "id=store,..." from status, in the cluster's order.
func logStores(t *testing.T, h *harness, c *cluster) string {
	t.Helper()
	st, err := h.status(c.servers())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, nd := range c.nodes {
		n, _ := st.node(nd.id)
		out = append(out, nd.id+"="+n.LogStore)
	}
	return strings.Join(out, ",")
}

// TestLogStore_WALClusterSurvivesKill9: a 3-node cluster on the WAL keeps
// every acknowledged registration through kill -9 of its leader and then
// of a follower, each restarted on its data dir while writes go on; every
// node ends at the same state hash.
func TestLogStore_WALClusterSurvivesKill9(t *testing.T) {
	h := newHarness(t)
	c := h.startClusterWith(3, func(*node) []string { return []string{"-raft-log-store", "wal"} })
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	if got := logStores(t, h, c); got != "n1=wal,n2=wal,n3=wal" {
		t.Fatalf("log stores %s", got)
	}
	for _, nd := range c.nodes {
		if _, err := os.Stat(filepath.Join(nd.dataDir, "raft.db")); !os.IsNotExist(err) {
			t.Errorf("%s has a raft.db: %v", nd.id, err)
		}
	}
	registerN(t, c.servers(), "web", 0, 50)

	leader := c.node(st.Leader)
	leader.p.kill9(t)
	h.waitNewLeader(c.servers(leader.id), leader.id, leader.id, 20*time.Second)
	registerN(t, c.servers(leader.id), "web", 50, 20)
	c.startNode(leader)
	st = h.waitStable(c.servers(), c.ids(), 30*time.Second)
	sameState(t, h, c, "web", 70)

	var follower *node
	for _, nd := range c.nodes {
		if nd.id != st.Leader {
			follower = nd
		}
	}
	cl := registrar(t, c.servers(follower.id))
	done := make(chan error)
	go func() { done <- register(cl, "web", 70, 30) }() // writes while the follower dies
	follower.p.kill9(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.startNode(follower)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	sameState(t, h, c, "web", 100)
}

// TestLogStore_MoveOneNodeToWAL: n1 of a bolt cluster is moved to the WAL
// as docs/operations.md says. Restarted with -raft-log-store wal on its
// bolt data dir it exits 1 with one line that says how; removed, emptied
// and started with -join it catches up, and the cluster runs mixed (one WAL
// node, two bolt ones) through writes and a kill -9 of the WAL node.
func TestLogStore_MoveOneNodeToWAL(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	registerN(t, c.servers(), "web", 0, 30)
	n1 := c.node("n1")

	// The flag alone is refused.
	n1.p.signal(t, syscall.SIGTERM)
	n1.p.wait(t, 20*time.Second)
	args := append(prockit.ServerArgs(n1.id, n1.addr, n1.dataDir, c.peers), prockit.RaftFlags()...)
	p := h.start("server-n1-wal-refused", append(args, "-raft-log-store", "wal")...)
	if code := p.wait(t, 20*time.Second); code != 1 {
		t.Fatalf("n1 on its bolt data dir with -raft-log-store wal: exit %d, want 1", code)
	}
	if !p.logContains("discoverd server: data dir "+n1.dataDir+" holds a bolt Raft log") || !p.logContains("members remove") {
		t.Fatalf("no one-line refusal that says how to change the store")
	}

	// docs/operations.md, "Change a node's log store".
	h.mustCLI(20*time.Second, "members", "remove", "-id", "n1", "-servers", c.servers("n1"))
	if err := os.Rename(n1.dataDir, n1.dataDir+".bolt"); err != nil {
		t.Fatal(err)
	}
	walArgs := append([]string{"server", "-id", n1.id, "-addr", n1.addr, "-data-dir", n1.dataDir,
		"-join", c.servers("n1"), "-raft-log-store", "wal"}, prockit.RaftFlags()...)
	n1.p = h.start("server-n1-wal", walArgs...)
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any", 30*time.Second)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	if got := logStores(t, h, c); got != "n1=wal,n2=bolt,n3=bolt" {
		t.Fatalf("log stores %s", got)
	}
	sameState(t, h, c, "web", 30)

	registerN(t, c.servers(), "web", 30, 20)
	n1.p.kill9(t)
	registerN(t, c.servers("n1"), "web", 50, 20)
	n1.p = h.start("server-n1-wal", walArgs...) // -join is ignored: the data dir holds the members
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	sameState(t, h, c, "web", 70)
}
