package prockit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestCleanLeftovers: the process of a dead owner is killed and its record
// removed; a live owner's process and record are kept; a dead owner's
// record whose PID now runs another executable (a reused PID) is removed
// without a kill; build directories of dead owners go, a live owner's stay.
func TestCleanLeftovers(t *testing.T) {
	isolate(t)
	sleep := sleepBin(t)
	dead := deadPID(t)

	// Started through a launcher that replaces itself, as ip netns exec
	// does: the record must hold what the process becomes.
	leftover := start(t, Spec{Name: "leftover", Cmd: sh("exec sleep 600"), Exe: sleep})
	waitExe(t, leftover.PID(), sleep)
	writeRecord(t, leftover.PID(), fmt.Sprintf("%d %s", dead, sleep))

	live := start(t, Spec{Name: "live", Cmd: exec.Command(sleep, "600")})
	liveRecord := readRecord(t, live.PID())

	reused := start(t, Spec{Name: "reused", Cmd: exec.Command(sleep, "600")})
	writeRecord(t, reused.PID(), fmt.Sprintf("%d /gone/discoverd", dead))

	writeRecord(t, 999999999, "garbage")

	deadDir := filepath.Join(tmpRoot, fmt.Sprintf("%s%d-abc", buildDirPrefix, dead))
	liveDir := filepath.Join(tmpRoot, fmt.Sprintf("%s%d-def", buildDirPrefix, os.Getpid()))
	for _, d := range []string{deadDir, liveDir} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	CleanLeftovers()

	if err := leftover.Wait(10 * time.Second); err != nil {
		t.Fatalf("leftover of a dead owner: %v", err)
	}
	if sig := leftover.State().Sys().(syscall.WaitStatus).Signal(); sig != syscall.SIGKILL {
		t.Errorf("leftover ended by %v, want SIGKILL", sig)
	}
	if rec := readRecord(t, leftover.PID()); rec != "" {
		t.Errorf("leftover's record %q kept", rec)
	}
	if live.Exited() || readRecord(t, live.PID()) != liveRecord {
		t.Errorf("live owner's process: exited %v, record %q (was %q)", live.Exited(), readRecord(t, live.PID()), liveRecord)
	}
	if reused.Exited() {
		t.Errorf("process on a reused PID was killed: %v", reused.State())
	}
	if rec := readRecord(t, reused.PID()); rec != "" {
		t.Errorf("dead owner's record %q kept", rec)
	}
	if rec := readRecord(t, 999999999); rec != "" {
		t.Errorf("unreadable record %q kept", rec)
	}
	if _, err := os.Stat(deadDir); !os.IsNotExist(err) {
		t.Errorf("build dir of a dead owner: %v, want it removed", err)
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Errorf("build dir of a live owner: %v", err)
	}
}

// TestAlive_ZombieIsDead: an owner that has ended but was not reaped counts
// as dead; a running one as alive.
func TestAlive_ZombieIsDead(t *testing.T) {
	zombie, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 0"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = zombie.Wait() })
	waitState(t, zombie.Pid, "Z")
	if alive(zombie.Pid) {
		t.Errorf("zombie %d counts as alive", zombie.Pid)
	}
	if !alive(os.Getpid()) {
		t.Error("this process counts as dead")
	}
	if dead := deadPID(t); alive(dead) {
		t.Errorf("pid %d counts as alive", dead)
	}
}

// TestStatFields_CommandNameWithSpaces: the fields after a command name in
// parentheses that holds spaces and a ')' are still found by position.
func TestStatFields_CommandNameWithSpaces(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "a b) c")
	if err := os.Symlink(sleepBin(t), exe); err != nil {
		t.Fatal(err)
	}
	p := start(t, Spec{Name: "spaced", Cmd: exec.Command(exe, "600")})
	waitState(t, p.PID(), "S")
	f, err := StatFields(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	// Field 4 is the parent's PID: this test process.
	if len(f) < 13 || f[0] != "S" || f[1] != strconv.Itoa(os.Getpid()) {
		t.Errorf("fields %q: want state S and parent %d first", f, os.Getpid())
	}
	if _, err := StatFields(deadPID(t)); err == nil {
		t.Error("fields of a PID no process has")
	}
}
