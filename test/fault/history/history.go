// Package history holds what a fault-suite run records — client operations,
// watch sessions, leaderships held, the entries each node applied, state
// hashes, the fault timeline and, with ACLs on, every node's tokens — and
// reads and writes it as JSON lines. The checkers
// (test/fault/check) take these types and nothing else, so they can be unit
// tested on hand-made histories.
//
// Times are Unix nanoseconds from the wall clock of the machine running the
// suite and the nodes (all on one machine, so comparable). A node's injected
// fault clock never affects them.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Outcome is what a client knows about an operation.
type Outcome string

const (
	// OK: the operation took effect (writes) or returned this result (reads).
	OK Outcome = "ok"
	// Fail: the operation definitely did not take effect.
	Fail Outcome = "fail"
	// Unknown: it may or may not have taken effect (timeout, connection
	// lost after sending, leadership lost after proposing). The client
	// that got it retires; a new client id continues.
	Unknown Outcome = "unknown"
)

// Op kinds.
const (
	Register   = "register"
	Unregister = "unregister"
	Heartbeat  = "heartbeat"
	List       = "list"  // default (local) read
	CList      = "clist" // consistent read
	Stop       = "stop"  // a TTL client stops heartbeating on purpose (instant)
	// Service metadata (SetMeta, DeleteMeta: compare-and-set on Expect; GetMeta
	// with a consistent read).
	MetaSet    = "meta-set"
	MetaDelete = "meta-delete"
	MetaGet    = "meta-get"
)

// Op is one client operation.
type Op struct {
	ID        int64             `json:"id"`
	Client    string            `json:"client"` // a client id; retired after an unknown outcome
	Kind      string            `json:"kind"`
	Service   string            `json:"service"`
	Addr      string            `json:"addr,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
	TTLMillis int64             `json:"ttl_ms,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Node      string            `json:"node"`   // node id the request was sent to
	Call      int64             `json:"call"`   // invocation
	Return    int64             `json:"return"` // response (or when the client gave up)
	Outcome   Outcome           `json:"outcome"`
	Code      string            `json:"code,omitempty"` // error code, if any
	Err       string            `json:"err,omitempty"`
	Index     uint64            `json:"index,omitempty"`  // write: committed index; read: state index
	Result    []string          `json:"result,omitempty"` // reads: the addresses listed, sorted
	// Metadata ops: the data set or read (text), the index a write expected
	// (0: meta-set only if there is none; meta-delete whatever it is), and
	// the metadata's index a get read or a conflict reported (0: none).
	Data      string `json:"data,omitempty"`
	Expect    uint64 `json:"expect,omitempty"`
	MetaIndex uint64 `json:"meta_index,omitempty"`
}

