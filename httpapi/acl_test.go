package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// These tests run the API over a real acl.Guard whose tokens are held by
// tokenStore (an acl.Store in memory) and whose backend is memBackend: the
// HTTP side of ACLs, without a cluster.

// tokenStore keeps tokens in memory and swaps in a new acl.Table on every
// change, as the Raft store does.
type tokenStore struct {
	mu    sync.Mutex
	t     *acl.Table
	boot  uint64
	index uint64
	toks  map[string]acl.Token
}

func newTokenStore() *tokenStore {
	return &tokenStore{t: acl.NewTable(0, 0, nil), toks: map[string]acl.Token{}}
}

func (s *tokenStore) ACLTable() *acl.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

// swap builds the next table; s.mu is held.
func (s *tokenStore) swap() {
	s.index++
	var toks []acl.Token
	for _, t := range s.toks {
		toks = append(toks, t)
	}
	old := s.t
	s.t = acl.NewTable(s.boot, s.index, toks)
	old.Retire()
}

// add creates a token with rules and returns its credential.
func (s *tokenStore) add(t *testing.T, desc string, expiresIn time.Duration, rules ...string) (acl.Token, string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, cred := s.addLocked(desc, expiresIn, rules)
	return tok, cred
}

func (s *tokenStore) addLocked(desc string, expiresIn time.Duration, rules []string) (acl.Token, string) {
	id, cred, hash, err := acl.NewCredential()
	if err != nil {
		panic(err)
	}
	tok := acl.Token{AccessorID: id, SecretHash: hash, Description: desc, Rules: rules, CreateIndex: s.index + 1, ModifyIndex: s.index + 1}
	if expiresIn > 0 {
		tok.ExpiresAt = time.Now().Add(expiresIn)
	}
	s.toks[id] = tok
	s.swap()
	return tok, cred
}

func (s *tokenStore) ACLBootstrap(context.Context) (wire.ACLTokenSecret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.boot != 0 {
		return wire.ACLTokenSecret{}, fmt.Errorf("bootstrapped already: %w", codes.ErrRefused)
	}
	s.boot = s.index + 1
	if _, ok := s.toks[acl.AnonymousID]; !ok {
		s.toks[acl.AnonymousID] = acl.Token{AccessorID: acl.AnonymousID}
	}
	tok, cred := s.addLocked("bootstrap", 0, acl.ManagementRules)
	return wire.ACLTokenSecret{Token: acl.ToWire(tok, time.Now()), Secret: cred, Index: s.index}, nil
}

func (s *tokenStore) ACLCreateToken(_ context.Context, req wire.ACLTokenCreateRequest) (wire.ACLTokenSecret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, cred := s.addLocked(req.Description, time.Duration(req.ExpiresInMillis)*time.Millisecond, req.Rules)
	return wire.ACLTokenSecret{Token: acl.ToWire(tok, time.Now()), Secret: cred, Index: s.index}, nil
}

func (s *tokenStore) ACLUpdateToken(_ context.Context, req wire.ACLTokenUpdateRequest) (wire.ACLTokenResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.toks[req.AccessorID]
	if !ok {
		return wire.ACLTokenResponse{}, fmt.Errorf("no token %s: %w", req.AccessorID, codes.ErrNotFound)
	}
	tok.Description, tok.Rules, tok.ModifyIndex = req.Description, req.Rules, s.index+1
	s.toks[req.AccessorID] = tok
	s.swap()
	return wire.ACLTokenResponse{Token: acl.ToWire(tok, time.Now()), Index: s.index}, nil
}

func (s *tokenStore) ACLDeleteToken(_ context.Context, req wire.ACLTokenIDRequest) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.AccessorID == acl.AnonymousID {
		return 0, fmt.Errorf("the anonymous token stays: %w", codes.ErrRefused)
	}
	if _, ok := s.toks[req.AccessorID]; !ok {
		return 0, fmt.Errorf("no token %s: %w", req.AccessorID, codes.ErrNotFound)
	}
	delete(s.toks, req.AccessorID)
	s.swap()
	return s.index, nil
}

// memBackend serves registrations from memory; its watches give the
// current state, then wait.
type memBackend struct {
	backend.DiscoveryBackend // the methods the API does not call panic
	mu                       sync.Mutex
	index                    uint64
	services                 map[string][]backend.Instance
}

