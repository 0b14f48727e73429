package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/snapfile"
)

// bufSink is a raft.SnapshotSink over a buffer.
type bufSink struct{ bytes.Buffer }

func (s *bufSink) Close() error  { return nil }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) ID() string    { return "buf" }

// backupFile writes a backup of an empty state to a file and returns its path.
func backupFile(t *testing.T) string {
	t.Helper()
	snap, err := fsm.New(fsm.Config{}).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var body bufSink
	if err := snap.Persist(&body); err != nil {
		t.Fatal(err)
	}
	h := snapfile.Header{Version: snapfile.Version, Index: 12, Term: 3, Created: time.UnixMilli(1_800_000_000_000),
		Size: uint64(body.Len()), SHA256: sha256.Sum256(body.Bytes())}
	path := filepath.Join(t.TempDir(), "b.snap")
	if err := os.WriteFile(path, append(h.Marshal(), body.Bytes()...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCLI_SnapshotInspect: inspect prints a file's header and what it
// holds, as a table and as JSON, and refuses a damaged file (exit 1) saying
// what is wrong with it.
func TestCLI_SnapshotInspect(t *testing.T) {
	path := backupFile(t)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"snapshot", "inspect", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"raft index    12 (term 3)", "created       2027-01-15T08:00:00Z", "(checked)", "services      0"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("inspect printed\n%s\nwant a line with %q", stdout.String(), want)
		}
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"snapshot", "inspect", path, "-json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("inspect -json: exit %d: %s", code, stderr.String())
	}
	var got jsonSnapshot
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got.RaftIndex != 12 || got.Term != 3 || got.SnapshotVersion != 1 || got.Size != got.BodySize+snapfile.HeaderSize {
		t.Errorf("inspect -json = %+v, %v (%s)", got, err, stdout.String())
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"snapshot", "inspect", path}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "its body is damaged") {
		t.Errorf("inspect of a damaged file: exit %d, %q; want 1 and what is wrong", code, stderr.String())
	}
}
