package wire

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/discoverd/discoverd/internal/mpack"
)

func TestPeer_PushBytesMatchTheCodecAndRoundTrip(t *testing.T) {
	pushes := []PushDeadlinesRequest{{}, {Term: 3, Groups: []DeadlineGroup{}}, {Term: 9, Groups: []DeadlineGroup{{}}}}
	for _, u := range fastUints {
		pushes = append(pushes, PushDeadlinesRequest{Term: u, Groups: []DeadlineGroup{{RemainingMicros: 10_000_000, Indexes: []uint64{u, 1, u}}}})
	}
	for _, i := range fastInts {
		pushes = append(pushes, PushDeadlinesRequest{Term: 1, Groups: []DeadlineGroup{{RemainingMicros: i, Indexes: []uint64{7}}, {RemainingMicros: 5}}})
	}
	for _, q := range pushes {
		got, want := q.appendMsgpack(nil), codecEncode(t, &q)
		if !bytes.Equal(got, want) {
			t.Fatalf("push %+v:\n fast  %x\n codec %x", q, got, want)
		}
		var back, viaCodec PushDeadlinesRequest
		if err := back.decodeMsgpack(got); err != nil {
			t.Fatalf("decode %+v: %v", q, err)
		}
		if err := codecDecode(got, &viaCodec); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, viaCodec) {
			t.Fatalf("fast decode %+v, codec decode %+v", back, viaCodec)
		}
	}
}

func TestPeer_PushResponseMatchesTheCodec(t *testing.T) {
	var r PushDeadlinesResponse
	if got, want := r.appendMsgpack(nil), codecEncode(t, &r); !bytes.Equal(got, want) {
		t.Fatalf("fast %x, codec %x", got, want)
	}
	if err := r.decodeMsgpack([]byte{0x81, 0xa1, 'x', 0x01}); err != nil {
		t.Fatal(err)
	}
}

func TestPeer_PushDecodeRefusesHostileInput(t *testing.T) {
	// An array that claims 2³²-1 indexes but holds one: an error, and no
	// room reserved for the claim.
	b := mpack.AppendStr(mpack.AppendMapHeader(nil, 1), "groups")
	b = mpack.AppendArrayHeader(b, 1)
	b = mpack.AppendStr(mpack.AppendMapHeader(b, 1), "indexes")
	b = append(b, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01)
	var q PushDeadlinesRequest
	if err := q.decodeMsgpack(b); err == nil {
		t.Fatal("a lying array length decoded")
	}
	// Wrong types and trailing garbage inside the map.
	for _, bad := range [][]byte{
		{0x81, 0xa4, 't', 'e', 'r', 'm', 0xa1, 'x'},            // term: a string
		{0x81, 0xa6, 'g', 'r', 'o', 'u', 'p', 's', 0x05},       // groups: an integer
		{0x81, 0xa6, 'g', 'r', 'o', 'u', 'p', 's', 0x91, 0x07}, // a group that is not a map
		{0x82, 0xa4, 't', 'e', 'r', 'm', 0x01},                 // a key short
	} {
		if err := q.decodeMsgpack(bad); err == nil {
			t.Errorf("%x decoded: %+v", bad, q)
		}
	}
	// Unknown keys are skipped, as everywhere in the protocol.
	ok := mpack.AppendUint(mpack.AppendStr(mpack.AppendMapHeader(nil, 2), "future"), 1)
	ok = mpack.AppendUint(mpack.AppendStr(ok, "term"), 4)
	if err := q.decodeMsgpack(ok); err != nil || q.Term != 4 {
		t.Fatalf("unknown key: %v %+v", err, q)
	}
}
