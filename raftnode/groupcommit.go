package raftnode

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/histogram"
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
//
// A group of several writes goes to raft as one log entry, made by the
// state machine's JoinEntries (in discoverd an fsm.BatchType entry):
// raft-boltdb encodes and stores every entry as its own key and the
// transport encodes each one again, which at 100+ writes per group cost more
// than the writes themselves. The FSM gives each write of the entry its own
// index, so clients see no difference. Config.NoBatchEntries turns this off
// (each write its own entry, as before).

// maxGroupBytes ends a group early: a batch entry stays a modest message
// for raft's transport and log however large the registrations are.
const maxGroupBytes = 1 << 20

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
	index    uint64 // of the log entry that carried it
}

// wait waits for a raft future. (A raft future may be waited on by one
// goroutine only: a second Error() call would never return.)
func wait(f raft.ApplyFuture) applyResult {
	if err := f.Error(); err != nil {
		return applyResult{proposed: true, err: err}
	}
	return applyResult{proposed: true, resp: f.Response(), index: f.Index()}
}

type groupCommit struct {
	r      *raft.Raft
	queue  chan *proposal
	slots  chan struct{}                          // one token per group in flight
	max    int                                    // writes per group
	linger time.Duration                          // longest wait for a group to fill up
	last   int                                    // size of the last group
	join   func(entries [][]byte) ([]byte, error) // makes a group one entry; nil: one entry per write
	start  time.Time
	doneAt atomic.Int64         // when the last group was answered, as time since start
	writes *histogram.Histogram // writes per group handed to raft (/metrics)
}

// release frees a group's slot once all its writes are answered.
func (g *groupCommit) release() {
	g.doneAt.Store(int64(time.Since(g.start)))
	<-g.slots
}

func newGroupCommit(r *raft.Raft, groups, maxEntries int, linger time.Duration, join func([][]byte) ([]byte, error)) *groupCommit {
	return &groupCommit{r: r, queue: make(chan *proposal, 4*maxEntries), slots: make(chan struct{}, groups),
		max: maxEntries, linger: linger, join: join, start: time.Now(), writes: histogram.New(histogram.Sizes...)}
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
		size := len(first.data)
		room := func() bool { return len(group) < g.max && size < maxGroupBytes }
		for room() {
			select {
			case p := <-g.queue:
				group = append(group, p)
				size += len(p.data)
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
		//
		// Only while they can still be on their way: a write that comes
		// long after the last group finished (a lone write after a burst)
		// goes at once.
		recent := time.Since(g.start)-time.Duration(g.doneAt.Load()) < g.linger
		if want := min(g.last+queued, g.max); len(group) < want && g.linger > 0 && recent {
			t := time.NewTimer(g.linger)
		linger:
			for len(group) < want && room() {
				select {
				case p := <-g.queue:
					group = append(group, p)
					size += len(p.data)
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
		live := group[:0]
		for _, p := range group {
			if !p.abandoned.Load() {
				live = append(live, p)
			}
		}
		if len(live) == 0 {
			<-g.slots
			continue
		}
		g.writes.Observe(uint64(len(live)))
		if g.join != nil && len(live) > 1 {
			g.proposeBatch(live)
			continue
		}
		type sent struct {
			p *proposal
			f raft.ApplyFuture
		}
		batch := make([]sent, 0, len(live))
		for _, p := range live {
			batch = append(batch, sent{p, g.r.Apply(p.data, max(time.Until(p.deadline), time.Millisecond))})
		}
		// Raft answers every future (also on leadership loss or shutdown),
		// in log order; the slot frees once the group's last one is answered.
		go func() {
			for _, s := range batch {
				s.p.result <- wait(s.f)
			}
			g.release()
		}()
	}
}

// proposeBatch proposes a group as one log entry (made by join): one entry
// to store, replicate and apply instead of one per write. Each write still
// gets its own index (the FSM numbers them) and its own result: the state
// machine answers the entry with one response per write.
func (g *groupCommit) proposeBatch(group []*proposal) {
	cmds := make([][]byte, len(group))
	var deadline time.Time
	for i, p := range group {
		cmds[i] = p.data
		if p.deadline.After(deadline) {
			deadline = p.deadline
		}
	}
	data, err := g.join(cmds)
	if err != nil {
		// Proposals are well-formed entries: this is a bug, not bad input.
		for _, p := range group {
			p.result <- applyResult{proposed: true, err: fmt.Errorf("%w: %v", errBatch, err)}
		}
		<-g.slots
		return
	}
	f := g.r.Apply(data, max(time.Until(deadline), time.Millisecond))
	go func() {
		defer g.release()
		r := wait(f)
		if r.err != nil {
			for _, p := range group {
				p.result <- r
			}
			return
		}
		rs, ok := r.resp.([]any)
		if !ok || len(rs) != len(group) {
			err := fmt.Errorf("%w: a batch of %d writes was answered with %T", errBatch, len(group), r.resp)
			for _, p := range group {
				p.result <- applyResult{proposed: true, err: err}
			}
			return
		}
		for i, p := range group {
			p.result <- applyResult{proposed: true, resp: rs[i], index: r.index}
		}
	}()
}

// errBatch marks a batch the FSM answered in an unexpected way: the writes
// were proposed, so their outcome is unknown.
var errBatch = errors.New("group commit batch")
