package fsm

import (
	"context"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// batchLog builds the next log entry carrying cmds as one batch.
func (h *harness) batchLog(cmds ...[]byte) *raft.Log {
	h.t.Helper()
	b, err := EncodeBatch(cmds)
	if err != nil {
		h.t.Fatalf("EncodeBatch: %v", err)
	}
	h.index++
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: b}
}

func reg(t testing.TB, name, addr, id string) []byte {
	return mustEncode(t, RegisterType, RegisterCommand{Name: name, Addr: addr, TTL: time.Minute, RequestID: id})
}

func unreg(t testing.TB, name, addr, id string) []byte {
	return mustEncode(t, UnregisterType, UnregisterCommand{Name: name, Addr: addr, RequestID: id})
}

// TestFSM_BatchEntryGivesEachWriteItsOwnIndex: the commands of a batch entry
// are applied in order with consecutive indices starting at the entry's Raft
// index; later entries continue after them; events, instances, lists and
// journal lines carry those indices.
// batchResults checks that a batch entry was answered as raftnode.Machine
// requires (a []any, one response per command) and returns the results.
func batchResults(t *testing.T, out any, n int) []*Result {
	t.Helper()
	resps, ok := out.([]any)
	if !ok || len(resps) != n {
		t.Fatalf("batch apply returned %T(%v), want %d results", out, out, n)
	}
	rs := make([]*Result, n)
	for i, r := range resps {
		if rs[i], ok = r.(*Result); !ok {
			t.Fatalf("batch apply answered write %d with %T(%v), want a *Result", i, r, r)
		}
	}
	return rs
}

