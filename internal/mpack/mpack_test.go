package mpack

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// Every MessagePack type, as the bytes of one value, with what Skip must
// consume.
var everyType = map[string][]byte{
	"positive fixint": {0x05},
	"negative fixint": {0xe0},
	"nil":             {0xc0},
	"false, true":     {0xc2},
	"fixstr":          {0xa3, 'a', 'b', 'c'},
	"str8":            {0xd9, 2, 'a', 'b'},
	"str16":           {0xda, 0, 1, 'a'},
	"str32":           {0xdb, 0, 0, 0, 1, 'a'},
	"bin8":            {0xc4, 1, 9},
	"bin16":           {0xc5, 0, 1, 9},
	"bin32":           {0xc6, 0, 0, 0, 1, 9},
	"float32":         {0xca, 1, 2, 3, 4},
	"float64":         {0xcb, 1, 2, 3, 4, 5, 6, 7, 8},
	"uint8..64":       {0xcc, 1},
	"uint16":          {0xcd, 1, 2},
	"uint32":          {0xce, 1, 2, 3, 4},
	"uint64":          {0xcf, 1, 2, 3, 4, 5, 6, 7, 8},
	"int8":            {0xd0, 1},
	"int16":           {0xd1, 1, 2},
	"int32":           {0xd2, 1, 2, 3, 4},
	"int64":           {0xd3, 1, 2, 3, 4, 5, 6, 7, 8},
	"fixext1":         {0xd4, 1, 1},
	"fixext2":         {0xd5, 1, 1, 2},
	"fixext4":         {0xd6, 1, 1, 2, 3, 4},
	"fixext8":         {0xd7, 1, 1, 2, 3, 4, 5, 6, 7, 8},
	"fixext16":        append([]byte{0xd8, 1}, make([]byte, 16)...),
	"ext8":            {0xc7, 2, 1, 1, 2},
	"ext16":           {0xc8, 0, 1, 1, 1},
	"ext32":           {0xc9, 0, 0, 0, 1, 1, 1},
	"fixarray":        {0x92, 0x01, 0xa1, 'x'},
	"array16":         {0xdc, 0, 1, 0xc0},
	"array32":         {0xdd, 0, 0, 0, 1, 0xc3},
	"fixmap":          {0x81, 0xa1, 'k', 0x91, 0x80},
	"map16":           {0xde, 0, 1, 0x01, 0x02},
	"map32":           {0xdf, 0, 0, 0, 1, 0xa0, 0xc0},
}

// TestReader_SkipsEveryType: Skip consumes exactly one value of every type,
// and fails (without panicking) on every value cut short.
func TestReader_SkipsEveryType(t *testing.T) {
	for name, v := range everyType {
		r := NewReader(append(append([]byte{}, v...), 0x2a), 32, 256)
		if err := r.Skip(); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if r.Offset() != len(v) {
			t.Errorf("%s: skipped %d bytes, want %d", name, r.Offset(), len(v))
		}
		for i := 1; i < len(v); i++ {
			if err := NewReader(v[:i], 32, 256).Skip(); err == nil {
				t.Errorf("%s cut to %d bytes: skipped without error", name, i)
			}
		}
	}
	if err := NewReader([]byte{0xc1}, 32, 256).Skip(); err == nil {
		t.Error("0xc1 (never used) skipped")
	}
	deep := append(bytes.Repeat([]byte{0x91}, 10), 0xc0)
	if err := NewReader(deep, 5, 256).Skip(); err == nil {
		t.Error("nesting past MaxDepth skipped")
	}
	if err := NewReader(deep, 10, 256).Skip(); err != nil {
		t.Errorf("nesting at MaxDepth: %v", err)
	}
}

// TestReader_Values: integers of every width and sign into signed and
// unsigned fields, strings from str and bin, nil as zero, and the errors.
func TestReader_Values(t *testing.T) {
	for _, v := range []uint64{0, 127, 128, 255, 256, math.MaxUint16, math.MaxUint16 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64} {
		got, err := NewReader(AppendUint(nil, v), 32, 256).Uint()
		if err != nil || got != v {
			t.Errorf("Uint(%d) = %d, %v", v, got, err)
		}
	}
	for _, v := range []int64{0, 1, -1, -32, -33, 127, 128, -128, -129, math.MaxInt16, math.MinInt16, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64} {
		got, err := NewReader(AppendInt(nil, v), 32, 256).Int()
		if err != nil || got != v {
			t.Errorf("Int(%d) = %d, %v", v, got, err)
		}
		u, err := NewReader(AppendInt(nil, v), 32, 256).Uint()
		if (v < 0) != (err != nil) || (v >= 0 && u != uint64(v)) {
			t.Errorf("Uint of int %d = %d, %v", v, u, err)
		}
	}
	if _, err := NewReader(AppendUint(nil, math.MaxUint64), 32, 256).Int(); err == nil {
		t.Error("MaxUint64 read into a signed field")
	}
	for _, b := range [][]byte{{0xca, 0, 0, 0, 0}, {0xa1, '1'}, {0xc3}} {
		if _, err := NewReader(b, 32, 256).Uint(); err == nil {
			t.Errorf("Uint(%x) succeeded", b)
		}
	}
	long := strings.Repeat("s", 70000)
	for _, b := range [][]byte{AppendStr(nil, long), append([]byte{0xc6, 0, 1, 0x11, 0x70}, long...)} {
		if got, err := NewReader(b, 32, 256).Str(); err != nil || got != long {
			t.Errorf("Str of %x…: %d bytes, %v", b[:3], len(got), err)
		}
	}
	if s, err := NewReader([]byte{0xc0}, 32, 256).Str(); err != nil || s != "" {
		t.Errorf("Str(nil) = %q, %v", s, err)
	}
	if m, err := NewReader([]byte{0xc0}, 32, 256).StrMap(); err != nil || m != nil {
		t.Errorf("StrMap(nil) = %v, %v", m, err)
	}
	if _, err := NewReader([]byte{0xdf, 0x7f, 0, 0, 0}, 32, 256).StrMap(); err == nil {
		t.Error("a map claiming 2^31 entries in 5 bytes was read")
	}
	for _, b := range [][]byte{{0xc3}, {0xc2}, {0xc0}} {
		if _, err := NewReader(b, 32, 256).Bool(); err != nil {
			t.Errorf("Bool(%x): %v", b, err)
		}
	}
	if _, err := NewReader([]byte{0x01}, 32, 256).Bool(); err == nil {
		t.Error("Bool(1) succeeded")
	}
}

// TestReader_Fields: known keys are handed to the callback, unknown ones of
// any type skipped, and an error names its key.
func TestReader_Fields(t *testing.T) {
	b := AppendMapHeader(nil, 3)
	b = AppendStr(b, "skip")
	b = append(b, everyType["fixmap"]...)
	b = AppendStr(AppendStr(b, "name"), "web")
	b = AppendInt(AppendStr(b, "n"), -5)
	r := NewReader(b, 32, 256)
	var name string
	var n int64
	err := r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "name":
			name, err = r.Str()
		case "n":
			n, err = r.Int()
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil || name != "web" || n != -5 || r.Offset() != len(b) {
		t.Fatalf("Fields: %q %d, offset %d of %d, %v", name, n, r.Offset(), len(b), err)
	}
	bad := AppendStr(AppendStr(AppendMapHeader(nil, 1), "n"), "x")
	r = NewReader(bad, 32, 256)
	err = r.Fields(func(k string) (bool, error) { _, err := r.Int(); return true, err })
	if err == nil || !strings.HasPrefix(err.Error(), "n: ") {
		t.Errorf("bad field: %v", err)
	}
}
