package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfig_ServerFromAFile: `discoverd server -config FILE` starts a node
// from a YAML file alone (identity, address, data dir, peers, Raft
// timeouts), a flag on the command line overrides the file, and a file with
// an unknown key stops the server with exit status 2 before it starts.
func TestConfig_ServerFromAFile(t *testing.T) {
	h := newHarness(t)
	port := freePorts(t, 1)[0]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(h.dir, "n1-data")
	cfg := filepath.Join(h.dir, "n1.yaml")
	body := fmt.Sprintf(`# a single-node cluster
id: n1
addr: %s
data-dir: %s
peers:
  n1: %s
raft-heartbeat-timeout: 500ms
raft-election-timeout: 500ms
raft-leader-lease-timeout: 250ms
log-level: warn
`, addr, dir, addr)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := h.start("server-n1", "server", "-config", cfg, "-log-level", "info")
	h.waitStable(addr, []string{"n1"}, 30*time.Second)
	// -log-level info on the command line beat the file's warn.
	if !p.logContains(`msg="discoverd node started"`) {
		t.Errorf("the node did not log at info level: the command line did not win over the file")
	}
	if l, err := h.services(addr, "web"); err != nil || len(l) != 0 {
		t.Fatalf("services on the node started from its config file: %v %v", l, err)
	}
	p.stop(t, 15*time.Second)

	bad := filepath.Join(h.dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("id: n2\nraft-hartbeat-timeout: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.cli(10*time.Second, "server", "-config", bad)
	if r.code != 2 || !strings.Contains(r.stderr, `unknown key "raft-hartbeat-timeout"`) {
		t.Fatalf("server with an unknown key in its config: %v", r)
	}
}
