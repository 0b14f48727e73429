package raftnode

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// barrierLog is a JSON logger at debug level and the lines it wrote.
type barrierLog struct{ buf bytes.Buffer }

func (b *barrierLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&b.buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (b *barrierLog) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// failing returns a barrier that fails with err n times, then succeeds, and
// a count of its calls. Calls past limit fail the test (a retry that spins).
func failing(t *testing.T, err error, n, limit int) (func() error, *int) {
	calls := 0
	return func() error {
		calls++
		if calls > limit {
			t.Fatalf("barrier called %d times", calls)
		}
		if calls <= n {
			return err
		}
		return nil
	}, &calls
}

func always() bool { return true }

// Regression: a barrier failing at once during a leadership transfer was
// retried without a pause, 10 000 WARN lines in a quarter second. Retries
// now back off, doubling, with one info line per failure.
func TestRetryBarrier_BacksOffDuringATransfer(t *testing.T) {
	var lb barrierLog
	barrier, calls := failing(t, raft.ErrLeadershipTransferInProgress, 5, 6)
	start := time.Now()
	if !retryBarrier(t.Context(), make(chan struct{}), lb.logger(), 7, barrier, always) {
		t.Fatal("retryBarrier gave up on a barrier that succeeded")
	}
	took := time.Since(start)
	if *calls != 6 {
		t.Fatalf("barrier called %d times, want 6", *calls)
	}
	// Waits are never shorter than asked: 10+20+40+80+160 ms at least.
	if took < 310*time.Millisecond {
		t.Errorf("5 retries took %v, want the backoff's 310 ms at least", took)
	}
	ls := lb.lines(t)
	if len(ls) != 5 {
		t.Fatalf("%d log lines, want one per failure (5): %s", len(ls), lb.buf.String())
	}
	for i, m := range ls {
		want := barrierBackoffMin << i
		if m["level"] != "INFO" || m["retry_in"] != float64(want) || m["term"] != float64(7) || m["attempt"] != float64(i+1) {
			t.Errorf("line %d: %v, want INFO with retry_in %s", i, m, want)
		}
	}
}

func TestRetryBarrier_BackoffIsCapped(t *testing.T) {
	var lb barrierLog
	barrier, _ := failing(t, raft.ErrEnqueueTimeout, 8, 9)
	if !retryBarrier(t.Context(), make(chan struct{}), lb.logger(), 1, barrier, always) {
		t.Fatal("retryBarrier gave up")
	}
	var waits []string
	for _, m := range lb.lines(t) {
		if m["level"] != "WARN" {
			t.Errorf("a barrier that timed out: %v, want a WARN line", m)
		}
		d, _ := m["retry_in"].(float64) // JSON writes a duration in ns
		waits = append(waits, time.Duration(d).String())
	}
	if got, want := strings.Join(waits, " "), "10ms 20ms 40ms 80ms 160ms 320ms 500ms 500ms"; got != want {
		t.Errorf("waits %s, want %s", got, want)
	}
}

// The retry ends, without a warning, as soon as the term ends, the node
// stops or Raft no longer has it lead — also in the middle of a wait.
func TestRetryBarrier_StopsWithTheTermTheNodeOrLeadership(t *testing.T) {
	cases := map[string]func(cancel context.CancelFunc, done chan struct{}, leading *atomic.Bool){
		"term ends":   func(cancel context.CancelFunc, _ chan struct{}, _ *atomic.Bool) { cancel() },
		"node stops":  func(_ context.CancelFunc, done chan struct{}, _ *atomic.Bool) { close(done) },
		"not leading": func(_ context.CancelFunc, _ chan struct{}, leading *atomic.Bool) { leading.Store(false) },
	}
	for name, end := range cases {
		t.Run(name, func(t *testing.T) {
			var lb barrierLog
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan struct{})
			var leading atomic.Bool
			leading.Store(true)
			var calls atomic.Int32
			barrier := func() error {
				if calls.Add(1) == 5 {
					// During the wait after this failure (160 ms), or the next.
					time.AfterFunc(50*time.Millisecond, func() { end(cancel, done, &leading) })
				}
				return raft.ErrLeadershipTransferInProgress
			}
			start := time.Now()
			if retryBarrier(ctx, done, lb.logger(), 3, barrier, leading.Load) {
				t.Fatal("retryBarrier reported success")
			}
			// Generous: the point is that it ends, not how fast.
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("returned after %v", took)
			}
			if n := calls.Load(); n > 7 {
				t.Errorf("barrier called %d times", n)
			}
			for _, m := range lb.lines(t) {
				if m["level"] == "WARN" || m["level"] == "ERROR" {
					t.Errorf("logged %v", m)
				}
			}
		})
	}
}

// A barrier that fails because Raft shut down is the node's stop.
func TestRetryBarrier_ShutdownIsNoWarning(t *testing.T) {
	var lb barrierLog
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if retryBarrier(ctx, make(chan struct{}), lb.logger(), 2, func() error { return raft.ErrRaftShutdown }, func() bool { return false }) {
		t.Fatal("retryBarrier reported success")
	}
	for _, m := range lb.lines(t) {
		if m["level"] != "DEBUG" {
			t.Errorf("logged %v, want debug only", m)
		}
	}
}
