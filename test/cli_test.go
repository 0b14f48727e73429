package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/test/prockit"
)

// serviceCount is one element of `discoverd services -json` without a name.
type serviceCount struct {
	Name      string `json:"name"`
	Instances uint64 `json:"instances"`
}

// serviceCounts runs `discoverd services -json [args...]` without a name
// against servers. It insists on a JSON array (never null).
func (h *harness) serviceCounts(servers string, args ...string) ([]serviceCount, error) {
	h.t.Helper()
	r := h.cli(10*time.Second, append([]string{"services", "-json", "-servers", servers, "-timeout", "5s"}, args...)...)
	if r.code != 0 {
		return nil, fmt.Errorf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	if !strings.HasPrefix(strings.TrimSpace(r.stdout), "[") {
		return nil, fmt.Errorf("services -json printed %q, want a JSON array", r.stdout)
	}
	var list []serviceCount
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		return nil, fmt.Errorf("decode %q: %v", r.stdout, err)
	}
	return list, nil
}

// waitServiceCounts polls `services -json` without a name on servers until
// it lists exactly want.
func (h *harness) waitServiceCounts(servers string, want []serviceCount, args ...string) {
	h.t.Helper()
	poll(h.t, 15*time.Second, 50*time.Millisecond, fmt.Sprintf("services on %s to list %v", servers, want), func() (bool, string) {
		list, err := h.serviceCounts(servers, args...)
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(list, want), fmt.Sprintf("%v", list)
	})
}

