package check

import (
	"bytes"
	"testing"

	"github.com/discoverd/discoverd/test/fault/history"
)

const workloadToken = "3f0c9a52-1b7e-4d0a-9c44-0e5f2d8b7a61"

// tokenList is one node's list: the anonymous, management and workload
// tokens, and whatever extra tokens are given.
func tokenList(node string, index uint64, extra ...history.Token) history.TokenList {
	toks := []history.Token{
		{AccessorID: "0b1e…mgmt", Description: "management", Rules: []string{`acl write`, `operator write`, `service "*" write`}, CreateIndex: 3, ModifyIndex: 3},
		{AccessorID: workloadToken, Description: "fault suite workload", Rules: []string{`service "*" write`}, CreateIndex: 4, ModifyIndex: 4},
		{AccessorID: "anonymous", Description: "anonymous", CreateIndex: 3, ModifyIndex: 40},
	}
	return history.TokenList{Node: node, Index: index, Tokens: append(toks, extra...)}
}

// aclRun is a run with ACLs on where nothing was denied and every node
// lists the same tokens, through the file format and back.
func aclRun(t *testing.T) *history.Run {
	run := &history.Run{
		Ops: []history.Op{
			opReg(1, "lin0-c0#0", "lin0", "a:1", "r1", 10, 20, history.OK, 5),
			opBeat(2, "ttl0-h0", "ttl0", "t:1", 30, 35, history.OK),
			{ID: 3, Client: "lin0-c1#0", Kind: history.Unregister, Service: "lin0", Addr: "b:1", Node: "n3", Call: at(40), Return: at(41),
				Outcome: history.Fail, Code: "not_found", Err: "not found"},
		},
		Sessions: []history.WatchSession{{Watcher: "w0", Service: "lin0", Node: "n2", Opened: at(0), Closed: at(50), End: "error: no leader", Code: "no_leader"}},
		ACL: &history.ACL{WorkloadToken: workloadToken, WorkloadRules: []string{`service "*" write`},
			Lists: []history.TokenList{tokenList("n1", 40), tokenList("n2", 40), tokenList("n3", 40)}},
	}
	var buf bytes.Buffer
	if err := history.Write(&buf, run); err != nil {
		t.Fatal(err)
	}
	back, err := history.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if back.ACL == nil || len(back.ACL.Lists) != 3 || back.Sessions[0].Code != "no_leader" {
		t.Fatalf("the ACL record did not survive the file format: %+v", back.ACL)
	}
	return back
}

func TestCheck_ACLOffNothingToCheck(t *testing.T) {
	run := aclRun(t)
	run.ACL = nil
	v := ACL(run)
	wantOK(t, v)
	wantNote(t, v, "ACLs off")
}

func TestCheck_ACLGood(t *testing.T) {
	v := ACL(aclRun(t))
	wantOK(t, v)
	if v.Stats["denied"] != 0 || v.Stats["lists"] != 3 || v.Stats["tokens"] != 3 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// The proof that the checker fails: a heartbeat and a registration denied
// to the workload's token, and a watch it ended, are a violation each.
func TestCheck_ACLDeniedIsAViolation(t *testing.T) {
	run := aclRun(t)
	run.Ops = append(run.Ops,
		history.Op{ID: 4, Client: "ttl0-h1", Kind: history.Heartbeat, Service: "ttl0", Addr: "t:2", Node: "n2", Call: at(60), Return: at(61),
			Outcome: history.Fail, Code: "permission_denied",
			Err: `permission denied: heartbeating in service "ttl0" needs the rule service "ttl0" write (or a prefix rule matching it), which token 3f0c9a52-… does not have`},
		history.Op{ID: 5, Client: "lin1-c0#0", Kind: history.Register, Service: "lin1", Addr: "c:1", Node: "n1", Call: at(70), Return: at(72),
			Outcome: history.Fail, Code: "permission_denied", Err: "permission denied: token 3f0c9a52-… is unknown"})
	run.Sessions = append(run.Sessions, history.WatchSession{Watcher: "w1", Session: 2, Service: "ttl0", Node: "n3", Opened: at(10), Closed: at(80),
		End: "error: permission denied: the token was deleted", Code: "permission_denied"})
	v := ACL(run)
	wantViolations(t, v,
		want{service: "ttl0", addr: "t:2", node: "n2", msg: "heartbeat by ttl0-h1 denied to the workload's token 3f0c9a52…, which allows it"},
		want{service: "lin1", addr: "c:1", node: "n1", msg: "register by lin1-c0#0 denied"},
		want{service: "ttl0", node: "n3", msg: "watch session 2 of w1 ended with permission_denied"},
	)
	wantNote(t, v, "acl: 3 operations denied to a token that allows them")
	if v.Stats["denied"] != 3 {
		t.Errorf("stats = %v", v.Stats)
	}
}

// Nodes that list different tokens after the run, one that did not
// answer, and one that lost the workload's token are violations.
func TestCheck_ACLListsDisagree(t *testing.T) {
	run := aclRun(t)
	extra := history.Token{AccessorID: "77aa…churn", Description: "acl-churn 12", Rules: []string{`acl read`}, CreateIndex: 30, ModifyIndex: 30}
	changed := extra
	changed.Rules = []string{`service "*" read`}
	n4 := tokenList("n4", 41)
	n4.Tokens = n4.Tokens[:1] // no workload token
	run.ACL.Lists = []history.TokenList{
		tokenList("n1", 41, extra),
		tokenList("n2", 40),
		tokenList("n3", 41, changed),
		{Node: "n5", Err: "timeout"},
		n4,
	}
	v := ACL(run)
	wantViolations(t, v,
		want{node: "n1,n2", index: 41, msg: "last change at index 41 on n1, 40 on n2; token 77aa…churn \"acl-churn 12\" rules [\"acl read\"] created 30 modified 30 only on n1"},
		want{node: "n1,n3", index: 41, msg: `n1 has token 77aa…churn "acl-churn 12" rules ["acl read"]`},
		want{node: "n4", index: 41, msg: "n4's token list has no token " + workloadToken},
		want{node: "n1,n4", index: 41, msg: "only on n1"},
		want{node: "n5", msg: "no token list from n5: timeout"},
	)

	run.ACL.Lists = nil
	wantViolations(t, ACL(run), want{msg: "no node's token list was recorded"})
}
