package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/prockit"
)

// The Grafana dashboard (deploy/grafana/discoverd.json) and the Prometheus
// alert rules (deploy/prometheus/alerts.yml) name metrics in PromQL; a
// metric renamed or removed would leave a blank panel or an alert that
// never fires, silently. These tests read every expression of both files
// and check each metric it names against what a real node exports.

// metricName matches a metric name in a PromQL expression: discoverd's own
// and the Go and process collectors'.
var metricName = regexp.MustCompile(`\b(?:discoverd|go|process)_[a-zA-Z0-9_]+`)

// namesIn returns the metric names the expressions use, sorted, once each.
func namesIn(exprs []string) []string {
	var out []string
	for _, e := range exprs {
		out = append(out, metricName.FindAllString(e, -1)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// missingFrom returns the names the expressions use that exported lacks.
func missingFrom(exprs []string, exported map[string]bool) []string {
	var out []string
	for _, n := range namesIn(exprs) {
		if !exported[n] {
			out = append(out, n)
		}
	}
	return out
}

// dashboardExprs returns every PromQL expression of a Grafana dashboard
// (its panels' targets, in rows too, and its query variables), and fails
// on a panel without one or two panels with one id.
func dashboardExprs(data []byte) ([]string, error) {
	var d struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("not a dashboard: %v", err)
	}
	var exprs []string
	ids := map[int]bool{}
	var walk func(ps []dashPanel) error
	walk = func(ps []dashPanel) error {
		for _, p := range ps {
			if ids[p.ID] {
				return fmt.Errorf("two panels have id %d", p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				if err := walk(p.Panels); err != nil {
					return err
				}
				continue
			}
			if len(p.Targets) == 0 {
				return fmt.Errorf("panel %d %q has no query", p.ID, p.Title)
			}
			for _, t := range p.Targets {
				if strings.TrimSpace(t.Expr) == "" {
					return fmt.Errorf("panel %d %q has a target without expr", p.ID, p.Title)
				}
				exprs = append(exprs, t.Expr)
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	if len(exprs) == 0 {
		return nil, fmt.Errorf("the dashboard has no panels with queries")
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			if s, ok := q["query"].(string); ok {
				exprs = append(exprs, s)
			}
		}
	}
	return exprs, nil
}

type dashPanel struct {
	ID      int         `json:"id"`
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// alertExprs returns the expressions of a Prometheus rules file, and fails
// on a rule without a name, an expression, a severity or a summary.
func alertExprs(data []byte) ([]string, error) {
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("not a rules file: %v", err)
	}
	var exprs []string
	for _, g := range f.Groups {
		for i, r := range g.Rules {
			switch {
			case r.Alert == "":
				return nil, fmt.Errorf("group %s: rule %d has no alert name", g.Name, i)
			case strings.TrimSpace(r.Expr) == "":
				return nil, fmt.Errorf("alert %s has no expr", r.Alert)
			case r.Labels["severity"] == "":
				return nil, fmt.Errorf("alert %s has no severity label", r.Alert)
			case r.Annotations["summary"] == "":
				return nil, fmt.Errorf("alert %s has no summary", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					return nil, fmt.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) == 0 {
		return nil, fmt.Errorf("the rules file has no rules")
	}
	return exprs, nil
}

// TestDashboard_CheckersCatchBrokenFiles: the checks below fail on what they
// are there to catch.
func TestDashboard_CheckersCatchBrokenFiles(t *testing.T) {
	exported := map[string]bool{"discoverd_raft_term": true, "discoverd_raft_state": true}
	if got := missingFrom([]string{`changes(discoverd_raft_term[5m]) + discoverd_no_such_total`, `discoverd_raft_state{state="leader"}`}, exported); !slices.Equal(got, []string{"discoverd_no_such_total"}) {
		t.Errorf("missingFrom found %v, want [discoverd_no_such_total]", got)
	}
	for _, tc := range []struct{ what, dashboard string }{
		{"not JSON", `{`},
		{"a panel without a query", `{"panels":[{"id":1,"type":"timeseries","title":"x","targets":[]}]}`},
		{"an empty expr", `{"panels":[{"id":1,"type":"timeseries","title":"x","targets":[{"expr":" "}]}]}`},
		{"duplicate ids", `{"panels":[{"id":1,"type":"row","panels":[{"id":1,"type":"stat","targets":[{"expr":"up"}]}]}]}`},
	} {
		if _, err := dashboardExprs([]byte(tc.dashboard)); err == nil {
			t.Errorf("dashboard with %s: no error", tc.what)
		}
	}
	for _, tc := range []struct{ what, rules string }{
		{"no rules", "groups: []"},
		{"a rule without expr", "groups:\n- name: g\n  rules:\n  - alert: A\n    labels: {severity: warning}\n    annotations: {summary: s}"},
		{"a rule without severity", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    annotations: {summary: s}"},
		{"a bad for", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: soon\n    labels: {severity: warning}\n    annotations: {summary: s}"},
		{"an unknown key", "groups:\n- name: g\n  rules:\n  - alert: A\n    exp: up == 0\n    labels: {severity: warning}\n    annotations: {summary: s}"},
	} {
		if _, err := alertExprs([]byte(tc.rules)); err == nil {
			t.Errorf("rules with %s: no error", tc.what)
		}
	}
}

// TestDashboard_DashboardAndAlertsUseExportedMetrics: every metric the
// dashboard and the alert rules name is exported by a real node (one
// `discoverd server` process that served one request, so that the
// per-request families have series).
func TestDashboard_DashboardAndAlertsUseExportedMetrics(t *testing.T) {
	root, err := prockit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, f := range []struct {
		path  string
		parse func([]byte) ([]string, error)
	}{
		{"deploy/grafana/discoverd.json", dashboardExprs},
		{"deploy/prometheus/alerts.yml", alertExprs},
	} {
		data, err := os.ReadFile(filepath.Join(root, f.path))
		if err != nil {
			t.Fatal(err)
		}
		es, err := f.parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		exprs = append(exprs, es...)
	}

	h := newHarness(t)
	ports := freePorts(t, 2)
	addr, httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	h.start("server-n1", append(prockit.ServerArgs("n1", addr, filepath.Join(h.dir, "n1-data"), ""),
		append(prockit.RaftFlags(), "-http-addr", httpAddr)...)...)
	h.waitStable(addr, []string{"n1"}, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cn, err := rpcconn.Dial(ctx, addr, rpcconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if err := cn.Call(ctx, wire.MethodList, false, &wire.ListRequest{Name: "web"}, &wire.ListResponse{}); err != nil {
		t.Fatal(err)
	}
	exported := scrape(t, &http.Client{}, "http://"+httpAddr).families()
	names := namesIn(exprs)
	if missing := missingFrom(exprs, exported); len(missing) > 0 {
		t.Fatalf("the dashboard or the alert rules use metrics a node does not export: %v (docs/metrics.md lists the exported ones)", missing)
	}
	t.Logf("%d expressions use %d metrics, all exported", len(exprs), len(names))
}
