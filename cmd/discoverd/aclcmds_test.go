package main

import (
	"bufio"
	"encoding/json"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/wire"
)

const (
	testAccessor  = "2b6f0d5e-8c1a-4f0e-9d43-6a1c2b7e9f10"
	testCred      = testAccessor + ".kJ3secretQw"
	otherAccessor = "7c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
	otherCred     = otherAccessor + ".0therSecret"
	unknownCred   = "11111111-1111-4111-8111-111111111111.n0pe"
)

// aclNode is a fake node that speaks just enough of the protocol to answer
// the ACL methods as a cluster with ACLs on would, remembering each
// request's method, header token and body.
type aclNode struct {
	addr  string
	conns atomic.Int32

	mu     sync.Mutex
	reqs   []aclRequest
	tokens map[string]wire.ACLToken
	booted bool
}

type aclRequest struct {
	method, token string
	body          any
}

func newACLNode(t *testing.T) *aclNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &aclNode{addr: ln.Addr().String(), tokens: map[string]wire.ACLToken{
		"anonymous": {AccessorID: "anonymous", Description: "anonymous", Rules: []string{}, CreateIndex: 3, ModifyIndex: 3},
		testAccessor: {AccessorID: testAccessor, Description: "web deploys", Rules: []string{`service "web*" write`, "operator read"},
			ExpiresAtMillis: time.Date(2027, 1, 6, 12, 0, 0, 0, time.UTC).UnixMilli(), CreateIndex: 4, ModifyIndex: 9},
		otherAccessor: {AccessorID: otherAccessor, Description: "dashboards", Rules: []string{`service "*" read`}, CreateIndex: 7, ModifyIndex: 7},
	}}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			n.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				n.serve(nc)
			}()
		}
	}()
	return n
}

func (n *aclNode) serve(nc net.Conn) {
	br := bufio.NewReader(nc)
	if _, err := br.ReadByte(); err != nil {
		return
	}
	for {
		fr, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
		if err != nil {
			return
		}
		if fr.Header.Method == wire.MethodCancel {
			continue
		}
		body, err := n.answer(fr)
		hdr := &wire.Header{Seq: fr.Header.Seq}
		if err != nil {
			hdr, body = wire.ErrorHeader(fr.Header.Seq, err), nil
		}
		if err := wire.WriteFrame(nc, hdr, body, 0); err != nil {
			return
		}
	}
}

