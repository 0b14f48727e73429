package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/dnsserver"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// aclDo makes one HTTP request with token (none if "") and returns the
// status and the body.
func aclDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// aclSecret creates a token with rules through the HTTP API and returns its
// credential.
func aclSecret(t *testing.T, base, mgmt, body string) string {
	t.Helper()
	code, b := aclDo(t, "POST", base+"/v1/acl/tokens", mgmt, body)
	var res struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(b), &res); err != nil || code != 200 || res.Secret == "" {
		t.Fatalf("create %s: %d %s", body, code, b)
	}
	return res.Secret
}

func rcodeOf(t *testing.T, addr, name string) (*dns.Msg, string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("dns %s: %v", name, err)
	}
	return r, dns.RcodeToString[r.Rcode]
}

// TestHTTP_ACLMetricsAndDNS: a node with -acl, before and after a
// bootstrap made over the HTTP API: /metrics and /debug/pprof/ need a
// Bearer token with operator read (401 without a token, 403 without the
// rule, 200 with it) while /health/* stay open; the API refuses every call
// before bootstrap; DNS is REFUSED before bootstrap, then answers with the
// anonymous token's rights, NXDOMAIN for a service it may not read as for
// one that does not exist.
func TestHTTP_ACLMetricsAndDNS(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.ACL = true
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.HTTP.Pprof = true
		cfg.DNS = dnsserver.Config{Addr: "127.0.0.1:0"}
	}})
	n := c.WaitLeader()
	base := "http://" + n.Srv.HTTPAddr()
	dnsAddr := n.Srv.DNS().Addr()
	tc.WaitFor(t, 10*time.Second, "the node to be ready", func() bool {
		code, _ := aclDo(t, "GET", base+"/health/ready", "", "")
		return code == 200
	})

	// Before bootstrap.
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		if code, body := aclDo(t, "GET", base+path, "", ""); code != 401 || !strings.Contains(body, "bootstrapped") {
			t.Errorf("%s before bootstrap: %d %.200s", path, code, body)
		}
	}
	if code, body := aclDo(t, "GET", base+"/health/live", "", ""); code != 200 {
		t.Errorf("/health/live: %d %s", code, body)
	}
	if code, body := aclDo(t, "GET", base+"/v1/services", "", ""); code != 403 || !strings.Contains(body, `"permission_denied"`) {
		t.Errorf("/v1/services before bootstrap: %d %s", code, body)
	}
	if r, rc := rcodeOf(t, dnsAddr, "web.service.discoverd."); rc != "REFUSED" || len(r.Answer) != 0 {
		t.Errorf("DNS before bootstrap: %s", r)
	}

	// Bootstrap over HTTP.
	code, body := aclDo(t, "POST", base+"/v1/acl/bootstrap", "", "")
	var boot struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(body), &boot); err != nil || code != 200 || boot.Secret == "" {
		t.Fatalf("bootstrap: %d %s", code, body)
	}
	mgmt := boot.Secret
	if code, body := aclDo(t, "POST", base+"/v1/acl/bootstrap", "", ""); code != 409 || !strings.Contains(body, `"refused"`) {
		t.Errorf("bootstrap again: %d %s", code, body)
	}
	ops := aclSecret(t, base, mgmt, `{"description":"prometheus","rules":["operator read"]}`)
	web := aclSecret(t, base, mgmt, `{"description":"web","rules":["service \"web\" write"]}`)
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		for _, tt := range []struct {
			who, token string
			status     int
		}{{"management", mgmt, 200}, {"operator read", ops, 200}, {"web writer", web, 403}, {"none", "", 401}} {
			code, body := aclDo(t, "GET", base+path, tt.token, "")
			if code != tt.status {
				t.Errorf("%s with %s: %d %.200s, want %d", path, tt.who, code, body, tt.status)
			}
			if code == 200 && path == "/metrics" && !strings.Contains(body, "discoverd_raft_state") {
				t.Errorf("/metrics with %s: no discoverd metrics", tt.who)
			}
		}
	}

	// DNS: the anonymous token may read "public" only.
	for _, svc := range []string{"public", "secret"} {
		if code, body := aclDo(t, "PUT", base+"/v1/services/"+svc+"/instances/10.0.0.1:80", mgmt, `{"ttl":"60s"}`); code != 200 {
			t.Fatalf("register %s: %d %s", svc, code, body)
		}
	}
	if code, body := aclDo(t, "PUT", base+"/v1/acl/tokens/anonymous", mgmt, `{"description":"DNS","rules":["service \"public\" read"]}`); code != 200 {
		t.Fatalf("anonymous rules: %d %s", code, body)
	}
	if r, rc := rcodeOf(t, dnsAddr, "public.service.discoverd."); rc != "NOERROR" || len(r.Answer) != 1 {
		t.Errorf("DNS public: %s", r)
	}
	secret, rc := rcodeOf(t, dnsAddr, "secret.service.discoverd.")
	unknown, _ := rcodeOf(t, dnsAddr, "nosuch.service.discoverd.")
	if rc != "NXDOMAIN" || len(secret.Answer) != 0 || len(secret.Ns) != len(unknown.Ns) || secret.Authoritative != unknown.Authoritative {
		t.Errorf("DNS secret:\n%s\nwant as an unknown name:\n%s", secret, unknown)
	}
}
