package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// pidDir records every process a harness starts ("<pid>" files holding
// "<owner pid> <binary>"), so a later run can kill the leftovers of a run
// that died before its cleanup (a test timeout, a SIGKILL).
var pidDir = filepath.Join(os.TempDir(), "discoverd-fault-pids")

// CleanLeftovers kills processes started by harnesses whose owner process is
// gone. A process is killed only if its executable is still the recorded
// binary, so a concurrent run and a reused PID are both left alone.
func CleanLeftovers() {
	entries, _ := os.ReadDir(pidDir)
	for _, e := range entries {
		path := filepath.Join(pidDir, e.Name())
		pid, err1 := strconv.Atoi(e.Name())
		data, err2 := os.ReadFile(path)
		owner, bin, ok := strings.Cut(strings.TrimSpace(string(data)), " ")
		ownerPID, err3 := strconv.Atoi(owner)
		if err1 != nil || err2 != nil || err3 != nil || !ok {
			_ = os.Remove(path)
			continue
		}
		if alive(ownerPID) {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil &&
			(exe == bin || exe == bin+" (deleted)") {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.Remove(path)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Proc is one running process, in its own process group.
type Proc struct {
	Name    string
	cmd     *exec.Cmd
	pidFile string
	done    chan struct{}

	mu    sync.Mutex
	state *os.ProcessState
}

// startProc starts cmd with output appended to logPath.
func startProc(name string, cmd *exec.Cmd, logPath string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().Format("15:04:05.000"), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	p.pidFile = recordPID(cmd.Path, cmd.Process.Pid)
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		if p.pidFile != "" {
			_ = os.Remove(p.pidFile)
		}
		close(p.done)
	}()
	return p, nil
}

func recordPID(bin string, pid int) string {
	if err := os.MkdirAll(pidDir, 0o755); err != nil {
		return ""
	}
	path := filepath.Join(pidDir, strconv.Itoa(pid))
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		bin = exe // the real executable (ip netns exec replaces itself with the binary)
	}
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d %s\n", os.Getpid(), bin), 0o644); err != nil {
		return ""
	}
	return path
}

// PID is the process's own PID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process itself (never to a reaped PID).
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.Name, p.PID(), err)
	}
	return nil
}

// Wait waits up to timeout for the process to end.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.PID(), timeout)
	}
}

// Kill SIGKILLs the process (continuing it first if paused) and waits.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.Signal(syscall.SIGCONT)
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	return p.Wait(10 * time.Second)
}

// Stop sends SIGTERM and waits up to bound, then SIGKILLs.
func (p *Proc) Stop(bound time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	if p.Wait(bound) == nil {
		return nil
	}
	return p.Kill()
}
