package netproxy

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNetproxy_PassBothWays(t *testing.T) {
	m, tgs := newMesh(t, 3, 1)
	seen := map[string]bool{}
	for from := range 3 {
		for to := range 3 {
			if from == to {
				continue
			}
			addr := m.Addr(from, to)
			host, _, err := net.SplitHostPort(addr)
			if err != nil || host != "127.0.0.1" {
				t.Fatalf("Addr(%d, %d) = %q, want 127.0.0.1:port", from, to, addr)
			}
			if seen[addr] {
				t.Fatalf("Addr(%d, %d) = %q used twice", from, to, addr)
			}
			seen[addr] = true

			c, s := dial(t, m, tgs, from, to)
			send(t, c, fmt.Sprintf("hello %d->%d", from, to))
			expect(t, s, fmt.Sprintf("hello %d->%d", from, to))
			send(t, s, fmt.Sprintf("reply %d->%d", to, from))
			expect(t, c, fmt.Sprintf("reply %d->%d", to, from))
		}
	}
}

// Many chunks both ways at once on one connection arrive intact and in order.
func TestNetproxy_PassBulkBothWays(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)
	c, s := dial(t, m, tgs, 0, 1)
	up, down := make([]byte, 3<<20+17), make([]byte, 2<<20+5)
	rand.Read(up)
	rand.Read(down)

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, w := range []struct {
		conn net.Conn
		data []byte
	}{{c, up}, {s, down}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.conn.SetWriteDeadline(time.Now().Add(patience))
			_, err := w.conn.Write(w.data)
			errs <- err
		}()
	}
	gotUp, gotDown := readN(t, s, len(up)), readN(t, c, len(down))
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatal("bulk data corrupted")
	}
	waitFor(t, "byte counters", func() bool {
		st := m.Stats()
		return st.Link(0, 1).BytesPassed == int64(len(up)) && st.Link(1, 0).BytesPassed == int64(len(down))
	})
}

func TestNetproxy_ClosePropagates(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)

	c, s := dial(t, m, tgs, 0, 1)
	send(t, c, "bye")
	c.Close()
	expect(t, s, "bye") // queued bytes are delivered before the close
	expectClosed(t, s)

	c, s = dial(t, m, tgs, 1, 0)
	send(t, s, "bye")
	s.Close()
	expect(t, c, "bye")
	expectClosed(t, c)

	waitFor(t, "no live connections", func() bool { return m.Stats().Total().Live == 0 })
}

// A proxy whose target is down resets the connection it accepted.
func TestNetproxy_TargetDown(t *testing.T) {
	m, tgs := newMesh(t, 2, 1)
	tgs[1].ln.Close()
	expectRefused(t, m.Addr(0, 1))
}

func TestNetproxy_Overrides(t *testing.T) {
	m, _ := newMesh(t, 3, 1)
	ids := []string{"a", "b", "c"}
	want := []string{
		"b=" + m.Addr(0, 1) + ",c=" + m.Addr(0, 2),
		"a=" + m.Addr(1, 0) + ",c=" + m.Addr(1, 2),
		"a=" + m.Addr(2, 0) + ",b=" + m.Addr(2, 1),
	}
	for i, w := range want {
		if got := m.Overrides(i, ids); got != w {
			t.Errorf("Overrides(%d) = %q, want %q", i, got, w)
		}
	}
	mustPanic(t, "Overrides with too few ids", func() { m.Overrides(0, ids[:2]) })
	mustPanic(t, "Overrides of node 3", func() { m.Overrides(3, ids) })
}

func TestNetproxy_BadArguments(t *testing.T) {
	if _, err := NewMesh(nil, 1); err == nil {
		t.Error("NewMesh(nil) succeeded")
	}
	if _, err := NewMesh([]string{"127.0.0.1:1", "no-port"}, 1); err == nil {
		t.Error("NewMesh with a target that is not host:port succeeded")
	}
	m, _ := newMesh(t, 3, 1)
	mustPanic(t, "Addr(1, 1)", func() { m.Addr(1, 1) })
	mustPanic(t, "Addr(0, 3)", func() { m.Addr(0, 3) })
	mustPanic(t, "Addr(-1, 0)", func() { m.Addr(-1, 0) })
	mustPanic(t, "SetLink(2, 2)", func() { m.SetLink(2, 2, Link{}) })
	mustPanic(t, "Isolate(5)", func() { m.Isolate(5) })
	mustPanic(t, "Partition with a node twice", func() { m.Partition([]int{0, 1}, []int{1, 2}) })
	mustPanic(t, "Partition with node 7", func() { m.Partition([]int{7}) })
}

