package client

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// fakeAccessor is the accessor id of the tokens a fakeServer hands out.
const fakeAccessor = "0b9d3c2e-6f1a-4c1e-9d7b-2a4f5e6d7c8b"

// fakeACL answers the ACL methods for a fakeServer, keeping the decoded
// request in req.body; ok is false for any other method.
func fakeACL(fr *wire.Frame, req *fakeRequest) (body any, ok bool) {
	tok := wire.ACLToken{AccessorID: fakeAccessor, Description: "fake", Rules: []string{`service "web" read`}, CreateIndex: 5, ModifyIndex: 6}
	switch fr.Header.Method {
	case wire.MethodACLBootstrap:
		var r wire.ACLBootstrapRequest
		_ = fr.Decode(&r)
		req.body = r
		mgmt := wire.ACLToken{AccessorID: fakeAccessor, Description: "management", Rules: []string{`service "*" write`, "operator write", "acl write"}, CreateIndex: 11, ModifyIndex: 11}
		return &wire.ACLTokenSecret{Token: mgmt, Secret: fakeAccessor + ".s3cret", Index: 11}, true
	case wire.MethodACLTokenCreate:
		var r wire.ACLTokenCreateRequest
		_ = fr.Decode(&r)
		req.body = r
		t := wire.ACLToken{AccessorID: fakeAccessor, Description: r.Description, Rules: r.Rules, CreateIndex: 12, ModifyIndex: 12}
		if r.ExpiresInMillis > 0 {
			t.ExpiresAtMillis = 1_000_000 + r.ExpiresInMillis
		}
		return &wire.ACLTokenSecret{Token: t, Secret: fakeAccessor + ".s3cret", Index: 12}, true
	case wire.MethodACLTokenUpdate:
		var r wire.ACLTokenUpdateRequest
		_ = fr.Decode(&r)
		req.body = r
		return &wire.ACLTokenResponse{Token: wire.ACLToken{AccessorID: r.AccessorID, Description: r.Description, Rules: r.Rules, CreateIndex: 5, ModifyIndex: 13}, Index: 13}, true
	case wire.MethodACLTokenDelete:
		var r wire.ACLTokenIDRequest
		_ = fr.Decode(&r)
		req.body = r
		return &wire.WriteResponse{Index: 14}, true
	case wire.MethodACLTokenList:
		anon := wire.ACLToken{AccessorID: "anonymous", Description: "anonymous", CreateIndex: 3, ModifyIndex: 3}
		return &wire.ACLTokenListResponse{Tokens: []wire.ACLToken{tok, anon}, Index: 15}, true
	case wire.MethodACLTokenRead:
		var r wire.ACLTokenIDRequest
		_ = fr.Decode(&r)
		req.body = r
		t := tok
		t.AccessorID = r.AccessorID
		return &wire.ACLTokenResponse{Token: t, Index: 16}, true
	case wire.MethodACLWhoAmI:
		if req.token == "" {
			return &wire.ACLWhoAmIResponse{Token: wire.ACLToken{AccessorID: "anonymous"}, Anonymous: true}, true
		}
		return &wire.ACLWhoAmIResponse{Token: tok}, true
	}
	return nil, false
}

