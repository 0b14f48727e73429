package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDataDir_DamagedRaftDBExitsWithOneLineAndRecovers: a node whose raft.db
// was garbled exits with status 65 and one line naming the file and what
// to do — no panic trace; doing what it says (the data dir moved aside, the
// node started with an empty one) brings it back with the cluster's state.
func TestDataDir_DamagedRaftDBExitsWithOneLineAndRecovers(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)
	reg := h.start("register", "register", "-servers", all, "web", "10.8.0.1:80")
	h.waitServices(all, "web", func(l []instance) bool { return len(l) == 1 }, "one instance")

	// A follower stopped, its raft.db garbled past its two meta pages.
	st := h.waitStable(all, c.ids(), 30*time.Second)
	var victim *node
	for _, nd := range c.nodes {
		if nd.id != st.Leader {
			victim = nd
			break
		}
	}
	victim.p.signal(t, syscall.SIGTERM)
	victim.p.wait(t, 20*time.Second)
	db := filepath.Join(victim.dataDir, "raft.db")
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, fi.Size()-8192)
	for i := range garbage {
		garbage[i] = byte(i*7 + 13)
	}
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(garbage, 8192); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c.startNode(victim)
	if code := victim.p.wait(t, 20*time.Second); code != 65 {
		t.Fatalf("exit status %d, want 65", code)
	}
	data, err := os.ReadFile(victim.p.Log())
	if err != nil {
		t.Fatal(err)
	}
	var errLines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "discoverd server:") {
			errLines = append(errLines, l)
		}
	}
	out := string(data[strings.LastIndex(string(data), "=== "):])
	if len(errLines) == 0 || !strings.Contains(errLines[len(errLines)-1], "raft.db") ||
		!strings.Contains(errLines[len(errLines)-1], "move the data dir aside") {
		t.Fatalf("no one-line error naming raft.db and what to do:\n%s", out)
	}
	if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic:") {
		t.Fatalf("a panic trace:\n%s", out)
	}

	// As the message says: move the data dir aside, start with an empty one.
	if err := os.Rename(victim.dataDir, victim.dataDir+".damaged"); err != nil {
		t.Fatal(err)
	}
	c.startNode(victim)
	h.waitStable(all, c.ids(), 30*time.Second)
	h.waitServices(victim.addr, "web", func(l []instance) bool { return len(l) == 1 },
		fmt.Sprintf("the instance on %s, caught up from its peers", victim.id))
	reg.signal(t, syscall.SIGTERM)
	reg.wait(t, 10*time.Second)
}
