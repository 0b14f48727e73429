package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/discoverd/discoverd/internal/codes"
)

// DefaultMaxFrame is the largest frame a node accepts unless configured otherwise.
const DefaultMaxFrame = 1 << 20

// Handle is the MessagePack handle everything in discoverd's protocol uses:
// strings as str, byte slices as bin (the current MessagePack spec), and a
// cap on up-front allocation so a lying length cannot reserve memory.
var Handle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.MaxInitLen = 256
	h.MaxDepth = 32
	return h
}()

// ErrEncode is wrapped by WriteFrame when a value cannot be encoded; nothing was written.
var ErrEncode = errors.New("cannot encode frame")

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// WriteFrame encodes hdr and body as one frame onto w (not flushed). With a
// limit > 0, a frame longer than limit is not written and a *TooLargeError is
// returned. Encoding errors also leave w untouched.
func WriteFrame(w io.Writer, hdr *Header, body any, limit int) error {
	buf, err := encodeFrame(hdr, body, limit)
	if err != nil {
		return err
	}
	defer releaseFrame(buf)
	_, err = w.Write(buf.Bytes())
	return err
}

// encodeFrame returns the frame in a pooled buffer; releaseFrame returns it.
func encodeFrame(hdr *Header, body any, limit int) (*bytes.Buffer, error) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	b := append(buf.AvailableBuffer(), 0, 0, 0, 0)
	b = appendHeader(b, hdr)
	if fb, ok := body.(fastBody); ok {
		buf.Write(fb.appendMsgpack(b))
	} else {
		buf.Write(b)
		if body == nil {
			body = Empty{}
		}
		enc := encoders.Get().(*codec.Encoder)
		enc.Reset(buf)
		err := enc.Encode(body)
		encoders.Put(enc)
		if err != nil {
			releaseFrame(buf)
			return nil, fmt.Errorf("body: %v: %w", err, ErrEncode)
		}
	}
	b = buf.Bytes()
	if limit > 0 && len(b)-4 > limit {
		releaseFrame(buf)
		return nil, &TooLargeError{Size: int64(len(b) - 4), Limit: limit}
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return buf, nil
}

func releaseFrame(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		buf.Reset()
		bufPool.Put(buf)
	}
}

// Frame is a received frame: its header, and its body still encoded.
type Frame struct {
	Header Header
	body   []byte
}

// Decode decodes the frame's body into v.
func (f *Frame) Decode(v any) error {
	var err error
	if fd, ok := v.(fastDecoder); ok {
		err = fd.decodeMsgpack(f.body)
	} else {
		err = decodeBytes(f.body, v)
	}
	if err != nil {
		what := "response"
		if f.Header.Method != "" {
			what = f.Header.Method
		}
		return fmt.Errorf("malformed %s body: %v: %w", what, err, codes.ErrInvalidArgument)
	}
	return nil
}

// TooLargeError is returned by ReadFrame for a frame longer than allowed. It
// wraps codes.ErrTooLarge; the frame's bytes are still unread.
type TooLargeError struct {
	Size  int64 // the frame's declared length
	Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the %d byte limit", e.Size, e.Limit)
}

func (e *TooLargeError) Unwrap() error { return codes.ErrTooLarge }

// SkipFrame reads past the unread body of an oversized frame of size bytes,
// returning its header's Seq (0 if the header cannot be decoded). Frames
// larger than max are not skipped: the connection must be closed.
func SkipFrame(r *bufio.Reader, size int64, max int64) (uint64, error) {
	if size > max {
		return 0, fmt.Errorf("frame of %d bytes is too large to skip", size)
	}
	head := make([]byte, min(size, 4096))
	if _, err := io.ReadFull(r, head); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	var hdr Header
	_, _ = decodeHeader(head, &hdr) // the seq comes first: usually there even if the head is cut short
	if _, err := io.CopyN(io.Discard, r, size-int64(len(head))); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return hdr.Seq, nil
}

// ReadFrame reads one frame. A frame longer than max fails with ErrTooLarge
// (the stream cannot be trusted after that: close the connection); a frame
// whose header does not decode fails with ErrInvalidArgument.
func ReadFrame(r *bufio.Reader, max int) (*Frame, error) { return ReadFrameWith(r, max, nil) }

// frameStep is the most a frame's buffer holds before its bytes arrive: the
// buffer grows (doubling) with what a peer actually sends, never to the
// length it claims, so a peer must send N bytes to make a node hold N.
const frameStep = 4 << 10

// ReadFrameWith is ReadFrame, calling started (if set) once a frame's
// length has arrived and before its bytes are read: the caller bounds how
// long the rest may take from there (rpc's frame timeout).
func ReadFrameWith(r *bufio.Reader, max int, started func()) (*Frame, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	if started != nil {
		started()
	}
	n := int64(binary.BigEndian.Uint32(lenBuf[:]))
	if n > int64(max) {
		return nil, &TooLargeError{Size: n, Limit: max}
	}
	b, err := readGrowing(r, int(n))
	if err != nil {
		return nil, err
	}
	f := &Frame{}
	hn, err := decodeHeader(b, &f.Header)
	if err != nil {
		return nil, fmt.Errorf("malformed frame header: %v: %w", err, codes.ErrInvalidArgument)
	}
	// The body is whatever follows the header.
	f.body = b[hn:]
	return f, nil
}

// readGrowing reads exactly n bytes into a buffer that starts at frameStep
// (or n, if smaller: one allocation for a small frame) and doubles as the
// bytes arrive.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, 0, min(n, frameStep))
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, 2*cap(b)))
			copy(nb, b)
			b = nb
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil && len(b) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

// Encoders and decoders are reused: a new one per frame was the largest
// single source of allocations on a busy node.
var (
	encoders = sync.Pool{New: func() any { return codec.NewEncoder(nil, Handle) }}
	decoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, Handle) }}
	noBytes  = []byte{}
)

func putDecoder(d *codec.Decoder) {
	d.ResetBytes(noBytes) // do not keep the frame alive
	decoders.Put(d)
}

// decodeBytes decodes b into v with a pooled decoder.
func decodeBytes(b []byte, v any) error {
	dec := decoders.Get().(*codec.Decoder)
	defer putDecoder(dec)
	dec.ResetBytes(b)
	return dec.Decode(v)
}
