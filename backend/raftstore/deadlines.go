package raftstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/ttl"
)

// Deadline tables (ttl/DESIGN.md, "Deadline tables").
//
// The leader acknowledges a heartbeat only once a majority of the voters
// hold its deadline: Replicate pushes each batch of renewals to every other
// voter over the peer protocol (internal/mux ConnPeer) and returns when a
// majority, this node included, stored it. This round replaces the quorum
// round (raftnode.VerifyLeader) heartbeats used to wait for: a node refuses
// a push of a term older than its own or than a collection it answered, so
// a majority's acceptance also shows no newer leader has collected tables.
// A new leader collects the tables of a majority (CollectTables, the
// ttl.Peers the tracker arms itself from); quorums intersect, so every
// acknowledged heartbeat is in one of them.

// DeadlinesNode is what the deadline rounds need of the Raft node.
type DeadlinesNode interface {
	ID() string
	// LeaderTerm is the term this node leads (barrier done), or 0.
	LeaderTerm() uint64
	CurrentTerm() uint64
	Voters() ([]raftnode.Peer, error)
	DialAddr(id, addr string) string
}

// DeadlinesConfig tunes the deadline rounds. Zero fields take their defaults.
type DeadlinesConfig struct {
	// PushTimeout bounds one peer's answer to a push or a collection.
	// Default 1 s.
	PushTimeout time.Duration
	// MaxInFlight bounds the pushes in flight to one peer: a slow or
	// unreachable peer is left out of the rounds beyond it (they succeed
	// with the others, or fail). Default 16.
	MaxInFlight int
	// CollectLinger is how long a collection waits for more tables once a
	// majority answered. Default 20 ms.
	CollectLinger time.Duration
	// MaxFrame bounds a frame a peer sends this node. Default 64 MiB.
	MaxFrame int
	Logger   *slog.Logger
}

