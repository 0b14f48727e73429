package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// ACLs with real processes: the native protocol and the HTTP API agree
// call by call, a follower forwarding a write keeps the caller's rights,
// bootstrap works once, a deleted token's watch ends, an expired token is
// refused, and 10 000 wrong secrets change nothing.

// aclCluster is a 3-node cluster with -acl and an HTTP listener per node,
// bootstrapped through a follower.
type aclCluster struct {
	h     *harness
	c     *cluster
	http  map[string]string // node id → HTTP address
	mgmt  string            // the management token
	pools sync.Map          // token → *rpcconn.Pool
}

func startACLCluster(t *testing.T) *aclCluster {
	t.Helper()
	h := newHarness(t)
	ports := freePorts(t, 3)
	ac := &aclCluster{h: h, http: map[string]string{}}
	ac.c = h.startClusterWith(3, func(nd *node) []string {
		i := int(nd.id[1] - '1')
		ac.http[nd.id] = fmt.Sprintf("127.0.0.1:%d", ports[i])
		return []string{"-acl", "-http-addr", ac.http[nd.id]}
	})
	// Bootstrap through a follower: it forwards to the leader.
	leader := ac.leader(t)
	var via *node
	for _, nd := range ac.c.nodes {
		if nd.id != leader {
			via = nd
			break
		}
	}
	var res wire.ACLTokenSecret
	poll(t, 15*time.Second, 100*time.Millisecond, "acl bootstrap through "+via.id, func() (bool, string) {
		err := ac.call("", via.addr, wire.MethodACLBootstrap, &wire.ACLBootstrapRequest{}, &res)
		return err == nil, fmt.Sprint(err)
	})
	if !strings.HasPrefix(res.Secret, res.Token.AccessorID+".") || len(res.Token.Rules) != 3 {
		t.Fatalf("bootstrap answered %+v", res)
	}
	ac.mgmt = res.Secret
	return ac
}

func (ac *aclCluster) pool(token string) *rpcconn.Pool {
	if p, ok := ac.pools.Load(token); ok {
		return p.(*rpcconn.Pool)
	}
	p := rpcconn.NewPool(rpcconn.Options{Token: func(context.Context) string { return token }})
	ac.h.t.Cleanup(p.Close)
	actual, _ := ac.pools.LoadOrStore(token, p)
	return actual.(*rpcconn.Pool)
}

// call makes one native call with token to addr.
func (ac *aclCluster) call(token, addr, method string, req, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ac.pool(token).Call(ctx, addr, method, false, req, resp)
}

// leader asks the nodes (NodeInfo needs no rights) until one leads.
func (ac *aclCluster) leader(t *testing.T) string {
	t.Helper()
	var id string
	poll(t, 15*time.Second, 100*time.Millisecond, "a leader", func() (bool, string) {
		for _, nd := range ac.c.nodes {
			var ns wire.NodeStatus
			if err := ac.call("", nd.addr, wire.MethodNodeInfo, &wire.NodeInfoRequest{}, &ns); err == nil && ns.State == "Leader" {
				id = nd.id
				return true, ""
			}
		}
		return false, "no node leads"
	})
	return id
}

func (ac *aclCluster) create(t *testing.T, desc string, expires time.Duration, rules ...string) wire.ACLTokenSecret {
	t.Helper()
	var res wire.ACLTokenSecret
	req := &wire.ACLTokenCreateRequest{Description: desc, Rules: rules, ExpiresInMillis: expires.Milliseconds()}
	if err := ac.call(ac.mgmt, ac.c.nodes[0].addr, wire.MethodACLTokenCreate, req, &res); err != nil {
		t.Fatalf("create %s: %v", desc, err)
	}
	return res
}

// httpDo makes one HTTP API call with token (none if "") and returns the
// status, the error code of an error answer, and the body.
func (ac *aclCluster) httpDo(t *testing.T, token, node, method, path string, body any) (int, string, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+ac.http[node]+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Code string `json:"code"`
	}
	if resp.StatusCode >= 300 {
		_ = json.Unmarshal(b, &e)
	}
	return resp.StatusCode, e.Code, b
}

