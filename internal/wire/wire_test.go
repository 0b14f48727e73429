package wire_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// message is one frame of the protocol: a header, a body, and a fresh value
// of the body's type to decode into.
type message struct {
	name  string
	hdr   wire.Header
	body  any
	fresh func() any
}

// messages covers every message type, as request and as response. Bodies use
// non-empty maps and slices: nil and empty encode differently (nil and {}),
// which is not what a round trip checks.
func messages() []message {
	attrs := map[string]string{"zone": "eu-1", "v": "2"}
	return []message{
		{"register", wire.Header{Seq: 1, Method: wire.MethodRegister},
			&wire.RegisterRequest{Name: "web", Addr: "10.0.0.1:80", Attrs: attrs, TTLMillis: 15000, RequestID: "r-1"},
			func() any { return new(wire.RegisterRequest) }},
		{"register forwarded", wire.Header{Seq: 2, Method: wire.MethodRegister, Forwarded: true},
			&wire.RegisterRequest{Name: "web", Addr: "[::1]:80", Attrs: map[string]string{"a": ""}, TTLMillis: -1},
			func() any { return new(wire.RegisterRequest) }},
		{"unregister", wire.Header{Seq: 3, Method: wire.MethodUnregister},
			&wire.UnregisterRequest{Name: "web", Addr: "10.0.0.1:80", RequestID: "r-2"},
			func() any { return new(wire.UnregisterRequest) }},
		{"write response", wire.Header{Seq: 3},
			&wire.WriteResponse{Index: 1<<64 - 1},
			func() any { return new(wire.WriteResponse) }},
		{"heartbeat", wire.Header{Seq: 4, Method: wire.MethodHeartbeat},
			&wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: "web", Addr: "h:1"}, {Name: "db", Addr: "h:2"}}},
			func() any { return new(wire.HeartbeatRequest) }},
		{"heartbeat response", wire.Header{Seq: 4},
			&wire.HeartbeatResponse{Results: []wire.Result{{}, {Code: string(codes.CodeNotFound), Error: "instance not registered"}}},
			func() any { return new(wire.HeartbeatResponse) }},
		{"list", wire.Header{Seq: 5, Method: wire.MethodList},
			&wire.ListRequest{Name: "web", Attrs: attrs, Consistent: true, MinIndex: 42},
			func() any { return new(wire.ListRequest) }},
		{"list response", wire.Header{Seq: 5},
			&wire.ListResponse{Index: 43, Instances: []wire.Instance{
				{Name: "web", Addr: "h:1", Attrs: attrs, TTLMillis: 10000, CreateIndex: 3, Index: 40},
				{Name: "web", Addr: "h:2", Attrs: map[string]string{"x": "y"}, TTLMillis: 1000, CreateIndex: 41, Index: 41, Suspect: true},
			}},
			func() any { return new(wire.ListResponse) }},
		{"watch", wire.Header{Seq: 6, Method: wire.MethodWatch},
			&wire.WatchRequest{Name: "web", FromIndex: 10, MinIndex: 12},
			func() any { return new(wire.WatchRequest) }},
		{"watch events", wire.Header{Seq: 6, More: true},
			&wire.WatchEvents{Events: []wire.Event{
				{Kind: wire.KindUp, Index: 11, Name: "web", Addr: "h:1", Attrs: attrs, TTLMillis: 10000, CreateIndex: 11},
				{Kind: wire.KindUpdate, Index: 12, Name: "web", Addr: "h:1", TTLMillis: 10000, CreateIndex: 11, Suspect: true},
				{Kind: wire.KindDown, Index: 12, Name: "web", Addr: "h:1", Reason: wire.ReasonExpire},
				{Kind: wire.KindCurrent, Index: 12, Name: "web"},
			}},
			func() any { return new(wire.WatchEvents) }},
		{"watch end", wire.Header{Seq: 6, Code: string(codes.CodeShuttingDown), Error: "node is shutting down"},
			&wire.Empty{},
			func() any { return new(wire.Empty) }},
		{"cancel", wire.Header{Method: wire.MethodCancel},
			&wire.CancelRequest{Seq: 6},
			func() any { return new(wire.CancelRequest) }},
		{"status", wire.Header{Seq: 7, Method: wire.MethodStatus},
			&wire.Empty{},
			func() any { return new(wire.Empty) }},
		{"status response", wire.Header{Seq: 7},
			&wire.StatusResponse{Leader: "n1", Nodes: []wire.NodeStatus{
				{ID: "n1", Addr: "h:1111", State: "Leader", Term: 3, AppliedIndex: 9, CommitIndex: 9, LastIndex: 10, Leader: "n1", Voter: true, LogStore: "wal"},
				{ID: "n2", Addr: "h:1112", State: "unreachable", Error: "dial: refused"},
			}},
			func() any { return new(wire.StatusResponse) }},
		{"node info", wire.Header{Seq: 8, Method: wire.MethodNodeInfo},
			&wire.Empty{},
			func() any { return new(wire.Empty) }},
		{"node info response", wire.Header{Seq: 8},
			&wire.NodeStatus{ID: "n1", Addr: "h:1111", State: "Follower", Term: 1, Leader: "n2", StormHeld: 3, StormHolds: 9, StormReleased: 4, StormUnheld: 2},
			func() any { return new(wire.NodeStatus) }},
		{"error response", wire.Header{Seq: 9, Code: string(codes.CodeNoLeader), Error: "no leader after 3s"},
			&wire.Empty{},
			func() any { return new(wire.Empty) }},
	}
}

