// Package mpack writes and reads MessagePack by hand for the messages
// discoverd sends most: one write, heartbeat or watch event each. The
// reflective codec (hashicorp/go-msgpack) stays the reference — every
// hand-written encoder must write its exact bytes and every decoder must read
// whatever it reads (tests and fuzzers in the packages that use this one
// compare them) — but costs several times more CPU and allocations.
//
// Encoders append to a byte slice in the codec's formats (smallest integer
// encoding, str for strings, keys sorted by name as the codec writes struct
// fields). The Reader accepts what docs/protocol.md section 3 allows: any
// integer format for an integer, str or bin for a string, nil for a zero
// value, unknown map keys (skipped, whatever their type), keys in any order.
package mpack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

func AppendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n <= 31:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// AppendBin appends b as bin (bin8/16/32), as the codec writes a []byte.
func AppendBin(b []byte, v []byte) []byte {
	switch n := len(v); {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, v...)
}

func AppendMapHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
}

func AppendArrayHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= math.MaxInt8:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func AppendInt(b []byte, v int64) []byte {
	switch {
	case v > math.MaxInt8:
		switch {
		case v <= math.MaxInt16:
			return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
		case v <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
		}
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

func AppendStrMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, 0xc0)
	}
	b = AppendMapHeader(b, len(m))
	for k, v := range m {
		b = AppendStr(AppendStr(b, k), v)
	}
	return b
}

func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// Reader reads MessagePack from a byte slice. MaxDepth bounds nesting (in
// values skipped) and MaxInitLen the room made up front for a container, so
// that a length the data does not back cannot reserve memory.
type Reader struct {
	b          []byte
	off        int
	depth      int
	MaxDepth   int
	MaxInitLen int
}

// NewReader reads b.
func NewReader(b []byte, maxDepth, maxInitLen int) *Reader {
	return &Reader{b: b, MaxDepth: maxDepth, MaxInitLen: maxInitLen}
}

// Offset is how many bytes have been read.
func (r *Reader) Offset() int { return r.off }

// ErrShort: the data ended inside a value.
var ErrShort = errors.New("msgpack: unexpected end of data")

func (r *Reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, ErrShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *Reader) peek() (byte, error) {
	if r.off >= len(r.b) {
		return 0, ErrShort
	}
	return r.b[r.off], nil
}

