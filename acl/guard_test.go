package acl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// fakeBackend records what reached it and serves a fixed state.
type fakeBackend struct {
	backend.DiscoveryBackend // unimplemented methods panic
	mu                       sync.Mutex
	registered               []string
	heartbeated              []string
	streams                  []*fakeStream
}

func (f *fakeBackend) Register(_ context.Context, r backend.Registration) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered = append(f.registered, r.Name)
	return 7, nil
}

func (f *fakeBackend) Heartbeat(_ context.Context, keys []backend.InstanceKey) ([]error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		f.heartbeated = append(f.heartbeated, k.Name)
	}
	return make([]error, len(keys)), nil
}

func (f *fakeBackend) List(_ context.Context, name string, _ backend.ListOptions) (uint64, []backend.Instance, error) {
	return 9, []backend.Instance{{Name: name, Addr: "10.0.0.1:80"}}, nil
}

func (f *fakeBackend) Services(context.Context, backend.ServicesOptions) (uint64, []backend.ServiceCount, error) {
	return 9, []backend.ServiceCount{{Name: "db", Instances: 1}, {Name: "public", Instances: 2}, {Name: "web", Instances: 3}}, nil
}

func (f *fakeBackend) Subscribe(_ context.Context, name string, _, _ uint64) (backend.UpdateStream, error) {
	s := &fakeStream{done: make(chan struct{})}
	f.mu.Lock()
	f.streams = append(f.streams, s)
	f.mu.Unlock()
	return s, nil
}

func (f *fakeBackend) Status(context.Context) (wire.StatusResponse, error) {
	return wire.StatusResponse{}, nil
}

type fakeStream struct {
	once   sync.Once
	done   chan struct{}
	closed atomic.Bool
}