func newMemBackend(services ...string) *memBackend {
	b := &memBackend{index: 1, services: map[string][]backend.Instance{}}
	for i, name := range services {
		b.services[name] = []backend.Instance{{Name: name, Addr: fmt.Sprintf("10.0.0.%d:80", i+1), Index: 1, CreateIndex: 1}}
	}
	return b
}

func (b *memBackend) Register(_ context.Context, r backend.Registration) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index++
	b.services[r.Name] = append(b.services[r.Name], backend.Instance{Name: r.Name, Addr: r.Addr, Attrs: r.Attrs, Index: b.index, CreateIndex: b.index})
	return b.index, nil
}

func (b *memBackend) Unregister(_ context.Context, u backend.Unregistration) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, in := range b.services[u.Name] {
		if in.Addr == u.Addr {
			b.services[u.Name] = append(b.services[u.Name][:i:i], b.services[u.Name][i+1:]...)
			b.index++
			return b.index, nil
		}
	}
	return 0, fmt.Errorf("not registered: %w", codes.ErrNotFound)
}

func (b *memBackend) Heartbeat(_ context.Context, keys []backend.InstanceKey) ([]error, error) {
	return make([]error, len(keys)), nil
}

func (b *memBackend) List(_ context.Context, name string, _ backend.ListOptions) (uint64, []backend.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.index, append([]backend.Instance(nil), b.services[name]...), nil
}

