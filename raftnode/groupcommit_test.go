package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/server"
	"github.com/discoverd/discoverd/internal/testcluster"
)

// TestGroupCommit_ConcurrentWritesShareAppends: 64 writers, 10 writes each,
// all applied once with distinct indices, in fewer log appends than writes.
func TestGroupCommit_ConcurrentWritesShareAppends(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader().Srv.Node()
	before := leader.Status()
	const writers, each = 64, 10
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := leader.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{
					Name: "web", Addr: fmt.Sprintf("10.1.%d.%d:80", w, i), TTL: time.Hour})
				if err != nil || res.Err != nil {
					t.Errorf("write %d/%d: %v %v", w, i, err, res)
					return
				}
				mu.Lock()
				if seen[res.Index] {
					t.Errorf("index %d answered twice", res.Index)
				}
				seen[res.Index] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	after := leader.Status()
	appends, entries := after.LogAppends-before.LogAppends, after.LogEntries-before.LogEntries
	t.Logf("%d writes: %d entries in %d leader log appends", writers*each, entries, appends)
	if len(seen) != writers*each {
		t.Fatalf("%d distinct indices for %d writes", len(seen), writers*each)
	}
	if appends >= writers*each {
		t.Fatalf("%d log appends for %d concurrent writes: writes were not grouped", appends, writers*each)
	}
}

// TestGroupCommit_GivenUpWritesDoNotStallLaterOnes: writers that give up
// while queued (deadline passed) get an error that says the write may or
// may not have happened, or that it was not proposed — and the writes
// after them still go through.
func TestGroupCommit_GivenUpWritesDoNotStallLaterOnes(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.ApplyLinger = 50 * time.Millisecond // keep writes queued a while
	}})
	leader := c.WaitLeader().Srv.Node()
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for w := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(w%5)*time.Millisecond)
			defer cancel()
			_, err := leader.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: fmt.Sprintf("10.2.0.%d:80", w), TTL: time.Hour})
			kind := "ok"
			switch {
			case err == nil:
			case errors.Is(err, codes.ErrUnknownOutcome):
				kind = "unknown"
			case errors.Is(err, codes.ErrOverloaded):
				kind = "not proposed"
			default:
				t.Errorf("write %d: unexpected error %v", w, err)
			}
			mu.Lock()
			outcomes[kind]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("outcomes: %v", outcomes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := leader.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: fmt.Sprintf("10.3.0.%d:80", i), TTL: time.Hour}); err != nil {
			t.Fatalf("write %d after the given-up ones: %v", i, err)
		}
	}
}
