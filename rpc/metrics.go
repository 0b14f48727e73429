package rpc

import (
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/histogram"
	"github.com/discoverd/discoverd/internal/wire"
)

// The server's counts for /metrics (server/metrics.go). Each call is counted
// by its method and its answer's code in a latency histogram, made the first
// time that pair is seen and then updated with atomic adds only: no lock and
// no allocation per call.

// methods are the methods counted by name; any other counts as "other".
var methods = []string{wire.MethodRegister, wire.MethodUnregister, wire.MethodHeartbeat, wire.MethodList,
	wire.MethodWatch, wire.MethodServices, wire.MethodSetMeta, wire.MethodGetMeta, wire.MethodDeleteMeta,
	wire.MethodReadIndex, wire.MethodStatus, wire.MethodNodeInfo, "other"}

var (
	methodIndex = map[string]int{}
	allCodes    = codes.All()
	codeIndex   = map[codes.Code]int{}
)

func init() {
	for i, m := range methods {
		methodIndex[m] = i
	}
	for i, c := range allCodes {
		codeIndex[c] = i
	}
}

// callStats are a server's counts.
type callStats struct {
	calls        [][]atomic.Pointer[histogram.Histogram] // [method][code], nil until seen
	watchStreams atomic.Int64                            // watch streams open now
	heartbeats   atomic.Uint64                           // instance heartbeats from clients
	slowCuts     atomic.Uint64                           // connections cut for not reading their frames
}

func newCallStats() *callStats {
	cs := &callStats{calls: make([][]atomic.Pointer[histogram.Histogram], len(methods))}
	for i := range cs.calls {
		cs.calls[i] = make([]atomic.Pointer[histogram.Histogram], len(allCodes))
	}
	return cs
}

// observe counts one call of method that took d and ended with err.
func (cs *callStats) observe(method string, err error, d time.Duration) {
	mi, ok := methodIndex[method]
	if !ok {
		mi = len(methods) - 1
	}
	ci, ok := codeIndex[codes.Of(err)]
	if !ok {
		ci = codeIndex[codes.CodeInternal]
	}
	p := &cs.calls[mi][ci]
	h := p.Load()
	if h == nil {
		p.CompareAndSwap(nil, histogram.New(histogram.LatencyUS...))
		h = p.Load()
	}
	h.Observe(uint64(d.Microseconds()))
}

// CallStats are the calls of one method that ended with one code.
type CallStats struct {
	Method string
	Code   codes.Code // codes.CodeOK ("") for a success
	// LatencyUS: how long each call took, in microseconds, from its frame's
	// arrival to its answer (for Watch: until the stream was open, or
	// refused).
	LatencyUS histogram.Snapshot
}

// Stats are the server's counts since it started.
type Stats struct {
	Calls        []CallStats // the method and code pairs seen so far
	WatchStreams int         // watch streams open now
	// Heartbeats: instance heartbeats clients sent to this node (a
	// request can carry many), not counting those other nodes forwarded
	// to it, so the sum over the nodes counts each heartbeat once.
	Heartbeats uint64
	// SlowConsumerCuts: connections closed because the client did not take
	// a frame within the write timeout (a watcher that stopped reading).
	SlowConsumerCuts uint64
}

// Stats returns the server's counts now.
func (s *Server) Stats() Stats {
	cs := s.stats
	st := Stats{WatchStreams: int(cs.watchStreams.Load()), Heartbeats: cs.heartbeats.Load(), SlowConsumerCuts: cs.slowCuts.Load()}
	for mi := range cs.calls {
		for ci := range cs.calls[mi] {
			if h := cs.calls[mi][ci].Load(); h != nil {
				st.Calls = append(st.Calls, CallStats{Method: methods[mi], Code: allCodes[ci], LatencyUS: h.Snapshot()})
			}
		}
	}
	return st
}
