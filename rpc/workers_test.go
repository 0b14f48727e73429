package rpc

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkers_ReuseCapAndNeverQueue: sequential jobs reuse one worker;
// concurrent jobs past the cap still all run at once (none waits for a
// worker); workers end with the context.
func TestWorkers_ReuseCapAndNeverQueue(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := newWorkers(ctx)
	w.max = 4
	for range 50 {
		done := make(chan struct{})
		w.run(func() { close(done) })
		<-done
	}
	// Each job found the previous one's worker idle, unless it came in the
	// instant between that job's end and its worker's return to waiting.
	if n := w.n.Load(); n < 1 || n > 3 {
		t.Fatalf("%d workers alive after 50 sequential jobs, want 1 (at most 3) reused", n)
	}

	// 10 jobs that all block until every one has started: with a cap of 4
	// this finishes only if jobs past the cap get goroutines of their own.
	const jobs = 10
	var started atomic.Int32
	all := make(chan struct{})
	var wg sync.WaitGroup
	for range jobs {
		wg.Add(1)
		w.run(func() {
			defer wg.Done()
			if started.Add(1) == jobs {
				close(all)
			}
			<-all
		})
	}
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatalf("only %d of %d concurrent jobs started: jobs queued behind busy workers", started.Load(), jobs)
	}
	wg.Wait()
	if n := w.n.Load(); n > w.max {
		t.Fatalf("%d workers, cap %d", n, w.max)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for w.n.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still running 5 s after the context ended", w.n.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
