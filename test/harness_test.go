// Package test holds black-box tests of discoverd: they build the discoverd
// binary, run it as real processes on loopback and drive it only through its
// CLI, the way an operator would.
//
// This file is the reusable harness: the binary built once and processes
// started and stopped by their own PIDs (both through test/prockit), a
// three-node cluster, CLI calls with parsed JSON output, a watch stream
// reader, and polling with deadlines. The scenarios live in *_test.go files
// beside it.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/testport"
	"github.com/discoverd/discoverd/test/prockit"
)

// ---------------------------------------------------------------------------
// Building the binary once per test binary run (test/prockit), and cleaning
// up after runs that died before their cleanups ran.

func TestMain(m *testing.M) { os.Exit(prockit.RunTests(m)) }

// discoverdBin returns the path of the discoverd binary, building it on first use.
func discoverdBin(t testing.TB) string {
	t.Helper()
	start := time.Now()
	bin, err := prockit.Build()
	if err != nil {
		t.Fatalf("build discoverd: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("built %s in %v", bin, d.Round(time.Millisecond))
	}
	return bin
}

// ---------------------------------------------------------------------------
// Harness and processes.

// harness owns a test's directory, its processes and their logs.
type harness struct {
	t   testing.TB
	bin string
	dir string
	// env is added to the environment of every process and CLI call (the
	// TLS tests set DISCOVERD_CA, DISCOVERD_CERT and DISCOVERD_KEY).
	env []string

	mu   sync.Mutex
	logs []string // log files, printed if the test fails
}

// newHarness builds the binary (once) and prepares a directory for this test.
// If the test fails, every process log is printed after all processes have
// stopped.
func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, bin: discoverdBin(t), dir: t.TempDir()}
	// Registered before any process is started, so it runs after their stops.
	t.Cleanup(h.dumpLogsIfFailed)
	return h
}

func (h *harness) dumpLogsIfFailed() {
	if !h.t.Failed() {
		return
	}
	h.mu.Lock()
	logs := append([]string(nil), h.logs...)
	h.mu.Unlock()
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil {
			h.t.Logf("---- %s: %v", filepath.Base(path), err)
			continue
		}
		h.t.Logf("---- %s (%d bytes) ----\n%s", filepath.Base(path), len(data), data)
	}
}

// logFile opens (appending) the log file of a process name.
func (h *harness) logFile(name string) (*os.File, string) {
	h.t.Helper()
	path := filepath.Join(h.dir, name+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatalf("open log %s: %v", path, err)
	}
	h.mu.Lock()
	known := false
	for _, p := range h.logs {
		known = known || p == path
	}
	if !known {
		h.logs = append(h.logs, path)
	}
	h.mu.Unlock()
	return f, path
}

// proc is a discoverd process started in the background.
type proc struct{ *prockit.Proc }

// start runs `discoverd args...` in its own process group with stdout and
// stderr appended to <name>.log, and stops it in cleanup.
func (h *harness) start(name string, args ...string) *proc {
	h.t.Helper()
	return h.startWithStdout(name, nil, args...)
}

// startWithStdout is start with stdout sent to w (the write end of a pipe the
// caller reads) instead of the log. The caller keeps ownership of w.
func (h *harness) startWithStdout(name string, w *os.File, args ...string) *proc {
	h.t.Helper()
	_, logPath := h.logFile(name)
	cmd := exec.Command(h.bin, args...)
	cmd.Env = append(os.Environ(), h.env...)
	spec := prockit.Spec{Name: name, Cmd: cmd, Log: logPath}
	if w != nil {
		spec.Stdout = w
	}
	kp, err := prockit.Start(spec)
	if err != nil {
		h.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{kp}
	h.t.Cleanup(func() { p.stop(h.t, 5*time.Second) })
	return p
}

// pid returns the process's own PID.
func (p *proc) pid() int { return p.PID() }

// exited reports whether the process has ended.
func (p *proc) exited() bool { return p.Exited() }

// signal sends sig to the process itself.
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits up to timeout for the process to end and returns its exit code
// (-1 if a signal ended it).
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	if err := p.Wait(timeout); err != nil {
		t.Fatalf("%v after it was asked to end", err)
	}
	return p.ExitCode()
}

