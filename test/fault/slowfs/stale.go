//go:build linux

package slowfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountEntry is one line of /proc/mounts.
type mountEntry struct {
	Source, Target, FsType string
}

// CleanStale removes every slowfs mount at or under the directory prefix,
// as found in /proc/mounts: mounts left behind by a run that crashed before
// it could unmount (their server is gone, and any access fails with ENOTCONN)
// or by one still running. Each is aborted and detached lazily, deepest
// first. It returns the mount points it removed.
func CleanStale(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("slowfs: clean stale mounts: empty prefix")
	}
	prefix, err := filepath.Abs(prefix)
	if err != nil {
		return nil, fmt.Errorf("slowfs: clean stale mounts: %w", err)
	}
	mounts, err := readMounts()
	if err != nil {
		return nil, fmt.Errorf("slowfs: clean stale mounts: %w", err)
	}
	var targets []string
	for _, m := range mounts {
		if isSlowfs(m) && under(m.Target, prefix) {
			targets = append(targets, m.Target)
		}
	}
	// Deepest first, so that a mount inside another goes before it.
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var removed []string
	var errs []error
	for _, t := range targets {
		err := unix.Unmount(t, unix.MNT_FORCE|unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
			continue
		}
		removed = append(removed, t)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("slowfs: clean stale mounts: %w", err)
	}
	return removed, nil
}

// Mounted reports whether a slowfs mount is at dir (per /proc/mounts).
func Mounted(dir string) (bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	mounts, err := readMounts()
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if isSlowfs(m) && m.Target == dir {
			return true, nil
		}
	}
	return false, nil
}

func isSlowfs(m mountEntry) bool {
	return m.FsType == FsType || (strings.HasPrefix(m.FsType, "fuse") && m.Source == FsName)
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMounts(f)
}

// parseMounts reads the fstab-like format of /proc/mounts, in which space,
// tab, newline and backslash in a field are written as octal escapes.
func parseMounts(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		out = append(out, mountEntry{
			Source: unescapeMountField(fields[0]),
			Target: unescapeMountField(fields[1]),
			FsType: unescapeMountField(fields[2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// unescapeMountField turns the kernel's \ooo escapes back into bytes.
func unescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
