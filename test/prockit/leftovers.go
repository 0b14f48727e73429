package prockit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// pidDir records every process Start starts: a file named after its PID
// holding "<owner pid> <executable>", removed once the owner has reaped it.
// A record whose owner is dead is a leftover of a run that died before its
// cleanups ran (a test timeout's panic, a SIGKILL). A variable so that the
// kit's tests can point it at a directory of their own.
var pidDir = filepath.Join(os.TempDir(), "discoverd-test-pids")

// record writes the pid record of a process just started and returns its
// path ("" if it could not be written: the process then merely goes
// unrecorded). exe is what the process will run (Spec.Exe); if empty, its
// executable now, else path.
func record(pid int, exe, path string) string {
	switch {
	case exe != "":
		if abs, err := filepath.Abs(exe); err == nil {
			exe = abs
		}
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real // as /proc/<pid>/exe will show it
		}
	default:
		exe = path
		if real, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			exe = real
		}
	}
	if err := os.MkdirAll(pidDir, 0o755); err != nil {
		return ""
	}
	file := filepath.Join(pidDir, strconv.Itoa(pid))
	if err := os.WriteFile(file, fmt.Appendf(nil, "%d %s\n", os.Getpid(), exe), 0o644); err != nil {
		return ""
	}
	return file
}

// CleanLeftovers kills the processes recorded by owners that are gone and
// removes their records, then removes the build directories of owners that
// are gone. A process is killed (SIGCONT, should it be paused, then
// SIGKILL) only if its executable is still the recorded one, so a reused
// PID is left alone; a live owner's records and directories (a concurrent
// run) are not touched. Every user of the kit calls it when it starts.
func CleanLeftovers() {
	entries, _ := os.ReadDir(pidDir)
	for _, e := range entries {
		path := filepath.Join(pidDir, e.Name())
		pid, err1 := strconv.Atoi(e.Name())
		data, err2 := os.ReadFile(path)
		owner, exe, ok := strings.Cut(strings.TrimSpace(string(data)), " ")
		ownerPID, err3 := strconv.Atoi(owner)
		if err1 != nil || err2 != nil || err3 != nil || !ok {
			_ = os.Remove(path)
			continue
		}
		if alive(ownerPID) {
			continue
		}
		if now, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil &&
			(now == exe || now == exe+" (deleted)") {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.Remove(path)
	}
	dirs, _ := filepath.Glob(filepath.Join(tmpRoot, buildDirPrefix+"*"))
	for _, d := range dirs {
		owner, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), buildDirPrefix), "-")
		if pid, err := strconv.Atoi(owner); err == nil && !alive(pid) {
			_ = os.RemoveAll(d)
		}
	}
}

// alive reports whether process pid runs. A zombie is dead: an owner killed
// while its own parent was gone stays a zombie for as long as nobody reaps
// it (a sandbox's PID 1 may never do so), and its cleanups will never run.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	state, err := procState(pid)
	return err != nil || (state != 'Z' && state != 'X')
}

// procState returns the state letter of /proc/<pid>/stat (field 3).
func procState(pid int) (byte, error) {
	f, err := StatFields(pid)
	if err != nil {
		return 0, err
	}
	return f[0][0], nil
}

// StatFields returns the fields of /proc/<pid>/stat from the third (the
// state) on: StatFields(pid)[i] is field i+3 of proc(5).
func StatFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) == 0 || f[0] == "" {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return f, nil
}
