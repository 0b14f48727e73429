package raftnode

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestRaftnode_WALAcrossSegments: the WAL as the node drives it, with
// segments small enough to have many — appends that seal segments, a
// compaction (head truncation) that deletes the oldest, a tail truncation,
// the term and vote — all read back by the start-up check after the store
// is closed and opened again in the same process (its metadata database
// and lock let go of).
func TestRaftnode_WALAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	open := func() failStopStore {
		t.Helper()
		raw, err := openWALSized(dir, hclog.NewNullLogger(), 16<<10)
		if err != nil {
			t.Fatal(err)
		}
		return failStopStore{rawStore: raw, fail: func(err error) { t.Errorf("fail-stop: %v", err) }, stats: newAppendStats()}
	}
	data := func(i uint64) []byte { return bytes.Repeat([]byte{byte(i)}, 100+int(i%50)) }
	s := open()
	for i := uint64(1); i <= 1000; i += 10 {
		var batch []*raft.Log
		for j := i; j < i+10; j++ {
			batch = append(batch, &raft.Log{Index: j, Term: 1 + j/500, Type: raft.LogCommand, Data: data(j)})
		}
		if err := s.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, walDir, "*.wal"))
	if len(segs) < 5 {
		t.Fatalf("%d segments after 1000 entries of ~125 bytes in 16 KiB segments", len(segs))
	}
	if err := s.DeleteRange(1, 600); err != nil { // a compaction
		t.Fatal(err)
	}
	if err := s.DeleteRange(991, 1000); err != nil { // a deposed leader's tail
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	done := make(chan failStopStore)
	go func() { done <- open() }()
	select {
	case s = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reopening the WAL in the same process hangs: its metadata database was not let go of")
	}
	defer s.Close()
	if after, _ := filepath.Glob(filepath.Join(dir, walDir, "*.wal")); len(after) >= len(segs) {
		t.Errorf("%d segments after compacting 600 of 1000 entries, %d before", len(after), len(segs))
	}
	if missing, err := verifyLog(s.rawStore); err != nil || missing != 0 {
		t.Fatalf("verifyLog: missing %d, %v", missing, err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 601 || last != 990 {
		t.Fatalf("log %d–%d, want 601–990", first, last)
	}
	var l raft.Log
	for _, i := range []uint64{601, 777, 990} {
		if err := s.GetLog(i, &l); err != nil || l.Index != i || !bytes.Equal(l.Data, data(i)) {
			t.Errorf("entry %d: %v, index %d, %d bytes", i, err, l.Index, len(l.Data))
		}
	}
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
		t.Errorf("term %d, %v", term, err)
	}
	if vote, err := s.Get([]byte("LastVoteCand")); err != nil || string(vote) != "n2" {
		t.Errorf("vote %q, %v", vote, err)
	}
	// Appending goes on after the tail truncation.
	if err := s.StoreLog(&raft.Log{Index: 991, Term: 3, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := s.rawStore.StoreLog(&raft.Log{Index: 993, Term: 3}); err == nil {
		t.Error("a gap in the WAL was taken")
	} else {
		t.Logf("a gap is refused (and would stop the node): %v", err)
	}
}

// TestRaftnode_WALTailTruncationInsideTheOpenSegment: a follower that
// clears a log suffix inside the segment being written ("clearing log
// suffix", after a leader change), then restarts, must read its log back.
// raft-wal before v0.4.1 marked that segment sealed without writing its
// index block, and the node refused to start: "sealed segment has no index
// block" (raft-wal issue 31; the bench's failover of discoverd-wal found
// it: a killed node that had cleared a suffix could not come back).
func TestRaftnode_WALTailTruncationInsideTheOpenSegment(t *testing.T) {
	dir := t.TempDir()
	open := func() failStopStore {
		t.Helper()
		raw, err := openWAL(dir, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		return failStopStore{rawStore: raw, fail: func(err error) { t.Errorf("fail-stop: %v", err) }, stats: newAppendStats()}
	}
	s := open()
	for i := uint64(1); i <= 20; i++ {
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(18, 20); err != nil { // the suffix a new leader did not have
		t.Fatal(err)
	}
	for i := uint64(18); i <= 25; i++ { // the new leader's entries
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte{byte(i), 2}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if missing, err := verifyLog(s.rawStore); err != nil || missing != 0 {
		t.Fatalf("the log after a restart: missing %d, %v", missing, err)
	}
	for _, c := range []struct {
		i    uint64
		term uint64
	}{{1, 1}, {17, 1}, {18, 2}, {25, 2}} {
		var l raft.Log
		if err := s.GetLog(c.i, &l); err != nil || l.Term != c.term || l.Data[0] != byte(c.i) {
			t.Errorf("entry %d: %+v, %v; want term %d", c.i, l, err, c.term)
		}
	}
	if last, _ := s.LastIndex(); last != 25 {
		t.Errorf("last index %d, want 25", last)
	}
}
