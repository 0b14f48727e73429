package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The HTTP/JSON API (/v1/, package httpapi) of real `discoverd server`
// processes, with a plain net/http client and with curl (docs/http.md).

// apiCall makes one API request and returns its status, body and header.
func apiCall(t *testing.T, method, url, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// apiWrite makes a write that must succeed and returns its index.
func apiWrite(t *testing.T, method, url, body string) uint64 {
	t.Helper()
	code, b, _ := apiCall(t, method, url, body)
	var w struct{ Index uint64 }
	if err := json.Unmarshal([]byte(b), &w); code != http.StatusOK || err != nil || w.Index == 0 {
		t.Fatalf("%s %s: %d %s", method, url, code, b)
	}
	return w.Index
}

// sse reads a stream's events.
type sse struct {
	t  *testing.T
	br *bufio.Reader
}

type sseEvent struct{ kind, id, data string }

func (s sse) next() sseEvent {
	s.t.Helper()
	var ev sseEvent
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			s.t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && ev.kind != "":
			return ev
		case strings.HasPrefix(line, "event: "):
			ev.kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// openEvents opens a service's event stream, resuming after lastID if set.
func openEvents(t *testing.T, base, name, lastID string) (sse, func()) {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/v1/services/"+name+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events: %d %s", resp.StatusCode, b)
	}
	return sse{t: t, br: bufio.NewReader(resp.Body)}, func() { _ = resp.Body.Close() }
}

// TestHTTPAPI_EventsResumeByLastEventIDAcrossANodeKill: a stream on a
// follower delivers changes with id = index; the follower is killed (-9),
// changes go on, and a stream opened on another node with the last id
// received gets exactly the changes it missed, then a current marker.
// With the leader killed too, the last node answers a write 503 with
// Retry-After and the no_leader code.
func TestHTTPAPI_EventsResumeByLastEventIDAcrossANodeKill(t *testing.T) {
	h := newHarness(t)
	c, httpAddr := h.httpCluster(nil)
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	var follower, other string
	for _, id := range c.ids() {
		if id != st.Leader {
			if follower == "" {
				follower = id
			} else {
				other = id
			}
		}
	}
	url := func(id string) string { return "http://" + httpAddr[id] }
	apiWrite(t, "PUT", url(st.Leader)+"/v1/services/web/instances/10.0.0.1:80", `{"attrs":{"v":"1"},"ttl":"1m"}`)
	// The follower may not have applied the write yet: wait for it there.
	poll(t, 10*time.Second, 50*time.Millisecond, "the instance on the follower", func() (bool, string) {
		_, b, _ := apiCall(t, "GET", url(follower)+"/v1/services/web", "")
		return strings.Contains(b, "10.0.0.1:80"), b
	})
	s, closeS := openEvents(t, url(follower), "web", "")
	defer closeS()
	if ev := s.next(); ev.kind != "up" || ev.id != "" {
		t.Fatalf("first event %+v, want up without id", ev)
	}
	if ev := s.next(); ev.kind != "current" || ev.id == "" {
		t.Fatalf("second event %+v, want current with an id", ev)
	}
	up2 := apiWrite(t, "PUT", url(st.Leader)+"/v1/services/web/instances/10.0.0.2:80", `{"ttl":"1m"}`)
	ev := s.next()
	if ev.kind != "up" || ev.id != fmt.Sprint(up2) {
		t.Fatalf("change %+v, want up id %d", ev, up2)
	}
	c.node(follower).p.kill9(t)
	up3 := apiWrite(t, "PUT", url(st.Leader)+"/v1/services/web/instances/10.0.0.3:80", `{"ttl":"1m"}`)
	down1 := apiWrite(t, "DELETE", url(other)+"/v1/services/web/instances/10.0.0.1:80", "")
	r, closeR := openEvents(t, url(other), "web", ev.id)
	defer closeR()
	if e := r.next(); e.kind != "up" || e.id != fmt.Sprint(up3) || !strings.Contains(e.data, `"addr":"10.0.0.3:80"`) {
		t.Fatalf("resumed: %+v, want up 10.0.0.3:80 id %d", e, up3)
	}
	if e := r.next(); e.kind != "down" || e.id != fmt.Sprint(down1) || !strings.Contains(e.data, `"reason":"unregister"`) {
		t.Fatalf("resumed: %+v, want down 10.0.0.1:80 id %d", e, down1)
	}
	if e := r.next(); e.kind != "current" {
		t.Fatalf("resumed: %+v, want current", e)
	}
	c.node(st.Leader).p.kill9(t)
	poll(t, 20*time.Second, 100*time.Millisecond, "503 no_leader with Retry-After from the last node", func() (bool, string) {
		code, b, hd := apiCall(t, "PUT", url(other)+"/v1/services/web/instances/10.0.0.4:80", `{"request_id":"after-kill"}`)
		return code == http.StatusServiceUnavailable && hd.Get("Retry-After") != "" && strings.Contains(b, `"code":"no_leader"`),
			fmt.Sprintf("%d %s %v", code, b, hd)
	})
}

