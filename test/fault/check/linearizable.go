package check

import (
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/discoverd/discoverd/test/fault/history"
)

// unknownReturn is the Return of an operation whose outcome is unknown: it may
// take effect at any time after its call.
const unknownReturn = math.MaxInt64

// linTTLMillis is the shortest TTL a service's registrations may carry for
// its history to be checked for linearizability: the workload registers
// such services with 1 h TTLs, so nothing in them expires during a run.
const linTTLMillis = 3_600_000

// ServiceResult is the linearizability check of one service: porcupine's
// result, the data to visualize it, the model it was checked against and how
// many operations took part.
type ServiceResult struct {
	Service string
	Result  porcupine.CheckResult
	Info    porcupine.LinearizationInfo
	Model   porcupine.Model
	Ops     int
}

// linInput is an operation's input in the model.
type linInput struct {
	Kind string // history.Register, Unregister or CList
	Addr string
}

// Outputs of writes in the model.
const (
	resOK       = "ok"
	resNotFound = "not_found"
	resUnknown  = "unknown" // may or may not have happened
)

// linOutput is an operation's output in the model.
type linOutput struct {
	Res  string   // writes
	List []string // clist: the listed addresses, sorted
}

// linState is the set of registered addresses, sorted; never mutated.
type linState []string

func (s linState) has(addr string) bool {
	_, ok := slices.BinarySearch(s, addr)
	return ok
}

func (s linState) with(addr string) linState {
	i, ok := slices.BinarySearch(s, addr)
	if ok {
		return s
	}
	out := make(linState, 0, len(s)+1)
	out = append(out, s[:i]...)
	out = append(out, addr)
	return append(out, s[i:]...)
}

func (s linState) without(addr string) linState {
	i, ok := slices.BinarySearch(s, addr)
	if !ok {
		return s
	}
	out := make(linState, 0, len(s)-1)
	out = append(out, s[:i]...)
	return append(out, s[i+1:]...)
}

// ServiceModel is the sequential specification a service's register,
// unregister and consistent-list history is checked against. The state is the
// set of registered addresses (attributes are ignored).
//
//   - register(a) → ok: a is added (registering again changes nothing here).
//   - unregister(a) → ok: a must be present; it is removed.
//   - unregister(a) → not_found: a must be absent; nothing changes.
//   - clist() → L: L must equal the state.
//   - a write with an unknown outcome either happened or did not: both
//     successor states are kept (a nondeterministic step).
func ServiceModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{linState{}} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(linState), input.(linInput), output.(linOutput)
			switch in.Kind {
			case history.Register:
				switch out.Res {
				case resOK:
					return []any{s.with(in.Addr)}
				case resUnknown:
					return []any{s, s.with(in.Addr)}
				}
			case history.Unregister:
				switch out.Res {
				case resOK:
					if s.has(in.Addr) {
						return []any{s.without(in.Addr)}
					}
				case resNotFound:
					if !s.has(in.Addr) {
						return []any{s}
					}
				case resUnknown:
					return []any{s, s.without(in.Addr)}
				}
			case history.CList:
				if slices.Equal(s, out.List) {
					return []any{s}
				}
			}
			return nil
		},
		Equal: func(a, b any) bool { return slices.Equal(a.(linState), b.(linState)) },
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			for _, a := range state.(linState) {
				h.Write([]byte(a))
				h.Write([]byte{0})
			}
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linInput), output.(linOutput)
			if in.Kind == history.CList {
				return fmt.Sprintf("clist() → [%s]", strings.Join(out.List, " "))
			}
			res := out.Res
			if res == resUnknown {
				res = "? (unknown outcome)"
			}
			return fmt.Sprintf("%s(%s) → %s", in.Kind, in.Addr, res)
		},
		DescribeState: func(state any) string {
			return "{" + strings.Join(state.(linState), " ") + "}"
		},
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			return fmt.Sprint(info)
		},
	}
	return nm.ToModel()
}