// lineFields returns the whitespace-separated fields of every line of out.
func lineFields(out string) [][]string {
	var rows [][]string
	for line := range strings.Lines(out) {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

// TestCLI_ServicesListsEveryServiceAndFlagsFollowArguments: against three
// server processes, `services` without a name lists every service that has
// instances with their counts, as a table and as JSON, and follows
// registrations and unregistrations on every node; flags work after the
// arguments (register and services), `--` ends them, and an attribute whose
// value starts with "-" stays an attribute.
func TestCLI_ServicesListsEveryServiceAndFlagsFollowArguments(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	leader := c.node(h.waitStable(all, c.ids(), 30*time.Second).Leader).addr
	h.waitServiceCounts(all, []serviceCount{}, "-consistent")

	// Flags after the arguments, before them, and on both sides.
	web1 := h.start("register-web-1", "register", "web", "10.0.0.1:80", "zone=a", "-servers", all, "-ttl", "5s")
	web2 := h.start("register-web-2", "register", "-ttl", "5s", "web", "10.0.0.2:80", "-servers", all)
	db := h.start("register-db", "register", "-servers", all, "db", "10.0.1.1:5432", "role=-primary", "-ttl", "5s")
	for _, r := range []struct {
		p    *proc
		want string
	}{{web1, "registered web 10.0.0.1:80 (ttl 5s)"}, {web2, "registered web 10.0.0.2:80 (ttl 5s)"}, {db, "registered db 10.0.1.1:5432 (ttl 5s)"}} {
		poll(t, 20*time.Second, 50*time.Millisecond, r.p.Name()+" to say "+r.want, func() (bool, string) {
			return r.p.logContains(r.want), r.p.LogTail(5)
		})
	}

	want := []serviceCount{{"db", 1}, {"web", 2}}
	h.waitServiceCounts(all, want, "-consistent")
	for _, nd := range c.nodes { // default reads, on each node
		h.waitServiceCounts(nd.addr, want)
	}

	// The table, with flags after nothing at all and then after "--".
	r := h.mustCLI(10*time.Second, "services", "-servers", all, "-consistent")
	rows := lineFields(r.stdout)
	if len(rows) != 4 || !slices.Equal(rows[0], []string{"NAME", "INSTANCES"}) || !slices.Equal(rows[1], []string{"db", "1"}) ||
		!slices.Equal(rows[2], []string{"web", "2"}) || !strings.HasPrefix(strings.Join(rows[3], " "), "2 services at index ") {
		t.Fatalf("services table:\n%s", r.stdout)
	}

	// One service, with its flags after the name and the attributes.
	list, err := h.services(all, "web", "zone=a", "-consistent")
	if err != nil || !isExactly(list, "web", "10.0.0.1:80", map[string]string{"zone": "a"}) {
		t.Fatalf("services web zone=a -consistent = %+v, %v", list, err)
	}
	// Asked of the leader: a follower would answer a consistent read with
	// its own last contact with the leader (a heartbeat ago), not 0.
	r = h.mustCLI(10*time.Second, "services", "db", "role=-primary", "-json", "-consistent", "-servers", leader)
	var dbOut struct {
		Name        string     `json:"name"`
		KnownLeader bool       `json:"known_leader"`
		LastContact int64      `json:"last_contact_ms"`
		Instances   []instance `json:"instances"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &dbOut); err != nil || dbOut.Name != "db" || !dbOut.KnownLeader || dbOut.LastContact != 0 ||
		!isExactly(dbOut.Instances, "db", "10.0.1.1:5432", map[string]string{"role": "-primary"}) {
		t.Fatalf("services db role=-primary -json -consistent (answered by the leader): %+v, %v", dbOut, err)
	}
	r = h.mustCLI(10*time.Second, "services", "-consistent", "-servers", all, "--", "web")
	if !strings.Contains(r.stdout, "2 instances of web at index ") {
		t.Fatalf("services -- web:\n%s", r.stdout)
	}
	r = h.mustCLI(10*time.Second, "services", "db", "-consistent", "-servers", all)
	if !strings.Contains(r.stdout, "1 instance of db at index ") {
		t.Fatalf("services db: want \"1 instance of db\":\n%s", r.stdout)
	}
	if r := h.cli(10*time.Second, "services", "web", "-jsn", "-servers", all); r.code != 2 || !strings.Contains(r.stderr, "flag provided but not defined: -jsn") {
		t.Fatalf("a misspelt flag after the name: want exit 2 naming it; got %v", r)
	}

	// Unregistrations: a count goes down, an emptied service goes away.
	for _, p := range []*proc{web2, db} {
		p.signal(t, syscall.SIGINT)
		if code := p.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGINT; want 0\n%s", p.Name(), code, p.Describe())
		}
	}
	want = []serviceCount{{"web", 1}}
	h.waitServiceCounts(all, want, "-consistent")
	for _, nd := range c.nodes {
		h.waitServiceCounts(nd.addr, want)
	}
	r = h.mustCLI(10*time.Second, "services", "-servers", all, "-consistent")
	if rows := lineFields(r.stdout); len(rows) != 3 || !strings.HasPrefix(strings.Join(rows[2], " "), "1 service at index ") {
		t.Fatalf("services table with one service:\n%s", r.stdout)
	}
}

// TestCLI_StatusShowsAStoppedNodeUnreachable: status shows every node ready
// with its last contact with the leader, in the table and in -json; a node
// that was killed shows "unreachable" with "-" where the others show their
// term, indices, readiness and last contact, and why it did not answer.
func TestCLI_StatusShowsAStoppedNodeUnreachable(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	st := h.waitStable(all, c.ids(), 30*time.Second)

	// -json carries ready, known_leader and last_contact_ms for every node.
	poll(t, 20*time.Second, 100*time.Millisecond, "every node to be ready and know the leader", func() (bool, string) {
		r := h.cli(10*time.Second, "status", "-json", "-servers", all, "-timeout", "5s")
		var raw struct {
			Nodes []map[string]any `json:"nodes"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &raw) != nil || len(raw.Nodes) != 3 {
			return false, r.String()
		}
		for _, n := range raw.Nodes {
			for _, key := range []string{"ready", "known_leader", "last_contact_ms"} {
				if _, ok := n[key]; !ok {
					t.Fatalf("status -json has no %q for %v:\n%s", key, n["id"], r.stdout)
				}
			}
			if n["ready"] != true || n["known_leader"] != true {
				return false, r.stdout
			}
			if n["state"] == "Leader" && n["last_contact_ms"] != 0.0 {
				t.Fatalf("the leader's last_contact_ms is %v, want 0:\n%s", n["last_contact_ms"], r.stdout)
			}
		}
		return true, ""
	})

	lastContact := regexp.MustCompile(`^(0s|\d+ms|\d+\.\ds|(\d+h)?(\d+m)?\d+s)$`)
	r := h.mustCLI(10*time.Second, "status", "-servers", all)
	rows := lineFields(r.stdout)
	if len(rows) != 5 || !slices.Equal(rows[1], []string{"ID", "ADDR", "STATE", "TERM", "APPLIED", "COMMIT", "READY", "LAST", "CONTACT"}) {
		t.Fatalf("status table:\n%s", r.stdout)
	}
	for _, row := range rows[2:] {
		if len(row) != 8 || row[6] != "yes" || !lastContact.MatchString(row[7]) || (row[2] == "Leader" && row[7] != "0s") {
			t.Fatalf("status row %q: want 8 columns, READY yes and a LAST CONTACT (0s on the leader)\n%s", row, r.stdout)
		}
	}

	// A follower killed: unreachable, with dashes and its error.
	var victim *node
	for _, nd := range c.nodes {
		if nd.id != st.Leader {
			victim = nd
			break
		}
	}
	victim.p.kill9(t)
	rest := c.servers(victim.id)
	var table string
	poll(t, 20*time.Second, 100*time.Millisecond, victim.id+" to show as unreachable", func() (bool, string) {
		r := h.cli(10*time.Second, "status", "-servers", rest, "-timeout", "5s")
		table = r.stdout
		if r.code != 0 {
			return false, r.String()
		}
		for _, row := range lineFields(r.stdout) {
			if len(row) > 2 && row[0] == victim.id && row[2] == "unreachable" {
				return true, ""
			}
		}
		return false, r.stdout
	})
	rows = lineFields(table)
	if !slices.Equal(rows[1], []string{"ID", "ADDR", "STATE", "TERM", "APPLIED", "COMMIT", "READY", "LAST", "CONTACT", "ERROR"}) {
		t.Fatalf("status with an unreachable node: want an ERROR column:\n%s", table)
	}
	for _, row := range rows[2:] {
		if row[0] != victim.id {
			if len(row) != 8 || row[6] != "yes" {
				t.Fatalf("status row %q of a node that answers:\n%s", row, table)
			}
			continue
		}
		if len(row) < 9 || row[1] != victim.addr || !slices.Equal(row[3:8], []string{"-", "-", "-", "-", "-"}) {
			t.Fatalf("status row %q of the killed node: want unreachable, five dashes and its error:\n%s", row, table)
		}
	}
	sj, err := h.status(rest)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := sj.node(victim.id); !ok || n.State != "unreachable" || n.Error == "" {
		t.Fatalf("status -json of the killed node: %+v (%v)", n, sj)
	}
}

