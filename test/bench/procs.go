package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/discoverd/discoverd/test/prockit"
)

// proc is one server process this command started, in its own process
// group (test/prockit). It is only ever signalled by its own PID.
type proc struct{ *prockit.Proc }

// procs tracks every process started, so that any exit path (an error,
// Ctrl-C) stops them all.
type procs struct {
	mu  sync.Mutex
	all map[*proc]bool
}

// start runs bin with args, stdout and stderr appended to logPath.
func (ps *procs) start(name, bin string, args []string, logPath string) (*proc, error) {
	// Pdeathsig is the safety net if this command is itself killed with
	// SIGKILL. (It fires when the thread that started the child exits;
	// the Go runtime does not end threads unless a goroutine locked to one
	// exits, which nothing here does.)
	kp, err := prockit.Start(prockit.Spec{Name: name, Cmd: exec.Command(bin, args...), Log: logPath, Pdeathsig: syscall.SIGKILL})
	if err != nil {
		return nil, err
	}
	return ps.add(&proc{kp}), nil
}

// add tracks p, so that stopAll stops it.
func (ps *procs) add(p *proc) *proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.all == nil {
		ps.all = map[*proc]bool{}
	}
	ps.all[p] = true
	return p
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
				return fmt.Errorf("%s: %s exited during start:\n%s", what, p.Name(), p.describe())
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

func (p *proc) pid() int { return p.PID() }

func (p *proc) exited() bool { return p.Exited() }

// kill sends SIGKILL to the process (by PID) and waits for it to be reaped.
func (p *proc) kill() error { return p.Kill() }

// stop sends SIGTERM, then SIGKILL after bound.
func (p *proc) stop(bound time.Duration) { _ = p.Stop(bound) }

// describe says whether the process still runs, and its log tail.
func (p *proc) describe() string { return p.Describe() }

// cpuTicks returns the process's user+system CPU time in clock ticks
// (/proc/<pid>/stat fields 14 and 15).
func cpuTicks(pid int) (uint64, error) {
	f, err := prockit.StatFields(pid) // f[0] is field 3 (state)
	if err != nil {
		return 0, err
	}
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
	kp, err := p.Restart()
	if err != nil {
		return nil, err
	}
	ps.forget(p)
	return ps.add(&proc{kp}), nil
}

// forceGC asks a Go server to collect garbage now, through its profiler
// (net/http/pprof runs a GC before a heap profile when asked with gc=1);
// tlsCfg, if set, is the client's TLS for an https URL.
func forceGC(ctx context.Context, debugURL string, tlsCfg *tls.Config) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, debugURL+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return err
	}
	client := http.DefaultClient
	if tlsCfg != nil {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		defer client.CloseIdleConnections()
	}
	resp, err := client.Do(req)
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
