//go:build faultroot

// The tests in this file create network namespaces: they need root, ip and
// nft, and run with -tags faultroot (.ci/run and make fault-long do; they
// install nftables first). Without what they need they fail, never skip.

package netns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// probeTimeout bounds one reachability probe; on a bridge a good probe
	// takes well under a millisecond, so a failed one is a cut, not a slow
	// network.
	probeTimeout = 800 * time.Millisecond
	// testBase is the prefix family of these tests.
	testBase = "dsct"
)

var netSeq atomic.Int64

// requireNetns fails the test with Available's reason.
func requireNetns(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("%v (these tests need root, ip and nft: apt-get install nftables)", err)
	}
}

// newNet creates an n-node Net with a per-test prefix, closed in t.Cleanup
// (registered first, so it runs after the agents are stopped).
func newNet(t *testing.T, n int) *Net {
	t.Helper()
	requireNetns(t)
	prefix := fmt.Sprintf("%s-%d-%d", testBase, os.Getpid(), netSeq.Add(1))
	start := time.Now()
	nt, err := New(prefix, n)
	if err != nil {
		t.Fatalf("New(%q, %d): %v", prefix, n, err)
	}
	t.Logf("New(%q, %d) took %v; subnet %s, host %s", prefix, n, time.Since(start).Round(time.Millisecond), nt.Subnet(), nt.HostIP())
	t.Cleanup(func() {
		if err := nt.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return nt
}

// cluster is a Net with an agent (echo server + prober) in every node and an
// echo server of the test process on the host side.
type cluster struct {
	nt       *Net
	agents   []*agent
	hostAddr string // the test process's echo server at HostIP
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	nt := newNet(t, n)
	ln, err := net.Listen("tcp", net.JoinHostPort(nt.HostIP(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveEcho(ln)
	c := &cluster{nt: nt, hostAddr: ln.Addr().String()}
	for i := 0; i < n; i++ {
		c.agents = append(c.agents, startAgent(t, nt, i))
	}
	return c
}

// host is the index the matrices use for the test process.
const host = -1

// probe makes a fresh connection from `from` to `to` (node indices or host)
// and checks one echo.
func (c *cluster) probe(from, to int) error {
	addr := c.hostAddr
	if to != host {
		addr = c.agents[to].addr
	}
	if from == host {
		return pingOnce(addr, probeTimeout)
	}
	return c.agents[from].dial(addr, probeTimeout)
}

// matrix probes every ordered pair of {nodes, host} at once and renders the
// result like the wanted matrices in the tests: '.' reachable, 'x' not.
func (c *cluster) matrix(t *testing.T) string {
	t.Helper()
	n := c.nt.Len()
	ids := make([]int, 0, n+1)
	for i := 0; i < n; i++ {
		ids = append(ids, i)
	}
	ids = append(ids, host)
	res := make([][]error, len(ids))
	var wg sync.WaitGroup
	for a := range ids {
		res[a] = make([]error, len(ids))
		for b := range ids {
			if a == b {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[a][b] = c.probe(ids[a], ids[b])
			}()
		}
	}
	wg.Wait()
	var sb strings.Builder
	for a := range ids {
		for b := range ids {
			switch {
			case a == b:
				sb.WriteByte('-')
			case res[a][b] == nil:
				sb.WriteByte('.')
			default:
				// A cut must look like silence: a timeout, never a refusal
				// or a reset.
				if !isTimeout(res[a][b]) {
					t.Errorf("probe %s -> %s: %v, want a timeout", name(ids[a]), name(ids[b]), res[a][b])
				}
				sb.WriteByte('x')
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func name(i int) string {
	if i == host {
		return "host"
	}
	return "n" + strconv.Itoa(i)
}

func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// Errors relayed by an agent are text.
	return strings.Contains(err.Error(), "i/o timeout")
}

// wantMatrix strips a readable matrix (rows: from n0..n{n-1}, host; columns:
// to, in the same order) down to the form matrix returns.
func wantMatrix(s string) string {
	var sb strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "to" {
			continue
		}
		sb.WriteString(strings.Join(f[1:], ""))
		sb.WriteByte('\n')
	}
	return sb.String()
}

func checkMatrix(t *testing.T, c *cluster, want string) {
	t.Helper()
	start := time.Now()
	got := c.matrix(t)
	if w := wantMatrix(want); got != w {
		t.Fatalf("reachability (rows from n0.., host; cols to n0.., host; '.' ok, 'x' cut)\ngot:\n%swant:\n%s", got, w)
	}
	t.Logf("matrix checked in %v", time.Since(start).Round(time.Millisecond))
}

const allConnected3 = `
to   0 1 2 h
n0   - . . .
n1   . - . .
n2   . . - .
h    . . . -`

func TestNetns_Reachability(t *testing.T) {
	c := newCluster(t, 3)
	nt := c.nt
	for i := 0; i < 3; i++ {
		if want := fmt.Sprintf("%s.%d", strings.TrimSuffix(nt.Subnet(), ".0/24"), i+1); nt.IP(i) != want {
			t.Errorf("IP(%d) = %s, want %s", i, nt.IP(i), want)
		}
	}
	if !strings.HasSuffix(nt.HostIP(), ".254") {
		t.Errorf("HostIP() = %s", nt.HostIP())
	}
	checkMatrix(t, c, allConnected3)

	// Command runs inside the node's namespace: it sees only lo and eth0
	// with the node's address.
	out, err := nt.Command(1, "ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in n1: %v: %s", err, out)
	}
	if !strings.Contains(string(out), nt.IP(1)+"/24") || strings.Contains(string(out), nt.IP(0)+"/") {
		t.Errorf("n1 addresses:\n%s", out)
	}
}

func TestNetns_CutOneWay(t *testing.T) {
	c := newCluster(t, 3)
	nt := c.nt
	if err := nt.Cut(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := nt.Cut(0, 1); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := nt.Cuts(); len(got) != 1 || got[0] != [2]int{0, 1} {
		t.Fatalf("Cuts() = %v, want [[0 1]]", got)
	}

	start := time.Now()
	err := c.probe(0, 1)
	if err == nil || !isTimeout(err) {
		t.Fatalf("0 -> 1 while cut: %v, want a timeout", err)
	}
	t.Logf("0 -> 1 timed out after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if err := c.probe(2, 1); err != nil {
		t.Fatalf("2 -> 1 while 0 -> 1 is cut: %v", err)
	}
	// 1 -> 0 packets still arrive, but 0's replies do not: TCP needs both.
	checkMatrix(t, c, `
to   0 1 2 h
n0   - x . .
n1   x - . .
n2   . . - .
h    . . . -`)

	if err := nt.Heal(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := nt.Heal(0, 1); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := c.probe(0, 1); err != nil {
		t.Fatalf("0 -> 1 after Heal: %v", err)
	}

	for _, bad := range [][2]int{{0, 0}, {-1, 1}, {0, 3}} {
		if err := nt.Cut(bad[0], bad[1]); err == nil {
			t.Errorf("Cut(%d, %d) succeeded", bad[0], bad[1])
		}
	}
}

// TestNetns_EstablishedConnStallsAndResumes checks the property the fault
// suite relies on: a cut is silent. An established connection neither fails
// nor delivers while cut, and delivers what was queued once healed.
func TestNetns_EstablishedConnStallsAndResumes(t *testing.T) {
	c := newCluster(t, 3)
	nt := c.nt
	cn, err := c.agents[0].open(c.agents[1].addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cn.write("before")
	if got, err := cn.recv(5 * time.Second); err != nil || got != "before" {
		t.Fatalf("echo before the cut: %q, %v", got, err)
	}

	const hold = 1500 * time.Millisecond
	for _, tc := range []struct {
		name     string
		from, to int
	}{
		{"request direction cut (0->1)", 0, 1},
		{"echo direction cut (1->0)", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := nt.Cut(tc.from, tc.to); err != nil {
				t.Fatal(err)
			}
			msg := fmt.Sprintf("during-%d-%d", tc.from, tc.to)
			cn.write(msg)
			if got, err := cn.recv(hold); err == nil {
				t.Fatalf("echo %q arrived while cut", got)
			}
			if ev, ok := cn.closedEvent(); ok {
				t.Fatalf("connection ended while cut: %s", ev)
			}
			healed := time.Now()
			if err := nt.Heal(tc.from, tc.to); err != nil {
				t.Fatal(err)
			}
			// TCP retransmits with backoff (200 ms doubling), so delivery
			// resumes within a few seconds of the heal.
			got, err := cn.recv(15 * time.Second)
			if err != nil || got != msg {
				t.Fatalf("echo after heal: %q, %v; want %q", got, err, msg)
			}
			t.Logf("queued data delivered %v after Heal", time.Since(healed).Round(time.Millisecond))
		})
	}
	if ev, ok := cn.closedEvent(); ok {
		t.Fatalf("connection ended: %s", ev)
	}
}

func TestNetns_PartitionAndIsolateMatrices(t *testing.T) {
	c := newCluster(t, 3)
	nt := c.nt
	for _, tc := range []struct {
		name   string
		inject func() error
		want   string
	}{
		{"Partition({0},{1,2})", func() error { return nt.Partition([]int{0}, []int{1, 2}) }, `
to   0 1 2 h
n0   - x x .
n1   x - . .
n2   x . - .
h    . . . -`},
		{"Partition({0,1}) isolates the unlisted 2", func() error { return nt.Partition([]int{0, 1}) }, `
to   0 1 2 h
n0   - . x .
n1   . - x .
n2   x x - .
h    . . . -`},
		{"Partition replaces, not adds: ({0,2},{1})", func() error { return nt.Partition([]int{0, 2}, []int{1}) }, `
to   0 1 2 h
n0   - x . .
n1   x - x .
n2   . x - .
h    . . . -`},
		{"Partition({0,1,2}) heals", func() error { return nt.Partition([]int{0, 1, 2}) }, allConnected3},
		{"Isolate(2) keeps the host link", func() error { return nt.Isolate(2) }, `
to   0 1 2 h
n0   - . x .
n1   . - x .
n2   x x - .
h    . . . -`},
		{"Isolate adds: Isolate(2) then Isolate(0)", func() error { return nt.Isolate(0) }, `
to   0 1 2 h
n0   - x x .
n1   x - x .
n2   x x - .
h    . . . -`},
		{"HealAll", nt.HealAll, allConnected3},
	} {
		if err := tc.inject(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Run(tc.name, func(t *testing.T) { checkMatrix(t, c, tc.want) })
	}

	before := nt.Cuts()
	for _, bad := range [][][]int{{{0, 1}, {1, 2}}, {{0, 3}}, {{-1}}} {
		if err := nt.Partition(bad...); err == nil {
			t.Errorf("Partition(%v) succeeded", bad)
		}
	}
	if got := nt.Cuts(); len(got) != len(before) {
		t.Errorf("a rejected Partition changed the cuts: %v -> %v", before, got)
	}
}

func TestNetns_CloseRemovesEverything(t *testing.T) {
	nt := newNet(t, 3)
	names := nt.namespaces()
	listed := ipNetnsList(t)
	for _, ns := range names {
		if !listed[ns] {
			t.Fatalf("namespace %s missing after New; ip netns list: %v", ns, listed)
		}
		if !exists(ownerPath(ns)) {
			t.Errorf("owner file of %s missing", ns)
		}
	}
	if !exists(filepath.Join("/sys/class/net", nt.HostLink())) {
		t.Fatalf("host link %s missing", nt.HostLink())
	}

	start := time.Now()
	if err := nt.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if err := nt.Close(); err != nil { // idempotent
		t.Fatalf("second Close: %v", err)
	}
	listed = ipNetnsList(t)
	for ns := range listed {
		if strings.HasPrefix(ns, nt.Prefix()+"-") {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
	for _, ns := range names {
		if exists(ownerPath(ns)) {
			t.Errorf("owner file of %s left after Close", ns)
		}
	}
	if exists(filepath.Join("/sys/class/net", nt.HostLink())) {
		t.Errorf("host link %s left after Close", nt.HostLink())
	}
	if routes, err := hostRoutes(); err == nil {
		_, sub, _ := net.ParseCIDR(nt.Subnet())
		for _, r := range routes {
			if r.String() == sub.String() {
				t.Errorf("route to %s left after Close", sub)
			}
		}
	}
	if err := nt.Cut(0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Cut after Close: %v, want ErrClosed", err)
	}
}

// TestNetns_StaleCleanedAtNew plants the leftovers of a run whose process
// died (namespaces with a dead owner, an orphan owner file, a namespace with
// no owner file, host veths) next to a live Net of the same family, and
// checks that New removes exactly the stale ones.
func TestNetns_StaleCleanedAtNew(t *testing.T) {
	requireNetns(t)
	live := newNet(t, 1) // same family, live owner (this process): must survive

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := dead.ProcessState.Pid()
	stalePrefix := fmt.Sprintf("%s-%d-stale", testBase, deadPID)
	staleOwner := owner{PID: deadPID, Start: 1, Subnet: "10.250.250.0/24", HostLink: hostLinkName(stalePrefix)}
	withOwner := []string{stalePrefix + "-n0", stalePrefix + "-br"}
	noOwner := stalePrefix + "-x"
	orphanFile := stalePrefix + "-n1" // an owner file whose namespace is gone
	orphanLink := linkBase(testBase) + "-deadbeef"
	t.Cleanup(func() { // in case the test fails half way
		for _, ns := range append(withOwner, noOwner, orphanFile) {
			_ = deleteNamespace(ns)
			_ = removeOwner(ns)
		}
		for _, l := range []string{staleOwner.HostLink, orphanLink} {
			if exists(filepath.Join("/sys/class/net", l)) {
				_ = runIP("link", "del", l)
			}
		}
	})
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ns := range withOwner {
		if err := writeOwner(ns, staleOwner); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeOwner(orphanFile, staleOwner); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"netns", "add", withOwner[0]},
		{"netns", "add", withOwner[1]},
		{"netns", "add", noOwner},
		{"link", "add", staleOwner.HostLink, "type", "veth", "peer", "name", "vh", "netns", withOwner[1]},
		{"link", "add", orphanLink, "type", "veth", "peer", "name", "vh", "netns", noOwner},
	} {
		if err := runIP(args...); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	nt := newNet(t, 2)
	t.Logf("New with stale cleanup took %v", time.Since(start).Round(time.Millisecond))

	listed := ipNetnsList(t)
	for _, ns := range append(withOwner, noOwner) {
		if listed[ns] {
			t.Errorf("stale namespace %s survived New", ns)
		}
	}
	for _, ns := range append(withOwner, orphanFile) {
		if exists(ownerPath(ns)) {
			t.Errorf("stale owner file of %s survived New", ns)
		}
	}
	for _, l := range []string{staleOwner.HostLink, orphanLink} {
		if exists(filepath.Join("/sys/class/net", l)) {
			t.Errorf("stale host link %s survived New", l)
		}
	}
	for _, ns := range append(live.namespaces(), nt.namespaces()...) {
		if !listed[ns] {
			t.Errorf("live namespace %s was removed", ns)
		}
	}
	if !exists(filepath.Join("/sys/class/net", live.HostLink())) {
		t.Errorf("live host link %s was removed", live.HostLink())
	}
	if live.Subnet() == nt.Subnet() {
		t.Errorf("two live Nets share subnet %s", nt.Subnet())
	}

	// A second New of a live prefix is refused.
	if _, err := New(live.Prefix(), 1); !errors.Is(err, ErrInUse) {
		t.Errorf("New of a live prefix: %v, want ErrInUse", err)
	}
}

// ipNetnsList is what `ip netns list` shows, as a set of names.
func ipNetnsList(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	set := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			set[f[0]] = true
		}
	}
	return set
}