// TestCLI_VersionAndHelp: `discoverd version` and `discoverd -version`
// print the version line; a build with -X main.version prints that
// version; a command's -h starts with what it does and an example.
func TestCLI_VersionAndHelp(t *testing.T) {
	h := newHarness(t)
	line := regexp.MustCompile(`^discoverd \S+ \(go\d[^,]*, [a-z0-9]+/[a-z0-9]+\)\n$`)
	a := h.mustCLI(10*time.Second, "version")
	b := h.mustCLI(10*time.Second, "-version")
	if !line.MatchString(a.stdout) || a.stdout != b.stdout {
		t.Fatalf("version printed %q, -version %q; want one line `discoverd <version> (<go>, <os>/<arch>)`", a.stdout, b.stdout)
	}

	root, err := prockit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "discoverd-versioned")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version=v9.8.7-clitest", "-o", bin, "./cmd/discoverd")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags -X main.version: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "discoverd v9.8.7-clitest (go") || !line.Match(out) {
		t.Fatalf("a build with -X main.version=v9.8.7-clitest printed %q (%v)", out, err)
	}

	r := h.mustCLI(10*time.Second, "services", "-h")
	if !strings.HasPrefix(r.stdout+r.stderr, "Lists the instances of a service") ||
		!strings.Contains(r.stdout+r.stderr, "\n\nExample: discoverd services web") {
		t.Fatalf("services -h:\n%s%s", r.stdout, r.stderr)
	}
}

// TestCLI_RegisterReportsHeartbeatFailuresAndStopsInBoundedTime: register
// says on stderr when its heartbeats fail and when they succeed again; on
// SIGINT with the cluster not answering it gives up the unregistration
// after a short wait (exit 1, saying so), and a second SIGINT ends it at
// once (exit 130).
func TestCLI_RegisterReportsHeartbeatFailuresAndStopsInBoundedTime(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(1)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)
	srv := c.nodes[0].p
	paused := false
	pause := func() {
		t.Helper()
		if err := srv.Pause(); err != nil {
			t.Fatal(err)
		}
		paused = true
	}
	resume := func() {
		t.Helper()
		if err := srv.Resume(); err != nil {
			t.Fatal(err)
		}
		paused = false
	}
	t.Cleanup(func() {
		if paused {
			_ = srv.Resume()
		}
	})
	waitLog := func(p *proc, s string) {
		t.Helper()
		poll(t, 20*time.Second, 20*time.Millisecond, p.Name()+" to say "+s, func() (bool, string) {
			return p.logContains(s), p.LogTail(5)
		})
	}

	reg := h.start("register", "register", "web", "10.0.0.1:80", "-ttl", "3s", "-servers", all)
	waitLog(reg, "registered web 10.0.0.1:80 (ttl 3s)")

	// The server paused: heartbeats fail, and register says so; resumed:
	// they succeed again, and register says that too.
	pause()
	waitLog(reg, "heartbeat of web 10.0.0.1:80 failed")
	resume()
	waitLog(reg, "heartbeats of web 10.0.0.1:80 succeed again")

	// SIGINT while the server does not answer: register gives up the
	// unregistration after its short wait and says so.
	pause()
	reg.signal(t, syscall.SIGINT)
	waitLog(reg, "interrupt again to exit at once")
	if code := reg.wait(t, 20*time.Second); code != 1 {
		t.Fatalf("register exited %d after SIGINT with the server paused; want 1\n%s", code, reg.Describe())
	}
	if !reg.logContains("unregister on exit") || !reg.logContains("expires once its TTL (3s) passes") {
		t.Fatalf("register did not say the unregistration failed:\n%s", reg.Describe())
	}
	resume()

	// A second SIGINT while it waits ends it at once.
	reg2 := h.start("register-2", "register", "-ttl", "3s", "web", "10.0.0.2:80", "-servers", all)
	waitLog(reg2, "registered web 10.0.0.2:80 (ttl 3s)")
	pause()
	reg2.signal(t, syscall.SIGINT)
	waitLog(reg2, "interrupt again to exit at once")
	reg2.signal(t, syscall.SIGINT)
	if code := reg2.wait(t, 20*time.Second); code != 130 {
		t.Fatalf("register exited %d after a second SIGINT; want 130\n%s", code, reg2.Describe())
	}
	if !reg2.logContains("interrupted again") {
		t.Fatalf("register did not say it was interrupted again:\n%s", reg2.Describe())
	}
	resume()
}