// encode returns the bytes WriteFrame produces for hdr and body.
func encode(t testing.TB, hdr wire.Header, body any) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := wire.WriteFrame(&buf, &hdr, body, 0); err != nil {
		t.Fatalf("WriteFrame: %v", err)
	}
	return buf.Bytes()
}

func reader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func TestWire_RoundTripEveryMessage(t *testing.T) {
	for _, m := range messages() {
		t.Run(m.name, func(t *testing.T) {
			b := encode(t, m.hdr, m.body)
			br := reader(b)
			f, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if f.Header != m.hdr {
				t.Errorf("header = %+v, want %+v", f.Header, m.hdr)
			}
			got := m.fresh()
			if err := f.Decode(got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, m.body) {
				t.Errorf("body = %+v, want %+v", got, m.body)
			}
			if _, err := wire.ReadFrame(br, wire.DefaultMaxFrame); err != io.EOF {
				t.Errorf("after the only frame: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestWire_FramesBackToBack(t *testing.T) {
	// All messages on one stream: each ReadFrame must stop exactly at its
	// frame's end, or the next header would not decode.
	var stream bytes.Buffer
	msgs := messages()
	for _, m := range msgs {
		stream.Write(encode(t, m.hdr, m.body))
	}
	br := reader(stream.Bytes())
	for _, m := range msgs {
		f, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
		if err != nil {
			t.Fatalf("%s: ReadFrame: %v", m.name, err)
		}
		got := m.fresh()
		if err := f.Decode(got); err != nil {
			t.Fatalf("%s: Decode: %v", m.name, err)
		}
		if f.Header != m.hdr || !reflect.DeepEqual(got, m.body) {
			t.Errorf("%s: got %+v %+v, want %+v %+v", m.name, f.Header, got, m.hdr, m.body)
		}
	}
	if _, err := wire.ReadFrame(br, wire.DefaultMaxFrame); err != io.EOF {
		t.Errorf("at the end: err = %v, want io.EOF", err)
	}
}

func TestWire_LengthPrefix(t *testing.T) {
	// The smallest frame, byte for byte as docs/protocol.md describes it:
	// {"seq": 1} {} behind a 4-byte big-endian length.
	got := encode(t, wire.Header{Seq: 1}, nil)
	want := []byte{0, 0, 0, 7, 0x81, 0xa3, 's', 'e', 'q', 0x01, 0x80}
	if !bytes.Equal(got, want) {
		t.Errorf("frame = % x, want % x", got, want)
	}
	for _, m := range messages() {
		b := encode(t, m.hdr, m.body)
		if n := binary.BigEndian.Uint32(b); int(n) != len(b)-4 {
			t.Errorf("%s: length prefix %d, frame carries %d bytes", m.name, n, len(b)-4)
		}
	}
	// A body over 64 KiB: the prefix is still right when the pooled buffer
	// had to grow (and is then not returned to the pool).
	big := encode(t, wire.Header{Seq: 2}, &wire.RegisterRequest{Name: strings.Repeat("n", 100<<10)})
	if n := binary.BigEndian.Uint32(big); int(n) != len(big)-4 {
		t.Errorf("large frame: prefix %d, carries %d", n, len(big)-4)
	}
}

func TestWriteFrame_NilBodyIsEmptyMap(t *testing.T) {
	f, err := wire.ReadFrame(reader(encode(t, wire.Header{Seq: 1}, nil)), 100)
	if err != nil {
		t.Fatal(err)
	}
	var e wire.Empty
	if err := f.Decode(&e); err != nil {
		t.Errorf("nil body does not decode as Empty: %v", err)
	}
}

func TestReadFrame_TooLarge(t *testing.T) {
	b := encode(t, wire.Header{Seq: 5, Method: wire.MethodList}, &wire.ListRequest{Name: "web"})
	size := len(b) - 4

	// Exactly at the limit is accepted.
	if _, err := wire.ReadFrame(reader(b), size); err != nil {
		t.Fatalf("frame of %d bytes with limit %d: %v", size, size, err)
	}

	br := reader(b)
	_, err := wire.ReadFrame(br, size-1)
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) {
		t.Fatalf("err = %v (%T), want *TooLargeError", err, err)
	}
	if tl.Size != int64(size) || tl.Limit != size-1 {
		t.Errorf("TooLargeError = %+v, want Size %d Limit %d", tl, size, size-1)
	}
	if !errors.Is(err, codes.ErrTooLarge) || codes.Of(err) != codes.CodeTooLarge {
		t.Errorf("err = %v does not wrap codes.ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("message %q does not say what happened", err)
	}
	// Only the length prefix was consumed: the frame's bytes are still there.
	rest, _ := io.ReadAll(br)
	if !bytes.Equal(rest, b[4:]) {
		t.Errorf("after TooLargeError %d bytes remain, want the %d bytes of the frame", len(rest), size)
	}
}

func TestWriteFrame_Limit(t *testing.T) {
	hdr := wire.Header{Seq: 1, Method: wire.MethodRegister}
	body := &wire.RegisterRequest{Name: "web", Addr: "h:1"}
	size := len(encode(t, hdr, body)) - 4

	var buf bytes.Buffer
	if err := wire.WriteFrame(&buf, &hdr, body, size); err != nil || buf.Len() != size+4 {
		t.Fatalf("at the limit: err %v, wrote %d bytes", err, buf.Len())
	}

	buf.Reset()
	err := wire.WriteFrame(&buf, &hdr, body, size-1)
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, codes.ErrTooLarge) {
		t.Fatalf("err = %v, want *TooLargeError wrapping ErrTooLarge", err)
	}
	if tl.Size != int64(size) || tl.Limit != size-1 {
		t.Errorf("TooLargeError = %+v, want Size %d Limit %d", tl, size, size-1)
	}
	if buf.Len() != 0 {
		t.Errorf("a refused frame wrote %d bytes", buf.Len())
	}
}

func TestWriteFrame_EncodeError(t *testing.T) {
	// What go-msgpack refuses. (A receivable channel is not among them: it
	// is drained and encoded as an array; a func encodes as nil.)
	for name, body := range map[string]any{
		"send-only channel": make(chan<- int),
		"complex":           complex(1, 2),
		"complex in a map":  map[string]any{"c": complex64(1)},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			err := wire.WriteFrame(&buf, &wire.Header{Seq: 1}, body, 0)
			if !errors.Is(err, wire.ErrEncode) {
				t.Fatalf("err = %v, want ErrEncode", err)
			}
			if buf.Len() != 0 {
				t.Errorf("a frame that failed to encode wrote %d bytes", buf.Len())
			}
			// The pooled buffer holds half a frame now; the next frame must not see it.
			got := encode(t, wire.Header{Seq: 1}, nil)
			if want := []byte{0, 0, 0, 7, 0x81, 0xa3, 's', 'e', 'q', 0x01, 0x80}; !bytes.Equal(got, want) {
				t.Errorf("next frame = % x, want % x", got, want)
			}
		})
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteFrame_WriterErrorPassesThrough(t *testing.T) {
	boom := errors.New("boom")
	err := wire.WriteFrame(failWriter{boom}, &wire.Header{Seq: 1}, nil, 0)
	if !errors.Is(err, boom) || errors.Is(err, wire.ErrEncode) {
		t.Errorf("err = %v, want the writer's error and not ErrEncode", err)
	}
}

func TestSkipFrame(t *testing.T) {
	big := encode(t, wire.Header{Seq: 7, Method: wire.MethodRegister},
		&wire.RegisterRequest{Name: "web", Attrs: map[string]string{"k": strings.Repeat("v", 10000)}})
	next := encode(t, wire.Header{Seq: 8, Method: wire.MethodList}, &wire.ListRequest{Name: "web"})
	br := reader(append(append([]byte{}, big...), next...))

	_, err := wire.ReadFrame(br, 1000)
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) {
		t.Fatalf("err = %v, want *TooLargeError", err)
	}
	seq, err := wire.SkipFrame(br, tl.Size, 1<<20)
	if err != nil || seq != 7 {
		t.Fatalf("SkipFrame = %d, %v; want 7, nil", seq, err)
	}
	f, err := wire.ReadFrame(br, 1000)
	if err != nil || f.Header.Seq != 8 {
		t.Fatalf("frame after the skipped one: %+v, %v; want seq 8", f, err)
	}
}

func TestSkipFrame_SmallFrameAndBadHeader(t *testing.T) {
	// A frame shorter than the 4096-byte peek, and one whose header does not
	// decode (seq 0), are both skipped exactly.
	small := encode(t, wire.Header{Seq: 3}, nil)
	bad := []byte{0, 0, 0, 3, 0xc1, 0xc1, 0xc1}
	next := encode(t, wire.Header{Seq: 4}, nil)
	br := reader(bytes.Join([][]byte{small, bad, next}, nil))
	for _, want := range []uint64{3, 0} {
		var lenBuf [4]byte
		if _, err := io.ReadFull(br, lenBuf[:]); err != nil {
			t.Fatal(err)
		}
		seq, err := wire.SkipFrame(br, int64(binary.BigEndian.Uint32(lenBuf[:])), 1<<20)
		if err != nil || seq != want {
			t.Fatalf("SkipFrame = %d, %v; want %d, nil", seq, err, want)
		}
	}
	if f, err := wire.ReadFrame(br, 100); err != nil || f.Header.Seq != 4 {
		t.Fatalf("next frame: %+v, %v; want seq 4", f, err)
	}
}

func TestSkipFrame_RefusesAboveMax(t *testing.T) {
	b := encode(t, wire.Header{Seq: 9}, &wire.RegisterRequest{Name: strings.Repeat("n", 2000)})
	br := reader(b[4:])
	if _, err := wire.SkipFrame(br, int64(len(b)-4), 1000); err == nil {
		t.Fatal("SkipFrame of a frame above max succeeded")
	}
	if br.Buffered() != 0 {
		// Nothing may have been consumed: bufio only fills on a read.
		t.Errorf("SkipFrame above max read from the connection")
	}
}

func TestSkipFrame_Truncated(t *testing.T) {
	b := encode(t, wire.Header{Seq: 9}, &wire.RegisterRequest{Name: strings.Repeat("n", 6000)})
	for _, cut := range []int{0, 10, 4095, 5000} {
		if _, err := wire.SkipFrame(reader(b[4:4+cut]), int64(len(b)-4), 1<<20); err == nil {
			t.Errorf("SkipFrame over a frame cut after %d bytes succeeded", cut)
		}
	}
}

func TestReadFrame_Truncated(t *testing.T) {
	b := encode(t, wire.Header{Seq: 1, Method: wire.MethodRegister},
		&wire.RegisterRequest{Name: "web", Addr: "h:1", Attrs: map[string]string{"k": "v"}})
	if _, err := wire.ReadFrame(reader(nil), 1000); err != io.EOF {
		t.Errorf("no bytes: err = %v, want io.EOF (a clean end)", err)
	}
	for cut := 1; cut < len(b); cut++ {
		if _, err := wire.ReadFrame(reader(b[:cut]), 1000); err != io.ErrUnexpectedEOF {
			t.Errorf("cut after %d of %d bytes: err = %v, want io.ErrUnexpectedEOF", cut, len(b), err)
		}
	}
}

// frame wraps payload (header and body bytes) in a length prefix.
func frame(payload ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

func TestReadFrame_MalformedHeader(t *testing.T) {
	seq := []byte{0xa3, 's', 'e', 'q'}
	cases := map[string][]byte{
		"empty frame":          {},
		"reserved byte":        {0xc1, 0x80},
		"string header":        {0xa1, 'x', 0x80},
		"truncated map":        {0x81},
		"truncated key":        {0x81, 0xa3, 's'},
		"seq is a string":      append(append([]byte{0x81}, seq...), 0xa1, '1'),
		"seq is negative":      append(append([]byte{0x81}, seq...), 0xff),
		"seq is a float":       append(append([]byte{0x81}, seq...), 0xca, 0x3f, 0x80, 0, 0),
		"method is an integer": {0x81, 0xa6, 'm', 'e', 't', 'h', 'o', 'd', 0x01},
		"more is a string":     {0x81, 0xa4, 'm', 'o', 'r', 'e', 0xa1, 'y'},
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			next := encode(t, wire.Header{Seq: 2}, nil)
			br := reader(append(frame(payload...), next...))
			_, err := wire.ReadFrame(br, 1000)
			if !errors.Is(err, codes.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), "header") {
				t.Errorf("message %q does not name the header", err)
			}
			// The frame was whole: the stream goes on with the next one.
			if f, err := wire.ReadFrame(br, 1000); err != nil || f.Header.Seq != 2 {
				t.Errorf("next frame: %+v, %v; want seq 2", f, err)
			}
		})
	}
}

func TestFrame_DecodeWrongShape(t *testing.T) {
	hdr := []byte{0x82, 0xa6, 'm', 'e', 't', 'h', 'o', 'd', 0xa8, 'R', 'e', 'g', 'i', 's', 't', 'e', 'r', 0xa3, 's', 'e', 'q', 0x01}
	cases := map[string][]byte{
		"no body":             nil,
		"string body":         {0xa1, 'x'},
		"integer body":        {0x05},
		"name is an integer":  {0x81, 0xa4, 'n', 'a', 'm', 'e', 0x05},
		"attrs is a string":   {0x81, 0xa5, 'a', 't', 't', 'r', 's', 0xa1, 'x'},
		"ttl is a float":      {0x81, 0xa6, 't', 't', 'l', '_', 'm', 's', 0xca, 0x3f, 0x80, 0, 0},
		"truncated attrs map": {0x81, 0xa5, 'a', 't', 't', 'r', 's', 0x82, 0xa1, 'k'},
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			f, err := wire.ReadFrame(reader(frame(append(append([]byte{}, hdr...), body...)...)), 1000)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			var req wire.RegisterRequest
			err = f.Decode(&req)
			if !errors.Is(err, codes.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), "malformed Register body") {
				t.Errorf("message %q does not name the method's body", err)
			}
		})
	}
}

