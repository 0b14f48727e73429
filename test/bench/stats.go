package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// latencies collects operation latencies from many goroutines. Each worker
// appends to its own slice (rec) and the slices are merged once at the end,
// so recording costs no lock on the hot path.
type latencies struct {
	mu   sync.Mutex
	all  []time.Duration
	errs int
	// firstErr is the first error seen, for the report.
	firstErr string
}

// rec is one worker's share of a latencies.
type rec struct {
	l    *latencies
	d    []time.Duration
	errs int
	err  error // first error of this worker
}

func (l *latencies) worker() *rec { return &rec{l: l, d: make([]time.Duration, 0, 1024)} }

func (r *rec) ok(d time.Duration) { r.d = append(r.d, d) }

func (r *rec) fail(err error) {
	r.errs++
	if r.err == nil {
		r.err = err
	}
}

// flush merges the worker's share into its latencies; call once, when the
// worker ends.
func (r *rec) flush() {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.all = append(r.l.all, r.d...)
	r.l.errs += r.errs
	if r.err != nil && r.l.firstErr == "" {
		r.l.firstErr = r.err.Error()
	}
	r.d = nil
}

// summary is what a row reports about a set of latencies.
type summary struct {
	n             int
	p50, p99, max float64 // milliseconds
	errs          int
	firstErr      string
}

func (l *latencies) summary() summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := summary{n: len(l.all), errs: l.errs, firstErr: l.firstErr}
	if len(l.all) == 0 {
		return s
	}
	d := slices.Clone(l.all)
	slices.Sort(d)
	s.p50, s.p99, s.max = ms(pct(d, 0.50)), ms(pct(d, 0.99)), ms(d[len(d)-1])
	return s
}

// pct is the nearest-rank percentile of sorted d.
func pct(d []time.Duration, p float64) time.Duration {
	i := int(float64(len(d))*p+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (s summary) String() string {
	out := fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms", s.p50, s.p99, s.max)
	if s.errs > 0 {
		out += fmt.Sprintf(", %d errors (first: %s)", s.errs, s.firstErr)
	}
	return out
}

// row is one line of results.json. A workload run several times (the
// registration levels, interleaved between the systems) has one row per run,
// numbered from 1 in Run.
type row struct {
	Workload string         `json:"workload"`
	Clients  int            `json:"clients"`
	System   string         `json:"system"`
	Run      int            `json:"run,omitempty"` // registration: 1, 2, 3 (interleaved); 0: measured once
	OpsPerS  float64        `json:"ops_per_s"`
	P50      float64        `json:"p50_ms"`
	P99      float64        `json:"p99_ms"`
	Max      float64        `json:"max_ms"`
	Extra    map[string]any `json:"extra"`
}

// newRow fills a row's latency fields from s; errors go to extra.
func newRow(workload string, clients int, system string, opsPerS float64, s summary) row {
	r := row{Workload: workload, Clients: clients, System: system, OpsPerS: round2(opsPerS),
		P50: s.p50, P99: s.p99, Max: s.max, Extra: map[string]any{}}
	if s.errs > 0 {
		r.Extra["errors"] = s.errs
		r.Extra["first_error"] = s.firstErr
	}
	return r
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// median returns the median of xs: the middle value, or the mean of the
// two middle ones when there is an even number (of two runs, their mean).
// 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}
