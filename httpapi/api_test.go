package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// apiNode starts a one-node cluster with the API on an HTTP listener and
// returns its base URL.
func apiNode(t *testing.T, api httpapi.Config) string {
	t.Helper()
	c := tc.New(t, tc.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.HTTP.API = api
	}})
	n := c.WaitLeader()
	base := "http://" + n.Srv.HTTPAddr()
	tc.WaitFor(t, 10*time.Second, "the node to be ready", func() bool {
		code, _, _ := call(t, "GET", base+"/v1/services", "")
		return code == http.StatusOK
	})
	return base
}

// call makes one request and returns its status, body and header.
func call(t *testing.T, method, url, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 20 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// must calls and fails unless the status is want; it decodes the body into out.
func must(t *testing.T, want int, method, url, body string, out any) http.Header {
	t.Helper()
	code, b, h := call(t, method, url, body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(b), out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
	return h
}

// TestAPI_EveryRoute: register, list (filtered, consistent), services,
// heartbeat, batch heartbeat, unregister, status, members and the document,
// with the freshness headers on reads.
func TestAPI_EveryRoute(t *testing.T) {
	base := apiNode(t, httpapi.Config{})
	var w httpapi.WriteBody
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.1:80", `{"attrs":{"zone":"a"},"ttl":"30s","request_id":"r1"}`, &w)
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.2:80", `{"attrs":{"zone":"b"}}`, nil)
	if w.Index == 0 {
		t.Fatal("register answered index 0")
	}
	var again httpapi.WriteBody
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.1:80", `{"attrs":{"zone":"a"},"ttl":"30s","request_id":"r1"}`, &again)
	if again.Index != w.Index {
		t.Errorf("a retry with the same request id answered index %d, the write was %d", again.Index, w.Index)
	}
	var l httpapi.ListBody
	h := must(t, 200, "GET", base+"/v1/services/web?attr=zone:a&consistent", "", &l)
	if len(l.Instances) != 1 || l.Instances[0].Addr != "10.0.0.1:80" || l.Instances[0].TTLMillis != 30000 {
		t.Fatalf("filtered list: %+v", l)
	}
	if h.Get("X-Discoverd-Index") != fmt.Sprint(l.Index) || h.Get("X-Discoverd-Known-Leader") != "true" || h.Get("X-Discoverd-Last-Contact") != "0" {
		t.Errorf("freshness headers: %v (index %d)", h, l.Index)
	}
	var s httpapi.ServicesBody
	must(t, 200, "GET", base+"/v1/services", "", &s)
	if len(s.Services) != 1 || s.Services[0] != (httpapi.ServiceCount{Name: "web", Instances: 2}) {
		t.Fatalf("services: %+v", s)
	}
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.1:80/heartbeat", "", nil)
	var hb httpapi.HeartbeatResults
	must(t, 200, "PUT", base+"/v1/heartbeat", `{"instances":[{"name":"web","addr":"10.0.0.2:80"},{"name":"web","addr":"10.9.9.9:1"}]}`, &hb)
	if len(hb.Results) != 2 || hb.Results[0].Code != "" || hb.Results[1].Code != "not_found" {
		t.Fatalf("batch heartbeat: %+v", hb)
	}
	must(t, 200, "DELETE", base+"/v1/services/web/instances/10.0.0.2:80?request_id=d1", "", nil)
	must(t, 200, "GET", base+"/v1/services/web", "", &l)
	if len(l.Instances) != 1 {
		t.Fatalf("after unregister: %+v", l)
	}
	var st map[string]any
	must(t, 200, "GET", base+"/v1/status", "", &st)
	if st["leader"] == "" || len(st["nodes"].([]any)) != 1 {
		t.Errorf("status: %v", st)
	}
	var m map[string]any
	must(t, 200, "GET", base+"/v1/members", "", &m)
	if len(m["members"].([]any)) != 1 {
		t.Errorf("members: %v", m)
	}
	var doc map[string]any
	must(t, 200, "GET", base+"/v1/openapi.json", "", &doc)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi.json: %v", doc["openapi"])
	}
}

// TestAPI_StatusOfEveryCode: each native code has its HTTP status; the
// unavailable ones say when to retry.
func TestAPI_StatusOfEveryCode(t *testing.T) {
	want := map[codes.Code]int{codes.CodeOK: 200, codes.CodeInvalidArgument: 400, codes.CodeNotFound: 404,
		codes.CodeNoLeader: 503, codes.CodeNotLeader: 503, codes.CodeUnknownOutcome: 504, codes.CodeStaleNode: 503,
		codes.CodeNotReady: 503, codes.CodeTooLarge: 413, codes.CodeTimeout: 504, codes.CodeShuttingDown: 503,
		codes.CodeUnknownMethod: 501, codes.CodeUnavailable: 503, codes.CodeResourceExhausted: 429,
		codes.CodeOverloaded: 503, codes.CodeConflict: 409, codes.CodeRefused: 409, codes.CodePermissionDenied: 403, codes.CodeInternal: 500}
	for _, c := range codes.All() {
		w, ok := want[c]
		if !ok {
			t.Errorf("code %q has no expected status in this test: add it", c)
			continue
		}
		if got := httpapi.Status(c); got != w {
			t.Errorf("Status(%q) = %d, want %d", c, got, w)
		}
	}
}

// TestAPI_HostileInputChangesNothing: every bad request gets a JSON error
// naming what is wrong, with the right status, and no service appears.
func TestAPI_HostileInputChangesNothing(t *testing.T) {
	base := apiNode(t, httpapi.Config{MaxBody: 4 << 10})
	for _, tt := range []struct {
		method, path, body string
		status             int
		code, says         string
	}{
		{"PUT", "/v1/services/web/instances/10.0.0.1:80", `{"attrs":`, 400, "invalid_argument", "JSON object"},
		{"PUT", "/v1/services/web/instances/10.0.0.1:80", `{"atrs":{}}`, 400, "invalid_argument", "atrs"},
		{"PUT", "/v1/services/web/instances/10.0.0.1:80", `{} {}`, 400, "invalid_argument", "more than one"},
		{"PUT", "/v1/services/web/instances/10.0.0.1:80", `{"ttl":"forever"}`, 400, "invalid_argument", "ttl"},
		{"PUT", "/v1/services/web/instances/10.0.0.1:80", `{"ttl":"48h"}`, 400, "invalid_argument", "ttl"},
		{"PUT", "/v1/services/web/instances/nohostport", `{}`, 400, "invalid_argument", "addr"},
		{"PUT", "/v1/services/we%00b/instances/10.0.0.1:80", `{}`, 400, "invalid_argument", "name"},
		{"PUT", "/v1/services/web/instances/10.0.0.1:80", `{"attrs":{"k":"` + strings.Repeat("x", 8<<10) + `"}}`, 413, "too_large", "4096"},
		{"PUT", "/v1/services/web/instances/10.0.0.1:80?x=1", `{}`, 400, "invalid_argument", "no query"},
		{"PUT", "/v1/heartbeat", `{"instances":[]}`, 400, "invalid_argument", "1 to 1024"},
		{"PUT", "/v1/heartbeat", ``, 400, "invalid_argument", "no body"},
		{"PUT", "/v1/services/web/instances/10.0.0.9:80/heartbeat", ``, 404, "not_found", "register"},
		{"DELETE", "/v1/services/web/instances/10.0.0.9:80", ``, 404, "not_found", ""},
		{"DELETE", "/v1/services/web/instances/10.0.0.9:80?if_index=x", ``, 400, "invalid_argument", "if_index"},
		{"GET", "/v1/services/web?attr=nocolon", ``, 400, "invalid_argument", "key:value"},
		{"GET", "/v1/services/web?index=x", ``, 400, "invalid_argument", "index"},
		{"GET", "/v1/services/web?index=1&wait=11m", ``, 400, "invalid_argument", "10m"},
		{"GET", "/v1/services/web?wait=1s", ``, 400, "invalid_argument", "without index"},
		{"GET", "/v1/services/web?bogus", ``, 400, "invalid_argument", "bogus"},
		{"GET", "/v1/services/web/events?index=-1", ``, 400, "invalid_argument", "whole number"},
		{"GET", "/v1/nothing", ``, 404, "not_found", "no such route"},
		{"POST", "/v1/services", ``, 405, "unknown_method", "takes GET"},
		{"GET", "/v1/heartbeat", ``, 405, "unknown_method", "takes PUT"},
		{"POST", "/v1/services/web/instances/10.0.0.1:80", ``, 405, "unknown_method", "takes PUT, DELETE"},
	} {
		code, body, _ := call(t, tt.method, base+tt.path, tt.body)
		var e httpapi.ErrorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != tt.status || e.Code != tt.code || !strings.Contains(e.Message, tt.says) {
			t.Errorf("%s %s %.40q: %d %s, want %d %s saying %q", tt.method, tt.path, tt.body, code, body, tt.status, tt.code, tt.says)
		}
	}
	var s httpapi.ServicesBody
	must(t, 200, "GET", base+"/v1/services", "", &s)
	if len(s.Services) != 0 {
		t.Errorf("bad requests changed the state: %+v", s)
	}
}

// TestAPI_BlockingQuery: a query at the current index waits, and answers
// as soon as the service changes; one that sees no change answers at its
// wait with the same index.
func TestAPI_BlockingQuery(t *testing.T) {
	base := apiNode(t, httpapi.Config{})
	var l httpapi.ListBody
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.1:80", `{}`, nil)
	must(t, 200, "GET", base+"/v1/services/web", "", &l)
	type answer struct {
		l   httpapi.ListBody
		err error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("%s/v1/services/web?index=%d&wait=30s", base, l.Index))
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		var a answer
		a.err = json.NewDecoder(resp.Body).Decode(&a.l)
		got <- a
	}()
	// Another service's change does not wake it.
	must(t, 200, "PUT", base+"/v1/services/db/instances/10.0.0.5:5432", `{}`, nil)
	select {
	case a := <-got:
		t.Fatalf("the blocking query answered before web changed: %+v %v", a.l, a.err)
	case <-time.After(300 * time.Millisecond):
	}
	var w httpapi.WriteBody
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.2:80", `{}`, &w)
	select {
	case a := <-got:
		if a.err != nil || len(a.l.Instances) != 2 || a.l.Index < w.Index {
			t.Fatalf("woken query: %+v %v (write at %d)", a.l, a.err, w.Index)
		}
		l = a.l
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking query did not answer within 10 s of the change")
	}
	start := time.Now()
	var to httpapi.ListBody
	must(t, 200, "GET", fmt.Sprintf("%s/v1/services/web?index=%d&wait=500ms", base, l.Index), "", &to)
	if time.Since(start) < 500*time.Millisecond || to.Index != l.Index || len(to.Instances) != 2 {
		t.Fatalf("timed-out query after %v: %+v, want index %d", time.Since(start), to, l.Index)
	}
}

