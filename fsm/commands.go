package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/discoverd/discoverd/internal/mpack"
)

// MessageType is the first byte of every log entry discoverd writes. The list
// is append-only: never reuse or renumber a value, and never change the
// meaning of a field of a command; add new fields or new types instead.
type MessageType uint8

const (
	// RegisterType registers an instance or registers it again (RegisterCommand).
	RegisterType MessageType = 1
	// UnregisterType removes an instance (UnregisterCommand).
	UnregisterType MessageType = 2
	// ExpireType removes one exact registration whose TTL ran out (ExpireCommand).
	ExpireType MessageType = 3
	// BatchType carries several commands in one log entry (EncodeBatch):
	// the leader's group commit puts concurrent writes in one entry, so they
	// share one log write (and its fsyncs) on every node. Each command in it
	// gets its own index, in order (see FSM.ApplyBatch).
	BatchType MessageType = 4
	// UnregisterIfType removes an instance only if its last registration is
	// still the one at IfIndex (an UnregisterCommand with IfIndex set): a
	// registrant that stops removes what it registered, never a later
	// registration of the same instance by another registrant. Nodes older
	// than this type stop at it ("unknown message type 5") rather than
	// remove unconditionally: upgrade every node before clients that send
	// if_index.
	UnregisterIfType MessageType = 5
	// SetMetaType sets a service's metadata if it is at ExpectIndex
	// (SetMetaCommand): a compare-and-set, 0 meaning "only if there is none".
	// Nodes older than this type stop at it ("unknown message type 6"):
	// upgrade every node before clients use metadata.
	SetMetaType MessageType = 6
	// DeleteMetaType deletes a service's metadata, if it is at ExpectIndex
	// when that is not 0 (DeleteMetaCommand).
	DeleteMetaType MessageType = 7
	// SuspectType sets or clears the suspect marker of one registration
	// (SuspectCommand): the leader's expiry-storm guard (ttl/storm.go) holds
	// back its expiry. It changes nothing else. Nodes older than this type
	// stop at it ("unknown message type 8"): upgrade every node before the
	// guard may hold an expiry, or run with -storm-threshold 0 until then.
	SuspectType MessageType = 8
	// ACLBootstrapType creates the first management token and the
	// anonymous token, once (ACLBootstrapCommand, fsm/acl.go); a second
	// one is refused (codes.ErrRefused) and changes nothing. Nodes older
	// than this type stop at it ("unknown message type 9"): upgrade every
	// node before running acl bootstrap.
	ACLBootstrapType MessageType = 9
	// ACLSetTokenType creates a token or replaces the description and rules
	// of one (ACLSetTokenCommand). Nodes older than this type stop at it
	// ("unknown message type 10"); it follows a bootstrap, which stops them
	// first.
	ACLSetTokenType MessageType = 10
	// ACLDeleteTokenType deletes a token (ACLDeleteTokenCommand). Nodes
	// older than this type stop at it ("unknown message type 11"), as
	// above.
	ACLDeleteTokenType MessageType = 11
)

func (t MessageType) String() string {
	switch t {
	case RegisterType:
		return "register"
	case UnregisterType:
		return "unregister"
	case ExpireType:
		return "expire"
	case BatchType:
		return "batch"
	case UnregisterIfType:
		return "unregister-if"
	case SetMetaType:
		return "set-meta"
	case DeleteMetaType:
		return "delete-meta"
	case SuspectType:
		return "suspect"
	case ACLBootstrapType:
		return "acl-bootstrap"
	case ACLSetTokenType:
		return "acl-set-token"
	case ACLDeleteTokenType:
		return "acl-delete-token"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// RegisterCommand registers (Name, Addr). Registering an existing instance
// again replaces its attributes and TTL and keeps its CreateIndex.
type RegisterCommand struct {
	Name      string
	Addr      string
	Attrs     map[string]string
	TTL       time.Duration
	RequestID string // optional; a second entry with the same id is not applied again
}

// UnregisterCommand removes (Name, Addr); with IfIndex (UnregisterIfType
// only), only if the instance's last registration is the one at IfIndex.
type UnregisterCommand struct {
	Name      string
	Addr      string
	RequestID string
	IfIndex   uint64 `codec:",omitempty"`
}

// ExpireCommand removes (Name, Addr) only if its last registration is still the
// one at Index. The leader proposes it when the instance's TTL ran out; a
// registration committed in between has a newer index and survives.
type ExpireCommand struct {
	Name  string
	Addr  string
	Index uint64
	// DecidedAt is the leader's wall-clock time (Unix ns) when it decided the
	// expiry. Informational only — journals and the fault suite's TTL checks
	// read it; Apply never does, so it cannot make replicas diverge.
	DecidedAt int64
}

// SetMetaCommand sets the metadata of service Name to Data, only if the
// metadata's index is ExpectIndex now (0: only if the service has none);
// otherwise the result is a codes.ErrConflict carrying the current index.
// The new metadata's index is the command's.
type SetMetaCommand struct {
	Name        string
	Data        []byte
	ExpectIndex uint64
	RequestID   string
}

// DeleteMetaCommand deletes the metadata of service Name: with ExpectIndex,
// only if it is at that index (codes.ErrConflict otherwise); without,
// whatever its index (codes.ErrNotFound if there is none).
type DeleteMetaCommand struct {
	Name        string
	ExpectIndex uint64
	RequestID   string
}

// SuspectCommand sets the suspect marker of (Name, Addr) to Suspect, only if
// its last registration is still the one at Index. The leader's expiry-storm
// guard proposes Suspect true when it holds back the instance's expiry, and
// false when the instance heartbeats again (a later leader clears a marker an
// earlier one set the same way). A registration clears the marker.
type SuspectCommand struct {
	Name    string
	Addr    string
	Index   uint64
	Suspect bool
}

// codecHandle encodes commands and snapshots. Field names are the Go names;
// the encoding is internal to discoverd (the wire protocol is internal/wire).
var codecHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.MaxInitLen = 1024
	return h
}()

// Encoders and decoders are reused: making one per command was a tenth of
// the leader's allocations under write load.
var (
	encoders = sync.Pool{New: func() any { return codec.NewEncoder(nil, codecHandle) }}
	decoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, codecHandle) }}
)

