// Package check holds the fault suite's checkers. Each one takes a recorded
// run (test/fault/history) — client operations, watch sessions, every node's
// journal of applied entries, state hashes, the fault timeline and the final
// state — and returns a Verdict: whether the guarantee it stands for
// (docs/DESIGN.md, "Guarantees") held, and if not, each violation with the
// service, instance, index and node it concerns.
//
// The checkers read nothing but the history, so they are unit tested on
// hand-made good and bad histories (check_test.go and friends), and the
// planted-bug scenarios of the suite show they catch real failures.
//
//	Replicas        journals agree index by index; state hashes agree
//	Linearizable    register/unregister/consistent list per service (porcupine)
//	MetaLinearizable service metadata: compare-and-set writes and consistent gets per service (porcupine)
//	Durability      acknowledged writes are committed and survive; none applied twice
//	TTLSafety       no expiry earlier than TTL after the last sign of life
//	TTLLiveness     a stopped instance is removed within the documented bound
//	Watches         gap-free, ordered, committed, resumable, convergent streams
//	MonotonicReads  no node answers a read from an older state than before, across restarts
//	Election        one elector per fencing index; fencing indices never go back; every leadership is in the log
//	ACL             with ACLs on: the workload's token is never denied what it allows; every node lists the same tokens
//
// The journals are the checkers' view of the committed log: an entry a node
// applied was committed. Indices missing from every journal are either
// entries the FSM never sees (the no-op a new leader appends and the barrier
// it runs, both at the start of a term) or true gaps; see logView.
package check

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/discoverd/discoverd/test/fault/history"
)

// Checker names, as they appear in Verdict.Checker and Violation.Checker.
const (
	NameReplicas         = "replicas"
	NameLinearizable     = "linearizable"
	NameMetaLinearizable = "meta-linearizable"
	NameDurability       = "durability"
	NameTTLSafety        = "ttl-safety"
	NameTTLLiveness      = "ttl-liveness"
	NameWatches          = "watches"
	NameMonotonicReads   = "monotonic-reads"
	NameElection         = "election"
	NameACL              = "acl"
)

// DefaultLinearizableTimeout is the porcupine budget per service that All
// gives Linearizable. A check that runs out of it is a violation, not a pass.
const DefaultLinearizableTimeout = 60 * time.Second

// Violation is one broken promise. Fields that do not apply are empty.
type Violation struct {
	Checker string
	Service string
	Addr    string
	Node    string // the node concerned; "a,b" when two nodes disagree
	Index   uint64 // the log index concerned
	At      int64  // when (Unix ns), if the violation has a moment
	Msg     string
}

// String renders a violation on one line.
func (v Violation) String() string {
	var b strings.Builder
	b.WriteString(v.Checker)
	if v.Service != "" {
		fmt.Fprintf(&b, " service=%s", v.Service)
	}
	if v.Addr != "" {
		fmt.Fprintf(&b, " addr=%s", v.Addr)
	}
	if v.Node != "" {
		fmt.Fprintf(&b, " node=%s", v.Node)
	}
	if v.Index != 0 {
		fmt.Fprintf(&b, " index=%d", v.Index)
	}
	b.WriteString(": ")
	b.WriteString(v.Msg)
	return b.String()
}

// Verdict is one checker's result. OK is true exactly when Violations is
// empty. Notes say what could not be checked and why, or give measurements;
// Stats count what was checked.
type Verdict struct {
	Checker    string
	OK         bool
	Violations []Violation
	Notes      []string
	Stats      map[string]int
}

// String renders a verdict: a summary line, then violations and notes.
func (v Verdict) String() string {
	var b strings.Builder
	status := "ok"
	if !v.OK {
		status = fmt.Sprintf("FAILED (%d violations)", len(v.Violations))
	}
	fmt.Fprintf(&b, "%s: %s", v.Checker, status)
	keys := make([]string, 0, len(v.Stats))
	for k := range v.Stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, v.Stats[k])
	}
	b.WriteString("\n")
	for _, x := range v.Violations {
		b.WriteString("  violation: " + x.String() + "\n")
	}
	for _, n := range v.Notes {
		b.WriteString("  note: " + n + "\n")
	}
	return b.String()
}

// All runs every checker, in the order of the package comment. The
// linearizability checks get DefaultLinearizableTimeout per service.
func All(run *history.Run) []Verdict {
	lin, _ := Linearizable(run, DefaultLinearizableTimeout)
	meta, _ := MetaLinearizable(run, DefaultLinearizableTimeout)
	return []Verdict{
		Replicas(run),
		lin,
		meta,
		Durability(run),
		TTLSafety(run),
		TTLLiveness(run),
		Watches(run),
		MonotonicReads(run),
		Election(run),
		ACL(run),
	}
}

// verdict accumulates a Verdict.
type verdict struct {
	Verdict
}

func newVerdict(name string) *verdict {
	return &verdict{Verdict{Checker: name, Stats: map[string]int{}}}
}

func (v *verdict) fail(x Violation) {
	x.Checker = v.Checker
	v.Violations = append(v.Violations, x)
}

func (v *verdict) note(format string, args ...any) {
	v.Notes = append(v.Notes, fmt.Sprintf(format, args...))
}

func (v *verdict) done() Verdict {
	v.OK = len(v.Violations) == 0
	return v.Verdict
}

// instKey identifies an instance.
type instKey struct{ service, addr string }

// ms renders nanoseconds as milliseconds with one decimal.
func ms(ns int64) string { return fmt.Sprintf("%.1fms", float64(ns)/1e6) }

// finalState is run.Final per service: addr → the instance's index.
func finalState(run *history.Run) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, in := range run.Final {
		if out[in.Service] == nil {
			out[in.Service] = map[string]uint64{}
		}
		out[in.Service][in.Addr] = in.Index
	}
	return out
}

// runEnd is the latest moment the run recorded.
func runEnd(run *history.Run) int64 {
	var end int64
	for _, op := range run.Ops {
		end = max(end, op.Call)
		if op.Return < unknownReturn {
			end = max(end, op.Return)
		}
	}
	for _, e := range run.Entries {
		end = max(end, e.At)
	}
	for _, s := range run.Sessions {
		end = max(end, s.Closed)
	}
	for _, f := range run.Faults {
		end = max(end, f.Start, f.End)
	}
	return end
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sortedAddrs returns a state's addresses in order.
func sortedAddrs(m map[string]uint64) []string { return sortedKeys(m) }
