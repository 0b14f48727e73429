package netproxy

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// Blackholing 0→1 silences what node 0 sends, on a connection node 0 dialed
// and on one node 1 dialed, while node 1's bytes still reach node 0. The
// dropped bytes never arrive, not even after healing.
func TestNetproxy_BlackholeOneDirection(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)
	a0, a1 := dial(t, m, tgs, 0, 1) // dialed by 0
	b1, b0 := dial(t, m, tgs, 1, 0) // dialed by 1

	m.SetLink(0, 1, Link{Blackhole: true})
	send(t, a0, "lost-a")
	waitDropped(t, m, 0, 1, 6)
	send(t, b0, "lost-b")
	waitDropped(t, m, 0, 1, 12)

	send(t, a1, "back-a")
	expect(t, a0, "back-a")
	send(t, b1, "back-b")
	expect(t, b0, "back-b")

	m.SetLink(0, 1, Link{})
	send(t, a0, "after-a")
	expect(t, a1, "after-a") // the first bytes to arrive: "lost-a" is gone
	send(t, b0, "after-b")
	expect(t, b1, "after-b")

	st := m.Stats()
	if got := st.Link(0, 1); got.BytesDropped != 12 {
		t.Errorf("link 0->1 dropped %d bytes, want 12", got.BytesDropped)
	}
	if got := st.Link(1, 0); got.BytesDropped != 0 {
		t.Errorf("link 1->0 dropped %d bytes, want 0", got.BytesDropped)
	}
}

// Healing a cut resumes both directions on the same connections.
func TestNetproxy_HealResumesSameConnection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cut, heal func(m *Mesh)
	}{
		{"Cut/Heal", func(m *Mesh) { m.Cut(0, 1) }, func(m *Mesh) { m.Heal(1, 0) }},
		{"Isolate/HealAll", func(m *Mesh) { m.Isolate(1) }, func(m *Mesh) { m.HealAll() }},
		{"Partition/Partition", func(m *Mesh) { m.Partition([]int{0}, []int{1}) }, func(m *Mesh) { m.Partition([]int{0, 1}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, tgs := newMesh(t, 2, 1)
			c, s := dial(t, m, tgs, 0, 1)
			send(t, c, "before")
			expect(t, s, "before")

			tc.cut(m)
			send(t, c, "lost")
			send(t, s, "lost too")
			waitDropped(t, m, 0, 1, 4)
			waitDropped(t, m, 1, 0, 8)

			tc.heal(m)
			send(t, c, "resumed")
			expect(t, s, "resumed")
			send(t, s, "resumed too")
			expect(t, c, "resumed too")
			if st := m.Stats().Link(0, 1); st.Conns != 1 || st.Live != 1 {
				t.Errorf("conns=%d live=%d, want the one connection still open", st.Conns, st.Live)
			}
		})
	}
}

