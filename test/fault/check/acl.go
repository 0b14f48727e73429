package check

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/discoverd/discoverd/test/fault/history"
)

// codePermissionDenied is the wire code of a denied call (internal/codes).
const codePermissionDenied = "permission_denied"

// ACL checks a run whose nodes ran with ACLs on (run.ACL set; without it
// there is nothing to check, and the verdict says so).
//
// Denials: every workload client presents one token, whose rules allow
// everything the workload does, and nothing in the run revokes or changes
// it (acl-churn only touches tokens it made and the anonymous token). So
// an operation that failed with permission_denied — a write, a heartbeat,
// a read — or a watch stream that ended with it is one violation each: the
// cluster denied a token what it allows (a stale or torn token table on
// some node, a forwarded request that lost its caller's token, a watch
// ended by a change to another token). A note sums them up.
//
// Agreement: after the final consistent read, once every node has applied
// the same index, every node's token list (ACLTokenList, its own table)
// must be the same: the same tokens with the same description, rules,
// expiry and indices, and the same index of the last change. A node that
// did not answer, or whose list differs from the first node's, is a
// violation; so is a list without the workload's token, or with other
// rules for it.
func ACL(run *history.Run) Verdict {
	v := newVerdict(NameACL)
	if run.ACL == nil {
		v.note("ACLs off: nothing to check")
		return v.done()
	}
	a := run.ACL
	short := a.WorkloadToken
	if len(short) > 8 {
		short = short[:8] + "…"
	}
	denied := 0
	for _, op := range run.Ops {
		if op.Code != codePermissionDenied {
			continue
		}
		denied++
		v.fail(Violation{Service: op.Service, Addr: op.Addr, Node: op.Node, Index: op.Index, At: op.Call,
			Msg: fmt.Sprintf("%s by %s denied to the workload's token %s, which allows it (%s): %s",
				op.Kind, op.Client, short, strings.Join(a.WorkloadRules, ", "), op.Err)})
	}
	for _, s := range run.Sessions {
		if s.Code != codePermissionDenied {
			continue
		}
		denied++
		v.fail(Violation{Service: s.Service, Node: s.Node, At: s.Closed,
			Msg: fmt.Sprintf("watch session %d of %s ended with permission_denied to the workload's token %s, which allows it: %s",
				s.Session, s.Watcher, short, s.End)})
	}
	v.Stats["ops"] = len(run.Ops)
	v.Stats["sessions"] = len(run.Sessions)
	v.Stats["denied"] = denied
	if denied > 0 {
		v.note("acl: %d operations denied to a token that allows them", denied)
	}
	checkTokenLists(v, a)
	return v.done()
}

// checkTokenLists compares every node's token list with the first one's.
func checkTokenLists(v *verdict, a *history.ACL) {
	v.Stats["lists"] = len(a.Lists)
	if len(a.Lists) == 0 {
		v.fail(Violation{Msg: "no node's token list was recorded: agreement on the tokens is unchecked"})
		return
	}
	lists := slices.Clone(a.Lists)
	sort.Slice(lists, func(i, j int) bool { return lists[i].Node < lists[j].Node })
	var ref *history.TokenList
	for i := range lists {
		l := &lists[i]
		if l.Err != "" {
			v.fail(Violation{Node: l.Node, Msg: "no token list from " + l.Node + ": " + l.Err})
			continue
		}
		if !hasWorkloadToken(l, a) {
			v.fail(Violation{Node: l.Node, Index: l.Index,
				Msg: fmt.Sprintf("%s's token list has no token %s with rules %q: the workload's token was revoked or changed", l.Node, a.WorkloadToken, a.WorkloadRules)})
		}
		if ref == nil {
			ref = l
			v.Stats["tokens"] = len(l.Tokens)
			continue
		}
		if d := tokenListDiff(ref, l); d != "" {
			v.fail(Violation{Node: ref.Node + "," + l.Node, Index: max(ref.Index, l.Index),
				Msg: fmt.Sprintf("token lists differ after the run: %s", d)})
		}
	}
}

func hasWorkloadToken(l *history.TokenList, a *history.ACL) bool {
	for _, t := range l.Tokens {
		if t.AccessorID == a.WorkloadToken {
			return slices.Equal(t.Rules, a.WorkloadRules)
		}
	}
	return false
}

// tokenListDiff describes how two nodes' lists differ ("" if they do not).
func tokenListDiff(a, b *history.TokenList) string {
	var d []string
	if a.Index != b.Index {
		d = append(d, fmt.Sprintf("last change at index %d on %s, %d on %s", a.Index, a.Node, b.Index, b.Node))
	}
	as, bs := map[string]history.Token{}, map[string]history.Token{}
	for _, t := range a.Tokens {
		as[t.AccessorID] = t
	}
	for _, t := range b.Tokens {
		bs[t.AccessorID] = t
	}
	for _, id := range sortedKeys(as) {
		tb, ok := bs[id]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s only on %s", describeToken(as[id]), a.Node))
		case describeToken(as[id]) != describeToken(tb):
			d = append(d, fmt.Sprintf("%s has %s, %s has %s", a.Node, describeToken(as[id]), b.Node, describeToken(tb)))
		}
	}
	for _, id := range sortedKeys(bs) {
		if _, ok := as[id]; !ok {
			d = append(d, fmt.Sprintf("%s only on %s", describeToken(bs[id]), b.Node))
		}
	}
	return strings.Join(d, "; ")
}

func describeToken(t history.Token) string {
	s := fmt.Sprintf("token %s %q rules %q created %d modified %d", t.AccessorID, t.Description, t.Rules, t.CreateIndex, t.ModifyIndex)
	if t.ExpiresAtMillis != 0 {
		s += fmt.Sprintf(" expires %d", t.ExpiresAtMillis)
	}
	return s
}
