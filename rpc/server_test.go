package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/internal/mux"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// fakeBackend records calls; bad input must never reach it.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string
	watch chan struct{} // closed Subscribe streams report here
}

func (f *fakeBackend) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) Register(_ context.Context, r backend.Registration) (uint64, error) {
	f.record("Register " + r.Name)
	return 7, nil
}
func (f *fakeBackend) Unregister(_ context.Context, u backend.Unregistration) (uint64, error) {
	name := u.Name
	f.record("Unregister " + name)
	return 8, nil
}
func (f *fakeBackend) Heartbeat(_ context.Context, keys []backend.InstanceKey) ([]error, error) {
	f.record("Heartbeat")
	return make([]error, len(keys)), nil
}
func (f *fakeBackend) List(_ context.Context, name string, _ backend.ListOptions) (uint64, []backend.Instance, error) {
	f.record("List " + name)
	return 9, nil, nil
}
func (f *fakeBackend) Subscribe(_ context.Context, name string, _, _ uint64) (backend.UpdateStream, error) {
	f.record("Subscribe " + name)
	return &fakeStream{closed: f.watch}, nil
}
func (f *fakeBackend) SetMeta(_ context.Context, w backend.MetaWrite) (uint64, error) {
	f.record("SetMeta " + w.Name)
	if w.ExpectIndex != 5 {
		return 10, codes.Conflict(5, "set metadata of %s expecting index %d", w.Name, w.ExpectIndex)
	}
	return 11, nil
}
func (f *fakeBackend) DeleteMeta(_ context.Context, w backend.MetaWrite) (uint64, error) {
	f.record("DeleteMeta " + w.Name)
	return 12, nil
}
func (f *fakeBackend) GetMeta(_ context.Context, name string, _ backend.MetaOptions) (uint64, backend.Meta, error) {
	f.record("GetMeta " + name)
	return 13, backend.Meta{Data: []byte{0, 1}, Index: 5}, nil
}
func (f *fakeBackend) Status(context.Context) (wire.StatusResponse, error) {
	return wire.StatusResponse{}, nil
}
func (f *fakeBackend) NodeInfo(context.Context, bool) (wire.NodeStatus, error) {
	return wire.NodeStatus{}, nil
}
func (f *fakeBackend) ReadIndex(context.Context) (uint64, error) {
	f.record("ReadIndex")
	return 9, nil
}
func (f *fakeBackend) Freshness() wire.Freshness {
	return wire.Freshness{KnownLeader: true, LastContactMillis: 7}
}

type fakeStream struct {
	once   sync.Once
	closed chan struct{}
}

func (s *fakeStream) Next(ctx context.Context) ([]backend.Event, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (s *fakeStream) Close() {
	s.once.Do(func() {
		if s.closed != nil {
			s.closed <- struct{}{}
		}
	})
}

func startServer(t *testing.T, cfg Config) (string, *fakeBackend) {
	t.Helper()
	_, addr, fb := startServing(t, cfg)
	return addr, fb
}

// startServing is startServer that also returns the server.
func startServing(t *testing.T, cfg Config) (*Server, string, *fakeBackend) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := mux.New(ln, mux.Config{})
	rl := m.Listen(mux.ConnRPC)
	go func() { _ = m.Serve() }()
	fb := &fakeBackend{watch: make(chan struct{}, 16)}
	cfg.Logger = logging.Discard()
	s := New(cfg, fb)
	go func() { _ = s.Serve(rl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		_ = m.Close()
	})
	return s, ln.Addr().String(), fb
}