func (r *Reader) take(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.off) {
		return nil, ErrShort
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

func (r *Reader) be(n int) (uint64, error) {
	s, err := r.take(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range s {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// nilNext consumes a nil if one is next.
func (r *Reader) NilNext() bool {
	if c, err := r.peek(); err == nil && c == 0xc0 {
		r.off++
		return true
	}
	return false
}

// container reads a map (array false) or array header; nil reads as length 0.
func (r *Reader) Container(array bool) (int, error) {
	c, err := r.byte()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c == 0xc0:
		return 0, nil
	case !array && c&0xf0 == 0x80:
		n = uint64(c & 0x0f)
	case array && c&0xf0 == 0x90:
		n = uint64(c & 0x0f)
	case (!array && c == 0xde) || (array && c == 0xdc):
		n, err = r.be(2)
	case (!array && c == 0xdf) || (array && c == 0xdd):
		n, err = r.be(4)
	default:
		what := "map"
		if array {
			what = "array"
		}
		return 0, fmt.Errorf("msgpack: want a %s, found type byte 0x%02x", what, c)
	}
	if err != nil {
		return 0, err
	}
	// Every element takes at least one byte: a length beyond what is left lies.
	if n > uint64(len(r.b)-r.off) {
		return 0, ErrShort
	}
	return int(n), nil
}

// str reads a str or bin; nil reads as "".
func (r *Reader) Str() (string, error) {
	c, err := r.byte()
	if err != nil {
		return "", err
	}
	var n uint64
	switch {
	case c == 0xc0:
		return "", nil
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.be(1)
	case c == 0xda || c == 0xc5:
		n, err = r.be(2)
	case c == 0xdb || c == 0xc6:
		n, err = r.be(4)
	default:
		return "", fmt.Errorf("msgpack: want a string, found type byte 0x%02x", c)
	}
	if err != nil {
		return "", err
	}
	s, err := r.take(n)
	return string(s), err
}

// Bytes reads a bin or a str as a new byte slice; nil (and an empty value)
// reads as nil.
func (r *Reader) Bytes() ([]byte, error) {
	s, err := r.Str()
	if err != nil || s == "" {
		return nil, err
	}
	return []byte(s), nil
}

// integer reads any integer format as a signed value and whether it is
// beyond int64 (a uint64 above MaxInt64); nil reads as 0.
func (r *Reader) integer() (v int64, big uint64, err error) {
	c, err := r.byte()
	if err != nil {
		return 0, 0, err
	}
	var u uint64
	switch {
	case c <= 0x7f:
		return int64(c), 0, nil
	case c >= 0xe0:
		return int64(int8(c)), 0, nil
	case c == 0xc0:
		return 0, 0, nil
	case c == 0xcc:
		u, err = r.be(1)
	case c == 0xcd:
		u, err = r.be(2)
	case c == 0xce:
		u, err = r.be(4)
	case c == 0xcf:
		u, err = r.be(8)
		if err == nil && u > math.MaxInt64 {
			return 0, u, nil
		}
	case c == 0xd0:
		u, err = r.be(1)
		return int64(int8(u)), 0, err
	case c == 0xd1:
		u, err = r.be(2)
		return int64(int16(u)), 0, err
	case c == 0xd2:
		u, err = r.be(4)
		return int64(int32(u)), 0, err
	case c == 0xd3:
		u, err = r.be(8)
		return int64(u), 0, err
	default:
		return 0, 0, fmt.Errorf("msgpack: want an integer, found type byte 0x%02x", c)
	}
	return int64(u), 0, err
}

func (r *Reader) Uint() (uint64, error) {
	v, big, err := r.integer()
	switch {
	case err != nil:
		return 0, err
	case big != 0:
		return big, nil
	case v < 0:
		return 0, fmt.Errorf("msgpack: negative value %d for an unsigned field", v)
	}
	return uint64(v), nil
}

func (r *Reader) Int() (int64, error) {
	v, big, err := r.integer()
	if err == nil && big != 0 {
		err = fmt.Errorf("msgpack: %d overflows a signed field", big)
	}
	return v, err
}

func (r *Reader) Bool() (bool, error) {
	c, err := r.byte()
	switch {
	case err != nil:
		return false, err
	case c == 0xc3:
		return true, nil
	case c == 0xc2, c == 0xc0:
		return false, nil
	}
	return false, fmt.Errorf("msgpack: want a bool, found type byte 0x%02x", c)
}

// strMap reads a map of strings; nil reads as a nil map.
func (r *Reader) StrMap() (map[string]string, error) {
	if r.NilNext() {
		return nil, nil
	}
	n, err := r.Container(false)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, min(n, r.MaxInitLen))
	for range n {
		k, err := r.Str()
		if err != nil {
			return nil, err
		}
		if m[k], err = r.Str(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// array reads an array header (nil: no elements, isNil true) and makes room
// for its elements without trusting a lying length.
func (r *Reader) Array() (n int, isNil bool, err error) {
	if r.NilNext() {
		return 0, true, nil
	}
	n, err = r.Container(true)
	return n, false, err
}

// skip reads past one value of any type.
func (r *Reader) Skip() error {
	c, err := r.byte()
	if err != nil {
		return err
	}
	var n uint64 // bytes to skip
	elems := -1  // or elements to skip
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
	case c&0xf0 == 0x80:
		elems = 2 * int(c&0x0f)
	case c&0xf0 == 0x90:
		elems = int(c & 0x0f)
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xc4, c == 0xd9:
		n, err = r.be(1)
	case c == 0xc5, c == 0xda:
		n, err = r.be(2)
	case c == 0xc6, c == 0xdb:
		n, err = r.be(4)
	case c == 0xc7: // ext 8
		n, err = r.be(1)
		n++
	case c == 0xc8:
		n, err = r.be(2)
		n++
	case c == 0xc9:
		n, err = r.be(4)
		n++
	case c == 0xca, c == 0xce, c == 0xd2:
		n = 4
	case c == 0xcb, c == 0xcf, c == 0xd3:
		n = 8
	case c == 0xcc, c == 0xd0:
		n = 1
	case c == 0xcd, c == 0xd1:
		n = 2
	case c == 0xd4:
		n = 2
	case c == 0xd5:
		n = 3
	case c == 0xd6:
		n = 5
	case c == 0xd7:
		n = 9
	case c == 0xd8:
		n = 17
	case c == 0xdc, c == 0xde:
		var k uint64
		k, err = r.be(2)
		elems = int(k)
		if c == 0xde {
			elems *= 2
		}
	case c == 0xdd, c == 0xdf:
		var k uint64
		k, err = r.be(4)
		if k > uint64(len(r.b)) {
			return ErrShort
		}
		elems = int(k)
		if c == 0xdf {
			elems *= 2
		}
	default:
		return fmt.Errorf("msgpack: bad type byte 0x%02x", c)
	}
	if err != nil {
		return err
	}
	if elems >= 0 {
		if elems > len(r.b)-r.off {
			return ErrShort
		}
		if r.depth++; r.depth > r.MaxDepth {
			return errors.New("msgpack: nested too deeply")
		}
		for range elems {
			if err := r.Skip(); err != nil {
				return err
			}
		}
		r.depth--
		return nil
	}
	_, err = r.take(n)
	return err
}

// fields reads a map, calling field for each key; field returns false for a
// key it does not know, whose value is then skipped.
func (r *Reader) Fields(field func(key string) (bool, error)) error {
	n, err := r.Container(false)
	if err != nil {
		return err
	}
	for range n {
		k, err := r.Str()
		if err != nil {
			return err
		}
		known, err := field(k)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if !known {
			if err := r.Skip(); err != nil {
				return err
			}
		}
	}
	return nil
}