// linOps returns the porcupine operations of one service's ops, with the
// opCollector gathers the porcupine operations of one service and the ops
// they came from; clients get small ids in order of first call.
type opCollector struct {
	clients map[string]int
	out     []porcupine.Operation
	src     []history.Op
}

func (c *opCollector) add(op history.Op, in, res any, ret int64) {
	if c.clients == nil {
		c.clients = map[string]int{}
	}
	id, ok := c.clients[op.Client]
	if !ok {
		id = len(c.clients)
		c.clients[op.Client] = id
	}
	c.out = append(c.out, porcupine.Operation{ClientId: id, Input: in, Call: op.Call, Output: res, Return: ret,
		Metadata: fmt.Sprintf("op %d, client %s, node %s, index %d, request %s, %s %s",
			op.ID, op.Client, op.Node, op.Index, op.RequestID, op.Outcome, op.Code)})
	c.src = append(c.src, op)
}

// history ops they stand for (same order).
func linOps(ops []history.Op, lv *logView, resolved *resolution) ([]porcupine.Operation, []history.Op) {
	sorted := make([]history.Op, len(ops))
	copy(sorted, ops)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Call != sorted[j].Call {
			return sorted[i].Call < sorted[j].Call
		}
		return sorted[i].ID < sorted[j].ID
	})
	var c opCollector
	for _, op := range sorted {
		in := linInput{Kind: op.Kind, Addr: op.Addr}
		var res linOutput
		ret := op.Return
		switch op.Kind {
		case history.Register, history.Unregister:
			switch {
			case op.Outcome == history.OK:
				res.Res = resOK
			case op.Outcome == history.Unknown:
				r, at, ok := lv.resolve(op)
				switch {
				case !ok:
					res.Res, ret = resUnknown, unknownReturn
					resolved.open++
				case r == "":
					resolved.never++
					continue // never committed: it did not happen
				default:
					res.Res, ret = r, max(at, op.Call+1)
					resolved.applied++
				}
			case op.Kind == history.Unregister && op.Outcome == history.Fail && op.Code == "not_found":
				res.Res = resNotFound
			default:
				continue // failed: it did not happen
			}
		case history.CList:
			if op.Outcome != history.OK {
				continue // a read that did not answer says nothing
			}
			res.List = slices.Clone(op.Result)
			if res.List == nil {
				res.List = []string{}
			}
			sort.Strings(res.List)
		default:
			continue
		}
		c.add(op, in, res, ret)
	}
	return c.out, c.src
}

