package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/snapfile"
	"github.com/discoverd/discoverd/internal/wire"
)

// Backups (docs/backup.md). Both directions run on the leader, on a
// connection of their own: the client asks the cluster who leads (Status)
// and dials it, or, if that fails, each of its servers in turn (a follower
// refuses with ErrNotLeader), until its context ends.

// SnapshotHeader describes a backup file: the Raft index and term it was
// taken at, the index of its last change, when it was taken, its body's
// size and SHA-256.
type SnapshotHeader = snapfile.Header

// ErrNotSnapshot is wrapped by errors about a file that is not an intact
// backup (checked before anything is sent, and again by the leader).
var ErrNotSnapshot = snapfile.ErrNotSnapshot

// SaveSnapshot writes a backup of the cluster's state to w: a snapshot the
// leader takes once everything acknowledged before the call is applied,
// streamed in chunks, checked as it arrives. It returns the file's header.
// Once a byte has been written to w it does not try again: a failure after
// that leaves w holding part of a file (write to a temporary file, and
// rename it when SaveSnapshot succeeds, as the CLI does).
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) (*SnapshotHeader, error) {
	var hdr *SnapshotHeader
	err := c.onLeader(ctx, func(conn *rpcconn.Conn) (bool, error) {
		var err error
		var written bool
		hdr, written, err = saveFrom(ctx, conn, w)
		return written, err
	})
	return hdr, err
}

// saveFrom streams a backup from conn into w. written reports whether
// anything reached w.
func saveFrom(ctx context.Context, conn *rpcconn.Conn, w io.Writer) (hdr *SnapshotHeader, written bool, err error) {
	st, err := conn.Stream(ctx, wire.MethodSnapshotSave, &wire.SnapshotSaveRequest{})
	if err != nil {
		return nil, false, err
	}
	defer st.Close()
	var check snapfile.Checker
	var size, got uint64
	for size == 0 || got < size {
		var chunk wire.SnapshotChunk
		if err := st.Recv(ctx, &chunk); err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%v: %w", err, codes.ErrTimeout)
			}
			if written {
				return nil, true, fmt.Errorf("snapshot save from %s after %d of %d bytes: %w", conn.Addr(), got, size, err)
			}
			return nil, false, fmt.Errorf("snapshot save from %s: %w", conn.Addr(), err)
		}
		if size == 0 {
			if size = chunk.Size; size == 0 {
				return nil, false, fmt.Errorf("snapshot save from %s: the first frame gives no size: %w", conn.Addr(), codes.ErrInternal)
			}
		}
		if got += uint64(len(chunk.Data)); got > size {
			return nil, written, fmt.Errorf("snapshot save from %s: more than the %d bytes announced: %w", conn.Addr(), size, codes.ErrInternal)
		}
		if _, err := check.Write(chunk.Data); err != nil {
			return nil, written, fmt.Errorf("snapshot save from %s: what came is not a backup: %w", conn.Addr(), err)
		}
		if _, err := w.Write(chunk.Data); err != nil {
			return nil, true, fmt.Errorf("snapshot save: write: %w", err)
		}
		written = written || len(chunk.Data) > 0
	}
	hdr, err = check.Done()
	if err != nil {
		return nil, true, fmt.Errorf("snapshot save from %s: what came is not an intact backup: %w", conn.Addr(), err)
	}
	return hdr, true, nil
}

// RestoreOptions tune RestoreSnapshot.
type RestoreOptions struct {
	// BumpIndex raises the restored state's index by this much beyond the
	// backup's: past indices a lost cluster showed its clients after the
	// backup was taken (docs/backup.md). 0: none.
	BumpIndex uint64
}

// RestoreResult says what a restore did: the Raft index the restored
// snapshot took, the restored state's index and the backup's, what the
// state holds, and the leader's state hash after it (NodeInfo's).
type RestoreResult = wire.SnapshotRestoreResponse

