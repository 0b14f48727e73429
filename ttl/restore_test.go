package ttl

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/fsm"
)

// bufSink is a raft.SnapshotSink over a buffer.
type bufSink struct{ bytes.Buffer }

func (s *bufSink) Close() error  { return nil }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) ID() string    { return "buf" }

var _ raft.SnapshotSink = (*bufSink)(nil)

// snapshotOf returns what Persist writes for f's state now.
func snapshotOf(t *testing.T, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// TestTTL_HoldProposalsAcrossARestore: a backup of this cluster holds web
// at the same registration index. HoldProposals returns only once the
// expiries in flight have settled; the one that failed (not applied) is
// not tried again; nothing is proposed while held; after the restore and
// the release web — whose expiry was decided, and committed, on the old
// state — is tracked again at now + TTL + grace, with the index of its
// registration, and "late", registered after the backup, is not tracked.
func TestTTL_HoldProposalsAcrossARestore(t *testing.T) {
	h := newHarness(t)
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	backup := snapshotOf(t, h.fsm)
	late := h.register("late", "10.0.0.2:80", 10*time.Second)
	h.becomeLeader()

	h.prop.setHold(true)
	deadline := at(10*time.Second + testGrace)
	h.advanceTo(deadline)
	calls := h.expectCalls(expiry(web, deadline), expiry(late, deadline))

	var released atomic.Int32
	type held struct {
		release func()
		err     error
	}
	done := make(chan held, 1)
	go func() {
		release, err := h.tr.HoldProposals(context.Background())
		if n := released.Load(); err == nil && n != 2 {
			t.Errorf("HoldProposals returned with %d of the 2 expiries in flight settled", n)
		}
		done <- held{release, err}
	}()
	// The hold must have begun before the expiries in flight come back
	// (else web's would count as an expiry of the old state's tracker).
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		h.tr.mu.Lock()
		holding := h.tr.holding > 0
		h.tr.mu.Unlock()
		if holding {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("HoldProposals did not begin within 5s")
		}
	}
	released.Add(1)
	h.prop.release(calls[0], nil) // web's expiry commits: web is gone from the state
	released.Add(1)
	h.prop.release(calls[1], errProposeFailed) // late's was never applied
	hd := <-done
	if hd.err != nil {
		t.Fatalf("HoldProposals: %v", hd.err)
	}
	if h.fsm.Get("web", "10.0.0.1:80") != nil {
		t.Fatal("web's expiry did not commit")
	}

	// Held: time passes (late's retry is due), nothing is proposed.
	h.clk.Set(deadline.Add(time.Minute))
	h.wakeRound()
	h.wakeRound()
	h.noCalls()

	// The restore (what Raft does through the FSM), then the release.
	restoredAt := deadline.Add(time.Minute)
	if err := h.fsm.Restore(io.NopCloser(bytes.NewReader(backup))); err != nil {
		t.Fatal(err)
	}
	hd.release()
	h.prop.setHold(false)
	h.settle()
	h.expectStats(Stats{Active: true, Tracked: 1})
	h.noCalls()

	h.expectExpiryAt(web, restoredAt.Add(10*time.Second+testGrace))
}

// TestTTL_HoldProposalsGivesUpWithItsContext: a hold whose context ends
// before the proposals in flight settle fails with a timeout, and the
// tracker proposes again, every instance armed afresh (a proposal decided
// before the hold is dropped, so its instance must be armed again).
func TestTTL_HoldProposalsGivesUpWithItsContext(t *testing.T) {
	h := newHarness(t)
	web := h.register("web", "10.0.0.1:80", 10*time.Second)
	h.becomeLeader()
	h.prop.setHold(true)
	deadline := at(10*time.Second + testGrace)
	h.advanceTo(deadline)
	calls := h.expectCalls(expiry(web, deadline))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if release, err := h.tr.HoldProposals(ctx); err == nil {
		release()
		t.Fatal("HoldProposals returned while an expiry was in flight")
	}
	h.prop.release(calls[0], errProposeFailed) // not applied, and decided before the hold
	h.prop.setHold(false)
	h.settle()
	h.expectStats(Stats{Active: true, Tracked: 1})
	h.expectExpiryAt(web, deadline.Add(10*time.Second+testGrace))
}