// kill9 SIGKILLs the process and waits until it is reaped.
func (p *proc) kill9(t testing.TB) {
	t.Helper()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

// stop sends SIGTERM, then SIGKILL if the process is still running after
// bound. It is the cleanup of every process and fails the test only if the
// process survives SIGKILL.
func (p *proc) stop(t testing.TB, bound time.Duration) {
	err := p.Stop(bound)
	switch {
	case errors.Is(err, prockit.ErrKilled):
		t.Logf("%v", err)
	case err != nil:
		t.Errorf("%v", err)
	}
}

// logContains reports whether the process's log holds s.
func (p *proc) logContains(s string) bool { return p.LogContains(s) }

// ---------------------------------------------------------------------------
// A cluster of discoverd server processes.

type node struct {
	id, addr, dataDir string
	p                 *proc // the current process; replaced by restart
	starts            int
}

type cluster struct {
	h     *harness
	nodes []*node
	peers string // -peers, identical on every node
	// args, if set, gives extra server flags for a node (e.g. its TLS files).
	args func(nd *node) []string
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// from below the ephemeral range (internal/testport): a node restarting on
// its port must not find it taken by an outgoing connection.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := testport.Pick(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// startCluster starts n server processes n1..nN with identical -peers.
func (h *harness) startCluster(n int) *cluster {
	h.t.Helper()
	return h.startClusterWith(n, nil)
}

// startClusterWith is startCluster with extra flags for each node.
func (h *harness) startClusterWith(n int, args func(nd *node) []string) *cluster {
	h.t.Helper()
	c := &cluster{h: h, args: args}
	var peers []string
	for i, port := range freePorts(h.t, n) {
		nd := &node{id: fmt.Sprintf("n%d", i+1), addr: fmt.Sprintf("127.0.0.1:%d", port)}
		nd.dataDir = filepath.Join(h.dir, nd.id+"-data")
		c.nodes = append(c.nodes, nd)
		peers = append(peers, nd.id+"="+nd.addr)
	}
	c.peers = strings.Join(peers, ",")
	for _, nd := range c.nodes {
		c.startNode(nd)
	}
	return c
}

// startNode starts (or restarts, with the same data dir) a node's process.
func (c *cluster) startNode(nd *node) {
	c.h.t.Helper()
	nd.starts++
	args := append(prockit.ServerArgs(nd.id, nd.addr, nd.dataDir, c.peers), prockit.RaftFlags()...)
	if c.args != nil {
		args = append(args, c.args(nd)...)
	}
	nd.p = c.h.start("server-"+nd.id, args...)
}

// leaderAndFollower returns the node of leaderID and another one.
func (c *cluster) leaderAndFollower(leaderID string) (leader, follower *node) {
	c.h.t.Helper()
	for _, nd := range c.nodes {
		if nd.id != leaderID {
			return c.node(leaderID), nd
		}
	}
	c.h.t.Fatalf("no node but the leader %q in the cluster", leaderID)
	return nil, nil
}

func (c *cluster) node(id string) *node {
	c.h.t.Helper()
	for _, nd := range c.nodes {
		if nd.id == id {
			return nd
		}
	}
	c.h.t.Fatalf("no node %q in the cluster", id)
	return nil
}

func (c *cluster) ids() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.id)
	}
	return out
}

// servers returns the -servers list of every node but the excluded ones.
func (c *cluster) servers(exclude ...string) string {
	var out []string
	for _, nd := range c.nodes {
		skip := false
		for _, id := range exclude {
			skip = skip || id == nd.id
		}
		if !skip {
			out = append(out, nd.addr)
		}
	}
	return strings.Join(out, ",")
}