// sseEvent is one event of a stream.
type sseEvent struct{ kind, id, data string }

// readEvent reads the next event, skipping comments.
func readEvent(t *testing.T, br *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && ev.kind != "":
			return ev
		case strings.HasPrefix(line, "event: "):
			ev.kind = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			ev.id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[len("data: "):]
		}
	}
}

// TestAPI_EventsStateChangesAndResume: a stream starts with the state
// block (no ids) and a current marker, then changes with id = index; one
// resumed with Last-Event-ID gets exactly the changes after it.
func TestAPI_EventsStateChangesAndResume(t *testing.T) {
	base := apiNode(t, httpapi.Config{StreamKeepalive: 200 * time.Millisecond})
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.1:80", `{}`, nil)
	resp, err := http.Get(base + "/v1/services/web/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	if ev := readEvent(t, br); ev.kind != "up" || ev.id != "" || !strings.Contains(ev.data, `"addr":"10.0.0.1:80"`) {
		t.Fatalf("first event: %+v", ev)
	}
	cur := readEvent(t, br)
	if cur.kind != "current" || cur.id == "" {
		t.Fatalf("second event: %+v", cur)
	}
	var w1, w2 httpapi.WriteBody
	must(t, 200, "PUT", base+"/v1/services/web/instances/10.0.0.2:80", `{}`, &w1)
	must(t, 200, "DELETE", base+"/v1/services/web/instances/10.0.0.1:80", "", &w2)
	if ev := readEvent(t, br); ev.kind != "up" || ev.id != fmt.Sprint(w1.Index) {
		t.Fatalf("change event: %+v, want up id %d", ev, w1.Index)
	}
	if ev := readEvent(t, br); ev.kind != "down" || ev.id != fmt.Sprint(w2.Index) || !strings.Contains(ev.data, `"reason":"unregister"`) {
		t.Fatalf("change event: %+v, want down id %d", ev, w2.Index)
	}
	// Resume after the up: the down follows, then a current marker.
	req, _ := http.NewRequest("GET", base+"/v1/services/web/events", nil)
	req.Header.Set("Last-Event-ID", fmt.Sprint(w1.Index))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	br2 := bufio.NewReader(r2.Body)
	if ev := readEvent(t, br2); ev.kind != "down" || ev.id != fmt.Sprint(w2.Index) {
		t.Fatalf("resumed stream: %+v, want down id %d", ev, w2.Index)
	}
	if ev := readEvent(t, br2); ev.kind != "current" {
		t.Fatalf("resumed stream: %+v, want current", ev)
	}
	// Idle: keepalive comments keep coming.
	line, err := br2.ReadString('\n')
	if err != nil || line != ": keepalive\n" {
		t.Fatalf("idle stream: %q %v", line, err)
	}
}

