//go:build linux

package slowfs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FsName is the source ("device") name of every slowfs mount; the fstype
// shown in /proc/mounts is FsType.
const (
	FsName = "discoverd-slowfs"
	FsType = "fuse." + FsName
)

// stopTimeout bounds how long Unmount waits for the server loops to end
// after the kernel has dropped the connection. They end within
// milliseconds; the bound only turns a kernel surprise into an error.
const stopTimeout = 10 * time.Second

// FS is one mounted slowfs. Its fault settings may be changed at any time
// from any goroutine; each request reads them when it arrives (a request
// already waiting out a delay keeps the delay it started with, but reads the
// error setting after the wait).
type FS struct {
	backing    string
	mountpoint string
	server     *fuse.Server

	// Fault settings, read by every request.
	fsyncDelay atomic.Int64 // time.Duration
	writeDelay atomic.Int64 // time.Duration
	fsyncErr   atomic.Bool
	writeErr   atomic.Bool

	// Counters behind Stats.
	fsyncs      atomic.Uint64
	writes      atomic.Uint64
	writeBytes  atomic.Uint64
	fsyncErrors atomic.Uint64
	writeErrors atomic.Uint64

	// stop is closed when Unmount starts: requests waiting out a delay
	// go on at once, so that they cannot hold the unmount up.
	stop chan struct{}
	// done is closed when the server loops have ended.
	done chan struct{}

	unmountOnce sync.Once
	unmountErr  error
}

// Stats counts the requests the file system has seen since Mount.
type Stats struct {
	// Fsyncs counts fsync and fdatasync requests, on files and on
	// directories, including the ones answered with an injected error.
	Fsyncs uint64
	// Writes counts write requests (the kernel splits a large write(2)
	// into requests of at most 128 KiB), including failed ones.
	Writes uint64
	// WriteBytes is the number of bytes the write requests carried.
	WriteBytes uint64
	// FsyncErrors counts fsyncs answered with EIO by SetFsyncError.
	FsyncErrors uint64
	// WriteErrors counts writes answered with EIO by SetWriteError.
	WriteErrors uint64
}

// InjectedErrors is the number of requests that failed because a fault was
// switched on.
func (s Stats) InjectedErrors() uint64 { return s.FsyncErrors + s.WriteErrors }

// Mount serves backing at mountpoint; both directories must exist. Every
// file operation is passed through to backing, except that fsyncs and
// writes obey the fault settings (none at first). The caller must call
// Unmount.
func Mount(backing, mountpoint string) (*FS, error) {
	var err error
	if backing, err = absDir(backing); err != nil {
		return nil, fmt.Errorf("slowfs: backing: %w", err)
	}
	if mountpoint, err = absDir(mountpoint); err != nil {
		return nil, fmt.Errorf("slowfs: mountpoint: %w", err)
	}
	loop, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("slowfs: loopback root %s: %w", backing, err)
	}
	lb, ok := loop.(*fs.LoopbackNode)
	if !ok {
		return nil, fmt.Errorf("slowfs: loopback root is a %T, not a *fs.LoopbackNode", loop)
	}
	f := &FS{
		backing:    backing,
		mountpoint: mountpoint,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: FsName,
			Name:   FsName,
			// We are root: mount(2) directly, without fusermount,
			// and fail plainly rather than try fusermount.
			DirectMountStrict: true,
			AllowOther:        false,
			// go-fuse's own messages (rare: a reply to a request
			// the kernel gave up on) name the mount.
			Logger: log.New(os.Stderr, "slowfs "+mountpoint+": ", log.LstdFlags),
		},
	}
	server, err := fs.Mount(mountpoint, &node{LoopbackNode: lb, fs: f}, opts)
	if err != nil {
		return nil, fmt.Errorf("slowfs: mount %s on %s: %w", backing, mountpoint, err)
	}
	f.server = server
	go func() {
		server.Wait()
		close(f.done)
	}()
	return f, nil
}

func absDir(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory", p)
	}
	return p, nil
}

// Backing is the directory the mount passes through to.
func (f *FS) Backing() string { return f.backing }

// Mountpoint is where the file system is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// SetFsyncDelay makes every fsync and fdatasync (of files and directories)
// wait d before it syncs; 0 switches the delay off.
func (f *FS) SetFsyncDelay(d time.Duration) { f.fsyncDelay.Store(int64(d)) }

// SetFsyncError makes every fsync and fdatasync fail with EIO, without
// syncing, while on is true. Written data stays in the backing file
// system's page cache, as after a real failed fsync.
func (f *FS) SetFsyncError(on bool) { f.fsyncErr.Store(on) }

// SetWriteDelay makes every write request wait d before it writes; 0
// switches the delay off.
func (f *FS) SetWriteDelay(d time.Duration) { f.writeDelay.Store(int64(d)) }

// SetWriteError makes every write request fail with EIO, writing nothing,
// while on is true.
func (f *FS) SetWriteError(on bool) { f.writeErr.Store(on) }

// Stats returns the counters as they are now.
func (f *FS) Stats() Stats {
	return Stats{
		Fsyncs:      f.fsyncs.Load(),
		Writes:      f.writes.Load(),
		WriteBytes:  f.writeBytes.Load(),
		FsyncErrors: f.fsyncErrors.Load(),
		WriteErrors: f.writeErrors.Load(),
	}
}

// Done is closed once the server has stopped: after Unmount, or when the
// mount was removed from outside (CleanStale, umount).
func (f *FS) Done() <-chan struct{} { return f.done }

// Unmount removes the mount and stops the server; it is idempotent and
// returns the first call's result. Pending delays end at once. If the mount
// is busy (a file or directory on it is open, or a process has its working
// directory there), the FUSE connection is aborted and the mount detached
// lazily: it is gone from the namespace when Unmount returns, the server
// has stopped, requests still in flight fail with ECONNABORTED and the open
// files then fail with ENOTCONN.
func (f *FS) Unmount() error {
	f.unmountOnce.Do(func() { f.unmountErr = f.unmount() })
	return f.unmountErr
}

func (f *FS) unmount() error {
	close(f.stop)
	err := unix.Unmount(f.mountpoint, 0)
	if errors.Is(err, unix.EBUSY) {
		// MNT_FORCE makes the kernel abort the FUSE connection
		// (fuse_umount_begin), which ends the server loops and
		// fails the open files; MNT_DETACH then removes the
		// mount although it is still in use.
		err = unix.Unmount(f.mountpoint, unix.MNT_FORCE|unix.MNT_DETACH)
	}
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point any more: someone unmounted it from
		// outside. The server stops by itself in that case.
		err = nil
	}
	if err != nil {
		return fmt.Errorf("slowfs: unmount %s: %w", f.mountpoint, err)
	}
	select {
	case <-f.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("slowfs: unmount %s: server still running after %v", f.mountpoint, stopTimeout)
	}
}

// wait sleeps d, unless the request is interrupted (the caller was killed)
// or the file system is being unmounted. It reports EINTR for an
// interrupted request and 0 otherwise.
func (f *FS) wait(ctx context.Context, d time.Duration) syscall.Errno {
	if d <= 0 {
		return 0
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-f.stop:
		return 0
	case <-ctx.Done():
		return syscall.EINTR
	}
}
