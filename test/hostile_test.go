package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/wire"
)

// The hostile-peer suite: an attacker who can reach a node's one port and
// knows what `discoverd status` shows (node ids and addresses) speaks Raft
// to it with hashicorp/raft's own transport, as a node would.

// attacker dials Raft connections with tls (nil: plaintext) and never
// accepts any.
type attacker struct {
	tls    *tls.Config
	closed chan struct{}
}

func (a *attacker) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return mux.Dial(string(addr), mux.ConnRaft, timeout, a.tls)
}

func (a *attacker) Accept() (net.Conn, error) {
	<-a.closed
	return nil, net.ErrClosed
}

func (a *attacker) Close() error {
	select {
	case <-a.closed:
	default:
		close(a.closed)
	}
	return nil
}

func (a *attacker) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func newAttacker(t *testing.T, cfg *tls.Config) *raft.NetworkTransport {
	t.Helper()
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: &attacker{tls: cfg, closed: make(chan struct{})}, MaxPool: 1, Timeout: 3 * time.Second,
		Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
	})
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// view is what a node says of itself.
type view struct {
	id, state, leader string
	term, applied     uint64
	lastIndex         uint64
	hash              string
}

func (v view) String() string {
	return fmt.Sprintf("%s %s term %d leader %s applied %d hash %.12s", v.id, v.state, v.term, v.leader, v.applied, v.hash)
}

// views asks every node about itself, with its state hash.
func views(t *testing.T, c *cluster, tlsOpt func(string) *tls.Config) map[string]view {
	t.Helper()
	out := map[string]view{}
	for _, nd := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := rpcconn.Dial(ctx, nd.addr, rpcconn.Options{TLS: tlsOpt})
		if err != nil {
			cancel()
			t.Fatalf("node info of %s: %v", nd.id, err)
		}
		var st wire.NodeStatus
		err = conn.Call(ctx, wire.MethodNodeInfo, false, &wire.NodeInfoRequest{StateHash: true}, &st)
		_ = conn.Close()
		cancel()
		if err != nil {
			t.Fatalf("node info of %s: %v", nd.id, err)
		}
		out[nd.id] = view{id: st.ID, state: st.State, leader: st.Leader, term: st.Term, applied: st.FSMApplied, lastIndex: st.LastIndex, hash: st.StateHash}
	}
	return out
}

// leaderAndFollower returns the leader and a follower of a stable cluster.
func leaderAndFollower(t *testing.T, c *cluster, vs map[string]view) (leader, follower *node) {
	t.Helper()
	for _, nd := range c.nodes {
		if vs[nd.id].state == "Leader" {
			leader = nd
		} else if follower == nil {
			follower = nd
		}
	}
	if leader == nil || follower == nil {
		t.Fatalf("no leader and follower in %v", vs)
	}
	return leader, follower
}

