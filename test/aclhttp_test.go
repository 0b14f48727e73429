package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// ACLs on the HTTP listener and DNS of real processes: before bootstrap
// DNS refuses, the API and /metrics deny; the token routes work through a
// follower; an event stream ends with permission_denied when its token is
// deleted on another node; /metrics needs operator read; DNS answers with
// the anonymous token's rights, an unreadable service as an unknown one.

// digSummary is what a dig answer says apart from its id and timing: the
// status, the flags and the section counts.
func digSummary(out string) string {
	return strings.Join(regexp.MustCompile(`status: \w+|flags: [a-z ]+;|(QUERY|ANSWER|AUTHORITY|ADDITIONAL): \d+`).FindAllString(out, -1), " ")
}

// sseNext reads the next event of a stream: its kind and data.
func sseNext(br *bufio.Reader) (kind, data string, err error) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return kind, data, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && kind != "":
			return kind, data, nil
		case strings.HasPrefix(line, "event: "):
			kind = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
}

func TestACL_HTTPAndDNS(t *testing.T) {
	ports := freePorts(t, 3)
	dnsAddr := map[string]string{}
	for i := range 3 {
		dnsAddr[fmt.Sprintf("n%d", i+1)] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	ac := startACLClusterWith(t, func(nd *node) []string {
		return []string{"-dns-addr", dnsAddr[nd.id], "-dns-ttl", "0s"}
	}, func(ac *aclCluster) {
		for _, nd := range ac.c.nodes {
			// A node still catching up says SERVFAIL; then REFUSED.
			poll(t, 15*time.Second, 100*time.Millisecond, nd.id+" to refuse DNS before bootstrap", func() (bool, string) {
				out := dig(t, dnsAddr[nd.id], "web.service.discoverd", "A")
				return strings.Contains(out, "status: REFUSED"), digSummary(out)
			})
			if st, code, body := ac.httpDo(t, "", nd.id, "GET", "/v1/services", nil); st != 403 || code != "permission_denied" || !strings.Contains(string(body), "bootstrapped") {
				t.Errorf("%s /v1/services before bootstrap: %d %s", nd.id, st, body)
			}
			if st, _, body := ac.httpDo(t, "", nd.id, "GET", "/metrics", nil); st != 401 {
				t.Errorf("%s /metrics before bootstrap: %d %.200s", nd.id, st, body)
			}
		}
	})
	h := ac.h
	defer h.dumpLogsIfFailed()
	leader := ac.leader(t)
	var follower, other string
	for _, nd := range ac.c.nodes {
		switch {
		case nd.id == leader:
		case follower == "":
			follower = nd.id
		default:
			other = nd.id
		}
	}

	// The token routes through a follower: it forwards the writes.
	var made wire.ACLTokenSecret
	st, _, body := ac.httpDo(t, ac.mgmt, follower, "POST", "/v1/acl/tokens",
		map[string]any{"description": "web watcher", "rules": []string{`service "web" read`}, "expires_in": "1h"})
	if err := json.Unmarshal(body, &made); err != nil || st != 200 || made.Secret == "" || made.Token.ExpiresAtMillis == 0 {
		t.Fatalf("create through %s: %d %s", follower, st, body)
	}
	path := "/v1/acl/tokens/" + made.Token.AccessorID
	poll(t, 10*time.Second, 50*time.Millisecond, "the token on "+other, func() (bool, string) {
		st, _, body := ac.httpDo(t, made.Secret, other, "GET", "/v1/acl/whoami", nil)
		return st == 200 && strings.Contains(string(body), made.Token.AccessorID), fmt.Sprint(st, " ", string(body))
	})
	if st, _, body := ac.httpDo(t, ac.mgmt, follower, "PUT", path, map[string]any{"description": "web watcher (v2)", "rules": []string{`service "web" read`}}); st != 200 {
		t.Errorf("update through %s: %d %s", follower, st, body)
	}
	poll(t, 10*time.Second, 50*time.Millisecond, "the update on the leader", func() (bool, string) {
		st, _, body := ac.httpDo(t, ac.mgmt, leader, "GET", path, nil)
		return st == 200 && strings.Contains(string(body), "(v2)"), fmt.Sprint(st, " ", string(body))
	})
	_, secret, _ := strings.Cut(made.Secret, ".")
	if st, _, body := ac.httpDo(t, ac.mgmt, other, "GET", "/v1/acl/tokens", nil); st != 200 || !strings.Contains(string(body), made.Token.AccessorID) || strings.Contains(string(body), secret) {
		t.Errorf("list on %s: %d %s", other, st, body)
	}
	if st, code, _ := ac.httpDo(t, made.Secret, follower, "POST", "/v1/acl/tokens", map[string]any{"rules": []string{"acl write"}}); st != 403 || code != "permission_denied" {
		t.Errorf("create without acl write: %d %s", st, code)
	}

	// A stream on one node ends when the token is deleted on another.
	req, _ := http.NewRequest("GET", "http://"+ac.http[other]+"/v1/services/web/events", nil)
	req.Header.Set("Authorization", "Bearer "+made.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if kind, data, err := sseNext(br); kind != "current" || err != nil {
		t.Fatalf("first event: %s %s %v", kind, data, err)
	}
	if st, _, body := ac.httpDo(t, ac.mgmt, leader, "DELETE", path, nil); st != 200 {
		t.Fatalf("delete on %s: %d %s", leader, st, body)
	}
	type ev struct{ kind, data string }
	last := make(chan ev, 1)
	go func() {
		for {
			kind, data, err := sseNext(br)
			if err != nil || kind == "error" {
				last <- ev{kind, data}
				return
			}
		}
	}()
	select {
	case e := <-last:
		if e.kind != "error" || !strings.Contains(e.data, `"code":"permission_denied"`) {
			t.Errorf("the stream ended with %s %s, want an error permission_denied", e.kind, e.data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a deleted token did not end within 10 s")
	}

	// /metrics: operator read.
	ops := ac.create(t, "prometheus", 0, "operator read")
	web := ac.create(t, "web writer", 0, `service "web" write`)
	for _, nd := range ac.c.nodes {
		poll(t, 10*time.Second, 50*time.Millisecond, nd.id+" /metrics with operator read", func() (bool, string) {
			st, _, body := ac.httpDo(t, ops.Secret, nd.id, "GET", "/metrics", nil)
			return st == 200 && strings.Contains(string(body), "discoverd_raft_state"), fmt.Sprint(st)
		})
		if st, _, _ := ac.httpDo(t, web.Secret, nd.id, "GET", "/metrics", nil); st != 403 {
			t.Errorf("%s /metrics without operator read: %d", nd.id, st)
		}
		if st, _, _ := ac.httpDo(t, "", nd.id, "GET", "/metrics", nil); st != 401 {
			t.Errorf("%s /metrics without a token: %d", nd.id, st)
		}
		if st, _, _ := ac.httpDo(t, "", nd.id, "GET", "/health/live", nil); st != 200 {
			t.Errorf("%s /health/live: %d", nd.id, st)
		}
	}

	// DNS with the anonymous token's rights.
	for i, svc := range []string{"public", "secret"} {
		if st, _, body := ac.httpDo(t, ac.mgmt, follower, "PUT", fmt.Sprintf("/v1/services/%s/instances/10.0.0.%d:80", svc, i+1), map[string]any{"ttl": "60s"}); st != 200 {
			t.Fatalf("register %s: %d %s", svc, st, body)
		}
	}
	if st, _, body := ac.httpDo(t, ac.mgmt, other, "PUT", "/v1/acl/tokens/anonymous", map[string]any{"description": "DNS", "rules": []string{`service "public" read`}}); st != 200 {
		t.Fatalf("anonymous rules: %d %s", st, body)
	}
	for _, nd := range ac.c.nodes {
		a := dnsAddr[nd.id]
		poll(t, 10*time.Second, 50*time.Millisecond, nd.id+" to answer public", func() (bool, string) {
			got := shortLines(dig(t, a, "+short", "public.service.discoverd", "A"))
			return slices.Equal(got, []string{"10.0.0.1"}), fmt.Sprint(got)
		})
		for _, pair := range [][2]string{{"secret.service.discoverd", "nosuch.service.discoverd"},
			{"_secret._tcp.service.discoverd", "_nosuch._tcp.service.discoverd"}, {"a.zone.secret.attr.discoverd", "a.zone.nosuch.attr.discoverd"}} {
			got, want := digSummary(dig(t, a, pair[0], "SRV")), digSummary(dig(t, a, pair[1], "SRV"))
			if !strings.Contains(got, "status: NXDOMAIN") || got != want {
				t.Errorf("%s %s: %q, want as %s: %q", nd.id, pair[0], got, pair[1], want)
			}
		}
	}
}
