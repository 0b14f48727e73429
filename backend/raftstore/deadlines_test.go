package raftstore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/ttl"
)

// The deadline rounds between real peer listeners on loopback, with fake
// Raft nodes whose terms and leadership the tests set.

type fakeDLNode struct {
	id     string
	mu     sync.Mutex
	leader uint64 // LeaderTerm
	term   uint64 // CurrentTerm
	voters *[]raftnode.Peer
}

func (n *fakeDLNode) ID() string { return n.id }
func (n *fakeDLNode) LeaderTerm() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}
func (n *fakeDLNode) CurrentTerm() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.term
}
func (n *fakeDLNode) Voters() ([]raftnode.Peer, error) { return *n.voters, nil }
func (n *fakeDLNode) DialAddr(_, addr string) string   { return addr }
func (n *fakeDLNode) set(leader, term uint64) {
	n.mu.Lock()
	n.leader, n.term = leader, term
	n.mu.Unlock()
}

type dlPeer struct {
	node  *fakeDLNode
	table *ttl.Table
	d     *Deadlines
	addr  string
	stop  func()
}

// newDLCluster starts n peers serving the peer protocol; none leads.
func newDLCluster(t *testing.T, n int) []*dlPeer {
	t.Helper()
	var voters []raftnode.Peer
	var peers []*dlPeer
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := mux.New(ln, mux.Config{Logger: slog.New(slog.DiscardHandler)})
		pln := m.Listen(mux.ConnPeer)
		go func() { _ = m.Serve() }()
		node := &fakeDLNode{id: string(rune('a' + i)), term: 1, voters: &voters}
		table := ttl.NewTable(nil)
		pool := rpcconn.NewPool(rpcconn.Options{Proto: mux.ConnPeer, DialTimeout: time.Second})
		d := NewDeadlines(DeadlinesConfig{PushTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)}, node, table, pool)
		go func() { _ = d.ServePeers(pln) }()
		p := &dlPeer{node: node, table: table, d: d, addr: ln.Addr().String()}
		p.stop = sync.OnceFunc(func() { d.Close(); pool.Close(); _ = m.Close() })
		t.Cleanup(p.stop)
		voters = append(voters, raftnode.Peer{ID: node.id, Addr: p.addr})
		peers = append(peers, p)
	}
	return peers
}

// web is a registration index.
const web uint64 = 42

func remainingOn(p *dlPeer, k uint64) time.Duration {
	return p.table.Collect(0).Remaining[k]
}

