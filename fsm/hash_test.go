package fsm

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestFSM_HashAgreesAcrossBatchingAndRestore: replicas that applied the same
// log — in different batches, or partly through a snapshot — hash the same,
// and any difference in state changes the hash.
func TestFSM_HashAgreesAcrossBatchingAndRestore(t *testing.T) {
	cfg := Config{MaxEmptyServices: 2, HistoryPerService: 4, MaxRequestIDs: 8}
	h := newHarness(t, cfg)
	var logs []*raft.Log
	for i := range 12 {
		logs = append(logs, h.log(RegisterType, RegisterCommand{Name: "web", Addr: string(rune('a'+i%5)) + ":1",
			Attrs: map[string]string{"i": string(rune('0' + i%10))}, TTL: time.Minute, RequestID: string(rune('A' + i))}))
		if i%4 == 3 {
			logs = append(logs, h.log(UnregisterType, UnregisterCommand{Name: "web", Addr: "a:1"}))
			logs = append(logs, h.log(ExpireType, ExpireCommand{Name: "web", Addr: "b:1", Index: uint64(len(logs))}))
		}
		logs = append(logs, h.log(RegisterType, RegisterCommand{Name: "s" + string(rune('0'+i)), Addr: "x:1"}),
			h.log(UnregisterType, UnregisterCommand{Name: "s" + string(rune('0'+i)), Addr: "x:1"}))
	}
	one := New(cfg)
	for _, l := range logs {
		one.Apply(l)
	}
	idx, want := one.Hash()
	if idx != logs[len(logs)-1].Index || len(want) != 64 {
		t.Fatalf("Hash() = %d, %q", idx, want)
	}
	batched := New(cfg)
	batched.ApplyBatch(logs[:7])
	batched.ApplyBatch(logs[7:])
	if _, got := batched.Hash(); got != want {
		t.Errorf("batched replica hashes %s, one-at-a-time %s", got, want)
	}
	// Half through a snapshot, the rest from the log.
	half := New(cfg)
	half.ApplyBatch(logs[:len(logs)/2])
	restored := New(cfg)
	if err := restored.Restore(newTrackingReader(persistBytes(t, half))); err != nil {
		t.Fatal(err)
	}
	restored.ApplyBatch(logs[len(logs)/2:])
	if _, got := restored.Hash(); got != want {
		t.Errorf("restored replica hashes %s, want %s", got, want)
	}
	// One more change, anywhere, changes the hash.
	restored.Apply(h.log(RegisterType, RegisterCommand{Name: "web", Addr: "c:1", Attrs: map[string]string{"i": "other"}}))
	if _, got := restored.Hash(); got == want {
		t.Error("hash did not change with the state")
	}
}

type memJournal struct{ entries []JournalEntry }

func (j *memJournal) Applied(e JournalEntry) { j.entries = append(j.entries, e) }
func (j *memJournal) Flush()                 {}

// TestFSM_JournalMarksRetriesUnchanged: an entry that repeats a request id is
// journaled as not having changed anything, even though its result (the
// first one) says Changed.
func TestFSM_JournalMarksRetriesUnchanged(t *testing.T) {
	h := newHarness(t, Config{})
	j := &memJournal{}
	f := New(Config{})
	f.SetJournal(j)
	f.ApplyBatch([]*raft.Log{
		h.log(RegisterType, RegisterCommand{Name: "web", Addr: "a:1", RequestID: "r1"}),
		h.log(UnregisterType, UnregisterCommand{Name: "web", Addr: "a:1", RequestID: "r2"}),
		h.log(RegisterType, RegisterCommand{Name: "web", Addr: "a:1", RequestID: "r1"}),
		h.log(UnregisterType, UnregisterCommand{Name: "web", Addr: "a:1", RequestID: "r2"}),
		{Index: 5, Term: 1, Type: raft.LogConfiguration},
	})
	want := []bool{true, true, false, false, false}
	if len(j.entries) != len(want) {
		t.Fatalf("journaled %d entries, want %d", len(j.entries), len(want))
	}
	for i, e := range j.entries {
		if e.Changed != want[i] || e.Index != uint64(i+1) {
			t.Errorf("entry %d: index %d changed %v, want index %d changed %v", i, e.Index, e.Changed, i+1, want[i])
		}
	}
	if f.Get("web", "a:1") != nil {
		t.Error("the retried register was applied")
	}
}
