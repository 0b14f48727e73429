package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// clientFlagSet is the flag set of a client command like services: a bool
// flag (-json), a string flag (-servers), a duration (-timeout) and the
// -ttl flag of register (a flag.Value that takes a value).
func clientFlagSet() *flag.FlagSet {
	var cf clientFlags
	fs := newFlagSet("test", "", io.Discard)
	cf.register(fs)
	fs.Bool("json", false, "")
	ttl := new(time.Duration)
	fs.Var((*ttlFlag)(ttl), "ttl", "")
	return fs
}

// TestCLI_ReorderArgs: flags move before the positional arguments, each
// with its value when it takes one; attributes (even "key=-x" and "-x=1")
// stay arguments; "--" ends the flags; unknown flags move so that parsing
// reports them.
func TestCLI_ReorderArgs(t *testing.T) {
	cases := []struct {
		args, want []string
	}{
		{nil, nil},
		{[]string{"web"}, []string{"--", "web"}},
		{[]string{"-json", "web"}, []string{"-json", "--", "web"}},
		{[]string{"web", "-json"}, []string{"-json", "--", "web"}},
		{[]string{"web", "--json"}, []string{"--json", "--", "web"}},
		{[]string{"web", "-json=false", "zone=a"}, []string{"-json=false", "--", "web", "zone=a"}},
		{[]string{"-ttl", "5s", "web", "1.2.3.4:80"}, []string{"-ttl", "5s", "--", "web", "1.2.3.4:80"}},
		{[]string{"web", "1.2.3.4:80", "-ttl", "5s"}, []string{"-ttl", "5s", "--", "web", "1.2.3.4:80"}},
		{[]string{"web", "-ttl=5s", "1.2.3.4:80", "zone=a"}, []string{"-ttl=5s", "--", "web", "1.2.3.4:80", "zone=a"}},
		{[]string{"web", "-servers", "a:1,b:2", "zone=a", "-timeout", "1s"}, []string{"-servers", "a:1,b:2", "-timeout", "1s", "--", "web", "zone=a"}},
		// A value that starts with "-" goes with its flag.
		{[]string{"web", "-servers", "-x:1"}, []string{"-servers", "-x:1", "--", "web"}},
		// Attributes stay arguments, whatever their value or key looks like.
		{[]string{"web", "key=-x"}, []string{"--", "web", "key=-x"}},
		{[]string{"web", "-x=1"}, []string{"--", "web", "-x=1"}},
		{[]string{"web", "--x=1"}, []string{"--", "web", "--x=1"}},
		// "--" ends the flags.
		{[]string{"-json", "--", "web", "-json"}, []string{"-json", "--", "web", "-json"}},
		{[]string{"web", "--", "-ttl", "5s"}, []string{"--", "web", "-ttl", "5s"}},
		{[]string{"-json", "--"}, []string{"-json"}},
		// A lone "-" is an argument.
		{[]string{"-", "-json"}, []string{"-json", "--", "-"}},
		// Help and unknown flags move, for flag to handle.
		{[]string{"web", "-h"}, []string{"-h", "--", "web"}},
		{[]string{"web", "--help"}, []string{"--help", "--", "web"}},
		{[]string{"web", "-jsn"}, []string{"-jsn", "--", "web"}},
		// A flag needing a value at the very end: left for flag to refuse.
		{[]string{"web", "-ttl"}, []string{"-ttl"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if got := reorderArgs(clientFlagSet(), tc.args); !slices.Equal(got, tc.want) {
				t.Fatalf("reorderArgs(%q) = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}

// TestCLI_ParseFlagsAfterArguments: parse gives the same flags and
// arguments whether the flags come first or last.
func TestCLI_ParseFlagsAfterArguments(t *testing.T) {
	for _, args := range [][]string{
		{"-ttl", "5s", "-json", "web", "1.2.3.4:80", "key=-x"},
		{"web", "1.2.3.4:80", "key=-x", "-ttl", "5s", "-json"},
		{"web", "-json", "1.2.3.4:80", "-ttl=5s", "key=-x"},
	} {
		fs := clientFlagSet()
		if err := parse(fs, args); err != nil {
			t.Fatalf("parse(%q): %v", args, err)
		}
		if got, want := fs.Args(), []string{"web", "1.2.3.4:80", "key=-x"}; !slices.Equal(got, want) {
			t.Errorf("parse(%q): arguments %q, want %q", args, got, want)
		}
		if ttl := fs.Lookup("ttl").Value.String(); ttl != "5s" {
			t.Errorf("parse(%q): -ttl %s, want 5s", args, ttl)
		}
		if js := fs.Lookup("json").Value.String(); js != "true" {
			t.Errorf("parse(%q): -json %s, want true", args, js)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"web", "-jsn"}, "flag provided but not defined: -jsn"},
		{[]string{"web", "-ttl"}, "flag needs an argument: -ttl"},
		{[]string{"web", "-ttl", "10"}, "did you mean 10s?"},
	} {
		err := parse(clientFlagSet(), tc.args)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want a usage error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestCLI_FlagsAfterArgumentsInCommands: the client commands take flags
// after their arguments.
func TestCLI_FlagsAfterArgumentsInCommands(t *testing.T) {
	closed := closedAddr(t)
	cases := []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"register", "web", "10.0.0.1:80", "-ttl", "500ms"}, 2, "ttl 500ms is out of range"},
		{[]string{"register", "web", "10.0.0.1:80", "zone=a", "-ttl", "5s", "-timeout", "0s"}, 2, "-timeout must be positive"},
		{[]string{"services", "web", "-json", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"services", "-json", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"unregister", "web", "10.0.0.1:80", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"watch", "web", "-from", "3", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"status", "-json", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"leader", "db", "-json", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"leader", "db", "-watch", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"meta", "get", "db", "-json", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"meta", "delete", "db", "-index", "4", "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"meta", "set", "db", "-file", os.DevNull, "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"snapshot", "save", filepath.Join(t.TempDir(), "b.snap"), "-servers", closed, "-timeout", "1s"}, 1, "no discoverd server reachable"},
		{[]string{"snapshot", "restore", os.DevNull, "-servers", closed, "-timeout", "1s"}, 1, "it is empty"},
		{[]string{"snapshot", "restore", filepath.Join(t.TempDir(), "missing.snap")}, 1, "no such file"},
		{[]string{"snapshot", "inspect"}, 2, "want FILE"},
		{[]string{"snapshot"}, 2, "usage: discoverd snapshot save FILE"},
		{[]string{"snapshot", "copy", "f"}, 2, `snapshot "copy": want save, inspect or restore`},
		{[]string{"services", "web", "-jsn"}, 2, "flag provided but not defined: -jsn"},
		{[]string{"services", "web", "key=-x", "-timeout", "0s"}, 2, "-timeout must be positive"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d saying %q", code, stderr.String(), tc.code, tc.want)
			}
		})
	}
}

// TestCLI_EveryHelpStartsWithWhatAndExample: every command's -h (and the
// tls subcommands') starts with one line saying what it does, then an
// example of the command, then its usage, and exits 0.
func TestCLI_EveryHelpStartsWithWhatAndExample(t *testing.T) {
	var all [][]string
	for _, c := range commands() {
		all = append(all, []string{c.name})
	}
	all = append(all, []string{"tls", "ca", "create"}, []string{"tls", "cert", "create"},
		[]string{"meta", "get"}, []string{"meta", "set"}, []string{"meta", "delete"},
		[]string{"members", "add"}, []string{"members", "remove"}, []string{"members", "promote"}, []string{"members", "demote"},
		[]string{"snapshot", "save"}, []string{"snapshot", "inspect"}, []string{"snapshot", "restore"},
		[]string{"acl", "bootstrap"}, []string{"acl", "token"}, []string{"acl", "token", "create"}, []string{"acl", "token", "list"},
		[]string{"acl", "token", "show"}, []string{"acl", "token", "update"}, []string{"acl", "token", "delete"}, []string{"acl", "whoami"})
	named := map[string]bool{}
	for _, cmd := range all {
		name := strings.Join(cmd, " ")
		named[name] = true
		for _, h := range []string{"-h", "--help"} {
			t.Run(name+" "+h, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				if code := run(context.Background(), append(slices.Clone(cmd), h), &stdout, &stderr); code != 0 {
					t.Fatalf("exit %d; stderr %q", code, stderr.String())
				}
				out := stdout.String() + stderr.String()
				lines := strings.Split(out, "\n")
				if len(lines) < 6 {
					t.Fatalf("help is %d lines:\n%s", len(lines), out)
				}
				what, example := lines[0], lines[2]
				if what == "" || !strings.HasSuffix(what, ".") || strings.HasPrefix(what, "Usage") || lines[1] != "" {
					t.Errorf("first line %q: want one sentence saying what the command does, then a blank line\n%s", what, out)
				}
				if !strings.HasPrefix(example, "Example: discoverd "+name) || lines[3] != "" {
					t.Errorf("third line %q: want \"Example: discoverd %s ...\", then a blank line\n%s", example, name, out)
				}
				if !strings.HasPrefix(lines[4], "Usage: discoverd "+cmd[0]) {
					t.Errorf("fifth line %q: want the usage\n%s", lines[4], out)
				}
			})
		}
	}
	for name := range helps {
		if !named[name] {
			t.Errorf("help text for %q, which is no command", name)
		}
	}
}

// TestCLI_Version: version and -version print the same line; the version
// comes from -X main.version, else the build information.
func TestCLI_Version(t *testing.T) {
	re := regexp.MustCompile(`^discoverd \S+ \(go[^,]+, [a-z0-9]+/[a-z0-9]+\)\n$`)
	var outs []string
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 || !re.MatchString(stdout.String()) {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
		outs = append(outs, stdout.String())
	}
	if outs[0] != outs[1] || outs[1] != outs[2] {
		t.Fatalf("version and -version differ: %q", outs)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version", "extra"}, &stdout, &stderr); code != 2 {
		t.Fatalf("version extra: exit %d, want 2", code)
	}

	defer func(v string) { version = v }(version)
	version = "v1.2.3"
	if got := versionString(); !strings.HasPrefix(got, "discoverd v1.2.3 (go") {
		t.Fatalf("with -X main.version=v1.2.3: %q", got)
	}

	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		main     string
		settings []debug.BuildSetting
		want     string
	}{
		{"v0.4.0", nil, "v0.4.0"},
		{"v0.0.0-20261127142255-d718e81abcde+dirty", settings("vcs.revision", "d718e81abcdef0123456789"), "v0.0.0-20261127142255-d718e81abcde+dirty"},
		{"(devel)", settings("vcs.revision", "d718e81abcdef0123456789", "vcs.modified", "false"), "dev-d718e81abcde"},
		{"(devel)", settings("vcs.revision", "d718e81abcdef0123456789", "vcs.modified", "true"), "dev-d718e81abcde-dirty"},
		{"(devel)", settings("vcs.revision", "abc"), "dev-abc"},
		{"(devel)", nil, "dev"},
		{"", nil, "dev"},
	} {
		bi := &debug.BuildInfo{Main: debug.Module{Version: tc.main}, Settings: tc.settings}
		if got := versionFromBuildInfo(bi); got != tc.want {
			t.Errorf("versionFromBuildInfo(%q, %v) = %q, want %q", tc.main, tc.settings, got, tc.want)
		}
	}
}

