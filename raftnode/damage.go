package raftnode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/hashicorp/raft"
)

// ErrDataDirDamaged is wrapped by Open and Start when the data dir cannot
// be read back: a corrupted or truncated raft.db or WAL, a damaged
// snapshot, or a log that no snapshot joins up with. The node must not start on it.
var ErrDataDirDamaged = errors.New("data dir is damaged")

// damagedError is the error of a damaged data dir: one line, naming the
// file and what to do.
type damagedError struct {
	dir, file string
	cause     error
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("data dir %s is damaged: %s: %s; move the data dir aside and start the node again with an empty one: "+
		"it catches up from its peers (a lone node, or a majority of nodes with damaged data dirs, cannot: restore from a backup)",
		e.dir, e.file, oneLine(e.cause))
}

func (e *damagedError) Unwrap() []error { return []error{ErrDataDirDamaged, e.cause} }

func damaged(dataDir, file string, cause error) error {
	return &damagedError{dir: dataDir, file: file, cause: cause}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// guard runs f, turning a panic into an error — also one from reading
// memory the file behind it no longer has (a truncated raft.db is mapped
// into memory: reading past its end is a fault, which SetPanicOnFault makes
// a panic of this goroutine). bbolt and raft-boltdb panic on pages they
// cannot make sense of; at start that means a damaged file, not a bug.
func guard(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading it failed (the file is shorter than what it holds says, or garbled): %v", r)
		}
	}()
	return f()
}

// verifyLog reads back every log entry and the stable store's keys, so that
// a damaged raft.db (or WAL) stops the node now, with a clear error, rather
// than crashing it later in the middle of replication. An entry that is
// missing from raft.db is not damage by itself: a restored backup leaves a
// hole in the log at the index of its snapshot (hashicorp/raft's user
// restore, on the leader and on every follower that installs it;
// backup.go). verifyLog returns the highest missing index, and
// verifySnapshots checks that a snapshot covers it. A WAL never has a hole
// (it takes no gap, and raft deletes its whole log after a restore): an
// entry missing from it is damage.
func verifyLog(store rawStore) (missing uint64, err error) {
	monotonic := failStopStore{rawStore: store}.IsMonotonic()
	first, err := store.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("first index: %w", err)
	}
	last, err := store.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("last index: %w", err)
	}
	var l raft.Log
	for i := first; i != 0 && i <= last; i++ {
		err := store.GetLog(i, &l)
		switch {
		case errors.Is(err, raft.ErrLogNotFound) && monotonic:
			return 0, fmt.Errorf("log entry %d of %d–%d is missing", i, first, last)
		case errors.Is(err, raft.ErrLogNotFound):
			missing = i
		case err != nil:
			return 0, fmt.Errorf("log entry %d of %d–%d: %w", i, first, last, err)
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		if _, err := store.GetUint64([]byte(k)); err != nil && err.Error() != "not found" {
			return 0, fmt.Errorf("%s: %w", k, err)
		}
	}
	return missing, nil
}

// verifySnapshots checks that every snapshot in dir is listed by the store
// (a snapshot whose meta.json cannot be read would be skipped in silence)
// and that the log joins up with the newest one: a log that starts after
// index 1 needs a snapshot of what came before it, and so does an entry
// missing from it (missing, from verifyLog).
func verifySnapshots(snaps raft.SnapshotStore, dir string, store raft.LogStore, storeFile string, missing uint64) (string, error) {
	metas, err := snaps.List()
	if err != nil {
		return "snapshots", err
	}
	listed := map[string]bool{}
	var newest uint64
	for _, m := range metas {
		listed[m.ID] = true
		newest = max(newest, m.Index)
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "snapshots", err
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") && !listed[e.Name()] {
			return filepath.Join("snapshots", filepath.Base(dir), e.Name(), "meta.json"), errors.New("the snapshot's metadata cannot be read")
		}
	}
	first, err := store.FirstIndex()
	if err != nil {
		return storeFile, err
	}
	if first > 1 && newest+1 < first {
		return "snapshots", fmt.Errorf("the log starts at index %d, and no snapshot holds what came before it (newest snapshot: index %d)", first, newest)
	}
	if missing > newest {
		return storeFile, fmt.Errorf("log entry %d is missing, and no snapshot holds it (newest snapshot: index %d)", missing, newest)
	}
	return "", nil
}