// TestHTTPAPI_Curl: curl against real processes registers, reads with
// the freshness headers, heartbeats, blocks on a query until a change,
// follows the event stream, reads an error body, and gets a CORS
// preflight answered for the origin of -http-cors-origin only.
func TestHTTPAPI_Curl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is needed (.ci/run installs it with apt-get): %v", err)
	}
	h := newHarness(t)
	c, httpAddr := h.httpCluster(func(*node) []string { return []string{"-http-cors-origin", "https://ui.example"} })
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	base := "http://" + httpAddr[st.Leader]
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("-X", "PUT", "-d", `{"attrs":{"zone":"a"},"ttl":"30s"}`, base+"/v1/services/web/instances/10.0.0.1:8080"); !strings.HasPrefix(out, `{"index":`) {
		t.Fatalf("register: %s", out)
	}
	out := run("-i", base+"/v1/services/web?attr=zone:a")
	for _, want := range []string{"HTTP/1.1 200 OK", "X-Discoverd-Index: ", "X-Discoverd-Known-Leader: true", "X-Discoverd-Last-Contact: 0", `"addr":"10.0.0.1:8080"`, `"attrs":{"zone":"a"}`} {
		if !strings.Contains(out, want) {
			t.Fatalf("list: no %q in\n%s", want, out)
		}
	}
	var index string
	for _, line := range strings.Split(out, "\r\n") {
		if v, ok := strings.CutPrefix(line, "X-Discoverd-Index: "); ok {
			index = v
		}
	}
	if out := run("-X", "PUT", base+"/v1/services/web/instances/10.0.0.1:8080/heartbeat"); strings.TrimSpace(out) != "{}" {
		t.Fatalf("heartbeat: %s", out)
	}
	// A blocking query at that index answers once another instance comes.
	done := make(chan string, 1)
	go func() {
		out, err := exec.Command(curl, "-sS", "--max-time", "20", base+"/v1/services/web?index="+index+"&wait=15s").CombinedOutput()
		done <- fmt.Sprint(string(out), err)
	}()
	apiWrite(t, "PUT", base+"/v1/services/web/instances/10.0.0.2:8080", `{}`)
	select {
	case out := <-done:
		if !strings.Contains(out, "10.0.0.2:8080") {
			t.Fatalf("blocking query: %s", out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the blocking query did not answer within 15 s of the change")
	}
	// The event stream, cut by curl's --max-time (exit 28): the state.
	ev, _ := exec.Command(curl, "-sS", "-N", "--max-time", "2", base+"/v1/services/web/events").Output()
	if !strings.Contains(string(ev), "event: up\ndata: {") || !strings.Contains(string(ev), "event: current\nid: ") {
		t.Fatalf("events: %s", ev)
	}
	for origin, allowed := range map[string]bool{"https://ui.example": true, "https://evil.example": false} {
		out = run("-i", "-X", "OPTIONS", "-H", "Origin: "+origin, "-H", "Access-Control-Request-Method: PUT", base+"/v1/services/web/instances/10.0.0.1:8080")
		if got := strings.Contains(out, "Access-Control-Allow-Origin: "+origin) && strings.Contains(out, "HTTP/1.1 204"); got != allowed {
			t.Fatalf("preflight from %s (allowed: %v):\n%s", origin, allowed, out)
		}
	}
	out = run("-i", "-X", "PUT", "-d", `{"ttl":"forever"}`, base+"/v1/services/web/instances/10.0.0.1:8080")
	if !strings.Contains(out, "HTTP/1.1 400 Bad Request") || !strings.Contains(out, `"code":"invalid_argument"`) || !strings.Contains(out, `ttl \"forever\"`) {
		t.Fatalf("bad ttl: %s", out)
	}
}
