package test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/etcdtest"
)

// TestEtcd_CLIAgainstEtcdFrontEnds: the CLI works unchanged against
// discoverd running as two front ends over a real etcd (embedded in this
// test process, on loopback): register, services (default, consistent,
// filtered), watch (state, changes, unregister and expire reasons), status,
// unregister, and a front end lost under a running watch.
func TestEtcd_CLIAgainstEtcdFrontEnds(t *testing.T) {
	h := newHarness(t)
	e := etcdtest.Start(t)
	ports := freePorts(t, 2)
	var fronts []*proc
	var addrs []string
	for i, p := range ports {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		addrs = append(addrs, addr)
		fronts = append(fronts, h.start(fmt.Sprintf("fe%d", i+1), "server", "-backend", "etcd",
			"-etcd-endpoints", e.Endpoint, "-etcd-prefix", "/cli-test", "-addr", addr, "-id", fmt.Sprintf("fe%d", i+1)))
	}
	all := strings.Join(addrs, ",")
	poll(t, 15*time.Second, 100*time.Millisecond, "the front ends to answer status", func() (bool, string) {
		for _, a := range addrs {
			st, err := h.status(a)
			if err != nil {
				return false, err.Error()
			}
			if st.Leader == "" || len(st.Nodes) != 1 || st.Nodes[0].State != "Leader" {
				return false, st.String()
			}
		}
		return true, ""
	})

	reg := h.start("register", "register", "-servers", all, "-ttl", "2s", "web", "10.0.0.1:80", "zone=a")
	h.waitServices(all, "web", func(in []instance) bool {
		return len(in) == 1 && in[0].Addr == "10.0.0.1:80" && in[0].Attrs["zone"] == "a"
	}, "web 10.0.0.1:80 zone=a")
	if in, err := h.services(addrs[1], "-consistent", "web", "zone=b"); err != nil || len(in) != 0 {
		t.Fatalf("services -consistent web zone=b = %v, %v", in, err)
	}

	// A watch through the second front end sees the state, then changes.
	w := h.startWatch("watch", addrs[1]+","+addrs[0], "web")
	if ev := w.next(t, 10*time.Second); ev.Kind != "up" || ev.Addr != "10.0.0.1:80" {
		t.Fatalf("first watch event %s, want up 10.0.0.1:80", ev.line)
	}
	if ev := w.next(t, 10*time.Second); ev.Kind != "current" {
		t.Fatalf("second watch event %s, want current", ev.line)
	}
	change := func(kind, addr, reason string, within time.Duration) watchEvent {
		t.Helper()
		ev := w.next(t, within)
		for ev.Kind == "current" { // a resumed watch saying it caught up
			ev = w.next(t, within)
		}
		if ev.Kind != kind || ev.Addr != addr || (reason != "" && ev.Reason != reason) {
			t.Fatalf("watch event %s; want %s %s %s", ev.line, kind, addr, reason)
		}
		return ev
	}

	// Kill the front end the watch reads from: it resumes through the other.
	fronts[1].kill9(t)
	reg2 := h.start("register2", "register", "-servers", addrs[0], "web", "10.0.0.2:80")
	up := change("up", "10.0.0.2:80", "", 15*time.Second)
	// The watch can see the registration before the command has read its
	// answer: wait for the command to say it registered.
	poll(t, 10*time.Second, 20*time.Millisecond, "register2 to report its registration", func() (bool, string) {
		return reg2.logContains("registered web 10.0.0.2:80"), fmt.Sprintf("exited=%v", reg2.exited())
	})

	// SIGINT: the register command unregisters on its way out.
	reg2.signal(t, syscall.SIGINT)
	if code := reg2.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("register exited %d after SIGINT", code)
	}
	down := change("down", "10.0.0.2:80", "unregister", 10*time.Second)
	if down.Index <= up.Index {
		t.Fatalf("down at %d after up at %d", down.Index, up.Index)
	}

	// SIGKILL: heartbeats stop, etcd's lease expires the instance.
	killed := time.Now()
	reg.kill9(t)
	change("down", "10.0.0.1:80", "expire", 15*time.Second)
	if took := time.Since(killed); took > 10*time.Second {
		t.Fatalf("expired %v after the heartbeats stopped (TTL 2s)", took)
	}
	if in, err := h.services(addrs[0], "-consistent", "web"); err != nil || len(in) != 0 {
		t.Fatalf("services after both left = %v, %v", in, err)
	}
	if r := h.cli(10*time.Second, "unregister", "-servers", addrs[0], "web", "10.0.0.9:80"); r.code != 1 || !strings.Contains(r.stderr, "not registered") {
		t.Fatalf("unregister of an unknown instance: %v", r)
	}
	st, err := h.status(addrs[0])
	if err != nil || st.Leader != "etcd0" || len(st.Nodes) != 1 || st.Nodes[0].State != "Leader" {
		t.Fatalf("status = %v, %v; want etcd's one member as the leader", st, err)
	}
	// Backups are etcd's business: the front ends say so, and what to use.
	if r := h.cli(10*time.Second, "snapshot", "save", "-servers", addrs[0], "-timeout", "5s", filepath.Join(h.dir, "b.snap")); r.code != 1 || !strings.Contains(r.stderr, "etcdctl snapshot save") {
		t.Fatalf("snapshot save against an etcd front end: %v", r)
	}
}

// TestEtcd_FrontEndReadyWhileEtcdAnswers: an etcd front end's
// /health/ready answers 200 while etcd answers, 503 naming etcd once it is
// gone, and its /metrics carry the metrics of both backends but none of
// Raft's.
func TestEtcd_FrontEndReadyWhileEtcdAnswers(t *testing.T) {
	h := newHarness(t)
	e := etcdtest.StartCluster(t, 1)
	ports := freePorts(t, 2)
	url := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	h.start("fe1", "server", "-backend", "etcd", "-etcd-endpoints", strings.Join(e.Endpoints(), ","), "-etcd-prefix", "/http-test",
		"-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-id", "fe1", "-http-addr", strings.TrimPrefix(url, "http://"))
	hc := &http.Client{}
	poll(t, 15*time.Second, 50*time.Millisecond, "the front end to be ready", func() (bool, string) {
		code, body, err := httpGet(hc, url+"/health/ready")
		return code == http.StatusOK, fmt.Sprint(code, " ", body, err)
	})
	m := scrape(t, hc, url)
	if m.get(t, "discoverd_ready") != 1 {
		t.Errorf("discoverd_ready %v while etcd answers", m["discoverd_ready"])
	}
	m.get(t, "discoverd_heartbeats_total")
	for name := range m.families() {
		if strings.HasPrefix(name, "discoverd_raft_") || name == "discoverd_instances" {
			t.Errorf("an etcd front end exports %s", name)
		}
	}
	e.Stop(0)
	poll(t, 15*time.Second, 50*time.Millisecond, "the front end to be unready without etcd", func() (bool, string) {
		code, body, err := httpGet(hc, url+"/health/ready")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "etcd does not answer"), fmt.Sprint(code, " ", body, err)
	})
	if code, _, err := httpGet(hc, url+"/health/live"); err != nil || code != http.StatusOK {
		t.Errorf("/health/live without etcd: %d %v, want 200: the process runs", code, err)
	}
}