// RestoreSnapshot replaces the cluster's whole state, on every node, with
// the backup file r of size bytes. It checks the file first (nothing is
// sent for a file that is not an intact backup), uploads it to the leader
// in chunks and commits it; the leader checks it again and restores it
// through Raft. Watchers resync. A restore that fails with
// ErrUnknownOutcome may have taken effect: check (discoverd status, the
// state hashes) and run it again.
func (c *Client) RestoreSnapshot(ctx context.Context, r io.ReaderAt, size int64, opts RestoreOptions) (*RestoreResult, error) {
	hdr, err := snapfile.Verify(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, err
	}
	if snapfile.HeaderSize+int64(hdr.Size) != size {
		return nil, fmt.Errorf("it has %d bytes, its header says %d: %w", size, snapfile.HeaderSize+hdr.Size, ErrNotSnapshot)
	}
	var res *RestoreResult
	err = c.onLeader(ctx, func(conn *rpcconn.Conn) (bool, error) {
		var err error
		res, err = restoreTo(ctx, conn, r, size, opts)
		// Only an unknown outcome may have changed something: anything
		// else failed before the restore began, or left the state as it was.
		return errors.Is(err, ErrUnknownOutcome), err
	})
	return res, err
}

// restoreTo uploads the file to conn's node and commits it.
func restoreTo(ctx context.Context, conn *rpcconn.Conn, r io.ReaderAt, size int64, opts RestoreOptions) (*RestoreResult, error) {
	var begin wire.SnapshotRestoreBeginResponse
	if err := conn.Call(ctx, wire.MethodSnapshotRestoreBegin, false, &wire.SnapshotRestoreBeginRequest{Size: uint64(size), BumpIndex: opts.BumpIndex}, &begin); err != nil {
		return nil, fmt.Errorf("snapshot restore to %s: %w", conn.Addr(), notApplied(err))
	}
	// Within the node's frame limit and this client's request limit.
	buf := make([]byte, min(begin.MaxChunk, wire.DefaultMaxFrame-256))
	if len(buf) == 0 {
		return nil, fmt.Errorf("snapshot restore to %s: the node takes chunks of 0 bytes: %w", conn.Addr(), codes.ErrInternal)
	}
	for off := int64(0); off < size; {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == size-off) {
			return nil, fmt.Errorf("snapshot restore: read the file at %d: %w", off, err)
		}
		if err := conn.Call(ctx, wire.MethodSnapshotRestoreChunk, false, &wire.SnapshotRestoreChunkRequest{Offset: uint64(off), Data: buf[:n]}, &wire.Empty{}); err != nil {
			return nil, fmt.Errorf("snapshot restore to %s: upload at %d of %d bytes: %w", conn.Addr(), off, size, notApplied(err))
		}
		off += int64(n)
	}
	var res RestoreResult
	if err := conn.Call(ctx, wire.MethodSnapshotRestoreCommit, false, &wire.SnapshotRestoreCommitRequest{}, &res); err != nil {
		return nil, fmt.Errorf("snapshot restore to %s: %w", conn.Addr(), err)
	}
	return &res, nil
}

// notApplied turns the unknown outcome of an upload call into what it is:
// nothing is restored before the commit, so the upload can start again.
func notApplied(err error) error {
	if errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%v: %w", err, ErrUnavailable)
	}
	return err
}

// onLeader runs op on a connection of its own to the leader: the one the
// cluster names first, then each server of the client's in turn, again
// after a pause while the errors are retryable and op reports that it
// changed nothing (done false), until ctx ends.
func (c *Client) onLeader(ctx context.Context, op func(*rpcconn.Conn) (done bool, err error)) error {
	var last error
	for {
		addrs, err := c.leaderFirst(ctx)
		var ue *unreachableError
		if errors.As(err, &ue) && ue.refused {
			return err // nothing listens anywhere
		}
		for _, addr := range addrs {
			if ctx.Err() != nil {
				break
			}
			conn, err := rpcconn.Dial(ctx, addr, c.dialOptions())
			if err != nil {
				last = err
				continue
			}
			done, err := op(conn)
			_ = conn.Close()
			if err == nil || done || !codes.Retryable(err) {
				return err
			}
			last = err
		}
		if err := ctx.Err(); err != nil {
			if last == nil {
				return fmt.Errorf("no leader found: %w", ErrNoLeader)
			}
			return fmt.Errorf("%w (gave up: %v)", last, err)
		}
		_ = sleep(ctx, retryDelay())
	}
}

// leaderFirst returns the addresses to try: the leader's, as the cluster
// reports it, then the client's servers; and why the cluster could not say.
func (c *Client) leaderFirst(ctx context.Context) ([]string, error) {
	out := make([]string, 0, len(c.servers)+1)
	st, err := c.Status(ctx)
	if err == nil {
		for _, n := range st.Nodes {
			if n.ID == st.Leader && st.Leader != "" && n.Addr != "" {
				out = append(out, n.Addr)
			}
		}
	}
	return append(out, c.servers...), err
}