// Config.Token goes in the header of every request the client makes: calls,
// heartbeats, watches, the backup's own connection and the ACL calls; a
// client without one sends none.
func TestClient_TokenInEveryRequestHeader(t *testing.T) {
	const cred = fakeAccessor + ".s3cret"
	for _, token := range []string{cred, ""} {
		t.Run("token="+token, func(t *testing.T) {
			t.Parallel()
			f := newFakeServer(t, false, "")
			beats := make(chan struct{}, 16)
			c := newTestClient(t, Config{Servers: []string{f.addr}, Token: token, RequestTimeout: 10 * time.Second,
				OnHeartbeat: func(_, _ string, err error) {
					if err == nil {
						beats <- struct{}{}
					}
				}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.RegisterAddr(ctx, "web", "10.0.0.1:80", nil, 1200*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			select {
			case <-beats:
			case <-ctx.Done():
				t.Fatal("no heartbeat within 10 s")
			}
			if _, _, err := c.Instances(ctx, "web", ListOptions{}); err != nil {
				t.Fatal(err)
			}
			w, err := c.Watch(ctx, "web", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Next(ctx); err != nil {
				t.Fatal(err)
			}
			w.Close()
			if _, err := c.SaveSnapshot(ctx, io.Discard); err == nil || !strings.Contains(err.Error(), "fake server keeps no state") {
				t.Fatalf("SaveSnapshot: %v, want the fake server's refusal", err)
			}
			who, err := c.ACLWhoAmI(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if who.Anonymous != (token == "") {
				t.Fatalf("whoami: anonymous %v with token %q", who.Anonymous, token)
			}
			seen := map[string]bool{}
			for _, r := range f.requests() {
				seen[r.method] = true
				if r.token != token {
					t.Errorf("%s carried token %q, want %q", r.method, r.token, token)
				}
			}
			for _, m := range []string{wire.MethodRegister, wire.MethodHeartbeat, wire.MethodList, wire.MethodWatch,
				wire.MethodStatus, wire.MethodSnapshotSave, wire.MethodACLWhoAmI} {
				if !seen[m] {
					t.Errorf("the server got no %s", m)
				}
			}
		})
	}
}

// Each ACL method sends its request and decodes its answer.
func TestClient_ACLMethodsEncodeAndDecode(t *testing.T) {
	f := newFakeServer(t, false, "")
	c := newTestClient(t, Config{Servers: []string{f.addr}, Token: "x.y"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last := func() fakeRequest {
		reqs := f.requests()
		return reqs[len(reqs)-1]
	}

	boot, err := c.ACLBootstrap(ctx)
	if err != nil || boot.Secret != fakeAccessor+".s3cret" || boot.Token.AccessorID != fakeAccessor || boot.Index != 11 ||
		!reflect.DeepEqual(boot.Token.Rules, []string{`service "*" write`, "operator write", "acl write"}) {
		t.Fatalf("ACLBootstrap = %+v, %v", boot, err)
	}
	if r := last(); r.method != wire.MethodACLBootstrap {
		t.Fatalf("sent %s", r.method)
	}

	created, err := c.ACLCreateToken(ctx, ACLTokenCreate{Description: "web deployer", Rules: []string{`service "web*" write`}, ExpiresIn: 90*time.Minute + 500*time.Microsecond})
	if err != nil || created.Secret == "" || created.Token.Description != "web deployer" || created.Index != 12 {
		t.Fatalf("ACLCreateToken = %+v, %v", created, err)
	}
	want := wire.ACLTokenCreateRequest{Description: "web deployer", Rules: []string{`service "web*" write`}, ExpiresInMillis: (90 * time.Minute).Milliseconds() + 1}
	if r := last(); r.method != wire.MethodACLTokenCreate || !reflect.DeepEqual(r.body, want) {
		t.Fatalf("sent %s %+v, want %+v (ExpiresIn rounded up to the millisecond)", r.method, r.body, want)
	}
	// No rules and no expiry: an empty list, and no expiry.
	if _, err := c.ACLCreateToken(ctx, ACLTokenCreate{Description: "nothing"}); err != nil {
		t.Fatal(err)
	}
	if r := last(); !reflect.DeepEqual(r.body, wire.ACLTokenCreateRequest{Description: "nothing", Rules: []string{}}) {
		t.Fatalf("sent %+v", r.body)
	}

	upd, err := c.ACLUpdateToken(ctx, ACLAnonymousID, "callers without a token", []string{`service "*" read`})
	if err != nil || upd.AccessorID != "anonymous" || upd.ModifyIndex != 13 || !reflect.DeepEqual(upd.Rules, []string{`service "*" read`}) {
		t.Fatalf("ACLUpdateToken = %+v, %v", upd, err)
	}
	if r := last(); r.method != wire.MethodACLTokenUpdate ||
		!reflect.DeepEqual(r.body, wire.ACLTokenUpdateRequest{AccessorID: "anonymous", Description: "callers without a token", Rules: []string{`service "*" read`}}) {
		t.Fatalf("sent %s %+v", r.method, r.body)
	}

	idx, err := c.ACLDeleteToken(ctx, fakeAccessor)
	if err != nil || idx != 14 {
		t.Fatalf("ACLDeleteToken = %d, %v", idx, err)
	}
	if r := last(); r.method != wire.MethodACLTokenDelete || !reflect.DeepEqual(r.body, wire.ACLTokenIDRequest{AccessorID: fakeAccessor}) {
		t.Fatalf("sent %s %+v", r.method, r.body)
	}

	list, idx, err := c.ACLTokens(ctx)
	if err != nil || idx != 15 || len(list) != 2 || list[0].AccessorID != fakeAccessor || list[1].AccessorID != "anonymous" {
		t.Fatalf("ACLTokens = %+v, %d, %v", list, idx, err)
	}

	tok, err := c.ACLToken(ctx, fakeAccessor)
	if err != nil || tok.AccessorID != fakeAccessor || tok.Description != "fake" {
		t.Fatalf("ACLToken = %+v, %v", tok, err)
	}
	if r := last(); r.method != wire.MethodACLTokenRead || !reflect.DeepEqual(r.body, wire.ACLTokenIDRequest{AccessorID: fakeAccessor}) {
		t.Fatalf("sent %s %+v", r.method, r.body)
	}

	who, err := c.ACLWhoAmI(ctx)
	if err != nil || who.Anonymous || who.Token.AccessorID != fakeAccessor {
		t.Fatalf("ACLWhoAmI = %+v, %v", who, err)
	}
	// A token without rules has an empty list, not nil (JSON: [], not null).
	if list[1].Rules == nil || len(list[1].Rules) != 0 {
		t.Fatalf("the anonymous token's rules: %#v, want an empty list", list[1].Rules)
	}
	anon := newTestClient(t, Config{Servers: []string{f.addr}})
	if who, err := anon.ACLWhoAmI(ctx); err != nil || !who.Anonymous || who.Token.Rules == nil {
		t.Fatalf("ACLWhoAmI without a token = %+v, %v; want anonymous, rules an empty list", who, err)
	}

	// Refused before anything is sent.
	n := len(f.requests())
	if _, err := c.ACLToken(ctx, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ACLToken(\"\") = %v, want ErrInvalidArgument", err)
	}
	if _, err := c.ACLUpdateToken(ctx, "", "", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ACLUpdateToken(\"\") = %v, want ErrInvalidArgument", err)
	}
	if _, err := c.ACLDeleteToken(ctx, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ACLDeleteToken(\"\") = %v, want ErrInvalidArgument", err)
	}
	if _, err := c.ACLCreateToken(ctx, ACLTokenCreate{ExpiresIn: -time.Second}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ACLCreateToken(ExpiresIn -1s) = %v, want ErrInvalidArgument", err)
	}
	if got := len(f.requests()); got != n {
		t.Fatalf("%d requests sent for invalid arguments", got-n)
	}
}

// aclWrites are the ACL writes, which carry no request id.
var aclWrites = []struct {
	method string
	call   func(ctx context.Context, c *Client) error
}{
	{wire.MethodACLBootstrap, func(ctx context.Context, c *Client) error { _, err := c.ACLBootstrap(ctx); return err }},
	{wire.MethodACLTokenCreate, func(ctx context.Context, c *Client) error {
		_, err := c.ACLCreateToken(ctx, ACLTokenCreate{Description: "d"})
		return err
	}},
	{wire.MethodACLTokenUpdate, func(ctx context.Context, c *Client) error {
		_, err := c.ACLUpdateToken(ctx, fakeAccessor, "d", nil)
		return err
	}},
	{wire.MethodACLTokenDelete, func(ctx context.Context, c *Client) error { _, err := c.ACLDeleteToken(ctx, fakeAccessor); return err }},
}

// An ACL write sent to a server that does not answer is not sent again to
// another: it may have been applied (a second create would make a second
// token, a second bootstrap would be refused and its secret lost). It fails
// with ErrUnknownOutcome, saying it was not retried. A read is retried.
func TestClient_ACLWritesAreNotRetriedOnceSent(t *testing.T) {
	const attempt = 300 * time.Millisecond
	for _, w := range aclWrites {
		t.Run(w.method, func(t *testing.T) {
			t.Parallel()
			silent, live := newFakeServer(t, true, ""), newFakeServer(t, false, "")
			c := newTestClient(t, Config{Servers: []string{silent.addr, live.addr}, AttemptTimeout: attempt})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := w.call(ctx, c)
			if !errors.Is(err, ErrUnknownOutcome) || codes.NotApplied(err) || !strings.Contains(err.Error(), "not retried") {
				t.Fatalf("err = %v, want ErrUnknownOutcome saying it was not retried", err)
			}
			if n, m := len(silent.requests()), len(live.requests()); n != 1 || m != 0 {
				t.Fatalf("silent server got %d requests, live %d; want 1 and 0", n, m)
			}
		})
	}
	t.Run("the caller's deadline", func(t *testing.T) {
		// Cut short by the caller rather than by the attempt timeout: the
		// same, one request.
		silent, live := newFakeServer(t, true, ""), newFakeServer(t, false, "")
		c := newTestClient(t, Config{Servers: []string{silent.addr, live.addr}, AttemptTimeout: 5 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := c.ACLCreateToken(ctx, ACLTokenCreate{}); codes.NotApplied(err) || !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if n, m := len(silent.requests()), len(live.requests()); n != 1 || m != 0 {
			t.Fatalf("silent server got %d requests, live %d; want 1 and 0", n, m)
		}
	})
	t.Run("reads are retried", func(t *testing.T) {
		silent, live := newFakeServer(t, true, ""), newFakeServer(t, false, "")
		c := newTestClient(t, Config{Servers: []string{silent.addr, live.addr}, AttemptTimeout: attempt})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, _, err := c.ACLTokens(ctx); err != nil {
			t.Fatal(err)
		}
		if n, m := len(silent.requests()), len(live.requests()); n != 1 || m != 1 {
			t.Fatalf("silent server got %d requests, live %d; want 1 each", n, m)
		}
	})
}

// An ACL write refused with an error that proves it was not applied (no
// leader, not leader, ...) moves on to the next server like any call.
func TestClient_ACLWritesMoveOnWhenNotApplied(t *testing.T) {
	for _, code := range []codes.Code{codes.CodeNoLeader, codes.CodeNotLeader, codes.CodeShuttingDown, codes.CodeOverloaded} {
		for _, w := range aclWrites {
			t.Run(string(code)+"/"+w.method, func(t *testing.T) {
				t.Parallel()
				failing, live := newFakeServer(t, false, code), newFakeServer(t, false, "")
				c := newTestClient(t, Config{Servers: []string{failing.addr, live.addr}})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := w.call(ctx, c); err != nil {
					t.Fatal(err)
				}
				if n, m := len(failing.requests()), len(live.requests()); n != 1 || m != 1 {
					t.Fatalf("failing server got %d requests, live %d; want 1 each", n, m)
				}
			})
		}
	}
	t.Run("nothing listening, then a server", func(t *testing.T) {
		live := newFakeServer(t, false, "")
		c := newTestClient(t, Config{Servers: []string{refusedAddr(t), live.addr}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.ACLBootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// permission_denied is final: whatever the call, it is returned at once,
// as ErrPermissionDenied, without asking another server.
func TestClient_PermissionDeniedIsNotRetried(t *testing.T) {
	calls := []struct {
		name string
		call func(ctx context.Context, c *Client) error
	}{
		{"Register", func(ctx context.Context, c *Client) error {
			return c.RegisterAddr(ctx, "web", "10.0.0.1:80", nil, time.Hour)
		}},
		{"Unregister", func(ctx context.Context, c *Client) error { return c.UnregisterAddr(ctx, "web", "10.0.0.1:80") }},
		{"List", func(ctx context.Context, c *Client) error {
			_, _, err := c.Instances(ctx, "web", ListOptions{})
			return err
		}},
		{"Status", func(ctx context.Context, c *Client) error { _, err := c.Status(ctx); return err }},
		{"Watch", func(ctx context.Context, c *Client) error {
			w, err := c.Watch(ctx, "web", 0) // sends the request; the answer comes to Next
			if err != nil {
				return err
			}
			defer w.Close()
			_, err = w.Next(ctx)
			return err
		}},
		{"Services", func(ctx context.Context, c *Client) error { _, err := c.ServicesContext(ctx, "web"); return err }},
		{"ACLTokens", func(ctx context.Context, c *Client) error { _, _, err := c.ACLTokens(ctx); return err }},
		{"ACLWhoAmI", func(ctx context.Context, c *Client) error { _, err := c.ACLWhoAmI(ctx); return err }},
	}
	for _, w := range aclWrites {
		calls = append(calls, struct {
			name string
			call func(ctx context.Context, c *Client) error
		}{w.method, w.call})
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			denying, live := newFakeServer(t, false, codes.CodePermissionDenied), newFakeServer(t, false, "")
			c := newTestClient(t, Config{Servers: []string{denying.addr, live.addr}, Token: "x.y"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := tc.call(ctx, c)
			if !errors.Is(err, ErrPermissionDenied) || !errors.Is(err, codes.ErrPermissionDenied) || codes.Retryable(err) {
				t.Fatalf("err = %v, want ErrPermissionDenied", err)
			}
			if !strings.Contains(err.Error(), "fake server says permission_denied") {
				t.Fatalf("err = %q, want the server's message", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("took %v, want at once", took)
			}
			if n, m := len(denying.requests()), len(live.requests()); n != 1 || m != 0 {
				t.Fatalf("denying server got %d requests, live %d; want 1 and 0", n, m)
			}
		})
	}
}

// A registration whose heartbeats are denied (its token lost its rights)
// heartbeats at its usual interval, not every few hundred milliseconds as
// after a failure another attempt may cure.
func TestClient_DeniedHeartbeatsKeepTheirInterval(t *testing.T) {
	f := newFakeServer(t, false, "")
	var mu sync.Mutex
	var denials []time.Time
	c := newTestClient(t, Config{Servers: []string{f.addr}, OnHeartbeat: func(_, _ string, err error) {
		if errors.Is(err, ErrPermissionDenied) {
			mu.Lock()
			denials = append(denials, time.Now())
			mu.Unlock()
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ttl = 3 * time.Second // heartbeats every ~1 s; a failure's retry comes in 200–400 ms
	if err := c.RegisterAddr(ctx, "web", "10.0.0.1:80", nil, ttl); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.code = codes.CodePermissionDenied
	f.mu.Unlock()
	// Wait for three denied heartbeats, then check the gaps between them.
	var got []time.Time
	for len(got) < 3 {
		if ctx.Err() != nil {
			t.Fatalf("%d denied heartbeats in 20 s", len(got))
		}
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		got = append(got[:0], denials...)
		mu.Unlock()
	}
	for i := 1; i < 3; i++ {
		if gap := got[i].Sub(got[i-1]); gap < 600*time.Millisecond {
			t.Errorf("denied heartbeat %d came %v after the one before: want the TTL/3 interval, not the retry delay", i+1, gap)
		}
	}
}
