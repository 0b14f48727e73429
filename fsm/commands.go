package fsm

import (
	"bytes"
	"fmt"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
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
)

func (t MessageType) String() string {
	switch t {
	case RegisterType:
		return "register"
	case UnregisterType:
		return "unregister"
	case ExpireType:
		return "expire"
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

// UnregisterCommand removes (Name, Addr).
type UnregisterCommand struct {
	Name      string
	Addr      string
	RequestID string
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

// codecHandle encodes commands and snapshots. Field names are the Go names;
// the encoding is internal to discoverd (the wire protocol is internal/wire).
var codecHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.MaxInitLen = 1024
	return h
}()

// Encode returns the log entry for a command: its type byte, then msgpack.
func Encode(t MessageType, cmd any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(t))
	if err := codec.NewEncoder(&buf, codecHandle).Encode(cmd); err != nil {
		return nil, fmt.Errorf("encode %s command: %w", t, err)
	}
	return buf.Bytes(), nil
}

// decode decodes a command's body into v.
func decode(b []byte, v any) error {
	return codec.NewDecoderBytes(b, codecHandle).Decode(v)
}
