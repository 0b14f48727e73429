package wire

import (
	"bufio"
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/mpack"
)

func codecEncode(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, Handle).Encode(v); err != nil {
		t.Fatalf("codec encode %T: %v", v, err)
	}
	return b
}

func codecDecode(b []byte, v any) error { return codec.NewDecoderBytes(b, Handle).Decode(v) }

var fastStrings = []string{"", "a", strings.Repeat("x", 31), strings.Repeat("y", 32), strings.Repeat("z", 255),
	strings.Repeat("w", 256), strings.Repeat("v", 65535), strings.Repeat("u", 65536)}

var fastUints = []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64, math.MaxUint64}

var fastInts = []int64{0, 1, -1, -32, -33, 127, 128, -128, -129, 32767, 32768, -32768, -32769,
	math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxInt64, math.MinInt64}

// TestFast_BytesMatchTheCodec: the hand-written encoders write exactly the
// bytes the reflective codec writes, for every size class of every field.
func TestFast_BytesMatchTheCodec(t *testing.T) {
	var headers []Header
	for _, s := range fastStrings {
		headers = append(headers, Header{Seq: 7, Method: s}, Header{Code: s, Error: s, More: true})
	}
	for _, u := range fastUints {
		headers = append(headers, Header{Seq: u, Forwarded: true}, Header{Seq: u, Method: "List", Forwarded: true, Code: "x", Error: "y", More: true},
			Header{Seq: 3, Code: "conflict", Error: "e", Index: u})
	}
	for _, h := range headers {
		if got, want := appendHeader(nil, &h), codecEncode(t, &h); !bytes.Equal(got, want) {
			t.Fatalf("header %+v:\n fast  %x\n codec %x", h, got, want)
		}
	}
	var events []Event
	for _, s := range fastStrings {
		events = append(events, Event{Kind: s, Name: s, Addr: s, Reason: s, Attrs: map[string]string{s: s}})
	}
	for _, u := range fastUints {
		events = append(events, Event{Kind: "up", Index: u, CreateIndex: u})
	}
	for _, i := range fastInts {
		events = append(events, Event{Kind: "down", TTLMillis: i})
	}
	events = append(events, Event{Attrs: map[string]string{}}) // empty map: left out, like nil
	for _, s := range fastStrings {
		events = append(events, Event{Kind: "meta", Index: 9, Name: "db", Data: []byte(s)})
	}
	events = append(events, Event{Kind: "meta", Index: 10, Name: "db", Deleted: true}, Event{Kind: "meta", Data: []byte{}})
	events = append(events, Event{Kind: "update", Index: 9, Name: "web", Addr: "a:1", Reason: "r", Suspect: true, TTLMillis: 1000})
	for _, e := range events {
		if got, want := e.appendMsgpack(nil), codecEncode(t, &e); !bytes.Equal(got, want) {
			t.Fatalf("event %+v:\n fast  %x\n codec %x", e, got[:min(len(got), 64)], want[:min(len(want), 64)])
		}
	}
	for _, n := range []int{0, 1, 15, 16, 65535, 65536} {
		w := WatchEvents{Events: make([]Event, n)}
		if got, want := w.appendMsgpack(nil), codecEncode(t, &w); !bytes.Equal(got, want) {
			t.Fatalf("%d events: fast and codec differ", n)
		}
	}
	nilEvents := WatchEvents{}
	if got, want := nilEvents.appendMsgpack(nil), codecEncode(t, &nilEvents); !bytes.Equal(got, want) {
		t.Fatalf("nil events: fast %x codec %x", got, want)
	}
}