func (s *fakeStream) Next(ctx context.Context) ([]backend.Event, error) {
	select {
	case <-s.done:
		return nil, errors.New("closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *fakeStream) Close() {
	s.once.Do(func() { close(s.done) })
	s.closed.Store(true)
}

// fakeStore holds a table that tests swap.
type fakeStore struct {
	mu sync.Mutex
	t  *Table
}

func (s *fakeStore) ACLTable() *Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

func (s *fakeStore) set(t *Table) {
	s.mu.Lock()
	old := s.t
	s.t = t
	s.mu.Unlock()
	old.Retire()
}

func (s *fakeStore) ACLBootstrap(context.Context) (wire.ACLTokenSecret, error) {
	return wire.ACLTokenSecret{}, nil
}
func (s *fakeStore) ACLCreateToken(context.Context, wire.ACLTokenCreateRequest) (wire.ACLTokenSecret, error) {
	return wire.ACLTokenSecret{Token: wire.ACLToken{AccessorID: "new"}}, nil
}
func (s *fakeStore) ACLUpdateToken(context.Context, wire.ACLTokenUpdateRequest) (wire.ACLTokenResponse, error) {
	return wire.ACLTokenResponse{}, nil
}
func (s *fakeStore) ACLDeleteToken(context.Context, wire.ACLTokenIDRequest) (uint64, error) {
	return 1, nil
}

type guardFixture struct {
	be    *fakeBackend
	st    *fakeStore
	g     *Guard
	audit *bytes.Buffer
	web   Token
	cred  map[string]string // name → credential
}

func newGuardFixture(t *testing.T) *guardFixture {
	t.Helper()
	fx := &guardFixture{be: &fakeBackend{}, st: &fakeStore{}, audit: &bytes.Buffer{}, cred: map[string]string{}}
	var toks []Token
	for name, rules := range map[string][]string{
		"web":      {`service "web*" write`},
		"reader":   {`service "*" read`},
		"operator": {`operator read`},
		"admin":    ManagementRules,
	} {
		tok, cred := newToken(t, rules...)
		toks = append(toks, tok)
		fx.cred[name] = cred
		if name == "web" {
			fx.web = tok
		}
	}
	toks = append(toks, Token{AccessorID: AnonymousID, Rules: []string{`service "public" read`}})
	fx.st.t = NewTable(1, 1, toks)
	var mu sync.Mutex
	fx.g = NewGuard(fx.be, fx.st, slog.New(slog.NewTextHandler(lockedWriter{&mu, fx.audit}, nil)))
	t.Cleanup(fx.g.Close)
	return fx
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (fx *guardFixture) as(name string) context.Context {
	return backend.WithCaller(context.Background(), backend.Caller{Token: fx.cred[name], Remote: "192.0.2.7:5000", Via: "native"})
}

func TestGuardWrites(t *testing.T) {
	fx := newGuardFixture(t)
	if _, err := fx.g.Register(fx.as("web"), backend.Registration{Name: "web-1"}); err != nil {
		t.Fatalf("web* writer registering web-1: %v", err)
	}
	for _, who := range []string{"web", "reader", "anonymous", "operator"} {
		_, err := fx.g.Register(fx.as(who), backend.Registration{Name: "db"})
		if !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), `service "db" write`) {
			t.Errorf("%s registering db: %v", who, err)
		}
	}
	if _, err := fx.g.Register(fx.as("admin"), backend.Registration{Name: "db"}); err != nil {
		t.Errorf("management token: %v", err)
	}
	if got := strings.Join(fx.be.registered, ","); got != "web-1,db" {
		t.Errorf("reached the store: %s", got)
	}
	// The audit names who, what and from where, never the secret.
	log := fx.audit.String()
	if !strings.Contains(log, "who="+fx.web.AccessorID) || !strings.Contains(log, `registering in service \"db\"`) || !strings.Contains(log, "from=192.0.2.7:5000") {
		t.Errorf("audit:\n%s", log)
	}
	for _, c := range fx.cred {
		if _, secret, _ := SplitCredential(c); strings.Contains(log, secret) {
			t.Fatalf("a secret is in the audit log:\n%s", log)
		}
	}
	if n := strings.Count(log, "write denied"); n != 4 {
		t.Errorf("%d denied writes audited, want 4:\n%s", n, log)
	}
}

func TestGuardHeartbeatPerInstance(t *testing.T) {
	fx := newGuardFixture(t)
	keys := []backend.InstanceKey{{Name: "web", Addr: "a:1"}, {Name: "db", Addr: "b:1"}, {Name: "db", Addr: "b:2"}, {Name: "web-2", Addr: "c:1"}}
	res, err := fx.g.Heartbeat(fx.as("web"), keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, false, true} {
		if (res[i] == nil) != want {
			t.Errorf("result %d (%s): %v", i, keys[i].Name, res[i])
		}
	}
	if !errors.Is(res[1], codes.ErrPermissionDenied) {
		t.Errorf("db: %v", res[1])
	}
	if got := strings.Join(fx.be.heartbeated, ","); got != "web,web-2" {
		t.Errorf("heartbeated %s", got)
	}
	if _, err := fx.g.Heartbeat(fx.as("reader"), keys[:1]); err != nil {
		t.Fatal(err)
	}
}

func TestGuardReadsSayNothing(t *testing.T) {
	fx := newGuardFixture(t)
	_, ins, err := fx.g.List(fx.as("web"), "db", backend.ListOptions{})
	if err != nil || len(ins) != 0 {
		t.Errorf("web token listing db: %v %v", ins, err)
	}
	_, ins, err = fx.g.List(fx.as("anonymous"), "public", backend.ListOptions{})
	if err != nil || len(ins) != 1 {
		t.Errorf("anonymous listing public: %v %v", ins, err)
	}
	_, svcs, err := fx.g.Services(fx.as("web"), backend.ServicesOptions{})
	if err != nil || len(svcs) != 1 || svcs[0].Name != "web" {
		t.Errorf("web token's services: %v %v", svcs, err)
	}
	_, svcs, _ = fx.g.Services(fx.as("reader"), backend.ServicesOptions{})
	if len(svcs) != 3 {
		t.Errorf("reader's services: %v", svcs)
	}
	if _, err := fx.g.Status(fx.as("reader")); !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "operator read") {
		t.Errorf("status without operator read: %v", err)
	}
	if _, err := fx.g.Status(fx.as("operator")); err != nil {
		t.Errorf("status with operator read: %v", err)
	}
	if _, _, err := fx.g.List(fx.as("nobody"), "web", backend.ListOptions{}); err != nil {
		t.Errorf("no token (anonymous) may ask, and gets nothing: %v", err)
	}
	bad := backend.WithCaller(context.Background(), backend.Caller{Token: fx.web.AccessorID + ".wrong-secret-wrong-secret-wrong-secret-wrong"})
	if _, _, err := fx.g.List(bad, "web", backend.ListOptions{}); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Errorf("a wrong secret is refused, not served as anonymous: %v", err)
	}
}

