package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The expiry-storm guard against real processes: three servers, instances
// kept alive by `discoverd register` processes (TTL 2 s, heartbeats every
// ~0.67 s), stopped by SIGKILL (the instances die) or SIGSTOP (they are cut
// off: no heartbeat reaches the cluster, as behind a broken network, until
// SIGCONT). The guard runs as configured below: 50 % of a service's
// instances, from 10 instances, held at most 3 TTLs (6 s) past a deadline.
//
// Bounds the assertions use, from ttl/DESIGN.md: an instance whose last
// heartbeat reached the leader at h has its deadline at h + TTL; killed at
// k, h > k - 0.74 s (heartbeats every TTL/3 + 10 %), so its deadline lies
// in (k + 1.26 s, k + 2 s]. Unheld it is gone soon after; held, not before
// the deadline + 6 s > k + 7.26 s, and by k + 8 s plus a commit.

const (
	stormTTL     = 2 * time.Second
	stormMaxHold = 3 * stormTTL
	// stormSlack covers a commit, the watch reaching the test and a
	// loaded 2-core machine.
	stormSlack = 2 * time.Second
)

func stormArgs(*node) []string {
	return []string{"-storm-threshold", "50%", "-storm-min-instances", "10", "-storm-max-hold", "3x"}
}

// stormService is one service of ten instances, each kept alive by its own
// register process, and a watch on it.
type stormService struct {
	h     *harness
	name  string
	all   string
	regs  []*proc
	addrs []string
	w     *watcher
}

func startStormService(t *testing.T, h *harness, all, name string) *stormService {
	t.Helper()
	s := &stormService{h: h, name: name, all: all}
	for i := range 10 {
		addr := fmt.Sprintf("10.7.%d.%d:80", len(name), i+1)
		s.addrs = append(s.addrs, addr)
		s.regs = append(s.regs, h.start(fmt.Sprintf("register-%s-%d", name, i), "register", "-servers", all, "-ttl", stormTTL.String(), name, addr))
	}
	h.waitServices(all, name, func(l []instance) bool { return len(l) == 10 }, "10 instances")
	s.w = h.startWatch("watch-"+name, all, name)
	for n := 0; ; n++ { // the state block
		e := s.w.next(t, 10*time.Second)
		if e.Kind == "current" {
			if n != 10 {
				t.Fatalf("watch %s: state block of %d instances, want 10", name, n)
			}
			break
		}
	}
	return s
}

// suspectOf reports whether a watch event marks its instance suspect.
func suspectOf(t *testing.T, e watchEvent) bool {
	t.Helper()
	var v struct {
		Suspect bool `json:"suspect"`
	}
	if err := json.Unmarshal([]byte(e.line), &v); err != nil {
		t.Fatalf("watch line %q: %v", e.line, err)
	}
	return v.Suspect
}

// events reads the watch until done says so, failing at the deadline. Each
// event comes with the time it was read.
func (s *stormService) events(t *testing.T, deadline time.Time, what string, done func(e watchEvent, at time.Time) bool) {
	t.Helper()
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("watch %s: %s did not happen in time", s.name, what)
		}
		select {
		case e, ok := <-s.w.events:
			if !ok {
				t.Fatalf("watch %s ended while waiting for %s", s.name, what)
			}
			if strings.HasPrefix(e.Kind, "!") {
				t.Fatalf("watch %s printed %q", s.name, e.line)
			}
			if done(e, time.Now()) {
				return
			}
		case <-time.After(left):
			t.Fatalf("watch %s: %s did not happen in time", s.name, what)
		}
	}
}

