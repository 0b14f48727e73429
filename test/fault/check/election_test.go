package check

import (
	"bytes"
	"math"
	"reflect"
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

const (
	eSvc  = "elect-0"
	addrA = "10.200.0.1:80"
	addrB = "10.200.0.2:80"
	addrC = "10.200.0.3:80"
)

func hold(elector, addr string, fencing uint64, wonMs, lostMs int64, end string) history.Holding {
	lost := at(lostMs)
	if lostMs < 0 {
		lost = math.MaxInt64
	}
	return history.Holding{Elector: elector, Service: eSvc, Addr: addr, FencingIndex: fencing, Won: at(wonMs), Lost: lost, End: end}
}

// electionRun is a good history: e0 (addr A) leads, resigns; e1 (B), in
// line since, leads; e0 stands again; e1 is cut off and its registration
// expires, so e0 leads again — while e1 still believes it leads for a
// while (the holdings overlap in real time, with increasing fencing
// indices).
func electionRun() (*history.Run, [5]uint64) {
	b := newLog()
	var ix [5]uint64
	ix[0] = b.register(eSvc, addrA, "a1", 2000, 10)  // A leads
	ix[1] = b.register(eSvc, addrB, "b1", 2000, 20)  // B in line
	ix[2] = b.unregister(eSvc, addrA, "a2", 100)     // A resigns: B leads
	ix[3] = b.register(eSvc, addrA, "a3", 2000, 110) // A in line again
	ix[4] = b.expire(eSvc, addrB, ix[1], 295, 300)   // B cut off: A leads
	run := b.run(nil)
	run.Holdings = []history.Holding{
		hold("e0", addrA, ix[0], 15, 101, "resign"),
		hold("e1", addrB, ix[1], 105, 320, "lost"),
		hold("e0", addrA, ix[3], 305, -1, "run-end"),
	}
	return run, ix
}

func TestCheck_ElectionGood(t *testing.T) {
	run, _ := electionRun()
	v := Election(run)
	wantOK(t, v)
	want := map[string]int{"holdings": 3, "services": 1, "electors": 2, "witnessed": 3, "overlapping": 1, "lost": 1, "held_at_end": 1}
	for k, n := range want {
		if v.Stats[k] != n {
			t.Errorf("stats = %v, want %s=%d", v.Stats, k, n)
		}
	}
	if v.Stats["late_wins"] != 0 {
		t.Errorf("late_wins = %d", v.Stats["late_wins"])
	}
}

func TestCheck_ElectionNoHoldings(t *testing.T) {
	wantOK(t, Election(newLog().run(nil)))
}

func TestCheck_ElectionRoundTrip(t *testing.T) {
	run, _ := electionRun()
	var buf bytes.Buffer
	if err := history.Write(&buf, run); err != nil {
		t.Fatal(err)
	}
	back, err := history.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Holdings, run.Holdings) {
		t.Fatalf("holdings %v, want %v", back.Holdings, run.Holdings)
	}
}

// Two electors for one fencing index.
func TestCheck_ElectionTwoLeadersOneIndex(t *testing.T) {
	run, ix := electionRun()
	run.Holdings = append(run.Holdings, hold("e2", addrC, ix[1], 150, 200, "resign"))
	wantViolations(t, Election(run),
		want{service: eSvc, addr: addrC, index: ix[1], msg: "two leaders for one fencing index 3: holding of elect-0 by e1"},
		want{service: eSvc, addr: addrC, index: ix[1], msg: "the registration at index 3 is of " + addrB})
}

// One elector's later win with a smaller fencing index.
func TestCheck_ElectionLaterWinSmallerIndex(t *testing.T) {
	run, ix := electionRun()
	run.Holdings = append(run.Holdings, hold("e0", addrA, ix[0], 400, 450, "resign"))
	wantViolations(t, Election(run),
		want{service: eSvc, addr: addrA, index: ix[0], msg: "a later leadership of the same elector has a smaller fencing index: holding of elect-0 by e0 (10.200.0.1:80, fencing index 2"})
}

// Another elector's later win with a smaller index — a lagging view — is
// counted, not reported.
func TestCheck_ElectionLateWinAcrossElectors(t *testing.T) {
	run, ix := electionRun()
	run.Holdings = append(run.Holdings, hold("e1", addrB, ix[1], 310, 330, "lost"))
	v := Election(run)
	wantOK(t, v)
	if v.Stats["late_wins"] != 1 {
		t.Errorf("stats = %v", v.Stats)
	}
	wantNote(t, v, "late win (allowed")
}

// A win before the registration was the oldest anywhere, and a fencing
// index that is no registration.
func TestCheck_ElectionNotInLog(t *testing.T) {
	run, ix := electionRun()
	run.Holdings = append(run.Holdings,
		hold("e1", addrB, ix[1], 50, 60, "lost"),
		hold("e2", addrC, ix[2], 500, 600, "resign"))
	wantViolations(t, Election(run),
		want{service: eSvc, addr: addrB, index: ix[1], msg: "became the oldest instance at index 4, which no node applied before"},
		want{service: eSvc, addr: addrC, index: ix[2], msg: "index 4 is not a registration creating " + addrC})
}

// With a journal gap, log failures are noted, not reported.
func TestCheck_ElectionGapNoted(t *testing.T) {
	b := newLog()
	a := b.register(eSvc, addrA, "a1", 2000, 10)
	b.skip(2)
	b.register(eSvc, addrB, "b1", 2000, 20)
	run := b.run(nil)
	run.Holdings = []history.Holding{hold("e0", addrA, a, 15, 30, "resign"), hold("e1", addrB, a+1, 40, 50, "resign")}
	v := Election(run)
	wantOK(t, v)
	wantNote(t, v, "not checked against the log (journal gap at 3-4)")
	if v.Stats["witnessed"] != 1 {
		t.Errorf("stats = %v", v.Stats)
	}
}