// Linearizable checks, per service, that the register, unregister and
// consistent-list (CList) operations are linearizable against ServiceModel,
// with porcupine. List (default, local reads), Heartbeat and Stop ops take no
// part.
//
// Only services in which nothing can expire are checked: a service with any
// Register op carrying a TTL under 1 h is skipped (noted). Outcomes:
// ok ops are kept as they are; fail ops are dropped (they did not happen),
// except an unregister that failed with code not_found, which asserts the
// address was absent; unknown writes are kept with Return = MaxInt64 (they
// may take effect any time after their call) and an output the model takes
// as happened or not; unknown reads are dropped. Client ids become small ints
// per service, in order of first call.
//
// Each service gets porcupine.CheckOperationsVerbose with the given timeout.
// Illegal is a violation, and so is Unknown (the checker timed out): an
// unfinished check is not a pass. For an Illegal service the violation names,
// when it can, a consistent list that missed an address whose registration
// was acknowledged before the list began (or showed one whose unregistration
// was), else the first operation no partial linearization reached.
//
// The returned results (one per checked service with at least one op, by
// service name) feed Visualize.
func Linearizable(run *history.Run, timeout time.Duration) (Verdict, []ServiceResult) {
	v := newVerdict(NameLinearizable)
	byService := map[string][]history.Op{}
	shortTTL := map[string]bool{}
	for _, op := range run.Ops {
		switch op.Kind {
		case history.Register, history.Unregister, history.CList:
		default:
			continue
		}
		byService[op.Service] = append(byService[op.Service], op)
		if op.Kind == history.Register && op.TTLMillis < linTTLMillis {
			shortTTL[op.Service] = true
		}
	}
	lv := newLogView(run)
	var resolved resolution
	var results []ServiceResult
	for _, svc := range sortedKeys(byService) {
		if shortTTL[svc] {
			v.note("service %s skipped: it has registrations with a TTL under 1h, so instances may expire", svc)
			v.Stats["services_skipped"]++
			continue
		}
		ops, src := linOps(byService[svc], lv, &resolved)
		if len(ops) == 0 {
			continue
		}
		model := ServiceModel()
		res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
		results = append(results, ServiceResult{Service: svc, Result: res, Info: info, Model: model, Ops: len(ops)})
		v.Stats["services"]++
		v.Stats["ops"] += len(ops)
		switch res {
		case porcupine.Ok:
		case porcupine.Unknown:
			v.fail(Violation{Service: svc, Msg: fmt.Sprintf("checker timed out after %s on %d operations: linearizability unknown", timeout, len(ops))})
		default:
			x := explainIllegal(svc, ops, src, info)
			v.fail(x)
		}
	}
	if n := resolved.applied + resolved.never + resolved.open; n > 0 {
		v.note("%d unknown-outcome writes: %d found applied in the journals (taking effect by their first apply), %d never committed (dropped), %d left open",
			n, resolved.applied, resolved.never, resolved.open)
	}
	v.Stats["unknown_resolved"] = resolved.applied + resolved.never
	v.Stats["unknown_open"] = resolved.open
	return v.done(), results
}

// resolution counts what became of unknown-outcome writes.
type resolution struct{ applied, never, open int }

// resolve settles an unknown-outcome write against the committed log. Its
// request id names exactly one logical write, so:
//   - found: it happened, with the journal's result (ok, or not_found for an
//     unregistration of an absent instance), and it took effect no later
//     than the earliest time any node applied it — every consistent read
//     that started after that must see it;
//   - not found, and the journals cover the whole log up to the run's final
//     index with no unexplained gap: it never committed (result "");
//   - otherwise ok is false and the write stays open (may have happened any
//     time after its call).
func (lv *logView) resolve(op history.Op) (result string, at int64, ok bool) {
	if op.RequestID == "" {
		return "", 0, false
	}
	if idx := lv.byReq[op.RequestID]; len(idx) > 0 {
		sl := lv.slots[idx[0]]
		if sl.e.Err != "" {
			return resNotFound, sl.firstAt, true
		}
		return resOK, sl.firstAt, true
	}
	if len(lv.gaps) > 0 || lv.final == 0 || len(lv.idx) == 0 {
		return "", 0, false // the journals may not hold everything that committed
	}
	return "", 0, true
}

// explainIllegal builds the violation for a service porcupine found not
// linearizable, pointing at the most likely culprit.
func explainIllegal(svc string, ops []porcupine.Operation, src []history.Op, info porcupine.LinearizationInfo) Violation {
	x := Violation{Service: svc}
	if op, addr, why, ok := staleRead(src); ok {
		x.Addr, x.Index, x.Node, x.At = addr, op.Index, op.Node, op.Call
		x.Msg = fmt.Sprintf("not linearizable: consistent list (op %d, client %s, index %d) %s", op.ID, op.Client, op.Index, why)
		return x
	}
	covered := map[int]bool{}
	for _, part := range info.PartialLinearizations() {
		for _, lin := range part {
			for _, id := range lin {
				covered[id] = true
			}
		}
	}
	for i := range ops { // sorted by call
		if covered[i] {
			continue
		}
		op := src[i]
		x.Addr, x.Index, x.Node, x.At = op.Addr, op.Index, op.Node, op.Call
		x.Msg = fmt.Sprintf("not linearizable: no linearization reaches %s (op %d, client %s)",
			ServiceModel().DescribeOperation(ops[i].Input, ops[i].Output), op.ID, op.Client)
		return x
	}
	x.Msg = "not linearizable"
	return x
}

