package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// The HTTP listener (-http-addr) of real `discoverd server` processes:
// health, metrics against known activity, the profiler only when asked
// for, TLS per path, and hostile input (docs/SECURITY.md, "The HTTP
// listener"; docs/metrics.md).

// httpCluster starts a 3-node cluster whose nodes also listen on
// -http-addr (each with extra(nd)'s flags, if set), and returns each node's
// HTTP address by id.
func (h *harness) httpCluster(extra func(nd *node) []string) (*cluster, map[string]string) {
	h.t.Helper()
	ports := freePorts(h.t, 3)
	httpAddr := map[string]string{}
	for i := range 3 {
		httpAddr[fmt.Sprintf("n%d", i+1)] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	c := h.startClusterWith(3, func(nd *node) []string {
		args := []string{"-http-addr", httpAddr[nd.id]}
		if extra != nil {
			args = append(args, extra(nd)...)
		}
		return args
	})
	return c, httpAddr
}

// httpGet gets url and returns its status and body.
func httpGet(hc *http.Client, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, string(body), err
}

// metrics are the series of one scrape, keyed as the text format writes
// them: name{label="value",...}, labels in alphabetical order.
type metrics map[string]float64

// scrape reads a node's /metrics.
func scrape(t testing.TB, hc *http.Client, url string) metrics {
	t.Helper()
	code, body, err := httpGet(hc, url+"/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("scrape %s: %d %v\n%s", url, code, err, body)
	}
	return parseMetrics(t, body)
}

// parseMetrics parses the Prometheus text format.
func parseMetrics(t testing.TB, body string) metrics {
	t.Helper()
	m := metrics{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("metrics line %q has no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// families returns the metric names a scrape exported (the names of its
// series, histograms' _bucket, _sum and _count among them).
func (m metrics) families() map[string]bool {
	out := map[string]bool{}
	for k := range m {
		if i := strings.IndexByte(k, '{'); i >= 0 {
			k = k[:i]
		}
		out[k] = true
	}
	return out
}

// get returns a series' value, failing the test if it is not exported.
func (m metrics) get(t testing.TB, series string) float64 {
	t.Helper()
	v, ok := m[series]
	if !ok {
		t.Fatalf("no series %s in the scrape", series)
	}
	return v
}

// TestMetrics_CountersFollowActivity: on real processes, /metrics moves by
// exactly the activity a test makes: 10 registrations on the leader are 10
// Register requests there and 10 instances on every node; 7 heartbeat
// requests of 2 instances each sent to a follower are 14 heartbeats and 7
// Heartbeat requests there and none on the leader (which served them
// forwarded); a watch stream open on a follower is a gauge of 1 there,
// back to 0 when closed; 3 unregistrations are 3 removals on every node;
// the 13 writes went through group commit on the leader. The profiler
// answers only on the node started with -enable-pprof.
func TestMetrics_CountersFollowActivity(t *testing.T) {
	h := newHarness(t)
	c, httpAddr := h.httpCluster(func(nd *node) []string {
		if nd.id == "n1" {
			return []string{"-enable-pprof"}
		}
		return nil
	})
	st := h.waitStable(c.servers(), c.ids(), 30*time.Second)
	leader, follower := c.leaderAndFollower(st.Leader)
	hc := &http.Client{}
	url := func(nd *node) string { return "http://" + httpAddr[nd.id] }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dial := func(nd *node) *rpcconn.Conn {
		t.Helper()
		cn, err := rpcconn.Dial(ctx, nd.addr, rpcconn.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cn.Close() })
		return cn
	}
	onLeader, onFollower := dial(leader), dial(follower)

	const (
		registers = `discoverd_rpc_requests_total{code="ok",method="Register"}`
		beats     = `discoverd_rpc_requests_total{code="ok",method="Heartbeat"}`
		groups    = `discoverd_raft_group_commit_writes_sum`
	)
	lb, fb := scrape(t, hc, url(leader)), scrape(t, hc, url(follower))
	for i := range 10 {
		req := &wire.RegisterRequest{Name: "web", Addr: fmt.Sprintf("10.0.0.%d:80", i+1), TTLMillis: time.Hour.Milliseconds()}
		if err := onLeader.Call(ctx, wire.MethodRegister, false, req, &wire.WriteResponse{}); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
	}
	la := scrape(t, hc, url(leader))
	if d := la[registers] - lb[registers]; d != 10 {
		t.Errorf("%s moved by %v on the leader after 10 registrations, want 10", registers, d)
	}
	if n := la.get(t, `discoverd_rpc_request_duration_seconds_count{code="ok",method="Register"}`); n != la[registers] {
		t.Errorf("Register latency histogram counts %v calls, the counter %v", n, la[registers])
	}
	for _, nd := range c.nodes {
		poll(t, 10*time.Second, 20*time.Millisecond, nd.id+" to count 10 instances", func() (bool, string) {
			m := scrape(t, hc, url(nd))
			return m["discoverd_instances"] == 10 && m["discoverd_services"] == 1,
				fmt.Sprintf("%v instances in %v services", m["discoverd_instances"], m["discoverd_services"])
		})
	}

	for i := range 7 {
		req := &wire.HeartbeatRequest{Instances: []wire.InstanceKey{
			{Name: "web", Addr: fmt.Sprintf("10.0.0.%d:80", 2*i%10+1)}, {Name: "web", Addr: fmt.Sprintf("10.0.0.%d:80", (2*i+1)%10+1)}}}
		var resp wire.HeartbeatResponse
		if err := onFollower.Call(ctx, wire.MethodHeartbeat, false, req, &resp); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
	}
	fa, la2 := scrape(t, hc, url(follower)), scrape(t, hc, url(leader))
	if d := fa.get(t, "discoverd_heartbeats_total") - fb.get(t, "discoverd_heartbeats_total"); d != 14 {
		t.Errorf("discoverd_heartbeats_total moved by %v on the follower after 7 requests of 2 heartbeats, want 14", d)
	}
	if d := fa[beats] - fb[beats]; d != 7 {
		t.Errorf("%s moved by %v on the follower, want 7", beats, d)
	}
	if d := la2.get(t, "discoverd_heartbeats_total") - la.get(t, "discoverd_heartbeats_total"); d != 0 {
		t.Errorf("discoverd_heartbeats_total moved by %v on the leader, which only served them forwarded: want 0", d)
	}

	watch, err := onFollower.Stream(ctx, wire.MethodWatch, &wire.WatchRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var evs wire.WatchEvents
	if err := watch.Recv(ctx, &evs); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if v := scrape(t, hc, url(follower)).get(t, "discoverd_watch_streams"); v != 1 {
		t.Errorf("discoverd_watch_streams %v on the follower with one watch open, want 1", v)
	}
	if v := scrape(t, hc, url(leader)).get(t, "discoverd_watch_streams"); v != 0 {
		t.Errorf("discoverd_watch_streams %v on the leader, which has none, want 0", v)
	}
	watch.Close()
	poll(t, 5*time.Second, 20*time.Millisecond, "the closed watch to leave the gauge", func() (bool, string) {
		v := scrape(t, hc, url(follower))["discoverd_watch_streams"]
		return v == 0, fmt.Sprintf("discoverd_watch_streams %v", v)
	})

	before := map[string]float64{}
	for _, nd := range c.nodes {
		before[nd.id] = scrape(t, hc, url(nd)).get(t, `discoverd_instances_removed_total{reason="unregistered"}`)
	}
	for i := range 3 {
		req := &wire.UnregisterRequest{Name: "web", Addr: fmt.Sprintf("10.0.0.%d:80", i+1)}
		if err := onLeader.Call(ctx, wire.MethodUnregister, false, req, &wire.WriteResponse{}); err != nil {
			t.Fatalf("unregister %d: %v", i, err)
		}
	}
	for _, nd := range c.nodes {
		poll(t, 10*time.Second, 20*time.Millisecond, nd.id+" to count 3 removals", func() (bool, string) {
			m := scrape(t, hc, url(nd))
			d := m[`discoverd_instances_removed_total{reason="unregistered"}`] - before[nd.id]
			return d == 3 && m["discoverd_instances"] == 7, fmt.Sprintf("%v removals, %v instances", d, m["discoverd_instances"])
		})
	}
	lz := scrape(t, hc, url(leader))
	if d := lz.get(t, groups) - lb.get(t, groups); d != 13 {
		t.Errorf("%s moved by %v on the leader after 13 writes, want 13", groups, d)
	}
	if lz.get(t, "discoverd_raft_log_append_duration_seconds_count") <= lb.get(t, "discoverd_raft_log_append_duration_seconds_count") {
		t.Errorf("no log append counted on the leader after 13 writes")
	}
	if lz.get(t, `discoverd_raft_state{state="leader"}`) != 1 || fa.get(t, `discoverd_raft_state{state="follower"}`) != 1 {
		t.Errorf("raft state: leader %v, follower %v", lz[`discoverd_raft_state{state="leader"}`], fa[`discoverd_raft_state{state="follower"}`])
	}
	if lz.get(t, "discoverd_ready") != 1 || lz.get(t, "discoverd_raft_term") < 1 {
		t.Errorf("leader: ready %v, term %v", lz["discoverd_ready"], lz["discoverd_raft_term"])
	}
	if lz.get(t, `discoverd_connections{kind="http"}`) < 1 || lz.get(t, `discoverd_connections{kind="client"}`) < 1 {
		t.Errorf("leader: %v http connections, %v client connections during a scrape over one client connection",
			lz[`discoverd_connections{kind="http"}`], lz[`discoverd_connections{kind="client"}`])
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		lz.get(t, name)
	}

	for _, nd := range c.nodes {
		code, _, err := httpGet(hc, url(nd)+"/debug/pprof/")
		want := http.StatusNotFound
		if nd.id == "n1" {
			want = http.StatusOK
		}
		if err != nil || code != want {
			t.Errorf("%s /debug/pprof/: %d %v, want %d (-enable-pprof only on n1)", nd.id, code, err, want)
		}
	}
}

// TestMetrics_ReadyOnlyOnceCaughtUp: a node of a 3-node cluster started
// alone has not caught up (no leader can be elected): /health/live answers
// 200, /health/ready 503 with a JSON body saying why, discoverd_ready is 0.
// Once the other two start, /health/ready turns 200.
func TestMetrics_ReadyOnlyOnceCaughtUp(t *testing.T) {
	h := newHarness(t)
	ports := freePorts(t, 4)
	peers := fmt.Sprintf("n1=127.0.0.1:%d,n2=127.0.0.1:%d,n3=127.0.0.1:%d", ports[0], ports[1], ports[2])
	httpURL := fmt.Sprintf("http://127.0.0.1:%d", ports[3])
	c := &cluster{h: h, peers: peers, args: func(nd *node) []string {
		if nd.id == "n1" {
			return []string{"-http-addr", strings.TrimPrefix(httpURL, "http://")}
		}
		return nil
	}}
	for i := range 3 {
		c.nodes = append(c.nodes, &node{id: fmt.Sprintf("n%d", i+1), addr: fmt.Sprintf("127.0.0.1:%d", ports[i]), dataDir: t.TempDir()})
	}
	c.startNode(c.nodes[0])
	hc := &http.Client{}
	poll(t, 10*time.Second, 20*time.Millisecond, "n1's /health/live", func() (bool, string) {
		code, body, err := httpGet(hc, httpURL+"/health/live")
		return code == http.StatusOK, fmt.Sprint(code, body, err)
	})
	code, body, err := httpGet(hc, httpURL+"/health/ready")
	if err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("/health/ready of a node alone: %d %q %v, want 503", code, body, err)
	}
	var why struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(body), &why); err != nil || why.Ready || !strings.Contains(why.Reason, "caught up") {
		t.Errorf("/health/ready body %q (%v): want ready false and a reason naming the catch-up", body, err)
	}
	if v := scrape(t, hc, httpURL).get(t, "discoverd_ready"); v != 0 {
		t.Errorf("discoverd_ready %v on a node alone, want 0", v)
	}
	c.startNode(c.nodes[1])
	c.startNode(c.nodes[2])
	poll(t, 30*time.Second, 50*time.Millisecond, "n1's /health/ready to answer 200", func() (bool, string) {
		code, body, err := httpGet(hc, httpURL+"/health/ready")
		return code == http.StatusOK, fmt.Sprint(code, " ", body, err)
	})
	if v := scrape(t, hc, httpURL).get(t, "discoverd_ready"); v != 1 {
		t.Errorf("discoverd_ready %v once ready, want 1", v)
	}
}

// TestHTTP_TLSHealthOpenMetricsNeedACertificate: with TLS the HTTP
// listener serves HTTPS with the node's certificate; /health/* answer a
// client without a certificate (a probe), /metrics, /debug/pprof/ and the
// API under /v1/ only one with a certificate of the CA (403 otherwise); a
// plaintext request
// gets an error, not the metrics.
func TestHTTP_TLSHealthOpenMetricsNeedACertificate(t *testing.T) {
	h := newHarness(t)
	ports := freePorts(t, 3)
	httpAddr := func(nd *node) string { return fmt.Sprintf("127.0.0.1:%d", ports[nd.id[1]-'1']) }
	c, pki := h.tlsCluster(func(nd *node) []string { return []string{"-http-addr", httpAddr(nd), "-enable-pprof"} })
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	nd := c.nodes[0]
	url := "https://" + httpAddr(nd)
	withCert := pki.clientTLS("scraper")
	noCert := withCert.Clone()
	noCert.Certificates = nil
	client := func(cfg *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	anon, scraper := client(noCert), client(withCert)
	for _, tc := range []struct {
		hc   *http.Client
		who  string
		path string
		want int
	}{
		{anon, "no certificate", "/health/live", http.StatusOK},
		{anon, "no certificate", "/health/ready", http.StatusOK},
		{anon, "no certificate", "/metrics", http.StatusForbidden},
		{anon, "no certificate", "/debug/pprof/", http.StatusForbidden},
		{anon, "no certificate", "/v1/services", http.StatusForbidden},
		{anon, "no certificate", "/v1/services/web/events", http.StatusForbidden},
		{scraper, "a client certificate", "/metrics", http.StatusOK},
		{scraper, "a client certificate", "/v1/services", http.StatusOK},
		{scraper, "a client certificate", "/debug/pprof/", http.StatusOK},
	} {
		code, body, err := httpGet(tc.hc, url+tc.path)
		if err != nil || code != tc.want {
			t.Errorf("%s with %s: %d %v, want %d\n%.300s", tc.path, tc.who, code, err, tc.want, body)
		}
	}
	code, body, err := httpGet(&http.Client{}, "http://"+httpAddr(nd)+"/metrics")
	if err == nil && (code == http.StatusOK || strings.Contains(body, "discoverd_")) {
		t.Errorf("plaintext /metrics on the TLS listener: %d, body %.200q", code, body)
	}
	if m := scrape(t, scraper, url); m.get(t, "discoverd_ready") != 1 {
		t.Errorf("discoverd_ready %v over HTTPS", m["discoverd_ready"])
	}
}

// TestHostile_HTTPListener: garbage bytes, a slowloris header, an oversized
// header, plaintext on the TLS listener and more connections than
// -http-max-conns: each is refused or closed within its deadline, and the
// node keeps serving its native port and its HTTP listener throughout.
func TestHostile_HTTPListener(t *testing.T) {
	h := newHarness(t)
	ports := freePorts(t, 3)
	httpAddr := func(nd *node) string { return fmt.Sprintf("127.0.0.1:%d", ports[nd.id[1]-'1']) }
	c, pki := h.tlsCluster(func(nd *node) []string {
		return []string{"-http-addr", httpAddr(nd), "-http-max-conns", "8", "-handshake-timeout", "1s", "-frame-timeout", "2s"}
	})
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	nd := c.nodes[1]
	addr := httpAddr(nd)
	scraper := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.clientTLS("scraper")}}
	url := "https://" + addr
	stillServes := func(when string) {
		t.Helper()
		if code, body, err := httpGet(scraper, url+"/health/ready"); err != nil || code != http.StatusOK {
			t.Fatalf("%s: /health/ready %d %v %s", when, code, err, body)
		}
		if _, err := h.status(nd.addr); err != nil {
			t.Fatalf("%s: the native port does not answer status: %v", when, err)
		}
	}
	dial := func() net.Conn {
		t.Helper()
		cn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cn.Close() })
		return cn
	}
	// closedWithin reads until the node closes cn (what it answered
	// first, if anything, is returned), failing if it is still open after max.
	closedWithin := func(what string, cn net.Conn, max time.Duration) string {
		t.Helper()
		_ = cn.SetReadDeadline(time.Now().Add(max))
		data, err := io.ReadAll(cn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the connection is still open after %v", what, max)
		}
		return string(data)
	}

	// Garbage: not a TLS handshake; closed at once.
	cn := dial()
	_, _ = cn.Write([]byte("\x16\x03\x01\xff\xff garbage \x00\x01\x02 not a handshake at all\r\n\r\n"))
	closedWithin("garbage bytes", cn, 5*time.Second)
	stillServes("after garbage bytes")

	// Plaintext HTTP on the TLS listener: answered with an error, not served.
	cn = dial()
	_, _ = fmt.Fprintf(cn, "GET /metrics HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	if got := closedWithin("plaintext on the TLS listener", cn, 5*time.Second); strings.Contains(got, "discoverd_") {
		t.Errorf("plaintext request was served the metrics: %.200q", got)
	}
	stillServes("after a plaintext request")

	// Slowloris: a TLS handshake, then a header that never ends; closed
	// once the header deadline (-handshake-timeout 1s) passes.
	tc, err := tls.Dial("tcp", addr, pki.clientTLS("slow"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	start := time.Now()
	_, _ = fmt.Fprintf(tc, "GET /health/live HTTP/1.1\r\nHost: %s\r\n", addr)
	go func() { // one more header byte every 200 ms, as long as it is let
		for range 50 {
			time.Sleep(200 * time.Millisecond)
			if _, err := tc.Write([]byte("X")); err != nil {
				return
			}
		}
	}()
	closedWithin("a slowloris header", tc, 8*time.Second)
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("slowloris closed after %v, before the 1 s header deadline", took)
	}
	stillServes("after a slowloris header")

	// An oversized header: refused with 431, not read without bound.
	big := strings.Repeat("a", 64<<10)
	tc2, err := tls.Dial("tcp", addr, pki.clientTLS("big"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc2.Close() })
	_, _ = fmt.Fprintf(tc2, "GET /health/live HTTP/1.1\r\nHost: %s\r\nX-Big: %s\r\n\r\n", addr, big)
	_ = tc2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(tc2), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 64 KiB header: %v %v, want 431", resp, err)
	}
	stillServes("after an oversized header")

	// More connections than -http-max-conns (8): the ones beyond are closed
	// at once, counted, and a place frees when one closes.
	before := scrape(t, scraper, url).get(t, `discoverd_connections_refused_total{limit="http-max-conns"}`)
	var held []net.Conn
	for range 8 {
		held = append(held, dial())
	}
	extra := dial()
	closedWithin("a connection beyond -http-max-conns", extra, 3*time.Second)
	for _, cn := range held {
		_ = cn.Close()
	}
	poll(t, 10*time.Second, 50*time.Millisecond, "the HTTP listener to serve again with the held connections closed", func() (bool, string) {
		code, _, err := httpGet(scraper, url+"/health/live")
		return code == http.StatusOK, fmt.Sprint(code, err)
	})
	if after := scrape(t, scraper, url).get(t, `discoverd_connections_refused_total{limit="http-max-conns"}`); after < before+1 {
		t.Errorf("refused connections counted %v, was %v: the one beyond the cap is not counted", after, before)
	}
	stillServes("after more connections than -http-max-conns")
}