// lies are bodies whose MessagePack lengths claim far more than the frame
// holds: 1<<30 array elements, map entries, or string bytes.
func lies() map[string][]byte {
	key := func(k string) []byte { return append([]byte{0x81, byte(0xa0 + len(k))}, k...) }
	n := []byte{0x40, 0, 0, 0} // 1<<30, big-endian
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return map[string][]byte{
		"array32 of instances": cat(key("instances"), []byte{0xdd}, n, []byte{0x80}),
		"array32 of events":    cat(key("events"), []byte{0xdd}, n, []byte{0x80, 0x80}),
		"array32 of results":   cat(key("results"), []byte{0xdd}, n),
		"array32 of nodes":     cat(key("nodes"), []byte{0xdd}, n, []byte{0x80}),
		"map32 of attrs":       cat(key("attrs"), []byte{0xdf}, n, []byte{0xa1, 'k', 0xa1, 'v'}),
		"str32 name":           cat(key("name"), []byte{0xdb}, n, []byte("web")),
		"bin32 name":           cat(key("name"), []byte{0xc6}, n, []byte("web")),
		"map32 body":           cat([]byte{0xdf}, n, []byte{0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x'}),
		"array32 body":         cat([]byte{0xdd}, n, []byte{0xa1, 'x'}),
	}
}

// bodyTypes returns a fresh value of every body type.
func bodyTypes() []any {
	return []any{
		new(wire.RegisterRequest), new(wire.UnregisterRequest), new(wire.WriteResponse),
		new(wire.HeartbeatRequest), new(wire.HeartbeatResponse), new(wire.ListRequest),
		new(wire.ListResponse), new(wire.WatchRequest), new(wire.WatchEvents),
		new(wire.CancelRequest), new(wire.Empty), new(wire.StatusResponse), new(wire.NodeStatus),
	}
}

// allocated returns the bytes allocated while f runs. Tests using it must
// not run in parallel.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestFrame_DecodeLyingLengthsAllocateLittle(t *testing.T) {
	// Handle.MaxInitLen caps what a declared length reserves up front; the
	// decode then runs out of bytes. Without the cap, 1<<30 elements of a
	// 100-byte struct would ask for 100 GiB.
	for name, body := range lies() {
		t.Run(name, func(t *testing.T) {
			f, err := wire.ReadFrame(reader(frame(append([]byte{0x81, 0xa3, 's', 'e', 'q', 0x01}, body...)...)), 1000)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			for _, v := range bodyTypes() {
				var derr error
				n := allocated(func() { derr = f.Decode(v) })
				if n > 1<<20 {
					t.Errorf("decoding into %T allocated %d bytes", v, n)
				}
				if derr != nil && !errors.Is(derr, codes.ErrInvalidArgument) {
					t.Errorf("decoding into %T: err = %v, want nil or ErrInvalidArgument", v, derr)
				}
			}
		})
	}
	// The same in the header.
	hdr := append([]byte{0x81, 0xa6, 'm', 'e', 't', 'h', 'o', 'd', 0xdb, 0x40, 0, 0, 0}, "List"...)
	var err error
	if n := allocated(func() { _, err = wire.ReadFrame(reader(frame(hdr...)), 1000) }); n > 1<<20 {
		t.Errorf("a str32 method claiming 1 GiB allocated %d bytes", n)
	}
	if !errors.Is(err, codes.ErrInvalidArgument) {
		t.Errorf("err = %v, want ErrInvalidArgument", err)
	}
}

// heartbeatOfEmptyMaps is a Heartbeat frame at the server's default limit
// whose instances array holds about a million empty maps (0x80): each byte
// decodes into a 32-byte InstanceKey.
func heartbeatOfEmptyMaps(t *testing.T) *wire.Frame {
	t.Helper()
	const n = wire.DefaultMaxFrame - 64
	payload := []byte{0x81, 0xa3, 's', 'e', 'q', 0x01, 0x81, 0xa9}
	payload = append(payload, "instances"...)
	payload = append(payload, 0xdd)
	payload = binary.BigEndian.AppendUint32(payload, n)
	payload = append(payload, bytes.Repeat([]byte{0x80}, n)...)
	f, err := wire.ReadFrame(reader(frame(payload...)), wire.DefaultMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFrame_DecodeRequestBoundsAmplification(t *testing.T) {
	// Frame.Decode turns this 1 MiB frame into ~190 MiB of allocations
	// (a million InstanceKeys, grown by doubling) before rpc/ could check
	// validate.MaxHeartbeats. DecodeRequest, which the server uses, refuses
	// it from its shape, allocating nothing.
	f := heartbeatOfEmptyMaps(t)
	var req wire.HeartbeatRequest
	var err error
	allocs := allocated(func() { err = f.DecodeRequest(&req) })
	if !errors.Is(err, codes.ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
	if allocs > 64<<10 || len(req.Instances) != 0 {
		t.Errorf("refusing the frame allocated %d bytes and decoded %d instances", allocs, len(req.Instances))
	}
}

func TestFrame_DecodeRequestAcceptsEveryMessage(t *testing.T) {
	for _, m := range messages() {
		f, err := wire.ReadFrame(reader(encode(t, m.hdr, m.body)), wire.DefaultMaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		got := m.fresh()
		if err := f.DecodeRequest(got); err != nil || !reflect.DeepEqual(got, m.body) {
			t.Errorf("%s: DecodeRequest = %+v, %v; want %+v", m.name, got, err, m.body)
		}
	}
	// The largest legitimate request: a Heartbeat of 1024 instances with
	// the longest names and addresses.
	big := &wire.HeartbeatRequest{}
	for i := 0; i < 1024; i++ {
		big.Instances = append(big.Instances, wire.InstanceKey{
			Name: fmt.Sprintf("%0128d", i), Addr: strings.Repeat("h", 255) + ":65535"})
	}
	b := encode(t, wire.Header{Seq: 1, Method: wire.MethodHeartbeat}, big)
	f, err := wire.ReadFrame(reader(b), wire.DefaultMaxFrame)
	if err != nil {
		t.Fatalf("ReadFrame of %d bytes: %v", len(b), err)
	}
	var got wire.HeartbeatRequest
	if err := f.DecodeRequest(&got); err != nil || len(got.Instances) != 1024 {
		t.Errorf("1024-instance Heartbeat: %d instances, %v", len(got.Instances), err)
	}
}

func TestCheckShape(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want error // nil, ErrInvalidArgument or ErrTooLarge
	}{
		{"nil", []byte{0xc0}, nil},
		{"bools", []byte{0x92, 0xc2, 0xc3}, nil},
		{"ints", []byte{0x99, 0x7f, 0xe0, 0xcc, 1, 0xcd, 1, 2, 0xce, 1, 2, 3, 4, 0xcf, 1, 2, 3, 4, 5, 6, 7, 8, 0xd0, 1, 0xd1, 1, 2, 0xd2, 1, 2, 3, 4}, nil},
		{"int64 and floats", []byte{0x93, 0xd3, 1, 2, 3, 4, 5, 6, 7, 8, 0xca, 1, 2, 3, 4, 0xcb, 1, 2, 3, 4, 5, 6, 7, 8}, nil},
		{"strings", append([]byte{0x94, 0xa1, 'x', 0xd9, 1, 'x', 0xda, 0, 1, 'x', 0xdb, 0, 0, 0, 1}, 'x'), nil},
		{"bins", []byte{0x93, 0xc4, 1, 'x', 0xc5, 0, 1, 'x', 0xc6, 0, 0, 0, 1, 'x'}, nil},
		{"fixext", []byte{0x95, 0xd4, 9, 1, 0xd5, 9, 1, 2, 0xd6, 9, 1, 2, 3, 4, 0xd7, 9, 1, 2, 3, 4, 5, 6, 7, 8,
			0xd8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, nil},
		{"ext", []byte{0x93, 0xc7, 1, 9, 'x', 0xc8, 0, 1, 9, 'x', 0xc9, 0, 0, 0, 1, 9, 'x'}, nil},
		{"containers", []byte{0x93, 0xdc, 0, 1, 0x80, 0xde, 0, 1, 0xa1, 'k', 0x90, 0xdf, 0, 0, 0, 0}, nil},
		{"empty", nil, codes.ErrInvalidArgument},
		{"reserved byte", []byte{0xc1}, codes.ErrInvalidArgument},
		{"truncated str", []byte{0xa3, 'x'}, codes.ErrInvalidArgument},
		{"truncated length", []byte{0xdb, 0, 0}, codes.ErrInvalidArgument},
		{"truncated map", []byte{0x82, 0xa1, 'k', 0xa1, 'v'}, codes.ErrInvalidArgument},
		{"truncated ext", []byte{0xd8, 9, 1}, codes.ErrInvalidArgument},
		{"str32 claiming 1 GiB", []byte{0xdb, 0x40, 0, 0, 0, 'x'}, codes.ErrInvalidArgument},
		{"array32 claiming 1<<30", []byte{0xdd, 0x40, 0, 0, 0, 0x80}, codes.ErrTooLarge},
		{"map32 claiming 1<<30", []byte{0xdf, 0x40, 0, 0, 0}, codes.ErrTooLarge},
		{"too deep", bytes.Repeat([]byte{0x91}, 17), codes.ErrInvalidArgument},
	}
	for _, c := range cases {
		err := wire.CheckShape(c.b, 100, 16)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: CheckShape = %v, want %v", c.name, err, c.want)
		}
	}
	// Exactly at the element budget, and one past it, counting nested ones.
	at := append([]byte{0x92, 0x9f}, bytes.Repeat([]byte{0xc0}, 15)...) // 2 + 15
	at = append(at, 0x90)
	if err := wire.CheckShape(at, 17, 16); err != nil {
		t.Errorf("17 elements with a budget of 17: %v", err)
	}
	if err := wire.CheckShape(at, 16, 16); !errors.Is(err, codes.ErrTooLarge) {
		t.Errorf("17 elements with a budget of 16: %v, want ErrTooLarge", err)
	}
	// 16 levels of nesting pass with a max depth of 16.
	deep := append(bytes.Repeat([]byte{0x91}, 16), 0xc0)
	if err := wire.CheckShape(deep, 100, 16); err != nil {
		t.Errorf("16 levels: %v", err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to ReadFrame, as a node's RPC port does
// with whatever a client sends, and decodes every frame into every body type
// with Decode (the client's way, for answers) and DecodeRequest (the
// server's, which checks the shape first). Nothing may panic; errors must be
// the documented ones; and memory must grow at most linearly with the input
// (a lying length must not reserve memory).
func FuzzReadFrame(f *testing.F) {
	for _, m := range messages() {
		b := encode(f, m.hdr, m.body)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(b[:3])
	}
	var all []byte
	for _, m := range messages() {
		all = append(all, encode(f, m.hdr, m.body)...)
	}
	f.Add(all)
	for _, body := range lies() {
		f.Add(frame(append([]byte{0x81, 0xa3, 's', 'e', 'q', 0x01}, body...)...))
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(frame())
	f.Add(frame(0xc1))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(frame(bytes.Repeat([]byte{0x91}, 100)...)) // nesting deeper than MaxDepth

	const maxFrame = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		var frames, decodes int
		allocs := allocated(func() {
			br := reader(data)
			for {
				fr, err := wire.ReadFrame(br, maxFrame)
				if err != nil {
					var tl *wire.TooLargeError
					switch {
					case err == io.EOF, err == io.ErrUnexpectedEOF:
					case errors.As(err, &tl):
						if tl.Size <= maxFrame || !errors.Is(err, codes.ErrTooLarge) {
							t.Fatalf("bad TooLargeError %+v", tl)
						}
					case errors.Is(err, codes.ErrInvalidArgument):
						continue // the frame was whole: read on
					default:
						t.Fatalf("ReadFrame: unexpected error %v", err)
					}
					return
				}
				frames++
				for _, v := range bodyTypes() {
					if err := fr.Decode(v); err != nil && !errors.Is(err, codes.ErrInvalidArgument) {
						t.Fatalf("Decode into %T: unexpected error %v", v, err)
					}
					err := fr.DecodeRequest(v)
					if err != nil && !errors.Is(err, codes.ErrInvalidArgument) && !errors.Is(err, codes.ErrTooLarge) {
						t.Fatalf("DecodeRequest into %T: unexpected error %v", v, err)
					}
					decodes += 2
				}
			}
		})
		// Decoding is allowed to amplify (a 1-byte empty map becomes a
		// 100-byte struct, slices grow by doubling, 13 body types decode
		// each frame twice), but only linearly: never the gigabytes a
		// trusted length would reserve.
		if limit := uint64(4<<20 + 4096*len(data)); allocs > limit {
			t.Fatalf("%d input bytes (%d frames, %d decodes) allocated %d bytes, limit %d",
				len(data), frames, decodes, allocs, limit)
		}
	})
}
