//go:build linux

package slowfs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose open files and directories obey the fault
// settings of fs. Every node of the tree is one: the root is wrapped by
// Mount, and WrapChild wraps each child the loopback code creates.
type node struct {
	*fs.LoopbackNode
	fs *FS
}

var (
	_ fs.NodeWrapChilder     = (*node)(nil)
	_ fs.NodeOpener          = (*node)(nil)
	_ fs.NodeCreater         = (*node)(nil)
	_ fs.NodeTmpfiler        = (*node)(nil)
	_ fs.NodeOpendirHandler  = (*node)(nil)
	_ fs.FileFsyncer         = (*file)(nil)
	_ fs.FileWriter          = (*file)(nil)
	_ fs.FileWritever        = (*file)(nil)
	_ fs.FilePassthroughFder = (*file)(nil)
	_ fs.FileFsyncdirer      = (*dir)(nil)
)

// WrapChild is called by go-fuse for every new child inode.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	lb, ok := ops.(*fs.LoopbackNode)
	if !ok {
		return ops
	}
	return &node{LoopbackNode: lb, fs: n.fs}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return n.wrapFile(fh), fuseFlags, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return ch, n.wrapFile(fh), fuseFlags, errno
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	return ch, n.wrapFile(fh), fuseFlags, errno
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if d, ok := fh.(dirHandle); ok {
		fh = &dir{dirHandle: d, fs: n.fs}
	}
	return fh, fuseFlags, errno
}

func (n *node) wrapFile(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &file{LoopbackFile: lf, fs: n.fs}
	}
	return fh
}

// file is an open loopback file with faults on Fsync and Write. Every other
// operation, including Read (and so mmap), is the loopback file's.
type file struct {
	*fs.LoopbackFile
	fs *FS
}

// PassthroughFd refuses FUSE passthrough. With it (Linux 6.9+, root) the
// kernel would send reads and writes straight to the backing file and the
// write faults would never see them.
func (f *file) PassthroughFd() (int, bool) { return -1, false }

// Fsync serves fsync and fdatasync (flags&1 is the datasync bit; both are
// passed on as fsync by the loopback file).
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.fs.beforeFsync(ctx); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.fs.beforeWrite(ctx, len(data)); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Write(ctx, data, off)
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	n := 0
	for _, b := range data {
		n += len(b)
	}
	if errno := f.fs.beforeWrite(ctx, n); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Writev(ctx, data, off)
}

// dirHandle is what the loopback directory stream implements; dir keeps all
// of it and replaces Fsyncdir.
type dirHandle interface {
	fs.DirStream
	fs.FileReaddirenter
	fs.FileReleasedirer
	fs.FileSeekdirer
	fs.FileFsyncdirer
	fs.FileIoctler
}

// dir is an open loopback directory with faults on Fsyncdir: renames and
// file creations are made durable by an fsync of the directory (raft's
// snapshot store does that).
type dir struct {
	dirHandle
	fs *FS
}

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.fs.beforeFsync(ctx); errno != 0 {
		return errno
	}
	return d.dirHandle.Fsyncdir(ctx, flags)
}

// beforeFsync counts an fsync, waits out the fsync delay and reports the
// injected error, if any.
func (f *FS) beforeFsync(ctx context.Context) syscall.Errno {
	f.fsyncs.Add(1)
	if errno := f.wait(ctx, time.Duration(f.fsyncDelay.Load())); errno != 0 {
		return errno
	}
	if f.fsyncErr.Load() {
		f.fsyncErrors.Add(1)
		return syscall.EIO
	}
	return 0
}

// beforeWrite counts a write of n bytes, waits out the write delay and
// reports the injected error, if any.
func (f *FS) beforeWrite(ctx context.Context, n int) syscall.Errno {
	f.writes.Add(1)
	f.writeBytes.Add(uint64(n))
	if errno := f.wait(ctx, time.Duration(f.writeDelay.Load())); errno != 0 {
		return errno
	}
	if f.writeErr.Load() {
		f.writeErrors.Add(1)
		return syscall.EIO
	}
	return 0
}
