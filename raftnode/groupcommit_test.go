package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend/raftstore"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/server"
	"github.com/discoverd/discoverd/server/servertest"
)

// TestGroupCommit_ConcurrentWritesShareAppends: 64 writers, 10 writes each,
// all applied once with distinct indices, in fewer log appends than writes;
// with batch entries also in fewer log entries than writes, and every node
// holds each write at the index its writer was answered with.
func TestGroupCommit_ConcurrentWritesShareAppends(t *testing.T) {
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			c := servertest.New(t, servertest.Options{Configure: func(i int, cfg *server.Config) {
				cfg.Raft.NoBatchEntries = !batch
			}})
			leader := c.WaitLeader().Srv.Node()
			propose := raftstore.NewProposer(leader) // entries encoded as the store encodes them
			before := leader.Status()
			const writers, each = 64, 10
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var mu sync.Mutex
			at := map[uint64]string{} // index → addr
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						addr := fmt.Sprintf("10.1.%d.%d:80", w, i)
						res, err := propose.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: addr, TTL: time.Hour})
						if err != nil || res.Err != nil {
							t.Errorf("write %d/%d: %v %v", w, i, err, res)
							return
						}
						mu.Lock()
						if at[res.Index] != "" {
							t.Errorf("index %d answered twice", res.Index)
						}
						at[res.Index] = addr
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			after := leader.Status()
			appends, entries := after.LogAppends-before.LogAppends, after.LogEntries-before.LogEntries
			t.Logf("%d writes: %d entries in %d leader log appends", writers*each, entries, appends)
			if len(at) != writers*each {
				t.Fatalf("%d distinct indices for %d writes", len(at), writers*each)
			}
			if appends >= writers*each {
				t.Fatalf("%d log appends for %d concurrent writes: writes were not grouped", appends, writers*each)
			}
			if batch && entries >= writers*each {
				t.Errorf("%d log entries for %d concurrent writes: groups were not batched", entries, writers*each)
			}
			if !batch && entries < writers*each {
				t.Errorf("%d log entries for %d writes without batch entries", entries, writers*each)
			}
			var last uint64
			for idx := range at {
				last = max(last, idx)
			}
			c.WaitApplied(last)
			for _, n := range c.Nodes {
				_, ins := n.Srv.FSM().List("web", nil)
				if len(ins) != writers*each {
					t.Fatalf("%s holds %d instances, want %d", n.ID, len(ins), writers*each)
				}
				for _, in := range ins {
					if at[in.ModifyIndex] != in.Addr {
						t.Fatalf("%s holds %s at index %d, which was answered for %q", n.ID, in.Addr, in.ModifyIndex, at[in.ModifyIndex])
					}
				}
			}
		})
	}
}

// TestGroupCommit_GivenUpWritesDoNotStallLaterOnes: writers that give up
// while queued (deadline passed) get an error that says the write may or
// may not have happened, or that it was not proposed — and the writes
// after them still go through.
func TestGroupCommit_GivenUpWritesDoNotStallLaterOnes(t *testing.T) {
	c := servertest.New(t, servertest.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.ApplyLinger = 50 * time.Millisecond // keep writes queued a while
	}})
	propose := raftstore.NewProposer(c.WaitLeader().Srv.Node())
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for w := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(w%5)*time.Millisecond)
			defer cancel()
			_, err := propose.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: fmt.Sprintf("10.2.0.%d:80", w), TTL: time.Hour})
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
		if _, err := propose.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: fmt.Sprintf("10.3.0.%d:80", i), TTL: time.Hour}); err != nil {
			t.Fatalf("write %d after the given-up ones: %v", i, err)
		}
	}
}

// TestGroupCommit_LoneWriteAfterBurstDoesNotLinger: the linger waits for the
// writers of the last group only while they can be on their way back; a
// write that comes once the burst is over goes at once. (With a 1.5 s linger,
// a lone write that lingered would take 1.5 s; one that goes at once takes
// milliseconds.)
func TestGroupCommit_LoneWriteAfterBurstDoesNotLinger(t *testing.T) {
	const linger = 1500 * time.Millisecond
	c := servertest.New(t, servertest.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.ApplyLinger = linger
	}})
	propose := raftstore.NewProposer(c.WaitLeader().Srv.Node())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A burst: one write holds the slot while 32 more queue behind it, so
	// the next group is large and the one after that wants as many.
	var wg sync.WaitGroup
	for w := range 33 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := propose.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: fmt.Sprintf("10.4.0.%d:80", w), TTL: time.Hour}); err != nil {
				t.Errorf("burst write %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	// Let the burst be over for longer than the linger.
	time.Sleep(linger + 100*time.Millisecond)
	start := time.Now()
	if _, err := propose.Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{Name: "web", Addr: "10.4.1.1:80", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= linger {
		t.Errorf("a lone write after the burst took %v: it waited for the burst's writers", took)
	}
}
