// Package snapfile is the format of a discoverd backup: the file that
// `discoverd snapshot save` writes and `snapshot restore` reads. A file is
// a fixed header — magic bytes, the format version, the Raft index and term
// the snapshot was taken at, the index of the last change in it, when it was
// taken, the body's size and its SHA-256, and a CRC of the header itself —
// followed by the body, the replicated state machine's own snapshot
// (fsm/snapshot.go) byte for byte. docs/backup.md describes the layout.
//
// The package knows nothing of the body's content: it writes and checks the
// frame around it. The node that takes a snapshot writes the header
// (backend/raftstore), the client checks it while it saves, and the node
// that restores checks it again before anything changes.
package snapfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
)

// Magic opens every file. Like PNG's signature, its first byte has the high
// bit set and it ends in CR LF, so a file mangled by a 7-bit or a
// line-ending conversion is refused at once.
var Magic = [8]byte{0x89, 'D', 'S', 'N', 'A', 'P', '\r', '\n'}

// Version is the format version this package writes and reads.
const Version = 1

// HeaderSize is the size of a version 1 header; the body starts after it.
const HeaderSize = 88

// Header describes a snapshot file.
type Header struct {
	Version int
	// Index and Term are those of the Raft snapshot the file was made from
	// (Raft's own numbering: docs/protocol.md, "Indices").
	Index, Term uint64
	// Applied is the index of the last change in the state (the indices
	// clients see), as in the body.
	Applied uint64
	// Created is when the snapshot was taken, on the node that took it
	// (informational, to the millisecond).
	Created time.Time
	// Size is the body's length in bytes.
	Size uint64
	// SHA256 is the SHA-256 of the body.
	SHA256 [sha256.Size]byte
}

// ErrNotSnapshot is wrapped by every error about a file that is not a
// discoverd snapshot, or is damaged: its header, size or checksum is wrong.
// It wraps codes.ErrInvalidArgument, so a node that refuses such a file
// answers invalid_argument.
var ErrNotSnapshot = fmt.Errorf("not an intact discoverd snapshot file: %w", codes.ErrInvalidArgument)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Marshal returns the header's bytes.
func (h *Header) Marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic[:])
	binary.BigEndian.PutUint16(b[8:], uint16(h.Version))
	binary.BigEndian.PutUint16(b[10:], HeaderSize)
	binary.BigEndian.PutUint64(b[12:], h.Index)
	binary.BigEndian.PutUint64(b[20:], h.Term)
	binary.BigEndian.PutUint64(b[28:], h.Applied)
	binary.BigEndian.PutUint64(b[36:], uint64(h.Created.UnixMilli()))
	binary.BigEndian.PutUint64(b[44:], h.Size)
	copy(b[52:84], h.SHA256[:])
	binary.BigEndian.PutUint32(b[84:], crc32.Checksum(b[:84], castagnoli))
	return b
}

// Unmarshal parses a header from the first HeaderSize bytes of a file. It
// says what is wrong with a file that does not start with one.
func Unmarshal(b []byte) (*Header, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("it is empty: %w", ErrNotSnapshot)
	}
	if len(b) < len(Magic) || !bytes.Equal(b[:len(Magic)], Magic[:]) {
		return nil, fmt.Errorf("it does not start with a discoverd snapshot's magic bytes (a file made by 'discoverd snapshot save' starts with 89 44 53 4e 41 50 0d 0a): %w", ErrNotSnapshot)
	}
	if len(b) < 12 {
		return nil, fmt.Errorf("it ends within its header (%d bytes): %w", len(b), ErrNotSnapshot)
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != Version {
		return nil, fmt.Errorf("it is in snapshot format version %d, and this discoverd reads version %d: use a discoverd of the version that saved it: %w", v, Version, ErrNotSnapshot)
	}
	if n := binary.BigEndian.Uint16(b[10:]); n != HeaderSize {
		return nil, fmt.Errorf("its header claims %d bytes, a version %d header has %d: %w", n, Version, HeaderSize, ErrNotSnapshot)
	}
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("it ends within its header (%d of %d bytes): %w", len(b), HeaderSize, ErrNotSnapshot)
	}
	if got, want := crc32.Checksum(b[:84], castagnoli), binary.BigEndian.Uint32(b[84:]); got != want {
		return nil, fmt.Errorf("its header is damaged (CRC-32C %08x, the header says %08x): %w", got, want, ErrNotSnapshot)
	}
	h := &Header{
		Version: Version,
		Index:   binary.BigEndian.Uint64(b[12:]),
		Term:    binary.BigEndian.Uint64(b[20:]),
		Applied: binary.BigEndian.Uint64(b[28:]),
		Created: time.UnixMilli(int64(binary.BigEndian.Uint64(b[36:]))).UTC(),
		Size:    binary.BigEndian.Uint64(b[44:]),
	}
	copy(h.SHA256[:], b[52:84])
	return h, nil
}

