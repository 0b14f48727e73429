package backend

import (
	"context"
	"io"
)

// Snapshotter is implemented by stores that can back up and restore the
// replicated state (the `discoverd snapshot` commands, docs/backup.md). The
// RPC server asks a DiscoveryBackend for it; a store that cannot answers
// every call with an error that says what to use instead.
type Snapshotter interface {
	// SaveSnapshot takes a consistent snapshot on the leader — it holds
	// every write acknowledged before the call — and returns it as a
	// backup file (internal/snapfile: header, then body), to be read and
	// closed. A node that does not lead fails with codes.ErrNotLeader.
	SaveSnapshot(ctx context.Context) (SnapshotFile, error)
	// CanRestore fails when RestoreSnapshot would fail for who this node
	// is (not the leader: codes.ErrNotLeader), before a file is uploaded.
	CanRestore(ctx context.Context) error
	// RestoreSnapshot replaces the replicated state on every node with the
	// backup file f of size bytes, through the leader. It checks the whole
	// file first, and refuses (codes.ErrInvalidArgument) a file that is
	// not an intact snapshot, changing nothing.
	RestoreSnapshot(ctx context.Context, f io.ReaderAt, size int64, opts RestoreOptions) (RestoreResult, error)
}

// SnapshotFile is a backup being read: Size bytes in all, header included.
type SnapshotFile struct {
	io.ReadCloser
	Size int64
}

// RestoreOptions tune a restore.
type RestoreOptions struct {
	// BumpIndex raises the restored state's index by this much beyond the
	// backup's, past changes a lost cluster may have shown its clients
	// after the backup was taken (docs/backup.md).
	BumpIndex uint64
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	RaftIndex uint64 // the Raft index the restored snapshot took
	Index     uint64 // the restored state's index (of changes, as clients see them)
	// SnapshotIndex is the index the backup's state was at; Index differs
	// when it had to move past the cluster's (or by BumpIndex).
	SnapshotIndex uint64
	Services      int
	Instances     int
	Meta          int    // services with metadata
	StateHash     string // the leader's state hash after the restore (NodeInfo's)
}