// staleRead looks for the plainest linearizability failure: a consistent
// list that misses an address certainly registered throughout it, or shows
// one certainly unregistered throughout it. For each list and address it
// takes the acknowledged write that returned before the list was called
// and was called last (the one that leaves the least room for interference),
// and asks whether any write of the opposite kind that may have taken effect
// could fall between that write's call and the list's return.
func staleRead(ops []history.Op) (history.Op, string, string, bool) {
	byAddr := map[string][]history.Op{}
	for _, o := range ops {
		if o.Kind == history.Register || o.Kind == history.Unregister {
			byAddr[o.Addr] = append(byAddr[o.Addr], o)
		}
	}
	addrs := sortedKeys(byAddr)
	for _, l := range ops {
		if l.Kind != history.CList || l.Outcome != history.OK {
			continue
		}
		listed := map[string]bool{}
		for _, a := range l.Result {
			listed[a] = true
		}
		for _, addr := range addrs {
			var last *history.Op
			for i, o := range byAddr[addr] {
				if o.Outcome != history.OK || o.Return >= l.Call {
					continue
				}
				if listed[addr] == (o.Kind == history.Unregister) && (last == nil || o.Call > last.Call) {
					last = &byAddr[addr][i]
				}
			}
			if last == nil {
				continue
			}
			interferes := false
			for _, o := range byAddr[addr] {
				if o.Kind == last.Kind || o.Outcome == history.Fail {
					continue
				}
				ret := o.Return
				if o.Outcome == history.Unknown {
					ret = unknownReturn
				}
				if ret >= last.Call && o.Call <= l.Return {
					interferes = true
					break
				}
			}
			if interferes {
				continue
			}
			if last.Kind == history.Register {
				return l, addr, fmt.Sprintf("misses %s, whose registration (op %d, index %d) was acknowledged before the list was called", addr, last.ID, last.Index), true
			}
			return l, addr, fmt.Sprintf("shows %s, whose unregistration (op %d, index %d) was acknowledged before the list was called", addr, last.ID, last.Index), true
		}
	}
	return history.Op{}, "", "", false
}

// Visualize writes porcupine's HTML visualization of each service result
// with at least one operation into dir (created if needed), with the faults
// as annotations tagged "faults", and returns the files written, in service
// order. Files are named linearizability-<service>.html.
func Visualize(results []ServiceResult, faults []history.Fault, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var anns []porcupine.Annotation
	for _, f := range faults {
		end := f.End
		if end < f.Start {
			end = f.Start
		}
		details := fmt.Sprintf("%s from %s to %s", f.Name, time.Unix(0, f.Start).UTC().Format("15:04:05.000"),
			time.Unix(0, end).UTC().Format("15:04:05.000"))
		if len(f.Nodes) > 0 {
			details += ", nodes " + strings.Join(f.Nodes, ",")
		}
		if f.Detail != "" {
			details += ": " + f.Detail
		}
		anns = append(anns, porcupine.Annotation{Tag: "faults", Start: f.Start, End: end, Description: f.Name,
			Details: details, BackgroundColor: "#f6d3d3"})
	}
	sorted := make([]ServiceResult, len(results))
	copy(sorted, results)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Service < sorted[j].Service })
	var paths []string
	used := map[string]bool{}
	for _, r := range sorted {
		if r.Ops == 0 {
			continue
		}
		base := "linearizability-" + fileSafe(r.Service)
		name := base + ".html"
		for n := 2; used[name]; n++ {
			name = fmt.Sprintf("%s-%d.html", base, n)
		}
		used[name] = true
		info := r.Info // AddAnnotations appends to a fresh slice in this copy
		info.AddAnnotations(anns)
		path := filepath.Join(dir, name)
		if err := porcupine.VisualizePath(r.Model, info, path); err != nil {
			return paths, fmt.Errorf("visualize %s: %w", r.Service, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// fileSafe keeps letters, digits, '.', '-' and '_' of a name.
func fileSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