// ---------------------------------------------------------------------------
// CLI calls.

// cliResult is the outcome of one CLI run.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int // exit status; -1 if killed (timeout)
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("`discoverd %s`: exit %d after %v\nstdout: %s\nstderr: %s",
		strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// cli runs `discoverd args...` to completion (killed after timeout), in its own process group.
func (h *harness) cli(timeout time.Duration, args ...string) cliResult {
	h.t.Helper()
	return h.cliStdin(timeout, nil, args...)
}

// cliStdin is cli with stdin as the command's standard input (nil: none).
func (h *harness) cliStdin(timeout time.Duration, stdin []byte, args ...string) cliResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), h.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		h.t.Fatalf("run discoverd %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func (h *harness) mustCLI(timeout time.Duration, args ...string) cliResult {
	h.t.Helper()
	r := h.cli(timeout, args...)
	if r.code != 0 {
		h.t.Fatalf("want exit 0: %v", r)
	}
	return r
}

// clusterStatus is the -json output of `discoverd status`.
type clusterStatus struct {
	Leader string       `json:"leader"`
	Nodes  []nodeStatus `json:"nodes"`
}

type nodeStatus struct {
	ID           string `json:"id"`
	Addr         string `json:"addr"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Error        string `json:"error"`
	LogStore     string `json:"log_store"`
}

func (s clusterStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "leader=%q", s.Leader)
	for _, n := range s.Nodes {
		fmt.Fprintf(&b, " [%s %s term=%d applied=%d commit=%d", n.ID, n.State, n.Term, n.AppliedIndex, n.CommitIndex)
		if n.Error != "" {
			fmt.Fprintf(&b, " err=%q", n.Error)
		}
		b.WriteString("]")
	}
	return b.String()
}

// leaders returns the ids of the nodes that say they are the leader.
func (s clusterStatus) leaders() []string {
	var out []string
	for _, n := range s.Nodes {
		if n.State == "Leader" {
			out = append(out, n.ID)
		}
	}
	return out
}

func (s clusterStatus) node(id string) (nodeStatus, bool) {
	for _, n := range s.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return nodeStatus{}, false
}

// status runs `discoverd status -json` against servers.
func (h *harness) status(servers string) (clusterStatus, error) {
	h.t.Helper()
	var st clusterStatus
	err := h.cliJSON(&st, 5*time.Second, "status", "-json", "-servers", servers, "-timeout", "2s")
	return st, err
}

// cliJSON runs a command that prints JSON and decodes its output into out.
func (h *harness) cliJSON(out any, timeout time.Duration, args ...string) error {
	h.t.Helper()
	r := h.cli(timeout, args...)
	if r.code != 0 {
		return fmt.Errorf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
		return fmt.Errorf("decode the output of %s %q: %v", args[0], r.stdout, err)
	}
	return nil
}

// instance is one element of `discoverd services -json`.
type instance struct {
	Name  string            `json:"name"`
	Addr  string            `json:"addr"`
	Attrs map[string]string `json:"attrs"`
	Index uint64            `json:"index"`
}

// services runs `discoverd services -json [args...]` against servers and
// returns its instances. It insists on every field (instances an array,
// never null).
func (h *harness) services(servers string, args ...string) ([]instance, error) {
	h.t.Helper()
	r := h.cli(5*time.Second, append([]string{"services", "-json", "-servers", servers, "-timeout", "2s"}, args...)...)
	if r.code != 0 {
		return nil, fmt.Errorf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	var out struct {
		Index       uint64      `json:"index"`
		KnownLeader *bool       `json:"known_leader"`
		LastContact *int64      `json:"last_contact_ms"`
		Instances   *[]instance `json:"instances"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		return nil, fmt.Errorf("decode services %q: %v", r.stdout, err)
	}
	if out.Instances == nil || *out.Instances == nil || out.KnownLeader == nil || out.LastContact == nil {
		return nil, fmt.Errorf("services -json printed %q, want index, known_leader, last_contact_ms and an instances array", r.stdout)
	}
	return *out.Instances, nil
}

