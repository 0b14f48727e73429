package prockit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// tmpRoot holds the build directories this process makes (and the ones
// CleanLeftovers looks for); a variable so that the kit's tests can point it
// at a directory of their own.
var tmpRoot = os.TempDir()

// buildDirPrefix names the build directories; the owner's PID and a dash
// follow it, then os.MkdirTemp's random suffix.
const buildDirPrefix = "discoverd-test-bin-"

// modulePath is the module whose root ModuleRoot looks for.
const modulePath = "github.com/discoverd/discoverd"

// ModuleRoot walks up from the working directory to the go.mod of the
// discoverd module.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for range 64 { // bounded: no path is that deep
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("no go.mod of " + modulePath + " above the working directory")
}

// BuildPackage runs `go build [-tags a,b] -o out pkg` in the module root; pkg
// is relative to it (e.g. "./cmd/discoverd"). It builds every time: Build and
// BuildInto are the once-per-process builds of discoverd.
func BuildPackage(ctx context.Context, pkg, out string, tags ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build"}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), root, err, b)
	}
	return nil
}

// builds memoizes the builds of cmd/discoverd, one per directory and tag set.
var builds struct {
	mu   sync.Mutex
	own  string              // this process's build directory, once made; removed by Cleanup
	done map[string]builtBin // by dir + "\x00" + tags
}

type builtBin struct {
	bin string
	err error
}

// Build compiles ./cmd/discoverd with the given build tags, once per tag set
// per process, into a directory this process owns (its name carries the
// PID, so that CleanLeftovers can remove it once the process is gone), and
// returns the binary's path. Cleanup removes the directory.
//
// A build is shared by every caller in the process, so no caller's context
// may cancel it: it takes none.
func Build(tags ...string) (bin string, err error) {
	builds.mu.Lock()
	if builds.own == "" {
		dir, err := os.MkdirTemp(tmpRoot, fmt.Sprintf("%s%d-", buildDirPrefix, os.Getpid()))
		if err != nil {
			builds.mu.Unlock()
			return "", fmt.Errorf("create build dir: %w", err)
		}
		builds.own = dir
	}
	dir := builds.own
	builds.mu.Unlock()
	return BuildInto(dir, tags...)
}

// BuildInto is Build into dir (created if missing), for a run that keeps
// its binaries beside its report. The binary is dir/discoverd, or
// dir/discoverd-<tag>-<tag> with tags; its path is absolute.
func BuildInto(dir string, tags ...string) (bin string, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("build dir: %w", err)
	}
	key := dir + "\x00" + strings.Join(tags, ",")
	// Held for the whole build: a second caller of the same build waits for
	// the first instead of building again (and builds of different tag sets
	// do not compete for the machine's two cores).
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if b, ok := builds.done[key]; ok {
		return b.bin, b.err
	}
	bin = filepath.Join(dir, strings.Join(append([]string{"discoverd"}, tags...), "-"))
	if err = os.MkdirAll(dir, 0o755); err == nil {
		err = BuildPackage(context.Background(), "./cmd/discoverd", bin, tags...)
	}
	if err != nil {
		bin, err = "", fmt.Errorf("build discoverd: %w", err)
	}
	if builds.done == nil {
		builds.done = map[string]builtBin{}
	}
	builds.done[key] = builtBin{bin: bin, err: err}
	return bin, err
}

// Cleanup removes the build directory of Build (if this process made one)
// and forgets its binaries; a later Build makes a new one. Run it once no
// process of those binaries runs any more: at the end of TestMain, or when
// a command exits.
func Cleanup() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.own == "" {
		return
	}
	_ = os.RemoveAll(builds.own)
	for k := range builds.done {
		if strings.HasPrefix(k, builds.own+"\x00") {
			delete(builds.done, k)
		}
	}
	builds.own = ""
}

// RunTests is the TestMain of a package whose tests run discoverd
// processes: it removes the leftovers of runs that died before their
// cleanups ran, runs the tests, and removes this run's builds. It returns
// m.Run's code, for os.Exit.
func RunTests(m *testing.M) int {
	CleanLeftovers()
	code := m.Run()
	Cleanup()
	return code
}
