package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// Backups: hashicorp/raft's user snapshot and user restore. The node knows
// no more of a snapshot's content than of an entry's: backend/raftstore
// frames it as a backup file and checks one before restoring it.

// SnapshotMeta describes a snapshot taken for a backup.
type SnapshotMeta struct {
	Index, Term uint64 // the Raft index and term it was taken at
	Size        int64  // the state machine's snapshot, in bytes
}

// BackupSnapshot takes a snapshot of the state machine on the leader and opens
// it twice — a backup's header carries the checksum of the body it
// precedes, so the caller reads it once to checksum it and once to send it.
// The snapshot is taken after a barrier, so it holds every write
// acknowledged before the call. Raft writes it to the snapshot store like
// any other (it counts among the ones kept, and compacts the log); both
// readers are open before Snapshot returns, so the store may reap it
// meanwhile. Only a ready leader can: elsewhere it fails with
// codes.ErrNotLeader, or codes.ErrNoLeader while the leader is starting.
func (n *Node) BackupSnapshot(ctx context.Context) (SnapshotMeta, [2]io.ReadCloser, error) {
	var rcs [2]io.ReadCloser
	if err := n.readyLeader(); err != nil {
		return SnapshotMeta{}, rcs, err
	}
	if err := n.Barrier(ctx); err != nil {
		return SnapshotMeta{}, rcs, leaderErr("snapshot: barrier", err)
	}
	fut := n.raft.Snapshot()
	if err := await(ctx, fut); err != nil {
		return SnapshotMeta{}, rcs, leaderErr("take snapshot", err)
	}
	meta, first, err := fut.Open()
	if err != nil {
		return SnapshotMeta{}, rcs, fmt.Errorf("open the snapshot taken: %v: %w", err, codes.ErrInternal)
	}
	_, second, err := n.snaps.Open(meta.ID)
	if err != nil {
		_ = first.Close()
		return SnapshotMeta{}, rcs, fmt.Errorf("open the snapshot taken again: %v: %w", err, codes.ErrInternal)
	}
	rcs = [2]io.ReadCloser{first, second}
	return SnapshotMeta{Index: meta.Index, Term: meta.Term, Size: meta.Size}, rcs, nil
}

// RestoreSnapshot replaces the replicated state with the state machine snapshot of
// size bytes that r yields, through hashicorp/raft's user restore: the
// leader writes it to its snapshot store at an index past its log (a hole
// in the log), restores its state machine from it, and every follower,
// finding the hole, installs it by InstallSnapshot. It returns once a
// majority holds an entry committed after it, and returns that Raft index.
//
// Raft's caveats (DESIGN.md, "Backups"): the state machine must be able to
// restore r — a failure panics on the leader, and on every follower that
// installs it — so check it first; writes in flight on the leader fail
// (they did not happen) and those queued behind the restore apply to the
// restored state; the current Raft configuration is kept, whatever the
// cluster the snapshot came from; it cannot run while a configuration
// change is uncommitted; and for a moment the leader's state is ahead of
// its followers'. Errors: codes.ErrNotLeader (nothing changed),
// codes.ErrUnknownOutcome (the leader restored, but a majority did not
// confirm it in time: run it again), others (nothing changed).
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader, size int64) (uint64, error) {
	if err := n.readyLeader(); err != nil {
		return 0, err
	}
	timeout := 5 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return 0, fmt.Errorf("restore snapshot: no time left: %w", codes.ErrTimeout)
	}
	before := n.snapshotIndex()
	err := n.raft.Restore(&raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}, r, timeout)
	index := n.snapshotIndex()
	switch {
	case err == nil:
		return index, nil
	case index != before:
		// The leader took the new state; the entry that proves a majority
		// followed it did not commit (leadership lost, shutdown, timeout).
		return 0, fmt.Errorf("restore snapshot: this node restored it at index %d, but a majority did not confirm it: %v: %w", index, err, codes.ErrUnknownOutcome)
	default:
		return 0, leaderErr("restore snapshot", err)
	}
}

// FenceWrites stops writes for a restore: it waits until no Apply is in
// flight, makes new ones wait, and commits a barrier, so that every entry
// proposed before it has been applied. Until release, the state machine's
// state changes only by what the caller does (RestoreSnapshot). Writes wait
// for release; one whose context ended meanwhile then fails with
// codes.ErrOverloaded, not proposed.
func (n *Node) FenceWrites(ctx context.Context) (release func(), err error) {
	locked := make(chan struct{})
	go func() {
		n.fence.Lock()
		close(locked)
	}()
	select {
	case <-locked:
	case <-ctx.Done():
		go func() {
			<-locked
			n.fence.Unlock()
		}()
		return nil, fmt.Errorf("waiting for the writes in flight: %v: %w", ctx.Err(), codes.ErrTimeout)
	}
	if err := n.Barrier(ctx); err != nil {
		n.fence.Unlock()
		return nil, leaderErr("barrier before the restore", err)
	}
	return n.fence.Unlock, nil
}

// await waits for a raft future, or for ctx to end (then it returns
// ctx's error and leaves the future to finish on its own).
func await(ctx context.Context, fut raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readyLeader fails unless this node leads and has finished its term's barrier.
func (n *Node) readyLeader() error {
	switch {
	case n.Ready():
		return nil
	case n.IsLeader():
		return fmt.Errorf("leader is still starting up: %w", codes.ErrNoLeader)
	}
	leader, _ := n.Leader()
	return fmt.Errorf("%s is not the leader (the leader is %q): %w", n.cfg.ID, leader, codes.ErrNotLeader)
}

// leaderErr maps raft's errors for an operation that did not happen.
func leaderErr(what string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s: %v: %w", what, err, codes.ErrNotLeader)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %w", what, codes.ErrShuttingDown)
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %v: %w", what, err, codes.ErrTimeout)
	}
	return fmt.Errorf("%s: %v: %w", what, err, codes.ErrInternal)
}
