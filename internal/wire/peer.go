package wire

import "github.com/discoverd/discoverd/internal/mpack"

// Node-to-node methods, spoken only on connections that open with the peer
// protocol byte (internal/mux ConnPeer); with TLS only a server certificate
// of the cluster may open one. docs/protocol.md ("Peer protocol") describes
// them and backend/raftstore/deadlines.go serves them.
const (
	// MethodPushDeadlines hands a node the deadlines of heartbeats the
	// leader is about to acknowledge.
	MethodPushDeadlines = "PushDeadlines"
	// MethodCollectDeadlines asks a node for its deadline table on behalf
	// of a new leader.
	MethodCollectDeadlines = "CollectDeadlines"
)

// DeadlineGroup is registrations (by index) whose deadlines lie the same
// time ahead.
type DeadlineGroup struct {
	RemainingMicros int64    `codec:"remaining_us"`
	Indexes         []uint64 `codec:"indexes"`
}

// PushDeadlinesRequest carries renewed deadlines from the leader of Term.
type PushDeadlinesRequest struct {
	Term   uint64          `codec:"term"`
	Groups []DeadlineGroup `codec:"groups"`
}

// PushDeadlinesResponse acknowledges a push: the node holds the deadlines.
type PushDeadlinesResponse struct{}

// CollectDeadlinesRequest asks for a node's table for the new leader of
// Term; the node refuses pushes of older terms from then on.
type CollectDeadlinesRequest struct {
	Term uint64 `codec:"term"`
}

// CollectDeadlinesResponse is a node's deadline table: Indexes[i]'s
// deadline lies RemainingMicros[i] ahead.
type CollectDeadlinesResponse struct {
	// AgeMicros is how long the table has held everything it was sent.
	AgeMicros       int64    `codec:"age_us"`
	Indexes         []uint64 `codec:"indexes"`
	RemainingMicros []int64  `codec:"remaining_us"`
}

// Pushes go out with every round of heartbeats and carry one index per
// heartbeat: hand-written like the other hot frames (fast.go).

func (q *PushDeadlinesRequest) appendMsgpack(b []byte) []byte {
	b = mpack.AppendStr(mpack.AppendMapHeader(b, 2), "groups")
	if q.Groups == nil {
		b = append(b, 0xc0)
	} else {
		b = mpack.AppendArrayHeader(b, len(q.Groups))
		for i := range q.Groups {
			b = q.Groups[i].appendMsgpack(b)
		}
	}
	return mpack.AppendUint(mpack.AppendStr(b, "term"), q.Term)
}

func (q *PushDeadlinesRequest) decodeMsgpack(b []byte) error {
	*q = PushDeadlinesRequest{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "groups":
			var n int
			var isNil bool
			if n, isNil, err = r.Array(); err != nil || isNil {
				return true, err
			}
			q.Groups = make([]DeadlineGroup, 0, min(n, r.MaxInitLen))
			for range n {
				var g DeadlineGroup
				if err := g.decode(r); err != nil {
					return true, err
				}
				q.Groups = append(q.Groups, g)
			}
		case "term":
			q.Term, err = r.Uint()
		default:
			return false, nil
		}
		return true, err
	})
}

func (g *DeadlineGroup) appendMsgpack(b []byte) []byte {
	b = mpack.AppendStr(mpack.AppendMapHeader(b, 2), "indexes")
	if g.Indexes == nil {
		b = append(b, 0xc0)
	} else {
		b = mpack.AppendArrayHeader(b, len(g.Indexes))
		for _, idx := range g.Indexes {
			b = mpack.AppendUint(b, idx)
		}
	}
	return mpack.AppendInt(mpack.AppendStr(b, "remaining_us"), g.RemainingMicros)
}

func (g *DeadlineGroup) decode(r *mpack.Reader) error {
	*g = DeadlineGroup{}
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "indexes":
			var n int
			var isNil bool
			if n, isNil, err = r.Array(); err != nil || isNil {
				return true, err
			}
			g.Indexes = make([]uint64, 0, min(n, r.MaxInitLen))
			for range n {
				idx, err := r.Uint()
				if err != nil {
					return true, err
				}
				g.Indexes = append(g.Indexes, idx)
			}
		case "remaining_us":
			g.RemainingMicros, err = r.Int()
		default:
			return false, nil
		}
		return true, err
	})
}

func (*PushDeadlinesResponse) appendMsgpack(b []byte) []byte { return mpack.AppendMapHeader(b, 0) }

func (*PushDeadlinesResponse) decodeMsgpack(b []byte) error {
	return newReader(b).Fields(func(string) (bool, error) { return false, nil })
}