// Event is one event received on a watch stream.
type Event struct {
	Kind   string `json:"kind"` // up, update, down, current, resync
	Index  uint64 `json:"index"`
	Addr   string `json:"addr,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Deleted, on a meta event: the metadata was deleted (else it was set,
	// and Index is its index).
	Deleted bool  `json:"deleted,omitempty"`
	At      int64 `json:"at"`
}

// WatchSession is one watch stream, from opening to its end. A watcher's
// sessions, in order, make up its whole view of the service.
type WatchSession struct {
	Watcher   string  `json:"watcher"`
	Session   int     `json:"session"` // 0, 1, ... per watcher
	Service   string  `json:"service"`
	Node      string  `json:"node"`
	FromIndex uint64  `json:"from_index"` // 0: started from the current state
	Opened    int64   `json:"opened"`
	Closed    int64   `json:"closed"`
	End       string  `json:"end"`            // why it ended: "resume" (closed on purpose), "error: ...", "final"
	Code      string  `json:"code,omitempty"` // the error code of an "error: ..." end the server sent (e.g. permission_denied)
	Events    []Event `json:"events"`
}

// Entry is one log entry a node applied, from its journal (discoverd server
// -journal). Nodes apply entries again after a restart; a node that
// installed a snapshot has gaps.
type Entry struct {
	Node        string `json:"node"`
	Index       uint64 `json:"index"`
	Term        uint64 `json:"term"`
	RaftIndex   uint64 `json:"raft_index,omitempty"` // the log entry that carried it (a batch entry carries several)
	Type        string `json:"type"`                 // register, unregister, expire, set-meta, delete-meta, suspect, config
	RequestID   string `json:"request_id,omitempty"`
	Name        string `json:"name,omitempty"`
	Addr        string `json:"addr,omitempty"`
	TTLMillis   int64  `json:"ttl_ms,omitempty"`
	ExpireIndex uint64 `json:"expire_index,omitempty"` // expire, suspect: the registration index it names
	DecidedAt   int64  `json:"decided_at,omitempty"`   // expire: when the leader decided it
	MetaExpect  uint64 `json:"meta_expect,omitempty"`  // set-meta, delete-meta: the index the command expected
	MetaIndex   uint64 `json:"meta_index,omitempty"`   // set-meta, delete-meta: the metadata's index before it (0: none)
	Suspect     bool   `json:"suspect,omitempty"`      // suspect: the marker set (the expiry-storm guard holds the expiry)
	Changed     bool   `json:"changed"`
	Err         string `json:"err,omitempty"`
	At          int64  `json:"at"` // when this node applied it
}

// Hash is a node's state hash at an applied index.
type Hash struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
	Hash    string `json:"hash"`
}

// Fault is one injected fault on the timeline.
type Fault struct {
	Name   string   `json:"name"` // e.g. "kill-leader", "partition-halves"
	Nodes  []string `json:"nodes,omitempty"`
	Detail string   `json:"detail,omitempty"`
	Start  int64    `json:"start"`
	End    int64    `json:"end"` // when healed
}

// Holding is one leadership an elector held (client.Elect): from Elect
// returning until the Leadership's Done closed or Resign was called.
type Holding struct {
	Elector      string `json:"elector"` // one Go client, kept across its holdings
	Service      string `json:"service"`
	Addr         string `json:"addr"`
	FencingIndex uint64 `json:"fencing_index"`
	Won          int64  `json:"won"`  // when Elect returned
	Lost         int64  `json:"lost"` // when Done closed (Resign closes it first: when Resign was called); MaxInt64 if the run ended while holding
	End          string `json:"end"`  // why it ended: "lost" (Done closed), "resign", "run-end"
}

// Instance is one instance of a service's final state.
type Instance struct {
	Service string            `json:"service"`
	Addr    string            `json:"addr"`
	Attrs   map[string]string `json:"attrs,omitempty"`
	Index   uint64            `json:"index"`
}

// Run is everything one run recorded.
type Run struct {
	Ops      []Op           `json:"ops"`
	Sessions []WatchSession `json:"sessions"`
	Entries  []Entry        `json:"entries"`
	Hashes   []Hash         `json:"hashes"`
	Faults   []Fault        `json:"faults"`
	Holdings []Holding      `json:"holdings"`
	// Final is the state after healing, read with a consistent list per service.
	Final []Instance `json:"final"`
	// FinalIndex is the index Final was read at.
	FinalIndex uint64 `json:"final_index"`
	// TTL bounds the checkers use (from ttl/DESIGN.md).
	Bounds Bounds `json:"bounds"`
	// ACL is set when the nodes ran with ACLs on (-acl): the workload's
	// token and every node's token list at the end.
	ACL *ACL `json:"acl,omitempty"`
}

// ACL is what a run with ACLs on recorded of its tokens.
type ACL struct {
	// WorkloadToken is the accessor id of the token every workload client
	// presents, and WorkloadRules its rules: nothing in the run revokes or
	// changes it, so it never gets permission_denied for what they allow.
	WorkloadToken string   `json:"workload_token"`
	WorkloadRules []string `json:"workload_rules"`
	// Lists are every node's ACLTokenList answer after the final
	// consistent read, once every node applied the same index.
	Lists []TokenList `json:"lists"`
}

// TokenList is one node's token list (never a secret).
type TokenList struct {
	Node   string  `json:"node"`
	Index  uint64  `json:"index"` // of the last change to the tokens, as the node answered
	Tokens []Token `json:"tokens"`
	Err    string  `json:"err,omitempty"` // the node did not answer
}

// Token is one token of a list, as replicated (what the answering node's
// clock says of its expiry is left out).
type Token struct {
	AccessorID      string   `json:"accessor_id"`
	Description     string   `json:"description,omitempty"`
	Rules           []string `json:"rules,omitempty"`
	ExpiresAtMillis int64    `json:"expires_at_ms,omitempty"`
	CreateIndex     uint64   `json:"create_index"`
	ModifyIndex     uint64   `json:"modify_index"`
}

// Bounds are the promises the TTL checkers hold discoverd to.
type Bounds struct {
	// RemovalNoFailoverNanos: a stopped instance is gone within TTL + this.
	RemovalNoFailoverNanos int64 `json:"removal_no_failover_ns"`
	// RemovalFailoverNanos: across a leader failover, within TTL + this
	// (after the restart, when a majority of the nodes was killed).
	RemovalFailoverNanos int64 `json:"removal_failover_ns"`
	// StormMaxHold is the servers' -storm-max-hold, in TTLs: each time the
	// expiry-storm guard held an instance (marked it suspect), its removal
	// may come this many TTLs later (0: no allowance).
	StormMaxHold float64 `json:"storm_max_hold,omitempty"`
}

// Record is one line of a history file: exactly one field is set.
type Record struct {
	Op      *Op           `json:"op,omitempty"`
	Session *WatchSession `json:"session,omitempty"`
	Entry   *Entry        `json:"entry,omitempty"`
	Hash    *Hash         `json:"hash,omitempty"`
	Fault   *Fault        `json:"fault,omitempty"`
	Holding *Holding      `json:"holding,omitempty"`
	Final   *Instance     `json:"final,omitempty"`
	Meta    *Meta         `json:"meta,omitempty"`
	ACL     *ACL          `json:"acl,omitempty"`
}

// Meta carries the run-wide fields of Run.
type Meta struct {
	FinalIndex uint64 `json:"final_index"`
	Bounds     Bounds `json:"bounds"`
}

// Write writes a run as JSON lines.
func Write(w io.Writer, r *Run) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	put := func(rec Record) error { return enc.Encode(rec) }
	if err := put(Record{Meta: &Meta{FinalIndex: r.FinalIndex, Bounds: r.Bounds}}); err != nil {
		return err
	}
	for i := range r.Faults {
		if err := put(Record{Fault: &r.Faults[i]}); err != nil {
			return err
		}
	}
	for i := range r.Ops {
		if err := put(Record{Op: &r.Ops[i]}); err != nil {
			return err
		}
	}
	for i := range r.Sessions {
		if err := put(Record{Session: &r.Sessions[i]}); err != nil {
			return err
		}
	}
	for i := range r.Entries {
		if err := put(Record{Entry: &r.Entries[i]}); err != nil {
			return err
		}
	}
	for i := range r.Hashes {
		if err := put(Record{Hash: &r.Hashes[i]}); err != nil {
			return err
		}
	}
	for i := range r.Holdings {
		if err := put(Record{Holding: &r.Holdings[i]}); err != nil {
			return err
		}
	}
	for i := range r.Final {
		if err := put(Record{Final: &r.Final[i]}); err != nil {
			return err
		}
	}
	if r.ACL != nil {
		if err := put(Record{ACL: r.ACL}); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Read reads a run written by Write.
func Read(r io.Reader) (*Run, error) {
	run := &Run{}
	dec := json.NewDecoder(bufio.NewReader(r))
	for line := 1; ; line++ {
		var rec Record
		if err := dec.Decode(&rec); err == io.EOF {
			return run, nil
		} else if err != nil {
			return nil, fmt.Errorf("history record %d: %w", line, err)
		}
		switch {
		case rec.Meta != nil:
			run.FinalIndex, run.Bounds = rec.Meta.FinalIndex, rec.Meta.Bounds
		case rec.Op != nil:
			run.Ops = append(run.Ops, *rec.Op)
		case rec.Session != nil:
			run.Sessions = append(run.Sessions, *rec.Session)
		case rec.Entry != nil:
			run.Entries = append(run.Entries, *rec.Entry)
		case rec.Hash != nil:
			run.Hashes = append(run.Hashes, *rec.Hash)
		case rec.Fault != nil:
			run.Faults = append(run.Faults, *rec.Fault)
		case rec.Holding != nil:
			run.Holdings = append(run.Holdings, *rec.Holding)
		case rec.Final != nil:
			run.Final = append(run.Final, *rec.Final)
		case rec.ACL != nil:
			run.ACL = rec.ACL
		default:
			return nil, fmt.Errorf("history record %d: empty", line)
		}
	}
}

// ReadFile reads a history file.
func ReadFile(path string) (*Run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// ReadJournal reads a node's journal (one Entry per line). A torn last line
// (the node was killed mid-write) is ignored.
func ReadJournal(path, node string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // torn line
		}
		e.Node = node
		out = append(out, e)
	}
	return out, sc.Err()
}
