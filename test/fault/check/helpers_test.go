package check

import (
	"sort"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

// t0 is the start of every hand-made history; at(ms) is t0 + ms.
const t0 = int64(1_700_000_000) * 1e9

func at(ms int64) int64 { return t0 + ms*1e6 }

// logBuilder writes a committed log the way the FSM journals it: Changed is
// derived from the state (and request-id deduplication), one term unless
// newTerm is called.
type logBuilder struct {
	entries []history.Entry
	state   map[instKey]uint64 // instance → its registration index
	results map[string]bool    // request id → the first result's Changed
	term    uint64
	next    uint64
}

func newLog() *logBuilder {
	b := &logBuilder{state: map[instKey]uint64{}, results: map[string]bool{}, term: 2, next: 1}
	b.add(history.Entry{Type: "config", At: at(0)})
	return b
}

func (b *logBuilder) add(e history.Entry) uint64 {
	e.Index, e.Term = b.next, b.term
	b.next++
	b.entries = append(b.entries, e)
	return e.Index
}

// skip leaves n indices out of every journal (a no-op and barrier of a new
// term when newTerm follows; a true gap otherwise).
func (b *logBuilder) skip(n uint64) { b.next += n }

func (b *logBuilder) newTerm() { b.term++ }

func (b *logBuilder) register(svc, addr, rid string, ttlMs, atMs int64) uint64 {
	e := history.Entry{Type: typeRegister, RequestID: rid, Name: svc, Addr: addr, TTLMillis: ttlMs, At: at(atMs)}
	if _, dup := b.results[rid]; dup && rid != "" {
		e.Changed = false // the FSM answers the first result and changes nothing
	} else {
		e.Changed = true
		b.results[rid] = true
	}
	i := b.add(e)
	if e.Changed {
		b.state[instKey{svc, addr}] = i
	}
	return i
}

func (b *logBuilder) unregister(svc, addr, rid string, atMs int64) uint64 {
	e := history.Entry{Type: typeUnregister, RequestID: rid, Name: svc, Addr: addr, At: at(atMs)}
	k := instKey{svc, addr}
	if _, dup := b.results[rid]; !dup || rid == "" {
		if _, ok := b.state[k]; ok {
			e.Changed = true
			delete(b.state, k)
		} else {
			e.Err = "unregister " + svc + " " + addr + ": not found"
		}
		b.results[rid] = e.Changed
	}
	return b.add(e)
}

func (b *logBuilder) expire(svc, addr string, regIndex uint64, decidedMs, atMs int64) uint64 {
	e := history.Entry{Type: typeExpire, Name: svc, Addr: addr, ExpireIndex: regIndex, DecidedAt: at(decidedMs), At: at(atMs)}
	k := instKey{svc, addr}
	if i, ok := b.state[k]; ok && i == regIndex {
		e.Changed = true
		delete(b.state, k)
	}
	return b.add(e)
}

// on returns the journals of nodes that each applied every entry, the
// second node 1 ms later than the first, and so on.
func (b *logBuilder) on(nodes ...string) []history.Entry {
	var out []history.Entry
	for n, node := range nodes {
		for _, e := range b.entries {
			e.Node = node
			e.At += int64(n) * 1e6
			out = append(out, e)
		}
	}
	return out
}

// final returns the current state as run.Final.
func (b *logBuilder) final() []history.Instance {
	var out []history.Instance
	for k, i := range b.state {
		out = append(out, history.Instance{Service: k.service, Addr: k.addr, Index: i})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Addr < out[j].Addr
	})
	return out
}

func (b *logBuilder) last() uint64 { return b.next - 1 }

// run assembles a run from the log on three nodes.
func (b *logBuilder) run(ops []history.Op) *history.Run {
	return &history.Run{Ops: ops, Entries: b.on("n1", "n2", "n3"), Final: b.final(), FinalIndex: b.last()}
}

// Operation constructors. Times in ms after t0.

func opReg(id int64, client, svc, addr, rid string, call, ret int64, out history.Outcome, index uint64) history.Op {
	return history.Op{ID: id, Client: client, Kind: history.Register, Service: svc, Addr: addr, TTLMillis: 3_600_000,
		RequestID: rid, Node: "n1", Call: at(call), Return: at(ret), Outcome: out, Index: index}
}

func opUnreg(id int64, client, svc, addr, rid string, call, ret int64, out history.Outcome, index uint64) history.Op {
	op := history.Op{ID: id, Client: client, Kind: history.Unregister, Service: svc, Addr: addr,
		RequestID: rid, Node: "n1", Call: at(call), Return: at(ret), Outcome: out, Index: index}
	if out == history.Fail {
		op.Code = "not_found"
	}
	return op
}

func opList(id int64, client, svc string, call, ret int64, index uint64, addrs ...string) history.Op {
	if addrs == nil {
		addrs = []string{}
	}
	return history.Op{ID: id, Client: client, Kind: history.CList, Service: svc, Node: "n2", Call: at(call), Return: at(ret),
		Outcome: history.OK, Index: index, Result: addrs}
}

func opBeat(id int64, client, svc, addr string, call, ret int64, out history.Outcome) history.Op {
	return history.Op{ID: id, Client: client, Kind: history.Heartbeat, Service: svc, Addr: addr, Node: "n2",
		Call: at(call), Return: at(ret), Outcome: out}
}

func opStop(id int64, client, svc, addr string, ttlMs, call int64) history.Op {
	return history.Op{ID: id, Client: client, Kind: history.Stop, Service: svc, Addr: addr, TTLMillis: ttlMs, Node: "-",
		Call: at(call), Return: at(call), Outcome: history.OK}
}

// Verdict assertions.

func wantOK(t *testing.T, v Verdict) {
	t.Helper()
	t.Log(v)
	if !v.OK || len(v.Violations) != 0 {
		t.Fatalf("want no violations, got:\n%s", v)
	}
}

// want describes one expected violation; empty fields are not compared
// except Index, which is compared when not 0.
type want struct {
	service, addr, node string
	index               uint64
	msg                 string // a substring of Msg
}

// wantViolations asserts exactly these violations, in order.
func wantViolations(t *testing.T, v Verdict, ws ...want) {
	t.Helper()
	t.Log(v)
	if v.OK {
		t.Fatalf("verdict OK, want %d violations:\n%s", len(ws), v)
	}
	if len(v.Violations) != len(ws) {
		t.Fatalf("got %d violations, want %d:\n%s", len(v.Violations), len(ws), v)
	}
	for i, w := range ws {
		x := v.Violations[i]
		if x.Checker != v.Checker {
			t.Errorf("violation %d: checker %q, want %q", i, x.Checker, v.Checker)
		}
		if w.service != "" && x.Service != w.service || w.addr != "" && x.Addr != w.addr ||
			w.node != "" && x.Node != w.node || w.index != 0 && x.Index != w.index || !strings.Contains(x.Msg, w.msg) {
			t.Errorf("violation %d = %s\nwant service=%q addr=%q node=%q index=%d msg~%q", i, x, w.service, w.addr, w.node, w.index, w.msg)
		}
	}
}

func wantNote(t *testing.T, v Verdict, substr string) {
	t.Helper()
	for _, n := range v.Notes {
		if strings.Contains(n, substr) {
			return
		}
	}
	t.Errorf("no note containing %q in:\n%s", substr, v)
}