func TestNetproxy_LinkSettings(t *testing.T) {
	m, _ := newMesh(t, 2, 1)
	m.SetLink(0, 1, Link{Delay: -time.Second, DropShare: 3})
	if got, want := m.Link(0, 1), (Link{DropShare: 1}); got != want {
		t.Errorf("normalized link = %+v, want %+v", got, want)
	}
	m.SetLink(0, 1, Link{DropShare: -1})
	if got := m.Link(0, 1); got != (Link{}) {
		t.Errorf("normalized link = %+v, want pass", got)
	}
	// Cut, Isolate and Partition touch only the blackhole flag; Heal and
	// HealAll restore pass.
	slow := Link{Delay: 10 * time.Millisecond}
	m.SetLink(0, 1, slow)
	m.Cut(0, 1)
	if got := m.Link(0, 1); got != (Link{Blackhole: true, Delay: slow.Delay}) {
		t.Errorf("after Cut: %+v", got)
	}
	m.Partition([]int{0, 1})
	if got := m.Link(0, 1); got != slow {
		t.Errorf("after Partition: %+v", got)
	}
	m.Isolate(1)
	if got := m.Link(0, 1); got != (Link{Blackhole: true, Delay: slow.Delay}) {
		t.Errorf("after Isolate: %+v", got)
	}
	m.Heal(0, 1)
	if got := m.Link(0, 1); got != (Link{}) {
		t.Errorf("after Heal: %+v", got)
	}

	for _, tc := range []struct {
		l    Link
		want string
	}{
		{Link{}, "pass"},
		{Link{Blackhole: true}, "blackhole"},
		{Link{Delay: 50 * time.Millisecond, DropShare: 0.25}, "delay=50ms drop=0.25"},
		{Link{Blackhole: true, Delay: time.Second}, "blackhole delay=1s"},
	} {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.l, got, tc.want)
		}
	}
}

func TestNetproxy_Stats(t *testing.T) {
	m, tgs := newMesh(t, 3, 1)

	c01, s01 := dial(t, m, tgs, 0, 1)
	send(t, c01, strings.Repeat("x", 100))
	expect(t, s01, strings.Repeat("x", 100))
	send(t, s01, strings.Repeat("y", 50))
	expect(t, c01, strings.Repeat("y", 50))

	c20, s20 := dial(t, m, tgs, 2, 0)
	send(t, c20, strings.Repeat("z", 10))
	expect(t, s20, strings.Repeat("z", 10))

	m.SetLink(1, 2, Link{Blackhole: true})
	c12, _ := dial(t, m, tgs, 1, 2)
	send(t, c12, "1234567")
	waitDropped(t, m, 1, 2, 7)

	m.Refuse(2, 1, true)
	expectRefused(t, m.Addr(2, 1))

	want := map[[2]int]LinkStats{
		{0, 1}: {From: 0, To: 1, Conns: 1, Live: 1, BytesPassed: 100},
		{1, 0}: {From: 1, To: 0, BytesPassed: 50},
		{2, 0}: {From: 2, To: 0, Conns: 1, Live: 1, BytesPassed: 10},
		{1, 2}: {From: 1, To: 2, Conns: 1, Live: 1, BytesDropped: 7},
		{2, 1}: {From: 2, To: 1, Refused: 1},
		{0, 2}: {From: 0, To: 2},
	}
	waitFor(t, "stats", func() bool {
		for _, l := range m.Stats().Links {
			if l != want[[2]int{l.From, l.To}] {
				return false
			}
		}
		return true
	})
	st := m.Stats()
	if len(st.Links) != 6 {
		t.Fatalf("%d links, want 6", len(st.Links))
	}
	if got, w := st.Total(), (LinkStats{From: -1, To: -1, Conns: 3, Refused: 1, Live: 3, BytesPassed: 160, BytesDropped: 7}); got != w {
		t.Errorf("Total() = %+v, want %+v", got, w)
	}
	if s := st.String(); !strings.Contains(s, "0->1 conns=1 refused=0 live=1 passed=100 dropped=0 queued=0\n") ||
		!strings.Contains(s, "2->1 conns=0 refused=1") || strings.Count(s, "\n") != 6 {
		t.Errorf("String() =\n%s", s)
	}

	c01.Close()
	waitFor(t, "connection 0->1 closed", func() bool { return m.Stats().Link(0, 1).Live == 0 })
	if got := m.Stats().Link(0, 1).Conns; got != 1 {
		t.Errorf("Conns after close = %d, want 1", got)
	}
}

