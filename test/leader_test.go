package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// leaderLine is one line of `discoverd leader -json` (and -watch -json).
type leaderLine struct {
	Name         string            `json:"name"`
	Addr         string            `json:"addr"`
	FencingIndex uint64            `json:"fencing_index"`
	Attrs        map[string]string `json:"attrs"`

	line string // as printed
}

// startLeaderWatch starts `discoverd leader -watch -json name` and decodes
// its stdout line by line.
func (h *harness) startLeaderWatch(procName, servers, name string) (*proc, <-chan leaderLine) {
	h.t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		h.t.Fatalf("pipe: %v", err)
	}
	p := h.startWithStdout(procName, w, "leader", name, "-watch", "-json", "-servers", servers)
	w.Close() // the child has its copy; EOF comes when it exits
	lines := make(chan leaderLine, 1024)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var l leaderLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l.Name = "!undecodable: " + err.Error()
			}
			l.line = sc.Text()
			lines <- l
		}
	}()
	h.t.Cleanup(func() {
		p.stop(h.t, 5*time.Second)
		select {
		case <-readerDone:
		case <-time.After(5 * time.Second):
			h.t.Errorf("reader of %s did not finish", procName)
		}
	})
	return p, lines
}

// nextLeader returns the next line of a leader watch, failing the test if
// none comes within timeout; every line is checked against seen: two
// leaders must never be printed with the same fencing index.
func nextLeader(t *testing.T, lines <-chan leaderLine, seen map[uint64]string, timeout time.Duration) leaderLine {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("leader -watch ended while a line was expected")
		}
		if strings.HasPrefix(l.Name, "!") {
			t.Fatalf("leader -watch printed %q: %s", l.line, l.Name)
		}
		if l.Addr != "" {
			if other, ok := seen[l.FencingIndex]; ok && other != l.Addr {
				t.Fatalf("two leaders with fencing index %d: %s and %s", l.FencingIndex, other, l.Addr)
			}
			seen[l.FencingIndex] = l.Addr
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("leader -watch printed nothing for %v", timeout)
		return leaderLine{}
	}
}

// leaderJSON runs `discoverd leader -json name`.
func (h *harness) leaderJSON(servers, name string) (leaderLine, error) {
	r := h.cli(10*time.Second, "leader", "-json", "-servers", servers, "-timeout", "5s", name)
	if r.code != 0 {
		return leaderLine{}, fmt.Errorf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	var l leaderLine
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		return leaderLine{}, fmt.Errorf("decode %q: %v", r.stdout, err)
	}
	return l, nil
}

// TestLeader_FailsOverToTheNextRegistration: two `discoverd register` for
// one service; `discoverd leader` names the first, with its fencing index,
// and `leader -watch` prints it; when the first registrant is killed (-9:
// no unregistration) its instance expires, and the watch prints the second
// with a larger fencing index — never two leaders with the same index.
func TestLeader_FailsOverToTheNextRegistration(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)
	const addrA, addrB = "10.8.0.1:5432", "10.8.0.2:5432"

	r := h.cli(10*time.Second, "leader", "-servers", all, "db")
	if r.code != 1 || !strings.Contains(r.stderr, "no leader of db") {
		t.Fatalf("leader of a service without instances: %v; want exit 1 saying no leader of db", r)
	}

	regA := h.start("register-a", "register", "-servers", all, "-ttl", "2s", "db", addrA, "role=a")
	h.waitServices(all, "db", func(l []instance) bool { return len(l) == 1 && l[0].Addr == addrA }, "A")
	h.start("register-b", "register", "-servers", all, "-ttl", "2s", "db", addrB, "role=b")
	h.waitServices(all, "db", func(l []instance) bool { return len(l) == 2 }, "A and B")

	la, err := h.leaderJSON(all, "db")
	if err != nil || la.Addr != addrA || la.FencingIndex == 0 || la.Name != "db" || la.Attrs["role"] != "a" {
		t.Fatalf("leader -json: %+v %v; want %s with its fencing index and attrs", la, err, addrA)
	}
	r = h.mustCLI(10*time.Second, "leader", "db", "-servers", all) // flags after the NAME too
	if want := fmt.Sprintf("leader of db: %s (fencing index %d) role=a", addrA, la.FencingIndex); strings.TrimSpace(r.stdout) != want {
		t.Fatalf("leader: %q, want %q", r.stdout, want)
	}

	seen := map[uint64]string{}
	watch, lines := h.startLeaderWatch("leader-watch", all, "db")
	if l := nextLeader(t, lines, seen, 10*time.Second); l.Addr != addrA || l.FencingIndex != la.FencingIndex {
		t.Fatalf("leader -watch: %q, want %s fencing %d", l.line, addrA, la.FencingIndex)
	}

	regA.kill9(t)
	// A expires after its TTL (2 s) and the cluster's grace; then B leads.
	l := nextLeader(t, lines, seen, 20*time.Second)
	for l.Addr == "" { // a moment without a leader is allowed, not expected
		l = nextLeader(t, lines, seen, 20*time.Second)
	}
	if l.Addr != addrB || l.FencingIndex <= la.FencingIndex || l.Attrs["role"] != "b" {
		t.Fatalf("leader -watch after A was killed: %q, want %s with a fencing index above %d", l.line, addrB, la.FencingIndex)
	}
	lb, err := h.leaderJSON(all, "db")
	if err != nil || lb.Addr != addrB || lb.FencingIndex != l.FencingIndex {
		t.Fatalf("leader -json after A was killed: %+v %v; want %s fencing %d", lb, err, addrB, l.FencingIndex)
	}

	watch.signal(t, syscall.SIGINT)
	if code := watch.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("leader -watch exited %d on SIGINT, want 0", code)
	}
	for l := range lines { // what it printed before it ended
		if l.Addr != "" {
			if other, ok := seen[l.FencingIndex]; ok && other != l.Addr {
				t.Fatalf("two leaders with fencing index %d: %s and %s", l.FencingIndex, other, l.Addr)
			}
			seen[l.FencingIndex] = l.Addr
		}
	}
}
