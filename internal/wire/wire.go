// Package wire is discoverd's native protocol: the framing, the message types
// and the MessagePack codec shared by the RPC server (rpc/) and the Go client
// (client/). It holds no behaviour; docs/protocol.md describes the same thing
// for implementers in other languages, and the two must stay in step.
//
// A connection starts with one byte, ConnRPC, then carries frames both ways.
// A frame is a 4-byte big-endian length followed by that many bytes, which
// hold two MessagePack values back to back: a Header and a body.
package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/discoverd/discoverd/internal/codes"
)

// First byte of a connection to a node's single port.
const (
	ConnRaft byte = 1 // hashicorp/raft's transport
	ConnRPC  byte = 2 // this protocol
)

// DefaultMaxFrame is the largest frame a node accepts unless configured otherwise.
const DefaultMaxFrame = 1 << 20

// Methods.
const (
	MethodRegister   = "Register"
	MethodUnregister = "Unregister"
	MethodHeartbeat  = "Heartbeat"
	MethodList       = "List"
	MethodWatch      = "Watch"
	MethodCancel     = "Cancel"
	MethodStatus     = "Status"
	MethodNodeInfo   = "NodeInfo"
)

// Event kinds.
const (
	KindUp      = "up"      // an instance appeared (also: each instance of an initial state)
	KindUpdate  = "update"  // an instance was registered again (attributes or TTL may differ)
	KindDown    = "down"    // an instance went away (Reason says unregister or expire)
	KindCurrent = "current" // the initial (or resynced) state is complete as of Index
	KindResync  = "resync"  // history was lost: drop what you hold, a full state follows
)

// Down reasons.
const (
	ReasonUnregister = "unregister"
	ReasonExpire     = "expire"
)

// Header opens every frame.
type Header struct {
	Seq       uint64 `codec:"seq"`                 // request number chosen by the client, echoed in responses
	Method    string `codec:"method,omitempty"`    // requests only
	Forwarded bool   `codec:"forwarded,omitempty"` // set by a node forwarding to the leader; never forwarded again
	Code      string `codec:"code,omitempty"`      // responses: error code, empty on success
	Error     string `codec:"error,omitempty"`     // responses: error message
	More      bool   `codec:"more,omitempty"`      // responses: more frames follow for this Seq (streams)
}

// Err turns a response header's code and message back into an error.
func (h *Header) Err() error { return codes.FromWire(codes.Code(h.Code), h.Error) }

// RegisterRequest registers an instance, or registers it again with new attributes or TTL.
type RegisterRequest struct {
	Name      string            `codec:"name"`
	Addr      string            `codec:"addr"`
	Attrs     map[string]string `codec:"attrs"`
	TTLMillis int64             `codec:"ttl_ms"`     // 0: the default (10 s)
	RequestID string            `codec:"request_id"` // same id on every retry of one write
}

// UnregisterRequest removes an instance.
type UnregisterRequest struct {
	Name      string `codec:"name"`
	Addr      string `codec:"addr"`
	RequestID string `codec:"request_id"`
}

// WriteResponse answers Register and Unregister with the index of the committed entry.
type WriteResponse struct {
	Index uint64 `codec:"index"`
}

// InstanceKey names one instance.
type InstanceKey struct {
	Name string `codec:"name"`
	Addr string `codec:"addr"`
}

// HeartbeatRequest keeps instances alive. It never enters the Raft log.
type HeartbeatRequest struct {
	Instances []InstanceKey `codec:"instances"`
}

// Result is one per-item outcome; an empty Code is success.
type Result struct {
	Code  string `codec:"code,omitempty"`
	Error string `codec:"error,omitempty"`
}

// Err returns the item's error or nil.
func (r Result) Err() error { return codes.FromWire(codes.Code(r.Code), r.Error) }

// ResultOf encodes an error as a Result.
func ResultOf(err error) Result {
	if err == nil {
		return Result{}
	}
	return Result{Code: string(codes.Of(err)), Error: err.Error()}
}

// HeartbeatResponse has one Result per requested instance, in order.
type HeartbeatResponse struct {
	Results []Result `codec:"results"`
}

// ListRequest reads the instances of a service.
type ListRequest struct {
	Name       string            `codec:"name"`
	Attrs      map[string]string `codec:"attrs,omitempty"`      // only instances with all of these
	Consistent bool              `codec:"consistent,omitempty"` // linearizable: served by a confirmed leader
	MinIndex   uint64            `codec:"min_index,omitempty"`  // do not answer from state older than this
}

// Instance is one registered instance.
type Instance struct {
	Name        string            `codec:"name"`
	Addr        string            `codec:"addr"`
	Attrs       map[string]string `codec:"attrs"`
	TTLMillis   int64             `codec:"ttl_ms"`
	CreateIndex uint64            `codec:"create_index"` // index of its first registration (fencing token)
	Index       uint64            `codec:"index"`        // index of its last registration
}

// ListResponse is the state of one service at Index.
type ListResponse struct {
	Index     uint64     `codec:"index"`
	Instances []Instance `codec:"instances"`
}

// WatchRequest opens a stream of events for a service. FromIndex 0 starts with
// the current state; otherwise the stream resumes after FromIndex.
type WatchRequest struct {
	Name      string `codec:"name"`
	FromIndex uint64 `codec:"from_index,omitempty"`
	MinIndex  uint64 `codec:"min_index,omitempty"` // do not serve from a state older than this
}

