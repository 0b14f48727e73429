package raftstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/snapfile"
)

// Backups (docs/backup.md): a backup file is a snapfile header and the
// FSM's snapshot, taken and restored through Raft on the leader.

var _ backend.Snapshotter = (*Store)(nil)

// SaveSnapshot implements backend.Snapshotter: Raft takes a snapshot on the
// leader (after a barrier), which is read once for its checksum — and
// checked, as a restore would check it — and once more to send.
func (s *Store) SaveSnapshot(ctx context.Context) (backend.SnapshotFile, error) {
	meta, rcs, err := s.node.BackupSnapshot(ctx)
	if err != nil {
		return backend.SnapshotFile{}, err
	}
	sum := sha256.New()
	counted := &countingReader{r: io.TeeReader(rcs[0], sum)}
	summary, err := fsm.SummarizeSnapshot(counted)
	if err == nil {
		_, err = io.Copy(io.Discard, counted)
	}
	_ = rcs[0].Close()
	if err == nil && counted.n != meta.Size {
		err = fmt.Errorf("read %d bytes, the snapshot store says %d", counted.n, meta.Size)
	}
	if err != nil {
		_ = rcs[1].Close()
		return backend.SnapshotFile{}, fmt.Errorf("read the snapshot taken at index %d: %v: %w", meta.Index, err, codes.ErrInternal)
	}
	h := snapfile.Header{Version: snapfile.Version, Index: meta.Index, Term: meta.Term, Applied: summary.Applied,
		Created: time.Now(), Size: uint64(meta.Size)}
	sum.Sum(h.SHA256[:0])
	s.cfg.Logger.Info("snapshot taken for a backup", "raft_index", meta.Index, "index", summary.Applied, "bytes", meta.Size,
		"services", summary.Services, "instances", summary.Instances, "acl_tokens", summary.ACLTokens)
	return backend.SnapshotFile{
		ReadCloser: readCloser{Reader: io.MultiReader(bytes.NewReader(h.Marshal()), rcs[1]), Closer: rcs[1]},
		Size:       snapfile.HeaderSize + meta.Size,
	}, nil
}

// CanRestore implements backend.Snapshotter: only a ready leader restores.
func (s *Store) CanRestore(context.Context) error {
	switch {
	case s.node.Ready():
		return nil
	case s.node.IsLeader():
		return fmt.Errorf("the leader is still starting up: %w", codes.ErrNoLeader)
	}
	id, addr := s.node.Leader()
	if id == "" {
		return fmt.Errorf("a restore runs on the leader, and %s knows none now: %w", s.node.ID(), codes.ErrNotLeader)
	}
	return fmt.Errorf("a restore runs on the leader: %s is not, %s at %s is: %w", s.node.ID(), id, addr, codes.ErrNotLeader)
}

// RestoreSnapshot implements backend.Snapshotter. It checks the whole file
// (header, size, checksum, and every value of the body) while it writes the
// snapshot to hand to Raft to a temporary file, with the state's index
// moved past the cluster's if need be (fsm.PrepareRestore). Then, in this
// order (MUST): it holds the TTL tracker's proposals (ttl/restore.go) — an
// expiry decided on the old state must not land on the restored one — and
// fences writes (raftnode: none in flight, none new, all applied), so the
// cluster's index stands still; prepares again if it has reached the
// prepared index meanwhile; and restores through Raft.
func (s *Store) RestoreSnapshot(ctx context.Context, f io.ReaderAt, size int64, opts backend.RestoreOptions) (backend.RestoreResult, error) {
	if err := s.CanRestore(ctx); err != nil {
		return backend.RestoreResult{}, err
	}
	hdr, err := snapfile.ReadHeader(io.NewSectionReader(f, 0, size))
	if err != nil {
		return backend.RestoreResult{}, err
	}
	if hdr.Size > uint64(size) || snapfile.HeaderSize+int64(hdr.Size) != size {
		return backend.RestoreResult{}, fmt.Errorf("it has %d bytes, its header says %d: %w", size, snapfile.HeaderSize+hdr.Size, snapfile.ErrNotSnapshot)
	}
	tmp, err := os.CreateTemp(s.cfg.TempDir, "restore-*.snap")
	if err != nil {
		return backend.RestoreResult{}, fmt.Errorf("restore: make a temporary file: %v: %w", err, codes.ErrInternal)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	bopts := fsm.RestoreOptions{Current: s.fsm.AppliedIndex(), Bump: opts.BumpIndex}
	sum, index, err := s.prepare(f, hdr, tmp, bopts)
	if err != nil {
		return backend.RestoreResult{}, err
	}
	release, err := s.tracker.HoldProposals(ctx)
	if err != nil {
		return backend.RestoreResult{}, err
	}
	defer release()
	unfence, err := s.node.FenceWrites(ctx)
	if err != nil {
		return backend.RestoreResult{}, err
	}
	defer unfence()
	if bopts.Current = s.fsm.AppliedIndex(); bopts.Current >= index {
		// Writes moved the index past the prepared one: prepare again,
		// now that it stands still.
		if sum, index, err = s.prepare(f, hdr, tmp, bopts); err != nil {
			return backend.RestoreResult{}, err
		}
	}
	n, err := tmp.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		return backend.RestoreResult{}, fmt.Errorf("restore: %v: %w", err, codes.ErrInternal)
	}
	s.cfg.Logger.Warn("restoring a backup: the replicated state is replaced", "backup_raft_index", hdr.Index, "backup_index", hdr.Applied,
		"index", index, "services", sum.Services, "instances", sum.Instances, "acl_tokens", sum.ACLTokens, "bytes", hdr.Size)
	raftIndex, err := s.node.RestoreSnapshot(ctx, tmp, n)
	if err != nil {
		return backend.RestoreResult{}, err
	}
	_, hash := s.fsm.Hash()
	s.cfg.Logger.Warn("backup restored", "raft_index", raftIndex, "index", index)
	return backend.RestoreResult{RaftIndex: raftIndex, Index: index, SnapshotIndex: hdr.Applied, Services: sum.Services,
		Instances: sum.Instances, Meta: sum.Meta, StateHash: hash}, nil
}

// prepare checks the body that follows hdr in f against hdr and writes the
// snapshot to restore to tmp, from its start. It returns what the snapshot
// holds and the index the restored state will be at.
func (s *Store) prepare(f io.ReaderAt, hdr *snapfile.Header, tmp *os.File, opts fsm.RestoreOptions) (fsm.SnapshotSummary, uint64, error) {
	if err := tmp.Truncate(0); err != nil {
		return fsm.SnapshotSummary{}, 0, fmt.Errorf("restore: %v: %w", err, codes.ErrInternal)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fsm.SnapshotSummary{}, 0, fmt.Errorf("restore: %v: %w", err, codes.ErrInternal)
	}
	body := hdr.BodyReader(io.NewSectionReader(f, snapfile.HeaderSize, int64(hdr.Size)))
	sum, index, err := fsm.PrepareRestore(body, tmp, opts)
	// A damaged body says so before anything its decoding made of it.
	if _, berr := io.Copy(io.Discard, body); berr != nil {
		return sum, 0, berr
	}
	switch {
	case errors.Is(err, fsm.ErrWrite):
		return sum, 0, fmt.Errorf("restore: %v: %w", err, codes.ErrInternal)
	case err != nil:
		return sum, 0, err
	case sum.Applied != hdr.Applied:
		return sum, 0, fmt.Errorf("its header says index %d, its body %d: %w", hdr.Applied, sum.Applied, snapfile.ErrNotSnapshot)
	}
	return sum, index, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type readCloser struct {
	io.Reader
	io.Closer
}