// On five nodes, which directed links pass after each topology change —
// checked both on the settings and with traffic over every proxy.
func TestNetproxy_Topology(t *testing.T) {
	const n = 5
	type pair = [2]int // a directed link
	// both: each pair blackholed in both directions.
	both := func(ps ...pair) map[pair]bool {
		out := map[pair]bool{}
		for _, p := range ps {
			out[p], out[pair{p[1], p[0]}] = true, true
		}
		return out
	}
	// across: every link between nodes of different groups blackholed.
	across := func(groupOf [n]int) map[pair]bool {
		out := map[pair]bool{}
		for a := range n {
			for b := range n {
				if a != b && groupOf[a] != groupOf[b] {
					out[pair{a, b}] = true
				}
			}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		apply   func(m *Mesh)
		blocked map[pair]bool
	}{
		{"none", func(m *Mesh) {}, nil},
		{"Cut(1,3)", func(m *Mesh) { m.Cut(1, 3) }, both(pair{1, 3})},
		{"Cut(0,1)+Cut(0,2)", func(m *Mesh) { m.Cut(0, 1); m.Cut(2, 0) }, both(pair{0, 1}, pair{0, 2})},
		{"Isolate(2)", func(m *Mesh) { m.Isolate(2) }, both(pair{2, 0}, pair{2, 1}, pair{2, 3}, pair{2, 4})},
		{"one way 4->0", func(m *Mesh) { m.SetLink(4, 0, Link{Blackhole: true}) }, map[pair]bool{{4, 0}: true}},
		{"Partition({0,1},{2,3,4})", func(m *Mesh) { m.Partition([]int{0, 1}, []int{2, 3, 4}) }, across([n]int{0, 0, 1, 1, 1})},
		{"Partition({0,4},{1}) leaves 2 and 3 alone", func(m *Mesh) { m.Partition([]int{4, 0}, []int{1}) }, across([n]int{0, 1, 2, 3, 0})},
		{"Partition replaces earlier cuts", func(m *Mesh) {
			m.Isolate(0)
			m.Cut(3, 4)
			m.Partition([]int{0, 1, 2}, []int{3, 4})
		}, across([n]int{0, 0, 0, 1, 1})},
		{"Partition of everyone heals", func(m *Mesh) { m.Isolate(3); m.Partition([]int{0, 1, 2, 3, 4}) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, tgs := newMesh(t, n, 1)
			tc.apply(m)
			for a := range n {
				for b := range n {
					if a != b && m.Link(a, b).Blackhole != tc.blocked[pair{a, b}] {
						t.Errorf("link %d->%d blackholed=%v, want %v", a, b, !tc.blocked[pair{a, b}], tc.blocked[pair{a, b}])
					}
				}
			}
			// probe sends msg from the `from` end; it must arrive or be
			// dropped on link from→to according to the table.
			probe := func(fromEnd, toEnd net.Conn, from, to int, msg string) {
				t.Helper()
				before := m.Stats().Link(from, to).BytesDropped
				send(t, fromEnd, msg)
				if tc.blocked[pair{from, to}] {
					waitDropped(t, m, from, to, before+int64(len(msg)))
				} else {
					expect(t, toEnd, msg)
				}
			}
			for a := range n {
				for b := range n {
					if a == b {
						continue
					}
					ca, cb := dial(t, m, tgs, a, b)
					probe(ca, cb, a, b, fmt.Sprintf("dialer %d->%d", a, b))
					probe(cb, ca, b, a, fmt.Sprintf("reply %d->%d", b, a))
					ca.Close()
				}
			}
		})
	}
}

func TestNetproxy_DelayKeepsOrder(t *testing.T) {
	const delay = 150 * time.Millisecond
	m, tgs := newMesh(t, 2, 1)
	c, s := dial(t, m, tgs, 0, 1)
	m.SetLink(0, 1, Link{Delay: delay}) // applies to the existing connection

	var want bytes.Buffer
	start := time.Now()
	var lastWrite time.Time
	for i := range 50 {
		msg := fmt.Sprintf("msg-%03d|", i)
		want.WriteString(msg)
		lastWrite = time.Now()
		send(t, c, msg)
	}
	// The reverse direction has no delay: it overtakes the delayed bytes.
	send(t, s, "pong")
	expect(t, c, "pong")

	first := readN(t, s, 1)
	firstAt := time.Now()
	rest := readN(t, s, want.Len()-1)
	lastAt := time.Now()
	if got := string(first) + string(rest); got != want.String() {
		t.Fatalf("got %q, want %q", got, want.String())
	}
	if d := firstAt.Sub(start); d < delay {
		t.Errorf("first byte after %v, want at least %v", d, delay)
	}
	if d := lastAt.Sub(lastWrite); d < delay {
		t.Errorf("last byte %v after its write, want at least %v", d, delay)
	}

	// Shrinking the delay does not let later chunks overtake earlier ones.
	m.SetLink(0, 1, Link{Delay: 300 * time.Millisecond})
	send(t, c, "A")
	waitFor(t, "A queued", func() bool { return m.Stats().Link(0, 1).BytesQueued == 1 })
	m.SetLink(0, 1, Link{})
	send(t, c, "B")
	expect(t, s, "AB")

	// Delayed bytes are delivered before an orderly close is passed on.
	m.SetLink(0, 1, Link{Delay: 100 * time.Millisecond})
	send(t, c, "last words")
	c.Close()
	expect(t, s, "last words")
	expectClosed(t, s)
}

// A delayed chunk whose link is blackholed before its release is dropped.
func TestNetproxy_BlackholeDropsDelayed(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)
	c, s := dial(t, m, tgs, 0, 1)
	m.SetLink(0, 1, Link{Delay: 200 * time.Millisecond})
	send(t, c, "held")
	waitFor(t, "held bytes queued", func() bool { return m.Stats().Link(0, 1).BytesQueued == 4 })
	m.SetLink(0, 1, Link{Blackhole: true, Delay: 200 * time.Millisecond})
	waitDropped(t, m, 0, 1, 4)
	m.SetLink(0, 1, Link{})
	send(t, c, "fresh")
	expect(t, s, "fresh")
	// The proxy counts bytes as delivered just after writing them, so the
	// receiver may read them a moment before the counter drops.
	waitFor(t, "no bytes queued after the fresh ones arrived", func() bool { return m.Stats().Link(0, 1).BytesQueued == 0 })
}