func TestDeadlines_ReplicateReachesAMajorityAndEveryPeer(t *testing.T) {
	c := newDLCluster(t, 3)
	for _, p := range c {
		p.node.set(0, 2)
	}
	c[0].node.set(2, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c[0].d.Replicate(ctx, 2, []ttl.Renewal{{Index: web, Remaining: 10 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	// The leader's own table and at least one other hold it at once; the
	// straggler gets it too.
	if r := remainingOn(c[0], web); r <= 9*time.Second {
		t.Fatalf("leader's own table: %v remaining", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for remainingOn(c[1], web) == 0 || remainingOn(c[2], web) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the followers never held the pushed deadline")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeadlines_OneFollowerDownStillAMajorityTwoDownNone(t *testing.T) {
	c := newDLCluster(t, 3)
	c[0].node.set(2, 2)
	c[2].stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c[0].d.Replicate(ctx, 2, []ttl.Renewal{{Index: web, Remaining: time.Second}}); err != nil {
		t.Fatalf("with one follower down: %v", err)
	}
	c[1].stop()
	err := c[0].d.Replicate(ctx, 2, []ttl.Renewal{{Index: web, Remaining: time.Second}})
	if !errors.Is(err, codes.ErrNoLeader) {
		t.Fatalf("with both followers down: %v, want no_leader", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the failed round waited for the context instead of failing on the refused dials")
	}
}

func TestDeadlines_NotLeaderIsRefusedAtOnce(t *testing.T) {
	c := newDLCluster(t, 3)
	err := c[0].d.Replicate(context.Background(), 1, []ttl.Renewal{{Index: web, Remaining: time.Second}})
	if !errors.Is(err, codes.ErrNotLeader) {
		t.Fatalf("push from a node that does not lead: %v, want not_leader", err)
	}
	if _, err := c[0].d.CollectTables(context.Background()); !errors.Is(err, codes.ErrNotLeader) {
		t.Fatalf("collection from a node that does not lead: %v, want not_leader", err)
	}
}

// The property the handover rests on: once a new leader has collected the
// tables of a majority, the old leader — which may not know yet that it was
// replaced — can no longer have a heartbeat acknowledged.
func TestDeadlines_OldLeaderCannotAcknowledgeAfterANewLeaderCollected(t *testing.T) {
	c := newDLCluster(t, 3)
	old, follower, next := c[0], c[1], c[2]
	old.node.set(2, 2)
	follower.node.set(0, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.d.Replicate(ctx, 2, []ttl.Renewal{{Index: web, Remaining: 8 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	// next wins term 3 with follower's vote; old is cut off and never hears
	// of it. next collects: the deadline the old leader acknowledged is in
	// a table of the majority it reads.
	next.node.set(3, 3)
	old.stop() // unreachable for next
	col, err := next.d.CollectTables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	best := col.Self.Remaining[web]
	for _, o := range col.Others {
		best = max(best, o.Remaining[web])
	}
	if best < 7*time.Second {
		t.Fatalf("the collected tables hold %v for web, want the acknowledged ~8s", best)
	}
	// The old leader comes back still believing it leads term 2; the
	// follower is still in term 2 by its Raft, but answered the collection
	// of term 3: the push is refused, and no acknowledgement is possible.
	oldAgain := NewDeadlines(DeadlinesConfig{PushTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)}, old.node, old.table,
		rpcconn.NewPool(rpcconn.Options{Proto: mux.ConnPeer}))
	err = oldAgain.Replicate(ctx, 2, []ttl.Renewal{{Index: web, Remaining: 8 * time.Second}})
	if !errors.Is(err, codes.ErrNoLeader) {
		t.Fatalf("old leader's push after the collection: %v, want no_leader (refused)", err)
	}
}

// Renewals a leadership's tracker made are pushed only in that term: the
// same node leading a newer term refuses them (its tracker, armed from the
// tables collected before, does not hold them), and the caller renews again.
func TestDeadlines_RenewalsOfAnOlderTermAreRefused(t *testing.T) {
	c := newDLCluster(t, 3)
	c[0].node.set(8, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c[0].d.Replicate(ctx, 7, []ttl.Renewal{{Index: web, Remaining: 2 * time.Second}})
	if !errors.Is(err, codes.ErrNotLeader) {
		t.Fatalf("renewals of term 7 pushed while leading term 8: %v, want not_leader", err)
	}
	for _, p := range c {
		if r := remainingOn(p, web); r != 0 {
			t.Fatalf("a refused renewal reached a table: %v remaining", r)
		}
	}
	if err := c[0].d.Replicate(ctx, 8, []ttl.Renewal{{Index: web, Remaining: 2 * time.Second}}); err != nil {
		t.Fatalf("renewals of the current term: %v", err)
	}
}

func TestDeadlines_CollectWithOneVoterDown(t *testing.T) {
	c := newDLCluster(t, 3)
	c[1].table.Registered(web, 5*time.Second)
	c[2].stop()
	c[0].node.set(4, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	col, err := c[0].d.CollectTables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if col.Quorum != 2 || len(col.Others) != 1 || col.Others[0].Remaining[web] < 4*time.Second {
		t.Fatalf("collection %+v", col)
	}
	c[1].stop()
	if _, err := c[0].d.CollectTables(ctx); !errors.Is(err, codes.ErrNoLeader) {
		t.Fatalf("collection with no other voter up: %v, want no_leader", err)
	}
}

// rawPeer dials the peer protocol and speaks frames by hand.
func rawPeer(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := mux.Dial(addr, mux.ConnPeer, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	return nc, bufio.NewReader(nc)
}

func TestDeadlines_HostileInputChangesNothing(t *testing.T) {
	c := newDLCluster(t, 1)
	p := c[0]
	p.node.set(0, 5)
	call := func(method string, body any) error {
		nc, br := rawPeer(t, p.addr)
		if err := wire.WriteFrame(nc, &wire.Header{Seq: 7, Method: method}, body, 0); err != nil {
			t.Fatal(err)
		}
		f, err := wire.ReadFrame(br, 1<<20)
		if err != nil {
			return err
		}
		if f.Header.Seq != 7 {
			t.Fatalf("answer for seq %d, want 7", f.Header.Seq)
		}
		return f.Header.Err()
	}
	for name, c := range map[string]struct {
		method string
		body   any
		want   error
	}{
		"unknown method":        {"Register", &wire.PushDeadlinesRequest{}, codes.ErrUnknownMethod},
		"negative remaining":    {wire.MethodPushDeadlines, &wire.PushDeadlinesRequest{Term: 9, Groups: []wire.DeadlineGroup{{RemainingMicros: -1, Indexes: []uint64{1}}}}, codes.ErrInvalidArgument},
		"overflowing remaining": {wire.MethodPushDeadlines, &wire.PushDeadlinesRequest{Term: 9, Groups: []wire.DeadlineGroup{{RemainingMicros: 1 << 62, Indexes: []uint64{1}}}}, codes.ErrInvalidArgument},
		"body of another type":  {wire.MethodPushDeadlines, []string{"a", "b"}, codes.ErrInvalidArgument},
		"stale term":            {wire.MethodPushDeadlines, &wire.PushDeadlinesRequest{Term: 4, Groups: []wire.DeadlineGroup{{RemainingMicros: 1, Indexes: []uint64{1}}}}, codes.ErrNotLeader},
	} {
		if err := call(c.method, c.body); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if n := p.table.Len(); n != 0 {
		t.Fatalf("the table holds %d entries after refused pushes", n)
	}
	// Garbage and an oversized frame end the connection; the server keeps
	// serving others.
	nc, br := rawPeer(t, p.addr)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<31)
	_, _ = nc.Write(hdr[:])
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("an oversized frame was answered")
	}
	nc, br = rawPeer(t, p.addr)
	_, _ = nc.Write([]byte{0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1})
	_, _ = br.ReadByte() // an error answer or a close; either way the next call works
	if err := call(wire.MethodCollectDeadlines, &wire.CollectDeadlinesRequest{Term: 1}); err != nil {
		t.Fatalf("a well-formed request after the hostile ones: %v", err)
	}
}