// Encode returns the log entry for a command: its type byte, then msgpack.
func Encode(t MessageType, cmd any) ([]byte, error) {
	if t == BatchType {
		return nil, errors.New("encode batch: use EncodeBatch")
	}
	if err := checkUnregisterType(t, cmd); err != nil {
		return nil, err
	}
	if b, ok := appendCommand(append(make([]byte, 0, 128), byte(t)), t, cmd); ok {
		return b, nil
	}
	var buf bytes.Buffer
	buf.WriteByte(byte(t))
	enc := encoders.Get().(*codec.Encoder)
	enc.Reset(&buf)
	err := enc.Encode(cmd)
	encoders.Put(enc)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", t, err)
	}
	return buf.Bytes(), nil
}

// checkUnregisterType refuses an unregistration whose message type does not
// match its IfIndex: a conditional one sent as UnregisterType would be
// applied unconditionally.
func checkUnregisterType(t MessageType, cmd any) error {
	var c *UnregisterCommand
	switch v := cmd.(type) {
	case *UnregisterCommand:
		c = v
	case UnregisterCommand:
		c = &v
	}
	if c == nil || (t != UnregisterType && t != UnregisterIfType) || (t == UnregisterIfType) == (c.IfIndex != 0) {
		return nil
	}
	return fmt.Errorf("encode %s command with IfIndex %d: a conditional unregistration is %s, an unconditional one %s",
		t, c.IfIndex, UnregisterIfType, UnregisterType)
}

var noBytes = []byte{}

// decode decodes a command's body into v.
func decode(b []byte, v any) error {
	if c, ok := v.(fastCommand); ok {
		return c.decodeMsgpack(mpack.NewReader(b, 32, codecHandle.MaxInitLen))
	}
	dec := decoders.Get().(*codec.Decoder)
	dec.ResetBytes(b)
	err := dec.Decode(v)
	dec.ResetBytes(noBytes) // do not keep the entry alive
	decoders.Put(dec)
	return err
}

// EncodeBatch returns one log entry carrying several encoded commands (each
// as Encode returned it), applied in order: the BatchType byte, the count,
// then each command's length and bytes (unsigned varints).
func EncodeBatch(cmds [][]byte) ([]byte, error) {
	if len(cmds) == 0 {
		return nil, errors.New("encode batch: no commands")
	}
	n := 1 + binary.MaxVarintLen64
	for _, c := range cmds {
		n += binary.MaxVarintLen64 + len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, byte(BatchType))
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for i, c := range cmds {
		if len(c) == 0 || MessageType(c[0]) == BatchType {
			return nil, fmt.Errorf("encode batch: command %d is empty or a batch", i)
		}
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b, nil
}

// JoinEntries implements raftnode.Machine: the leader's group commit
// proposes several encoded commands as one batch entry (EncodeBatch).
func (f *FSM) JoinEntries(entries [][]byte) ([]byte, error) { return EncodeBatch(entries) }

// decodeBatch splits a batch entry's body into its commands (sharing body's
// memory).
func decodeBatch(body []byte) ([][]byte, error) {
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > uint64(len(body)) {
		return nil, errors.New("bad command count")
	}
	body = body[k:]
	cmds := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(body)
		if k <= 0 || l == 0 || l > uint64(len(body)-k) {
			return nil, fmt.Errorf("bad length of command %d", i)
		}
		c := body[k : k+int(l)]
		if MessageType(c[0]) == BatchType {
			return nil, fmt.Errorf("command %d is itself a batch", i)
		}
		cmds = append(cmds, c)
		body = body[k+int(l):]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%d bytes after the last command", len(body))
	}
	return cmds, nil
}