// TestCLI_StatusTable: an unreachable node shows "-" where a node that
// answers shows its term, indices, readiness and last contact, and says why
// in the ERROR column; the columns line up.
func TestCLI_StatusTable(t *testing.T) {
	st := jsonStatus{Leader: "n1", Nodes: []jsonNode{
		{ID: "n1", Addr: "127.0.0.1:7001", State: "Leader", Term: 3, AppliedIndex: 61, CommitIndex: 61, Ready: true, KnownLeader: true},
		{ID: "n2", Addr: "127.0.0.1:7002", State: "unreachable", Error: "dial tcp 127.0.0.1:7002: connect: connection refused"},
		{ID: "n3", Addr: "127.0.0.1:7003", State: "Follower", Term: 3, AppliedIndex: 60, CommitIndex: 61, KnownLeader: true, LastContactMillis: 1234},
	}}
	var b bytes.Buffer
	if err := writeStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 5 || lines[0] != "leader: n1" {
		t.Fatalf("status:\n%s", b.String())
	}
	want := [][]string{
		{"ID", "ADDR", "STATE", "TERM", "APPLIED", "COMMIT", "READY", "LAST", "CONTACT", "ERROR"},
		{"n1", "127.0.0.1:7001", "Leader", "3", "61", "61", "yes", "0s"},
		{"n2", "127.0.0.1:7002", "unreachable", "-", "-", "-", "-", "-", "dial", "tcp", "127.0.0.1:7002:", "connect:", "connection", "refused"},
		{"n3", "127.0.0.1:7003", "Follower", "3", "60", "61", "no", "1.2s"},
	}
	for i, w := range want {
		line := lines[i+1]
		if got := strings.Fields(line); !slices.Equal(got, w) {
			t.Errorf("line %d = %q, want the fields %q", i+1, line, w)
		}
		if strings.HasSuffix(line, " ") {
			t.Errorf("line %d ends in spaces: %q", i+1, line)
		}
	}
	// Aligned: every column starts where its header does.
	for _, col := range []string{"TERM", "READY", "LAST CONTACT", "ERROR"} {
		at := strings.Index(lines[1], col)
		for _, line := range lines[2:] {
			if len(line) > at && line[at-1] != ' ' {
				t.Errorf("column %s at %d is not aligned in %q", col, at, line)
			}
		}
	}
	// Without an unreachable node there is no ERROR column.
	b.Reset()
	st.Nodes = append(st.Nodes[:1], st.Nodes[2])
	if err := writeStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "ERROR") || strings.Contains(b.String(), " -") {
		t.Fatalf("status without an unreachable node:\n%s", b.String())
	}
}

