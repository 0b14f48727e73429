// Package histogram counts observations into fixed buckets with atomic
// adds only: Observe takes no lock and allocates nothing, so the hot paths
// that feed it (a Raft log append, an RPC call, a group of writes) pay a
// few nanoseconds. The node's /metrics endpoint (server/metrics.go) reads a
// Snapshot at scrape time and exports it as a Prometheus histogram; the
// packages that observe need not know about Prometheus.
package histogram

import "sync/atomic"

// Histogram counts observations of whole numbers in a unit of the caller's
// choice (microseconds, entries) into buckets with fixed upper bounds.
type Histogram struct {
	bounds []uint64        // inclusive upper bounds, ascending
	counts []atomic.Uint64 // one per bound, then one for the values above the last
	sum    atomic.Uint64
}

// New returns a histogram with the given inclusive upper bounds, which must
// be ascending (it panics otherwise: bounds are constants of the program).
func New(bounds ...uint64) *Histogram {
	for i := 1; i < len(bounds); i++ {
		if bounds[i] <= bounds[i-1] {
			panic("histogram: bounds must be ascending")
		}
	}
	return &Histogram{bounds: append([]uint64(nil), bounds...), counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Exponential returns n bounds start, start·factor, start·factor², …
func Exponential(start, factor uint64, n int) []uint64 {
	out := make([]uint64, n)
	v := start
	for i := range out {
		out[i] = v
		v *= factor
	}
	return out
}

// LatencyUS are the bucket bounds, in microseconds, of discoverd's latency
// histograms: 100 µs to 10 s.
var LatencyUS = []uint64{100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000}

// Sizes are the bucket bounds of discoverd's size histograms (entries per
// log append, writes per group): 1, 2, 4, … 4096.
var Sizes = Exponential(1, 2, 13)

// Observe counts one value. A nil histogram ignores it.
func (h *Histogram) Observe(v uint64) {
	if h == nil {
		return
	}
	lo, hi := 0, len(h.bounds) // the first bound >= v, or len(bounds)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if h.bounds[mid] < v {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	h.counts[lo].Add(1)
	h.sum.Add(v)
}

// Snapshot is a histogram's counts at one moment.
type Snapshot struct {
	Bounds     []uint64 // inclusive upper bounds, ascending
	Cumulative []uint64 // observations at or below each bound
	Count, Sum uint64   // all observations, and their sum
}

// Snapshot reads the counts. Observations that race with it may be in Sum
// and not yet in a bucket, or the other way round; Count is always the
// total of the buckets.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Bounds: h.bounds, Cumulative: make([]uint64, len(h.bounds))}
	for i := range h.bounds {
		s.Count += h.counts[i].Load()
		s.Cumulative[i] = s.Count
	}
	s.Count += h.counts[len(h.bounds)].Load()
	s.Sum = h.sum.Load()
	return s
}
