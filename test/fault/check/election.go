package check

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/discoverd/discoverd/test/fault/history"
)

// electionSlack is how much earlier than a holding's Won the witness entry
// must have been applied: none in principle (a node journals an entry
// under the FSM's lock, before a watch can deliver it), 10 ms for the
// journal's clock reading.
const electionSlack = int64(10 * time.Millisecond)

// Election checks the leaderships electors held (Run.Holdings, from
// client.Elect): two leaders never hold one fencing index, no elector's
// later leadership has a smaller fencing index, and every leadership was a
// real one in the committed log.
//
// Holdings are grouped by service. A holding's fencing index F is the
// CreateIndex of its registration: the log index of the register entry that
// created the instance (a registration of an instance already present keeps
// it). The rules:
//
//  1. Identity: holdings with the same F are by the same elector and the
//     same addr. (F is one log index, so one registration of one instance;
//     each elector has its own addr.) A violation names both holdings.
//  2. Per elector, in real time: of two holdings a, b of one elector with
//     a.Won < b.Won, F_b >= F_a. An elector is one Go client kept across
//     its holdings, and every set it follows starts from at least the
//     client's LastIndex, which covers the state a won in; see below for why
//     a newer state's leader has a fencing index no smaller. A violation
//     names both holdings.
//  3. In the committed log (the union of the journals, logView): replaying
//     the service's changes, F is a registration of the holding's addr, and
//     there is a committed index N >= F at which that registration was the
//     oldest instance of the service (the smallest CreateIndex: the
//     client's Leader), with N applied by some node no later than the
//     holding's Won (+10 ms for the journal's clock). It is enough to look
//     at the first such N, the start of the registration's reign: it
//     stays the oldest until it is removed, and a node applies in order.
//     When the journals have an unexplained gap, a failure of this rule is
//     noted, not reported: the replay may be wrong.
//
// Why "later" is about log order and not real time across electors: the
// reigns of rule 3 — the ranges of indices at which one registration is
// the oldest — are disjoint and their fencing indices increase with the
// index: if registration F leads at N and G at N' > N, either G was
// present at N (so F <= G, F being the oldest then) or G was created after
// N >= F. So of any two holdings, the one that won in the newer state has
// the fencing index no smaller — that is what rules 2 and 3 hold the
// cluster and client to. But a holder learns of its leadership (and its
// loss) from a watch stream, which may be late: a node paused after
// applying N delivers N when it resumes, by when the registration may have
// expired (TTL 2 s, shorter than the client's 6 s StreamIdleTimeout) and a
// newer one won elsewhere. So holdings may overlap in real time, and even a
// win later in real time may carry a smaller fencing index than another
// elector's earlier win — the case fencing indices exist for. Those are
// counted (stat late_wins) and the first few noted, not reported.
//
// Stats: holdings, services, electors, witnessed (holdings whose rule 3
// held), overlapping (pairs of holdings of different electors overlapping
// in real time), late_wins, lost (holdings that ended by Done closing),
// held_at_end.
func Election(run *history.Run) Verdict {
	v := newVerdict(NameElection)
	if len(run.Holdings) == 0 {
		return v.done()
	}
	lv := newLogView(run)
	logs := lv.services()
	gapped := lv.firstGap(lv.max) != 0
	bySvc := map[string][]history.Holding{}
	electors := map[string]bool{}
	for _, h := range run.Holdings {
		bySvc[h.Service] = append(bySvc[h.Service], h)
		electors[h.Elector] = true
		switch {
		case h.Lost == math.MaxInt64:
			v.Stats["held_at_end"]++
		case h.End == "lost":
			v.Stats["lost"]++
		}
	}
	v.Stats["holdings"] = len(run.Holdings)
	v.Stats["electors"] = len(electors)
	var late []string
	for _, svc := range sortedKeys(bySvc) {
		v.Stats["services"]++
		hs := bySvc[svc]
		sort.SliceStable(hs, func(i, j int) bool {
			if hs[i].Won != hs[j].Won {
				return hs[i].Won < hs[j].Won
			}
			return hs[i].Elector < hs[j].Elector
		})
		// 1. One fencing index, one elector and addr.
		first := map[uint64]history.Holding{}
		for _, h := range hs {
			o, ok := first[h.FencingIndex]
			if !ok {
				first[h.FencingIndex] = h
				continue
			}
			if o.Elector != h.Elector || o.Addr != h.Addr {
				v.fail(Violation{Service: svc, Addr: h.Addr, Index: h.FencingIndex, At: h.Won,
					Msg: fmt.Sprintf("two leaders for one fencing index %d: %s and %s", h.FencingIndex, describeHolding(o), describeHolding(h))})
			}
		}
		// 2. Per elector, in Won order, fencing indices never decrease.
		last := map[string]history.Holding{}
		for _, h := range hs {
			if o, ok := last[h.Elector]; ok && h.FencingIndex < o.FencingIndex {
				v.fail(Violation{Service: svc, Addr: h.Addr, Index: h.FencingIndex, At: h.Won,
					Msg: fmt.Sprintf("a later leadership of the same elector has a smaller fencing index: %s, after %s", describeHolding(h), describeHolding(o))})
			}
			if o, ok := last[h.Elector]; !ok || h.FencingIndex >= o.FencingIndex {
				last[h.Elector] = h
			}
		}
		// Real time across electors: measured, not required.
		for j, b := range hs {
			for _, a := range hs[:j] {
				if a.Elector == b.Elector {
					continue
				}
				if a.Lost > b.Won {
					v.Stats["overlapping"]++
				}
			}
			for _, a := range hs[:j] {
				if a.Elector != b.Elector && a.Won < b.Won && b.FencingIndex < a.FencingIndex {
					v.Stats["late_wins"]++
					if len(late) < 5 {
						late = append(late, fmt.Sprintf("%s won after %s", describeHolding(b), describeHolding(a)))
					}
					break
				}
			}
		}
		// 3. Every holding is a reign in the committed log.
		reigns := reignsOf(logs[svc])
		for _, h := range hs {
			msg := witness(lv, reigns, h)
			switch {
			case msg == "":
				v.Stats["witnessed"]++
			case gapped:
				v.note("not checked against the log (journal gap at %s): %s", describeGaps(lv.gaps), msg)
			default:
				v.fail(Violation{Service: svc, Addr: h.Addr, Index: h.FencingIndex, At: h.Won, Msg: msg})
			}
		}
	}
	for _, l := range late {
		v.note("late win (allowed: a holder's view may lag; fencing indices order the leaders): %s", l)
	}
	return v.done()
}

