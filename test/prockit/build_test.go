package prockit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if filepath.Join(root, "test", "prockit") != wd {
		t.Errorf("module root %s, working directory %s", root, wd)
	}
}

// TestBuild_OncePerTagSetIntoOwnDir builds discoverd (twice: without tags
// and with one) and checks that a second call builds nothing, that the
// directory carries this process's PID, and that Cleanup removes it.
func TestBuild_OncePerTagSetIntoOwnDir(t *testing.T) {
	isolate(t)
	t.Cleanup(Cleanup)
	bin, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(bin)
	if filepath.Base(bin) != "discoverd" || filepath.Dir(dir) != tmpRoot ||
		!strings.HasPrefix(filepath.Base(dir), fmt.Sprintf("%s%d-", buildDirPrefix, os.Getpid())) {
		t.Errorf("binary %s, want discoverd in %s/%s%d-*", bin, tmpRoot, buildDirPrefix, os.Getpid())
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("binary %s: %v (mode %v)", bin, err, fi.Mode())
	}
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	if again, err := Build(); err != nil || again != bin {
		t.Errorf("second Build: %s, %v; want %s", again, err, bin)
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("second Build built again (%v)", err)
	}
	tagged, err := Build("faultclock")
	if err != nil {
		t.Fatal(err)
	}
	if tagged != filepath.Join(dir, "discoverd-faultclock") {
		t.Errorf("tagged binary %s, want discoverd-faultclock in %s", tagged, dir)
	}
	Cleanup()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("build dir after Cleanup: %v", err)
	}
}

func TestBuildPackage_ReportsFailure(t *testing.T) {
	err := BuildPackage(context.Background(), "./no/such/package", filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "go build -o ") || !strings.Contains(err.Error(), "./no/such/package") {
		t.Errorf("BuildPackage of a missing package: %v", err)
	}
}

func TestRaftFlags_FreshSliceEachCall(t *testing.T) {
	a := RaftFlags()
	a[1] = "1ms"
	want := []string{"-raft-heartbeat-timeout", "500ms", "-raft-election-timeout", "500ms", "-raft-leader-lease-timeout", "250ms"}
	if b := RaftFlags(); !slices.Equal(b, want) {
		t.Errorf("RaftFlags() = %v after a caller changed its copy, want %v", b, want)
	}
}
