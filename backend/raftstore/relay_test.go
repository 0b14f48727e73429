package raftstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/backend/raftstore"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// The heartbeat relay (relay.go), on a second store over a follower's node
// whose forwarder hands heartbeat calls to the leader's store in process
// and records them.

type relayCall struct {
	token string
	keys  []backend.InstanceKey
}

type relayForwarder struct {
	c    *tc.Cluster
	hold chan struct{} // the first heartbeat call waits until it is closed
	fail error         // the first heartbeat call fails with this after the hold

	mu    sync.Mutex
	calls []relayCall
}

func (f *relayForwarder) Call(ctx context.Context, addr, method string, forwarded bool, req, resp any) error {
	leader := runningLeader(f.c)
	if leader == nil {
		return codes.ErrNoLeader
	}
	fctx := backend.WithForwarded(ctx)
	switch method {
	case wire.MethodReadIndex: // the store's catch-up
		idx, err := leader.Srv.Store().ReadIndex(fctx)
		if err != nil {
			return err
		}
		return throughWire(&wire.ReadIndexResponse{Index: idx}, resp)
	case wire.MethodHeartbeat:
	default:
		return codes.ErrUnknownMethod
	}
	if !forwarded {
		return fmt.Errorf("heartbeat relayed without the forwarded mark: %w", codes.ErrInternal)
	}
	keys := slices.Clone(req.(*wire.HeartbeatRequest).Instances)
	f.mu.Lock()
	f.calls = append(f.calls, relayCall{token: backend.CallerFrom(ctx).Token, keys: keys})
	first := len(f.calls) == 1
	f.mu.Unlock()
	if first && f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if first && f.fail != nil {
		return f.fail
	}
	res, err := leader.Srv.Store().Heartbeat(fctx, keys)
	if err != nil {
		return err
	}
	out := &wire.HeartbeatResponse{Results: make([]wire.Result, len(res))}
	for i, e := range res {
		out.Results[i] = wire.ResultOf(e)
	}
	return throughWire(out, resp)
}