// attacks are the forged Raft messages: each returns the transport's error.
func attacks(t *testing.T, tr *raft.NetworkTransport, leader, follower *node, v view) map[string]error {
	t.Helper()
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader.id), Addr: []byte(leader.addr)}
	out := map[string]error{}
	var vr raft.RequestVoteResponse
	out["RequestVote with a huge term"] = tr.RequestVote(raft.ServerID(follower.id), raft.ServerAddress(follower.addr),
		&raft.RequestVoteRequest{RPCHeader: hdr, Term: math.MaxUint64 - 1, LastLogIndex: math.MaxUint32, LastLogTerm: math.MaxUint64 - 1}, &vr)
	entry := func(data []byte) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{RPCHeader: hdr, Term: v.term, PrevLogEntry: v.lastIndex, PrevLogTerm: v.term,
			Entries:           []*raft.Log{{Index: v.lastIndex + 1, Term: v.term, Type: raft.LogCommand, Data: data}},
			LeaderCommitIndex: v.lastIndex + 1}
	}
	var ar raft.AppendEntriesResponse
	out["AppendEntries of an unknown message type"] = tr.AppendEntries(raft.ServerID(follower.id), raft.ServerAddress(follower.addr),
		entry([]byte{9, 0x80}), &ar)
	forged, err := fsm.Encode(fsm.RegisterType, &fsm.RegisterCommand{Name: "forged", Addr: "10.66.6.6:666", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	out["AppendEntries of a forged register"] = tr.AppendEntries(raft.ServerID(follower.id), raft.ServerAddress(follower.addr),
		entry(forged), &ar)
	return out
}

// peerAttacks speaks the peer protocol (deadline tables) to every node: a
// collection with a huge term would make a node refuse the leader's pushes
// (heartbeats fail), a push would keep an instance listed.
func peerAttacks(c *cluster, cfg *tls.Config) map[string]error {
	out := map[string]error{}
	var tlsFor func(string) *tls.Config
	if cfg != nil {
		tlsFor = func(string) *tls.Config { return cfg.Clone() }
	}
	for _, n := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := rpcconn.Dial(ctx, n.addr, rpcconn.Options{Proto: mux.ConnPeer, TLS: tlsFor})
		if err == nil {
			err = conn.Call(ctx, wire.MethodCollectDeadlines, false, &wire.CollectDeadlinesRequest{Term: math.MaxUint64 - 1}, &wire.CollectDeadlinesResponse{})
			if err == nil {
				err = conn.Call(ctx, wire.MethodPushDeadlines, false, &wire.PushDeadlinesRequest{Term: math.MaxUint64 - 1,
					Groups: []wire.DeadlineGroup{{RemainingMicros: time.Hour.Microseconds(), Indexes: []uint64{1, 2, 3}}}}, &wire.PushDeadlinesResponse{})
			}
			_ = conn.Close()
		}
		cancel()
		out["CollectDeadlines with a huge term to "+n.id] = err
	}
	return out
}

// TestHostile_TLSRefusesForgedRaftFromAnyoneButServers: with TLS on, a
// Raft RequestVote with a huge term, an AppendEntries of an unknown message
// type and one of a forged register are refused from a peer without a
// certificate, with a client certificate, with a server certificate of
// another CA and in plaintext — and change nothing: the same leader, the
// same term and the same state hash on every node.
func TestHostile_TLSRefusesForgedRaftFromAnyoneButServers(t *testing.T) {
	h := newHarness(t)
	c, p := h.tlsCluster(nil)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)

	attacker := p.clientTLS("attacker")
	pool, clientCert := attacker.RootCAs, attacker.Certificates[0]
	// Another CA's server certificate for a node of the same name.
	otherDir := filepath.Join(h.dir, "other-ca")
	h.mustCLI(10*time.Second, "tls", "ca", "create", "-out", otherDir)
	h.mustCLI(10*time.Second, "tls", "cert", "create", "-server", "-node", "n2", "-addr", "127.0.0.1",
		"-ca", filepath.Join(otherDir, "ca.pem"), "-ca-key", filepath.Join(otherDir, "ca-key.pem"), "-out", otherDir)
	foreignCert, err := tls.LoadX509KeyPair(filepath.Join(otherDir, "server-n2.pem"), filepath.Join(otherDir, "server-n2-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverName := tlsutil.ServerName(tlsutil.DefaultCluster)
	peers := map[string]*tls.Config{
		"no certificate":                  {MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverName},
		"a client certificate":            {MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverName, Certificates: []tls.Certificate{clientCert}},
		"another CA's server certificate": {MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverName, Certificates: []tls.Certificate{foreignCert}},
		"plaintext":                       nil,
	}
	probe := rpcconn.ForServer(attacker)
	before := views(t, c, probe)
	leader, follower := leaderAndFollower(t, c, before)
	for name, cfg := range peers {
		for attack, err := range attacks(t, newAttacker(t, cfg), leader, follower, before[follower.id]) {
			if err == nil {
				t.Errorf("%s: %s was answered", name, attack)
			}
		}
		for attack, err := range peerAttacks(c, cfg) {
			if err == nil {
				t.Errorf("%s: %s was answered", name, attack)
			}
		}
	}
	// Nothing changed: every node still agrees with what it said before.
	after := views(t, c, probe)
	for id, b := range before {
		a := after[id]
		if a.term != b.term || a.leader != b.leader || a.hash != b.hash || a.applied != b.applied {
			t.Errorf("%s changed: before %v, after %v", id, b, a)
		}
	}
	if follower.p.exited() {
		t.Errorf("%s exited", follower.id)
	}
	if !follower.p.logContains("closing connection refused for its protocol") {
		t.Errorf("%s logged no refused Raft connection", follower.id)
	}
	// Heartbeats are still acknowledged: no node took the forged term.
	hb := rpcconn.NewPool(rpcconn.Options{TLS: probe})
	defer hb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wr wire.WriteResponse
	if err := hb.Call(ctx, leader.addr, wire.MethodRegister, false, &wire.RegisterRequest{Name: "after", Addr: "10.0.0.1:1", TTLMillis: 60000}, &wr); err != nil {
		t.Fatalf("register after the attacks: %v", err)
	}
	for _, n := range c.nodes {
		var hr wire.HeartbeatResponse
		err := hb.Call(ctx, n.addr, wire.MethodHeartbeat, false, &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: "after", Addr: "10.0.0.1:1"}}}, &hr)
		if err != nil || len(hr.Results) != 1 || hr.Results[0].Err() != nil {
			t.Errorf("heartbeat through %s after the attacks: %v %+v", n.id, err, hr.Results)
		}
	}
}

