package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/test/prockit"
)

// Membership changes with real processes: growing and shrinking a cluster
// under load, replacing a dead node, read replicas, refusals, recovery
// from a lost quorum, a changed address and the dead-server cleanup.

// membersOut is the -json output of `discoverd members`.
type membersOut struct {
	Leader      string `json:"leader"`
	CommitIndex uint64 `json:"commit_index"`
	Members     []struct {
		ID           string `json:"id"`
		Addr         string `json:"addr"`
		Voter        bool   `json:"voter"`
		State        string `json:"state"`
		AppliedIndex uint64 `json:"applied_index"`
		Lag          uint64 `json:"lag"`
		Error        string `json:"error"`
	} `json:"members"`
}

// shape is "id:voter|nonvoter:State,..." sorted by id, for comparisons.
func (m membersOut) shape() string {
	var parts []string
	for _, x := range m.Members {
		s := "voter"
		if !x.Voter {
			s = "nonvoter"
		}
		parts = append(parts, x.ID+":"+s+":"+x.State)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (h *harness) members(servers string) (membersOut, error) {
	h.t.Helper()
	var m membersOut
	err := h.cliJSON(&m, 10*time.Second, "members", "-json", "-servers", servers, "-timeout", "3s")
	return m, err
}

// waitMembers polls `members` until its shape is want (see shape).
func (h *harness) waitMembers(servers, want string, timeout time.Duration) membersOut {
	h.t.Helper()
	var m membersOut
	poll(h.t, timeout, 200*time.Millisecond, "members "+want, func() (bool, string) {
		var err error
		if m, err = h.members(servers); err != nil {
			return false, err.Error()
		}
		got := m.shape()
		// The leader may be any voter: compare with the states as roles.
		return sameShape(got, want), got
	})
	return m
}

// sameShape compares shapes, where want may say "Any" for Leader or
// Follower.
func sameShape(got, want string) bool {
	g, w := strings.Split(got, ","), strings.Split(want, ",")
	if len(g) != len(w) {
		return false
	}
	for i := range g {
		if strings.HasSuffix(w[i], ":Any") {
			p := strings.TrimSuffix(w[i], "Any")
			if g[i] != p+"Leader" && g[i] != p+"Follower" {
				return false
			}
			continue
		}
		if g[i] != w[i] {
			return false
		}
	}
	return true
}

// join starts a new node id that joins the cluster through its nodes'
// addresses (-join), with extra flags.
func (c *cluster) join(id string, extra ...string) *node {
	c.h.t.Helper()
	nd := &node{id: id, addr: fmt.Sprintf("127.0.0.1:%d", freePorts(c.h.t, 1)[0])}
	nd.dataDir = filepath.Join(c.h.dir, id+"-data")
	var via []string
	for _, o := range c.nodes {
		via = append(via, o.addr)
	}
	c.nodes = append(c.nodes, nd)
	nd.starts++
	args := append([]string{"server", "-id", id, "-addr", nd.addr, "-data-dir", nd.dataDir, "-join", strings.Join(via, ",")}, prockit.RaftFlags()...)
	if c.args != nil {
		args = append(args, c.args(nd)...)
	}
	nd.p = c.h.start("server-"+id, append(args, extra...)...)
	return nd
}

// drop forgets node id (stopped, removed) so servers() leaves it out.
func (c *cluster) drop(id string) {
	c.nodes = slices.DeleteFunc(c.nodes, func(nd *node) bool { return nd.id == id })
}

// metaWriter writes metadata of one service by compare-and-set, one write
// after another, through a client of every node, recording what was
// acknowledged; a watch on another client records what it sees.
type metaWriter struct {
	mu    sync.Mutex
	acked []string // data of acknowledged writes, in order
	seen  []string // data of meta events the watch saw, in order
	errs  int
}

func startMetaWriter(t *testing.T, ctx context.Context, servers []string, name string) (*metaWriter, func()) {
	t.Helper()
	mw := &metaWriter{}
	cl, err := client.NewWithConfig(client.Config{Servers: servers, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wc, err := client.NewWithConfig(client.Config{Servers: servers, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			e, err := w.Next(wctx)
			if err != nil {
				return
			}
			if e.Kind == client.EventMeta && e.Meta != nil {
				mw.mu.Lock()
				mw.seen = append(mw.seen, string(e.Meta.Data))
				mw.mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		var expect uint64
		for i := 0; i < 5000 && wctx.Err() == nil; i++ {
			data := fmt.Sprintf("w%d", i)
			idx, err := cl.SetMeta(wctx, name, []byte(data), expect)
			if err != nil {
				mw.mu.Lock()
				mw.errs++
				mw.mu.Unlock()
				// Unknown outcome or conflict: read where it is and go on.
				if m, gerr := cl.GetMeta(wctx, name, client.MetaOptions{Consistent: true}); gerr == nil {
					expect = m.Index
				}
				continue
			}
			expect = idx
			mw.mu.Lock()
			mw.acked = append(mw.acked, data)
			mw.mu.Unlock()
		}
	}()
	return mw, func() {
		stop()
		wg.Wait()
		w.Close()
		_ = cl.Close()
		_ = wc.Close()
	}
}

// check fails t unless every acknowledged write reached the watch, in
// order, and the last one is what a consistent read returns now.
func (mw *metaWriter) check(t *testing.T, servers []string, name string) {
	t.Helper()
	mw.mu.Lock()
	defer mw.mu.Unlock()
	if len(mw.acked) < 10 {
		t.Fatalf("only %d writes acknowledged (%d failed): the load did not run", len(mw.acked), mw.errs)
	}
	i := 0
	for _, s := range mw.seen {
		if i < len(mw.acked) && s == mw.acked[i] {
			i++
		}
	}
	// The watch may stop just before the last writes: every acked write it
	// did not see must be after the last one it saw.
	if missing := len(mw.acked) - i; missing > 0 && slices.Contains(mw.seen, mw.acked[len(mw.acked)-1]) {
		t.Errorf("the watch missed %d acknowledged writes (first: %s)", missing, mw.acked[i])
	}
	cl, err := client.NewWithConfig(client.Config{Servers: servers, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := cl.GetMeta(ctx, name, client.MetaOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	// The last write may have been applied after its caller stopped
	// waiting: the metadata is the last acknowledged write or a later one.
	last := mw.acked[len(mw.acked)-1]
	var got, want int
	if _, err := fmt.Sscanf(string(m.Data), "w%d", &got); err != nil {
		t.Fatalf("metadata is %q: %v", m.Data, err)
	}
	fmt.Sscanf(last, "w%d", &want)
	if got < want {
		t.Errorf("metadata is %q, older than the last acknowledged write %q", m.Data, last)
	}
	t.Logf("%d writes acknowledged, %d failed (retried), %d seen by the watch", len(mw.acked), mw.errs, len(mw.seen))
}

// TestMembers_GrowTo5AndShrinkBack grows a 3-node cluster to 5 with -join
// and shrinks it back (one node leaving with -leave-on-stop, one removed
// with members remove) while a writer and a watch run: no acknowledged
// write is lost or missed by the watch.
func TestMembers_GrowTo5AndShrinkBack(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	first := strings.Split(c.servers(), ",")
	mw, stop := startMetaWriter(t, ctx, first, "grow")

	c.join("n4")
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:voter:Any", 30*time.Second)
	n5 := c.join("n5", "-leave-on-stop")
	m := h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:voter:Any,n5:voter:Any", 30*time.Second)
	t.Logf("grown: %s", m.shape())

	// Shrink: n5 leaves as it stops; n4 is removed, then stopped.
	n5.p.stop(t, 20*time.Second)
	c.drop("n5")
	if !n5.p.logContains("left the cluster") {
		t.Errorf("n5 did not say it left the cluster:\n%s", n5.p.LogTail(20))
	}
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:voter:Any", 30*time.Second)
	r := h.mustCLI(20*time.Second, "members", "remove", "-id", "n4", "-servers", c.servers())
	if !strings.Contains(r.stdout, "remove n4: done") {
		t.Errorf("members remove n4 said %q", r.stdout)
	}
	// Removing it again changes nothing and succeeds.
	if r := h.mustCLI(20*time.Second, "members", "remove", "-id", "n4", "-servers", c.servers()); !strings.Contains(r.stdout, "nothing to do") {
		t.Errorf("a second members remove n4 said %q", r.stdout)
	}
	c.node("n4").p.stop(t, 20*time.Second)
	c.drop("n4")
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any", 30*time.Second)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)

	stop()
	mw.check(t, first, "grow")
}

// TestMembers_JoinWithTLS: a node with a server certificate of the
// cluster joins a TLS cluster (its join request and then Raft over mutual
// TLS) and serves what the others hold.
func TestMembers_JoinWithTLS(t *testing.T) {
	h := newHarness(t)
	c, p := h.tlsCluster(nil)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	p.server("n4", "")
	h.mustCLI(20*time.Second, "meta", "set", "db", "-file", writeTemp(t, "tls"), "-servers", c.servers())
	n4 := c.join("n4")
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:voter:Any", 30*time.Second)
	if r := h.mustCLI(20*time.Second, "meta", "get", "db", "-servers", n4.addr); r.stdout != "tls" {
		t.Errorf("n4 serves %q, want tls", r.stdout)
	}
}

// TestMembers_ReplaceKilledNode: a node dies for good; a new one with a new
// id and address joins and the dead one is removed. The cluster is three
// healthy voters again, and the new node holds the state.
func TestMembers_ReplaceKilledNode(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	h.mustCLI(20*time.Second, "meta", "set", "db", "-file", writeTemp(t, "primary=n1"), "-servers", c.servers())
	c.node("n3").p.kill9(t)
	c.drop("n3")

	c.join("n4")
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:unreachable,n4:voter:Any", 30*time.Second)
	h.mustCLI(20*time.Second, "members", "remove", "-id", "n3", "-servers", c.servers())
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n4:voter:Any", 30*time.Second)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	t.Logf("after the replacement: %s", st)
	// The new node serves the state by itself.
	r := h.mustCLI(20*time.Second, "meta", "get", "db", "-servers", c.node("n4").addr)
	if r.stdout != "primary=n1" {
		t.Errorf("n4 serves metadata %q, want primary=n1", r.stdout)
	}
	// And the cluster survives losing one more node: n4 counts.
	c.node("n1").p.kill9(t)
	c.drop("n1")
	h.mustCLI(30*time.Second, "meta", "set", "db2", "-file", writeTemp(t, "x"), "-servers", c.servers())
}

// TestMembers_NonVoterServesReads: a read replica (-join -nonvoter) serves
// reads and watches as a follower does, and does not count for the quorum.
func TestMembers_NonVoterServesReads(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	n4 := c.join("n4", "-nonvoter")
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:nonvoter:Follower", 30*time.Second)

	w := h.startWatch("watch-n4", n4.addr, "db")
	if e := w.next(t, 10*time.Second); e.Kind != "current" {
		t.Fatalf("first event from the replica: %+v, want current", e)
	}
	h.mustCLI(20*time.Second, "meta", "set", "db", "-file", writeTemp(t, "v1"), "-servers", c.node("n1").addr)
	if e := w.next(t, 10*time.Second); e.Kind != "meta" {
		t.Fatalf("the replica's watch got %+v, want the meta event", e)
	}
	if r := h.mustCLI(20*time.Second, "meta", "get", "db", "-servers", n4.addr); r.stdout != "v1" {
		t.Errorf("the replica reads %q, want v1", r.stdout)
	}
	// Promote, then demote: both through the leader, both idempotent.
	h.mustCLI(30*time.Second, "members", "promote", "-id", "n4", "-servers", c.servers())
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:voter:Any", 30*time.Second)
	h.mustCLI(30*time.Second, "members", "demote", "-id", "n4", "-servers", c.servers())
	if r := h.mustCLI(30*time.Second, "members", "demote", "-id", "n4", "-servers", c.servers()); !strings.Contains(r.stdout, "nothing to do") {
		t.Errorf("a second demote said %q", r.stdout)
	}
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:nonvoter:Follower", 30*time.Second)
}

// TestMembers_RefuseQuorumLosingRemoval: with one of three voters dead,
// removing a live one would leave one healthy voter of two — refused, and
// nothing changes; removing the dead one is allowed. Removing the last
// voter is refused even with -force.
func TestMembers_RefuseQuorumLosingRemoval(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	c.node("n3").p.kill9(t)
	c.drop("n3")
	before := h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:unreachable", 30*time.Second)
	leader := before.Leader
	other := "n1"
	if leader == "n1" {
		other = "n2"
	}
	r := h.cli(30*time.Second, "members", "remove", "-id", other, "-servers", c.servers())
	if r.code != 1 || !strings.Contains(r.stderr, "refused") || !strings.Contains(r.stderr, "quorum") || !strings.Contains(r.stderr, "n3 does not answer") {
		t.Fatalf("removing %s with n3 dead: %s; want refused, naming the quorum and n3", other, r)
	}
	after, err := h.members(c.servers())
	if err != nil {
		t.Fatal(err)
	}
	if after.shape() != before.shape() {
		t.Errorf("a refused removal changed the configuration: %s → %s", before.shape(), after.shape())
	}
	// Demoting is the same check.
	if r := h.cli(30*time.Second, "members", "demote", "-id", other, "-servers", c.servers()); r.code != 1 || !strings.Contains(r.stderr, "refused") {
		t.Errorf("demoting %s with n3 dead: %s; want refused", other, r)
	}
	// Removing the dead node keeps two healthy voters of two.
	h.mustCLI(30*time.Second, "members", "remove", "-id", "n3", "-servers", c.servers())
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any", 30*time.Second)
	// Down to one voter, then the last one: refused even with -force.
	h.mustCLI(30*time.Second, "members", "remove", "-id", other, "-servers", c.servers())
	c.drop(other)
	h.waitMembers(c.servers(), leader+":voter:Leader", 30*time.Second)
	if r := h.cli(30*time.Second, "members", "remove", "-id", leader, "-force", "-servers", c.servers()); r.code != 1 || !strings.Contains(r.stderr, "last voter") {
		t.Errorf("removing the last voter with -force: %s; want refused", r)
	}
	// Bad input: a clear usage error, nothing sent.
	for _, args := range [][]string{
		{"members", "add", "-id", "n9"},
		{"members", "add", "-id", "bad id", "-addr", "127.0.0.1:1"},
		{"members", "remove"},
		{"members", "frobnicate", "-id", "n1"},
	} {
		if r := h.cli(10*time.Second, append(args, "-servers", c.servers())...); r.code != 2 {
			t.Errorf("%v: %s; want exit status 2", args, r)
		}
	}
}

// TestMembers_RecoverFromLosingTwoOfThree: two of three nodes are gone for
// good. The survivor is stopped, recovered with itself as the only voter,
// started again: it leads, with its data, and a new node joins it.
func TestMembers_RecoverFromLosingTwoOfThree(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	h.mustCLI(20*time.Second, "meta", "set", "db", "-file", writeTemp(t, "before"), "-servers", c.servers())
	c.node("n2").p.kill9(t)
	c.node("n3").p.kill9(t)
	n1 := c.node("n1")
	c.drop("n2")
	c.drop("n3")
	// Without a quorum, writes fail.
	if r := h.cli(20*time.Second, "meta", "set", "db2", "-file", writeTemp(t, "x"), "-servers", n1.addr, "-timeout", "3s"); r.code == 0 {
		t.Fatalf("a write without a quorum succeeded: %s", r)
	}
	n1.p.stop(t, 20*time.Second)

	// recover refuses what makes no sense, changing nothing.
	if r := h.cli(20*time.Second, "recover", "-id", "n1", "-data-dir", n1.dataDir, "-peers", "n2=127.0.0.1:1"); r.code != 2 {
		t.Errorf("recover with -peers not naming the node: %s; want exit 2", r)
	}
	if r := h.cli(20*time.Second, "recover", "-id", "n1", "-data-dir", filepath.Join(h.dir, "empty"), "-peers", "n1="+n1.addr); r.code != 1 || !strings.Contains(r.stderr, "nothing to recover") {
		t.Errorf("recover of an empty data dir: %s; want refused", r)
	}
	r := h.mustCLI(60*time.Second, "recover", "-id", "n1", "-data-dir", n1.dataDir, "-peers", "n1="+n1.addr)
	if !strings.Contains(r.stderr, "WARNING") {
		t.Errorf("recover printed no warning: %s", r)
	}
	c.startNode(n1)
	h.waitMembers(n1.addr, "n1:voter:Leader", 30*time.Second)
	if r := h.mustCLI(20*time.Second, "meta", "get", "db", "-servers", n1.addr); r.stdout != "before" {
		t.Errorf("after recovery the metadata is %q, want before", r.stdout)
	}
	c.join("n4")
	h.waitMembers(c.servers(), "n1:voter:Any,n4:voter:Any", 30*time.Second)
	h.mustCLI(20*time.Second, "meta", "set", "db3", "-file", writeTemp(t, "after"), "-servers", c.servers())
	if r := h.mustCLI(20*time.Second, "meta", "get", "db3", "-servers", c.node("n4").addr); r.stdout != "after" {
		t.Errorf("n4 reads %q, want after", r.stdout)
	}
}

// TestMembers_AddressChangeAppliedOnRestart: a node restarted with another
// address asks its peers to apply it; the cluster then reaches it there.
func TestMembers_AddressChangeAppliedOnRestart(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	n3 := c.node("n3")
	n3.p.stop(t, 20*time.Second)
	old := n3.addr
	n3.addr = fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	// -peers updated as an operator would: it differs from the cluster's
	// members and is ignored, with a warning.
	c.peers = strings.Replace(c.peers, old, n3.addr, 1)
	c.startNode(n3)
	m := h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any", 30*time.Second)
	for _, x := range m.Members {
		if x.ID == "n3" && x.Addr != n3.addr {
			t.Errorf("n3's address is %s, want %s", x.Addr, n3.addr)
		}
	}
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	if !n3.p.logContains("address differs") {
		t.Errorf("n3 did not log its address change:\n%s", n3.p.LogTail(20))
	}
	if !n3.p.logContains("-peers is used only on a node's first start") {
		t.Errorf("n3 did not warn that -peers is ignored:\n%s", n3.p.LogTail(20))
	}
}

// TestMembers_DeadServerCleanup: with -dead-server-after, a leader removes
// a voter that has been dead that long when at least three voters remain.
func TestMembers_DeadServerCleanup(t *testing.T) {
	h := newHarness(t)
	c := h.startClusterWith(3, func(*node) []string { return []string{"-dead-server-after", "2s"} })
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	c.join("n4", "-dead-server-after", "2s")
	h.waitMembers(c.servers(), "n1:voter:Any,n2:voter:Any,n3:voter:Any,n4:voter:Any", 30*time.Second)
	c.node("n2").p.kill9(t)
	c.drop("n2")
	h.waitMembers(c.servers(), "n1:voter:Any,n3:voter:Any,n4:voter:Any", 30*time.Second)
	// Three voters left: the floor. Another death is not cleaned up.
	c.node("n4").p.kill9(t)
	c.drop("n4")
	deadline := time.Now().Add(4 * time.Second) // twice -dead-server-after
	for time.Now().Before(deadline) {
		m, err := h.members(c.servers())
		if err == nil && !strings.Contains(m.shape(), "n4:") {
			t.Fatalf("the cleanup went below three voters: %s", m.shape())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeTemp writes data to a new file in the test's temporary directory
// and returns its path.
func writeTemp(t *testing.T, data string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "data")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
