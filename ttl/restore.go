package ttl

import (
	"context"
	"fmt"

	"github.com/discoverd/discoverd/internal/codes"
)

// Restoring a backup (DESIGN.md, "Snapshot restore"). Raft replaces the
// whole state under the tracker; the FSM then calls Restored, and the
// tracker arms every restored instance afresh. What must not happen is an
// expiry (or a suspect marker) the tracker decided on the state before
// landing on the restored one: an expiry names a registration by its
// index, and a backup of this very cluster holds the same registrations at
// the same indices, so an expiry decided a moment before the restore would
// remove a restored instance the moment after it, long before its TTL.
// HoldProposals closes that window.

// HoldProposals stops the tracker from proposing — expiries and suspect
// markers — and waits until no proposal it made is still in flight, so
// that every proposal it made has been settled by Raft before the caller
// goes on. A proposal decided before the call is dropped, never proposed.
// Call release when the restore is over, whatever its outcome: the tracker
// then reloads every instance from the state, each armed at now + its TTL +
// grace (the rule of a new leader that cannot rely on the deadline tables),
// and proposes again. While held it still answers heartbeats.
func (t *Tracker) HoldProposals(ctx context.Context) (release func(), err error) {
	t.mu.Lock()
	t.holding++
	t.holdGen++
	t.mu.Unlock()
	taken := 0
	release = func() {
		for range taken {
			<-t.sem
		}
		t.mu.Lock()
		t.holding--
		if t.active {
			t.rearm = true
		}
		t.mu.Unlock()
		t.nudge()
	}
	// Every proposal holds a slot of sem while it is in flight, and checks
	// holdGen once it has one (heldBack): with every slot taken, none is in
	// flight and none decided before can start.
	for taken < cap(t.sem) {
		select {
		case t.sem <- struct{}{}:
			taken++
		case <-ctx.Done():
			release()
			return nil, fmt.Errorf("waiting for the expiry proposals in flight to settle: %v: %w", ctx.Err(), codes.ErrTimeout)
		}
	}
	return release, nil
}

// heldBack reports whether a proposal must not be made: HoldProposals was
// called after it was decided, or holds now.
func (t *Tracker) heldBack(p proposal) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.holding > 0 || p.gen != t.holdGen
}
