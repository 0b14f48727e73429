package server

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/discoverd/discoverd/acl"
)

// tableStore is an acl.Store with a fixed table: needOperator only
// resolves tokens.
type tableStore struct {
	acl.Store
	mu sync.Mutex
	t  *acl.Table
}

func (s *tableStore) ACLTable() *acl.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

// TestNeedOperator: with ACLs on, /metrics and the profiler need a Bearer
// token with operator read: 401 with a challenge without one (or with one
// unknown), 403 for a token without the rule, 400 for a header not of the
// Bearer form, and before bootstrap nobody passes. Without ACLs nothing is
// asked.
func TestNeedOperator(t *testing.T) {
	cred := map[string]string{}
	var toks []acl.Token
	for name, rules := range map[string][]string{"operator": {"operator read"}, "web": {`service "web" write`}} {
		id, c, hash, err := acl.NewCredential()
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, acl.Token{AccessorID: id, SecretHash: hash, Rules: rules})
		cred[name] = c
	}
	st := &tableStore{t: acl.NewTable(1, 1, append(toks, acl.Token{AccessorID: acl.AnonymousID}))}
	g := acl.NewGuard(nil, st, slog.New(slog.DiscardHandler))
	defer g.Close()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) })
	serve := func(h http.Handler, auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/metrics", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	h := needOperator(g, "reading the metrics", ok)
	id, _, _ := acl.SplitCredential(cred["web"])
	for _, tt := range []struct {
		what, auth string
		status     int
		says       string
		challenge  string
	}{
		{"operator read", "Bearer " + cred["operator"], 200, "metrics", ""},
		{"no token", "", 401, "operator read", `Bearer realm="discoverd"`},
		{"a token without the rule", "Bearer " + cred["web"], 403, "needs the rule operator read", ""},
		{"an unknown token", "Bearer " + id + ".Xq9secretXq9", 401, "not known", `Bearer realm="discoverd", error="invalid_token"`},
		{"not Bearer", "Basic b3A6b3A=", 400, "Bearer <token>", ""},
	} {
		w := serve(h, tt.auth)
		if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.says) || w.Header().Get("WWW-Authenticate") != tt.challenge {
			t.Errorf("%s: %d %q %q, want %d saying %q", tt.what, w.Code, w.Header().Get("WWW-Authenticate"), w.Body.String(), tt.status, tt.says)
		}
		if strings.Contains(w.Body.String(), "Xq9secretXq9") {
			t.Errorf("%s: the answer echoes the token: %s", tt.what, w.Body)
		}
	}
	// The anonymous token given operator read: no header needed.
	st.mu.Lock()
	st.t = acl.NewTable(1, 2, append(toks, acl.Token{AccessorID: acl.AnonymousID, Rules: []string{"operator read"}}))
	st.mu.Unlock()
	if w := serve(h, ""); w.Code != 200 {
		t.Errorf("anonymous with operator read: %d %s", w.Code, w.Body)
	}
	st.mu.Lock()
	st.t = acl.NewTable(0, 3, nil)
	st.mu.Unlock()
	if w := serve(h, ""); w.Code != 401 || !strings.Contains(w.Body.String(), "bootstrapped") {
		t.Errorf("before bootstrap: %d %s", w.Code, w.Body)
	}
	if w := serve(needOperator(nil, "reading the metrics", ok), ""); w.Code != 200 {
		t.Errorf("ACLs off: %d %s", w.Code, w.Body)
	}
}