// waitServices polls plain `services -json name` on servers until ok
// accepts the list (described by want).
func (h *harness) waitServices(servers, name string, ok func([]instance) bool, want string) {
	h.t.Helper()
	poll(h.t, 10*time.Second, 50*time.Millisecond, fmt.Sprintf("services %s on %s to list %s", name, servers, want), func() (bool, string) {
		list, err := h.services(servers, name)
		if err != nil {
			return false, err.Error()
		}
		return ok(list), fmt.Sprintf("%+v", list)
	})
}

// ---------------------------------------------------------------------------
// Polling.

// poll calls check every interval until it reports done or timeout passes;
// then it fails the test with what it waited for and the last state seen.
func poll(t testing.TB, timeout, interval time.Duration, what string, check func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "(not checked)"
	for {
		done, state := check()
		if done {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last seen: %s", timeout, what, last)
		}
		tm := time.NewTimer(interval)
		<-tm.C
	}
}

// waitStable polls status until every id in want is a member that answers,
// exactly one of them is the leader (and the status's leader names it), and
// all have applied the same index. It returns that status.
func (h *harness) waitStable(servers string, want []string, timeout time.Duration) clusterStatus {
	h.t.Helper()
	var st clusterStatus
	poll(h.t, timeout, 100*time.Millisecond, fmt.Sprintf("one leader and equal applied_index on %v", want), func() (bool, string) {
		var err error
		if st, err = h.status(servers); err != nil {
			return false, err.Error()
		}
		if len(st.Nodes) != len(want) {
			return false, st.String()
		}
		var applied uint64
		for i, id := range want {
			n, ok := st.node(id)
			if !ok || (n.State != "Leader" && n.State != "Follower") || n.AppliedIndex == 0 {
				return false, st.String()
			}
			if i > 0 && n.AppliedIndex != applied {
				return false, st.String()
			}
			applied = n.AppliedIndex
		}
		if l := st.leaders(); len(l) != 1 || l[0] != st.Leader {
			return false, st.String()
		}
		return true, ""
	})
	return st
}

// waitNewLeader polls status on servers until exactly one answering node
// other than old is the leader, the status names it, and dead is reported
// unreachable. It returns the new leader's id.
func (h *harness) waitNewLeader(servers, old, dead string, timeout time.Duration) string {
	h.t.Helper()
	var leader string
	poll(h.t, timeout, 100*time.Millisecond, fmt.Sprintf("a leader other than %s", old), func() (bool, string) {
		st, err := h.status(servers)
		if err != nil {
			return false, err.Error()
		}
		l := st.leaders()
		if len(l) != 1 || l[0] == old || l[0] != st.Leader {
			return false, st.String()
		}
		if d, ok := st.node(dead); !ok || d.State != "unreachable" {
			return false, st.String()
		}
		leader = l[0]
		return true, ""
	})
	return leader
}

// ---------------------------------------------------------------------------
// Watch streams.

// watchEvent is one line of `discoverd watch -json`.
type watchEvent struct {
	Kind   string            `json:"kind"`
	Index  uint64            `json:"index"`
	Name   string            `json:"name"`
	Addr   string            `json:"addr"`
	Attrs  map[string]string `json:"attrs"`
	Reason string            `json:"reason"`
	// meta events
	Size       *int   `json:"size"`
	DataBase64 []byte `json:"data_base64"`
	Deleted    bool   `json:"deleted"`

	line string // as printed
}

// watcher reads a background `discoverd watch -json` line by line.
type watcher struct {
	p          *proc
	events     chan watchEvent // closed when stdout ends
	readerDone chan struct{}
}