func (c DeadlinesConfig) withDefaults() DeadlinesConfig {
	if c.PushTimeout <= 0 {
		c.PushTimeout = time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16
	}
	if c.CollectLinger <= 0 {
		c.CollectLinger = 20 * time.Millisecond
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Deadlines runs the push rounds and collections on the leader and serves
// them (ServePeers) on every node.
type Deadlines struct {
	cfg   DeadlinesConfig
	node  DeadlinesNode
	table *ttl.Table
	peers Forwarder // dials with the peer protocol byte

	mu sync.Mutex
	// Guarded by mu:
	pending  []batch // waiting for the next round
	running  bool
	inFlight map[string]int // pushes in flight per peer address

	connMu sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

var _ ttl.Peers = (*Deadlines)(nil)

// NewDeadlines returns the deadline rounds of node over table; peers must
// dial other nodes with the peer protocol byte (rpcconn.Options.Proto =
// mux.ConnPeer).
func NewDeadlines(cfg DeadlinesConfig, node DeadlinesNode, table *ttl.Table, peers Forwarder) *Deadlines {
	return &Deadlines{cfg: cfg.withDefaults(), node: node, table: table, peers: peers,
		inFlight: map[string]int{}, conns: map[net.Conn]struct{}{}}
}

// batch is one caller's renewals, made by the tracker of the leadership of
// term.
type batch struct {
	term uint64
	rs   []ttl.Renewal
	done chan error
}

// Replicate returns once a majority of the voters hold the renewals (nil),
// or fails: codes.ErrNotLeader when this node does not lead term (the
// leadership whose tracker made them) any more, codes.ErrNoLeader when no
// majority took them. Concurrent callers share rounds: one push per peer
// carries every renewal that was waiting when it started.
//
// A round pushes only renewals of the term it runs in (MUST): a new
// leader arms from the tables it collected before its own rounds began, so
// a renewal the previous leadership's tracker made, pushed in the new term
// after that collection, would be acknowledged although no tracker holds
// it (the fault suite's flaky-links scenario caught a leader that lost and
// won leadership while a heartbeat waited for its round).
func (d *Deadlines) Replicate(ctx context.Context, term uint64, rs []ttl.Renewal) error {
	if len(rs) == 0 {
		return nil
	}
	b := batch{term: term, rs: rs, done: make(chan error, 1)}
	d.mu.Lock()
	d.pending = append(d.pending, b)
	if !d.running {
		d.running = true
		go d.rounds()
	}
	d.mu.Unlock()
	select {
	case err := <-b.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("heartbeat deadlines not yet held by a majority: %w", codes.ErrTimeout)
	}
}

func (d *Deadlines) rounds() {
	for {
		d.mu.Lock()
		pending := d.pending
		d.pending = nil
		if len(pending) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		term := d.node.LeaderTerm()
		var rs []ttl.Renewal
		var in []batch
		for _, b := range pending {
			if b.term != term || term == 0 {
				b.done <- fmt.Errorf("heartbeat not acknowledged: renewed in term %d, this node now leads term %d: %w", b.term, term, codes.ErrNotLeader)
				continue
			}
			rs = append(rs, b.rs...)
			in = append(in, b)
		}
		if len(in) == 0 {
			continue
		}
		err := d.round(term, rs)
		for _, b := range in {
			b.done <- err
		}
	}
}

// voters returns the other voters' dial addresses, whether this node votes,
// and the majority.
func (d *Deadlines) voters() (others []string, self bool, quorum int, err error) {
	vs, err := d.node.Voters()
	if err != nil {
		return nil, false, 0, fmt.Errorf("read the Raft configuration: %v: %w", err, codes.ErrNoLeader)
	}
	for _, v := range vs {
		if v.ID == d.node.ID() {
			self = true
			continue
		}
		others = append(others, d.node.DialAddr(v.ID, v.Addr))
	}
	return others, self, len(vs)/2 + 1, nil
}

// round pushes rs, renewed in term, to every voter and waits for a majority.
func (d *Deadlines) round(term uint64, rs []ttl.Renewal) error {
	others, self, quorum, err := d.voters()
	if err != nil {
		return err
	}
	held := 0
	if self {
		if err := d.table.Accept(term, d.node.CurrentTerm(), rs); err != nil {
			return fmt.Errorf("heartbeat not acknowledged: %v: %w", err, codes.ErrNoLeader)
		}
		held++
	}
	if held >= quorum {
		return nil
	}
	req := &wire.PushDeadlinesRequest{Term: term, Groups: deadlinesToWire(rs)}
	results := make(chan error, len(others))
	// One deadline for the round's pushes, ended by the last of them to
	// answer (the round itself returns at a majority).
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.PushTimeout)
	var pushing atomic.Int32
	pushing.Store(int32(len(others)))
	if len(others) == 0 {
		cancel()
	}
	pushed := func() {
		if pushing.Add(-1) == 0 {
			cancel()
		}
	}
	for _, addr := range others {
		d.mu.Lock()
		busy := d.inFlight[addr] >= d.cfg.MaxInFlight
		if !busy {
			d.inFlight[addr]++
		}
		d.mu.Unlock()
		if busy {
			pushed()
			results <- fmt.Errorf("%s: %d pushes still unanswered", addr, d.cfg.MaxInFlight)
			continue
		}
		go func() {
			defer pushed()
			err := d.peers.Call(ctx, addr, wire.MethodPushDeadlines, false, req, &wire.PushDeadlinesResponse{})
			d.mu.Lock()
			d.inFlight[addr]--
			d.mu.Unlock()
			if err != nil {
				err = fmt.Errorf("%s: %w", addr, err)
			}
			results <- err
		}()
	}
	var errs []error
	for range others {
		err := <-results
		if err == nil {
			held++
			if held >= quorum {
				return nil
			}
			continue
		}
		errs = append(errs, err)
		if len(errs) > len(others)+boolInt(self)-quorum {
			break
		}
	}
	if stale := errors.Is(errors.Join(errs...), codes.ErrNotLeader); stale {
		return fmt.Errorf("heartbeat not acknowledged: a newer leader exists (%v): %w", errors.Join(errs...), codes.ErrNoLeader)
	}
	return fmt.Errorf("heartbeat not acknowledged: %d of %d voters hold its deadline, %d needed (%v): %w",
		held, len(others)+boolInt(self), quorum, errors.Join(errs...), codes.ErrNoLeader)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CollectTables implements ttl.Peers: it reads this node's table and those
// of the other voters in this node's leadership term, and returns once every
// voter answered, or a majority did and CollectLinger passed since, or ctx
// ended (an error without a majority).
func (d *Deadlines) CollectTables(ctx context.Context) (*ttl.Collection, error) {
	term := d.node.LeaderTerm()
	if term == 0 {
		return nil, fmt.Errorf("collect deadline tables: this node no longer leads: %w", codes.ErrNotLeader)
	}
	others, self, quorum, err := d.voters()
	if err != nil {
		return nil, err
	}
	if !self {
		return nil, fmt.Errorf("collect deadline tables: this node is not a voter: %w", codes.ErrNotLeader)
	}
	col := &ttl.Collection{Quorum: quorum, Self: d.table.Collect(term)}
	type answer struct {
		view ttl.TableView
		err  error
	}
	answers := make(chan answer, len(others))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, addr := range others {
		go func() {
			pctx, pcancel := context.WithTimeout(cctx, d.cfg.PushTimeout)
			defer pcancel()
			var resp wire.CollectDeadlinesResponse
			err := d.peers.Call(pctx, addr, wire.MethodCollectDeadlines, false, &wire.CollectDeadlinesRequest{Term: term}, &resp)
			if err != nil {
				answers <- answer{err: fmt.Errorf("%s: %w", addr, err)}
				return
			}
			view, err := tableFromWire(resp)
			if err != nil {
				err = fmt.Errorf("%s: %w", addr, err)
			}
			answers <- answer{view: view, err: err}
		}()
	}
	var linger <-chan time.Time
	var errs []error
	for pending := len(others); pending > 0; {
		if 1+len(col.Others) >= quorum && linger == nil {
			t := time.NewTimer(d.cfg.CollectLinger)
			defer t.Stop()
			linger = t.C
		}
		select {
		case a := <-answers:
			pending--
			if a.err != nil {
				errs = append(errs, a.err)
				continue
			}
			col.Others = append(col.Others, a.view)
		case <-linger:
			return col, nil
		case <-ctx.Done():
			if 1+len(col.Others) >= quorum {
				return col, nil
			}
			return nil, fmt.Errorf("collect deadline tables: %d of %d voters answered, %d needed (%v): %w",
				1+len(col.Others), 1+len(others), quorum, errors.Join(errs...), codes.ErrNoLeader)
		}
	}
	if 1+len(col.Others) >= quorum {
		return col, nil
	}
	return nil, fmt.Errorf("collect deadline tables: %d of %d voters answered, %d needed (%v): %w",
		1+len(col.Others), 1+len(others), quorum, errors.Join(errs...), codes.ErrNoLeader)
}

// maxRemaining bounds a remaining time on the wire: no deadline is further
// ahead than the longest TTL (plus slack), and a larger value is not a
// deadline but garbage (or an overflow waiting to happen).
const maxRemaining = validate.MaxTTL + time.Hour

// microsUp is d in whole microseconds, rounded up: a deadline that travels
// may only get later.
func microsUp(d time.Duration) int64 { return int64((d + time.Microsecond - 1) / time.Microsecond) }

// deadlinesToWire groups renewals by their remaining time (a round's
// heartbeats mostly share a few TTLs).
func deadlinesToWire(rs []ttl.Renewal) []wire.DeadlineGroup {
	var groups []wire.DeadlineGroup
	at := map[int64]int{}
	last := -1
	for _, r := range rs {
		us := microsUp(r.Remaining)
		i := last
		if i < 0 || groups[i].RemainingMicros != us { // consecutive renewals mostly share a TTL
			var ok bool
			if i, ok = at[us]; !ok {
				i = len(groups)
				at[us] = i
				g := wire.DeadlineGroup{RemainingMicros: us}
				if len(groups) == 0 {
					g.Indexes = make([]uint64, 0, len(rs)) // the usual case: one TTL for all
				}
				groups = append(groups, g)
			}
		}
		last = i
		groups[i].Indexes = append(groups[i].Indexes, r.Index)
	}
	return groups
}

// remainingFromWire checks and converts one remaining time.
func remainingFromWire(us int64) (time.Duration, error) {
	if us < 0 || us > maxRemaining.Microseconds() {
		return 0, fmt.Errorf("remaining time %dµs is out of range 0..%v: %w", us, maxRemaining, codes.ErrInvalidArgument)
	}
	return time.Duration(us) * time.Microsecond, nil
}

func renewalsFromWire(groups []wire.DeadlineGroup) ([]ttl.Renewal, error) {
	n := 0
	for _, g := range groups {
		n += len(g.Indexes)
	}
	rs := make([]ttl.Renewal, 0, n)
	for _, g := range groups {
		rem, err := remainingFromWire(g.RemainingMicros)
		if err != nil {
			return nil, err
		}
		for _, idx := range g.Indexes {
			rs = append(rs, ttl.Renewal{Index: idx, Remaining: rem})
		}
	}
	return rs, nil
}

func tableToWire(v ttl.TableView) *wire.CollectDeadlinesResponse {
	resp := &wire.CollectDeadlinesResponse{AgeMicros: v.Age.Microseconds(),
		Indexes: make([]uint64, 0, len(v.Remaining)), RemainingMicros: make([]int64, 0, len(v.Remaining))}
	for idx, rem := range v.Remaining {
		resp.Indexes = append(resp.Indexes, idx)
		resp.RemainingMicros = append(resp.RemainingMicros, microsUp(rem))
	}
	return resp
}

func tableFromWire(resp wire.CollectDeadlinesResponse) (ttl.TableView, error) {
	if resp.AgeMicros < 0 {
		return ttl.TableView{}, fmt.Errorf("table age %dµs is negative: %w", resp.AgeMicros, codes.ErrInvalidArgument)
	}
	if len(resp.Indexes) != len(resp.RemainingMicros) {
		return ttl.TableView{}, fmt.Errorf("table of %d indexes with %d remaining times: %w", len(resp.Indexes), len(resp.RemainingMicros), codes.ErrInvalidArgument)
	}
	v := ttl.TableView{Age: time.Duration(min(resp.AgeMicros, maxRemaining.Microseconds())) * time.Microsecond,
		Remaining: make(map[uint64]time.Duration, len(resp.Indexes))}
	for i, idx := range resp.Indexes {
		rem, err := remainingFromWire(resp.RemainingMicros[i])
		if err != nil {
			return ttl.TableView{}, err
		}
		v.Remaining[idx] = max(v.Remaining[idx], rem)
	}
	return v, nil
}

// ServePeers serves the peer protocol on ln (the mux's ConnPeer listener)
// until ln is closed. Each connection's requests are answered in order; they
// only touch the table.
func (d *Deadlines) ServePeers(ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		d.connMu.Lock()
		if d.closed {
			d.connMu.Unlock()
			_ = nc.Close()
			return net.ErrClosed
		}
		d.conns[nc] = struct{}{}
		d.connMu.Unlock()
		go d.servePeer(nc)
	}
}

// Close closes every peer connection being served.
func (d *Deadlines) Close() {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	d.closed = true
	for nc := range d.conns {
		_ = nc.Close()
	}
}

func (d *Deadlines) servePeer(nc net.Conn) {
	defer func() {
		d.connMu.Lock()
		delete(d.conns, nc)
		d.connMu.Unlock()
		_ = nc.Close()
	}()
	br := bufio.NewReaderSize(nc, 64<<10)
	w := wire.NewFrameWriter(nc, 10*time.Second)
	w.SetSolo(func() bool { return true }) // this loop is the only writer
	for {
		f, err := wire.ReadFrame(br, d.cfg.MaxFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				d.cfg.Logger.Debug("peer connection ended", "remote", nc.RemoteAddr(), "err", err)
			}
			return
		}
		body, err := d.handle(f)
		hdr := &wire.Header{Seq: f.Header.Seq}
		if err != nil {
			hdr.Code, hdr.Error = string(codes.Of(err)), err.Error()
			body = nil
		}
		if err := w.WriteFrame(hdr, body, 0); err != nil {
			return
		}
	}
}

func (d *Deadlines) handle(f *wire.Frame) (any, error) {
	switch f.Header.Method {
	case wire.MethodPushDeadlines:
		var req wire.PushDeadlinesRequest
		if err := f.Decode(&req); err != nil {
			return nil, err
		}
		rs, err := renewalsFromWire(req.Groups)
		if err != nil {
			return nil, fmt.Errorf("push of term %d: %w", req.Term, err)
		}
		if err := d.table.Accept(req.Term, d.node.CurrentTerm(), rs); err != nil {
			return nil, err
		}
		return &wire.PushDeadlinesResponse{}, nil
	case wire.MethodCollectDeadlines:
		var req wire.CollectDeadlinesRequest
		if err := f.Decode(&req); err != nil {
			return nil, err
		}
		return tableToWire(d.table.Collect(req.Term)), nil
	}
	return nil, fmt.Errorf("peer method %q: %w", f.Header.Method, codes.ErrUnknownMethod)
}
