package wire

import "github.com/discoverd/discoverd/internal/mpack"

// Hand-written MessagePack (internal/mpack) for the hottest frames.
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

func newReader(b []byte) *mpack.Reader {
	return mpack.NewReader(b, int(Handle.MaxDepth), Handle.MaxInitLen)
}

// appendHeader writes h as the codec does: keys sorted by name, the
// omitempty ones only when set.
func appendHeader(b []byte, h *Header) []byte {
	n := 1
	for _, set := range [...]bool{h.Method != "", h.Forwarded, h.Code != "", h.Error != "", h.More, h.Index != 0, h.Token != ""} {
		if set {
			n++
		}
	}
	b = mpack.AppendMapHeader(b, n)
	if h.Code != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "code"), h.Code)
	}
	if h.Error != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "error"), h.Error)
	}
	if h.Forwarded {
		b = mpack.AppendBool(mpack.AppendStr(b, "forwarded"), true)
	}
	if h.Index != 0 {
		b = mpack.AppendUint(mpack.AppendStr(b, "index"), h.Index)
	}
	if h.Method != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "method"), h.Method)
	}
	if h.More {
		b = mpack.AppendBool(mpack.AppendStr(b, "more"), true)
	}
	b = mpack.AppendUint(mpack.AppendStr(b, "seq"), h.Seq)
	if h.Token != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "token"), h.Token)
	}
	return b
}

func (w *WatchEvents) appendMsgpack(b []byte) []byte {
	return appendList(b, "events", w.Events, (*Event).appendMsgpack)
}

func (e *Event) appendMsgpack(b []byte) []byte {
	n := 3
	for _, set := range [...]bool{e.Addr != "", len(e.Attrs) > 0, e.TTLMillis != 0, e.CreateIndex != 0, e.Reason != "", len(e.Data) > 0, e.Deleted, e.Suspect} {
		if set {
			n++
		}
	}
	b = mpack.AppendMapHeader(b, n)
	if e.Addr != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "addr"), e.Addr)
	}
	if len(e.Attrs) > 0 {
		b = mpack.AppendStrMap(mpack.AppendStr(b, "attrs"), e.Attrs)
	}
	if e.CreateIndex != 0 {
		b = mpack.AppendUint(mpack.AppendStr(b, "create_index"), e.CreateIndex)
	}
	if len(e.Data) > 0 {
		b = mpack.AppendBin(mpack.AppendStr(b, "data"), e.Data)
	}
	if e.Deleted {
		b = mpack.AppendBool(mpack.AppendStr(b, "deleted"), true)
	}
	b = mpack.AppendUint(mpack.AppendStr(b, "index"), e.Index)
	b = mpack.AppendStr(mpack.AppendStr(b, "kind"), e.Kind)
	b = mpack.AppendStr(mpack.AppendStr(b, "name"), e.Name)
	if e.Reason != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "reason"), e.Reason)
	}
	if e.Suspect {
		b = mpack.AppendBool(mpack.AppendStr(b, "suspect"), true)
	}
	if e.TTLMillis != 0 {
		b = mpack.AppendInt(mpack.AppendStr(b, "ttl_ms"), e.TTLMillis)
	}
	return b
}

// decodeHeader reads a header from the start of b and returns its length.
func decodeHeader(b []byte, h *Header) (int, error) {
	*h = Header{}
	r := newReader(b)
	err := r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "seq":
			h.Seq, err = r.Uint()
		case "method":
			h.Method, err = r.Str()
		case "forwarded":
			h.Forwarded, err = r.Bool()
		case "code":
			h.Code, err = r.Str()
		case "error":
			h.Error, err = r.Str()
		case "more":
			h.More, err = r.Bool()
		case "index":
			h.Index, err = r.Uint()
		case "token":
			h.Token, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
	return r.Offset(), err
}

func (w *WatchEvents) decodeMsgpack(b []byte) error {
	return decodeList(b, "events", &w.Events, (*Event).decode)
}

func (e *Event) decode(r *mpack.Reader) error {
	*e = Event{}
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "kind":
			e.Kind, err = r.Str()
		case "index":
			e.Index, err = r.Uint()
		case "name":
			e.Name, err = r.Str()
		case "addr":
			e.Addr, err = r.Str()
		case "attrs":
			e.Attrs, err = r.StrMap()
		case "ttl_ms":
			e.TTLMillis, err = r.Int()
		case "create_index":
			e.CreateIndex, err = r.Uint()
		case "reason":
			e.Reason, err = r.Str()
		case "data":
			e.Data, err = r.Bytes()
		case "deleted":
			e.Deleted, err = r.Bool()
		case "suspect":
			e.Suspect, err = r.Bool()
		default:
			return false, nil
		}
		return true, err
	})
}

// The write path: Register, Unregister and Heartbeat requests and their
// answers, one of each per write or heartbeat call.

func (q *RegisterRequest) appendMsgpack(b []byte) []byte {
	b = mpack.AppendMapHeader(b, 5)
	b = mpack.AppendStr(mpack.AppendStr(b, "addr"), q.Addr)
	b = mpack.AppendStrMap(mpack.AppendStr(b, "attrs"), q.Attrs)
	b = mpack.AppendStr(mpack.AppendStr(b, "name"), q.Name)
	b = mpack.AppendStr(mpack.AppendStr(b, "request_id"), q.RequestID)
	return mpack.AppendInt(mpack.AppendStr(b, "ttl_ms"), q.TTLMillis)
}