func TestFSM_BatchEntryGivesEachWriteItsOwnIndex(t *testing.T) {
	h := newHarness(t, Config{})
	j := &memJournal{}
	h.f.SetJournal(j)
	if r := h.register("web", "a:1", nil); r.Index != 1 {
		t.Fatalf("first register: index %d", r.Index)
	}
	// Raft index 2 carries four writes: indices 2, 3, 4, 5.
	out := h.f.Apply(h.batchLog(reg(t, "web", "b:1", "rb"), reg(t, "web", "c:1", ""), unreg(t, "web", "a:1", ""),
		unreg(t, "web", "zz:1", "")))
	rs := batchResults(t, out, 4)
	for i, r := range rs {
		if r.Index != uint64(2+i) {
			t.Errorf("write %d of the batch: index %d, want %d", i, r.Index, 2+i)
		}
	}
	if !rs[0].Changed || !rs[1].Changed || !rs[2].Changed || rs[3].Changed || rs[3].Err == nil {
		t.Errorf("batch results %+v %+v %+v %+v", rs[0], rs[1], rs[2], rs[3])
	}
	// Raft index 3, a single write: index 6, not 3.
	if r := h.register("web", "d:1", nil); r.Index != 6 {
		t.Errorf("write after the batch: index %d, want 6", r.Index)
	}
	h.f.Apply(h.configLog()) // Raft index 4: index 7
	if r := h.register("web", "e:1", nil); r.Index != 8 {
		t.Errorf("write after a configuration entry: index %d, want 8", r.Index)
	}
	if got := h.f.AppliedIndex(); got != 8 {
		t.Errorf("AppliedIndex = %d, want 8", got)
	}
	idx, ins := h.f.List("web", nil)
	if idx != 8 {
		t.Errorf("List index %d, want 8", idx)
	}
	var got []string
	for _, in := range ins {
		got = append(got, in.Addr)
		if in.Addr == "c:1" && (in.CreateIndex != 3 || in.ModifyIndex != 3) {
			t.Errorf("c:1 create %d modify %d, want 3 3", in.CreateIndex, in.ModifyIndex)
		}
	}
	if want := []string{"b:1", "c:1", "d:1", "e:1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("instances %v, want %v", got, want)
	}
	want := []string{"up a:1@1", "up b:1@2", "up c:1@3", "down a:1@4", "up d:1@6", "up e:1@8"}
	if got := summarize(historyOf(h.f, "web")); !reflect.DeepEqual(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
	var lines []uint64
	for _, e := range j.entries {
		lines = append(lines, e.Index)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8}; !reflect.DeepEqual(lines, want) {
		t.Errorf("journal indices %v, want %v", lines, want)
	}
	if j.entries[4].Err == nil || j.entries[4].Changed || j.entries[6].Type != 0 {
		t.Errorf("journal lines 5 and 7: %+v %+v", j.entries[4], j.entries[6])
	}
	// A retry of the batch's first write, by request id, is answered with its index.
	if r := h.apply(RegisterType, RegisterCommand{Name: "web", Addr: "b:1", TTL: time.Minute, RequestID: "rb"}); r.Index != 2 {
		t.Errorf("retry of a batched write: index %d, want 2", r.Index)
	}
	// The expire of a batched registration names its own index.
	if r := h.expire("web", "c:1", 3); !r.Changed {
		t.Error("expire of c:1 at its batched index did not remove it")
	}
}

// TestFSM_BatchDuplicateRequestIDWithinOneEntry: a request id repeated inside
// one batch is applied once; the repeat is answered with the first index and
// journaled as unchanged.
func TestFSM_BatchDuplicateRequestIDWithinOneEntry(t *testing.T) {
	h := newHarness(t, Config{})
	j := &memJournal{}
	h.f.SetJournal(j)
	rs := batchResults(t, h.f.Apply(h.batchLog(reg(t, "web", "a:1", "r1"), unreg(t, "web", "a:1", ""), reg(t, "web", "a:1", "r1"))), 3)
	if rs[2].Index != 1 || rs[2] != rs[0] {
		t.Errorf("repeated id answered %+v, want the first result %+v", rs[2], rs[0])
	}
	if h.f.Get("web", "a:1") != nil {
		t.Error("the repeated register was applied again")
	}
	if len(j.entries) != 3 || !j.entries[0].Changed || !j.entries[1].Changed || j.entries[2].Changed || j.entries[2].Index != 3 {
		t.Errorf("journal %+v", j.entries)
	}
}

// TestFSM_BatchWatchResumesInsideAnEntry: a watcher can resume from an index
// in the middle of a batch entry and gets exactly the writes after it.
func TestFSM_BatchWatchResumesInsideAnEntry(t *testing.T) {
	h := newHarness(t, Config{})
	h.register("web", "a:1", nil)
	h.f.Apply(h.batchLog(reg(t, "web", "b:1", ""), reg(t, "web", "c:1", ""), reg(t, "web", "d:1", "")))
	w, err := h.f.Watch("web", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := []string{"up d:1@4", "current@4"}
	if got := summarize(drainNow(t, w)); !reflect.DeepEqual(got, want) {
		t.Errorf("resumed from 3: %v, want %v", got, want)
	}
	// A live watcher sees every write of the next batch, in order.
	h.f.Apply(h.batchLog(unreg(t, "web", "b:1", ""), reg(t, "web", "e:1", "")))
	want = []string{"down b:1@5", "up e:1@6"}
	if got := summarize(collectUntil(t, w, 6)); !reflect.DeepEqual(got, want) {
		t.Errorf("live: %v, want %v", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.f.WaitApplied(ctx, 6); err != nil {
		t.Errorf("WaitApplied(6) after the second batch (Raft index 3): %v", err)
	}
}

// TestFSM_BatchIndicesAgreeAcrossReplicas: replicas that apply the same log
// in different ApplyBatch splits, or partly through a snapshot, assign the
// same indices and reach the same state.
func TestFSM_BatchIndicesAgreeAcrossReplicas(t *testing.T) {
	cfg := Config{MaxEmptyServices: 2, HistoryPerService: 8, MaxRequestIDs: 16}
	h := newHarness(t, cfg)
	var logs []*raft.Log
	for i := range 10 {
		a := string(rune('a'+i%4)) + ":1"
		logs = append(logs, h.batchLog(reg(t, "web", a, ""), reg(t, "s"+a, "x:1", ""), unreg(t, "s"+a, "x:1", "")))
		logs = append(logs, h.log(RegisterType, RegisterCommand{Name: "web", Addr: a}))
		if i%3 == 0 {
			logs = append(logs, h.configLog())
		}
	}
	one := New(cfg)
	for _, l := range logs {
		one.Apply(l)
	}
	idx, want := one.Hash()
	if n := logs[len(logs)-1].Index; idx <= n {
		t.Fatalf("applied index %d after %d entries with batches", idx, n)
	}
	split := New(cfg)
	split.ApplyBatch(logs[:5])
	split.ApplyBatch(logs[5:])
	if i, got := split.Hash(); got != want || i != idx {
		t.Errorf("split replica %d %s, want %d %s", i, got, idx, want)
	}
	half := New(cfg)
	half.ApplyBatch(logs[:7])
	restored := New(cfg)
	if err := restored.Restore(newTrackingReader(persistBytes(t, half))); err != nil {
		t.Fatal(err)
	}
	restored.ApplyBatch(logs[7:])
	if i, got := restored.Hash(); got != want || i != idx {
		t.Errorf("restored replica %d %s, want %d %s", i, got, idx, want)
	}
}

// TestFSM_BatchEncoding: EncodeBatch refuses what cannot be a batch; a batch
// entry that does not decode stops the node (panics) without changing state.
func TestFSM_BatchEncoding(t *testing.T) {
	a, b := reg(t, "web", "a:1", ""), unreg(t, "web", "a:1", "")
	enc, err := EncodeBatch([][]byte{a, b})
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := decodeBatch(enc[1:])
	if err != nil || len(cmds) != 2 || string(cmds[0]) != string(a) || string(cmds[1]) != string(b) {
		t.Fatalf("round trip: %v %q", err, cmds)
	}
	if _, err := Encode(BatchType, RegisterCommand{}); err == nil {
		t.Error("Encode(BatchType) succeeded")
	}
	for _, bad := range [][][]byte{nil, {a, nil}, {a, enc}} {
		if _, err := EncodeBatch(bad); err == nil {
			t.Errorf("EncodeBatch(%q) succeeded", bad)
		}
	}
	count := func(n uint64) []byte { return binary.AppendUvarint([]byte{byte(BatchType)}, n) }
	bads := map[string][]byte{
		"no count":       {byte(BatchType)},
		"zero count":     count(0),
		"missing":        append(count(2), enc[2:]...)[:len(enc)+1-len(b)-1],
		"trailing bytes": append(append([]byte{}, enc...), 7),
		"nested":         append(append(count(1), byte(len(enc))), enc...),
		"too long":       append(count(1), 200, 1),
	}
	for name, data := range bads {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.register("web", "z:1", nil)
			l := &raft.Log{Index: 2, Term: 1, Type: raft.LogCommand, Data: data}
			func() {
				defer func() {
					if r := recover(); r == nil || !strings.Contains(r.(string), "batch entry at index 2") {
						t.Errorf("panic = %v", r)
					}
				}()
				h.f.Apply(l)
			}()
			if got := h.f.AppliedIndex(); got != 1 || h.f.Get("web", "a:1") != nil {
				t.Errorf("a bad batch changed state: applied %d", got)
			}
		})
	}
}
