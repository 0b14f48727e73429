package etcdstore

import (
	"context"
	"fmt"
	"io"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
)

// Backups: etcd holds the state, and backs it up itself.

var _ backend.Snapshotter = (*Store)(nil)

// errNoSnapshots answers every snapshot call of a front end over etcd.
var errNoSnapshots = fmt.Errorf("discoverd snapshot is not supported on -backend etcd, where etcd holds the state: back it up with 'etcdctl snapshot save' and restore it with 'etcdutl snapshot restore': %w", codes.ErrInvalidArgument)

// SaveSnapshot implements backend.Snapshotter: not on etcd.
func (s *Store) SaveSnapshot(context.Context) (backend.SnapshotFile, error) {
	return backend.SnapshotFile{}, errNoSnapshots
}

// CanRestore implements backend.Snapshotter: not on etcd.
func (s *Store) CanRestore(context.Context) error { return errNoSnapshots }

// RestoreSnapshot implements backend.Snapshotter: not on etcd.
func (s *Store) RestoreSnapshot(context.Context, io.ReaderAt, int64, backend.RestoreOptions) (backend.RestoreResult, error) {
	return backend.RestoreResult{}, errNoSnapshots
}
