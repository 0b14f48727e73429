package ttl

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/discoverd/discoverd/fsm"
)

// BenchmarkDeadlineHeap_Requeue measures what the expiry loop pays for a
// heartbeated instance once a TTL: its entry reaches the top of the heap
// before its (moved) deadline and is requeued at it. N entries with 10 s
// TTLs spread over a TTL; each op heartbeats one entry (its deadline moves
// a TTL on) and runs the loop's pass at the time the next entry is due.
func BenchmarkDeadlineHeap_Requeue(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			clk := newFakeClock()
			tr := New(Config{Clock: clk, Logger: slog.New(slog.DiscardHandler)}, nil, nil)
			const ttl = 10 * time.Second
			step := ttl / time.Duration(n)
			now := clk.Now()
			tr.mu.Lock()
			defer tr.mu.Unlock()
			// Entries are made in an order unrelated to their deadlines, as
			// registrations and heartbeats shuffle them in a real tracker:
			// the heap's neighbours are not the memory's.
			for j, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
				in := &fsm.Instance{Name: "svc", Addr: fmt.Sprintf("10.%d.%d.%d:80", j>>16, (j>>8)&255, j&255), ModifyIndex: uint64(j + 1), TTL: ttl}
				tr.armAtLocked(in, now.Add(time.Duration(i+1)*step))
			}
			b.ResetTimer()
			requeued := 0
			for i := range b.N {
				top := tr.queue[0].e
				top.deadline = top.deadline.Add(ttl) // heartbeated meanwhile
				now = top.queued
				if due := tr.collectDueLocked(now); len(due) != 0 {
					b.Fatalf("op %d: %d expiries, want none", i, len(due))
				}
				requeued++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(requeued), "ns/requeue")
		})
	}
}
