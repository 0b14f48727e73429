//go:build linux

package slowfs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The tests run bbolt (and, for CleanStale, a second server) in child
// processes of the test binary: the process that serves a FUSE mount must
// not mmap files on it (see the package comment), and a discoverd node is a
// separate process too. TestMain turns the test binary into such a child
// when helperEnv is set.

const (
	helperEnv   = "SLOWFS_TEST_HELPER" // "bbolt" or "mount"
	helperDB    = "SLOWFS_TEST_DB"     // bbolt: database path
	helperPuts  = "SLOWFS_TEST_PUTS"   // bbolt: "key=value,..." each in its own synced transaction
	helperFill  = "SLOWFS_TEST_FILL"   // bbolt: number of 2 KiB values to add first, one transaction each
	helperGets  = "SLOWFS_TEST_GETS"   // bbolt: "key,..." to read after reopening
	helperBack  = "SLOWFS_TEST_BACKING"
	helperMnt   = "SLOWFS_TEST_MNT"
	bucketName  = "slowfs"
	helperLimit = 15 * time.Second // a child that hangs fails the test instead
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
	case "bbolt":
		os.Exit(bboltHelper())
	case "mount":
		os.Exit(mountHelper())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
	// Mounts left by an earlier run of these tests that crashed: their
	// directories are named after the tests (t.TempDir).
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "TestSlowfs_*"))
	for _, d := range dirs {
		if removed, err := CleanStale(d); len(removed) > 0 || err != nil {
			fmt.Fprintf(os.Stderr, "slowfs: removed stale mounts %v (err %v)\n", removed, err)
		}
	}
	os.Exit(m.Run())
}

// bboltResult is what the bbolt child prints as JSON.
type bboltResult struct {
	OpenErr string            `json:"open_err,omitempty"`
	PutErrs map[string]string `json:"put_errs,omitempty"` // key → commit error
	Got     map[string]string `json:"got,omitempty"`      // key → value, absent keys left out
	GetErr  string            `json:"get_err,omitempty"`
}

// bboltHelper opens the database with bbolt's defaults (mmap, fdatasync on
// every commit, as raft-boltdb uses it), does the puts, closes, reopens and
// does the gets.
func bboltHelper() int {
	path := os.Getenv(helperDB)
	var res bboltResult
	out := func() int {
		json.NewEncoder(os.Stdout).Encode(res)
		return 0
	}
	opts := &bolt.Options{Timeout: 5 * time.Second}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		res.OpenErr = err.Error()
		return out()
	}
	fill, _ := strconv.Atoi(os.Getenv(helperFill))
	for i := 0; i < fill; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte(bucketName))
			if err != nil {
				return err
			}
			return b.Put([]byte(fmt.Sprintf("fill-%05d", i)), bytes.Repeat([]byte{'a' + byte(i%26)}, 2048))
		})
		if err != nil {
			res.PutErrs = map[string]string{"fill": err.Error()}
			db.Close()
			return out()
		}
	}
	for _, kv := range splitList(os.Getenv(helperPuts)) {
		k, v, _ := strings.Cut(kv, "=")
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte(bucketName))
			if err != nil {
				return err
			}
			return b.Put([]byte(k), []byte(v))
		})
		if err != nil {
			if res.PutErrs == nil {
				res.PutErrs = map[string]string{}
			}
			res.PutErrs[k] = err.Error()
		}
	}
	if err := db.Close(); err != nil {
		res.OpenErr = "close: " + err.Error()
		return out()
	}
	gets := splitList(os.Getenv(helperGets))
	if len(gets) == 0 {
		return out()
	}
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		res.OpenErr = "reopen: " + err.Error()
		return out()
	}
	defer db.Close()
	res.Got = map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketName))
		if b == nil {
			return nil
		}
		for _, k := range gets {
			if v := b.Get([]byte(k)); v != nil {
				res.Got[k] = string(v)
			}
		}
		return nil
	})
	if err != nil {
		res.GetErr = err.Error()
	}
	return out()
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// mountHelper mounts and then waits to be killed: a server that dies
// without unmounting, as in a crashed run.
func mountHelper() int {
	f, err := Mount(os.Getenv(helperBack), os.Getenv(helperMnt))
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("mounted", f.Mountpoint())
	<-f.Done()
	return 0
}

// childEnv is the environment of a child process of the test binary.
// GORACE's atexit_sleep_ms=0 spares each child of a -race build the race
// detector's one-second sleep at exit.
func childEnv(vars ...string) []string {
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append(append(os.Environ(), "GORACE="+gorace), vars...)
}

// bboltEnv describes one run of the bbolt child.
type bboltEnv struct {
	db   string
	fill int
	puts []string // "key=value"
	gets []string
}

// runBbolt runs the bbolt child and returns what it printed.
func runBbolt(t *testing.T, e bboltEnv) bboltResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), helperLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = childEnv(
		helperEnv+"=bbolt",
		helperDB+"="+e.db,
		helperFill+"="+strconv.Itoa(e.fill),
		helperPuts+"="+strings.Join(e.puts, ","),
		helperGets+"="+strings.Join(e.gets, ","),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("bbolt child %+v: %v", e, time.Since(start))
	if err != nil {
		t.Fatalf("bbolt child: %v (ctx %v)\nstdout: %s\nstderr: %s", err, ctx.Err(), stdout.String(), stderr.String())
	}
	var res bboltResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("bbolt child output %q: %v\nstderr: %s", stdout.String(), err, stderr.String())
	}
	return res
}
