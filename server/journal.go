package server

// The journal writes a node's applied log entries as JSON lines (flag
// -journal of discoverd server). It is a testing and forensics aid: the fault
// suite reads every node's journal to check that replicas applied the same
// entries and to resolve writes whose outcome a client never learned. The
// line format is test/fault/history.Entry.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/discoverd/discoverd/fsm"
)

// journalWriter implements fsm.Journal over an append-only file. Lines are
// buffered during an applied batch and written with one write per batch, so
// a node killed with SIGKILL loses at most the batch it was applying.
type journalWriter struct {
	f   *os.File
	bw  *bufio.Writer
	enc *json.Encoder
	log *slog.Logger
	err error
}

// openJournal appends to path, creating it if needed.
func openJournal(path string, log *slog.Logger) (*journalWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	return &journalWriter{f: f, bw: bw, enc: json.NewEncoder(bw), log: log}, nil
}

type journalLine struct {
	Index       uint64 `json:"index"`
	Term        uint64 `json:"term"`
	RaftIndex   uint64 `json:"raft_index"`
	Type        string `json:"type"`
	RequestID   string `json:"request_id,omitempty"`
	Name        string `json:"name,omitempty"`
	Addr        string `json:"addr,omitempty"`
	TTLMillis   int64  `json:"ttl_ms,omitempty"`
	ExpireIndex uint64 `json:"expire_index,omitempty"`
	DecidedAt   int64  `json:"decided_at,omitempty"`
	MetaExpect  uint64 `json:"meta_expect,omitempty"` // set-meta, delete-meta: the index expected
	MetaIndex   uint64 `json:"meta_index,omitempty"`  // set-meta, delete-meta: the metadata's index before
	Suspect     bool   `json:"suspect,omitempty"`
	Changed     bool   `json:"changed"`
	Err         string `json:"err,omitempty"`
	At          int64  `json:"at"`
}

// Applied implements fsm.Journal.
func (w *journalWriter) Applied(e fsm.JournalEntry) {
	if w.err != nil {
		return
	}
	l := journalLine{Index: e.Index, Term: e.Term, RaftIndex: e.RaftIndex, Type: "config", RequestID: e.RequestID, Name: e.Name, Addr: e.Addr,
		TTLMillis: e.TTL.Milliseconds(), ExpireIndex: e.ExpireIndex, DecidedAt: e.DecidedAt, MetaExpect: e.MetaExpect, MetaIndex: e.MetaIndex, Suspect: e.Suspect, Changed: e.Changed,
		At: time.Now().UnixNano()}
	if e.Type != 0 {
		l.Type = e.Type.String()
	}
	if e.Err != nil {
		l.Err = e.Err.Error()
	}
	w.fail(w.enc.Encode(&l))
}

// Flush implements fsm.Journal: one write for the batch.
func (w *journalWriter) Flush() {
	if w.err == nil {
		w.fail(w.bw.Flush())
	}
}

func (w *journalWriter) fail(err error) {
	if err != nil && w.err == nil {
		w.err = err
		w.log.Error("journal write failed; journaling stops", "err", err)
	}
}

// Close flushes and closes the file.
func (w *journalWriter) Close() error {
	w.Flush()
	return w.f.Close()
}
