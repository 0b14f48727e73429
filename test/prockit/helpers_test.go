package prockit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// isolate points the pid directory and the build directories' root at the
// test's own directories, so that a test neither sees nor touches the
// records of real runs.
func isolate(t *testing.T) {
	t.Helper()
	oldPids, oldRoot := pidDir, tmpRoot
	pidDir, tmpRoot = filepath.Join(t.TempDir(), "pids"), t.TempDir()
	t.Cleanup(func() { pidDir, tmpRoot = oldPids, oldRoot })
}

// start starts cmd with the kit (log in the test's directory unless spec
// has one) and kills it by its PID when the test ends.
func start(t *testing.T, spec Spec) *Proc {
	t.Helper()
	if spec.Log == "" {
		spec.Log = filepath.Join(t.TempDir(), spec.Name+".log")
	}
	p, err := Start(spec)
	if err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// sh is `/bin/sh -c script`.
func sh(script string) *exec.Cmd { return exec.Command("/bin/sh", "-c", script) }

// sleepBin is the sleep executable as /proc/<pid>/exe shows it.
func sleepBin(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("no sleep command: %v", err)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatalf("resolve %s: %v", path, err)
	}
	return real
}

// waitFor polls cond every 10 ms until it holds, failing the test with what
// it waited for and the last state seen after 10 s.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s; last seen: %s", what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState polls until process pid is in one of the /proc states.
func waitState(t *testing.T, pid int, states string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("pid %d in state %s", pid, states), func() (bool, string) {
		st, err := procState(pid)
		if err != nil {
			return false, err.Error()
		}
		return strings.IndexByte(states, st) >= 0, string(st)
	})
}

// waitExe polls until process pid runs exe (a launcher has replaced itself).
func waitExe(t *testing.T, pid int, exe string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("pid %d to run %s", pid, exe), func() (bool, string) {
		now, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return err == nil && now == exe, now
	})
}

// readRecord returns the pid record of pid ("" if there is none).
func readRecord(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pidDir, strconv.Itoa(pid)))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("read record of pid %d: %v", pid, err)
	}
	return strings.TrimSpace(string(data))
}

// writeRecord fakes the pid record of pid.
func writeRecord(t *testing.T, pid int, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(pidDir, strconv.Itoa(pid)), []byte(body+"\n"), 0o644); err != nil {
		t.Fatalf("write record of pid %d: %v", pid, err)
	}
}

// deadPID returns a PID no process has: PIDs stay below pid_max.
func deadPID(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatalf("read pid_max: %v", err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("pid_max %q: %v", data, err)
	}
	return max
}