// TestAPI_SlowEventReaderIsCutOff: a stream whose reader takes nothing
// does not hold up the node (writes and reads go on), and is cut off once
// a write to it waits longer than StreamWriteTimeout.
func TestAPI_SlowEventReaderIsCutOff(t *testing.T) {
	base := apiNode(t, httpapi.Config{StreamWriteTimeout: 300 * time.Millisecond, StreamKeepalive: time.Minute})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "GET /v1/services/web/events HTTP/1.1\r\nHost: x\r\n\r\n")
	big := strings.Repeat("v", 1000)
	attrs := "{"
	for i := range 12 {
		attrs += fmt.Sprintf(`"k%d":"%s",`, i, big)
	}
	attrs = strings.TrimSuffix(attrs, ",") + "}"
	// 400 events of 12 KB, more than the kernel buffers between the
	// stream and the reader hold (4 MiB at most on Linux): writes go on
	// while the reader takes nothing.
	const n, workers = 400, 8
	errs := make(chan error, workers)
	for wk := range workers {
		go func() {
			for i := wk; i < n; i += workers {
				code, body, _ := call(t, "PUT", fmt.Sprintf("%s/v1/services/web/instances/10.0.%d.%d:80", base, i/250, i%250), `{"attrs":`+attrs+`}`)
				if code != 200 {
					errs <- fmt.Errorf("registration %d: %d %s", i, code, body)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	must(t, 200, "GET", base+"/v1/services/web", "", nil)
	// The stream is cut (the kernel may keep the bytes it holds: the
	// reader cannot tell); the node counts it.
	tc.WaitFor(t, 10*time.Second, "the stalled stream to be cut off", func() bool {
		_, m, _ := call(t, "GET", base+"/metrics", "")
		return strings.Contains(m, "\ndiscoverd_watch_slow_consumer_cuts_total 1\n") && strings.Contains(m, "\ndiscoverd_watch_streams 0\n")
	})
}

// TestAPI_CORS: no CORS headers by default; with an origin, that origin
// (only) gets them, and a preflight is answered.
func TestAPI_CORS(t *testing.T) {
	for _, origin := range []string{"", "https://ui.example"} {
		base := apiNode(t, httpapi.Config{CORSOrigin: origin})
		for _, from := range []string{"https://ui.example", "https://evil.example"} {
			req, _ := http.NewRequest("OPTIONS", base+"/v1/services", nil)
			req.Header.Set("Origin", from)
			req.Header.Set("Access-Control-Request-Method", "GET")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			allowed := origin != "" && from == origin
			if got := resp.Header.Get("Access-Control-Allow-Origin"); (got == from) != allowed || (resp.StatusCode == 204) != allowed {
				t.Errorf("origin %q configured, preflight from %q: %d, Allow-Origin %q", origin, from, resp.StatusCode, got)
			}
		}
	}
}

// TestOpenAPI_EveryRouteDocumentedAndEveryPathARoute: docs/openapi.json
// (the document served) names exactly the API's routes.
func TestOpenAPI_EveryRouteDocumentedAndEveryPathARoute(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	routes := map[httpapi.Route]bool{}
	for _, r := range httpapi.New(httpapi.Config{}, nil).Routes() {
		routes[r] = true
		if _, ok := doc.Paths[r.Path][strings.ToLower(r.Method)]; !ok {
			t.Errorf("route %s %s is not in docs/openapi.json", r.Method, r.Path)
		}
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if !routes[httpapi.Route{Method: strings.ToUpper(m), Path: p}] {
				t.Errorf("docs/openapi.json has %s %s, which is no route", strings.ToUpper(m), p)
			}
		}
	}
}

// TestAPI_StopEndsStreamsAndBlockingQueries: a graceful stop ends an event
// stream with an error event saying the node is stopping, and a blocking
// query with 503 shutting_down, at once rather than at their waits.
func TestAPI_StopEndsStreamsAndBlockingQueries(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 1, Configure: func(_ int, cfg *server.Config) {
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.HTTP.API = httpapi.Config{StreamKeepalive: time.Minute}
	}})
	base := "http://" + c.WaitLeader().Srv.HTTPAddr()
	tc.WaitFor(t, 10*time.Second, "the node to be ready", func() bool {
		code, _, _ := call(t, "GET", base+"/v1/services", "")
		return code == http.StatusOK
	})
	var l httpapi.ListBody
	must(t, 200, "GET", base+"/v1/services/web", "", &l)
	resp, err := http.Get(base + "/v1/services/web/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if ev := readEvent(t, br); ev.kind != "current" {
		t.Fatalf("first event of an empty service: %+v", ev)
	}
	blocked := make(chan string, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("%s/v1/services/web?index=%d&wait=5m", base, l.Index))
		if err != nil {
			blocked <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		blocked <- fmt.Sprint(resp.StatusCode, " ", resp.Header.Get("Retry-After"), " ", string(b))
	}()
	// Idle kept-alive connections would count: none, and the scrapes
	// keep none.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	scraper := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	tc.WaitFor(t, 10*time.Second, "the blocking query to reach the node", func() bool {
		resp, err := scraper.Get(base + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := string(b)
		// The stream, the query and this scrape.
		var n int
		i := strings.Index(m, "\ndiscoverd_connections{kind=\"http\"} ")
		if i >= 0 {
			_, _ = fmt.Sscanf(m[i+len("\ndiscoverd_connections{kind=\"http\"} "):], "%d", &n)
		}
		return n >= 3
	})
	start := time.Now()
	c.Stop(0)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the stop took %v", took)
	}
	if ev := readEvent(t, br); ev.kind != "error" || !strings.Contains(ev.data, `"code":"shutting_down"`) {
		t.Errorf("the stream's last event: %+v, want an error shutting_down", ev)
	}
	select {
	case got := <-blocked:
		if !strings.HasPrefix(got, "503 1 ") || !strings.Contains(got, "shutting_down") {
			t.Errorf("the blocking query answered %s, want 503 shutting_down with Retry-After", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("the blocking query did not answer within 10 s of the stop")
	}
}
