package check

import (
	"slices"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

// watchLog is the committed log the watch tests follow:
//
//	2 up web a:1       3 up web b:1     4 (db x:1)        5 update web a:1
//	6 down web b:1 (unregister)         7 up web c:1      8 down web a:1 (expire)
//	9, 10 the next leader's no-op and barrier             11 up web d:1
//	12 (db y:1)
func watchLog() *logBuilder {
	b := newLog()
	b.register("web", "a:1", "r1", 3_600_000, 20)
	b.register("web", "b:1", "r2", 3_600_000, 30)
	b.register("db", "x:1", "r3", 3_600_000, 40)
	b.register("web", "a:1", "r4", 3_600_000, 50)
	b.unregister("web", "b:1", "r5", 60)
	b.register("web", "c:1", "r6", 3_600_000, 70)
	b.expire("web", "a:1", 5, 79, 80)
	b.newTerm()
	b.skip(2)
	b.register("web", "d:1", "r7", 3_600_000, 110)
	b.register("db", "y:1", "r8", 3_600_000, 120)
	return b
}

func ev(kind string, index uint64, addr string) history.Event {
	return history.Event{Kind: kind, Index: index, Addr: addr, At: at(int64(index)*10 + 5)}
}

func down(index uint64, addr, reason string) history.Event {
	e := ev(kindDown, index, addr)
	e.Reason = reason
	return e
}

func sess(watcher string, n int, from uint64, end string, evs ...history.Event) history.WatchSession {
	return history.WatchSession{Watcher: watcher, Session: n, Service: "web", Node: []string{"n1", "n2", "n3"}[n%3],
		FromIndex: from, End: end, Events: evs}
}

// goodSessions: w0 starts from the state, resumes twice (once catching up
// to a current marker, once through a resync) and ends final; w1 starts
// late and follows to the end; w2 watches db.
func goodSessions() []history.WatchSession {
	s0 := sess("w0", 0, 0, "resume",
		ev(kindUp, 2, "a:1"), ev(kindUp, 3, "b:1"), ev(kindCurrent, 4, ""),
		ev(kindUpdate, 5, "a:1"), down(6, "b:1", "unregister"))
	s1 := sess("w0", 1, 6, "resume",
		ev(kindUp, 7, "c:1"), down(8, "a:1", "expire"), ev(kindCurrent, 8, ""))
	s2 := sess("w0", 2, 8, "final",
		ev(kindResync, 11, ""), ev(kindUp, 7, "c:1"), ev(kindUp, 11, "d:1"), ev(kindCurrent, 11, ""), ev(kindCurrent, 12, ""))
	w1 := sess("w1", 0, 0, "final", ev(kindUp, 7, "c:1"), ev(kindCurrent, 8, ""), ev(kindUp, 11, "d:1"))
	w2 := sess("w2", 0, 0, "final", ev(kindUp, 4, "x:1"), ev(kindCurrent, 4, ""), ev(kindUp, 12, "y:1"))
	w2.Service = "db"
	// Out of order on purpose: the checker sorts by watcher and session.
	return []history.WatchSession{s2, w1, s0, w2, s1}
}

func watchRun(sessions []history.WatchSession) *history.Run {
	run := watchLog().run(nil)
	run.Sessions = sessions
	return run
}

// edit returns the good sessions with watcher w's session n replaced.
func edit(w string, n int, s history.WatchSession) []history.WatchSession {
	ss := slices.Clone(goodSessions())
	for i := range ss {
		if ss[i].Watcher == w && ss[i].Session == n {
			ss[i] = s
		}
	}
	return ss
}

func TestCheck_WatchesGood(t *testing.T) {
	v := Watches(watchRun(goodSessions()))
	wantOK(t, v)
	if v.Stats["watchers"] != 3 || v.Stats["sessions"] != 5 || v.Stats["converged_checked"] != 3 || v.Stats["state_blocks"] != 4 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// A session that skips one committed change (here the update at 5).
func TestCheck_WatchesMissingChange(t *testing.T) {
	s := sess("w0", 0, 0, "resume",
		ev(kindUp, 2, "a:1"), ev(kindUp, 3, "b:1"), ev(kindCurrent, 4, ""),
		down(6, "b:1", "unregister"))
	v := Watches(watchRun(edit("w0", 0, s)))
	wantViolations(t, v, want{service: "web", addr: "a:1", node: "n1", index: 5, msg: "missing committed change at index 5: update a:1"})
}

// An event for an index where no change of this service committed: one
// that holds another service's entry, and one no journal holds (the
// leader's no-op).
func TestCheck_WatchesUncommittedEvent(t *testing.T) {
	for _, c := range []struct {
		index uint64
		held  string
	}{{12, "register db y:1"}, {9, "missing from every journal"}} {
		s := sess("w0", 1, 6, "resume",
			ev(kindUp, 7, "c:1"), down(8, "a:1", "expire"), ev(kindUp, c.index, "z:1"), ev(kindCurrent, 8, ""))
		v := Watches(watchRun(edit("w0", 1, s)))
		wantViolations(t, v, want{service: "web", addr: "z:1", node: "n2", index: c.index, msg: "event for an entry that never committed"})
		if !strings.Contains(v.Violations[0].Msg, c.held) {
			t.Errorf("message %q lacks %q", v.Violations[0].Msg, c.held)
		}
	}
}

// A resumed stream whose first event comes after the first committed change
// after the resume point skipped it.
func TestCheck_WatchesResumeStartsLate(t *testing.T) {
	s := sess("w0", 1, 6, "resume", down(8, "a:1", "expire"), ev(kindCurrent, 8, ""))
	v := Watches(watchRun(edit("w0", 1, s)))
	wantViolations(t, v, want{service: "web", addr: "c:1", node: "n2", index: 7,
		msg: "resume from 6: first event down at index 8, but the first committed change after 6 is up c:1 at index 7"})

	// The same with only the caught-up marker.
	s = sess("w0", 1, 6, "resume", ev(kindCurrent, 8, ""))
	v = Watches(watchRun(edit("w0", 1, s)))
	wantViolations(t, v, want{service: "web", addr: "c:1", index: 7, msg: "skipped: 7,8"})
}

// A watcher that resumes from a later index than it was delivered.
func TestCheck_WatchesResumeFromWrongIndex(t *testing.T) {
	s := sess("w0", 1, 7, "resume", down(8, "a:1", "expire"), ev(kindCurrent, 8, ""))
	v := Watches(watchRun(edit("w0", 1, s)))
	wantViolations(t, v, want{service: "web", index: 7, msg: "resumed from 7, but the last index delivered before was 6"})
}

// A state block cut short cannot be resumed from an index.
func TestCheck_WatchesResumeInsideBlock(t *testing.T) {
	ss := edit("w1", 0, sess("w1", 0, 0, "error: connection reset", ev(kindUp, 7, "c:1")))
	ss = append(ss, sess("w1", 1, 8, "final", ev(kindUp, 11, "d:1")))
	v := Watches(watchRun(ss))
	wantViolations(t, v, want{service: "web", index: 8, msg: "after a state block cut short"})
}

func TestCheck_WatchesOutOfOrder(t *testing.T) {
	s := sess("w0", 0, 0, "resume",
		ev(kindUp, 2, "a:1"), ev(kindUp, 3, "b:1"), ev(kindCurrent, 4, ""),
		ev(kindUpdate, 5, "a:1"), down(6, "b:1", "unregister"), ev(kindUpdate, 5, "a:1"))
	v := Watches(watchRun(edit("w0", 0, s)))
	wantViolations(t, v, want{service: "web", addr: "a:1", index: 5, msg: "is not after the position 6"})
}

// Events at committed indices with the wrong kind, address or reason.
func TestCheck_WatchesMismatchedEvents(t *testing.T) {
	s := sess("w0", 1, 6, "resume",
		ev(kindUpdate, 7, "c:1"), down(8, "a:1", "unregister"), ev(kindCurrent, 8, ""))
	v := Watches(watchRun(edit("w0", 1, s)))
	wantViolations(t, v,
		want{service: "web", addr: "c:1", index: 7, msg: "kind update, the committed change is up"},
		want{service: "web", addr: "a:1", index: 8, msg: `reason "unregister", the committed change is expire`},
	)
	s = sess("w0", 1, 6, "resume", ev(kindUp, 7, "q:1"), down(8, "a:1", "expire"), ev(kindCurrent, 8, ""))
	v = Watches(watchRun(edit("w0", 1, s)))
	wantViolations(t, v, want{service: "web", addr: "c:1", index: 7, msg: "address q:1, the committed change is for c:1"})
}

// A state block must be the state at its current marker.
func TestCheck_WatchesWrongStateBlock(t *testing.T) {
	s := sess("w1", 0, 0, "error: eof", ev(kindUp, 5, "a:1"), ev(kindUp, 7, "c:1"), ev(kindCurrent, 8, ""), ev(kindUp, 11, "d:1"))
	v := Watches(watchRun(edit("w1", 0, s)))
	wantViolations(t, v, want{service: "web", addr: "a:1", index: 8, msg: "state block at 8 shows a:1 (index 5), which is not registered at 8"})
	wantNote(t, v, `watcher w1: last session ended "error: eof"`)

	s = sess("w1", 0, 0, "error: eof", ev(kindUp, 3, "c:1"), ev(kindCurrent, 8, ""), ev(kindDown, 11, "d:1"))
	v = Watches(watchRun(edit("w1", 0, s)))
	wantViolations(t, v,
		want{service: "web", addr: "c:1", index: 8, msg: "state block at 8 has c:1 at index 3, its last registration by 8 is at index 7"},
		want{service: "web", addr: "d:1", index: 11, msg: "kind down, the committed change is up"},
	)
}

// A watcher that ended final at the last change must hold the final state.
func TestCheck_WatchesNotConverged(t *testing.T) {
	run := watchRun(goodSessions())
	run.Final = append(run.Final, history.Instance{Service: "web", Addr: "e:1", Index: 11})
	v := Watches(run)
	wantViolations(t, v,
		want{service: "web", addr: "e:1", index: 12, msg: "watcher w0 session 2 (from 8 on n3): did not converge: its view at 12 lacks e:1"},
		want{service: "web", addr: "e:1", index: 11, msg: "watcher w1 session 0 (from 0 on n1): did not converge"},
	)
	// A watcher that stopped before the last change is only noted.
	ss := edit("w1", 0, sess("w1", 0, 0, "final", ev(kindUp, 7, "c:1"), ev(kindCurrent, 8, "")))
	run.Sessions = ss
	v = Watches(run)
	wantViolations(t, v, want{addr: "e:1", msg: "watcher w0 session 2"})
	wantNote(t, v, "watcher w1: ended at index 8, before web's last change at 11")
}

// A gap inside a term (no journal holds 9 and 10, no term change) leaves
// the state at 11 unknown: the block there is noted, not judged.
func TestCheck_WatchesJournalGap(t *testing.T) {
	b := watchLog()
	for i := range b.entries {
		b.entries[i].Term = 2
	}
	run := b.run(nil)
	run.Sessions = goodSessions()
	v := Watches(run)
	wantOK(t, v)
	wantNote(t, v, "state block at 11 not checked (journal gap at 9)")
	wantNote(t, v, "journal gap at 9-10; those indices not checked")
}
