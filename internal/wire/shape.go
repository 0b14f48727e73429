package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/discoverd/discoverd/internal/codes"
)

// MaxRequestElements bounds the array elements and map entries, all nesting
// levels together, that a request body may hold. The largest legitimate
// request — a Heartbeat of 1024 instances — holds about 3100.
const MaxRequestElements = 8192

// CheckShape walks one MessagePack value without decoding it and rejects it
// if it is malformed, nests deeper than maxDepth or holds more than
// maxElems array elements and map entries in all. Run on untrusted input
// before decoding it, it bounds what decoding allocates: a 1 MiB frame of
// empty maps would otherwise decode into about a million structs.
func CheckShape(b []byte, maxElems, maxDepth int) error {
	w := shapeWalker{b: b, left: maxElems, max: maxElems, maxDepth: maxDepth}
	if err := w.value(0); err != nil {
		return err
	}
	return nil
}

type shapeWalker struct {
	b        []byte
	pos      int
	left     int
	max      int
	maxDepth int
}

func (w *shapeWalker) need(n int) error {
	if n < 0 || len(w.b)-w.pos < n {
		return codes.Invalid("malformed MessagePack: value truncated at byte %d", w.pos)
	}
	return nil
}

func (w *shapeWalker) uint(n int) (int, error) {
	if err := w.need(n); err != nil {
		return 0, err
	}
	var v uint64
	switch n {
	case 1:
		v = uint64(w.b[w.pos])
	case 2:
		v = uint64(binary.BigEndian.Uint16(w.b[w.pos:]))
	case 4:
		v = uint64(binary.BigEndian.Uint32(w.b[w.pos:]))
	}
	w.pos += n
	return int(v), nil
}

func (w *shapeWalker) skip(n int) error {
	if err := w.need(n); err != nil {
		return err
	}
	w.pos += n
	return nil
}

func (w *shapeWalker) container(depth, n, per int) error {
	if depth >= w.maxDepth {
		return codes.Invalid("request nests deeper than %d levels", w.maxDepth)
	}
	w.left -= n
	if w.left < 0 {
		return fmt.Errorf("request holds more than %d array elements and map entries: %w", w.max, codes.ErrTooLarge)
	}
	for i := 0; i < n*per; i++ {
		if err := w.value(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

func (w *shapeWalker) value(depth int) error {
	if err := w.need(1); err != nil {
		return err
	}
	c := w.b[w.pos]
	w.pos++
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3: // fixint, nil, bool
		return nil
	case c >= 0xa0 && c <= 0xbf: // fixstr
		return w.skip(int(c & 0x1f))
	case c >= 0x90 && c <= 0x9f: // fixarray
		return w.container(depth, int(c&0x0f), 1)
	case c >= 0x80 && c <= 0x8f: // fixmap
		return w.container(depth, int(c&0x0f), 2)
	}
	switch c {
	case 0xcc, 0xd0:
		return w.skip(1)
	case 0xcd, 0xd1:
		return w.skip(2)
	case 0xca, 0xce, 0xd2:
		return w.skip(4)
	case 0xcb, 0xcf, 0xd3:
		return w.skip(8)
	case 0xd9, 0xc4: // str8, bin8
		n, err := w.uint(1)
		if err != nil {
			return err
		}
		return w.skip(n)
	case 0xda, 0xc5:
		n, err := w.uint(2)
		if err != nil {
			return err
		}
		return w.skip(n)
	case 0xdb, 0xc6:
		n, err := w.uint(4)
		if err != nil {
			return err
		}
		return w.skip(n)
	case 0xdc, 0xdd, 0xde, 0xdf: // array16, array32, map16, map32
		size := 2
		if c == 0xdd || c == 0xdf {
			size = 4
		}
		n, err := w.uint(size)
		if err != nil {
			return err
		}
		per := 1
		if c >= 0xde {
			per = 2
		}
		return w.container(depth, n, per)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1/2/4/8/16
		return w.skip(1 + 1<<(c-0xd4))
	case 0xc7, 0xc8, 0xc9: // ext 8/16/32
		size := 1 << (c - 0xc7)
		if c == 0xc9 {
			size = 4
		}
		n, err := w.uint(size)
		if err != nil {
			return err
		}
		return w.skip(1 + n)
	}
	return codes.Invalid("malformed MessagePack: byte 0x%02x at %d starts no value", c, w.pos-1)
}

// DecodeRequest checks that the body is a map (every request body is one:
// the codec would also fill a struct from an array), then its shape (see
// CheckShape), and decodes it into v. The RPC server uses it for every
// request body.
func (f *Frame) DecodeRequest(v any) error {
	if kind := bodyKind(f.body); kind != "map" {
		return codes.Invalid("%s body is %s, not a map", f.Header.Method, kind)
	}
	if err := CheckShape(f.body, MaxRequestElements, 16); err != nil {
		return fmt.Errorf("%s body: %w", f.Header.Method, err)
	}
	return f.Decode(v)
}

// bodyKind names the kind of MessagePack value b starts with, as far as a
// request's check needs it.
func bodyKind(b []byte) string {
	if len(b) == 0 {
		return "empty"
	}
	switch c := b[0]; {
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		return "map"
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		return "an array"
	case c == 0xc0:
		return "nil"
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb:
		return "a string"
	default:
		return fmt.Sprintf("a value of type byte 0x%02x", c)
	}
}