func (n *aclNode) answer(fr *wire.Frame) (any, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	req := aclRequest{method: fr.Header.Method, token: fr.Header.Token}
	defer func() { n.reqs = append(n.reqs, req) }()
	who, _, _ := strings.Cut(fr.Header.Token, ".")
	switch fr.Header.Method {
	case wire.MethodACLBootstrap:
		if n.booted {
			return nil, codes.Errorf(codes.ErrRefused, "ACLs were bootstrapped already, at index 5: use the management token it printed")
		}
		n.booted = true
		t := wire.ACLToken{AccessorID: testAccessor, Description: "management", Rules: []string{`service "*" write`, "operator write", "acl write"}, CreateIndex: 5, ModifyIndex: 5}
		return &wire.ACLTokenSecret{Token: t, Secret: testCred, Index: 5}, nil
	case wire.MethodACLTokenCreate:
		var r wire.ACLTokenCreateRequest
		_ = fr.Decode(&r)
		req.body = r
		t := wire.ACLToken{AccessorID: "7c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", Description: r.Description, Rules: r.Rules, CreateIndex: 10, ModifyIndex: 10}
		if r.ExpiresInMillis > 0 {
			t.ExpiresAtMillis = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() + r.ExpiresInMillis
		}
		return &wire.ACLTokenSecret{Token: t, Secret: otherCred, Index: 10}, nil
	case wire.MethodACLTokenList:
		list := []wire.ACLToken{n.tokens[testAccessor], n.tokens["anonymous"]}
		expired := list[0]
		expired.AccessorID, expired.Description, expired.Rules, expired.Expired = "00000000-0000-4000-8000-000000000000", "", nil, true
		return &wire.ACLTokenListResponse{Tokens: append([]wire.ACLToken{expired}, list...), Index: 9}, nil
	case wire.MethodACLTokenRead:
		var r wire.ACLTokenIDRequest
		_ = fr.Decode(&r)
		req.body = r
		t, ok := n.tokens[r.AccessorID]
		if !ok {
			return nil, codes.Errorf(codes.ErrNotFound, "no token has accessor id %s", r.AccessorID)
		}
		return &wire.ACLTokenResponse{Token: t, Index: 9}, nil
	case wire.MethodACLTokenUpdate:
		var r wire.ACLTokenUpdateRequest
		_ = fr.Decode(&r)
		req.body = r
		t, ok := n.tokens[r.AccessorID]
		if !ok {
			return nil, codes.Errorf(codes.ErrNotFound, "no token has accessor id %s", r.AccessorID)
		}
		t.Description, t.Rules, t.ModifyIndex = r.Description, r.Rules, 11
		n.tokens[r.AccessorID] = t
		return &wire.ACLTokenResponse{Token: t, Index: 11}, nil
	case wire.MethodACLTokenDelete:
		var r wire.ACLTokenIDRequest
		_ = fr.Decode(&r)
		req.body = r
		delete(n.tokens, r.AccessorID)
		return &wire.WriteResponse{Index: 12}, nil
	case wire.MethodACLWhoAmI:
		if who == "" {
			return &wire.ACLWhoAmIResponse{Token: n.tokens["anonymous"], Anonymous: true}, nil
		}
		t, ok := n.tokens[who]
		if !ok {
			return nil, codes.Errorf(codes.ErrPermissionDenied, "the token is not known: it was deleted, or its secret is wrong")
		}
		return &wire.ACLWhoAmIResponse{Token: t}, nil
	}
	return nil, codes.Errorf(codes.ErrUnknownMethod, "fake node: %s", fr.Header.Method)
}

func (n *aclNode) requests() []aclRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]aclRequest(nil), n.reqs...)
}