func (q *RegisterRequest) decodeMsgpack(b []byte) error {
	*q = RegisterRequest{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "addr":
			q.Addr, err = r.Str()
		case "attrs":
			q.Attrs, err = r.StrMap()
		case "name":
			q.Name, err = r.Str()
		case "request_id":
			q.RequestID, err = r.Str()
		case "ttl_ms":
			q.TTLMillis, err = r.Int()
		default:
			return false, nil
		}
		return true, err
	})
}

func (q *UnregisterRequest) appendMsgpack(b []byte) []byte {
	n := 3
	if q.IfIndex != 0 {
		n++
	}
	b = mpack.AppendMapHeader(b, n)
	b = mpack.AppendStr(mpack.AppendStr(b, "addr"), q.Addr)
	if q.IfIndex != 0 {
		b = mpack.AppendUint(mpack.AppendStr(b, "if_index"), q.IfIndex)
	}
	b = mpack.AppendStr(mpack.AppendStr(b, "name"), q.Name)
	return mpack.AppendStr(mpack.AppendStr(b, "request_id"), q.RequestID)
}

func (q *UnregisterRequest) decodeMsgpack(b []byte) error {
	*q = UnregisterRequest{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "addr":
			q.Addr, err = r.Str()
		case "if_index":
			q.IfIndex, err = r.Uint()
		case "name":
			q.Name, err = r.Str()
		case "request_id":
			q.RequestID, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
}

func (w *WriteResponse) appendMsgpack(b []byte) []byte {
	return mpack.AppendUint(mpack.AppendStr(mpack.AppendMapHeader(b, 1), "index"), w.Index)
}

func (w *WriteResponse) decodeMsgpack(b []byte) error {
	*w = WriteResponse{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		if k != "index" {
			return false, nil
		}
		var err error
		w.Index, err = r.Uint()
		return true, err
	})
}

func (q *HeartbeatRequest) appendMsgpack(b []byte) []byte {
	return appendList(b, "instances", q.Instances, (*InstanceKey).appendMsgpack)
}

func (q *HeartbeatRequest) decodeMsgpack(b []byte) error {
	return decodeList(b, "instances", &q.Instances, (*InstanceKey).decode)
}

func (k *InstanceKey) appendMsgpack(b []byte) []byte {
	b = mpack.AppendStr(mpack.AppendStr(mpack.AppendMapHeader(b, 2), "addr"), k.Addr)
	return mpack.AppendStr(mpack.AppendStr(b, "name"), k.Name)
}

func (k *InstanceKey) decode(r *mpack.Reader) error {
	*k = InstanceKey{}
	return r.Fields(func(key string) (bool, error) {
		var err error
		switch key {
		case "addr":
			k.Addr, err = r.Str()
		case "name":
			k.Name, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
}

func (h *HeartbeatResponse) appendMsgpack(b []byte) []byte {
	return appendList(b, "results", h.Results, (*Result).appendMsgpack)
}

func (h *HeartbeatResponse) decodeMsgpack(b []byte) error {
	return decodeList(b, "results", &h.Results, (*Result).decode)
}

func (res *Result) appendMsgpack(b []byte) []byte {
	n := 0
	if res.Code != "" {
		n++
	}
	if res.Error != "" {
		n++
	}
	b = mpack.AppendMapHeader(b, n)
	if res.Code != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "code"), res.Code)
	}
	if res.Error != "" {
		b = mpack.AppendStr(mpack.AppendStr(b, "error"), res.Error)
	}
	return b
}

func (res *Result) decode(r *mpack.Reader) error {
	*res = Result{}
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "code":
			res.Code, err = r.Str()
		case "error":
			res.Error, err = r.Str()
		default:
			return false, nil
		}
		return true, err
	})
}

// appendList writes a body that is a map of one key holding a list (nil:
// nil), as the codec writes such a struct.
func appendList[T any](b []byte, key string, list []T, elem func(*T, []byte) []byte) []byte {
	b = mpack.AppendStr(mpack.AppendMapHeader(b, 1), key)
	if list == nil {
		return append(b, 0xc0)
	}
	b = mpack.AppendArrayHeader(b, len(list))
	for i := range list {
		b = elem(&list[i], b)
	}
	return b
}

// decodeList reads such a body into *list; other keys are skipped. The
// slice grows as elements arrive: the array's count alone reserves at most
// MaxInitLen.
func decodeList[T any](b []byte, key string, list *[]T, elem func(*T, *mpack.Reader) error) error {
	*list = nil
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		if k != key {
			return false, nil
		}
		n, isNil, err := r.Array()
		if err != nil || isNil {
			*list = nil
			return true, err
		}
		// Elements decode in place: a local passed to elem would escape,
		// one allocation per element.
		out := make([]T, 0, min(n, r.MaxInitLen))
		var zero T
		for range n {
			out = append(out, zero)
			if err := elem(&out[len(out)-1], r); err != nil {
				return true, err
			}
		}
		*list = out
		return true, nil
	})
}