// TestGuardWatchEnds: a watch ends with permission_denied when its token is
// deleted, when it expires, and not when another token changes.
func TestGuardWatchEnds(t *testing.T) {
	fx := newGuardFixture(t)
	if _, err := fx.g.Subscribe(fx.as("web"), "db", 0, 0); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Fatalf("watching what the token may not read: %v", err)
	}
	st, err := fx.g.Subscribe(fx.as("web"), "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	next := make(chan error, 1)
	go func() {
		_, err := st.Next(context.Background())
		next <- err
	}()
	// Another token's change leaves the stream open.
	toks := fx.st.ACLTable().Tokens()
	var kept []Token
	for _, tok := range toks {
		if tok.AccessorID != fx.web.AccessorID {
			kept = append(kept, tok)
		}
	}
	extra, _ := newToken(t, `operator read`)
	fx.st.set(NewTable(1, 2, append(append([]Token{}, toks...), extra)))
	select {
	case err := <-next:
		t.Fatalf("stream ended on another token's change: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	fx.st.set(NewTable(1, 3, kept)) // the web token deleted
	select {
	case err := <-next:
		if !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "not known") {
			t.Errorf("after delete: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch of a deleted token did not end")
	}

	// Expiry: a token that expires 100 ms from now.
	exp, cred := newToken(t, `service "web" read`)
	exp.ExpiresAt = time.Now().Add(100 * time.Millisecond)
	fx.st.set(NewTable(1, 4, append(kept, exp)))
	ctx := backend.WithCaller(context.Background(), backend.Caller{Token: cred})
	st2, err := fx.g.Subscribe(ctx, "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	done := make(chan error, 1)
	go func() {
		_, err := st2.Next(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("after expiry: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch of an expired token did not end")
	}
}

func TestGuardAdmin(t *testing.T) {
	fx := newGuardFixture(t)
	if _, err := fx.g.Bootstrap(context.Background()); !errors.Is(err, codes.ErrRefused) || !strings.Contains(err.Error(), "bootstrapped already") {
		t.Errorf("bootstrap again: %v", err)
	}
	req := wire.ACLTokenCreateRequest{Description: "ci", Rules: []string{`service  "web"   write`}}
	if _, err := fx.g.CreateToken(fx.as("web"), req); !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "acl write") {
		t.Errorf("create without acl write: %v", err)
	}
	if _, err := fx.g.CreateToken(fx.as("admin"), wire.ACLTokenCreateRequest{Rules: []string{"service web write"}}); !errors.Is(err, codes.ErrInvalidArgument) {
		t.Errorf("a bad rule: %v", err)
	}
	if _, err := fx.g.CreateToken(fx.as("admin"), req); err != nil {
		t.Errorf("create: %v", err)
	}
	if !strings.Contains(fx.audit.String(), "token created") {
		t.Errorf("audit:\n%s", fx.audit)
	}
	if _, err := fx.g.ListTokens(fx.as("web")); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Errorf("list without acl read: %v", err)
	}
	list, err := fx.g.ListTokens(fx.as("admin"))
	if err != nil || len(list.Tokens) != 5 {
		t.Errorf("list: %v %v", list, err)
	}
	if r, err := fx.g.ReadToken(fx.as("web"), wire.ACLTokenIDRequest{AccessorID: fx.web.AccessorID}); err != nil || r.Token.AccessorID != fx.web.AccessorID {
		t.Errorf("reading one's own token: %v %v", r, err)
	}
	me, err := fx.g.WhoAmI(fx.as("anonymous"))
	if err != nil || !me.Anonymous || me.Token.AccessorID != AnonymousID {
		t.Errorf("whoami without token: %+v %v", me, err)
	}
	if _, err := fx.g.DeleteToken(fx.as("admin"), wire.ACLTokenIDRequest{AccessorID: fx.web.AccessorID}); err != nil {
		t.Errorf("delete: %v", err)
	}
	if !strings.Contains(fx.audit.String(), "token deleted") {
		t.Errorf("audit:\n%s", fx.audit)
	}
}

// catchingUpStore is a fakeStore whose node has or has not caught up with
// the cluster since it started.
type catchingUpStore struct {
	*fakeStore
	caught bool
}

func (s *catchingUpStore) CaughtUp() bool { return s.caught }

// TestGuardNotCaughtUp: a node that has not caught up since it started
// may hold a table older than bootstrap or than the caller's token; what
// it cannot resolve is not_ready (ask another node), never a final
// permission_denied, and is not audited as a denial. A token it resolves
// is checked as ever, and once caught up its answers are final again.
func TestGuardNotCaughtUp(t *testing.T) {
	fx := newGuardFixture(t)
	st := &catchingUpStore{fakeStore: fx.st}
	var audit bytes.Buffer
	var mu sync.Mutex
	g := NewGuard(fx.be, st, slog.New(slog.NewTextHandler(lockedWriter{&mu, &audit}, nil)))
	t.Cleanup(g.Close)
	if _, err := g.Register(fx.as("web"), backend.Registration{Name: "web-1"}); err != nil {
		t.Errorf("a token the old table knows: %v", err)
	}
	if _, err := g.Register(fx.as("reader"), backend.Registration{Name: "web-1"}); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Errorf("a known token without the right: %v, want permission_denied", err)
	}
	unknown := backend.WithCaller(context.Background(), backend.Caller{Token: "3f0c9a52-1b7e-4d0a-9c44-0e5f2d8b7a61.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	if _, err := g.Register(unknown, backend.Registration{Name: "web-1"}); !errors.Is(err, codes.ErrNotReady) || errors.Is(err, codes.ErrPermissionDenied) {
		t.Errorf("a token the old table does not know: %v, want not_ready", err)
	}
	st.set(NewTable(0, 0, nil)) // a restarted node before it replays bootstrap
	if _, err := g.Heartbeat(fx.as("web"), []backend.InstanceKey{{Name: "web", Addr: "10.0.0.1:80"}}); !errors.Is(err, codes.ErrNotReady) {
		t.Errorf("heartbeat before the table holds bootstrap: %v, want not_ready", err)
	}
	if _, _, err := g.List(fx.as("web"), "web", backend.ListOptions{}); !errors.Is(err, codes.ErrNotReady) {
		t.Errorf("list before the table holds bootstrap: %v, want not_ready", err)
	}
	mu.Lock()
	if n := strings.Count(audit.String(), "write denied"); n != 1 {
		t.Errorf("%d writes audited as denied, want 1 (the reader's):\n%s", n, audit.String())
	}
	mu.Unlock()
	st.caught = true
	if _, err := g.Register(fx.as("web"), backend.Registration{Name: "web-1"}); !errors.Is(err, ErrNotBootstrapped) {
		t.Errorf("caught up and not bootstrapped: %v, want ErrNotBootstrapped", err)
	}
}

// nopBackend answers heartbeats and registrations at once, so a benchmark
// through the guard measures the guard alone.
type nopBackend struct{ backend.DiscoveryBackend }

func (nopBackend) Heartbeat(_ context.Context, keys []backend.InstanceKey) ([]error, error) {
	return make([]error, len(keys)), nil
}

func (nopBackend) Register(context.Context, backend.Registration) (uint64, error) { return 1, nil }

// BenchmarkGuardHeartbeat is what the check adds to a per-request
// heartbeat: the same call straight to the backend and through the guard
// with a token of 1000 (the time the network and Raft take is the
// external benchmark's).
func BenchmarkGuardHeartbeat(b *testing.B) {
	var toks []Token
	for i := 0; i < 999; i++ {
		id, _, hash, _ := NewCredential()
		toks = append(toks, Token{AccessorID: id, SecretHash: hash})
	}
	id, cred, hash, _ := NewCredential()
	toks = append(toks, Token{AccessorID: id, SecretHash: hash, Rules: []string{`service "web*" write`, `service "db" read`, `operator read`}})
	st := &fakeStore{t: NewTable(1, 1, toks)}
	g := NewGuard(nopBackend{}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer g.Close()
	keys := []backend.InstanceKey{{Name: "web-api", Addr: "10.0.0.1:80"}}
	ctx := backend.WithCaller(context.Background(), backend.Caller{Token: cred, Remote: "10.0.0.9:5000", Via: "native"})
	b.Run("direct", func(b *testing.B) {
		var be backend.DiscoveryBackend = nopBackend{}
		for i := 0; i < b.N; i++ {
			_, _ = be.Heartbeat(ctx, keys)
		}
	})
	b.Run("guarded", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := g.Heartbeat(ctx, keys); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("guarded-register", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := g.Register(ctx, backend.Registration{Name: "web-api", Addr: "10.0.0.1:80"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
