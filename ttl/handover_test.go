package ttl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
)

// Deadline tables (DESIGN.md, "Deadline tables"): the table's rules, and a
// new leader arming from collected tables. Fake clock throughout.

var (
	kWeb = Key{"web", "10.0.0.1:80"}
	kAPI = Key{"api", "10.0.0.2:80"}
)

// Registration indexes in the table tests.
const (
	iWeb uint64 = 7
	iAPI uint64 = 9
)

func TestTable_KeepsTheLatestDeadlineAndDropsPassedOnes(t *testing.T) {
	clk := newFakeClock()
	tb := NewTable(clk)
	if err := tb.Accept(3, 3, []Renewal{{iWeb, 10 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	clk.Set(at(2 * time.Second))
	// A shorter renewal arriving later (reordered pushes) does not shorten it.
	if err := tb.Accept(3, 3, []Renewal{{iWeb, time.Second}}); err != nil {
		t.Fatal(err)
	}
	tb.Registered(iAPI, 5*time.Second)
	v := tb.Collect(3)
	if got, want := v.Remaining[iWeb], 8*time.Second; got != want {
		t.Errorf("web remaining %v, want %v (the later of the two deadlines)", got, want)
	}
	if got, want := v.Remaining[iAPI], 5*time.Second; got != want {
		t.Errorf("api remaining %v, want %v (registration applied now + TTL)", got, want)
	}
	if v.Age != 2*time.Second {
		t.Errorf("age %v, want 2s", v.Age)
	}
	clk.Set(at(7 * time.Second))
	if v := tb.Collect(3); len(v.Remaining) != 1 {
		t.Errorf("at +7 s only web's deadline (+12 s) is ahead: %v", v.Remaining)
	}
	clk.Set(at(12 * time.Second))
	if v := tb.Collect(3); len(v.Remaining) != 0 || tb.Len() != 0 {
		t.Errorf("passed deadlines are still reported: %v (len %d)", v.Remaining, tb.Len())
	}
}

func TestTable_RefusesPushesOfOlderTerms(t *testing.T) {
	clk := newFakeClock()
	tb := NewTable(clk)
	r := []Renewal{{iWeb, 10 * time.Second}}
	// The node's own Raft term is newer than the pusher's: refused.
	if err := tb.Accept(4, 5, r); !errors.Is(err, ErrStaleTerm) || !errors.Is(err, codes.ErrNotLeader) {
		t.Fatalf("push of term 4 to a node in term 5: %v, want ErrStaleTerm", err)
	}
	// A push from a leader of a term this node has not seen yet is taken.
	if err := tb.Accept(6, 5, r); err != nil {
		t.Fatalf("push of a newer term: %v", err)
	}
	// Once a new leader of term 7 collected the table, a push of term 6 —
	// from the old leader, who may still believe it leads — is refused,
	// even though this node's Raft has not moved to term 7 yet.
	tb.Collect(7)
	if err := tb.Accept(6, 6, r); !errors.Is(err, ErrStaleTerm) {
		t.Fatalf("push of term 6 after a collection in term 7: %v, want ErrStaleTerm", err)
	}
	if err := tb.Accept(7, 6, r); err != nil {
		t.Fatalf("push of the collecting leader's term: %v", err)
	}
	// A collection of an older term does not lower the floor.
	tb.Collect(5)
	if err := tb.Accept(6, 6, r); !errors.Is(err, ErrStaleTerm) {
		t.Fatalf("the floor went down after an older collection: %v", err)
	}
}

func TestTable_RestoreMakesItYoung(t *testing.T) {
	clk := newFakeClock()
	tb := NewTable(clk)
	clk.Set(at(time.Minute))
	if v := tb.Collect(1); v.Age != time.Minute {
		t.Fatalf("age %v, want 1m", v.Age)
	}
	tb.Restarted()
	clk.Set(at(time.Minute + 3*time.Second))
	if v := tb.Collect(1); v.Age != 3*time.Second {
		t.Fatalf("age after a restore %v, want 3s", v.Age)
	}
}

func TestTable_SweepsPassedDeadlinesAsItGrows(t *testing.T) {
	clk := newFakeClock()
	tb := NewTable(clk)
	// Entries of registrations removed or made again: they are dropped once
	// their deadline passed and the table grew enough.
	for i := range 1500 {
		tb.Registered(uint64(i), time.Second)
	}
	clk.Set(at(2 * time.Second))
	for i := range 4000 {
		tb.Registered(uint64(10000+i), time.Minute)
	}
	if n := tb.Len(); n > 4000 {
		t.Fatalf("table holds %d entries, want the 1500 passed ones swept", n)
	}
}

func TestCollection_Handover(t *testing.T) {
	const ttl = 10 * time.Second
	old := time.Hour
	cases := []struct {
		name string
		col  *Collection
		rem  time.Duration
		ok   bool
	}{
		{"no collection", nil, 0, false},
		{"largest of all tables", &Collection{Quorum: 2,
			Self:   TableView{Age: old, Remaining: map[uint64]time.Duration{iWeb: 3 * time.Second}},
			Others: []TableView{{Age: old, Remaining: map[uint64]time.Duration{iWeb: 7 * time.Second}}, {Age: time.Second, Remaining: map[uint64]time.Duration{iWeb: 9 * time.Second}}}},
			9 * time.Second, true},
		{"in no table: deadlines all passed", &Collection{Quorum: 2,
			Self: TableView{Age: old}, Others: []TableView{{Age: old}}}, 0, true},
		{"own table younger than the TTL", &Collection{Quorum: 2,
			Self: TableView{Age: ttl - time.Nanosecond}, Others: []TableView{{Age: old}, {Age: old}}}, 0, false},
		{"too few complete tables", &Collection{Quorum: 3,
			Self: TableView{Age: old}, Others: []TableView{{Age: old}, {Age: ttl / 2}, {Age: ttl / 2}}}, 0, false},
		{"exactly a majority complete", &Collection{Quorum: 2,
			Self:   TableView{Age: ttl},
			Others: []TableView{{Age: ttl}, {Age: ttl / 2, Remaining: map[uint64]time.Duration{iWeb: time.Second}}}},
			time.Second, true},
	}
	for _, c := range cases {
		rem, ok := c.col.handover(iWeb, ttl)
		if rem != c.rem || ok != c.ok {
			t.Errorf("%s: handover = %v, %v; want %v, %v", c.name, rem, ok, c.rem, c.ok)
		}
	}
}

// fakePeers answers CollectTables with this node's own table and the views
// set in others, once the test releases it.
type fakePeers struct {
	tr      func() *Tracker
	term    uint64
	quorum  int
	others  []TableView
	err     error
	called  chan struct{}
	release chan struct{}
}

func newFakePeers(quorum int, others ...TableView) *fakePeers {
	return &fakePeers{term: 2, quorum: quorum, others: others, called: make(chan struct{}, 16), release: make(chan struct{})}
}

func (p *fakePeers) CollectTables(ctx context.Context) (*Collection, error) {
	p.called <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
		return nil, fmt.Errorf("fake peers: %w", ctx.Err())
	}
	if p.err != nil {
		return nil, p.err
	}
	return &Collection{Quorum: p.quorum, Self: p.tr().Table().Collect(p.term), Others: p.others}, nil
}

func newHandoverHarness(t *testing.T, p *fakePeers) *harness {
	h := newHarness(t, withConfig(func(c *Config) { c.Peers = p }))
	p.tr = func() *Tracker { return h.tr }
	return h
}

// becomeLeaderVia makes the node leader and lets the collection answer.
func (h *harness) becomeLeaderVia(p *fakePeers) {
	h.t.Helper()
	h.prop.setLeader(true)
	h.tr.BecomeLeader()
	recv(h.t, "the collection of deadline tables", p.called)
	if h.tr.Active() {
		h.t.Fatal("tracker active before the deadline tables were collected")
	}
	close(p.release)
	h.eventually("the tracker to arm", h.tr.Active)
}

// expectExpiryAt moves the clock to just before deadline (no call), then to
// it (exactly in's expiry).
func (h *harness) expectExpiryAt(in *fsm.Instance, deadline time.Time) {
	h.t.Helper()
	h.advanceTo(deadline.Add(-time.Nanosecond))
	h.noCalls()
	h.advanceTo(deadline)
	h.expectCalls(expiry(in, deadline))
}

func TestTTL_NewLeaderArmsAtTheLargestDeadlineInTheTablesPlusGrace(t *testing.T) {
	const ttl = 10 * time.Second
	// Another node holds a deadline 4 s ahead for web (its last heartbeat,
	// pushed by the old leader); api is in no table: every deadline the
	// old leader acknowledged for it has passed.
	p := newFakePeers(2, TableView{Age: time.Hour})
	h := newHandoverHarness(t, p)
	web := h.register(kWeb.Name, kWeb.Addr, ttl)
	p.others[0].Remaining = map[uint64]time.Duration{web.ModifyIndex: 4 * time.Second}
	api := h.register(kAPI.Name, kAPI.Addr, ttl)
	h.advanceTo(at(time.Minute))
	h.becomeLeaderVia(p)

	// web: now + 4 s + grace, not now + TTL + grace.
	h.expectExpiryAt(api, at(time.Minute+testGrace))
	h.expectExpiryAt(web, at(time.Minute+4*time.Second+testGrace))
}

func TestTTL_NewLeaderFallsBackToTTLPlusGraceWithoutCompleteTables(t *testing.T) {
	const ttl = 10 * time.Second
	// The only other table is younger than the TTL (that node restarted):
	// a deadline it lost may be the one that counts.
	p := newFakePeers(2, TableView{Age: 5 * time.Second})
	h := newHandoverHarness(t, p)
	web := h.register(kWeb.Name, kWeb.Addr, ttl)
	h.advanceTo(at(time.Minute))
	h.becomeLeaderVia(p)
	h.expectExpiryAt(web, at(time.Minute+ttl+testGrace))
}

func TestTTL_NewLeaderWithAYoungTableFallsBack(t *testing.T) {
	const ttl = 10 * time.Second
	p := newFakePeers(2, TableView{Age: time.Hour})
	h := newHandoverHarness(t, p)
	web := h.register(kWeb.Name, kWeb.Addr, ttl)
	// This node's own table started at +0: at +5 s it cannot vouch for a
	// 10 s TTL (a registration it saw only in a snapshot, say).
	h.advanceTo(at(5 * time.Second))
	h.becomeLeaderVia(p)
	h.expectExpiryAt(web, at(5*time.Second+ttl+testGrace))
}

func TestTTL_NewLeaderArmsAtTTLPlusGraceWhenNoMajorityAnswers(t *testing.T) {
	const ttl = 10 * time.Second
	p := newFakePeers(2)
	p.err = fmt.Errorf("1 of 3 voters answered: %w", codes.ErrNoLeader)
	h := newHandoverHarness(t, p)
	web := h.register(kWeb.Name, kWeb.Addr, ttl)
	h.advanceTo(at(time.Minute))
	h.becomeLeaderVia(p)
	h.expectExpiryAt(web, at(time.Minute+ttl+testGrace))
}

func TestTTL_OwnRegistrationsCountInTheHandover(t *testing.T) {
	const ttl = 10 * time.Second
	p := newFakePeers(2, TableView{Age: time.Hour})
	h := newHandoverHarness(t, p)
	h.advanceTo(at(time.Minute))
	// Applied here 3 s before this node leads: its table says 7 s remain.
	web := h.register(kWeb.Name, kWeb.Addr, ttl)
	h.advanceTo(at(time.Minute + 3*time.Second))
	h.becomeLeaderVia(p)
	h.expectExpiryAt(web, at(time.Minute+ttl+testGrace))
}

func TestTTL_HeartbeatsWaitForTheCollectionAndStepDownAbandonsIt(t *testing.T) {
	p := newFakePeers(2, TableView{Age: time.Hour})
	h := newHandoverHarness(t, p)
	h.register(kWeb.Name, kWeb.Addr, 10*time.Second)
	h.advanceTo(at(time.Minute))
	h.prop.setLeader(true)
	h.tr.BecomeLeader()
	recv(t, "the collection of deadline tables", p.called)
	res := startWaitingHeartbeat(h, context.Background(), kWeb)
	select {
	case r := <-res:
		t.Fatalf("heartbeat answered before the tables were collected: %+v", r)
	default:
	}
	// Leadership is lost while collecting: the arming must never happen,
	// and the waiting heartbeat learns this node does not lead.
	h.prop.setLeader(false)
	h.tr.StepDown()
	r := recv(t, "the waiting heartbeat", res)
	if !errors.Is(r.err, ErrNotActive) {
		t.Fatalf("heartbeat after step-down: %v, want ErrNotActive", r.err)
	}
	close(p.release)
	h.settle()
	if h.tr.Active() {
		t.Fatal("a collection that finished after StepDown activated the tracker")
	}
}

func TestTTL_RenewReturnsWhatTheOtherNodesMustHold(t *testing.T) {
	h := newHarness(t)
	h.becomeLeader()
	web := h.register(kWeb.Name, kWeb.Addr, 10*time.Second)
	api := h.register(kAPI.Name, kAPI.Addr, 30*time.Second)
	h.unregister(api.Name, api.Addr)
	res, rs, err := h.tr.Renew(context.Background(), []Key{keyOf(web), keyOf(api)})
	if err != nil || res[0] != nil || !errors.Is(res[1], codes.ErrNotFound) {
		t.Fatalf("Renew: %v %v", res, err)
	}
	if len(rs) != 1 || rs[0] != (Renewal{web.ModifyIndex, 10 * time.Second}) {
		t.Fatalf("renewals %+v, want web's TTL only", rs)
	}
}

// TestTracker_VoterChangeMakesTableYoung: a table counts as young for a
// TTL after the voter set changed, so a new leader never arms from
// tables whose majority may not intersect the one that acknowledged a
// heartbeat (DESIGN.md, "Membership changes"); the same voters again, or
// a non-voter added, change nothing.
func TestTracker_VoterChangeMakesTableYoung(t *testing.T) {
	clk := newFakeClock()
	tr := New(Config{Clock: clk, Logger: slog.New(slog.DiscardHandler)}, nil, nil)
	age := func() time.Duration { return tr.Table().Collect(1).Age }
	clk.Set(at(time.Minute))
	tr.VotersApplied([]string{"n1", "n2", "n3"}) // the first configuration seen
	if a := age(); a != 0 {
		t.Fatalf("age after the first configuration %v, want 0", a)
	}
	clk.Set(at(2 * time.Minute))
	tr.VotersApplied([]string{"n1", "n2", "n3"}) // e.g. a non-voter added
	if a := age(); a != time.Minute {
		t.Fatalf("age after the same voters %v, want 1m", a)
	}
	tr.VotersApplied([]string{"n1", "n2", "n3", "n4"})
	clk.Set(at(2*time.Minute + time.Second))
	if a := age(); a != time.Second {
		t.Fatalf("age after a voter joined %v, want 1s", a)
	}
	tr.VotersApplied([]string{"n1", "n2", "n4"})
	if a := age(); a != 0 {
		t.Fatalf("age after a voter left %v, want 0", a)
	}
}
