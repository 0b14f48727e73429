package test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/snapfile"
	"github.com/discoverd/discoverd/internal/wire"
)

// Backups with real processes: `discoverd snapshot save`, `inspect` and
// `restore` against 3-node clusters (docs/backup.md).

// snapshotState registers a state worth backing up through a Go client
// that keeps heartbeating it (TTL 1 min): instances of two services, one
// with attributes, and a service's metadata.
func snapshotState(t *testing.T, servers string) *client.Client {
	t.Helper()
	cl, err := client.NewWithConfig(client.Config{Servers: strings.Split(servers, ","), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	for i := range 3 {
		if err := cl.RegisterWithHost("web", fmt.Sprintf("10.0.0.%d", i+1), 80, map[string]string{"zone": "a"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.RegisterWithHost("db", "10.0.1.1", 5432, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := cl.SetMeta(ctx, "db", []byte("primary=10.0.1.1"), 0); err != nil {
		t.Fatal(err)
	}
	return cl
}

// agreedState waits until every node of c has applied the same state, and
// returns its index and hash.
func agreedState(t *testing.T, c *cluster) (uint64, string) {
	t.Helper()
	var v view
	poll(t, 15*time.Second, 50*time.Millisecond, "every node at one state", func() (bool, string) {
		vs := views(t, c, nil)
		v = vs[c.nodes[0].id]
		for _, o := range vs {
			if o.hash != v.hash || o.applied != v.applied {
				return false, fmt.Sprint(vs)
			}
		}
		return true, ""
	})
	return v.applied, v.hash
}

// backup is a backup saved by backedUp, and the state it holds.
type backup struct {
	path, leader string
	file         []byte
	index        uint64 // of the state saved, on every node
	hash         string
}

// backedUp starts a 3-node cluster (with args' flags), gives it
// snapshotState, and saves a backup with the CLI.
func backedUp(t *testing.T, h *harness, args func(*node) []string) (*cluster, backup) {
	t.Helper()
	c := h.startClusterWith(3, args)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	snapshotState(t, c.servers())
	b := backup{path: filepath.Join(h.dir, "backup.snap"), leader: st.Leader}
	h.mustCLI(30*time.Second, "snapshot", "save", "-servers", c.servers(), b.path)
	var err error
	if b.file, err = os.ReadFile(b.path); err != nil {
		t.Fatal(err)
	}
	b.index, b.hash = agreedState(t, c)
	return c, b
}

// inspected is `snapshot inspect -json`'s output.
type inspected struct {
	RaftIndex uint64 `json:"raft_index"`
	Index     uint64 `json:"index"`
	Size      uint64 `json:"size"`
	BodySize  uint64 `json:"body_size"`
	SHA256    string `json:"sha256"`
	Services  int    `json:"services"`
	Instances int    `json:"instances"`
	Meta      int    `json:"meta"`
}

func (h *harness) inspect(path string) inspected {
	h.t.Helper()
	r := h.mustCLI(10*time.Second, "snapshot", "inspect", "-json", path)
	var out inspected
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		h.t.Fatalf("inspect -json: %v: %v", err, r)
	}
	return out
}

// TestSnapshot_SaveAndRestoreIntoAFreshCluster: a backup saved from one
// cluster (through a follower: the CLI follows the leader) and restored
// into a freshly started one gives every node of the new cluster the old
// cluster's state exactly: the same state hash at the same index. inspect
// describes the file.
func TestSnapshot_SaveAndRestoreIntoAFreshCluster(t *testing.T) {
	h := newHarness(t)
	src := h.startCluster(3)
	st := h.waitStable(src.servers(), src.ids(), 30*time.Second)
	snapshotState(t, src.servers())
	index, hash := agreedState(t, src)

	follower := ""
	for _, nd := range src.nodes {
		if nd.id != st.Leader {
			follower = nd.addr
		}
	}
	file := filepath.Join(h.dir, "backup.snap")
	r := h.mustCLI(30*time.Second, "snapshot", "save", "-servers", follower, file)
	if !strings.Contains(r.stdout, "saved "+file) {
		t.Errorf("save printed %q, want it to say what it saved", r.stdout)
	}
	in := h.inspect(file)
	if in.Index != index || in.Services != 2 || in.Instances != 4 || in.Meta != 1 || in.Size != in.BodySize+snapfile.HeaderSize {
		t.Errorf("inspect = %+v, want index %d, 2 services, 4 instances, 1 with metadata", in, index)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data[snapfile.HeaderSize:]); fmt.Sprintf("%x", sum) != in.SHA256 {
		t.Errorf("the file's body has SHA-256 %x, inspect says %s", sum, in.SHA256)
	}

	h2 := newHarness(t)
	dst := h2.startCluster(3)
	h2.waitStable(dst.servers(), dst.ids(), 30*time.Second)
	r = h2.mustCLI(60*time.Second, "snapshot", "restore", "-servers", dst.servers(), file)
	want := fmt.Sprintf("index %d (the backup's was %d)", index, index)
	if !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "2 services, 4 instances, 1 with metadata; state hash "+hash) {
		t.Errorf("restore printed %q, want %q and the source's state hash %s", r.stdout, want, hash)
	}
	gotIndex, gotHash := agreedState(t, dst)
	if gotIndex != index || gotHash != hash {
		t.Errorf("restored cluster: every node at index %d with hash %.12s; the source was at %d with %.12s", gotIndex, gotHash, index, hash)
	}
	ins, err := h2.services(dst.servers(), "web")
	if err != nil || len(ins) != 3 || ins[0].Attrs["zone"] != "a" {
		t.Errorf("web on the restored cluster: %+v, %v; want its 3 instances in zone a", ins, err)
	}
}

// TestSnapshot_DamagedOrForeignFilesAreRefused: restoring a file that is
// not an intact backup — a byte flipped in the body or the header,
// truncated, a foreign file, an empty one, and one whose header and
// checksum are right but whose body is not a state (so only the leader's
// own check can refuse it) — fails with an error that says what is wrong,
// and changes nothing on any node.
func TestSnapshot_DamagedOrForeignFilesAreRefused(t *testing.T) {
	h := newHarness(t)
	c, st := backedUp(t, h, nil)
	good, index, hash := st.file, st.index, st.hash

	flip := func(at int) []byte {
		b := append([]byte(nil), good...)
		b[at] ^= 0x40
		return b
	}
	notAState := []byte("this is not a state machine snapshot")
	forged := snapfile.Header{Version: snapfile.Version, Index: 9, Term: 2, Applied: 9, Created: time.Now(), Size: uint64(len(notAState)), SHA256: sha256.Sum256(notAState)}
	cases := []struct {
		name string
		data []byte
		want string // in the error
	}{
		{"a byte of the body flipped", flip(len(good) - 5), "its body is damaged"},
		{"a byte of the header flipped", flip(20), "its header is damaged"},
		{"truncated", good[:len(good)-10], "it is truncated"},
		{"a foreign file", []byte("PEERS=n1=127.0.0.1:7001\n"), "magic bytes"},
		{"empty", nil, "it is empty"},
		{"bytes after the body", append(append([]byte(nil), good...), 0), "bytes after"},
		{"an intact file whose body is not a state", append(forged.Marshal(), notAState...), "snapshot content refused"},
	}
	for _, tc := range cases {
		path := filepath.Join(h.dir, strings.ReplaceAll(tc.name, " ", "-")+".snap")
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		r := h.cli(30*time.Second, "snapshot", "restore", "-servers", c.servers(), "-timeout", "20s", path)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, path) {
			t.Errorf("%s: want exit 1 naming the file and %q: %v", tc.name, tc.want, r)
		}
		if got := h.cli(10*time.Second, "snapshot", "inspect", path); got.code != 1 || !strings.Contains(got.stderr, tc.want) {
			t.Errorf("%s: inspect: want exit 1 and %q: %v", tc.name, tc.want, got)
		}
	}
	for id, v := range views(t, c, nil) {
		if v.applied != index || v.hash != hash {
			t.Errorf("after the refused restores %s is at index %d with hash %.12s, want %d and %.12s (unchanged)", id, v.applied, v.hash, index, hash)
		}
	}
}

// TestSnapshot_RestoreIntoARunningClusterResyncsWatchers: a backup
// restored into the cluster it came from, after changes, replaces the
// state on every node. A watch that was open gets a resync and then the
// restored state — without the instance registered after the backup — at
// an index past every index it saw before, and every node agrees on it,
// also after every node restarted.
func TestSnapshot_RestoreIntoARunningClusterResyncsWatchers(t *testing.T) {
	h := newHarness(t)
	c, st := backedUp(t, h, nil)
	file := st.path

	// An instance registered after the backup, whose registrant then dies
	// without unregistering: the restore, not an expiry, removes it.
	late := h.start("register-late", "register", "-servers", c.servers(), "-ttl", "1m", "web", "10.0.0.9:80")
	h.waitServices(c.servers(), "web", func(in []instance) bool { return len(in) == 4 }, "web with the late instance")
	late.kill9(t)
	before, _ := agreedState(t, c)

	w := h.startWatch("watch", c.nodes[2].addr, "web")
	for e := w.next(t, 10*time.Second); e.Kind != "current"; e = w.next(t, 10*time.Second) {
	}
	r := h.mustCLI(60*time.Second, "snapshot", "restore", "-servers", c.servers(), file)
	if !strings.Contains(r.stdout, "4 instances") {
		t.Errorf("restore printed %q, want 4 instances", r.stdout)
	}
	e := w.next(t, 10*time.Second)
	if e.Kind != "resync" || e.Index <= before {
		t.Fatalf("after the restore the watch printed %q, want a resync at an index past %d", e.line, before)
	}
	var addrs []string
	for e = w.next(t, 10*time.Second); e.Kind == "up"; e = w.next(t, 10*time.Second) {
		addrs = append(addrs, e.Addr)
	}
	if e.Kind != "current" || e.Index <= before || strings.Join(addrs, ",") != "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80" {
		t.Errorf("after the resync: up %v then %q; want the 3 instances of the backup, then current past %d", addrs, e.line, before)
	}
	after, hash := agreedState(t, c)
	if after <= before {
		t.Errorf("every node at index %d after the restore, %d before: indices must only grow", after, before)
	}

	// The restore left a hole in every node's Raft log: each starts again
	// all the same, to the same state.
	for _, nd := range c.nodes {
		nd.p.stop(t, 10*time.Second)
	}
	for _, nd := range c.nodes {
		c.startNode(nd)
	}
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	if i, hh := agreedState(t, c); i != after || hh != hash {
		t.Errorf("after a restart of every node: index %d, hash %.12s; before it %d, %.12s", i, hh, after, hash)
	}
}

// TestSnapshot_UploadProtocolRefusesBadInput drives the restore upload by
// hand, as a hostile or broken client would: chunks without a begin, out of
// order or past the declared size, a commit before the whole file came, a
// begin larger than -max-restore-size or on a follower, a second upload
// while one is open, and a damaged file the client's own check would have
// caught. Each is refused with a code and a message saying what to do; the
// upload of a connection that closes is dropped (another can begin); and
// no node's state changes.
func TestSnapshot_UploadProtocolRefusesBadInput(t *testing.T) {
	h := newHarness(t)
	c, st := backedUp(t, h, func(*node) []string { return []string{"-max-restore-size", "2097152"} })
	good, index, hash := st.file, st.index, st.hash
	var leader, follower string
	for _, nd := range c.nodes {
		if nd.id == st.leader {
			leader = nd.addr
		} else {
			follower = nd.addr
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(addr string) *rpcconn.Conn {
		t.Helper()
		conn, err := rpcconn.Dial(ctx, addr, rpcconn.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	expect := func(what string, err error, code codes.Code, text string) {
		t.Helper()
		if codes.Of(err) != code || err == nil || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: got %v, want %s saying %q", what, err, code, text)
		}
	}
	begin := func(conn *rpcconn.Conn, size int) error {
		return conn.Call(ctx, wire.MethodSnapshotRestoreBegin, false, &wire.SnapshotRestoreBeginRequest{Size: uint64(size)}, &wire.SnapshotRestoreBeginResponse{})
	}
	chunk := func(conn *rpcconn.Conn, off int, data []byte) error {
		return conn.Call(ctx, wire.MethodSnapshotRestoreChunk, false, &wire.SnapshotRestoreChunkRequest{Offset: uint64(off), Data: data}, &wire.Empty{})
	}
	commit := func(conn *rpcconn.Conn) error {
		return conn.Call(ctx, wire.MethodSnapshotRestoreCommit, false, &wire.SnapshotRestoreCommitRequest{}, &wire.SnapshotRestoreResponse{})
	}

	a := dial(leader)
	expect("a chunk without a begin", chunk(a, 0, good[:10]), codes.CodeInvalidArgument, "send SnapshotRestoreBegin first")
	expect("a commit without a begin", commit(a), codes.CodeInvalidArgument, "send SnapshotRestoreBegin first")
	expect("a begin past -max-restore-size", begin(a, 3<<20), codes.CodeTooLarge, "-max-restore-size 2097152")
	expect("a begin smaller than a header", begin(a, 10), codes.CodeInvalidArgument, "smaller than a backup's header")
	expect("a begin on a follower", begin(dial(follower), len(good)), codes.CodeNotLeader, "a restore runs on the leader")
	if err := begin(a, len(good)); err != nil {
		t.Fatalf("begin: %v", err)
	}
	expect("a second upload while one is open", begin(dial(leader), len(good)), codes.CodeResourceExhausted, "another restore is being uploaded")
	expect("a chunk out of order", chunk(a, 5, good[5:10]), codes.CodeInvalidArgument, "send the chunks in order")
	expect("a chunk past the declared size", chunk(a, 0, append(append([]byte(nil), good...), 0)), codes.CodeInvalidArgument, "goes past the")
	if err := chunk(a, 0, good[:100]); err != nil {
		t.Fatalf("chunk: %v", err)
	}
	expect("a commit of part of the file", commit(a), codes.CodeInvalidArgument, "send the rest before committing")
	_ = a.Close()

	// The closed connection's upload is gone: a new one may begin, and a
	// damaged file is refused by the leader itself.
	damaged := append([]byte(nil), good...)
	damaged[len(damaged)-3] ^= 1
	var b *rpcconn.Conn
	poll(t, 5*time.Second, 20*time.Millisecond, "the closed connection's upload to be dropped", func() (bool, string) {
		b = dial(leader)
		err := begin(b, len(damaged))
		return err == nil, fmt.Sprint(err)
	})
	if err := chunk(b, 0, damaged); err != nil {
		t.Fatalf("chunk: %v", err)
	}
	expect("a commit of a damaged file", commit(b), codes.CodeInvalidArgument, "its body is damaged")
	expect("a chunk after the commit", chunk(b, 0, good[:1]), codes.CodeInvalidArgument, "send SnapshotRestoreBegin first")

	for id, v := range views(t, c, nil) {
		if v.applied != index || v.hash != hash {
			t.Errorf("after the refused uploads %s is at index %d with hash %.12s, want %d and %.12s (unchanged)", id, v.applied, v.hash, index, hash)
		}
	}
}