// TestFast_RoundTripsWithTheCodec: what one side encodes the other decodes
// to the same value, with many attributes (whose order is random).
func TestFast_RoundTripsWithTheCodec(t *testing.T) {
	attrs := map[string]string{}
	for i := range 40 {
		attrs[strings.Repeat("k", i+1)] = strings.Repeat("v", 3*i)
	}
	w := WatchEvents{Events: []Event{
		{Kind: "up", Index: 42, Name: "web", Addr: "10.0.0.5:8080", Attrs: attrs, TTLMillis: 10000, CreateIndex: 40},
		{Kind: "down", Index: math.MaxUint64, Name: "web", Addr: "a", TTLMillis: -5, Reason: "expire"},
		{Kind: "current", Index: 43, Name: "web"},
		{Kind: "meta", Index: 44, Name: "web", Data: []byte{0, 1, 0xff}},
		{Kind: "meta", Index: 45, Name: "web", Deleted: true},
		{Kind: "update", Index: 44, Name: "web", Addr: "a", TTLMillis: 10000, CreateIndex: 40, Suspect: true},
	}}
	var fromCodec, fromFast WatchEvents
	if err := fromCodec.decodeMsgpack(codecEncode(t, &w)); err != nil {
		t.Fatal(err)
	}
	if err := codecDecode(w.appendMsgpack(nil), &fromFast); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]WatchEvents{"fast decode of codec bytes": fromCodec, "codec decode of fast bytes": fromFast} {
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s:\n got  %+v\n want %+v", name, got, w)
		}
	}
	for _, h := range []Header{{}, {Seq: math.MaxUint64, Method: "Watch", Forwarded: true, Code: "not_found", Error: "gone", More: true},
		{Seq: 4, Code: "conflict", Error: "moved on", Index: 77}} {
		var got Header
		n, err := decodeHeader(append(codecEncode(t, &h), 0x80), &got)
		if err != nil || got != h || n != len(codecEncode(t, &h)) {
			t.Errorf("header %+v: decoded %+v, %d bytes, %v", h, got, n, err)
		}
	}
}

// mp builds MessagePack by hand for the tolerance tests.
func mp(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b = mpack.AppendStr(b, v)
		case []byte:
			b = append(b, v...)
		case int:
			b = append(b, byte(v))
		}
	}
	return b
}