// TestCLI_ACLUsageErrors: every acl subcommand refuses bad input with exit
// status 2 and a message saying what is wrong, before it dials anything.
func TestCLI_ACLUsageErrors(t *testing.T) {
	n := newACLNode(t)
	long := strings.Repeat("d", 257)
	cases := []struct {
		args []string
		want string
	}{
		// The dispatchers (given no -servers below).
		{[]string{"acl"}, "usage: discoverd acl bootstrap"},
		{[]string{"acl", "frob"}, `acl "frob": want bootstrap, token or whoami`},
		{[]string{"acl", "token"}, "usage: discoverd acl token create"},
		{[]string{"acl", "token", "frob"}, `acl token "frob": want create, list, show, update or delete`},
		{[]string{"acl", "bootstrap", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"acl", "bootstrap", "-jsn"}, "flag provided but not defined: -jsn"},
		{[]string{"acl", "whoami", "extra"}, "unexpected arguments"},
		{[]string{"acl", "token", "list", "extra"}, "unexpected arguments"},
		{[]string{"acl", "token", "create", "-rule", `service web write`}, "the service pattern goes in double quotes"},
		{[]string{"acl", "token", "create", "-rule", `service "web" admin`}, `access "admin" is neither read nor write`},
		{[]string{"acl", "token", "create", "-rule", `service "w*b" read`}, "'*' may only end the pattern"},
		{[]string{"acl", "token", "create", "-rule", `cluster write`}, `unknown resource "cluster"`},
		{[]string{"acl", "token", "create", "-rule", ""}, "empty"},
		{[]string{"acl", "token", "create", "-expires", "0s"}, "0s is out of range"},
		{[]string{"acl", "token", "create", "-expires", "-1h"}, "-1h0m0s is out of range"},
		{[]string{"acl", "token", "create", "-expires", "720"}, `"720" has no unit: did you mean 720h?`},
		{[]string{"acl", "token", "create", "-expires", "a month"}, "is not a duration"},
		{[]string{"acl", "token", "create", "-expires", "100000h"}, "is out of range"},
		{[]string{"acl", "token", "create", "-description", long}, "description is 257 bytes, the limit is 256"},
		{[]string{"acl", "token", "show"}, "-id is required"},
		{[]string{"acl", "token", "show", "-id", "web"}, `accessor id "web" is not a token's accessor id`},
		{[]string{"acl", "token", "update", "-rule", "acl read"}, "-id is required"},
		{[]string{"acl", "token", "update", "-id", "anonymous"}, "nothing to change: give -description, -rule or -clear-rules"},
		{[]string{"acl", "token", "update", "-id", "anonymous", "-rule", "acl read", "-clear-rules"}, "-clear-rules and -rule together"},
		{[]string{"acl", "token", "update", "-id", "anonymous", "-rule", "acl root"}, `access "root" is neither read nor write`},
		{[]string{"acl", "token", "update", "-id", "anonymous", "-description", long}, "description is 257 bytes"},
		{[]string{"acl", "token", "delete"}, "-id is required"},
		{[]string{"acl", "token", "delete", "-id", "anonymous"}, "the anonymous token cannot be deleted"},
		{[]string{"acl", "token", "delete", "-id", testCred}, "not the token itself"},
		{[]string{"acl", "whoami", "-token", "garbage"}, "-token is not a token: a token is <accessor id>.<secret>"},
		{[]string{"services", "-token", testAccessor}, "-token is not a token"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append(append([]string{}, tc.args...), "-servers", n.addr)
			if len(tc.args) < 3 && !slices.Contains(tc.args, "bootstrap") && !slices.Contains(tc.args, "whoami") {
				args = tc.args // a dispatcher: it takes no flags
			}
			code, _, stderr := runCLI(t, args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 saying %q", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "kJ3secretQw") {
				t.Fatalf("stderr shows the secret: %q", stderr)
			}
		})
	}
	if code, _, stderr := runCLI(t, "acl", "token", "create", "-servers", n.addr, "-rule"); code != 2 || !strings.Contains(stderr, "flag needs an argument: -rule") {
		t.Fatalf("-rule without a value: exit %d, stderr %q", code, stderr)
	}
	if c := n.conns.Load(); c != 0 {
		t.Fatalf("usage errors dialled the node %d times: they must send nothing", c)
	}
	t.Run("$DISCOVERD_TOKEN", func(t *testing.T) {
		t.Setenv("DISCOVERD_TOKEN", "not-a-token")
		code, _, stderr := runCLI(t, "acl", "whoami", "-servers", n.addr)
		if code != 2 || !strings.Contains(stderr, "$DISCOVERD_TOKEN is not a token") || strings.Contains(stderr, "not-a-token") {
			t.Fatalf("exit %d, stderr %q; want exit 2 naming $DISCOVERD_TOKEN, not its value", code, stderr)
		}
	})
}

