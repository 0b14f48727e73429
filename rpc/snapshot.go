package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/snapfile"
	"github.com/discoverd/discoverd/internal/wire"
)

// Backups (docs/protocol.md, "Snapshots"). A save streams the backup file
// from the leader in frames of wire.SnapshotChunkSize, at most maxSaves at
// once per node. A restore uploads it
// on one connection: a begin that declares its size, chunks in order, each
// within -max-frame, then a commit. The upload goes to a file, not memory;
// it is bounded in size (-max-restore-size) and in time (-restore-timeout,
// from the begin to the commit's answer), there is at most one per node at
// a time, and it is removed when the connection ends, a new begin replaces
// it, the commit is answered, or its time is up.

// SnapshotConfig bounds backups and restores. Zero fields take their defaults.
type SnapshotConfig struct {
	// MaxRestoreSize is the largest backup file a restore may upload, in
	// bytes. Default 1 GiB.
	MaxRestoreSize int64
	// Timeout bounds a save, from its request to its last frame, and a
	// restore, from its begin to the commit's answer. Default 10 min.
	Timeout time.Duration
	// Dir is where uploads are written. Default os.TempDir().
	Dir string
}

func (c SnapshotConfig) withDefaults() SnapshotConfig {
	if c.MaxRestoreSize <= 0 {
		c.MaxRestoreSize = 1 << 30
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Minute
	}
	return c
}

// maxSaves bounds the saves a node serves at once: each has Raft take a
// snapshot and holds it open while it streams.
const maxSaves = 2

// snapshots is the server's side of backups: at most maxSaves saves and
// one upload at a time.
type snapshots struct {
	mu        sync.Mutex
	saving    int  // guarded by mu
	uploading bool // guarded by mu
}

// upload is a restore being uploaded on a connection.
type upload struct {
	s     *Server
	size  int64
	bump  uint64
	ctx   context.Context // ends at the upload's deadline or when the server stops
	stop  context.CancelFunc
	timer *time.Timer // drops the upload at its deadline

	mu       sync.Mutex
	file     *os.File // nil once dropped; guarded by mu
	received int64    // guarded by mu
}

// snapshot serves the snapshot methods; call delegates to it.
func (c *conn) snapshot(ctx context.Context, f *wire.Frame) (any, error) {
	sn, ok := c.s.be.(backend.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("method %q: this node's store has no snapshots: %w", f.Header.Method, codes.ErrUnknownMethod)
	}
	switch f.Header.Method {
	case wire.MethodSnapshotSave:
		var req wire.SnapshotSaveRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		return nil, c.saveSnapshot(ctx, sn, f.Header.Seq)
	case wire.MethodSnapshotRestoreBegin:
		var req wire.SnapshotRestoreBeginRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		return c.beginRestore(ctx, sn, &req)
	case wire.MethodSnapshotRestoreChunk:
		var req wire.SnapshotRestoreChunkRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		return &wire.Empty{}, c.restoreChunk(&req)
	default: // wire.MethodSnapshotRestoreCommit
		var req wire.SnapshotRestoreCommitRequest
		if err := f.DecodeRequest(&req); err != nil {
			return nil, err
		}
		return c.commitRestore(sn)
	}
}

// longContext is the context of a save or a restore: not the request
// timeout's, but SnapshotConfig.Timeout's, and the server's stop; it keeps
// the caller of the request that began it (req), for the ACL guard.
func (c *conn) longContext(req context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.Snapshot.Timeout)
	return backend.WithCaller(ctx, backend.CallerFrom(req)), cancel
}

// saveSnapshot streams a backup file from the backend in frames of
// wire.SnapshotChunkSize. handle sends the final frame: success when the
// whole file went out, or the error.
func (c *conn) saveSnapshot(req context.Context, sn backend.Snapshotter, seq uint64) error {
	snaps := &c.s.snaps
	snaps.mu.Lock()
	if snaps.saving >= maxSaves {
		snaps.mu.Unlock()
		return fmt.Errorf("%d snapshot saves are running on this node, the most it serves at once: try again when one is done: %w", maxSaves, codes.ErrResourceExhausted)
	}
	snaps.saving++
	snaps.mu.Unlock()
	defer func() {
		snaps.mu.Lock()
		snaps.saving--
		snaps.mu.Unlock()
	}()
	ctx, cancel := c.longContext(req)
	defer cancel()
	file, err := sn.SaveSnapshot(ctx)
	if err != nil {
		return err
	}
	defer file.Close()
	buf := make([]byte, wire.SnapshotChunkSize)
	first := true
	var sent int64
	for sent < file.Size {
		n, err := io.ReadFull(file, buf[:min(int64(len(buf)), file.Size-sent)])
		if err != nil {
			return fmt.Errorf("read the snapshot after %d of %d bytes: %v: %w", sent, file.Size, err, codes.ErrInternal)
		}
		chunk := &wire.SnapshotChunk{Data: buf[:n]}
		if first {
			chunk.Size, first = uint64(file.Size), false
		}
		if err := c.write(&wire.Header{Seq: seq, More: true}, chunk); err != nil {
			return err // the connection is gone: nobody reads the answer
		}
		sent += int64(n)
		if ctx.Err() != nil {
			return fmt.Errorf("snapshot save after %d of %d bytes: %v: %w", sent, file.Size, ctx.Err(), codes.ErrTimeout)
		}
	}
	return nil
}

