package prockit

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStart_LogHeaderRecordAndKill: the log starts with the command line,
// the process is recorded under its PID with its executable while it runs,
// and Kill ends it with SIGKILL and drops the record.
func TestStart_LogHeaderRecordAndKill(t *testing.T) {
	isolate(t)
	sleep := sleepBin(t)
	p := start(t, Spec{Name: "sleeper", Cmd: sh("echo started; exec sleep 600"), Exe: sleep})
	waitFor(t, "the script's output in the log", func() (bool, string) { return p.LogContains("\nstarted\n"), p.LogTail(5) })
	if first, _, _ := strings.Cut(p.LogTail(100), "\n"); !strings.HasPrefix(first, "=== ") || !strings.HasSuffix(first, ": /bin/sh -c echo started; exec sleep 600") {
		t.Errorf("log header %q, want \"=== <time>: /bin/sh -c echo started; exec sleep 600\"", first)
	}
	if got, want := readRecord(t, p.PID()), fmt.Sprintf("%d %s", os.Getpid(), sleep); got != want {
		t.Errorf("pid record %q, want %q", got, want)
	}
	if pgid, err := syscall.Getpgid(p.PID()); err != nil || pgid != p.PID() {
		t.Errorf("process group %d (%v), want its own (%d)", pgid, err, p.PID())
	}
	if p.Exited() || p.State() != nil || p.ExitCode() != -1 {
		t.Errorf("running process: exited %v, state %v, exit code %d", p.Exited(), p.State(), p.ExitCode())
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() || p.State().Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("after Kill: exited %v, state %v", p.Exited(), p.State())
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Kill")
	}
	if rec := readRecord(t, p.PID()); rec != "" {
		t.Errorf("record %q left after the process was reaped", rec)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("signal to a reaped process: %v, want nil", err)
	}
}

// TestStart_RecordsOwnExecutable: without Spec.Exe, the record holds the
// executable the process runs right after it started.
func TestStart_RecordsOwnExecutable(t *testing.T) {
	isolate(t)
	sleep := sleepBin(t)
	p := start(t, Spec{Name: "sleeper", Cmd: sh("exec sleep 600")})
	rec := readRecord(t, p.PID())
	owner, exe, _ := strings.Cut(rec, " ")
	if owner != fmt.Sprint(os.Getpid()) || (exe != sleep && !strings.HasSuffix(exe, "sh")) {
		t.Errorf("pid record %q, want \"%d <the shell or %s>\"", rec, os.Getpid(), sleep)
	}
}

// TestWait_ExitCodeAndDescribe: a process that exits by itself is seen as
// exited with its code.
func TestWait_ExitCodeAndDescribe(t *testing.T) {
	isolate(t)
	p := start(t, Spec{Name: "exit3", Cmd: sh("echo bye; exit 3")})
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.ExitCode() != 3 {
		t.Errorf("exit code %d, want 3", p.ExitCode())
	}
	if d := p.Describe(); !strings.Contains(d, "exit3 (pid ") || !strings.Contains(d, "exited: exit status 3") || !strings.HasSuffix(d, "\nbye") {
		t.Errorf("Describe:\n%s", d)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of an exited process: %v", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop of an exited process: %v", err)
	}
}

// TestWait_TimesOut: Wait on a running process gives up at its timeout.
func TestWait_TimesOut(t *testing.T) {
	isolate(t)
	p := start(t, Spec{Name: "sleeper", Cmd: sh("exec sleep 600")})
	if err := p.Wait(50 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "still running after 50ms") {
		t.Errorf("Wait on a running process: %v", err)
	}
}

// TestPauseResume: Pause stops the process, Resume continues it, and Kill
// ends it even while paused.
func TestPauseResume(t *testing.T) {
	isolate(t)
	p := start(t, Spec{Name: "sleeper", Cmd: sh("exec sleep 600")})
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.PID(), "T")
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.PID(), "SR")
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.PID(), "T")
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill of a paused process: %v", err)
	}
	if sig := p.State().Sys().(syscall.WaitStatus).Signal(); sig != syscall.SIGKILL {
		t.Errorf("paused process ended by %v, want SIGKILL", sig)
	}
}

// TestStop_SIGTERM: a process that honours SIGTERM ends on it, even paused.
func TestStop_SIGTERM(t *testing.T) {
	isolate(t)
	p := start(t, Spec{Name: "sleeper", Cmd: sh("exec sleep 600")})
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.PID(), "T")
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if sig := p.State().Sys().(syscall.WaitStatus).Signal(); sig != syscall.SIGTERM {
		t.Errorf("ended by %v, want SIGTERM", sig)
	}
}

// TestStop_KillsAfterBound: a process that ignores SIGTERM is SIGKILLed
// once the bound has passed, and Stop says so.
func TestStop_KillsAfterBound(t *testing.T) {
	isolate(t)
	// An ignored signal stays ignored across exec.
	p := start(t, Spec{Name: "stubborn", Cmd: sh("trap '' TERM; echo ready; exec sleep 600")})
	// "ready" on a line of its own: the header's command line holds the word too.
	waitFor(t, "the trap to be set", func() (bool, string) { return p.LogContains("\nready\n"), p.LogTail(5) })
	err := p.Stop(200 * time.Millisecond)
	if !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop: %v, want ErrKilled", err)
	}
	if !strings.Contains(err.Error(), "ignored SIGTERM for 200ms") {
		t.Errorf("Stop's error %q does not say what happened", err)
	}
	if sig := p.State().Sys().(syscall.WaitStatus).Signal(); sig != syscall.SIGKILL {
		t.Errorf("ended by %v, want SIGKILL", sig)
	}
}

// TestRestart: once exited, the same command runs again with its
// environment, appending to the same log.
func TestRestart(t *testing.T) {
	isolate(t)
	cmd := sh("echo run $KIT_X")
	cmd.Env = append(os.Environ(), "KIT_X=42")
	p := start(t, Spec{Name: "once", Cmd: cmd})
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p2, err := p.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.Kill() })
	if err := p2.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p2.ExitCode() != 0 || p2.Name() != "once" || p2.Log() != p.Log() {
		t.Errorf("restarted: exit %d, name %q, log %s (first log %s)", p2.ExitCode(), p2.Name(), p2.Log(), p.Log())
	}
	log := p2.LogTail(100)
	if strings.Count(log, "\nrun 42") != 2 || strings.Count(log, ": /bin/sh -c echo run $KIT_X\n") != 2 {
		t.Errorf("log after a restart:\n%s", log)
	}
}

// TestRestart_RunningFails: Restart refuses a process that still runs.
func TestRestart_RunningFails(t *testing.T) {
	isolate(t)
	p := start(t, Spec{Name: "sleeper", Cmd: sh("exec sleep 600")})
	if _, err := p.Restart(); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Errorf("Restart of a running process: %v", err)
	}
}

// TestStart_StdoutToCaller: Spec.Stdout takes stdout; stderr stays in the log.
func TestStart_StdoutToCaller(t *testing.T) {
	isolate(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := start(t, Spec{Name: "split", Cmd: sh("echo out; echo err >&2"), Stdout: w})
	w.Close() // the child has its copy
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if got := string(buf[:n]); got != "out\n" {
		t.Errorf("stdout %q, want \"out\\n\"", got)
	}
	if log := p.LogTail(100); !strings.HasSuffix(log, "\nerr") || strings.Contains(log, "out\n") {
		t.Errorf("log:\n%s", log)
	}
}