// TestCLI_TokenFlagAndEnvironment: the token a command sends is -token if
// given (even an empty one: none), else $DISCOVERD_TOKEN, else none; every
// client command has -token, and its help never shows the variable's value.
func TestCLI_TokenFlagAndEnvironment(t *testing.T) {
	n := newACLNode(t)
	whoami := func(args ...string) (string, aclRequest) {
		t.Helper()
		code, stdout, stderr := runCLI(t, append([]string{"acl", "whoami", "-servers", n.addr}, args...)...)
		if code != 0 {
			t.Fatalf("acl whoami %q: exit %d: %s", args, code, stderr)
		}
		reqs := n.requests()
		return stdout, reqs[len(reqs)-1]
	}

	t.Setenv("DISCOVERD_TOKEN", "")
	out, req := whoami()
	if req.token != "" || !strings.Contains(out, "no token presented") || !strings.Contains(out, "accessor id   anonymous") {
		t.Fatalf("no token anywhere: sent %q, printed\n%s", req.token, out)
	}
	out, req = whoami("-token", testCred)
	if req.token != testCred || !strings.Contains(out, "accessor id   "+testAccessor) || strings.Contains(out, "no token presented") {
		t.Fatalf("-token: sent %q, printed\n%s", req.token, out)
	}

	t.Setenv("DISCOVERD_TOKEN", testCred)
	if _, req = whoami(); req.token != testCred {
		t.Fatalf("$DISCOVERD_TOKEN: sent %q, want it", req.token)
	}
	if _, req = whoami("-token", otherCred); req.token != otherCred {
		t.Fatalf("-token with $DISCOVERD_TOKEN set: sent %q, want -token's", req.token)
	}
	if _, req = whoami("-token", ""); req.token != "" {
		t.Fatalf("-token '' with $DISCOVERD_TOKEN set: sent %q, want none", req.token)
	}
	if _, req = whoami("-token=" + otherCred + "\n"); req.token != otherCred {
		t.Fatalf("-token with a trailing newline: sent %q", req.token)
	}

	// A token the cluster does not know: permission_denied, exit 1.
	code, _, stderr := runCLI(t, "acl", "whoami", "-servers", n.addr, "-token", unknownCred)
	if code != 1 || !strings.Contains(stderr, "the token is not known") {
		t.Fatalf("unknown token: exit %d, stderr %q", code, stderr)
	}

	// Every command that talks to a cluster takes -token; no help shows
	// the variable's value.
	for _, cmd := range [][]string{{"register"}, {"unregister"}, {"services"}, {"watch"}, {"leader"}, {"status"},
		{"meta", "get"}, {"meta", "set"}, {"meta", "delete"}, {"members"}, {"members", "add"}, {"members", "remove"},
		{"members", "promote"}, {"members", "demote"}, {"snapshot", "save"}, {"snapshot", "restore"},
		{"acl", "bootstrap"}, {"acl", "whoami"}, {"acl", "token", "create"}, {"acl", "token", "list"},
		{"acl", "token", "show"}, {"acl", "token", "update"}, {"acl", "token", "delete"}} {
		code, stdout, stderr := runCLI(t, append(cmd, "-h")...)
		help := stdout + stderr
		if code != 0 || !strings.Contains(help, "  -token token\n") || !strings.Contains(help, "$DISCOVERD_TOKEN") {
			t.Errorf("%s -h: exit %d, no -token flag:\n%s", strings.Join(cmd, " "), code, help)
		}
		if strings.Contains(help, "kJ3secretQw") {
			t.Errorf("%s -h shows $DISCOVERD_TOKEN's secret", strings.Join(cmd, " "))
		}
	}
}

