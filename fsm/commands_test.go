package fsm

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// codecEntry is how entries were encoded before the hand-written encoders:
// the type byte, then the reflective codec.
func codecEntry(t testing.TB, typ MessageType, cmd any) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte(byte(typ))
	if err := codec.NewEncoder(&buf, codecHandle).Encode(cmd); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func commandCases() []struct {
	typ MessageType
	cmd any
	new func() any
} {
	type c = struct {
		typ MessageType
		cmd any
		new func() any
	}
	reg := func() any { return new(RegisterCommand) }
	unreg := func() any { return new(UnregisterCommand) }
	exp := func() any { return new(ExpireCommand) }
	var cs []c
	for _, s := range []string{"", "a", strings.Repeat("x", 31), strings.Repeat("y", 32), strings.Repeat("z", 300), strings.Repeat("w", 70000)} {
		cs = append(cs, c{RegisterType, &RegisterCommand{Name: s, Addr: s, Attrs: map[string]string{s: s}, TTL: time.Hour, RequestID: s}, reg},
			c{UnregisterType, &UnregisterCommand{Name: s, Addr: s, RequestID: s}, unreg},
			c{ExpireType, &ExpireCommand{Name: s, Addr: s, Index: 7, DecidedAt: 1}, exp})
	}
	for _, d := range []time.Duration{0, 1, 127, 128, 32768, time.Second, 24 * time.Hour, math.MaxInt64, -1} {
		cs = append(cs, c{RegisterType, &RegisterCommand{TTL: d}, reg})
	}
	for _, u := range []uint64{0, 127, 128, 255, 256, 65536, math.MaxUint32 + 1, math.MaxUint64} {
		cs = append(cs, c{ExpireType, &ExpireCommand{Index: u, DecidedAt: -int64(u >> 1)}, exp})
		if u != 0 {
			cs = append(cs, c{UnregisterIfType, &UnregisterCommand{Name: "web", Addr: "a:1", RequestID: "r", IfIndex: u}, unreg})
		}
	}
	return append(cs, c{RegisterType, &RegisterCommand{}, reg}, c{RegisterType, &RegisterCommand{Attrs: map[string]string{}}, reg})
}

// TestCommands_HandEncodingIsTheCodecs: Encode writes the bytes the
// reflective codec wrote for every command, so logs and snapshots written
// before and after read the same; decode reads the codec's bytes back.
func TestCommands_HandEncodingIsTheCodecs(t *testing.T) {
	for _, c := range commandCases() {
		got, err := Encode(c.typ, c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		want := codecEntry(t, c.typ, c.cmd)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s %+v:\n hand  %x\n codec %x", c.typ, c.cmd, got[:min(len(got), 80)], want[:min(len(want), 80)])
		}
		v := c.new()
		if err := decode(want[1:], v); err != nil || !reflect.DeepEqual(v, c.cmd) {
			t.Fatalf("decode %s: %v\n got  %+v\n want %+v", c.typ, err, v, c.cmd)
		}
	}
	// Values (not pointers) encode the same; several attributes round-trip.
	cmd := RegisterCommand{Name: "web", Addr: "a:1", Attrs: map[string]string{"a": "1", "b": "2", "c": "3"}, TTL: time.Minute}
	b, err := Encode(RegisterType, cmd)
	if err != nil {
		t.Fatal(err)
	}
	var viaCodec, viaHand RegisterCommand
	if err := codec.NewDecoderBytes(b[1:], codecHandle).Decode(&viaCodec); err != nil || !reflect.DeepEqual(viaCodec, cmd) {
		t.Errorf("codec decode of the hand encoding: %+v %v", viaCodec, err)
	}
	if err := decode(codecEntry(t, RegisterType, cmd)[1:], &viaHand); err != nil || !reflect.DeepEqual(viaHand, cmd) {
		t.Errorf("hand decode of the codec encoding: %+v %v", viaHand, err)
	}
	// A command of the wrong type for its message type still goes through the codec.
	if _, err := Encode(RegisterType, &UnregisterCommand{Name: "x"}); err != nil {
		t.Errorf("mismatched command: %v", err)
	}
	// An unregistration whose IfIndex does not match its type is refused:
	// as UnregisterType a conditional one would be applied unconditionally.
	for _, bad := range []struct {
		t   MessageType
		cmd any
	}{
		{UnregisterType, &UnregisterCommand{Name: "x", IfIndex: 3}},
		{UnregisterType, UnregisterCommand{Name: "x", IfIndex: 3}},
		{UnregisterIfType, &UnregisterCommand{Name: "x"}},
	} {
		if _, err := Encode(bad.t, bad.cmd); err == nil {
			t.Errorf("Encode(%s, %+v) succeeded, want an error", bad.t, bad.cmd)
		}
	}
}

// FuzzCommands_DecodeAgreesWithTheCodec: for any body the codec decodes, the
// hand-written decoders decode the same command; they never panic.
func FuzzCommands_DecodeAgreesWithTheCodec(f *testing.F) {
	for _, c := range commandCases()[:9] {
		b, _ := Encode(c.typ, c.cmd)
		f.Add(b[1:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, mk := range []func() any{func() any { return new(RegisterCommand) }, func() any { return new(UnregisterCommand) }, func() any { return new(ExpireCommand) }} {
			hand, slow := mk(), mk()
			herr := decode(b, hand)
			serr := codec.NewDecoderBytes(b, codecHandle).Decode(slow)
			if herr == nil && serr == nil && !reflect.DeepEqual(hand, slow) {
				t.Fatalf("%T: codec %+v, hand %+v", hand, slow, hand)
			}
		}
	})
}