// startWatch starts `discoverd watch -json name` against servers; its stdout
// is decoded line by line (and copied to its log), stderr goes to its log.
func (h *harness) startWatch(procName, servers, name string) *watcher {
	h.t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		h.t.Fatalf("pipe: %v", err)
	}
	p := h.startWithStdout(procName, w, "watch", "-json", "-servers", servers, name)
	w.Close() // the child has its copy; EOF comes when it exits
	logf, _ := h.logFile(procName)
	wt := &watcher{p: p, events: make(chan watchEvent, 1024), readerDone: make(chan struct{})}
	go func() {
		defer close(wt.readerDone)
		defer close(wt.events)
		defer r.Close()
		defer logf.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20) // a meta event of 64 KiB is a line of ~88 KiB
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintf(logf, "%s stdout: %s\n", time.Now().Format("15:04:05.000"), line)
			var e watchEvent
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				e = watchEvent{Kind: "!undecodable: " + err.Error()}
			}
			e.line = line
			wt.events <- e
		}
	}()
	// Runs before the process's own stop (LIFO): stop it, then let the reader drain.
	h.t.Cleanup(func() {
		p.stop(h.t, 5*time.Second)
		select {
		case <-wt.readerDone:
		case <-time.After(5 * time.Second):
			h.t.Errorf("watch reader of %s did not finish", procName)
		}
	})
	return wt
}

// next returns the next event, failing the test if none comes within timeout
// or the stream ends.
func (w *watcher) next(t testing.TB, timeout time.Duration) watchEvent {
	t.Helper()
	select {
	case e, ok := <-w.events:
		if !ok {
			t.Fatalf("watch %s ended (exited=%v) while an event was expected", w.p.Name(), w.p.exited())
		}
		if strings.HasPrefix(e.Kind, "!") {
			t.Fatalf("watch printed a line that is not a JSON event: %q (%s)", e.line, e.Kind)
		}
		return e
	case <-time.After(timeout):
		t.Fatalf("watch %s printed nothing for %v", w.p.Name(), timeout)
		return watchEvent{}
	}
}

// ---------------------------------------------------------------------------
// Which server a client process talks to.

// remoteAddrs returns the remote ip:port of every established TCP
// connection the process pid holds, read from /proc (Linux).
func remoteAddrs(pid int) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			const established = "01"
			if len(f) < 10 || f[3] != established || !inodes[f[9]] {
				continue
			}
			if addr, err := parseProcAddr(f[2]); err == nil {
				out = append(out, addr)
			}
		}
	}
	return out, nil
}

// parseProcAddr decodes /proc/net/tcp's "0100007F:1F90": the address as
// 32-bit words in host (little-endian) order, the port big-endian.
func parseProcAddr(s string) (string, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if !ok || err != nil || len(hexIP)%8 != 0 {
		return "", fmt.Errorf("bad address %q", s)
	}
	ip := make(net.IP, 0, len(hexIP)/2)
	for w := 0; w < len(hexIP); w += 8 {
		word, err := strconv.ParseUint(hexIP[w:w+8], 16, 32)
		if err != nil {
			return "", fmt.Errorf("bad address %q", s)
		}
		ip = append(ip, byte(word), byte(word>>8), byte(word>>16), byte(word>>24))
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10)), nil
}

// connectedNode returns the id of the one cluster node the process holds
// connections to, polling until there is exactly one.
func (c *cluster) connectedNode(p *proc, timeout time.Duration) string {
	c.h.t.Helper()
	var id string
	poll(c.h.t, timeout, 50*time.Millisecond, p.Name()+" to be connected to one node", func() (bool, string) {
		addrs, err := remoteAddrs(p.pid())
		if err != nil {
			return false, err.Error()
		}
		ids := map[string]bool{}
		for _, a := range addrs {
			for _, nd := range c.nodes {
				if nd.addr == a {
					ids[nd.id] = true
				}
			}
		}
		if len(ids) != 1 {
			return false, fmt.Sprintf("connections %v", addrs)
		}
		for id = range ids {
		}
		return true, ""
	})
	return id
}