func TestCLI_FormatLastContact(t *testing.T) {
	for ms, want := range map[int64]string{-1: "never", 0: "0s", 7: "7ms", 999: "999ms", 1000: "1.0s", 1234: "1.2s",
		59_949: "59.9s", 60_000: "1m0s", 184_400: "3m4s", 7_200_000: "2h0m0s"} {
		if got := formatLastContact(ms); got != want {
			t.Errorf("formatLastContact(%d) = %q, want %q", ms, got, want)
		}
	}
}

func TestCLI_Plural(t *testing.T) {
	for n, want := range map[int]string{0: "0 instances", 1: "1 instance", 2: "2 instances"} {
		if got := plural(n, "instance", "instances"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}
	if got := plural(uint64(1), "service", "services"); got != "1 service" {
		t.Errorf("plural(uint64 1) = %q", got)
	}
}

// TestCLI_HeartbeatReporterIsRateLimited: the first failure is reported at
// once, later ones at most once per interval with how many there were,
// and recovery once; successes alone say nothing.
func TestCLI_HeartbeatReporterIsRateLimited(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	r := &heartbeatReporter{w: &b, every: 5 * time.Second, now: func() time.Time { return now }}
	step := func(d time.Duration, err error) string {
		now = now.Add(d)
		b.Reset()
		r.report("web", "10.0.0.1:80", err)
		return b.String()
	}
	boom := errors.New("no discoverd server reachable")
	if out := step(0, nil); out != "" {
		t.Fatalf("a success printed %q", out)
	}
	if out := step(time.Second, boom); !strings.Contains(out, "heartbeat of web 10.0.0.1:80 failed") || !strings.Contains(out, boom.Error()) {
		t.Fatalf("first failure printed %q", out)
	}
	for i := range 4 { // within 5 s of the first line: silent
		if out := step(time.Second, boom); out != "" {
			t.Fatalf("failure %d printed %q", i+2, out)
		}
	}
	if out := step(time.Second, boom); !strings.Contains(out, "still failing: 5 failures in the last 5s") {
		t.Fatalf("failure 6 printed %q", out)
	}
	if out := step(time.Second, boom); out != "" {
		t.Fatalf("failure 7 printed %q", out)
	}
	if out := step(time.Second, nil); !strings.Contains(out, "succeed again, after 7 failures in 7s") {
		t.Fatalf("recovery printed %q", out)
	}
	if out := step(time.Second, nil); out != "" {
		t.Fatalf("a second success printed %q", out)
	}
	if out := step(time.Second, boom); !strings.Contains(out, "failed") {
		t.Fatalf("a new failure after recovery printed %q", out)
	}
	if out := step(time.Second, nil); !strings.Contains(out, "after 1 failure in 1s") {
		t.Fatalf("recovery printed %q", out)
	}
	notFound := client.ErrNotFound
	if out := step(time.Second, notFound); !strings.Contains(out, "no longer registered") {
		t.Fatalf("not found printed %q", out)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
