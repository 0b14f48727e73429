package prockit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// killWait bounds how long Kill waits for a SIGKILLed process to be reaped.
const killWait = 10 * time.Second

// ErrKilled is wrapped by Stop's error when the process outlived SIGTERM by
// the bound and was SIGKILLed (and then ended).
var ErrKilled = errors.New("stopped with SIGKILL")

// Spec says what Start runs.
type Spec struct {
	Name string    // names the process in errors and in Describe
	Cmd  *exec.Cmd // not yet started; Start sets its Stdout, Stderr and SysProcAttr
	Log  string    // stdout and stderr are appended here, after a "=== time: command line" header
	// Stdout, if set, receives stdout instead of Log (e.g. the write end of
	// a pipe the caller reads; an *os.File is handed to the child as it is).
	Stdout io.Writer
	// Exe is the executable the process ends up running, when Cmd runs it
	// through a launcher that replaces itself with it (ip netns exec);
	// it is what the pid record holds for CleanLeftovers to recognise a
	// leftover by. Empty: the process's own executable (/proc/<pid>/exe)
	// just after it started.
	Exe string
	// Pdeathsig, if set, is sent to the process when the thread that
	// started it ends (see PR_SET_PDEATHSIG): the safety net of a command
	// that may itself be SIGKILLed. Go ends no thread unless a goroutine
	// locked to it exits.
	Pdeathsig syscall.Signal
}

// Proc is one process started by Start, in its own process group. It is only
// ever signalled by its own PID, through os.Process, which never signals a
// PID once the process has been reaped.
type Proc struct {
	spec    Spec
	cmd     *exec.Cmd
	pidFile string        // its record in the pid directory, removed once reaped
	done    chan struct{} // closed once the process has been reaped
	state   *os.ProcessState
}

// Start starts spec.Cmd in its own process group (a Ctrl-C in a terminal
// reaches only the owner, which then stops its processes one by one) with
// its output appended to spec.Log, records it in the pid directory, and
// reaps it in the background.
func Start(spec Spec) (*Proc, error) {
	cmd := spec.Cmd
	if cmd == nil {
		return nil, fmt.Errorf("start %s: no command", spec.Name)
	}
	logf, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	defer logf.Close() // the child holds its own copy
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().Format("15:04:05.000"), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	if spec.Stdout != nil {
		cmd.Stdout = spec.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: spec.Pdeathsig}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Proc{spec: spec, cmd: cmd, done: make(chan struct{})}
	p.pidFile = record(cmd.Process.Pid, spec.Exe, cmd.Path)
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		if p.pidFile != "" {
			_ = os.Remove(p.pidFile)
		}
		close(p.done)
	}()
	return p, nil
}

// Name is the process's name (Spec.Name).
func (p *Proc) Name() string { return p.spec.Name }

// Log is the path of the process's log.
func (p *Proc) Log() string { return p.spec.Log }

// PID is the process's own PID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended (and been reaped).
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

// State is how the process ended; nil while it runs.
func (p *Proc) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.state
}

// ExitCode is the process's exit status: -1 while it runs or if a signal
// ended it.
func (p *Proc) ExitCode() int {
	if st := p.State(); st != nil {
		return st.ExitCode()
	}
	return -1
}

// Signal sends sig to the process itself (never to a reaped PID: a process
// that has ended is no error).
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.Name(), p.PID(), err)
	}
	return nil
}

// Wait waits up to timeout for the process to end.
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name(), p.PID(), timeout)
	}
}

// Kill SIGKILLs the process (continuing it first, should it be paused) and
// waits until it is reaped.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.Signal(syscall.SIGCONT)
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if err := p.Wait(killWait); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	return nil
}

// Stop continues the process (should it be paused), sends SIGTERM and waits
// up to bound for it to end, then kills it. It returns nil if the process
// ended on SIGTERM (or had already), an error wrapping ErrKilled if it had
// to be killed, and Kill's error if it survived that too.
func (p *Proc) Stop(bound time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	if p.Wait(bound) == nil {
		return nil
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v: %w", p.Name(), p.PID(), bound, ErrKilled)
}

// Pause stops the process with SIGSTOP.
func (p *Proc) Pause() error { return p.Signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Restart starts the process's command again, once it has exited: same
// program, arguments, environment, working directory and log (and the rest
// of its Spec). The old Proc stays as it ended.
func (p *Proc) Restart() (*Proc, error) {
	if !p.Exited() {
		return nil, fmt.Errorf("restart %s (pid %d): still running", p.Name(), p.PID())
	}
	spec := p.spec
	spec.Cmd = &exec.Cmd{Path: p.cmd.Path, Args: slices.Clone(p.cmd.Args), Env: slices.Clone(p.cmd.Env), Dir: p.cmd.Dir}
	return Start(spec)
}

// LogContains reports whether the process's log holds s.
func (p *Proc) LogContains(s string) bool {
	data, err := os.ReadFile(p.spec.Log)
	return err == nil && bytes.Contains(data, []byte(s))
}

// LogTail returns the last n lines of the process's log.
func (p *Proc) LogTail(n int) string {
	data, err := os.ReadFile(p.spec.Log)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.spec.Log, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Describe says whether the process still runs, and the tail of its log.
func (p *Proc) Describe() string {
	state := "running"
	if st := p.State(); st != nil {
		state = "exited: " + st.String()
	}
	return fmt.Sprintf("--- %s (pid %d, %s), log %s, last lines:\n%s", p.Name(), p.PID(), state, p.spec.Log, p.LogTail(15))
}