func TestACL_NativeAndHTTPAgree(t *testing.T) {
	ac := startACLCluster(t)
	h := ac.h
	defer h.dumpLogsIfFailed()
	reader := ac.create(t, "reader", 0, `service "*" read`)
	web := ac.create(t, "web writer", 0, `service "web*" write`)
	ops := ac.create(t, "operator", 0, `operator read`)

	// A second bootstrap is refused, on any node.
	for _, nd := range ac.c.nodes {
		err := ac.call("", nd.addr, wire.MethodACLBootstrap, &wire.ACLBootstrapRequest{}, &wire.ACLTokenSecret{})
		if !errors.Is(err, codes.ErrRefused) || !strings.Contains(err.Error(), "bootstrapped already") {
			t.Errorf("bootstrap again on %s: %v", nd.id, err)
		}
	}
	if st, code, _ := ac.httpDo(t, "", "n1", "PUT", "/v1/acl/bootstrap", nil); st != http.StatusConflict || code != "refused" {
		if st, code, _ = ac.httpDo(t, "", "n1", "POST", "/v1/acl/bootstrap", nil); st != http.StatusConflict || code != "refused" {
			t.Errorf("HTTP bootstrap again: %d %s", st, code)
		}
	}

	tokens := map[string]string{"mgmt": ac.mgmt, "reader": reader.Secret, "web": web.Secret, "operator": ops.Secret, "none": "",
		"wrong": web.Token.AccessorID + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
	type op struct {
		token, what, service string
		want                 codes.Code // and, for list and services, how many it must see
		count                int
	}
	cases := []op{
		{"web", "register", "web-1", codes.CodeOK, 0},
		{"web", "register", "db", codes.CodePermissionDenied, 0},
		{"reader", "register", "web-2", codes.CodePermissionDenied, 0},
		{"none", "register", "web-3", codes.CodePermissionDenied, 0},
		{"wrong", "register", "web-4", codes.CodePermissionDenied, 0},
		{"operator", "register", "web-5", codes.CodePermissionDenied, 0},
		{"mgmt", "register", "db", codes.CodeOK, 0},
		{"web", "heartbeat", "web-1", codes.CodeOK, 0},
		{"web", "heartbeat", "db", codes.CodePermissionDenied, 0},
		{"reader", "list", "db", codes.CodeOK, 2},
		{"web", "list", "db", codes.CodeOK, 0}, // says nothing: empty
		{"web", "list", "web-1", codes.CodeOK, 2},
		{"none", "list", "web-1", codes.CodeOK, 0},
		{"wrong", "list", "web-1", codes.CodePermissionDenied, 0},
		{"web", "services", "", codes.CodeOK, 1},
		{"reader", "services", "", codes.CodeOK, 2},
		{"none", "services", "", codes.CodeOK, 0},
		{"operator", "status", "", codes.CodeOK, 0},
		{"reader", "status", "", codes.CodePermissionDenied, 0},
		{"web", "unregister", "db", codes.CodePermissionDenied, 0},
	}
	// Each case runs on the native port and on the HTTP API of another
	// node, each over its own instance (the HTTP one's port has a 0 more),
	// so both must succeed alike; a service registered in both has two.
	for i, cs := range cases {
		node := ac.c.nodes[i%3]
		hnode := ac.c.nodes[(i+1)%3].id
		tok := tokens[cs.token]
		addr := fmt.Sprintf("10.0.0.%d:80", i+1)
		var nerr error
		var ncount int
		var st int
		var hcode string
		var body []byte
		switch cs.what {
		case "register":
			nerr = ac.call(tok, node.addr, wire.MethodRegister, &wire.RegisterRequest{Name: cs.service, Addr: addr, TTLMillis: 60000}, &wire.WriteResponse{})
			st, hcode, _ = ac.httpDo(t, tok, hnode, "PUT", "/v1/services/"+cs.service+"/instances/"+url.PathEscape(addr+"0"), map[string]any{"ttl": "60s"})
		case "heartbeat":
			var hr wire.HeartbeatResponse
			nerr = ac.call(tok, node.addr, wire.MethodHeartbeat, &wire.HeartbeatRequest{Instances: []wire.InstanceKey{{Name: cs.service, Addr: "10.0.0.1:80"}}}, &hr)
			if nerr == nil && len(hr.Results) == 1 {
				nerr = hr.Results[0].Err()
			}
			// The HTTP side heartbeats the instance it registered (…:800).
			st, hcode, _ = ac.httpDo(t, tok, hnode, "PUT", "/v1/services/"+cs.service+"/instances/"+url.PathEscape("10.0.0.1:800")+"/heartbeat", map[string]any{})
		case "list":
			var lr wire.ListResponse
			nerr = ac.call(tok, node.addr, wire.MethodList, &wire.ListRequest{Name: cs.service}, &lr)
			ncount = len(lr.Instances)
			st, hcode, body = ac.httpDo(t, tok, hnode, "GET", "/v1/services/"+cs.service, nil)
		case "services":
			var sr wire.ServicesResponse
			nerr = ac.call(tok, node.addr, wire.MethodServices, &wire.ServicesRequest{}, &sr)
			ncount = len(sr.Services)
			st, hcode, body = ac.httpDo(t, tok, hnode, "GET", "/v1/services", nil)
		case "status":
			nerr = ac.call(tok, node.addr, wire.MethodStatus, &wire.Empty{}, &wire.StatusResponse{})
			st, hcode, _ = ac.httpDo(t, tok, hnode, "GET", "/v1/status", nil)
		case "unregister":
			nerr = ac.call(tok, node.addr, wire.MethodUnregister, &wire.UnregisterRequest{Name: cs.service, Addr: "10.0.0.7:80"}, &wire.WriteResponse{})
			st, hcode, _ = ac.httpDo(t, tok, hnode, "DELETE", "/v1/services/"+cs.service+"/instances/"+url.PathEscape("10.0.0.7:800"), nil)
		}
		name := fmt.Sprintf("%s %s %s", cs.token, cs.what, cs.service)
		if got := codes.Of(nerr); got != cs.want {
			t.Errorf("%s, native on %s: %v, want %q", name, node.id, nerr, cs.want)
		}
		if cs.want == codes.CodePermissionDenied && nerr != nil {
			if _, secret, _ := strings.Cut(tok, "."); secret != "" && strings.Contains(nerr.Error(), secret) {
				t.Errorf("%s: the error holds the secret: %v", name, nerr)
			}
			if cs.token != "wrong" && !strings.Contains(nerr.Error(), "needs the rule") {
				t.Errorf("%s: the error does not name the missing rule: %v", name, nerr)
			}
		}
		if codes.Code(hcode) != cs.want {
			t.Errorf("%s, HTTP on %s: status %d code %q, want %q", name, hnode, st, hcode, cs.want)
		}
		if cs.want == codes.CodePermissionDenied && st != http.StatusForbidden {
			t.Errorf("%s, HTTP: status %d, want 403", name, st)
		}
		if cs.what == "list" || cs.what == "services" {
			var hr struct {
				Instances []json.RawMessage `json:"instances"`
				Services  []json.RawMessage `json:"services"`
			}
			_ = json.Unmarshal(body, &hr)
			hcount := len(hr.Instances) + len(hr.Services)
			if cs.want == codes.CodeOK && (ncount != cs.count || hcount != cs.count) {
				t.Errorf("%s: native sees %d, HTTP %d, want %d", name, ncount, hcount, cs.count)
			}
		}
	}
}

// TestACL_ForwardingKeepsTheCaller sends writes to a follower, which
// forwards them to the leader: the caller's rights apply there, never the
// node's; and a request that claims to be forwarded gets nothing for it.
func TestACL_ForwardingKeepsTheCaller(t *testing.T) {
	ac := startACLCluster(t)
	defer ac.h.dumpLogsIfFailed()
	web := ac.create(t, "web writer", 0, `service "web*" write`)
	reader := ac.create(t, "reader", 0, `service "*" read`)
	leader := ac.leader(t)
	var follower, lead *node
	for _, nd := range ac.c.nodes {
		if nd.id == leader {
			lead = nd
		} else {
			follower = nd
		}
	}
	if err := ac.call(web.Secret, follower.addr, wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "10.1.0.1:80", TTLMillis: 60000}, &wire.WriteResponse{}); err != nil {
		t.Errorf("web writer through the follower: %v", err)
	}
	for _, tok := range []string{reader.Secret, ""} {
		err := ac.call(tok, follower.addr, wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "10.1.0.2:80", TTLMillis: 60000}, &wire.WriteResponse{})
		if !errors.Is(err, codes.ErrPermissionDenied) {
			t.Errorf("token %.8q through the follower: %v", tok, err)
		}
	}
	// A client that marks its request forwarded, straight to the leader,
	// with no token, or with the reader's: still the caller's rights.
	for _, tok := range []string{"", reader.Secret} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ac.pool(tok).Call(ctx, lead.addr, wire.MethodRegister, true, &wire.RegisterRequest{Name: "web", Addr: "10.1.0.3:80", TTLMillis: 60000}, &wire.WriteResponse{})
		cancel()
		if !errors.Is(err, codes.ErrPermissionDenied) {
			t.Errorf("a forged forwarded register (token %.8q): %v", tok, err)
		}
	}
	var lr wire.ListResponse
	if err := ac.call(ac.mgmt, lead.addr, wire.MethodList, &wire.ListRequest{Name: "web", Consistent: true}, &lr); err != nil || len(lr.Instances) != 1 {
		t.Errorf("web after the writes: %v %v", lr.Instances, err)
	}
	// The follower logged the denied writes for the audit, without secrets.
	ac.h.waitLog(t, follower.p, "audit: write denied")
	if follower.p.logContains(strings.SplitN(reader.Secret, ".", 2)[1]) {
		t.Error("a secret is in the follower's log")
	}
}

