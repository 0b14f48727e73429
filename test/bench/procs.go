package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// moduleRoot walks up from the working directory to the go.mod of the
// discoverd module.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 { // bounded: no path is that deep
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/discoverd/discoverd\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("no go.mod of github.com/discoverd/discoverd above the working directory")
}

// goBuild builds pkg (relative to the module root) into out.
func goBuild(ctx context.Context, root, pkg, out string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s %s: %v\n%s", out, pkg, err, b)
	}
	return nil
}

// proc is one server process this command started, in its own process
// group. It is only ever signalled by its own PID.
type proc struct {
	name    string
	bin     string
	args    []string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once reaped
	waitErr error
}

// procs tracks every process started, so that any exit path (an error,
// Ctrl-C) stops them all.
type procs struct {
	mu  sync.Mutex
	all map[*proc]bool
}

// start runs bin with args, stdout and stderr appended to logPath.
func (ps *procs) start(name, bin string, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format("15:04:05.000"), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches only this
	// command, which then stops its servers in order (by PID). Pdeathsig
	// is the safety net if this command is itself killed with SIGKILL.
	// (It fires when the thread that started the child exits; the Go
	// runtime does not end threads unless a goroutine locked to one exits,
	// which nothing here does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, bin: bin, args: args, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	ps.mu.Lock()
	if ps.all == nil {
		ps.all = map[*proc]bool{}
	}
	ps.all[p] = true
	ps.mu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stopAll stops every process still running.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := make([]*proc, 0, len(ps.all))
	for p := range ps.all {
		all = append(all, p)
	}
	ps.all = nil
	ps.mu.Unlock()
	stopParallel(all, nil)
}

// stopProcs stops a cluster's processes in parallel (SIGTERM, SIGKILL after
// 3 s) and forgets them.
func stopProcs(b *bench, all []*proc) { stopParallel(all, b.procs.forget) }

// stopParallel stops every process at once (SIGTERM, SIGKILL after 3 s),
// then calls after for each, if set.
func stopParallel(all []*proc, after func(*proc)) {
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(3 * time.Second)
			if after != nil {
				after(p)
			}
		}()
	}
	wg.Wait()
}

// waitReady polls probe every 200 ms until it succeeds, for at most 45 s,
// and fails at once if one of ps exits.
func waitReady(ctx context.Context, what string, ps []*proc, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		for _, p := range ps {
			if p.exited() {
				return fmt.Errorf("%s: %s exited during start:\n%s", what, p.name, p.describe())
			}
		}
		if last = probe(ctx); last == nil {
			return nil
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	var tails []string
	for _, p := range ps {
		tails = append(tails, p.describe())
	}
	return fmt.Errorf("%s not ready after 45s (last: %v):\n%s", what, last, strings.Join(tails, "\n"))
}

func (ps *procs) forget(p *proc) {
	ps.mu.Lock()
	delete(ps.all, p)
	ps.mu.Unlock()
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process (by PID) and waits up to 5 s for it to
// be reaped.
func (p *proc) kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s (pid %d): %w", p.name, p.pid(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL for 5s", p.name, p.pid())
	}
}

// stop sends SIGTERM, then SIGKILL after bound.
func (p *proc) stop(bound time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(bound):
	}
	_ = p.kill()
}

// logTail returns the last n lines of the process's log.
func (p *proc) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// describe says whether the process still runs, and its log tail.
func (p *proc) describe() string {
	state := "running"
	if p.exited() {
		state = fmt.Sprintf("exited: %v", p.waitErr)
	}
	return fmt.Sprintf("--- %s (pid %d, %s), log %s, last lines:\n%s", p.name, p.pid(), state, p.logPath, p.logTail(15))
}

// cpuTicks returns the process's user+system CPU time in clock ticks
// (/proc/<pid>/stat fields 14 and 15).
func cpuTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// rssBytes returns the process's resident set size (VmRSS).
func rssBytes(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS of pid %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuMeter measures the CPU the processes of a cluster use over a span.
type cpuMeter struct {
	ps    []*proc
	start time.Time
	ticks []uint64
	self  uint64 // this command's own ticks (the clients)
}

func startCPU(ps []*proc) *cpuMeter {
	m := &cpuMeter{ps: ps, start: time.Now(), ticks: make([]uint64, len(ps))}
	for i, p := range ps {
		m.ticks[i], _ = cpuTicks(p.pid())
	}
	m.self, _ = cpuTicks(os.Getpid())
	return m
}

// clientPct returns this command's CPU since start (the benchmark's
// clients), in % of one core.
func (m *cpuMeter) clientPct() float64 {
	t, err := cpuTicks(os.Getpid())
	if err != nil || t < m.self {
		return 0
	}
	return float64(int64((float64(t-m.self)/clockTicks/time.Since(m.start).Seconds()*100)*10+0.5)) / 10
}

// pct returns each process's CPU since start, in % of one core, and their sum.
func (m *cpuMeter) pct() (each []float64, total float64) {
	secs := time.Since(m.start).Seconds()
	each = make([]float64, len(m.ps))
	for i, p := range m.ps {
		t, err := cpuTicks(p.pid())
		if err != nil || t < m.ticks[i] {
			continue
		}
		each[i] = float64(int64((float64(t-m.ticks[i])/clockTicks/secs*100)*10+0.5)) / 10
		total += each[i]
	}
	return each, total
}

// restart starts p's command again (same binary, flags and log), once p has
// exited.
func (ps *procs) restart(p *proc) (*proc, error) {
	if !p.exited() {
		return nil, fmt.Errorf("%s (pid %d) is still running", p.name, p.pid())
	}
	ps.forget(p)
	return ps.start(p.name, p.bin, p.args, p.logPath)
}

// forceGC asks a Go server to collect garbage now, through its profiler
// (net/http/pprof runs a GC before a heap profile when asked with gc=1).
func forceGC(ctx context.Context, debugURL string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, debugURL+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("force GC: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("force GC: %s answered %s", debugURL, resp.Status)
	}
	return nil
}