// ReadHeader reads and parses a file's header from r.
func ReadHeader(r io.Reader) (*Header, error) {
	b := make([]byte, HeaderSize)
	n, err := io.ReadFull(r, b)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return Unmarshal(b[:n])
	case err != nil:
		return nil, err
	}
	return Unmarshal(b)
}

// Checksum is the SHA-256 as text, as inspect prints it.
func (h *Header) Checksum() string { return hex.EncodeToString(h.SHA256[:]) }

// BodyReader returns a reader of the body that follows the header in r: it
// yields exactly h.Size bytes, and fails instead of ending cleanly when the
// body is shorter than the header says, longer, or its SHA-256 is not the
// header's. So a reader that reaches io.EOF has read an intact body.
func (h *Header) BodyReader(r io.Reader) io.Reader {
	return &bodyReader{h: h, r: r, left: h.Size, sum: sha256.New()}
}

type bodyReader struct {
	h    *Header
	r    io.Reader
	left uint64
	sum  hash.Hash
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.err = b.finish()
		return 0, b.err
	}
	if uint64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.sum.Write(p[:n])
	b.left -= uint64(n)
	if errors.Is(err, io.EOF) {
		if b.left > 0 {
			b.err = b.h.truncated(b.h.Size - b.left)
			return n, b.err
		}
		err = nil
	}
	return n, err
}

// finish checks, once the whole body has been read, that nothing follows it
// and that its checksum is the header's.
func (b *bodyReader) finish() error {
	var one [1]byte
	if n, _ := io.ReadFull(b.r, one[:]); n > 0 {
		return b.h.overlong()
	}
	if err := b.h.checkSum(b.sum); err != nil {
		return err
	}
	return io.EOF
}

// overlong is the error for a body longer than the header says.
func (h *Header) overlong() error {
	return fmt.Errorf("it has bytes after the %d bytes of body its header says: %w", h.Size, ErrNotSnapshot)
}

// truncated is the error for a body of only have bytes.
func (h *Header) truncated(have uint64) error {
	return fmt.Errorf("it is truncated: its body has %d of the %d bytes its header says: %w", have, h.Size, ErrNotSnapshot)
}

// checkSum compares the SHA-256 of a whole body with the header's.
func (h *Header) checkSum(sum hash.Hash) error {
	var got [sha256.Size]byte
	sum.Sum(got[:0])
	if got != h.SHA256 {
		return fmt.Errorf("its body is damaged: SHA-256 %s, the header says %s: %w", hex.EncodeToString(got[:]), h.Checksum(), ErrNotSnapshot)
	}
	return nil
}

// Verify reads a whole file from r and returns its header once the body has
// been checked against it.
func Verify(r io.Reader) (*Header, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, h.BodyReader(r)); err != nil {
		return nil, err
	}
	return h, nil
}

// Checker checks a file written through it, as it is written: the header
// once it has come, then the body's size and checksum (Done).
type Checker struct {
	head []byte // the header's bytes, until it is whole
	h    *Header
	sum  hash.Hash
	body uint64 // bytes of body written
	err  error
}

// Write implements io.Writer. It fails once the bytes written so far
// cannot be the start of an intact file.
func (c *Checker) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(p)
	if c.h == nil {
		k := min(len(p), HeaderSize-len(c.head))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
		if len(c.head) < HeaderSize {
			return n, nil
		}
		if c.h, c.err = Unmarshal(c.head); c.err != nil {
			return 0, c.err
		}
		c.sum = sha256.New()
	}
	c.body += uint64(len(p))
	if c.body > c.h.Size {
		c.err = c.h.overlong()
		return 0, c.err
	}
	c.sum.Write(p)
	return n, nil
}

// Done returns the file's header once everything written was an intact
// file, and says what is wrong otherwise.
func (c *Checker) Done() (*Header, error) {
	switch {
	case c.err != nil:
		return nil, c.err
	case c.h == nil:
		return Unmarshal(c.head)
	case c.body < c.h.Size:
		return nil, c.h.truncated(c.body)
	}
	if err := c.h.checkSum(c.sum); err != nil {
		return nil, err
	}
	return c.h, nil
}