func dial(t *testing.T, addr string) *rpcconn.Conn {
	t.Helper()
	c, err := rpcconn.Dial(context.Background(), addr, rpcconn.Options{MaxRequest: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRPC_BadInputIsRejectedAndChangesNothing(t *testing.T) {
	addr, fb := startServer(t, Config{})
	c := dial(t, addr)
	manyAttrs := map[string]string{}
	for i := range 65 {
		manyAttrs[strings.Repeat("k", i+1)] = "v"
	}
	bigKeys := make([]wire.InstanceKey, 1025)
	for i := range bigKeys {
		bigKeys[i] = wire.InstanceKey{Name: "a", Addr: "h:1"}
	}
	cases := []struct {
		name   string
		method string
		req    any
		want   string // substring of the error message
	}{
		{"empty name", wire.MethodRegister, &wire.RegisterRequest{Name: "", Addr: "h:1"}, "service name is empty"},
		{"name charset", wire.MethodRegister, &wire.RegisterRequest{Name: "web/api", Addr: "h:1"}, `has '/' at byte 3`},
		{"name leading dash", wire.MethodRegister, &wire.RegisterRequest{Name: "-web", Addr: "h:1"}, "starting with a letter or digit"},
		{"name too long", wire.MethodRegister, &wire.RegisterRequest{Name: strings.Repeat("a", 129), Addr: "h:1"}, "129 bytes, the limit is 128"},
		{"addr missing port", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "10.0.0.1"}, "is not host:port"},
		{"addr port zero", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:0"}, "want a number 1-65535"},
		{"addr port leading zero", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:080"}, "leading zeros"},
		{"addr port too big", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:70000"}, "want a number 1-65535"},
		{"addr empty host", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: ":80"}, "has no host"},
		{"addr space in host", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "a b:80"}, "control or space"},
		{"too many attrs", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: manyAttrs}, "65 attributes, the limit is 64"},
		{"attr value too long", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"k": strings.Repeat("v", 1025)}}, "1025 bytes, the limit is 1024"},
		{"empty attr key", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"": "v"}}, "attribute key is empty"},
		{"ttl too short", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", TTLMillis: 999}, "ttl 999ms is out of range"},
		{"ttl too long", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", TTLMillis: 25 * 3600 * 1000}, "out of range"},
		{"ttl negative", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", TTLMillis: -5}, "ttl_ms -5 is out of range"},
		{"request id too long", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", RequestID: strings.Repeat("x", 65)}, "request id is 65 bytes"},
		{"unregister bad addr", wire.MethodUnregister, &wire.UnregisterRequest{Name: "web", Addr: "nope"}, "is not host:port"},
		{"heartbeat empty", wire.MethodHeartbeat, &wire.HeartbeatRequest{}, "heartbeat names 0 instances"},
		{"heartbeat too many", wire.MethodHeartbeat, &wire.HeartbeatRequest{Instances: bigKeys}, "1025 instances"},
		{"heartbeat bad name", wire.MethodHeartbeat, &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: "a b", Addr: "h:1"}}}, "service name"},
		{"list bad name", wire.MethodList, &wire.ListRequest{Name: "a*"}, "service name"},
		{"list bad filter", wire.MethodList, &wire.ListRequest{Name: "a", Attrs: map[string]string{"": "x"}}, "attribute key is empty"},
		{"register body of wrong shape", wire.MethodRegister, []string{"not", "a", "map"}, "Register body is an array, not a map"},
		// An array in the order of the fields, which the codec would take
		// as the struct.
		{"register body an array of its fields", wire.MethodRegister, []any{"web", "h:1", map[string]string{}, 0, ""}, "Register body is an array, not a map"},
		{"list body a string", wire.MethodList, "web", "List body is a string, not a map"},
		{"addr not UTF-8", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h\xff:1"}, "not UTF-8 at byte 1 of its host"},
		{"attr key not UTF-8", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"k\xc3": "v"}}, "not UTF-8 at byte 1"},
		{"attr value not UTF-8", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"k": "\xe2\x82"}}, "not UTF-8 at byte 0"},
		{"attr key with =", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"a=b": "v"}}, "has '=' at byte 1"},
		{"attr value with a newline", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"k": "a\nb"}}, "control character U+000A at byte 1"},
		{"attr key with a C1 control", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"k\u0085": "v"}}, "control character U+0085"},
		{"list filter key with =", wire.MethodList, &wire.ListRequest{Name: "a", Attrs: map[string]string{"x=y": "1"}}, "has '='"},
		{"request id with a control", wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "h:1", RequestID: "a\x00"}, "request id"},
		{"register wrong field type", wire.MethodRegister, map[string]any{"name": 12, "addr": "h:1"}, "malformed Register body"},
		{"set meta bad name", wire.MethodSetMeta, &wire.SetMetaRequest{Name: "db/x", Data: []byte("x")}, "has '/' at byte 2"},
		{"set meta too large", wire.MethodSetMeta, &wire.SetMetaRequest{Name: "db", Data: make([]byte, 65537)}, "metadata of db is 65537 bytes, the limit is 65536"},
		{"set meta request id too long", wire.MethodSetMeta, &wire.SetMetaRequest{Name: "db", RequestID: strings.Repeat("x", 65)}, "request id is 65 bytes"},
		{"delete meta bad name", wire.MethodDeleteMeta, &wire.DeleteMetaRequest{Name: ""}, "service name is empty"},
		{"get meta bad name", wire.MethodGetMeta, &wire.GetMetaRequest{Name: "-db"}, "starting with a letter or digit"},
		{"set meta data a map", wire.MethodSetMeta, map[string]any{"name": "db", "data": map[string]string{}}, "malformed SetMeta body"},
		{"unknown method", "Explode", &wire.Empty{}, `method "Explode"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Call(ctx, tc.method, false, tc.req, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			wantCode := codes.ErrInvalidArgument
			switch {
			case tc.method == "Explode":
				wantCode = codes.ErrUnknownMethod
			case strings.Contains(tc.want, "the limit is 65536"):
				wantCode = codes.ErrTooLarge
			}
			if !errors.Is(err, wantCode) {
				t.Fatalf("error %q is not %v", err, wantCode)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
	// A small frame that would decode into many objects (9000 empty maps in
	// 9 KB) is refused before decoding.
	amplify := map[string]any{"instances": make([]map[string]string, 9000)}
	if err := c.Call(context.Background(), wire.MethodHeartbeat, false, amplify, nil); !errors.Is(err, codes.ErrTooLarge) ||
		!strings.Contains(err.Error(), "more than 8192 array elements") {
		t.Fatalf("heartbeat of 9000 empty maps: %v, want ErrTooLarge naming the element limit", err)
	}
	if calls := fb.Calls(); len(calls) != 0 {
		t.Fatalf("bad input reached the backend: %v", calls)
	}
	// The connection still serves good requests.
	var resp wire.WriteResponse
	if err := c.Call(context.Background(), wire.MethodRegister, false, &wire.RegisterRequest{Name: "web", Addr: "h:1", TTLMillis: 1000}, &resp); err != nil || resp.Index != 7 {
		t.Fatalf("valid request after bad ones: %v %+v", err, resp)
	}
}

// rawConn speaks the protocol by hand, for frames the client would never send.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := mux.Dial(addr, mux.ConnRPC, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (r *rawConn) send(b []byte) {
	r.t.Helper()
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(b)))
	if _, err := r.nc.Write(append(l[:], b...)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) sendFrame(hdr *wire.Header, body any) {
	r.t.Helper()
	if err := wire.WriteFrame(r.nc, hdr, body, 0); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) recv() *wire.Frame {
	r.t.Helper()
	f, err := wire.ReadFrame(r.br, 1<<20)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return f
}

func TestRPC_MalformedFramesKeepTheConnectionServing(t *testing.T) {
	addr, fb := startServer(t, Config{MaxFrame: 4096})
	r := dialRaw(t, addr)

	// Garbage header: answered under seq 0, connection kept.
	r.send([]byte{0xc1, 0xc1, 0xc1})
	if f := r.recv(); f.Header.Seq != 0 || f.Header.Code != string(codes.CodeInvalidArgument) {
		t.Fatalf("garbage header answered with %+v", f.Header)
	}
	// Empty frame.
	r.send(nil)
	if f := r.recv(); f.Header.Code != string(codes.CodeInvalidArgument) {
		t.Fatalf("empty frame answered with %+v", f.Header)
	}
	// Oversized but skippable frame: answered under its own seq, connection kept.
	r.sendFrame(&wire.Header{Seq: 41, Method: wire.MethodRegister}, &wire.RegisterRequest{Name: "web", Addr: "h:1",
		Attrs: map[string]string{"big": strings.Repeat("x", 8000)}})
	if f := r.recv(); f.Header.Seq != 41 || f.Header.Code != string(codes.CodeTooLarge) || !strings.Contains(f.Header.Error, "exceeds the 4096 byte limit") {
		t.Fatalf("oversized frame answered with %+v", f.Header)
	}
	// Body missing for a method that needs one.
	r.send(func() []byte {
		var b strings.Builder
		_ = wire.WriteFrame(&b, &wire.Header{Seq: 42, Method: wire.MethodList}, &wire.Empty{}, 0)
		return []byte(b.String()[4:])
	}())
	if f := r.recv(); f.Header.Seq != 42 || f.Header.Code != string(codes.CodeInvalidArgument) {
		t.Fatalf("list without a name answered with %+v", f.Header)
	}
	// Still serving.
	r.sendFrame(&wire.Header{Seq: 43, Method: wire.MethodList}, &wire.ListRequest{Name: "web"})
	f := r.recv()
	var lr wire.ListResponse
	if f.Header.Seq != 43 || f.Header.Code != "" || f.Decode(&lr) != nil || lr.Index != 9 {
		t.Fatalf("valid list after bad frames: %+v %+v", f.Header, lr)
	}
	if calls := fb.Calls(); len(calls) != 1 || calls[0] != "List web" {
		t.Fatalf("backend calls %v, want only the valid list", calls)
	}
	// A frame claiming more than can be skipped ends the connection.
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], 1<<31)
	if _, err := r.nc.Write(l[:]); err != nil {
		t.Fatal(err)
	}
	if f := r.recv(); f.Header.Code != string(codes.CodeTooLarge) {
		t.Fatalf("huge frame answered with %+v", f.Header)
	}
	if _, err := wire.ReadFrame(r.br, 1<<20); err == nil {
		t.Fatal("connection still open after a frame too large to skip")
	}
}

func TestRPC_CancelRightAfterWatchEndsTheStream(t *testing.T) {
	addr, fb := startServer(t, Config{})
	r := dialRaw(t, addr)
	for i := range 50 {
		seq := uint64(100 + i)
		r.sendFrame(&wire.Header{Seq: seq, Method: wire.MethodWatch}, &wire.WatchRequest{Name: "web"})
		r.sendFrame(&wire.Header{Method: wire.MethodCancel}, &wire.CancelRequest{Seq: seq})
	}
	for i := range 50 {
		select {
		case <-fb.watch:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 50 cancelled streams were closed", i)
		}
	}
}

func TestRPC_StreamLimitPerConnection(t *testing.T) {
	addr, _ := startServer(t, Config{MaxStreams: 3, MaxInFlight: 2})
	r := dialRaw(t, addr)
	for i := range 4 {
		r.sendFrame(&wire.Header{Seq: uint64(i + 1), Method: wire.MethodWatch}, &wire.WatchRequest{Name: "web"})
	}
	f := r.recv()
	if f.Header.Seq != 4 || f.Header.Code != string(codes.CodeResourceExhausted) {
		t.Fatalf("4th stream answered with %+v", f.Header)
	}
	// Streams do not use up the request slots: calls still go through.
	for i := range 3 {
		r.sendFrame(&wire.Header{Seq: uint64(10 + i), Method: wire.MethodList}, &wire.ListRequest{Name: "web"})
		if f := r.recv(); f.Header.Seq != uint64(10+i) || f.Header.Code != "" {
			t.Fatalf("list with streams open answered %+v", f.Header)
		}
	}
}

func TestRPC_ClientRefusesOversizedRequestUnsent(t *testing.T) {
	addr, fb := startServer(t, Config{})
	c, err := rpcconn.Dial(context.Background(), addr, rpcconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	attrs := map[string]string{}
	for i := range 60 {
		attrs[strings.Repeat("k", i+1)] = strings.Repeat("v", 1000)
	}
	keys := make([]wire.InstanceKey, 1024)
	for i := range keys {
		keys[i] = wire.InstanceKey{Name: strings.Repeat("n", 128), Addr: strings.Repeat("h", 250) + ":65535"}
	}
	err = c.Call(context.Background(), wire.MethodHeartbeat, false, &wire.HeartbeatRequest{Instances: keys}, nil)
	if err != nil {
		t.Fatalf("a full heartbeat batch of maximal keys must fit the default frame: %v", err)
	}
	big := append(append(append([]wire.InstanceKey{}, keys...), keys...), keys...)
	err = c.Call(context.Background(), wire.MethodHeartbeat, false, &wire.HeartbeatRequest{Instances: big}, nil)
	if !errors.Is(err, codes.ErrTooLarge) || codes.Retryable(err) || !codes.NotApplied(err) {
		t.Fatalf("oversized request: %v, want a non-retryable ErrTooLarge", err)
	}
	if c.Err() != nil {
		t.Fatalf("connection failed after refusing locally: %v", c.Err())
	}
	if calls := fb.Calls(); len(calls) != 1 {
		t.Fatalf("backend calls %v, want exactly the one valid heartbeat", calls)
	}
}

// TestRPC_MetaMethods: the meta methods reach the backend, and a conflict
// reaches the caller with the metadata's current index.
func TestRPC_MetaMethods(t *testing.T) {
	addr, fb := startServer(t, Config{})
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wr wire.WriteResponse
	if err := c.Call(ctx, wire.MethodSetMeta, false, &wire.SetMetaRequest{Name: "db", Data: []byte("x"), ExpectIndex: 5}, &wr); err != nil || wr.Index != 11 {
		t.Fatalf("SetMeta = %+v, %v", wr, err)
	}
	err := c.Call(ctx, wire.MethodSetMeta, false, &wire.SetMetaRequest{Name: "db", Data: []byte("x"), ExpectIndex: 4}, &wr)
	if idx, ok := codes.ConflictIndex(err); !ok || idx != 5 || !strings.Contains(err.Error(), "expecting index 4") {
		t.Fatalf("losing SetMeta = %v (conflict %v, index %d), want a conflict at 5", err, ok, idx)
	}
	if err := c.Call(ctx, wire.MethodDeleteMeta, false, &wire.DeleteMetaRequest{Name: "db"}, &wr); err != nil || wr.Index != 12 {
		t.Fatalf("DeleteMeta = %+v, %v", wr, err)
	}
	var gr wire.GetMetaResponse
	if err := c.Call(ctx, wire.MethodGetMeta, false, &wire.GetMetaRequest{Name: "db"}, &gr); err != nil ||
		gr.Index != 13 || gr.MetaIndex != 5 || !bytes.Equal(gr.Data, []byte{0, 1}) || !gr.KnownLeader {
		t.Fatalf("GetMeta = %+v, %v", gr, err)
	}
	if got, want := fb.Calls(), []string{"SetMeta db", "SetMeta db", "DeleteMeta db", "GetMeta db"}; !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v", got, want)
	}
}