// reign is a range of log indices [start, end) at which one registration
// was the oldest instance of its service (end 0: to the end of the log).
type reign struct {
	fencing    uint64
	addr       string
	start, end uint64
}

// reignsOf replays a service's changes and returns each registration's
// reign, by fencing index (CreateIndex).
func reignsOf(sl *serviceLog) map[uint64]reign {
	out := map[uint64]reign{}
	if sl == nil {
		return out
	}
	present := map[string]uint64{} // addr → CreateIndex
	var cur uint64
	for _, c := range sl.changes {
		switch c.kind {
		case kindUp:
			present[c.addr] = c.index
		case kindDown:
			delete(present, c.addr)
		}
		var lead uint64
		var addr string
		for a, ci := range present {
			if lead == 0 || ci < lead {
				lead, addr = ci, a
			}
		}
		if lead == cur {
			continue
		}
		if r, ok := out[cur]; ok && cur != 0 {
			r.end = c.index
			out[cur] = r
		}
		if lead != 0 {
			out[lead] = reign{fencing: lead, addr: addr, start: c.index}
		}
		cur = lead
	}
	return out
}

// witness returns why holding h breaks rule 3 of Election, or "".
func witness(lv *logView, reigns map[uint64]reign, h history.Holding) string {
	r, ok := reigns[h.FencingIndex]
	if !ok {
		s, ok := lv.at(h.FencingIndex)
		switch {
		case !ok:
			return fmt.Sprintf("%s: no journal holds index %d", describeHolding(h), h.FencingIndex)
		case s.e.Type != typeRegister || s.e.Name != h.Service || s.e.Addr != h.Addr || !s.e.Changed:
			return fmt.Sprintf("%s: index %d is not a registration creating %s: %s", describeHolding(h), h.FencingIndex, h.Addr, describeEntry(s.e))
		default:
			return fmt.Sprintf("%s: the registration at index %d was never the oldest instance of %s", describeHolding(h), h.FencingIndex, h.Service)
		}
	}
	if r.addr != h.Addr {
		return fmt.Sprintf("%s: the registration at index %d is of %s", describeHolding(h), h.FencingIndex, r.addr)
	}
	s, _ := lv.at(r.start)
	if s.firstAt > h.Won+electionSlack {
		return fmt.Sprintf("%s: its registration became the oldest instance at index %d, which no node applied before %s, %s after the win",
			describeHolding(h), r.start, clock(s.firstAt), ms(s.firstAt-h.Won))
	}
	return ""
}

// describeHolding names a holding with its elector, addr, fencing index and times.
func describeHolding(h history.Holding) string {
	lost := "still held at the end"
	if h.Lost != math.MaxInt64 {
		lost = fmt.Sprintf("%s %s", strings.TrimSpace(h.End), clock(h.Lost))
	}
	return fmt.Sprintf("holding of %s by %s (%s, fencing index %d, won %s, %s)", h.Service, h.Elector, h.Addr, h.FencingIndex, clock(h.Won), lost)
}
