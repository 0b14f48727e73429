package client_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// README.md's "Go client" example is a whole program between two marker
// comments. This test takes it from README.md as it stands, builds it in a
// module of its own that uses this checkout (a replace directive, as a user
// would with a release), and runs it against a cluster: the README and the
// client cannot drift apart.

const (
	readmeStart = "<!-- example:go-client"
	readmeEnd   = "<!-- /example:go-client -->"
	modulePath  = "github.com/discoverd/discoverd"
)

// moduleRoot walks up from the working directory to this module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 64 { // bounded: no path is that deep
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	t.Fatalf("no go.mod of %s above the working directory", modulePath)
	return ""
}

// readmeExample returns the Go code block between the example's markers.
func readmeExample(readme string) (string, error) {
	_, rest, ok := strings.Cut(readme, readmeStart)
	if !ok {
		return "", fmt.Errorf("no %q marker", readmeStart)
	}
	section, _, ok := strings.Cut(rest, readmeEnd)
	if !ok {
		return "", fmt.Errorf("no %q marker after %q", readmeEnd, readmeStart)
	}
	_, code, ok := strings.Cut(section, "\n```go\n")
	if !ok {
		return "", errors.New("no ```go block between the markers")
	}
	code, _, ok = strings.Cut(code, "\n```")
	if !ok {
		return "", errors.New("the ```go block between the markers does not end")
	}
	return code + "\n", nil
}

// buildReadmeExample writes the example into a module of its own and builds
// it, offline, against this checkout. It returns the binary's path.
func buildReadmeExample(t *testing.T) string {
	t.Helper()
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	code, err := readmeExample(string(readme))
	if err != nil {
		t.Fatalf("README.md's Go client example: %v", err)
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go \S+$`).Find(goMod)
	if goLine == nil {
		t.Fatal("no go directive in go.mod")
	}
	goSum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"main.go": code,
		"go.mod": fmt.Sprintf("module readmeexample\n\n%s\n\nrequire %s v0.0.0\n\nreplace %s => %s\n",
			goLine, modulePath, modulePath, root),
		"go.sum": string(goSum),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "example")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = dir
	// -mod=mod adds the requirements the example's imports need, from this
	// module's graph; everything is in the module cache already.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of README.md's Go client example: %v\n%s\nthe example:\n%s", err, out, code)
	}
	return bin
}

// exampleRun is one run of the example program.
type exampleRun struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line; closed at EOF
	stderr *bytes.Buffer
	seen   []string // the lines read so far
	exited bool     // the process has been waited for
}

// startExample runs bin with $DISCOVERD set to servers; it is killed (by its
// PID) at the end of the test if it is still running.
func startExample(t *testing.T, bin string, servers []string) *exampleRun {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DISCOVERD="+strings.Join(servers, ","), "DISCOVERD_HOST=127.0.0.1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &exampleRun{cmd: cmd, lines: make(chan string, 1024), stderr: &bytes.Buffer{}}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if !r.exited {
			_ = cmd.Process.Kill()
			_ = r.wait()
		}
	})
	return r
}

// wait reads the rest of stdout, then waits for the process to end (in
// that order: Wait closes the pipe) and returns how it ended.
func (r *exampleRun) wait() error {
	for line := range r.lines {
		r.seen = append(r.seen, line)
	}
	r.exited = true
	return r.cmd.Wait()
}

// expectLine reads stdout until a line equal to want (or matching it, for a
// regexp), failing after timeout or at the end of the output.
func (r *exampleRun) expectLine(t *testing.T, want *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				err := r.wait() // stderr is complete once the process has been waited for
				t.Fatalf("the example's output ended (%v) before a line matching %q; it printed:\n%s\nstderr:\n%s",
					err, want, strings.Join(r.seen, "\n"), r.stderr)
			}
			r.seen = append(r.seen, line)
			if want.MatchString(line) {
				return
			}
		case <-deadline.C:
			t.Fatalf("no line matching %q from the example within %v; it printed:\n%s", want, timeout, strings.Join(r.seen, "\n"))
		}
	}
}

// interrupt sends the example SIGINT (Ctrl-C) and waits for it to exit 0;
// it is killed if it has not ended within 20 s.
func (r *exampleRun) interrupt(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	kill := time.AfterFunc(20*time.Second, func() { _ = r.cmd.Process.Kill() })
	err := r.wait()
	if !kill.Stop() {
		t.Fatalf("the example did not end within 20 s of Ctrl-C; it printed:\n%s", strings.Join(r.seen, "\n"))
	}
	if err != nil {
		t.Fatalf("the example exited with %v after Ctrl-C; it printed:\n%s\nstderr:\n%s", err, strings.Join(r.seen, "\n"), r.stderr)
	}
}

func TestClient_ReadmeExample(t *testing.T) {
	bin := buildReadmeExample(t)
	c := tc.New(t, tc.Options{Nodes: 3})
	servers := nodeAddrs(c.Nodes...)
	observer := newClient(t, client.Config{Servers: servers})
	cacheAddrs := func() []string {
		t.Helper()
		list, _, err := observer.Instances(tc.Context(t, 10*time.Second), "cache", client.ListOptions{Consistent: true})
		if err != nil {
			t.Fatal(err)
		}
		return serviceAddrs(list)
	}
	exact := func(s string) *regexp.Regexp { return regexp.MustCompile("^" + regexp.QuoteMeta(s) + "$") }

	// No queue yet: Leader() is nil, and the loop waits for changes.
	run := startExample(t, bin, servers)
	run.expectLine(t, exact("0 queues in zone a"), 30*time.Second)
	run.expectLine(t, exact("watching queue; Ctrl-C to stop"), 10*time.Second)
	if got := cacheAddrs(); !slices.Equal(got, []string{"10.0.0.5:9876"}) {
		t.Fatalf("cache instances while the example runs: %v, want [10.0.0.5:9876] (127.0.0.1:9876 was unregistered)", got)
	}
	register(t, observer, "queue", "10.0.0.9:80", map[string]string{"zone": "a"}, time.Hour)
	run.expectLine(t, exact("10.0.0.9:80 true map[zone:a]"), 10*time.Second)
	run.interrupt(t)
	if slices.ContainsFunc(run.seen, func(l string) bool { return strings.HasPrefix(l, "leader") }) {
		t.Fatalf("the example printed a leader of an empty service:\n%s", strings.Join(run.seen, "\n"))
	}
	if got := cacheAddrs(); len(got) != 0 {
		t.Fatalf("cache instances after the example ended: %v, want none (Close unregisters)", got)
	}

	// With a queue: its leader, then the current instance as an update.
	run = startExample(t, bin, servers)
	run.expectLine(t, exact("queue at 10.0.0.9:80"), 30*time.Second)
	run.expectLine(t, exact("1 queues in zone a"), 10*time.Second)
	run.expectLine(t, regexp.MustCompile(`^leader 10\.0\.0\.9:80 fencing token [1-9][0-9]*$`), 10*time.Second)
	run.expectLine(t, exact("watching queue; Ctrl-C to stop"), 10*time.Second)
	run.expectLine(t, exact("10.0.0.9:80 true map[zone:a]"), 10*time.Second)
	run.interrupt(t)
}
