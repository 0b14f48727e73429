package raftnode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
)

// The Raft log stores a node can keep its log in (Config.LogStore, flag
// -raft-log-store). A data dir keeps the one it was first started with.
const (
	// LogStoreBolt is raft-boltdb over bbolt: the log and the stable store
	// in one file, raft.db. The default.
	LogStoreBolt = "bolt"
	// LogStoreWAL is hashicorp/raft-wal: the log in segment files under
	// wal/, appended with one fsync each; the stable store (term, vote) in
	// the WAL's own metadata file, wal/wal-meta.db.
	LogStoreWAL = "wal"
)

// File names inside the data dir, beside those of node.go.
const (
	logStoreFile = "log-store" // the log store this data dir was started with
	walDir       = "wal"       // LogStoreWAL's segments and wal-meta.db
)

// lockTimeout is how long a start waits for another process to let go of
// the data dir's log store before it gives up.
const lockTimeout = 5 * time.Second

// ErrLogStoreMismatch is wrapped by Open when the data dir was started with
// another log store than Config.LogStore asks for. The node must not start:
// the store it asks for holds none of this node's log, term or vote.
var ErrLogStoreMismatch = errors.New("the data dir holds another log store")

type logStoreMismatchError struct{ dir, recorded, want string }

func (e *logStoreMismatchError) Error() string {
	return fmt.Sprintf("data dir %s holds a %s Raft log (%s says so), not %s: start the node with -raft-log-store %s, "+
		"or change its store by replacing it: remove the node from the cluster (discoverd members remove -id ID), "+
		"stop it, move its data dir aside and start it with an empty one, -raft-log-store %s and -join: it catches up from its peers "+
		"(docs/operations.md, \"Change a node's log store\")",
		e.dir, e.recorded, logStoreFile, e.want, e.recorded, e.want)
}

func (e *logStoreMismatchError) Unwrap() error { return ErrLogStoreMismatch }

// validLogStore reports whether s names a log store ("" included: the one
// the data dir records).
func validLogStore(s string) bool { return s == "" || s == LogStoreBolt || s == LogStoreWAL }

// checkLogStore returns the log store of the data dir dir, recording want
// in a data dir that holds no log yet, and refuses a want that differs from
// the one the data dir holds. A data dir from before the record (raft.db
// and no log-store file) holds bolt. want "" takes what the data dir holds
// (bolt for a new one).
func checkLogStore(dir, want string) (string, error) {
	p := filepath.Join(dir, logStoreFile)
	b, err := os.ReadFile(p)
	var recorded string
	switch {
	case err == nil:
		recorded = strings.TrimSpace(string(b))
		if recorded != LogStoreBolt && recorded != LogStoreWAL {
			return "", fmt.Errorf("%s holds %q: want %s or %s", p, recorded, LogStoreBolt, LogStoreWAL)
		}
	case errors.Is(err, os.ErrNotExist):
		// No record: a new data dir, or one from before the record (bolt
		// was the only store then), or a record lost. Recorded below,
		// once the start is not refused.
		switch {
		case exists(filepath.Join(dir, raftDBFile)):
			recorded = LogStoreBolt
		case exists(filepath.Join(dir, walDir, metadb.FileName)):
			recorded = LogStoreWAL
		case want != "":
			recorded = want
		default:
			recorded = LogStoreBolt
		}
	default:
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	if want != "" && want != recorded {
		return "", &logStoreMismatchError{dir: dir, recorded: recorded, want: want}
	}
	if err != nil { // no record yet
		if err := writeFileSynced(p, []byte(recorded+"\n")); err != nil {
			return "", fmt.Errorf("record the log store: %w", err)
		}
	}
	return recorded, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeFileSynced writes a small file whole or not at all: a temporary
// file, synced, renamed into place, the directory synced.
func writeFileSynced(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// rawStore is a log store with its stable store, as opened: raft-boltdb's
// BoltStore or a walStore.
type rawStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// openBolt opens raft.db: bbolt with the hashmap freelist and no freelist
// sync. The array freelist degrades badly after write bursts (a root cause
// of a long Consul outage), and syncing the freelist only slows every
// commit.
func openBolt(dataDir string) (rawStore, error) {
	path := filepath.Join(dataDir, raftDBFile)
	var bolt *raftboltdb.BoltStore
	err := guard(func() (err error) {
		bolt, err = raftboltdb.New(raftboltdb.Options{
			Path: path,
			BoltOptions: &bbolt.Options{
				Timeout:        lockTimeout,
				FreelistType:   bbolt.FreelistMapType,
				NoFreelistSync: true,
			},
		})
		return err
	})
	switch {
	case errors.Is(err, bbolt.ErrTimeout):
		return nil, fmt.Errorf("open raft log %s: another discoverd holds it (is one running on this data dir?): %w", path, err)
	case err != nil:
		return nil, damaged(dataDir, raftDBFile, err)
	}
	return bolt, nil
}

// walStore is raft-wal's WAL with what it leaves open: its metadata
// database (WAL.Close closes the segments only, so a node reopened in the
// same process would wait for its own lock) and the lock on its directory.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
	lock *os.File
}

// Close closes the WAL, then its metadata database, then lets go of the
// directory.
func (s *walStore) Close() error {
	err := s.WAL.Close()
	if e := s.meta.Close(); err == nil {
		err = e
	}
	if e := s.lock.Close(); err == nil {
		err = e
	}
	return err
}

// openWAL opens (or creates) the WAL in <dataDir>/wal. The directory is
// locked first: raft-wal opens its metadata database without a timeout,
// so a second process on the data dir would otherwise wait forever.
func openWAL(dataDir string, log hclog.Logger) (rawStore, error) {
	return openWALSized(dataDir, log, 0)
}

// openWALSized is openWAL with segments of segmentSize bytes (0: raft-wal's
// default, 64 MiB); tests make them small to have many.
func openWALSized(dataDir string, log hclog.Logger, segmentSize int) (rawStore, error) {
	dir := filepath.Join(dataDir, walDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	meta := &metadb.BoltMetaDB{}
	var w *wal.WAL
	err = guard(func() (err error) {
		// WithSegmentSize(0) keeps raft-wal's default.
		w, err = wal.Open(dir, wal.WithMetaStore(meta), wal.WithLogger(log), wal.WithSegmentSize(segmentSize))
		return err
	})
	if err != nil {
		_ = meta.Close()
		_ = lock.Close()
		return nil, damaged(dataDir, walDir, err)
	}
	return &walStore{WAL: w, meta: meta, lock: lock}, nil
}

// lockDir takes an exclusive lock on dir, waiting up to lockTimeout for
// another process to let go of it. Closing the file releases it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("open raft log %s: another discoverd holds it (is one running on this data dir?)", dir)
			}
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storeFile is the name, in the data dir, of the file or directory that
// holds the log store: what a damaged-data-dir error names.
func storeFile(store string) string {
	if store == LogStoreWAL {
		return walDir
	}
	return raftDBFile
}