// TestCLI_ACLCommands runs each acl subcommand against the fake node: what
// it sends and what it prints.
func TestCLI_ACLCommands(t *testing.T) {
	n := newACLNode(t)
	last := func() aclRequest {
		reqs := n.requests()
		return reqs[len(reqs)-1]
	}
	cli := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(t, append(args, "-servers", n.addr, "-token", testCred)...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		return stdout
	}

	// bootstrap: the accessor id and the secret, once; a second is refused.
	out := cli("acl", "bootstrap")
	want := "accessor id  " + testAccessor + "\ntoken        " + testCred + "\n\n" +
		`This is the management token (service "*" write, operator write, acl write).` + "\n" +
		"It is shown this once: keep it in your secret store.\n  export DISCOVERD_TOKEN=" + testCred + "\n"
	if out != want {
		t.Fatalf("acl bootstrap printed\n%s\nwant\n%s", out, want)
	}
	code, stdout, stderr := runCLI(t, "acl", "bootstrap", "-servers", n.addr)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "ACLs were bootstrapped already") {
		t.Fatalf("second bootstrap: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	n.mu.Lock()
	n.booted = false
	n.mu.Unlock()
	var boot client.ACLTokenSecret
	if err := json.Unmarshal([]byte(cli("acl", "bootstrap", "-json")), &boot); err != nil || boot.Secret != testCred || boot.Token.AccessorID != testAccessor {
		t.Fatalf("acl bootstrap -json: %+v, %v", boot, err)
	}

	// create: the rules as given, -expires in ms, the secret once.
	out = cli("acl", "token", "create", "-description", "dashboards", "-rule", `service "*" read`, "-rule", "operator read", "-expires", "720h")
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenCreateRequest{Description: "dashboards", Rules: []string{`service "*" read`, "operator read"},
		ExpiresInMillis: (720 * time.Hour).Milliseconds()}) {
		t.Fatalf("acl token create sent %+v", r.body)
	}
	for _, w := range []string{"accessor id  7c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6\n", "token        " + otherCred + "\n",
		`Its rules: service "*" read; operator read; it expires: 2027-01-31T00:00:00Z.`, "It is shown this once", "export DISCOVERD_TOKEN=" + otherCred} {
		if !strings.Contains(out, w) {
			t.Fatalf("acl token create printed\n%s\nwant %q in it", out, w)
		}
	}
	cli("acl", "token", "create")
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenCreateRequest{Rules: []string{}}) {
		t.Fatalf("acl token create without flags sent %+v", r.body)
	}

	// list: the table.
	out = cli("acl", "token", "list")
	wantTable := "ACCESSOR ID                           DESCRIPTION  RULES                                EXPIRES\n" +
		"00000000-0000-4000-8000-000000000000  -            (none)                               2027-01-06T12:00:00Z (expired)\n" +
		testAccessor + `  web deploys  service "web*" write; operator read  2027-01-06T12:00:00Z` + "\n" +
		"anonymous                             anonymous    (none)                               never\n" +
		"3 tokens at index 9\n"
	if out != wantTable {
		t.Fatalf("acl token list printed\n%s\nwant\n%s", out, wantTable)
	}
	var list struct {
		Tokens []client.ACLToken `json:"tokens"`
		Index  uint64            `json:"index"`
	}
	if err := json.Unmarshal([]byte(cli("acl", "token", "list", "-json")), &list); err != nil || list.Index != 9 || len(list.Tokens) != 3 || !list.Tokens[0].Expired {
		t.Fatalf("acl token list -json: %+v, %v", list, err)
	}

	// show.
	out = cli("acl", "token", "show", "-id", testAccessor)
	wantShow := "accessor id   " + testAccessor + "\ndescription   web deploys\nrules         service \"web*\" write\n" +
		"              operator read\nexpires       2027-01-06T12:00:00Z\ncreate index  4\nmodify index  9\n"
	if out != wantShow {
		t.Fatalf("acl token show printed\n%s\nwant\n%s", out, wantShow)
	}
	code, _, stderr = runCLI(t, "acl", "token", "show", "-id", "11111111-1111-4111-8111-111111111111", "-servers", n.addr)
	if code != 1 || !strings.Contains(stderr, "no token has accessor id 11111111-1111-4111-8111-111111111111") {
		t.Fatalf("show of a missing token: exit %d, stderr %q", code, stderr)
	}

	// update: what is not given stays.
	cli("acl", "token", "update", "-id", testAccessor, "-description", "web and api deploys")
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenUpdateRequest{AccessorID: testAccessor, Description: "web and api deploys",
		Rules: []string{`service "web*" write`, "operator read"}}) {
		t.Fatalf("update -description sent %+v: the rules must stay", r.body)
	}
	out = cli("acl", "token", "update", "-id", testAccessor, "-rule", `service "api*" write`)
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenUpdateRequest{AccessorID: testAccessor, Description: "web and api deploys",
		Rules: []string{`service "api*" write`}}) {
		t.Fatalf("update -rule sent %+v: the description must stay, the rules be replaced", r.body)
	}
	if !strings.HasPrefix(out, "updated token "+testAccessor+"\naccessor id   "+testAccessor) || !strings.Contains(out, `rules         service "api*" write`) {
		t.Fatalf("update printed\n%s", out)
	}
	cli("acl", "token", "update", "-id", testAccessor, "-clear-rules", "-description", "")
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenUpdateRequest{AccessorID: testAccessor, Rules: []string{}}) {
		t.Fatalf("update -clear-rules -description '' sent %+v", r.body)
	}
	cli("acl", "token", "update", "-id", "anonymous", "-rule", `service "public-*" read`)
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenUpdateRequest{AccessorID: "anonymous", Description: "anonymous", Rules: []string{`service "public-*" read`}}) {
		t.Fatalf("update -id anonymous sent %+v", r.body)
	}
	var upd client.ACLToken
	if err := json.Unmarshal([]byte(cli("acl", "token", "update", "-id", "anonymous", "-description", "public", "-json")), &upd); err != nil ||
		upd.Description != "public" || !reflect.DeepEqual(upd.Rules, []string{`service "public-*" read`}) {
		t.Fatalf("update -json: %+v, %v", upd, err)
	}

	// delete.
	if out := cli("acl", "token", "delete", "-id", testAccessor); out != "deleted token "+testAccessor+" at index 12\n" {
		t.Fatalf("delete printed %q", out)
	}
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenIDRequest{AccessorID: testAccessor}) {
		t.Fatalf("delete sent %+v", r.body)
	}

	// whoami -json.
	var who client.ACLWhoAmI
	code, stdout, stderr = runCLI(t, "acl", "whoami", "-json", "-servers", n.addr, "-token", "")
	if err := json.Unmarshal([]byte(stdout), &who); code != 0 || err != nil || !who.Anonymous || who.Token.AccessorID != "anonymous" {
		t.Fatalf("whoami -json: exit %d, %+v, %v, %s", code, who, err, stderr)
	}
}