// dropRun sends chunks numbered 0..n-1 over link 0→1 with the given drop
// share, one chunk at a time (each read by the proxy before the next is
// sent, so each is one chunk), and returns the numbers that arrived.
func dropRun(t *testing.T, seed int64, share float64, n int) []int {
	t.Helper()
	const size = 64
	m, tgs := newMesh(t, 2, seed)
	c, s := dial(t, m, tgs, 0, 1)
	m.SetLink(0, 1, Link{DropShare: share})
	for k := range n {
		send(t, c, strings.Repeat(string(rune('A'+k%26)), size))
		waitFor(t, "chunk accounted for", func() bool {
			st := m.Stats().Link(0, 1)
			return st.BytesPassed+st.BytesDropped == int64((k+1)*size)
		})
	}
	passed := m.Stats().Link(0, 1).BytesPassed
	got := readN(t, s, int(passed))
	var arrived []int
	last := -1
	for i := 0; i < len(got); i += size {
		ch := got[i : i+size]
		if !bytes.Equal(ch, bytes.Repeat(ch[:1], size)) {
			t.Fatalf("chunk at %d torn: %q", i, ch)
		}
		// Recover the chunk number: the next one after last with this letter.
		k := last + 1
		for rune('A'+k%26) != rune(ch[0]) {
			k++
		}
		arrived = append(arrived, k)
		last = k
	}
	return arrived
}

func TestNetproxy_DropShare(t *testing.T) {
	const n = 100
	t.Run("all", func(t *testing.T) {
		if got := dropRun(t, 1, 1.0, n); len(got) != 0 {
			t.Errorf("share 1.0 let %d chunks through", len(got))
		}
	})
	t.Run("none", func(t *testing.T) {
		got := dropRun(t, 1, 0.0, n)
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(got, want) {
			t.Errorf("share 0.0 delivered %v", got)
		}
	})
	t.Run("half is reproducible", func(t *testing.T) {
		a, b := dropRun(t, 42, 0.5, n), dropRun(t, 42, 0.5, n)
		if !slices.Equal(a, b) {
			t.Fatalf("same seed, different drops:\n%v\n%v", a, b)
		}
		if len(a) < n/4 || len(a) > 3*n/4 {
			t.Errorf("share 0.5 let %d of %d chunks through", len(a), n)
		}
		if c := dropRun(t, 43, 0.5, n); slices.Equal(a, c) {
			t.Errorf("seeds 42 and 43 dropped the same chunks")
		}
	})
}

func TestNetproxy_Refuse(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)
	old0, old1 := dial(t, m, tgs, 0, 1)

	m.Refuse(0, 1, true)
	expectRefused(t, m.Addr(0, 1))

	// The existing connection still passes both ways.
	send(t, old0, "still here")
	expect(t, old1, "still here")
	send(t, old1, "me too")
	expect(t, old0, "me too")

	// The other direction's proxy still takes new connections.
	r1, r0 := dial(t, m, tgs, 1, 0)
	send(t, r1, "other way")
	expect(t, r0, "other way")

	m.Refuse(0, 1, false)
	// The target never saw the refused connection: the next one it
	// accepts carries the new connection's bytes.
	n0, n1 := dial(t, m, tgs, 0, 1)
	send(t, n0, "new")
	expect(t, n1, "new")

	st := m.Stats().Link(0, 1)
	if st.Refused != 1 || st.Conns != 2 {
		t.Errorf("refused=%d conns=%d, want 1 and 2", st.Refused, st.Conns)
	}

	// HealAll lifts refusals too.
	m.Refuse(0, 1, true)
	m.HealAll()
	h0, h1 := dial(t, m, tgs, 0, 1)
	send(t, h0, "healed")
	expect(t, h1, "healed")
}

func TestNetproxy_Reset(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)
	x0, x1 := dial(t, m, tgs, 0, 1)
	y0, y1 := dial(t, m, tgs, 0, 1)
	z1, z0 := dial(t, m, tgs, 1, 0)
	m.SetLink(0, 1, Link{Delay: time.Hour}) // a reset also drops what is held
	send(t, y0, "never")
	waitFor(t, "held bytes queued", func() bool { return m.Stats().Link(0, 1).BytesQueued == 5 })
	m.SetLink(0, 1, Link{})

	m.Reset(0, 1)
	for _, c := range []net.Conn{x0, x1, y0, y1} {
		expectClosed(t, c)
	}
	waitFor(t, "no live connections through 0->1", func() bool { return m.Stats().Link(0, 1).Live == 0 })
	waitFor(t, "the held bytes dropped", func() bool { return m.Stats().Link(0, 1).BytesQueued == 0 })

	// The connection through the other proxy stays.
	send(t, z1, "untouched")
	expect(t, z0, "untouched")
	send(t, z0, "untouched too")
	expect(t, z1, "untouched too")

	// New connections pass.
	n0, n1 := dial(t, m, tgs, 0, 1)
	send(t, n0, "again")
	expect(t, n1, "again")
}