// Event is one change (or a state marker) on a watch stream.
type Event struct {
	Kind        string            `codec:"kind"`
	Index       uint64            `codec:"index"`
	Name        string            `codec:"name"`
	Addr        string            `codec:"addr,omitempty"`
	Attrs       map[string]string `codec:"attrs,omitempty"`
	TTLMillis   int64             `codec:"ttl_ms,omitempty"`
	CreateIndex uint64            `codec:"create_index,omitempty"`
	Reason      string            `codec:"reason,omitempty"`
}

// WatchEvents is one frame of a watch stream.
type WatchEvents struct {
	Events []Event `codec:"events"`
}

// CancelRequest ends the stream opened by request Seq.
type CancelRequest struct {
	Seq uint64 `codec:"seq"`
}

// Empty is the body of requests and responses that carry nothing.
type Empty struct{}

// NodeStatus describes one node of the cluster.
type NodeStatus struct {
	ID            string `codec:"id"`
	Addr          string `codec:"addr"`
	State         string `codec:"state"` // Leader, Follower, Candidate, Shutdown, or unreachable
	Term          uint64 `codec:"term"`
	AppliedIndex  uint64 `codec:"applied_index"`
	CommitIndex   uint64 `codec:"commit_index"`
	LastIndex     uint64 `codec:"last_index"`
	SnapshotIndex uint64 `codec:"snapshot_index"` // index of the latest snapshot on this node
	Leader        string `codec:"leader"`         // the leader this node knows of
	Voter         bool   `codec:"voter"`
	Error         string `codec:"error,omitempty"`
	HeapInuse     uint64 `codec:"heap_inuse_bytes,omitempty"` // this process's Go heap in use (NodeInfo only)
	// Raft log appends since the node started (each one write of the log
	// store with its fsyncs), the entries they carried, and their total time.
	LogAppends  uint64 `codec:"log_appends,omitempty"`
	LogEntries  uint64 `codec:"log_entries,omitempty"`
	LogAppendUS uint64 `codec:"log_append_us,omitempty"`
	// Only when asked for with NodeInfoRequest.StateHash:
	FSMApplied uint64 `codec:"fsm_applied,omitempty"` // the state machine's applied index
	StateHash  string `codec:"state_hash,omitempty"`  // SHA-256 of the replicated state at FSMApplied
}

// NodeInfoRequest asks one node about itself.
type NodeInfoRequest struct {
	// StateHash asks for a hash of the replicated state (walks it all: for checks).
	StateHash bool `codec:"state_hash,omitempty"`
}

// StatusResponse is the whole cluster as seen from the node asked.
type StatusResponse struct {
	Leader string       `codec:"leader"`
	Nodes  []NodeStatus `codec:"nodes"`
}

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

// FrameWriter writes the frames of many goroutines to one connection. Each
// frame is encoded before the lock is taken, and frames written together
// leave in one write(2): a writer with others queued behind it leaves the
// flush to them, and a writer with none first yields the processor once,
// so that goroutines already runnable — a change's hundred watchers on one
// connection, woken together — add their frames before it flushes. (Without
// the yield, on two cores each of them found no one queued and flushed
// alone: one write(2) per watcher, a third of a fan-out's CPU.)
type FrameWriter struct {
	conn    net.Conn
	timeout time.Duration
	waiting atomic.Int64 // writers between encoding and the lock
	mu      sync.Mutex
	bw      *bufio.Writer
	written uint64 // frames written to bw (guarded by mu)
	flushed uint64 // frames flushed, or failed to (guarded by mu)
}

// NewFrameWriter returns a writer to conn that bounds each flush by timeout.
func NewFrameWriter(conn net.Conn, timeout time.Duration) *FrameWriter {
	return &FrameWriter{conn: conn, timeout: timeout, bw: bufio.NewWriterSize(conn, 32<<10)}
}

// WriteFrame writes one frame. An encoding error (wrapping ErrEncode, or a
// *TooLargeError past limit) means nothing was written and the connection
// is fine. Any other error means the connection is broken. A nil error means
// the frame is on its way: written, or buffered for a writer queued right
// behind this one, which flushes it (a failed flush breaks the connection,
// and every later write fails).
func (w *FrameWriter) WriteFrame(hdr *Header, body any, limit int) error {
	buf, err := encodeFrame(hdr, body, limit)
	if err != nil {
		return err
	}
	defer releaseFrame(buf)
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	if _, err := w.bw.Write(buf.Bytes()); err != nil {
		w.mu.Unlock()
		return err
	}
	w.written++
	mine := w.written
	if w.waiting.Load() > 0 {
		w.mu.Unlock()
		return nil // the writer queued behind us flushes
	}
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.flushed >= mine:
		// A writer that came meanwhile flushed ours too; a failure there
		// stays in bw and fails every later write.
		return nil
	case w.waiting.Load() > 0:
		return nil
	}
	w.flushed = w.written
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.bw.Flush()
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
func ReadFrame(r *bufio.Reader, max int) (*Frame, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(lenBuf[:])
	if int64(n) > int64(max) {
		return nil, &TooLargeError{Size: int64(n), Limit: max}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
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