// TestFast_ReadsWhatTheProtocolAllows: keys in any order, unknown keys of
// every type skipped, nil as the zero value, bin for strings, every integer
// format — and bad input fails without panicking.
func TestFast_ReadsWhatTheProtocolAllows(t *testing.T) {
	unknown := [][]byte{
		mp("zz", []byte{0xcb, 1, 2, 3, 4, 5, 6, 7, 8}),                           // float64
		mp("zy", []byte{0x92, 0x81, 0xa1, 'a', 0xc0, 0xc4, 2, 9, 9}),             // [ {a: nil}, bin ]
		mp("zx", []byte{0xd6, 1, 0, 0, 0, 0}),                                    // fixext 4
		mp("zw", []byte{0xc7, 2, 5, 1, 1}),                                       // ext 8
		mp("zv", []byte{0xca, 0, 0, 0, 0}),                                       // float32
		mp("zu", []byte{0xde, 0, 1, 0xa1, 'k', 0xd3, 0, 0, 0, 0, 0, 0, 0, 1}),    // map16 {k: int64}
		mp("zt", []byte{0xdc, 0, 2, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xd9, 1, 'q'}), // array16 [float64, str8]
	}
	ev := mp([]byte{0x80 | 14}, unknown[0], // 7 known keys, 7 unknown, in no particular order
		"index", []byte{0xcd, 1, 0}, // uint16 256
		"name", []byte{0xc4, 3, 'w', 'e', 'b'}, // bin as a string
		"attrs", []byte{0x81}, "z", []byte{0xc0}, // nil value
		"addr", []byte{0xc0},
		"create_index", []byte{0xd0, 5}, // int8 5
		"ttl_ms", []byte{0xcf, 0, 0, 0, 0, 0, 0, 0x27, 0x10}, // uint64 10000
		"kind", "up")
	for _, u := range unknown[1:] {
		ev = append(ev, u...)
	}
	body := append(mp([]byte{0x82}, "other", []byte{0x90}, "events", []byte{0x91}), ev...)
	var w WatchEvents
	if err := w.decodeMsgpack(body); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := Event{Kind: "up", Index: 256, Name: "web", Attrs: map[string]string{"z": ""}, TTLMillis: 10000, CreateIndex: 5}
	if len(w.Events) != 1 || !reflect.DeepEqual(w.Events[0], want) {
		t.Fatalf("decoded %+v, want %+v", w.Events, want)
	}
	var fromCodec WatchEvents
	if err := codecDecode(body, &fromCodec); err != nil || !reflect.DeepEqual(fromCodec, w) {
		t.Errorf("the codec reads the same bytes as %+v (%v)", fromCodec, err)
	}

	bad := map[string][]byte{
		"not a map":         {0x91, 0x80},
		"negative index":    mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "index", []byte{0xff}),
		"float index":       mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "index", []byte{0xca, 0, 0, 0, 0}),
		"string index":      mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "index", "1"),
		"int for a string":  mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "name", []byte{0x01}),
		"lying array":       mp([]byte{0x81}, "events", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}),
		"lying attrs":       mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "attrs", []byte{0xdf, 0x7f, 0xff, 0xff, 0xff}),
		"lying string":      mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "name", []byte{0xdb, 0x7f, 0xff, 0xff, 0xff}),
		"lying unknown":     mp([]byte{0x81}, "x", []byte{0xdf, 0x7f, 0xff, 0xff, 0xff}),
		"bad type byte":     mp([]byte{0x81}, "x", []byte{0xc1}),
		"uint64 for ttl_ms": mp([]byte{0x81}, "events", []byte{0x91, 0x81}, "ttl_ms", []byte{0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0}),
		"too deep":          append(mp([]byte{0x81}, "x"), bytes.Repeat([]byte{0x91}, 40)...),
	}
	for name, b := range bad {
		if err := w.decodeMsgpack(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	// Cut short anywhere: an error, never a panic.
	full := w.appendMsgpack(nil)
	for i := range full {
		if err := new(WatchEvents).decodeMsgpack(full[:i]); err == nil && i > 0 {
			t.Errorf("cut at %d of %d bytes: decoded without error", i, len(full))
		}
	}
	hb := appendHeader(nil, &Header{Seq: 300, Method: "Watch", More: true})
	for i := range hb {
		if _, err := decodeHeader(hb[:i], new(Header)); err == nil {
			t.Errorf("header cut at %d of %d bytes: decoded without error", i, len(hb))
		}
	}
}

// TestFast_FramesUseIt: WriteFrame/ReadFrame/Decode go through the fast
// path for watch frames and stay readable by the codec.
func TestFast_FramesUseIt(t *testing.T) {
	w := &WatchEvents{Events: []Event{{Kind: "up", Index: 9, Name: "web", Addr: "a:1", Attrs: map[string]string{"z": "1"}, TTLMillis: 2000, CreateIndex: 3}}}
	var buf bytes.Buffer
	if err := WriteFrame(&buf, &Header{Seq: 5, More: true}, w, 0); err != nil {
		t.Fatal(err)
	}
	raw := append([]byte(nil), buf.Bytes()[4:]...)
	f, err := ReadFrame(bufio.NewReader(&buf), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header != (Header{Seq: 5, More: true}) {
		t.Errorf("header %+v", f.Header)
	}
	var got WatchEvents
	if err := f.Decode(&got); err != nil || !reflect.DeepEqual(&got, w) {
		t.Errorf("decoded %+v (%v), want %+v", got, err, w)
	}
	dec := codec.NewDecoderBytes(raw, Handle)
	var h Header
	var viaCodec WatchEvents
	if err := dec.Decode(&h); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&viaCodec); err != nil || !reflect.DeepEqual(&viaCodec, w) {
		t.Errorf("codec read %+v (%v)", viaCodec, err)
	}
	var bad Frame
	bad.body = []byte{0x81, 0xa6, 'e', 'v', 'e', 'n', 't', 's', 0xa1, 'x'}
	if err := bad.Decode(new(WatchEvents)); !errors.Is(err, codes.ErrInvalidArgument) {
		t.Errorf("malformed watch body: %v", err)
	}
}

// FuzzFast_WatchEvents: whatever the codec decodes without error, the fast
// decoders (watch events, and headers) decode to the same value; they never
// panic.
func FuzzFast_WatchEvents(f *testing.F) {
	f.Add(codecEncode(f, &WatchEvents{Events: []Event{{Kind: "up", Index: 1, Name: "web", Addr: "a", Attrs: map[string]string{"k": "v"}, TTLMillis: 5, CreateIndex: 1}}}))
	f.Add(codecEncode(f, &WatchEvents{}))
	f.Add([]byte{0x81, 0xa6, 'e', 'v', 'e', 'n', 't', 's', 0x91, 0x80})
	f.Add(appendHeader(nil, &Header{Seq: 300, Method: "Watch", Forwarded: true, Code: "x", Error: "y", More: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow WatchEvents
		ferr := fast.decodeMsgpack(b)
		serr := codecDecode(b, &slow)
		if serr == nil && ferr == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("codec %+v, fast %+v", slow, fast)
		}
		var fh, sh Header
		_, ferr = decodeHeader(b, &fh)
		serr = codecDecode(b, &sh)
		if serr == nil && ferr == nil && fh != sh {
			t.Fatalf("header: codec %+v, fast %+v", sh, fh)
		}
	})
}

// fastCase is a value of every type with a hand-written codec, and a fresh
// zero value of its type to decode into.
type fastCase struct {
	v   interface{ appendMsgpack([]byte) []byte }
	new func() fastDecoder
}

func writePathCases() []fastCase {
	reg := func() fastDecoder { return new(RegisterRequest) }
	unreg := func() fastDecoder { return new(UnregisterRequest) }
	wr := func() fastDecoder { return new(WriteResponse) }
	hb := func() fastDecoder { return new(HeartbeatRequest) }
	hbr := func() fastDecoder { return new(HeartbeatResponse) }
	var cs []fastCase
	for _, s := range fastStrings {
		cs = append(cs,
			fastCase{&RegisterRequest{Name: s, Addr: s, Attrs: map[string]string{s: s}, RequestID: s}, reg},
			fastCase{&UnregisterRequest{Name: s, Addr: s, RequestID: s}, unreg},
			fastCase{&UnregisterRequest{Name: s, Addr: s, RequestID: s, IfIndex: uint64(len(s)) + 1}, unreg},
			fastCase{&UnregisterRequest{Name: s, Addr: s, IfIndex: math.MaxUint64}, unreg},
			fastCase{&HeartbeatRequest{Instances: []InstanceKey{{Name: s, Addr: s}, {}}}, hb},
			fastCase{&HeartbeatResponse{Results: []Result{{Code: s, Error: s}, {}, {Code: s}}}, hbr})
	}
	for _, i := range fastInts {
		cs = append(cs, fastCase{&RegisterRequest{TTLMillis: i}, reg})
	}
	for _, u := range fastUints {
		cs = append(cs, fastCase{&WriteResponse{Index: u}, wr})
	}
	for _, n := range []int{0, 15, 16, 65536} {
		cs = append(cs, fastCase{&HeartbeatRequest{Instances: make([]InstanceKey, n)}, hb},
			fastCase{&HeartbeatResponse{Results: make([]Result, n)}, hbr})
	}
	return append(cs, fastCase{&RegisterRequest{}, reg}, fastCase{&HeartbeatRequest{}, hb}, fastCase{&HeartbeatResponse{}, hbr},
		fastCase{&RegisterRequest{Attrs: map[string]string{}}, reg})
}

// TestFast_WritePathMatchesTheCodec: requests and answers of the write path
// encode to the codec's bytes and round-trip through both decoders.
func TestFast_WritePathMatchesTheCodec(t *testing.T) {
	for _, c := range writePathCases() {
		want := codecEncode(t, c.v)
		if got := c.v.appendMsgpack(nil); !bytes.Equal(got, want) {
			t.Fatalf("%T %+v:\n fast  %x\n codec %x", c.v, c.v, got[:min(len(got), 80)], want[:min(len(want), 80)])
		}
		fast := c.new()
		if err := fast.decodeMsgpack(want); err != nil || !reflect.DeepEqual(fast, c.v) {
			t.Fatalf("fast decode of %T: %v\n got  %+v\n want %+v", c.v, err, fast, c.v)
		}
	}
	// Several attributes (in map order, so compare values, not bytes).
	q := &RegisterRequest{Name: "web", Addr: "a:1", Attrs: map[string]string{"a": "1", "b": "2", "c": strings.Repeat("3", 300)}, TTLMillis: 10000, RequestID: "r"}
	var viaCodec, viaFast RegisterRequest
	if err := codecDecode(q.appendMsgpack(nil), &viaCodec); err != nil || !reflect.DeepEqual(&viaCodec, q) {
		t.Errorf("codec decode of fast bytes: %+v %v", viaCodec, err)
	}
	if err := viaFast.decodeMsgpack(codecEncode(t, q)); err != nil || !reflect.DeepEqual(&viaFast, q) {
		t.Errorf("fast decode of codec bytes: %+v %v", viaFast, err)
	}
	// A long array (its slice grows as elements arrive: the header's count
	// alone reserves at most Handle.MaxInitLen), then bad input.
	long := mp([]byte{0x81}, "instances", []byte{0xdd, 0x00, 0x0f, 0xff, 0xff})
	long = append(long, bytes.Repeat([]byte{0x80}, 1<<20-1)...)
	var hbq HeartbeatRequest
	if err := hbq.decodeMsgpack(long); err != nil || len(hbq.Instances) != 1<<20-1 {
		t.Errorf("1M empty instances: %d, %v", len(hbq.Instances), err)
	}
	if err := hbq.decodeMsgpack(long[:len(long)-1]); err == nil {
		t.Error("an array one element short decoded")
	}
	for name, b := range map[string][]byte{
		"negative index":  mp([]byte{0x81}, "index", []byte{0xd0, 0xff}),
		"string ttl":      mp([]byte{0x81}, "ttl_ms", "10"),
		"array attrs":     mp([]byte{0x81}, "attrs", []byte{0x91, 0x01}),
		"cut short":       mp([]byte{0x82}, "name", "web"),
		"int in instance": mp([]byte{0x81}, "instances", []byte{0x91, 0x01}),
	} {
		for _, c := range []fastDecoder{new(RegisterRequest), new(WriteResponse), new(HeartbeatRequest)} {
			_ = c.decodeMsgpack(b) // must not panic
		}
		var reg RegisterRequest
		var wr WriteResponse
		var hb HeartbeatRequest
		if reg.decodeMsgpack(b) == nil && wr.decodeMsgpack(b) == nil && hb.decodeMsgpack(b) == nil {
			t.Errorf("%s: every decoder accepted it", name)
		}
	}
}

// FuzzFast_WritePath: the write path's decoders agree with the codec on
// whatever the codec accepts, and never panic.
func FuzzFast_WritePath(f *testing.F) {
	for _, c := range writePathCases()[:12] {
		f.Add(c.v.appendMsgpack(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(fast, slow any, ferr, serr error) {
			if ferr == nil && serr == nil && !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%T: codec %+v, fast %+v", fast, slow, fast)
			}
		}
		var r1, r2 RegisterRequest
		check(&r1, &r2, r1.decodeMsgpack(b), codecDecode(b, &r2))
		var u1, u2 UnregisterRequest
		check(&u1, &u2, u1.decodeMsgpack(b), codecDecode(b, &u2))
		var w1, w2 WriteResponse
		check(&w1, &w2, w1.decodeMsgpack(b), codecDecode(b, &w2))
		var h1, h2 HeartbeatRequest
		check(&h1, &h2, h1.decodeMsgpack(b), codecDecode(b, &h2))
		var s1, s2 HeartbeatResponse
		check(&s1, &s2, s1.decodeMsgpack(b), codecDecode(b, &s2))
	})
}

// TestFast_ConflictIndexCrossesTheWire: an error response to a
// compare-and-set carries the metadata's current index in its header, and
// the receiver rebuilds a conflict holding it.
func TestFast_ConflictIndexCrossesTheWire(t *testing.T) {
	sent := codes.Conflict(41, "set metadata of db at index %d", 40)
	var buf bytes.Buffer
	if err := WriteFrame(&buf, ErrorHeader(9, sent), nil, 0); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(bufio.NewReader(&buf), DefaultMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Header.Err()
	if idx, ok := codes.ConflictIndex(got); !ok || idx != 41 || got.Error() != sent.Error() {
		t.Fatalf("received %v (conflict %v, index %d), want %v with index 41", got, ok, idx, sent)
	}
	// A conflict with no metadata: the index is left out, and reads as 0.
	buf.Reset()
	if err := WriteFrame(&buf, ErrorHeader(10, codes.Conflict(0, "x")), nil, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("\xa5index")) {
		t.Errorf("index 0 written: %q", buf.Bytes())
	}
	// Other errors carry no index.
	if h := ErrorHeader(1, codes.ErrNotFound); h.Index != 0 || h.Code != "not_found" {
		t.Errorf("ErrorHeader(not_found) = %+v", h)
	}
}

// TestFast_SetMetaRequestDecoding: the hand decoder reads what the codec
// writes, and refuses data that is neither bin nor str.
func TestFast_SetMetaRequestDecoding(t *testing.T) {
	for _, q := range []SetMetaRequest{{}, {Name: "db", Data: []byte{0, 0xff}, ExpectIndex: math.MaxUint64, RequestID: "r"},
		{Name: "db", Data: bytes.Repeat([]byte("x"), 70000)}} {
		var got SetMetaRequest
		if err := got.decodeMsgpack(codecEncode(t, &q)); err != nil || !reflect.DeepEqual(got, q) {
			t.Errorf("decode of %+v = %+v, %v", q.Name, got.Name, err)
		}
	}
	var got SetMetaRequest
	if err := got.decodeMsgpack(codecEncode(t, map[string]any{"name": "db", "data": "as text"})); err != nil || string(got.Data) != "as text" {
		t.Errorf("data as a str: %q, %v", got.Data, err)
	}
	if err := got.decodeMsgpack(codecEncode(t, map[string]any{"name": "db", "data": map[string]string{"a": "b"}})); err == nil {
		t.Errorf("data as a map accepted: %+v", got)
	}
}
