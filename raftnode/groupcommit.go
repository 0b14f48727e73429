package raftnode

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Group commit.
//
// hashicorp/raft's leader appends whatever writes are queued when it comes
// round, then replicates them; a follower writes each append it receives.
// Every one of those log writes is a bbolt transaction with two fsyncs, and
// on a disk that several nodes share (or any disk with slow flushes) the
// flushes are the limit: with writes handed to raft as they came, 256
// concurrent clients made appends of 29 entries on the leader and 50 on the
// followers, each taking 4-6 ms.
//
// So writes reach raft in groups, with at most MaxApplyGroups groups in
// flight (proposed and not yet applied here). While the slots are taken,
// new writes wait in a queue; when a slot frees, everything queued goes to
// raft at once, where it becomes one append on the leader and, replicated
// together, one append on each follower. A lone write finds a free slot and
// goes at once, so group commit costs nothing when there is no contention.
// Each write stays its own log entry (its own index).

// proposal is one write waiting to be handed to raft.
type proposal struct {
	data      []byte
	deadline  time.Time        // for raft's enqueue timeout
	result    chan applyResult // its outcome (cap 1)
	abandoned atomic.Bool      // the caller gave up before it was proposed
}

// applyResult is what became of a proposal. proposed false: it never
// reached raft (this node shut down first).
type applyResult struct {
	proposed bool
	err      error
	resp     any
}

// wait waits for a raft future. (A raft future may be waited on by one
// goroutine only: a second Error() call would never return.)
func wait(f raft.ApplyFuture) applyResult {
	if err := f.Error(); err != nil {
		return applyResult{proposed: true, err: err}
	}
	return applyResult{proposed: true, resp: f.Response()}
}

type groupCommit struct {
	r      *raft.Raft
	queue  chan *proposal
	slots  chan struct{} // one token per group in flight
	max    int           // entries per group
	linger time.Duration // longest wait for a group to fill up
	last   int           // size of the last group
}

func newGroupCommit(r *raft.Raft, groups, maxEntries int, linger time.Duration) *groupCommit {
	return &groupCommit{r: r, queue: make(chan *proposal, 4*maxEntries), slots: make(chan struct{}, groups), max: maxEntries, linger: linger}
}

// run hands queued proposals to raft in groups until done closes; what is
// still queued then is answered nil (not proposed).
func (g *groupCommit) run(done <-chan struct{}) {
	defer func() {
		for {
			select {
			case p := <-g.queue:
				p.result <- applyResult{}
			default:
				return
			}
		}
	}()
	for {
		select {
		case g.slots <- struct{}{}:
		case <-done:
			return
		}
		queued := len(g.queue) // writers that came while the last group was in flight
		var first *proposal
		select {
		case first = <-g.queue:
		case <-done:
			return
		}
		group := []*proposal{first}
		for len(group) < g.max {
			select {
			case p := <-g.queue:
				group = append(group, p)
				continue
			default:
			}
			break
		}
		// Under concurrency, the writers of the last group are on their
		// way back with their next writes: wait a moment (linger at most)
		// for them too, so that one group, and its fsyncs, is shared by all
		// the writers instead of two groups taking turns (the writers that
		// queued meanwhile, then those of the last group).
		if want := min(g.last+queued, g.max); len(group) < want && g.linger > 0 {
			t := time.NewTimer(g.linger)
		linger:
			for len(group) < want {
				select {
				case p := <-g.queue:
					group = append(group, p)
				case <-t.C:
					break linger
				case <-done:
					t.Stop()
					return
				}
			}
			t.Stop()
		}
		g.last = len(group)
		type sent struct {
			p *proposal
			f raft.ApplyFuture
		}
		var batch []sent
		for _, p := range group {
			if p.abandoned.Load() {
				continue
			}
			batch = append(batch, sent{p, g.r.Apply(p.data, max(time.Until(p.deadline), time.Millisecond))})
		}
		// Raft answers every future (also on leadership loss or shutdown),
		// in log order; the slot frees once the group's last one is answered.
		go func() {
			for _, s := range batch {
				s.p.result <- wait(s.f)
			}
			<-g.slots
		}()
	}
}
