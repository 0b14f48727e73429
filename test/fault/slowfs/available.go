//go:build linux

package slowfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// ErrUnavailable wraps every reason Available gives.
var ErrUnavailable = errors.New("slowfs: FUSE unavailable")

// Available reports why slowfs cannot be used here (no /dev/fuse, not root,
// a trial mount fails), or nil. The answer is worked out once per process.
func Available() error { return available() }

var available = sync.OnceValue(func() error {
	if err := checkAvailable(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
})

func checkAvailable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root (euid %d): slowfs mounts with mount(2)", os.Geteuid())
	}
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open /dev/fuse: %w", err)
	}
	dev.Close()

	tmp, err := os.MkdirTemp("", "slowfs-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	backing, mnt := filepath.Join(tmp, "backing"), filepath.Join(tmp, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	f, err := Mount(backing, mnt)
	if err != nil {
		return fmt.Errorf("trial mount: %w", err)
	}
	probeErr := probe(mnt)
	if err := f.Unmount(); err != nil {
		return fmt.Errorf("trial unmount: %w", err)
	}
	if probeErr != nil {
		return fmt.Errorf("trial mount: %w", probeErr)
	}
	if _, err := os.Stat(filepath.Join(backing, "probe")); err != nil {
		return fmt.Errorf("trial mount: file written through the mount: %w", err)
	}
	return nil
}

// probe writes and fsyncs a file through the mount.
func probe(mnt string) error {
	fh, err := os.Create(filepath.Join(mnt, "probe"))
	if err != nil {
		return err
	}
	_, werr := fh.Write([]byte("probe"))
	serr := fh.Sync()
	cerr := fh.Close()
	return errors.Join(werr, serr, cerr)
}