// The three commands are encoded and decoded by hand (internal/mpack): every
// write is encoded once and decoded on every node, inside Raft's apply. The
// bytes are the codec's (keys are the Go field names, sorted), so entries
// written by either decode with either; tests compare them.

type fastCommand interface {
	decodeMsgpack(r *mpack.Reader) error
}

// appendCommand appends cmd's encoding if it is a pointer to the
// hand-encoded command of type t (anything else goes through the codec,
// which writes the same bytes).
func appendCommand(b []byte, t MessageType, cmd any) ([]byte, bool) {
	switch c := cmd.(type) {
	case *RegisterCommand:
		if t == RegisterType && c != nil {
			return c.appendMsgpack(b), true
		}
	case *UnregisterCommand:
		if c != nil && ((t == UnregisterType && c.IfIndex == 0) || (t == UnregisterIfType && c.IfIndex != 0)) {
			return c.appendMsgpack(b), true
		}
	case *ExpireCommand:
		if t == ExpireType && c != nil {
			return c.appendMsgpack(b), true
		}
	}
	return nil, false
}

func (c *RegisterCommand) appendMsgpack(b []byte) []byte {
	b = mpack.AppendMapHeader(b, 5)
	b = mpack.AppendStr(mpack.AppendStr(b, "Addr"), c.Addr)
	b = mpack.AppendStrMap(mpack.AppendStr(b, "Attrs"), c.Attrs)
	b = mpack.AppendStr(mpack.AppendStr(b, "Name"), c.Name)
	b = mpack.AppendStr(mpack.AppendStr(b, "RequestID"), c.RequestID)
	return mpack.AppendInt(mpack.AppendStr(b, "TTL"), int64(c.TTL))
}

func (c *RegisterCommand) decodeMsgpack(r *mpack.Reader) error {
	*c = RegisterCommand{}
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "Addr":
			c.Addr, err = r.Str()
		case "Attrs":
			c.Attrs, err = r.StrMap()
		case "Name":
			c.Name, err = r.Str()
		case "RequestID":
			c.RequestID, err = r.Str()
		case "TTL":
			var v int64
			v, err = r.Int()
			c.TTL = time.Duration(v)
		default:
			return false, nil
		}
		return true, err
	})
}

func (c *UnregisterCommand) appendMsgpack(b []byte) []byte {
	n := 3
	if c.IfIndex != 0 {
		n++
	}
	b = mpack.AppendMapHeader(b, n)
	b = mpack.AppendStr(mpack.AppendStr(b, "Addr"), c.Addr)
	if c.IfIndex != 0 {
		b = mpack.AppendUint(mpack.AppendStr(b, "IfIndex"), c.IfIndex)
	}
	b = mpack.AppendStr(mpack.AppendStr(b, "Name"), c.Name)
	return mpack.AppendStr(mpack.AppendStr(b, "RequestID"), c.RequestID)
}

func (c *UnregisterCommand) decodeMsgpack(r *mpack.Reader) error {
	*c = UnregisterCommand{}
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "Addr":
			c.Addr, err = r.Str()
		case "IfIndex":
			c.IfIndex, err = r.Uint()
		case "Name":
			c.Name, err = r.Str()
		case "RequestID":
			c.RequestID, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
}

func (c *ExpireCommand) appendMsgpack(b []byte) []byte {
	b = mpack.AppendMapHeader(b, 4)
	b = mpack.AppendStr(mpack.AppendStr(b, "Addr"), c.Addr)
	b = mpack.AppendInt(mpack.AppendStr(b, "DecidedAt"), c.DecidedAt)
	b = mpack.AppendUint(mpack.AppendStr(b, "Index"), c.Index)
	return mpack.AppendStr(mpack.AppendStr(b, "Name"), c.Name)
}

func (c *ExpireCommand) decodeMsgpack(r *mpack.Reader) error {
	*c = ExpireCommand{}
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "Addr":
			c.Addr, err = r.Str()
		case "DecidedAt":
			c.DecidedAt, err = r.Int()
		case "Index":
			c.Index, err = r.Uint()
		case "Name":
			c.Name, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
}