func (f *relayForwarder) taken() []relayCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// relayFixture is a 3-node cluster with instances 10.0.0.1:80 …
// 10.0.0.<n>:80 of service "relay" registered, and a relaying store over
// a follower.
func relayFixture(t *testing.T, n, relays int, fwd *relayForwarder) (*raftstore.Store, context.Context) {
	t.Helper()
	c := tc.New(t, tc.Options{})
	leader := c.WaitLeader()
	fwd.c = c
	ctx := tc.Context(t, time.Minute)
	for i := range n {
		if _, err := leader.Srv.Store().Register(ctx, backend.Registration{Name: "relay", Addr: relayAddr(i), TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	follower := c.Followers()[0]
	st := raftstore.New(raftstore.Config{HeartbeatRelays: relays, Logger: slog.New(slog.DiscardHandler)},
		follower.Srv.Node(), follower.Srv.FSM(), follower.Srv.Tracker(), nil, fwd)
	return st, ctx
}

func relayAddr(i int) string { return fmt.Sprintf("10.0.0.%d:80", i+1) }

func relayKey(i int) []backend.InstanceKey {
	return []backend.InstanceKey{{Name: "relay", Addr: relayAddr(i)}}
}

type beatResult struct {
	res []error
	err error
}

// beat sends a heartbeat of keys through st in the background.
func beat(ctx context.Context, st *raftstore.Store, keys []backend.InstanceKey) <-chan beatResult {
	ch := make(chan beatResult, 1)
	go func() {
		res, err := st.Heartbeat(ctx, keys)
		ch <- beatResult{res, err}
	}()
	return ch
}

func waitCalls(t *testing.T, fwd *relayForwarder, n int) {
	t.Helper()
	tc.WaitFor(t, 10*time.Second, fmt.Sprintf("%d relayed calls", n), func() bool { return len(fwd.taken()) >= n })
}

// TestRaftStore_HeartbeatRelayCoalesces: with one call in flight, the
// heartbeats that arrive meanwhile go to the leader in the next call, all
// of them, and every caller gets the results of its own instances.
func TestRaftStore_HeartbeatRelayCoalesces(t *testing.T) {
	fwd := &relayForwarder{hold: make(chan struct{})}
	st, ctx := relayFixture(t, 9, 1, fwd)
	first := beat(ctx, st, relayKey(0))
	waitCalls(t, fwd, 1)
	var rest []<-chan beatResult
	for i := 1; i <= 9; i++ { // 10.0.0.10:80 is not registered
		rest = append(rest, beat(ctx, st, relayKey(i)))
	}
	tc.WaitFor(t, 10*time.Second, "9 heartbeats waiting", func() bool { return st.RelayWaiting("") == 9 })
	if n := len(fwd.taken()); n != 1 {
		t.Fatalf("%d calls while one was in flight, want 1", n)
	}
	close(fwd.hold)
	for i, ch := range append([]<-chan beatResult{first}, rest...) {
		r := <-ch
		if r.err != nil || len(r.res) != 1 {
			t.Fatalf("heartbeat %d: %v, %d results", i, r.err, len(r.res))
		}
		if i == 9 {
			if !errors.Is(r.res[0], codes.ErrNotFound) {
				t.Errorf("heartbeat of the unregistered instance: %v, want not_found", r.res[0])
			}
		} else if r.res[0] != nil {
			t.Errorf("heartbeat %d: %v", i, r.res[0])
		}
	}
	calls := fwd.taken()
	if len(calls) != 2 || len(calls[0].keys) != 1 || len(calls[1].keys) != 9 {
		t.Fatalf("relayed calls %+v, want one of 1 instance, then one of 9", calls)
	}
	var got []string
	for _, k := range calls[1].keys {
		got = append(got, k.Addr)
	}
	slices.Sort(got)
	want := []string{}
	for i := 1; i <= 9; i++ {
		want = append(want, relayAddr(i))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("second call carried %v, want %v", got, want)
	}
	if calls, beats := st.RelayStats(); calls != 2 || beats != 10 {
		t.Errorf("RelayStats %d calls, %d heartbeats; want 2, 10", calls, beats)
	}
	// Nothing is left waiting: a lone heartbeat goes at once.
	if r := <-beat(ctx, st, relayKey(3)); r.err != nil || r.res[0] != nil {
		t.Fatalf("heartbeat after the batch: %+v", r)
	}
}

// TestRaftStore_HeartbeatRelayKeepsCredentialsApart: heartbeats are
// relayed only with others of the same credential, in calls that carry it.
func TestRaftStore_HeartbeatRelayKeepsCredentialsApart(t *testing.T) {
	fwd := &relayForwarder{hold: make(chan struct{})}
	st, ctx := relayFixture(t, 8, 1, fwd)
	as := backend.WithCaller(ctx, backend.Caller{Token: "a.secret", Remote: "192.0.2.1:1"})
	bs := backend.WithCaller(ctx, backend.Caller{Token: "b.secret", Remote: "192.0.2.2:1"})
	tokenOf := map[string]string{}
	var chs []<-chan beatResult
	send := func(ctx context.Context, i int) {
		tokenOf[relayAddr(i)] = backend.CallerFrom(ctx).Token
		chs = append(chs, beat(ctx, st, relayKey(i)))
	}
	send(as, 0) // held
	waitCalls(t, fwd, 1)
	for i := 1; i <= 3; i++ {
		send(as, i)
	}
	for i := 4; i <= 7; i++ { // b's go while a's call is held
		send(bs, i)
	}
	tc.WaitFor(t, 10*time.Second, "3 heartbeats of a waiting", func() bool { return st.RelayWaiting("a.secret") == 3 })
	for i, ch := range chs[4:] {
		if r := <-ch; r.err != nil || r.res[0] != nil {
			t.Fatalf("heartbeat %d of b while a's call is held: %+v", i+4, r)
		}
	}
	close(fwd.hold)
	for i, ch := range chs[:4] {
		if r := <-ch; r.err != nil || r.res[0] != nil {
			t.Fatalf("heartbeat %d: %+v", i, r)
		}
	}
	aCalls := 0
	for _, call := range fwd.taken() {
		if call.token == "a.secret" {
			aCalls++
		}
		for _, k := range call.keys {
			if tokenOf[k.Addr] != call.token {
				t.Errorf("a call with credential %q carried %s, sent with %q", call.token, k.Addr, tokenOf[k.Addr])
			}
		}
	}
	if aCalls != 2 {
		t.Errorf("a's 4 heartbeats went in %d calls, want 2 (the held one, then the 3 that waited)", aCalls)
	}
	if _, beats := st.RelayStats(); beats != 8 {
		t.Errorf("RelayStats: %d heartbeats relayed, want 8", beats)
	}
}

// TestRaftStore_HeartbeatRelayFailuresAndDeadlines: a call that fails
// fails its callers only; a caller whose deadline passes while its
// heartbeat waits gets a timeout, and the others are still relayed.
func TestRaftStore_HeartbeatRelayFailuresAndDeadlines(t *testing.T) {
	fwd := &relayForwarder{hold: make(chan struct{}), fail: fmt.Errorf("leader gone: %w", codes.ErrNoLeader)}
	st, ctx := relayFixture(t, 4, 1, fwd)
	first := beat(ctx, st, relayKey(0))
	waitCalls(t, fwd, 1)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	gone := beat(short, st, relayKey(1))
	waiting := []<-chan beatResult{beat(ctx, st, relayKey(2)), beat(ctx, st, relayKey(3))}
	if r := <-gone; !errors.Is(r.err, codes.ErrTimeout) {
		t.Errorf("heartbeat past its deadline: %+v, want a timeout", r)
	}
	tc.WaitFor(t, 10*time.Second, "3 heartbeats waiting", func() bool { return st.RelayWaiting("") == 3 })
	close(fwd.hold)
	if r := <-first; !errors.Is(r.err, codes.ErrNoLeader) {
		t.Errorf("heartbeat of the failed call: %+v, want no_leader", r)
	}
	for i, ch := range waiting {
		if r := <-ch; r.err != nil || r.res[0] != nil {
			t.Errorf("heartbeat %d after the failed call: %+v", i, r)
		}
	}
	if r := <-beat(ctx, st, relayKey(1)); r.err != nil || r.res[0] != nil {
		t.Fatalf("heartbeat after it all: %+v", r)
	}
}

// TestRaftStore_HeartbeatRelayLargeAndOff: a heartbeat of 64 instances or
// more is a batch already and goes in a call of its own, also while the
// relay's call is in flight; with the relay off every heartbeat does.
func TestRaftStore_HeartbeatRelayLargeAndOff(t *testing.T) {
	fwd := &relayForwarder{hold: make(chan struct{})}
	st, ctx := relayFixture(t, 64, 1, fwd)
	first := beat(ctx, st, relayKey(0))
	waitCalls(t, fwd, 1)
	var big []backend.InstanceKey
	for i := range 64 {
		big = append(big, relayKey(i)...)
	}
	r := <-beat(ctx, st, big)
	if r.err != nil || len(r.res) != 64 || slices.ContainsFunc(r.res, func(e error) bool { return e != nil }) {
		t.Fatalf("64-instance heartbeat beside a held call: %v, %v", r.err, r.res)
	}
	if calls := fwd.taken(); len(calls) != 2 || len(calls[1].keys) != 64 {
		t.Fatalf("calls %d, want the held one and the 64-instance one", len(calls))
	}
	close(fwd.hold)
	if r := <-first; r.err != nil || r.res[0] != nil {
		t.Fatalf("held heartbeat: %+v", r)
	}

	off := &relayForwarder{}
	st, ctx = relayFixture(t, 5, -1, off)
	var chs []<-chan beatResult
	for i := range 5 {
		chs = append(chs, beat(ctx, st, relayKey(i)))
	}
	for i, ch := range chs {
		if r := <-ch; r.err != nil || r.res[0] != nil {
			t.Fatalf("heartbeat %d with the relay off: %+v", i, r)
		}
	}
	if calls := off.taken(); len(calls) != 5 {
		t.Errorf("relay off: %d calls for 5 heartbeats, want 5", len(calls))
	}
	if calls, beats := st.RelayStats(); calls != 0 || beats != 0 {
		t.Errorf("relay off: RelayStats %d, %d; want 0, 0", calls, beats)
	}
}
