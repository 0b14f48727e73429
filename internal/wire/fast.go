package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Hand-written MessagePack for the hottest frames.
//
// Every frame has a Header, and a change to a service with a thousand
// watchers is a thousand WatchEvents frames, encoded on the servers and
// decoded by the clients. Through the reflective codec that was ~13 µs of
// CPU per delivered event on the client alone, most of a 1000-watcher
// fan-out's tail. These functions write exactly the bytes the codec writes
// (tests compare them) and read everything section 3 of docs/protocol.md
// allows: any integer format, str or bin for strings, nil for zero values,
// unknown keys skipped, keys in any order.

// fastBody is a body with its own encoder.
type fastBody interface {
	appendMsgpack(b []byte) []byte
}

// fastDecoder is a body with its own decoder.
type fastDecoder interface {
	decodeMsgpack(b []byte) error
}

func appendStr(b []byte, s string) []byte {
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

func appendMapHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
}

func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

func appendUint(b []byte, v uint64) []byte {
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

func appendInt(b []byte, v int64) []byte {
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

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// appendHeader writes h as the codec does: keys sorted by name, the
// omitempty ones only when set.
func appendHeader(b []byte, h *Header) []byte {
	n := 1
	for _, set := range [...]bool{h.Method != "", h.Forwarded, h.Code != "", h.Error != "", h.More} {
		if set {
			n++
		}
	}
	b = appendMapHeader(b, n)
	if h.Code != "" {
		b = appendStr(appendStr(b, "code"), h.Code)
	}
	if h.Error != "" {
		b = appendStr(appendStr(b, "error"), h.Error)
	}
	if h.Forwarded {
		b = appendBool(appendStr(b, "forwarded"), true)
	}
	if h.Method != "" {
		b = appendStr(appendStr(b, "method"), h.Method)
	}
	if h.More {
		b = appendBool(appendStr(b, "more"), true)
	}
	return appendUint(appendStr(b, "seq"), h.Seq)
}

func (w *WatchEvents) appendMsgpack(b []byte) []byte {
	b = appendMapHeader(b, 1)
	b = appendStr(b, "events")
	if w.Events == nil {
		return append(b, 0xc0)
	}
	b = appendArrayHeader(b, len(w.Events))
	for i := range w.Events {
		b = w.Events[i].appendMsgpack(b)
	}
	return b
}

func (e *Event) appendMsgpack(b []byte) []byte {
	n := 3
	for _, set := range [...]bool{e.Addr != "", len(e.Attrs) > 0, e.TTLMillis != 0, e.CreateIndex != 0, e.Reason != ""} {
		if set {
			n++
		}
	}
	b = appendMapHeader(b, n)
	if e.Addr != "" {
		b = appendStr(appendStr(b, "addr"), e.Addr)
	}
	if len(e.Attrs) > 0 {
		b = appendMapHeader(appendStr(b, "attrs"), len(e.Attrs))
		for k, v := range e.Attrs {
			b = appendStr(appendStr(b, k), v)
		}
	}
	if e.CreateIndex != 0 {
		b = appendUint(appendStr(b, "create_index"), e.CreateIndex)
	}
	b = appendUint(appendStr(b, "index"), e.Index)
	b = appendStr(appendStr(b, "kind"), e.Kind)
	b = appendStr(appendStr(b, "name"), e.Name)
	if e.Reason != "" {
		b = appendStr(appendStr(b, "reason"), e.Reason)
	}
	if e.TTLMillis != 0 {
		b = appendInt(appendStr(b, "ttl_ms"), e.TTLMillis)
	}
	return b
}

// reader reads MessagePack from a byte slice.
type reader struct {
	b     []byte
	off   int
	depth int
}

var errShort = errors.New("msgpack: unexpected end of data")

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *reader) peek() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	return r.b[r.off], nil
}

func (r *reader) take(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.off) {
		return nil, errShort
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

func (r *reader) be(n int) (uint64, error) {
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
func (r *reader) nilNext() bool {
	if c, err := r.peek(); err == nil && c == 0xc0 {
		r.off++
		return true
	}
	return false
}

// container reads a map (array false) or array header; nil reads as length 0.
func (r *reader) container(array bool) (int, error) {
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
		return 0, errShort
	}
	return int(n), nil
}

// str reads a str or bin; nil reads as "".
func (r *reader) str() (string, error) {
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

// integer reads any integer format as a signed value and whether it is
// beyond int64 (a uint64 above MaxInt64); nil reads as 0.
func (r *reader) integer() (v int64, big uint64, err error) {
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

func (r *reader) uint() (uint64, error) {
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

func (r *reader) int() (int64, error) {
	v, big, err := r.integer()
	if err == nil && big != 0 {
		err = fmt.Errorf("msgpack: %d overflows a signed field", big)
	}
	return v, err
}

func (r *reader) bool() (bool, error) {
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

// skip reads past one value of any type.
func (r *reader) skip() error {
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
			return errShort
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
			return errShort
		}
		if r.depth++; r.depth > int(Handle.MaxDepth) {
			return errors.New("msgpack: nested too deeply")
		}
		for range elems {
			if err := r.skip(); err != nil {
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
func (r *reader) fields(field func(key string) (bool, error)) error {
	n, err := r.container(false)
	if err != nil {
		return err
	}
	for range n {
		k, err := r.str()
		if err != nil {
			return err
		}
		known, err := field(k)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if !known {
			if err := r.skip(); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeHeader reads a header from the start of b and returns its length.
func decodeHeader(b []byte, h *Header) (int, error) {
	*h = Header{}
	r := &reader{b: b}
	err := r.fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "seq":
			h.Seq, err = r.uint()
		case "method":
			h.Method, err = r.str()
		case "forwarded":
			h.Forwarded, err = r.bool()
		case "code":
			h.Code, err = r.str()
		case "error":
			h.Error, err = r.str()
		case "more":
			h.More, err = r.bool()
		default:
			return false, nil
		}
		return true, err
	})
	return r.off, err
}

func (w *WatchEvents) decodeMsgpack(b []byte) error {
	*w = WatchEvents{}
	r := &reader{b: b}
	return r.fields(func(k string) (bool, error) {
		if k != "events" {
			return false, nil
		}
		if r.nilNext() {
			w.Events = nil
			return true, nil
		}
		n, err := r.container(true)
		if err != nil {
			return true, err
		}
		w.Events = make([]Event, n)
		for i := range w.Events {
			if err := w.Events[i].decode(r); err != nil {
				return true, err
			}
		}
		return true, nil
	})
}

func (e *Event) decode(r *reader) error {
	*e = Event{}
	return r.fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "kind":
			e.Kind, err = r.str()
		case "index":
			e.Index, err = r.uint()
		case "name":
			e.Name, err = r.str()
		case "addr":
			e.Addr, err = r.str()
		case "attrs":
			if r.nilNext() {
				e.Attrs = nil
				return true, nil
			}
			var n int
			if n, err = r.container(false); err != nil {
				return true, err
			}
			e.Attrs = make(map[string]string, min(n, Handle.MaxInitLen))
			for range n {
				k, err := r.str()
				if err != nil {
					return true, err
				}
				if e.Attrs[k], err = r.str(); err != nil {
					return true, err
				}
			}
		case "ttl_ms":
			e.TTLMillis, err = r.int()
		case "create_index":
			e.CreateIndex, err = r.uint()
		case "reason":
			e.Reason, err = r.str()
		default:
			return false, nil
		}
		return true, err
	})
}