// waitLog waits until p's log holds s.
func (h *harness) waitLog(t *testing.T, p *proc, s string) {
	t.Helper()
	poll(t, 5*time.Second, 50*time.Millisecond, "log line "+s, func() (bool, string) { return p.logContains(s), "" })
}

// TestACL_WatchEndsAndExpiry: a watch ends with permission_denied when its
// token is deleted (on another node); a token that expires is refused.
func TestACL_WatchEndsAndExpiry(t *testing.T) {
	ac := startACLCluster(t)
	defer ac.h.dumpLogsIfFailed()
	web := ac.create(t, "web watcher", 0, `service "web" read`)
	short := ac.create(t, "short-lived", 2*time.Second, `service "web" write`)
	if short.Token.ExpiresAtMillis == 0 {
		t.Fatalf("no expiry: %+v", short.Token)
	}

	conn, err := rpcconn.Dial(context.Background(), ac.c.nodes[2].addr, rpcconn.Options{Token: func(context.Context) string { return web.Secret }})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := conn.Stream(context.Background(), wire.MethodWatch, &wire.WatchRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var we wire.WatchEvents
	if err := st.Recv(context.Background(), &we); err != nil {
		t.Fatalf("first events: %v", err)
	}
	var idx wire.WriteResponse
	if err := ac.call(ac.mgmt, ac.c.nodes[0].addr, wire.MethodACLTokenDelete, &wire.ACLTokenIDRequest{AccessorID: web.Token.AccessorID}, &idx); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			var we wire.WatchEvents
			if err := st.Recv(context.Background(), &we); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if !errors.Is(err, codes.ErrPermissionDenied) {
			t.Errorf("the watch ended with %v, want permission_denied", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch of a deleted token did not end within 10s")
	}

	// The short-lived token works, then is refused once it has expired.
	if err := ac.call(short.Secret, ac.c.nodes[1].addr, wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "10.2.0.1:80", TTLMillis: 60000}, &wire.WriteResponse{}); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	var last error
	poll(t, 10*time.Second, 100*time.Millisecond, "the token to expire", func() (bool, string) {
		last = ac.call(short.Secret, ac.c.nodes[1].addr, wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "10.2.0.2:80", TTLMillis: 60000}, &wire.WriteResponse{})
		return last != nil, fmt.Sprint(last)
	})
	if !errors.Is(last, codes.ErrPermissionDenied) || !strings.Contains(last.Error(), "expired") {
		t.Errorf("after expiry: %v", last)
	}
	if time.Now().UnixMilli() < short.Token.ExpiresAtMillis-500 {
		t.Errorf("refused before its expiry (%d, now %d)", short.Token.ExpiresAtMillis, time.Now().UnixMilli())
	}
}