// beginRestore opens an upload of req.Size bytes on the connection.
func (c *conn) beginRestore(ctx context.Context, sn backend.Snapshotter, req *wire.SnapshotRestoreBeginRequest) (any, error) {
	cfg := c.s.cfg.Snapshot
	switch {
	case req.Size > uint64(cfg.MaxRestoreSize):
		return nil, fmt.Errorf("a backup of %d bytes is larger than this node takes (-max-restore-size %d): %w", req.Size, cfg.MaxRestoreSize, codes.ErrTooLarge)
	case req.Size < snapfile.HeaderSize:
		return nil, codes.Invalid("a backup of %d bytes is smaller than a backup's header (%d bytes): it is not one", req.Size, snapfile.HeaderSize)
	}
	if err := sn.CanRestore(ctx); err != nil {
		return nil, err
	}
	c.dropUpload() // a new begin replaces an upload left open here
	c.s.snaps.mu.Lock()
	if c.s.snaps.uploading {
		c.s.snaps.mu.Unlock()
		return nil, fmt.Errorf("another restore is being uploaded to this node: wait until it is committed or its %v are up: %w", cfg.Timeout, codes.ErrResourceExhausted)
	}
	c.s.snaps.uploading = true
	c.s.snaps.mu.Unlock()
	file, err := os.CreateTemp(cfg.Dir, "upload-*.snap")
	if err != nil {
		c.s.snaps.done()
		return nil, fmt.Errorf("make a file for the upload: %v: %w", err, codes.ErrInternal)
	}
	uctx, stop := c.longContext(ctx)
	u := &upload{s: c.s, size: int64(req.Size), bump: req.BumpIndex, ctx: uctx, stop: stop, file: file}
	u.timer = time.AfterFunc(cfg.Timeout, func() { c.takeUpload(u).drop() })
	c.mu.Lock()
	c.upload = u
	c.mu.Unlock()
	c.s.log.Info("restore upload begun", "remote", c.nc.RemoteAddr(), "bytes", req.Size)
	// A chunk frame also carries its header and the body's keys: leave
	// them room within -max-frame.
	return &wire.SnapshotRestoreBeginResponse{MaxChunk: uint64(c.s.cfg.MaxFrame - 256)}, nil
}

// done frees the node's upload slot.
func (s *snapshots) done() {
	s.mu.Lock()
	s.uploading = false
	s.mu.Unlock()
}

// errNoUpload answers chunks and commits on a connection without an upload.
var errNoUpload = codes.Invalid("no restore upload is open on this connection (none begun, or it was committed or its time ran out): send %s first", wire.MethodSnapshotRestoreBegin)

// restoreChunk writes the next bytes of the connection's upload.
func (c *conn) restoreChunk(req *wire.SnapshotRestoreChunkRequest) error {
	c.mu.Lock()
	u := c.upload
	c.mu.Unlock()
	if u == nil {
		return errNoUpload
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.file == nil:
		return errNoUpload
	case req.Offset != uint64(u.received):
		return codes.Invalid("a chunk for offset %d, but %d bytes have come: send the chunks in order, one at a time", req.Offset, u.received)
	case uint64(len(req.Data)) > uint64(u.size-u.received):
		return codes.Invalid("a chunk of %d bytes at offset %d goes past the %d bytes the upload declared", len(req.Data), req.Offset, u.size)
	}
	if _, err := u.file.Write(req.Data); err != nil {
		return fmt.Errorf("write the upload: %v: %w", err, codes.ErrInternal)
	}
	u.received += int64(len(req.Data))
	return nil
}

// commitRestore restores the connection's upload, once it is complete.
func (c *conn) commitRestore(sn backend.Snapshotter) (any, error) {
	c.mu.Lock()
	u := c.upload
	c.mu.Unlock()
	if u == nil {
		return nil, errNoUpload
	}
	u.mu.Lock()
	if u.file == nil {
		u.mu.Unlock()
		return nil, errNoUpload
	}
	if u.received != u.size {
		received := u.received
		u.mu.Unlock()
		return nil, codes.Invalid("the upload has %d of the %d bytes it declared: send the rest before committing", received, u.size)
	}
	// The file is this commit's now: chunks, commits and the timer find
	// none. The restore's context ends at the upload's deadline.
	file := u.file
	u.file = nil
	u.timer.Stop()
	u.mu.Unlock()
	c.takeUpload(u)
	defer func() {
		u.stop()
		u.release(file)
	}()
	res, err := sn.RestoreSnapshot(u.ctx, file, u.size, backend.RestoreOptions{BumpIndex: u.bump})
	if err != nil {
		if errors.Is(err, codes.ErrInvalidArgument) {
			c.s.log.Warn("restore refused", "remote", c.nc.RemoteAddr(), "err", err)
		}
		return nil, err
	}
	return &wire.SnapshotRestoreResponse{RaftIndex: res.RaftIndex, Index: res.Index, SnapshotIndex: res.SnapshotIndex,
		Services: uint64(res.Services), Instances: uint64(res.Instances), Meta: uint64(res.Meta), StateHash: res.StateHash}, nil
}

// takeUpload detaches u from the connection if it is still the
// connection's, and returns it.
func (c *conn) takeUpload(u *upload) *upload {
	c.mu.Lock()
	if c.upload == u {
		c.upload = nil
	}
	c.mu.Unlock()
	return u
}

// dropUpload removes the connection's upload, if any (serve calls it when
// the connection ends).
func (c *conn) dropUpload() {
	c.mu.Lock()
	u := c.upload
	c.upload = nil
	c.mu.Unlock()
	if u != nil {
		u.drop()
	}
}

// drop removes the upload's file and frees the node's slot, unless a
// commit has taken the file.
func (u *upload) drop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.file == nil {
		return
	}
	u.timer.Stop()
	u.stop()
	u.release(u.file)
	u.file = nil
}

// release removes an upload's file and frees the node's slot.
func (u *upload) release(file *os.File) {
	_ = file.Close()
	_ = os.Remove(file.Name())
	u.s.snaps.done()
}
