//go:build linux

package slowfs

import (
	"bufio"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// skipEnv, set to "skip", turns "FUSE is unavailable" from a failure into a
// skip, for machines known to lack it.
const skipEnv = "DISCOVERD_FAULT_FUSE"

func requireFUSE(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv(skipEnv) == "skip" {
			t.Skipf("%v (%s=skip)", err, skipEnv)
		}
		t.Fatalf("%v (set %s=skip to skip the FUSE tests)", err, skipEnv)
	}
}

// mount mounts a fresh backing dir and unmounts it in cleanup, checking that
// the mount is gone.
func mount(t *testing.T) *FS {
	t.Helper()
	requireFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if m, err := Mounted(mnt); err != nil || m {
			t.Errorf("after unmount: mounted %v, err %v", m, err)
		}
	})
	return f
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// timed returns how long fn took and its error.
func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

// openFile creates name on the mount with some data in it.
func openFile(t *testing.T, f *FS, name string) *os.File {
	t.Helper()
	fh, err := os.OpenFile(filepath.Join(f.Mountpoint(), name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	if _, err := fh.Write([]byte("some data\n")); err != nil {
		t.Fatal(err)
	}
	return fh
}

func fdatasync(fh *os.File) error { return syscall.Fdatasync(int(fh.Fd())) }

func TestSlowfs_Available(t *testing.T) {
	requireFUSE(t)
}

func TestSlowfs_PassThrough(t *testing.T) {
	f := mount(t)
	mnt, back := f.Mountpoint(), f.Backing()

	if err := os.MkdirAll(filepath.Join(mnt, "snapshots", "1-2-3.tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("raft log entry\n", 20000)) // 300 kB: several write requests
	if err := os.WriteFile(filepath.Join(mnt, "snapshots", "1-2-3.tmp", "state.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "snapshots", "1-2-3.tmp"), filepath.Join(mnt, "snapshots", "1-2-3")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(back, "snapshots", "1-2-3", "state.bin"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("backing file: %d bytes, err %v; want %d bytes", len(got), err, len(data))
	}
	got, err = os.ReadFile(filepath.Join(mnt, "snapshots", "1-2-3", "state.bin"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("read back through the mount: %d bytes, err %v; want %d bytes", len(got), err, len(data))
	}
	// A file made in the backing dir shows through the mount.
	if err := os.WriteFile(filepath.Join(back, "from-backing"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "from-backing")); err != nil || string(got) != "x" {
		t.Fatalf("backing file through the mount: %q, %v", got, err)
	}
	// Every write went through the server (no FUSE passthrough).
	if s := f.Stats(); s.WriteBytes != uint64(len(data)) || s.Writes < 3 {
		t.Fatalf("stats %+v: want %d bytes in at least 3 writes", s, len(data))
	}
}

func TestSlowfs_FsyncDelay(t *testing.T) {
	f := mount(t)
	fh := openFile(t, f, "raft.db")
	dir, err := os.Open(f.Mountpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	const delay = 300 * time.Millisecond
	f.SetFsyncDelay(delay)
	for _, c := range []struct {
		name string
		sync func() error
	}{
		{"fsync", fh.Sync},
		{"fdatasync", func() error { return fdatasync(fh) }},
		{"directory fsync", dir.Sync},
	} {
		took, err := timed(c.sync)
		t.Logf("%s with delay %v: %v", c.name, delay, took)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if took < delay {
			t.Fatalf("%s took %v, want at least %v", c.name, took, delay)
		}
	}

	f.SetFsyncDelay(0)
	took, err := timed(fh.Sync)
	t.Logf("fsync without delay: %v", took)
	if err != nil {
		t.Fatal(err)
	}
	if took >= delay {
		t.Fatalf("fsync took %v after the delay was cleared", took)
	}
}

func TestSlowfs_FsyncError(t *testing.T) {
	f := mount(t)
	fh := openFile(t, f, "raft.db")

	f.SetFsyncError(true)
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync with error on: %v, want EIO", err)
	}
	if err := fdatasync(fh); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fdatasync with error on: %v, want EIO", err)
	}
	if s := f.Stats(); s.FsyncErrors != 2 || s.InjectedErrors() != 2 {
		t.Fatalf("stats %+v: want 2 fsync errors", s)
	}

	f.SetFsyncError(false)
	if err := fh.Sync(); err != nil {
		t.Fatalf("fsync after the error was cleared: %v", err)
	}
	if err := fdatasync(fh); err != nil {
		t.Fatalf("fdatasync after the error was cleared: %v", err)
	}
	if s := f.Stats(); s.FsyncErrors != 2 || s.Fsyncs != 4 {
		t.Fatalf("stats %+v: want 4 fsyncs, 2 failed", s)
	}
}

func TestSlowfs_WriteFaults(t *testing.T) {
	f := mount(t)
	fh := openFile(t, f, "raft.db")

	const delay = 200 * time.Millisecond
	f.SetWriteDelay(delay)
	took, err := timed(func() error { _, err := fh.Write([]byte("slow")); return err })
	t.Logf("write with delay %v: %v", delay, took)
	if err != nil || took < delay {
		t.Fatalf("write with delay: took %v, err %v; want at least %v", took, err, delay)
	}
	f.SetWriteDelay(0)
	if took, err := timed(func() error { _, err := fh.Write([]byte("fast")); return err }); err != nil || took >= delay {
		t.Fatalf("write after the delay was cleared: took %v, err %v", took, err)
	}

	f.SetWriteError(true)
	if _, err := fh.Write([]byte("lost")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write with error on: %v, want EIO", err)
	}
	f.SetWriteError(false)
	if _, err := fh.Write([]byte("kept")); err != nil {
		t.Fatalf("write after the error was cleared: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(f.Backing(), "raft.db"))
	if err != nil || string(got) != "some data\nslowfastkept" {
		t.Fatalf("backing file %q, %v", got, err)
	}
	if s := f.Stats(); s.WriteErrors != 1 || s.FsyncErrors != 0 {
		t.Fatalf("stats %+v: want 1 write error", s)
	}
}

func TestSlowfs_Stats(t *testing.T) {
	f := mount(t)
	if s := f.Stats(); s != (Stats{}) {
		t.Fatalf("fresh mount stats %+v", s)
	}
	fh := openFile(t, f, "a") // one write of 10 bytes
	for range 2 {
		if _, err := fh.Write([]byte("12345")); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	f.SetFsyncError(true)
	if err := fdatasync(fh); err == nil {
		t.Fatal("fdatasync with error on succeeded")
	}
	f.SetFsyncError(false)
	want := Stats{Fsyncs: 2, Writes: 3, WriteBytes: 20, FsyncErrors: 1}
	if s := f.Stats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
}

func TestSlowfs_Bbolt(t *testing.T) {
	f := mount(t)
	db := filepath.Join(f.Mountpoint(), "raft.db")

	// 200 values of 2 KiB in 200 synced commits grow the file well past
	// bbolt's first mmap, so it remaps on the FUSE file several times.
	took, _ := timed(func() error {
		res := runBbolt(t, bboltEnv{db: db, fill: 200, puts: []string{"term=7", "vote=node-2"}})
		if res.OpenErr != "" || len(res.PutErrs) != 0 {
			t.Fatalf("bbolt writer: %+v", res)
		}
		return nil
	})
	s := f.Stats()
	t.Logf("bbolt: 202 synced commits in %v (child process included); stats %+v", took, s)
	if s.Fsyncs < 202 {
		t.Fatalf("stats %+v: bbolt's fdatasyncs did not reach the server", s)
	}
	if st, err := os.Stat(filepath.Join(f.Backing(), "raft.db")); err != nil || st.Size() < 400<<10 {
		t.Fatalf("backing raft.db: %v, %v", st, err)
	}

	res := runBbolt(t, bboltEnv{db: db, gets: []string{"term", "vote", "fill-00199", "missing"}})
	if res.OpenErr != "" || res.GetErr != "" {
		t.Fatalf("bbolt reader: %+v", res)
	}
	want := map[string]string{
		"term":       "7",
		"vote":       "node-2",
		"fill-00199": strings.Repeat("r", 2048),
	}
	if !maps.Equal(res.Got, want) {
		t.Fatalf("read back keys %v, want %v", slices.Sorted(maps.Keys(res.Got)), slices.Sorted(maps.Keys(want)))
	}
}

func TestSlowfs_BboltFsyncError(t *testing.T) {
	f := mount(t)
	db := filepath.Join(f.Mountpoint(), "raft.db")
	if res := runBbolt(t, bboltEnv{db: db, puts: []string{"before=1"}}); res.OpenErr != "" || len(res.PutErrs) != 0 {
		t.Fatalf("bbolt writer: %+v", res)
	}

	f.SetFsyncError(true)
	res := runBbolt(t, bboltEnv{db: db, puts: []string{"during=2"}})
	f.SetFsyncError(false)
	t.Logf("commit with fsync errors: %+v", res)
	if res.OpenErr != "" {
		t.Fatalf("bbolt open/close with fsync errors: %s", res.OpenErr)
	}
	if !strings.Contains(res.PutErrs["during"], syscall.EIO.Error()) {
		t.Fatalf("commit with fsync errors: %q, want an %q error", res.PutErrs["during"], syscall.EIO.Error())
	}
	if f.Stats().FsyncErrors == 0 {
		t.Fatal("no injected fsync error counted")
	}

	// bbolt writes the meta page only after the data pages were synced, so
	// a commit whose fdatasync failed is not in the file: the earlier
	// commit is, and the database goes on working.
	res = runBbolt(t, bboltEnv{db: db, puts: []string{"after=3"}, gets: []string{"before", "during", "after"}})
	if res.OpenErr != "" || len(res.PutErrs) != 0 || res.GetErr != "" {
		t.Fatalf("bbolt after the error was cleared: %+v", res)
	}
	if want := map[string]string{"before": "1", "after": "3"}; !maps.Equal(res.Got, want) {
		t.Fatalf("after the failed commit: got %v, want %v", res.Got, want)
	}
}

func TestSlowfs_UnmountBusy(t *testing.T) {
	requireFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Create(filepath.Join(mnt, "raft.db"))
	if err != nil {
		f.Unmount()
		t.Fatal(err)
	}
	defer fh.Close()

	took, err := timed(f.Unmount)
	t.Logf("unmount with an open file: %v", took)
	if err != nil {
		t.Fatalf("unmount with an open file: %v", err)
	}
	if m, err := Mounted(mnt); err != nil || m {
		t.Fatalf("after unmount: mounted %v, err %v", m, err)
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("server still running after Unmount returned")
	}
	if _, err := fh.Write([]byte("x")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("write to a file open across the unmount: %v, want ENOTCONN", err)
	}
	if err := f.Unmount(); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
}

func TestSlowfs_UnmountEndsDelays(t *testing.T) {
	f := mount(t)
	fh := openFile(t, f, "raft.db")
	f.SetFsyncDelay(time.Hour)
	synced := make(chan error, 1)
	go func() { synced <- fh.Sync() }()
	// Wait until the fsync is in the server, waiting out its delay.
	waitFor(t, "the fsync to reach the server", func() bool { return f.Stats().Fsyncs > 0 })
	took, err := timed(f.Unmount)
	t.Logf("unmount during an hour-long fsync delay: %v", took)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-synced:
		t.Logf("the delayed fsync returned %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the delayed fsync did not return after Unmount")
	}
}

func TestSlowfs_CleanStale(t *testing.T) {
	requireFUSE(t)
	root := t.TempDir()
	backing, mnt, other := filepath.Join(root, "backing"), filepath.Join(root, "nodes", "n1"), filepath.Join(root, "no")
	for _, d := range []string{backing, mnt, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// A child mounts and is killed: its mount stays, with no server.
	ctx, cancel := context.WithTimeout(context.Background(), helperLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = childEnv(helperEnv+"=mount", helperBack+"="+backing, helperMnt+"="+mnt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		CleanStale(root)
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "mounted") {
		t.Fatalf("mount child said %q, %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if m, err := Mounted(mnt); err != nil || !m {
		t.Fatalf("after the server died: mounted %v, err %v; want a stale mount", m, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "x")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat on the stale mount: %v, want ENOTCONN", err)
	}

	// A prefix that does not hold it leaves it alone ("nodes" is a
	// prefix of "nodes/n1" as a path, "node" is not).
	for _, p := range []string{other, filepath.Join(root, "node")} {
		if removed, err := CleanStale(p); err != nil || len(removed) != 0 {
			t.Fatalf("CleanStale(%s) = %v, %v; want nothing removed", p, removed, err)
		}
	}
	removed, err := CleanStale(filepath.Join(root, "nodes"))
	if err != nil || !slices.Equal(removed, []string{mnt}) {
		t.Fatalf("CleanStale = %v, %v; want [%s]", removed, err, mnt)
	}
	if m, err := Mounted(mnt); err != nil || m {
		t.Fatalf("after CleanStale: mounted %v, err %v", m, err)
	}
	if _, err := CleanStale(""); err == nil {
		t.Fatal("CleanStale with an empty prefix succeeded")
	}
}

func TestSlowfs_ParseMounts(t *testing.T) {
	in := `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
discoverd-slowfs /tmp/a\040b/mnt fuse.discoverd-slowfs rw,nosuid,nodev,relatime,user_id=0,group_id=0 0 0
/dev/fuse /tmp/other fuse rw 0 0
discoverd-slowfs /tmp/back\134slash fuse rw 0 0
`
	got, err := parseMounts(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		i      int
		target string
		slowfs bool
	}{
		{0, "/sys", false},
		{1, "/tmp/a b/mnt", true},
		{2, "/tmp/other", false},
		{3, `/tmp/back\slash`, true}, // an older FsType-less mount
	} {
		if got[c.i].Target != c.target || isSlowfs(got[c.i]) != c.slowfs {
			t.Errorf("line %d: %+v (slowfs %v), want target %q slowfs %v", c.i, got[c.i], isSlowfs(got[c.i]), c.target, c.slowfs)
		}
	}
	for _, c := range []struct {
		path, dir string
		want      bool
	}{
		{"/tmp/a/mnt", "/tmp/a", true},
		{"/tmp/a", "/tmp/a", true},
		{"/tmp/ab", "/tmp/a", false},
		{"/tmp/a", "/", true},
	} {
		if got := under(c.path, c.dir); got != c.want {
			t.Errorf("under(%q, %q) = %v", c.path, c.dir, got)
		}
	}
}