// TestACL_BruteForce: 10 000 wrong secrets — for an existing accessor id
// and for unknown ones — are all refused and change nothing. The timing
// of the two kinds is logged (acl.BenchmarkResolve measures the check
// itself; a test on a shared machine asserts no times).
func TestACL_BruteForce(t *testing.T) {
	ac := startACLCluster(t)
	defer ac.h.dumpLogsIfFailed()
	web := ac.create(t, "web writer", 0, `service "web*" write`)
	if err := ac.call(web.Secret, ac.c.nodes[0].addr, wire.MethodRegister, &wire.RegisterRequest{Name: "web", Addr: "10.3.0.1:80", TTLMillis: 600000}, &wire.WriteResponse{}); err != nil {
		t.Fatal(err)
	}
	hashes := func() []string {
		var out []string
		var idx wire.ReadIndexResponse
		if err := ac.call("", ac.c.nodes[0].addr, wire.MethodReadIndex, &wire.ReadIndexRequest{}, &idx); err != nil {
			t.Fatal(err)
		}
		for _, nd := range ac.c.nodes {
			var ns wire.NodeStatus
			poll(t, 5*time.Second, 20*time.Millisecond, nd.id+" applied", func() (bool, string) {
				err := ac.call("", nd.addr, wire.MethodNodeInfo, &wire.NodeInfoRequest{StateHash: true}, &ns)
				return err == nil && ns.FSMApplied >= idx.Index, fmt.Sprint(ns.FSMApplied, err)
			})
			out = append(out, fmt.Sprintf("%s@%d", ns.StateHash, ns.FSMApplied))
		}
		return out
	}
	before := hashes()

	// One pool whose requests each carry the token in their context: the
	// attack reuses connections, as a real one would.
	type tokKey struct{}
	attack := rpcconn.NewPool(rpcconn.Options{Token: func(ctx context.Context) string { tok, _ := ctx.Value(tokKey{}).(string); return tok }})
	defer attack.Close()
	const total = 10000
	var refused, other atomic.Int64
	var mu sync.Mutex
	lat := map[bool][]time.Duration{}
	work := make(chan int)
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Minute)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				existing := i%2 == 0
				id := web.Token.AccessorID
				if !existing {
					id = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
				}
				tok := fmt.Sprintf("%s.%043d", id, i)
				ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), tokKey{}, tok), 5*time.Second)
				start := time.Now()
				err := attack.Call(ctx, ac.c.nodes[i%3].addr, wire.MethodRegister,
					false, &wire.RegisterRequest{Name: "web", Addr: "10.3.0.1:80", Attrs: map[string]string{"owner": "attacker"}, TTLMillis: 600000}, &wire.WriteResponse{})
				d := time.Since(start)
				cancel()
				if errors.Is(err, codes.ErrPermissionDenied) {
					refused.Add(1)
				} else {
					if other.Add(1) == 1 {
						t.Logf("wrong secret %d answered: %v", i, err)
					}
				}
				mu.Lock()
				lat[existing] = append(lat[existing], d)
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < total && time.Now().Before(deadline); i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if refused.Load() != total || other.Load() != 0 {
		t.Errorf("%d of %d wrong secrets refused, %d answered otherwise", refused.Load(), total, other.Load())
	}
	if after := hashes(); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("the state changed:\nbefore %v\nafter  %v", before, after)
	}
	var lr wire.ListResponse
	if err := ac.call(web.Secret, ac.c.nodes[1].addr, wire.MethodList, &wire.ListRequest{Name: "web", Consistent: true}, &lr); err != nil || len(lr.Instances) != 1 || lr.Instances[0].Attrs["owner"] != "" {
		t.Errorf("web after the attack: %v %v", lr.Instances, err)
	}
	med := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		if len(ds) == 0 {
			return 0
		}
		return ds[len(ds)/2]
	}
	t.Logf("%d wrong secrets refused; median answer %v with an existing accessor id, %v with an unknown one (over the network, 16 at a time)",
		refused.Load(), med(lat[true]), med(lat[false]))
}