func (b *memBackend) Services(context.Context, backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []backend.ServiceCount
	for name, ins := range b.services {
		if len(ins) > 0 {
			out = append(out, backend.ServiceCount{Name: name, Instances: uint64(len(ins))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return b.index, out, nil
}

func (b *memBackend) Subscribe(_ context.Context, name string, from, _ uint64) (backend.UpdateStream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &memStream{done: make(chan struct{})}
	if from == 0 {
		for _, in := range b.services[name] {
			st.pending = append(st.pending, backend.Event{Kind: wire.KindUp, Index: in.Index, Name: name, Addr: in.Addr})
		}
		st.pending = append(st.pending, backend.Event{Kind: wire.KindCurrent, Index: b.index, Name: name})
	}
	return st, nil
}

func (b *memBackend) Status(context.Context) (wire.StatusResponse, error) {
	return wire.StatusResponse{Leader: "n1"}, nil
}

func (b *memBackend) Freshness() wire.Freshness { return wire.Freshness{KnownLeader: true} }

type memStream struct {
	pending []backend.Event
	once    sync.Once
	done    chan struct{}
}

func (s *memStream) Next(ctx context.Context) ([]backend.Event, error) {
	if evs := s.pending; evs != nil {
		s.pending = nil
		return evs, nil
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("stream closed: %w", codes.ErrShuttingDown)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *memStream) Close() { s.once.Do(func() { close(s.done) }) }

// syncBuffer is a log sink the handlers and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// aclFixture is the API over a guard with tokens: admin (the management
// rules), web (service "web*" write), reader (service "*" read),
// operator (operator read); the anonymous token may read "public".
type aclFixture struct {
	url   string
	st    *tokenStore
	be    *memBackend
	log   *syncBuffer // the guard's audit and the API's log
	cred  map[string]string
	ids   map[string]string
	guard *acl.Guard
}

func newACLFixture(t *testing.T, cfg httpapi.Config) *aclFixture {
	t.Helper()
	fx := &aclFixture{st: newTokenStore(), be: newMemBackend("public", "secret", "web", "web-2", "db"), log: &syncBuffer{},
		cred: map[string]string{}, ids: map[string]string{}}
	fx.st.boot = 1
	fx.st.toks[acl.AnonymousID] = acl.Token{AccessorID: acl.AnonymousID, Rules: []string{`service "public" read`}}
	for name, rules := range map[string][]string{
		"admin":    acl.ManagementRules,
		"web":      {`service "web*" write`},
		"reader":   {`service "*" read`},
		"operator": {`operator read`},
	} {
		tok, cred := fx.st.add(t, name, 0, rules...)
		fx.cred[name], fx.ids[name] = cred, tok.AccessorID
	}
	fx.start(t, cfg, nil)
	return fx
}

// start serves the API over be (the guard if nil).
func (fx *aclFixture) start(t *testing.T, cfg httpapi.Config, be backend.DiscoveryBackend) {
	logger := slog.New(slog.NewTextHandler(fx.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if be == nil {
		fx.guard = acl.NewGuard(fx.be, fx.st, logger)
		t.Cleanup(fx.guard.Close)
		be = fx.guard
	}
	cfg.Logger = logger
	api := httpapi.New(cfg, be)
	srv := httptest.NewServer(api)
	t.Cleanup(func() { api.Stop(); srv.Close() })
	fx.url = srv.URL
}

// do makes a request with the given Authorization header values (none: no
// header) and returns the status and body.
func (fx *aclFixture) do(t *testing.T, method, path, body string, auth ...string) (int, string) {
	t.Helper()
	resp := fx.send(t, method, path, body, auth...)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (fx *aclFixture) send(t *testing.T, method, path, body string, auth ...string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fx.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// as is the Authorization header of a fixture token.
func (fx *aclFixture) as(name string) string { return "Bearer " + fx.cred[name] }

// wantErr checks an error answer's status, code and message.
func wantErr(t *testing.T, what string, code int, body string, status int, errCode, says string) {
	t.Helper()
	var e httpapi.ErrorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil || code != status || e.Code != errCode || !strings.Contains(e.Message, says) {
		t.Errorf("%s: %d %s, want %d %s saying %q", what, code, body, status, errCode, says)
	}
}

// TestACL_Bearer: no header is the anonymous token; a header not of the
// form "Bearer <token>" is 400; a token that is malformed, unknown or has a
// wrong secret is 403. No answer and no log line holds what was sent.
func TestACL_Bearer(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{})
	var s httpapi.ServicesBody
	code, body := fx.do(t, "GET", "/v1/services", "")
	if err := json.Unmarshal([]byte(body), &s); err != nil || code != 200 || len(s.Services) != 1 || s.Services[0].Name != "public" {
		t.Errorf("anonymous services: %d %s, want public alone", code, body)
	}
	code, body = fx.do(t, "GET", "/v1/services", "", "bEaReR "+fx.cred["reader"])
	if err := json.Unmarshal([]byte(body), &s); err != nil || code != 200 || len(s.Services) != 5 {
		t.Errorf("the scheme is case-insensitive: %d %s", code, body)
	}
	id, secret, _ := acl.SplitCredential(fx.cred["web"])
	const sent = "hunter2-hunter2-hunter2"
	for _, tt := range []struct {
		what   string
		auth   []string
		status int
		code   string
		says   string
	}{
		{"basic", []string{"Basic " + sent}, 400, "invalid_argument", `"Bearer <token>"`},
		{"the token alone", []string{fx.cred["web"]}, 400, "invalid_argument", `"Bearer <token>"`},
		{"no token", []string{"Bearer"}, 400, "invalid_argument", `"Bearer <token>"`},
		{"an empty token", []string{"Bearer "}, 400, "invalid_argument", `"Bearer <token>"`},
		{"two words", []string{"Bearer " + sent + " " + sent}, 400, "invalid_argument", `"Bearer <token>"`},
		{"a character no token has", []string{"Bearer " + sent + "\"x"}, 400, "invalid_argument", `"Bearer <token>"`},
		{"an empty header", []string{""}, 400, "invalid_argument", `"Bearer <token>"`},
		{"two headers", []string{fx.as("web"), fx.as("admin")}, 400, "invalid_argument", "2 Authorization headers"},
		{"malformed token", []string{"Bearer " + sent}, 403, "permission_denied", "malformed"},
		{"wrong secret", []string{"Bearer " + id + "." + sent}, 403, "permission_denied", "not known"},
		{"unknown accessor", []string{"Bearer 00000000-0000-4000-8000-000000000000." + secret}, 403, "permission_denied", "not known"},
	} {
		code, body := fx.do(t, "GET", "/v1/services", "", tt.auth...)
		wantErr(t, tt.what, code, body, tt.status, tt.code, tt.says)
		if strings.Contains(body, sent) || strings.Contains(body, secret) {
			t.Errorf("%s: the answer echoes what was sent: %s", tt.what, body)
		}
	}
	// A write with a wrong secret is audited, by accessor id, never with
	// the secret.
	code, body = fx.do(t, "PUT", "/v1/services/web/instances/10.1.1.1:80", "", "Bearer "+id+"."+sent)
	wantErr(t, "register with a wrong secret", code, body, 403, "permission_denied", "not known")
	log := fx.log.String()
	if !strings.Contains(log, "unresolved:"+id) || !strings.Contains(log, "via=http") || !strings.Contains(log, "from=127.0.0.1:") {
		t.Errorf("audit of a denied write:\n%s", log)
	}
	for _, c := range append([]string{sent}, secret) {
		if strings.Contains(log, c) {
			t.Fatalf("a token is in the log:\n%s", log)
		}
	}
}

// TestACL_WritesNeedTheRule: a read-only token cannot register, a web*
// writer cannot touch db (each 403 permission_denied naming the rule
// missing), and a batch heartbeat is denied per instance.
func TestACL_WritesNeedTheRule(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{})
	code, body := fx.do(t, "PUT", "/v1/services/web/instances/10.1.1.1:80", `{}`, fx.as("reader"))
	wantErr(t, "reader registering", code, body, 403, "permission_denied", `needs the rule service "web" write`)
	code, body = fx.do(t, "PUT", "/v1/services/web/instances/10.1.1.1:80", `{}`)
	wantErr(t, "anonymous registering", code, body, 403, "permission_denied", "the anonymous token")
	for _, req := range [][2]string{
		{"PUT", "/v1/services/db/instances/10.1.1.1:80"},
		{"DELETE", "/v1/services/db/instances/10.0.0.5:80"},
		{"PUT", "/v1/services/db/instances/10.0.0.5:80/heartbeat"},
	} {
		code, body := fx.do(t, req[0], req[1], "", fx.as("web"))
		wantErr(t, "web* writer: "+req[0]+" "+req[1], code, body, 403, "permission_denied", `service "db" write`)
	}
	if code, body := fx.do(t, "PUT", "/v1/services/web-3/instances/10.1.1.1:80", `{}`, fx.as("web")); code != 200 {
		t.Errorf("web* writer registering web-3: %d %s", code, body)
	}
	var hb httpapi.HeartbeatResults
	code, body = fx.do(t, "PUT", "/v1/heartbeat", `{"instances":[{"name":"web","addr":"10.0.0.3:80"},{"name":"db","addr":"10.0.0.5:80"}]}`, fx.as("web"))
	if err := json.Unmarshal([]byte(body), &hb); err != nil || code != 200 || len(hb.Results) != 2 || hb.Results[0].Code != "" ||
		hb.Results[1].Code != "permission_denied" || !strings.Contains(hb.Results[1].Message, `service "db" write`) {
		t.Errorf("batch heartbeat web+db: %d %s", code, body)
	}
	code, body = fx.do(t, "GET", "/v1/status", "", fx.as("web"))
	wantErr(t, "status without operator read", code, body, 403, "permission_denied", "operator read")
	if code, body := fx.do(t, "GET", "/v1/status", "", fx.as("operator")); code != 200 || !strings.Contains(body, `"leader":"n1"`) {
		t.Errorf("status with operator read: %d %s", code, body)
	}
	_, services, _ := fx.be.Services(context.Background(), backend.ServicesOptions{})
	if len(services) != 6 {
		t.Errorf("the denied writes reached the store: %v", services)
	}
}

// TestACL_ReadsLeaveOut: lists leave out what the token may not read: a
// service it may not read has no instances (also for a blocking query,
// which waits as on a service that does not change), and the services list
// leaves it out; a watch of it is 403.
func TestACL_ReadsLeaveOut(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{})
	var s httpapi.ServicesBody
	code, body := fx.do(t, "GET", "/v1/services", "", fx.as("web"))
	if err := json.Unmarshal([]byte(body), &s); err != nil || code != 200 || fmt.Sprint(s.Services) != "[{web 1} {web-2 1}]" {
		t.Errorf("web token's services: %d %s", code, body)
	}
	var l httpapi.ListBody
	code, body = fx.do(t, "GET", "/v1/services/db", "", fx.as("web"))
	if err := json.Unmarshal([]byte(body), &l); err != nil || code != 200 || len(l.Instances) != 0 || l.Index == 0 {
		t.Errorf("web token listing db: %d %s, want no instances", code, body)
	}
	code, body = fx.do(t, "GET", "/v1/services/db", "", fx.as("reader"))
	if err := json.Unmarshal([]byte(body), &l); err != nil || code != 200 || len(l.Instances) != 1 {
		t.Errorf("reader listing db: %d %s", code, body)
	}
	// A blocking query on what it may not read: no 403, no wakeup; the
	// wait runs out and the answer is empty, as for a quiet service.
	start := time.Now()
	code, body = fx.do(t, "GET", "/v1/services/db?index=1&wait=300ms", "", fx.as("web"))
	if err := json.Unmarshal([]byte(body), &l); err != nil || code != 200 || len(l.Instances) != 0 || time.Since(start) < 300*time.Millisecond {
		t.Errorf("web token's blocking query on db after %v: %d %s", time.Since(start), code, body)
	}
	code, body = fx.do(t, "GET", "/v1/services/db/events", "", fx.as("web"))
	wantErr(t, "web token watching db", code, body, 403, "permission_denied", `service "db" read`)
}

// TestACL_TokenRoutes: the token routes with acl write (create, read,
// list, update, delete), without it (403 naming the rule; one's own token
// and whoami stay readable), and bootstrap once.
func TestACL_TokenRoutes(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{})
	var made wire.ACLTokenSecret
	code, body := fx.do(t, "POST", "/v1/acl/tokens", `{"description":"ci","rules":["service  \"web\"   write"],"expires_in":"1h"}`, fx.as("admin"))
	if err := json.Unmarshal([]byte(body), &made); err != nil || code != 200 || made.Secret == "" || made.Token.AccessorID == "" ||
		fmt.Sprint(made.Token.Rules) != `[service "web" write]` || made.Token.ExpiresAtMillis < time.Now().Add(59*time.Minute).UnixMilli() {
		t.Fatalf("create: %d %s", code, body)
	}
	var me wire.ACLWhoAmIResponse
	code, body = fx.do(t, "GET", "/v1/acl/whoami", "", "Bearer "+made.Secret)
	if err := json.Unmarshal([]byte(body), &me); err != nil || code != 200 || me.Token.AccessorID != made.Token.AccessorID || me.Anonymous {
		t.Errorf("whoami with the new token: %d %s", code, body)
	}
	if code, body := fx.do(t, "PUT", "/v1/services/web/instances/10.9.9.9:80", "", "Bearer "+made.Secret); code != 200 {
		t.Errorf("the new token registering web: %d %s", code, body)
	}
	var list wire.ACLTokenListResponse
	code, body = fx.do(t, "GET", "/v1/acl/tokens", "", fx.as("admin"))
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list.Tokens) != 6 || list.Index == 0 {
		t.Errorf("list: %d %s", code, body)
	}
	_, secret, _ := acl.SplitCredential(made.Secret)
	if strings.Contains(body, secret) || strings.Contains(body, "secret") {
		t.Errorf("the list shows a secret: %s", body)
	}
	path := "/v1/acl/tokens/" + made.Token.AccessorID
	var one wire.ACLTokenResponse
	code, body = fx.do(t, "GET", path, "", fx.as("admin"))
	if err := json.Unmarshal([]byte(body), &one); err != nil || code != 200 || one.Token.Description != "ci" || strings.Contains(body, secret) {
		t.Errorf("read: %d %s", code, body)
	}
	code, body = fx.do(t, "PUT", path, `{"description":"ci, read only","rules":["service \"web\" read"]}`, fx.as("admin"))
	if err := json.Unmarshal([]byte(body), &one); err != nil || code != 200 || one.Token.Description != "ci, read only" || fmt.Sprint(one.Token.Rules) != `[service "web" read]` {
		t.Errorf("update: %d %s", code, body)
	}
	code, body = fx.do(t, "PUT", "/v1/services/web/instances/10.9.9.9:80", "", "Bearer "+made.Secret)
	wantErr(t, "the token updated to read only, registering", code, body, 403, "permission_denied", `service "web" write`)

	// Without acl write (or acl read).
	code, body = fx.do(t, "POST", "/v1/acl/tokens", `{"rules":["service \"*\" write"]}`, fx.as("web"))
	wantErr(t, "create without acl write", code, body, 403, "permission_denied", "acl write")
	code, body = fx.do(t, "PUT", path, `{"rules":[]}`, fx.as("web"))
	wantErr(t, "update without acl write", code, body, 403, "permission_denied", "acl write")
	code, body = fx.do(t, "DELETE", path, "", fx.as("reader"))
	wantErr(t, "delete without acl write", code, body, 403, "permission_denied", "acl write")
	code, body = fx.do(t, "GET", "/v1/acl/tokens", "", fx.as("web"))
	wantErr(t, "list without acl read", code, body, 403, "permission_denied", "acl read")
	code, body = fx.do(t, "GET", path, "", fx.as("web"))
	wantErr(t, "reading another's token without acl read", code, body, 403, "permission_denied", "acl read")
	if code, body := fx.do(t, "GET", "/v1/acl/tokens/"+fx.ids["web"], "", fx.as("web")); code != 200 || !strings.Contains(body, fx.ids["web"]) {
		t.Errorf("reading one's own token: %d %s", code, body)
	}
	code, body = fx.do(t, "GET", "/v1/acl/whoami", "")
	if err := json.Unmarshal([]byte(body), &me); err != nil || code != 200 || !me.Anonymous || me.Token.AccessorID != acl.AnonymousID {
		t.Errorf("whoami without a token: %d %s", code, body)
	}

	var del httpapi.WriteBody
	code, body = fx.do(t, "DELETE", path, "", fx.as("admin"))
	if err := json.Unmarshal([]byte(body), &del); err != nil || code != 200 || del.Index == 0 {
		t.Errorf("delete: %d %s", code, body)
	}
	code, body = fx.do(t, "GET", path, "", fx.as("admin"))
	wantErr(t, "read after delete", code, body, 404, "not_found", made.Token.AccessorID)
	code, body = fx.do(t, "DELETE", "/v1/acl/tokens/anonymous", "", fx.as("admin"))
	wantErr(t, "delete the anonymous token", code, body, 409, "refused", "anonymous")
	code, body = fx.do(t, "POST", "/v1/acl/bootstrap", "", fx.as("admin"))
	wantErr(t, "bootstrap again", code, body, 409, "refused", "bootstrapped already")
	log := fx.log.String()
	if !strings.Contains(log, "token created") || !strings.Contains(log, "token deleted") || strings.Contains(log, secret) {
		t.Errorf("audit:\n%s", log)
	}
}

// TestACL_Bootstrap: before bootstrap every call is 403 saying so; the
// bootstrap answers the management token's secret, once.
func TestACL_Bootstrap(t *testing.T) {
	fx := &aclFixture{st: newTokenStore(), be: newMemBackend("web"), log: &syncBuffer{}}
	fx.start(t, httpapi.Config{}, nil)
	code, body := fx.do(t, "GET", "/v1/services", "")
	wantErr(t, "services before bootstrap", code, body, 403, "permission_denied", "not been bootstrapped")
	code, body = fx.do(t, "GET", "/v1/acl/whoami", "")
	wantErr(t, "whoami before bootstrap", code, body, 403, "permission_denied", "not been bootstrapped")
	var boot wire.ACLTokenSecret
	code, body = fx.do(t, "POST", "/v1/acl/bootstrap", "")
	if err := json.Unmarshal([]byte(body), &boot); err != nil || code != 200 || boot.Secret == "" || len(boot.Token.Rules) != 3 {
		t.Fatalf("bootstrap: %d %s", code, body)
	}
	code, body = fx.do(t, "GET", "/v1/acl/tokens", "", "Bearer "+boot.Secret)
	if code != 200 || !strings.Contains(body, boot.Token.AccessorID) || !strings.Contains(body, `"anonymous"`) {
		t.Errorf("list with the management token: %d %s", code, body)
	}
	code, body = fx.do(t, "POST", "/v1/acl/bootstrap", `{}`)
	wantErr(t, "bootstrap twice", code, body, 409, "refused", "bootstrapped already")
	if _, secret, _ := acl.SplitCredential(boot.Secret); strings.Contains(fx.log.String(), secret) {
		t.Errorf("the management secret is in the log:\n%s", fx.log)
	}
}

// TestACL_RoutesRefusedWhenOff: on a node without -acl the token routes
// answer the native port's refusal, and a token presented elsewhere is
// not looked at.
func TestACL_RoutesRefusedWhenOff(t *testing.T) {
	fx := &aclFixture{be: newMemBackend("web"), log: &syncBuffer{}}
	fx.start(t, httpapi.Config{}, fx.be)
	for _, r := range httpapi.New(httpapi.Config{}, nil).Routes() {
		if !strings.HasPrefix(r.Path, "/v1/acl/") {
			continue
		}
		path := strings.Replace(r.Path, "{accessor}", "anonymous", 1)
		code, body := fx.do(t, r.Method, path, `{"rules":[]}`)
		wantErr(t, r.Method+" "+path, code, body, 409, "refused", "start every server with -acl")
		if !strings.Contains(body, acl.ErrOff.Error()[:30]) {
			t.Errorf("%s %s: %s, want the native port's message", r.Method, path, body)
		}
	}
	for _, auth := range []string{"Bearer whatever", "Basic dXNlcjpwYXNz", ""} {
		if code, body := fx.do(t, "GET", "/v1/services", "", auth); code != 200 {
			t.Errorf("Authorization %q on a node without ACLs: %d %s", auth, code, body)
		}
	}
}

// TestACL_HostileInputOnTokenRoutes: bodies, accessor ids and parameters
// that are wrong get 400 (413 for a body over the limit) naming what is
// wrong, even with acl write, and change nothing.
func TestACL_HostileInputOnTokenRoutes(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{MaxBody: 4 << 10})
	id := fx.ids["web"]
	many := `"operator read"` + strings.Repeat(`,"operator read"`, acl.MaxRules)
	for _, tt := range []struct {
		method, path, body string
		status             int
		code, says         string
	}{
		{"POST", "/v1/acl/tokens", `{"description":"` + strings.Repeat("x", 8<<10) + `"}`, 413, "too_large", "4096"},
		{"POST", "/v1/acl/tokens", ``, 400, "invalid_argument", "no body"},
		{"POST", "/v1/acl/tokens", `{"rules":`, 400, "invalid_argument", "JSON object"},
		{"POST", "/v1/acl/tokens", `{"rules":"operator read"}`, 400, "invalid_argument", "JSON object"},
		{"POST", "/v1/acl/tokens", `{} {}`, 400, "invalid_argument", "more than one"},
		{"POST", "/v1/acl/tokens", `{"rulez":[]}`, 400, "invalid_argument", "rulez"},
		{"POST", "/v1/acl/tokens", `{"secret":"x"}`, 400, "invalid_argument", "secret"},
		{"POST", "/v1/acl/tokens", `{"rules":["service web write"]}`, 400, "invalid_argument", "double quotes"},
		{"POST", "/v1/acl/tokens", `{"rules":["root write"]}`, 400, "invalid_argument", "unknown resource"},
		{"POST", "/v1/acl/tokens", `{"rules":[` + many + `]}`, 400, "invalid_argument", "65 rules"},
		{"POST", "/v1/acl/tokens", `{"description":"` + strings.Repeat("d", 300) + `"}`, 400, "invalid_argument", "description"},
		{"POST", "/v1/acl/tokens", `{"expires_in":"forever"}`, 400, "invalid_argument", "expires_in"},
		{"POST", "/v1/acl/tokens", `{"expires_in":"-1h"}`, 400, "invalid_argument", "expires_in"},
		{"POST", "/v1/acl/tokens", `{"expires_in":"100000h"}`, 400, "invalid_argument", "expires_in"},
		{"POST", "/v1/acl/tokens", `{"expires_in":"1h","expires_in_ms":1000}`, 400, "invalid_argument", "both"},
		{"POST", "/v1/acl/tokens", `{"expires_in_ms":-5}`, 400, "invalid_argument", "expires_in_ms"},
		{"POST", "/v1/acl/tokens?x=1", `{}`, 400, "invalid_argument", "no query"},
		{"POST", "/v1/acl/bootstrap", `{"force":true}`, 400, "invalid_argument", "force"},
		{"PUT", "/v1/acl/tokens/" + id, `{"description":"x"}`, 400, "invalid_argument", "no rules"},
		{"PUT", "/v1/acl/tokens/" + id, `{"accessor_id":"` + id + `","rules":[]}`, 400, "invalid_argument", "accessor_id"},
		{"PUT", "/v1/acl/tokens/" + id, ``, 400, "invalid_argument", "no body"},
		{"PUT", "/v1/acl/tokens/nope", `{"rules":[]}`, 400, "invalid_argument", "accessor id"},
		{"GET", "/v1/acl/tokens/nope", ``, 400, "invalid_argument", "accessor id"},
		{"GET", "/v1/acl/tokens/" + strings.Repeat("a", 36), ``, 404, "not_found", "no token"},
		{"GET", "/v1/acl/tokens/" + strings.ToUpper(id), ``, 400, "invalid_argument", "accessor id"},
		{"GET", "/v1/acl/tokens/a%00b", ``, 400, "invalid_argument", "accessor id"},
		{"GET", "/v1/acl/tokens/" + strings.Repeat("z", 1000), ``, 400, "invalid_argument", "…"},
		{"DELETE", "/v1/acl/tokens/a/b", ``, 404, "not_found", "no such route"},
		{"DELETE", "/v1/acl/tokens/%2e%2e", ``, 400, "invalid_argument", "accessor id"},
		{"GET", "/v1/acl/whoami?verbose", ``, 400, "invalid_argument", "no query"},
		{"GET", "/v1/acl/bootstrap", ``, 405, "unknown_method", "takes POST"},
		{"POST", "/v1/acl/whoami", ``, 405, "unknown_method", "takes GET"},
		{"PATCH", "/v1/acl/tokens/" + id, `{}`, 405, "unknown_method", "takes GET, PUT, DELETE"},
		{"PUT", "/v1/acl/tokens", `{}`, 405, "unknown_method", "takes GET, POST"},
	} {
		code, body := fx.do(t, tt.method, tt.path, tt.body, fx.as("admin"))
		wantErr(t, fmt.Sprintf("%s %.60s %.40q", tt.method, tt.path, tt.body), code, body, tt.status, tt.code, tt.says)
		if len(body) > 2048 {
			t.Errorf("%s %.60s: a %d-byte answer echoes the input", tt.method, tt.path, len(body))
		}
	}
	var list wire.ACLTokenListResponse
	_, body := fx.do(t, "GET", "/v1/acl/tokens", "", fx.as("admin"))
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Tokens) != 5 || list.Index != fx.st.ACLTable().Index() {
		t.Errorf("bad requests changed the tokens: %s", body)
	}
}

// TestACL_EventsEndWithPermissionDenied: an event stream ends with an
// error event carrying permission_denied when its token is deleted, and
// when it expires.
func TestACL_EventsEndWithPermissionDenied(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{StreamKeepalive: time.Minute})
	for _, tt := range []struct {
		what, body, says string
	}{
		{"deleted", `{"rules":["service \"web\" read"]}`, "not known"},
		{"expired", `{"rules":["service \"web\" read"],"expires_in":"300ms"}`, "expired"},
	} {
		var made wire.ACLTokenSecret
		code, body := fx.do(t, "POST", "/v1/acl/tokens", tt.body, fx.as("admin"))
		if err := json.Unmarshal([]byte(body), &made); err != nil || code != 200 {
			t.Fatalf("create: %d %s", code, body)
		}
		resp := fx.send(t, "GET", "/v1/services/web/events", "", "Bearer "+made.Secret)
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: events: %d %s", tt.what, resp.StatusCode, b)
		}
		br := bufio.NewReader(resp.Body)
		if ev := readEvent(t, br); ev.kind != "up" {
			t.Fatalf("%s: first event %+v", tt.what, ev)
		}
		if ev := readEvent(t, br); ev.kind != "current" {
			t.Fatalf("%s: second event %+v", tt.what, ev)
		}
		if tt.what == "deleted" {
			if code, body := fx.do(t, "DELETE", "/v1/acl/tokens/"+made.Token.AccessorID, "", fx.as("admin")); code != 200 {
				t.Fatalf("delete: %d %s", code, body)
			}
		}
		got := make(chan sseEvent, 1)
		go func() { got <- readEvent(t, br) }()
		select {
		case ev := <-got:
			var e httpapi.ErrorBody
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil || ev.kind != "error" || e.Code != string(codes.CodePermissionDenied) || !strings.Contains(e.Message, tt.says) {
				t.Errorf("%s: last event %+v, want an error permission_denied saying %q", tt.what, ev, tt.says)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the stream did not end", tt.what)
		}
		if rest, _ := io.ReadAll(br); len(rest) != 0 {
			t.Errorf("%s: after the error event: %q", tt.what, rest)
		}
	}
}

// TestACL_CORSPreflightAllowsAuthorization: a browser may send the
// Authorization header (and POST) from the configured origin.
func TestACL_CORSPreflightAllowsAuthorization(t *testing.T) {
	fx := newACLFixture(t, httpapi.Config{CORSOrigin: "https://ui.example"})
	req, _ := http.NewRequest("OPTIONS", fx.url+"/v1/acl/tokens", nil)
	req.Header.Set("Origin", "https://ui.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	if resp.StatusCode != 204 || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Access-Control-Allow-Origin") != "https://ui.example" {
		t.Errorf("preflight: %d %v", resp.StatusCode, h)
	}
}
