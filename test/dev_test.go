package test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/testport"
)

// devStopBound is how long `discoverd dev` may take to exit after Ctrl-C:
// the bound is the feature, not a speed goal (it takes tens of ms).
const devStopBound = 3 * time.Second

// maxDevStopWarnings bounds the WARN lines of a whole dev run, start to
// stop (an election at start is one or two). A stop used to log up to
// 25 000 "leader barrier failed" warnings.
const maxDevStopWarnings = 10

// devAddr returns a loopback address whose port and the next n-1 ports
// were free a moment ago: `discoverd dev -nodes n` listens on all of them.
func devAddr(t *testing.T, n int) string {
	t.Helper()
	for range 50 {
		ports, err := testport.Pick(1)
		if err != nil {
			t.Fatal(err)
		}
		free := true
		for i := 1; i < n && free; i++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]+i)))
			if err != nil {
				free = false
				continue
			}
			_ = ln.Close()
		}
		if free {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		}
	}
	t.Fatalf("no %d consecutive free loopback ports found", n)
	return ""
}

// TestDev_CtrlCStopsCleanlyWithinThreeSeconds: `discoverd dev`, once it
// serves (it printed DISCOVERD=), exits 0 within 3 s of a SIGINT, with no
// ERROR line and no flood of warnings. The stop comes right after the
// cluster serves, when its leader may still be running its barrier — where
// the barrier's retries used to spin — and is repeated a few times, as
// what a stop meets depends on timing.
func TestDev_CtrlCStopsCleanlyWithinThreeSeconds(t *testing.T) {
	h := newHarness(t)
	for round := range 3 {
		name := fmt.Sprintf("dev%d", round+1)
		httpAddr := devAddr(t, 3)
		p := h.start(name, "dev", "-addr", devAddr(t, 3), "-http-addr", httpAddr, "-dns-addr", devAddr(t, 3), "-data-dir", filepath.Join(h.dir, name+"-data"))
		poll(t, 30*time.Second, 20*time.Millisecond, name+" to print DISCOVERD=", func() (bool, string) {
			if p.exited() {
				t.Fatalf("%s exited before serving:\n%s", name, p.Describe())
			}
			return p.logContains("export DISCOVERD="), "no DISCOVERD= line yet"
		})
		if round == 0 { // each node serves the API, health and metrics on its own HTTP port
			if !p.logContains("HTTP API (/v1/)") {
				t.Errorf("dev did not say it serves the HTTP API:\n%s", p.Describe())
			}
			host, port, _ := net.SplitHostPort(httpAddr)
			first, _ := strconv.Atoi(port)
			for i := range 3 {
				url := "http://" + net.JoinHostPort(host, strconv.Itoa(first+i))
				if !p.logContains(url) {
					t.Errorf("dev did not print %s", url)
				}
				if code, body, err := httpGet(&http.Client{}, url+"/health/live"); err != nil || code != http.StatusOK {
					t.Errorf("dev node %d: /health/live %d %v %s", i+1, code, err, body)
				}
				// A node answers reads once it has caught up (503 not_ready before).
				poll(t, 10*time.Second, 20*time.Millisecond, fmt.Sprintf("dev node %d to answer GET /v1/services", i+1), func() (bool, string) {
					code, body, err := httpGet(&http.Client{}, url+"/v1/services")
					return err == nil && code == http.StatusOK && strings.HasPrefix(body, `{"index":`), fmt.Sprint(code, err, body)
				})
			}
		}
		start := time.Now()
		p.signal(t, syscall.SIGINT)
		if err := p.Wait(devStopBound); err != nil {
			t.Fatalf("%v after SIGINT\n%s", err, p.Describe())
		}
		took := time.Since(start)
		if code := p.ExitCode(); code != 0 {
			t.Fatalf("%s exited with status %d after SIGINT, want 0\n%s", name, code, p.Describe())
		}
		data, err := os.ReadFile(p.Log())
		if err != nil {
			t.Fatal(err)
		}
		var errs []string
		warns := 0
		for _, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.Contains(line, "level=ERROR"):
				errs = append(errs, line)
			case strings.Contains(line, "level=WARN"):
				warns++
			}
		}
		if len(errs) > 0 {
			t.Errorf("%s logged %d ERROR lines on a clean stop, first: %s", name, len(errs), errs[0])
		}
		if warns > maxDevStopWarnings {
			t.Errorf("%s logged %d WARN lines, want at most %d", name, warns, maxDevStopWarnings)
		}
		t.Logf("%s: exited %v after SIGINT, %d WARN lines", name, took.Round(time.Millisecond), warns)
	}
}