// TestHostile_InsecureModeDoesNotProtectRaft shows what -insecure (here:
// plaintext on loopback) leaves open, so that docs/SECURITY.md can say it
// plainly: anyone who reaches the port speaks Raft. A RequestVote claiming
// to come from the leader moves a follower's term (and forces an election),
// and a forged AppendEntries puts a registration into a follower's state
// that no client ever made. What it still protects (the RPC port's input
// checks and connection limits) is tested with the RPC server and the mux.
func TestHostile_InsecureModeDoesNotProtectRaft(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	before := views(t, c, nil)
	leader, follower := leaderAndFollower(t, c, before)
	tr := newAttacker(t, nil)
	v := before[follower.id]

	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader.id), Addr: []byte(leader.addr)}
	forged, err := fsm.Encode(fsm.RegisterType, &fsm.RegisterCommand{Name: "forged", Addr: "10.66.6.6:666", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var ar raft.AppendEntriesResponse
	err = tr.AppendEntries(raft.ServerID(follower.id), raft.ServerAddress(follower.addr), &raft.AppendEntriesRequest{
		RPCHeader: hdr, Term: v.term, PrevLogEntry: v.lastIndex, PrevLogTerm: v.term,
		Entries:           []*raft.Log{{Index: v.lastIndex + 1, Term: v.term, Type: raft.LogCommand, Data: forged}},
		LeaderCommitIndex: v.lastIndex + 1}, &ar)
	if err != nil || !ar.Success {
		t.Fatalf("forged AppendEntries: %v, success %v (the insecure mode protected it after all: update docs/SECURITY.md)", err, ar.Success)
	}
	h.waitServices(follower.addr, "forged", func(l []instance) bool { return len(l) == 1 }, "the forged registration on "+follower.id)

	var vr raft.RequestVoteResponse
	err = tr.RequestVote(raft.ServerID(follower.id), raft.ServerAddress(follower.addr),
		&raft.RequestVoteRequest{RPCHeader: hdr, Term: v.term + 100, LastLogIndex: math.MaxUint32, LastLogTerm: v.term + 100}, &vr)
	if err != nil {
		t.Fatalf("forged RequestVote: %v", err)
	}
	poll(t, 10*time.Second, 100*time.Millisecond, follower.id+"'s term to follow the forged vote", func() (bool, string) {
		vs := views(t, c, nil)
		return vs[follower.id].term >= v.term+100, vs[follower.id].String()
	})
}