// Close ends every goroutine of the mesh, whatever its connections were
// doing: idle, blackholed, holding delayed bytes, or stalled on a receiver
// that does not read with a full queue behind it.
func TestNetproxy_CloseStopsEverything(t *testing.T) {
	tgs := []*target{newTarget(t), newTarget(t), newTarget(t)}
	before := runtime.NumGoroutine()

	m, err := NewMesh([]string{tgs[0].addr(), tgs[1].addr(), tgs[2].addr()}, 1)
	if err != nil {
		t.Fatal(err)
	}
	idle, _ := dial(t, m, tgs, 0, 1)

	m.SetLink(1, 2, Link{Blackhole: true})
	holed, _ := dial(t, m, tgs, 1, 2)
	send(t, holed, "into the void")
	waitDropped(t, m, 1, 2, 13)

	m.SetLink(2, 0, Link{Delay: time.Hour})
	delayed, _ := dial(t, m, tgs, 2, 0)
	send(t, delayed, "later")
	waitFor(t, "delayed bytes queued", func() bool { return m.Stats().Link(2, 0).BytesQueued == 5 })

	// Node 0 floods node 2, which never reads: socket buffers fill, then
	// the queue, then the proxy stops reading and the writer blocks.
	m.SetLink(0, 2, Link{Delay: time.Hour})
	flood, _ := dial(t, m, tgs, 0, 2)
	floodDone := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			if _, err := flood.Write(chunk); err != nil {
				floodDone <- err
				return
			}
		}
	}()
	waitFor(t, "a full queue", func() bool {
		return m.Stats().Link(0, 2).BytesQueued > MaxQueuedBytes-ChunkSize
	})
	if q := m.Stats().Link(0, 2).BytesQueued; q > MaxQueuedBytes {
		t.Errorf("queued %d bytes, bound is %d", q, MaxQueuedBytes)
	}
	select {
	case err := <-floodDone:
		t.Fatalf("the flood ended before Close: %v", err)
	default:
	}
	// One connection still dialing its target when Close comes: the proxy
	// accepted it, and its upstream connection may or may not exist yet.
	dialing, err := net.DialTimeout("tcp", m.Addr(1, 0), patience)
	if err != nil {
		t.Fatal(err)
	}
	defer dialing.Close()

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-floodDone:
	case <-time.After(patience):
		t.Fatal("the flood writer is still blocked after Close")
	}
	for _, c := range []net.Conn{idle, holed, delayed, dialing} {
		expectClosed(t, c)
	}
	if st := m.Stats().Total(); st.Live != 0 || st.BytesQueued != 0 {
		t.Errorf("after Close: live=%d queued=%d", st.Live, st.BytesQueued)
	}
	if c, err := net.DialTimeout("tcp", m.Addr(0, 1), time.Second); err == nil {
		c.Close()
		t.Error("proxy still accepting after Close")
	}
	// Close waited for its goroutines, so none of the mesh's may remain.
	// Polling covers goroutines of this test (the targets' handoffs) that
	// are still on their way out. No slack: NumGoroutine does not count the
	// runtime's system goroutines, and one leaked goroutine per mesh is
	// exactly the kind of leak this test is for. Raise it if another Go
	// release starts user-visible helpers.
	const slack = 0
	deadline := time.Now().Add(patience)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before+slack {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s",
				before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}