// TestCLI_ACLCommandsUnreachable: the acl commands fail over and say so
// like the other client commands.
func TestCLI_ACLCommandsUnreachable(t *testing.T) {
	closed := closedAddr(t)
	for _, args := range [][]string{{"acl", "bootstrap"}, {"acl", "whoami"}, {"acl", "token", "list"},
		{"acl", "token", "create", "-rule", "acl read"}, {"acl", "token", "show", "-id", "anonymous"},
		{"acl", "token", "update", "-id", "anonymous", "-clear-rules"}, {"acl", "token", "delete", "-id", testAccessor}} {
		code, _, stderr := runCLI(t, append(args, "-servers", closed, "-timeout", "1s")...)
		if code != 1 || !strings.Contains(stderr, "no discoverd server reachable") {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestDev_ACLBootstrap: dev -acl bootstraps through the client and prints
// the management token and its export line; with a kept data dir whose
// cluster was bootstrapped before, it says where the token is instead.
func TestDev_ACLBootstrap(t *testing.T) {
	n := newACLNode(t)
	ctx := t.Context()
	lines, err := devBootstrap(ctx, []string{n.addr}, tlsutil.ClientFiles{})
	want := "ACLs on: management token " + testAccessor + ` (service "*" write, operator write, acl write); its secret is shown only now:` +
		"\nexport DISCOVERD_TOKEN=" + testCred + "\n"
	if err != nil || lines != want {
		t.Fatalf("devBootstrap = %q, %v; want %q", lines, err, want)
	}
	if r := n.requests(); len(r) != 1 || r[0].method != wire.MethodACLBootstrap || r[0].token != "" {
		t.Fatalf("sent %+v, want one bootstrap without a token", r)
	}
	lines, err = devBootstrap(ctx, []string{n.addr}, tlsutil.ClientFiles{})
	if err != nil || !strings.Contains(lines, "bootstrapped by an earlier run with this data dir") || strings.Contains(lines, testCred) {
		t.Fatalf("devBootstrap again = %q, %v; want it to say the cluster was bootstrapped before", lines, err)
	}
	if _, err := devBootstrap(ctx, []string{closedAddr(t)}, tlsutil.ClientFiles{}); err == nil || !strings.Contains(err.Error(), "ACL bootstrap") {
		t.Fatalf("devBootstrap of nothing: %v", err)
	}
}