// listed is `services -json NAME`: addr → suspect.
func (s *stormService) listed(t *testing.T) (map[string]bool, error) {
	t.Helper()
	r := s.h.cli(5*time.Second, "services", "-json", "-servers", s.all, "-timeout", "2s", s.name)
	if r.code != 0 {
		return nil, fmt.Errorf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	var out struct {
		Instances []struct {
			Addr    string `json:"addr"`
			Suspect *bool  `json:"suspect"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, in := range out.Instances {
		if in.Suspect == nil {
			return nil, fmt.Errorf("services -json without a suspect field: %s", r.stdout)
		}
		m[in.Addr] = *in.Suspect
	}
	return m, nil
}

// stormCounts sums the guard's counters over every node (each counts the
// holds it made while it led).
type stormCounts struct{ held, holds, released, unheld uint64 }

func stormStatus(t *testing.T, h *harness, all string) stormCounts {
	t.Helper()
	r := h.mustCLI(10*time.Second, "status", "-json", "-servers", all, "-timeout", "3s")
	var st struct {
		Nodes []struct {
			ID       string  `json:"id"`
			Held     *uint64 `json:"storm_held"`
			Holds    *uint64 `json:"storm_holds"`
			Released *uint64 `json:"storm_released"`
			Unheld   *uint64 `json:"storm_unheld"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status -json %q: %v", r.stdout, err)
	}
	var c stormCounts
	for _, n := range st.Nodes {
		if n.Held == nil || n.Holds == nil || n.Released == nil || n.Unheld == nil {
			t.Fatalf("status -json lacks the storm counters of %s:\n%s", n.ID, r.stdout)
		}
		c.held, c.holds, c.released, c.unheld = c.held+*n.Held, c.holds+*n.Holds, c.released+*n.Released, c.unheld+*n.Unheld
	}
	return c
}

// TestStorm_GuardWithRealProcesses runs three storms one after the other on
// one cluster: 1 of 10 instances killed (expires on time, unheld); 9 of 10
// killed (held, suspect in list and watch, expired at the max hold); every
// heartbeating client of a service cut off (all held and suspect, none
// expired during the hold; three that come back live on unmarked, the rest
// expire by the end of the max hold).
func TestStorm_GuardWithRealProcesses(t *testing.T) {
	h := newHarness(t)
	c := h.startClusterWith(3, stormArgs)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)

	t.Run("one of ten killed expires on time", func(t *testing.T) {
		s := startStormService(t, h, all, "one")
		before := stormStatus(t, h, all)
		s.regs[0].kill9(t)
		killed := time.Now()
		var took time.Duration
		s.events(t, killed.Add(stormTTL+stormSlack), "the expiry of the killed instance", func(e watchEvent, at time.Time) bool {
			if e.Kind == "update" && suspectOf(t, e) {
				t.Fatalf("%s marked suspect: %s", e.Addr, e.line)
			}
			if e.Kind != "down" {
				return false
			}
			if e.Addr != s.addrs[0] || e.Reason != "expire" {
				t.Fatalf("down event %s", e.line)
			}
			took = at.Sub(killed)
			return true
		})
		if after := stormStatus(t, h, all); after.holds != before.holds {
			t.Fatalf("the guard held something: counters %+v, then %+v", before, after)
		}
		t.Logf("1 of 10 killed: gone %v after the kill (TTL %v)", took.Round(time.Millisecond), stormTTL)
	})

	t.Run("nine of ten killed are held then expire", func(t *testing.T) {
		s := startStormService(t, h, all, "nine")
		before := stormStatus(t, h, all)
		killedAddrs := s.addrs[:9]
		for _, p := range s.regs[:9] {
			p.kill9(t)
		}
		killed := time.Now()
		marked := map[string]time.Duration{}
		s.events(t, killed.Add(stormTTL+stormSlack), "9 suspect markers", func(e watchEvent, at time.Time) bool {
			if e.Kind == "down" {
				t.Fatalf("expired during the hold, %v after the kill: %s", at.Sub(killed), e.line)
			}
			if e.Kind == "update" && suspectOf(t, e) {
				if !slices.Contains(killedAddrs, e.Addr) {
					t.Fatalf("a live instance marked suspect: %s", e.line)
				}
				marked[e.Addr] = at.Sub(killed)
			}
			return len(marked) == len(killedAddrs)
		})
		// Throughout the hold every instance is listed, the killed ones suspect.
		listedChecks := 0
		tick := time.NewTicker(250 * time.Millisecond) // how often the list is checked
		defer tick.Stop()
		for ; time.Since(killed) < stormMaxHold; <-tick.C {
			m, err := s.listed(t)
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != 10 {
				t.Fatalf("%v after the kill, during the hold: %d instances listed, want 10 (%v)", time.Since(killed), len(m), m)
			}
			for _, a := range s.addrs {
				if m[a] != slices.Contains(killedAddrs, a) {
					t.Fatalf("%v after the kill: %s listed suspect=%v", time.Since(killed), a, m[a])
				}
			}
			listedChecks++
		}
		if st := stormStatus(t, h, all); st.holds-before.holds != 9 || st.held != 9 {
			t.Fatalf("during the hold: counters %+v, before %+v; want 9 more holds, 9 held", st, before)
		}
		gone := map[string]time.Duration{}
		s.events(t, killed.Add(stormTTL+stormMaxHold+stormSlack), "the held instances to expire", func(e watchEvent, at time.Time) bool {
			if e.Kind != "down" {
				return false
			}
			if !slices.Contains(killedAddrs, e.Addr) || e.Reason != "expire" {
				t.Fatalf("down event %s", e.line)
			}
			gone[e.Addr] = at.Sub(killed)
			return len(gone) == len(killedAddrs)
		})
		poll(t, 10*time.Second, 100*time.Millisecond, "the guard to count 9 releases", func() (bool, string) {
			st := stormStatus(t, h, all)
			return st.released-before.released == 9 && st.held == 0, fmt.Sprintf("%+v (before %+v)", st, before)
		})
		m, err := s.listed(t)
		if err != nil || len(m) != 1 || m[s.addrs[9]] {
			t.Fatalf("after the hold: %v, %v; want the live instance alone, not suspect", m, err)
		}
		t.Logf("9 of 10 killed: marked suspect %v after the kill; listed during the hold %d times; expired %v after it (max hold %v)",
			spread(marked), listedChecks, spread(gone), stormMaxHold)
	})

	t.Run("every client cut off", func(t *testing.T) {
		s := startStormService(t, h, all, "cut")
		before := stormStatus(t, h, all)
		for _, p := range s.regs {
			p.signal(t, syscall.SIGSTOP)
		}
		cut := time.Now()
		marked := map[string]time.Duration{}
		s.events(t, cut.Add(stormTTL+stormSlack), "10 suspect markers", func(e watchEvent, at time.Time) bool {
			if e.Kind == "down" {
				t.Fatalf("expired during the hold, %v after the cut: %s", at.Sub(cut), e.line)
			}
			if e.Kind == "update" && suspectOf(t, e) {
				marked[e.Addr] = at.Sub(cut)
			}
			return len(marked) == 10
		})
		// Three come back: they heartbeat again, and are simply alive.
		back, still := s.addrs[:3], s.addrs[3:]
		for _, p := range s.regs[:3] {
			p.signal(t, syscall.SIGCONT)
		}
		cleared := map[string]bool{}
		s.events(t, cut.Add(stormMaxHold), "the markers of the three that came back to clear", func(e watchEvent, at time.Time) bool {
			if e.Kind == "down" {
				t.Fatalf("expired during the hold, %v after the cut: %s", at.Sub(cut), e.line)
			}
			if e.Kind == "update" && !suspectOf(t, e) {
				if !slices.Contains(back, e.Addr) {
					t.Fatalf("cleared the marker of one still cut off: %s", e.line)
				}
				cleared[e.Addr] = true
			}
			return len(cleared) == len(back)
		})
		tick := time.NewTicker(250 * time.Millisecond) // how often the list is checked
		defer tick.Stop()
		for ; time.Since(cut) < stormMaxHold; <-tick.C {
			m, err := s.listed(t)
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != 10 {
				t.Fatalf("%v after the cut, during the hold: %d listed, want 10 (%v)", time.Since(cut), len(m), m)
			}
		}
		gone := map[string]time.Duration{}
		s.events(t, cut.Add(stormTTL+stormMaxHold+stormSlack), "the instances still cut off to expire", func(e watchEvent, at time.Time) bool {
			if e.Kind != "down" {
				return false
			}
			if !slices.Contains(still, e.Addr) || e.Reason != "expire" {
				t.Fatalf("down event %s", e.line)
			}
			gone[e.Addr] = at.Sub(cut)
			return len(gone) == len(still)
		})
		m, err := s.listed(t)
		if err != nil || len(m) != len(back) {
			t.Fatalf("after the hold: %v, %v; want the three that came back", m, err)
		}
		for _, a := range back {
			if suspect, ok := m[a]; !ok || suspect {
				t.Fatalf("after the hold %s is listed=%v suspect=%v", a, ok, suspect)
			}
		}
		poll(t, 10*time.Second, 100*time.Millisecond, "the guard's counters", func() (bool, string) {
			st := stormStatus(t, h, all)
			d := stormCounts{held: st.held, holds: st.holds - before.holds, released: st.released - before.released, unheld: st.unheld - before.unheld}
			return d == stormCounts{holds: 10, released: 7, unheld: 3}, fmt.Sprintf("%+v (before %+v)", st, before)
		})
		for _, p := range s.regs[3:] {
			p.kill9(t) // stopped: SIGTERM would wait for a SIGCONT
		}
		t.Logf("all 10 cut off: marked suspect %v after the cut; 3 back unmarked; 7 expired %v after it (max hold %v)",
			spread(marked), spread(gone), stormMaxHold)
	})
}

// spread renders the range of some durations: "1.31s–1.98s".
func spread(m map[string]time.Duration) string {
	var ds []time.Duration
	for _, d := range m {
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	return fmt.Sprintf("%v–%v", ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}
