package test

import (
	"fmt"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSmoke_ThreeProcessesCLI runs three discoverd server processes and
// drives them through the CLI only: a TTL registration, filtered and
// consistent lookups, a watch stream, the leader's crash (SIGKILL) and
// restart, a clean unregister on SIGINT, expiry after a client's crash, and
// the CLI's exit statuses.
func TestSmoke_ThreeProcessesCLI(t *testing.T) {
	began := time.Now()
	h := newHarness(t)
	phase := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%6.2fs] %s", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}

	// 1. Three servers elect one leader and agree on the applied index.
	c := h.startCluster(3)
	all := c.servers()
	st := h.waitStable(all, c.ids(), 15*time.Second)
	phase("cluster up: %v", st)

	// 2. A TTL registration, then lookups: plain, consistent and filtered.
	// The client picks a server at random; start register again (the same
	// instance) until it heartbeats through the leader, so that killing the
	// leader later makes it fail over. Killed attempts leave the instance
	// behind, and the next one registers it again.
	const web80 = "10.0.0.1:80"
	leader := st.Leader
	var reg80 *proc
	for attempt := 1; ; attempt++ {
		reg80 = h.start(fmt.Sprintf("register-web-80-%d", attempt), "register", "-servers", all, "-ttl", "2s", "web", web80, "zone=a")
		poll(t, 15*time.Second, 50*time.Millisecond, reg80.Name()+" to register", func() (bool, string) {
			return reg80.logContains("registered web " + web80), fmt.Sprintf("exited=%v", reg80.exited())
		})
		on := c.connectedNode(reg80, 5*time.Second)
		if on == leader || attempt == 20 {
			phase("%s heartbeats through %s (leader %s)", reg80.Name(), on, leader)
			break
		}
		reg80.kill9(t)
	}
	// Plain reads may come from a follower that is a little behind (a new
	// CLI process has seen no index), so the index of the last registration
	// comes from a consistent read, and plain reads are polled until every
	// node serves it.
	list, err := h.services(all, "-consistent", "web", "zone=a")
	if err != nil || !isExactly(list, "web", web80, map[string]string{"zone": "a"}) {
		t.Fatalf("services -consistent web zone=a = %+v, %v; want exactly %s {zone:a}", list, err, web80)
	}
	idx80 := list[0].Index
	for _, nd := range c.nodes {
		h.waitServices(nd.addr, "web", func(list []instance) bool {
			return isExactly(list, "web", web80, map[string]string{"zone": "a"}) && list[0].Index == idx80
		}, fmt.Sprintf("exactly %s {zone:a} at index %d", web80, idx80))
	}
	if list, err := h.services(all, "web", "zone=b"); err != nil || len(list) != 0 {
		t.Fatalf("services web zone=b = %+v, %v; want []", list, err)
	}
	phase("registered %s at index %d", web80, idx80)

	// 3. A watch starts with the current state: an up per instance, then
	// current. The client picks a server at random; restart the watch until
	// it reads from the leader, so that killing the leader next moves the
	// stream to another server.
	var w *watcher
	var e watchEvent
	for attempt := 1; ; attempt++ {
		w = h.startWatch(fmt.Sprintf("watch-web-%d", attempt), all, "web")
		e = w.next(t, 10*time.Second)
		if e.Kind != "up" || e.Name != "web" || e.Addr != web80 || !maps.Equal(e.Attrs, map[string]string{"zone": "a"}) || e.Index != idx80 {
			t.Fatalf("first watch event = %s; want up web %s {zone:a} at index %d", e.line, web80, idx80)
		}
		e = w.next(t, 10*time.Second)
		if e.Kind != "current" || e.Index < idx80 {
			t.Fatalf("second watch event = %s; want current at index >= %d", e.line, idx80)
		}
		on := c.connectedNode(w.p, 5*time.Second)
		if on == leader || attempt == 20 {
			phase("watch %d reads from %s (leader %s)", attempt, on, leader)
			break
		}
		w.p.stop(t, 5*time.Second)
	}
	lastIdx := e.Index // every later change must come after it
	// change reads the next watch event and checks it is a change after every
	// earlier one.
	change := func(kind, addr, reason string) watchEvent {
		t.Helper()
		e := w.next(t, 15*time.Second)
		// A watch that resumed on another node says which index it caught
		// up to; that marker never goes back in time.
		for e.Kind == "current" && e.Index >= lastIdx {
			lastIdx = e.Index
			e = w.next(t, 15*time.Second)
		}
		if e.Kind != kind || e.Name != "web" || e.Addr != addr || (reason != "" && e.Reason != reason) {
			t.Fatalf("watch event = %s; want %s web %s %s", e.line, kind, addr, reason)
		}
		if e.Index <= lastIdx {
			t.Fatalf("watch event %s has index %d, not after the %d already printed", e.line, e.Index, lastIdx)
		}
		lastIdx = e.Index
		return e
	}
	phase("watch printed the state block (current at %d)", lastIdx)

	// 4. SIGKILL the leader: the other two elect a new one.
	st = h.waitStable(all, c.ids(), 15*time.Second)
	oldLeader := st.Leader
	if oldLeader != leader {
		t.Logf("leadership moved from %s to %s on its own; the clients may not fail over", leader, oldLeader)
	}
	c.node(oldLeader).p.kill9(t)
	killedAt := time.Now()
	rest := c.servers(oldLeader)
	newLeader := h.waitNewLeader(rest, oldLeader, oldLeader, 15*time.Second)
	electedAt := time.Now()
	phase("killed leader %s; %s leads after %v", oldLeader, newLeader, electedAt.Sub(killedAt).Round(time.Millisecond))

	// 5. The watch follows the failover: an instance registered now (through
	// a server list that still names the dead node) shows up after every
	// event it printed before.
	const web81 = "10.0.0.1:81"
	reg81 := h.start("register-web-81", "register", "-servers", all, "web", web81)
	e = change("up", web81, "")
	if len(e.Attrs) != 0 {
		t.Fatalf("watch event = %s; want no attributes", e.line)
	}
	sawUp81 := time.Now()
	phase("watch saw up %s at %d after the failover", web81, e.Index)

	// 6. Heartbeats survive the failover: the new leader armed web80 with
	// TTL (2 s) + grace (2 s, the server default) when it took over — before
	// it committed web81, which the watch has just printed — so if heartbeats
	// did not reach it, web80 would be gone 4 s after that. Hold until then
	// plus a margin and watch it stay, at its original index (no re-register).
	holdUntil := sawUp81.Add(2*time.Second + 2*time.Second + time.Second)
	checks := 0
	for time.Now().Before(holdUntil) {
		select {
		case e, ok := <-w.events:
			t.Fatalf("watch printed %s (open=%v) while nothing changed", e.line, ok)
		case <-time.After(250 * time.Millisecond):
		}
		list, err := h.services(rest, "-consistent", "web")
		if err != nil {
			t.Fatalf("services web during the hold: %v", err)
		}
		if len(list) != 2 || list[0].Addr != web80 || list[0].Index != idx80 || list[1].Addr != web81 {
			t.Fatalf("services web = %+v %v after the failover; want %s (still at index %d) and %s (heartbeats lost?)",
				list, time.Since(electedAt).Round(time.Millisecond), web80, idx80, web81)
		}
		checks++
	}
	for _, p := range []*proc{reg80, reg81, w.p} {
		if p.exited() {
			t.Fatalf("%s exited during the failover: %v", p.Name(), p.State())
		}
	}
	phase("%s stayed registered for %v after the new leader (%d checks)", web80, time.Since(electedAt).Round(time.Millisecond), checks)

	// 7. unregister removes an instance whose owner crashed (SIGKILL, so it
	// neither unregisters nor re-registers); a second unregister fails.
	reg81.kill9(t)
	r := h.mustCLI(20*time.Second, "unregister", "-servers", all, "web", web81)
	if !strings.Contains(r.stdout, "unregistered web "+web81) {
		t.Errorf("unregister stdout = %q; want it to say unregistered web %s", r.stdout, web81)
	}
	change("down", web81, "unregister")
	if r := h.cli(20*time.Second, "unregister", "-servers", all, "web", web81); r.code != 1 || r.stderr == "" {
		t.Errorf("second unregister: want exit 1 with a message; got %v", r)
	}
	phase("unregistered %s", web81)

	// 8. The killed node restarts on its data dir and catches up.
	c.startNode(c.node(oldLeader))
	st = h.waitStable(all, c.ids(), 15*time.Second)
	h.waitServices(c.node(oldLeader).addr, "web", func(list []instance) bool {
		return isExactly(list, "web", web80, map[string]string{"zone": "a"}) && list[0].Index == idx80
	}, fmt.Sprintf("exactly %s at index %d on the restarted %s", web80, idx80, oldLeader))
	phase("restarted %s: %v", oldLeader, st)

	// 9. SIGINT ends register cleanly: it unregisters, says so, exits 0.
	reg80.signal(t, syscall.SIGINT)
	if code := reg80.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("register after SIGINT exited %d; want 0", code)
	}
	if !reg80.logContains("unregistered web " + web80) {
		t.Fatalf("register after SIGINT did not print %q", "unregistered web "+web80)
	}
	change("down", web80, "unregister")
	if list, err := h.services(all, "-consistent", "web"); err != nil || len(list) != 0 {
		t.Fatalf("services -consistent web = %+v, %v after the unregister; want []", list, err)
	}
	for _, nd := range c.nodes {
		h.waitServices(nd.addr, "web", func(list []instance) bool { return len(list) == 0 }, "[]")
	}
	if w.p.exited() {
		t.Fatalf("watch exited: %v", w.p.State())
	}
	phase("SIGINT unregistered %s", web80)

	// 10. A registration whose owner crashes expires once its TTL passes
	// without a heartbeat — not before.
	const ttl = time.Second
	gone := h.start("register-gone", "register", "-servers", all, "-ttl", ttl.String(), "gone", "10.0.0.9:9")
	poll(t, 10*time.Second, 50*time.Millisecond, "register gone to succeed", func() (bool, string) {
		return gone.logContains("registered gone 10.0.0.9:9"), fmt.Sprintf("exited=%v", gone.exited())
	})
	if list, err := h.services(all, "-consistent", "gone"); err != nil || !isExactly(list, "gone", "10.0.0.9:9", nil) {
		t.Fatalf("services -consistent gone = %+v, %v; want exactly 10.0.0.9:9", list, err)
	}
	gone.kill9(t)
	killedAt = time.Now()
	var goneAfter time.Duration
	poll(t, 10*time.Second, 50*time.Millisecond, "gone to expire", func() (bool, string) {
		// Consistent reads: a stale follower must not hide an early expiry.
		list, err := h.services(all, "-consistent", "gone")
		if err != nil || len(list) != 0 {
			return false, fmt.Sprintf("%+v %v", list, err)
		}
		goneAfter = time.Since(killedAt)
		return true, ""
	})
	// The last heartbeat went out at most ~TTL/3 (+10% jitter) before the
	// kill, and the leader may expire the instance TTL after receiving it:
	// that is the earliest a correct server may drop it, counted from the kill.
	earliest := ttl - ttl/3*11/10
	if goneAfter < earliest {
		t.Fatalf("gone expired %v after its client was killed; its TTL is %v, so not before %v", goneAfter, ttl, earliest)
	}
	phase("gone expired %v after its client was killed (TTL %v)", goneAfter.Round(time.Millisecond), ttl)

	// 11. Exit statuses: 2 for usage errors, 1 for failures, with a message.
	usage := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"register"}, "want NAME HOST:PORT"},
		{[]string{"services", "bad name!"}, "service name"},
		{[]string{"register", "-ttl", "500ms", "x", "1.2.3.4:5"}, "ttl"},
		{[]string{"nosuchcmd"}, "unknown command"},
		{[]string{"watch"}, "want NAME"},
		{[]string{"status", "-nosuchflag"}, "nosuchflag"},
	}
	for _, u := range usage {
		r := h.cli(10*time.Second, u.args...)
		if r.code != 2 || !strings.Contains(r.stderr, u.want) || r.stdout != "" {
			t.Errorf("want exit 2, %q in stderr and no stdout; got %v", u.want, r)
		}
	}
	closed := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	r = h.cli(10*time.Second, "status", "-servers", closed, "-timeout", "1s")
	if r.code != 1 || r.stderr == "" || r.took > 5*time.Second {
		t.Errorf("status against a closed port: want exit 1 with a message within 5s; got %v", r)
	}
	if extra := drain(w); len(extra) > 0 {
		t.Errorf("watch printed events nothing caused: %q", extra)
	}
	phase("exit statuses checked")
}

// isExactly reports whether list holds exactly one instance with these fields
// (nil and empty attributes are equal).
func isExactly(list []instance, name, addr string, attrs map[string]string) bool {
	return len(list) == 1 && list[0].Name == name && list[0].Addr == addr && maps.Equal(list[0].Attrs, attrs)
}

// drain returns the events a watch has printed but the test has not read.
func drain(w *watcher) []string {
	var out []string
	for {
		select {
		case e := <-w.events:
			out = append(out, e.line)
		default:
			return out
		}
	}
}
