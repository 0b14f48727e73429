package main

import (
	"bytes"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/ttl"
)

// TestCLI_ServicesTableSuspect: services NAME shows a SUSPECT column and
// says how many are suspect only when some instance is; otherwise the table
// is as before.
func TestCLI_ServicesTableSuspect(t *testing.T) {
	list := []*client.Service{
		{Name: "web", Addr: "10.0.0.1:80", Index: 4, Attrs: map[string]string{"zone": "a"}},
		{Name: "web", Addr: "10.0.0.2:80", Index: 5, Suspect: true},
	}
	var b bytes.Buffer
	if err := writeInstances(&b, "web", 9, list, true, 0); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := [][]string{
		{"ADDR", "INDEX", "SUSPECT", "ATTRS"},
		{"10.0.0.1:80", "4", "no", "zone=a"},
		{"10.0.0.2:80", "5", "yes"},
	}
	if len(lines) != 5 || lines[3] != "2 instances of web at index 9" || !strings.HasPrefix(lines[4], "1 suspect: ") {
		t.Fatalf("table:\n%s", b.String())
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); !slices.Equal(got, w) {
			t.Errorf("line %d = %q, want the fields %q", i, lines[i], w)
		}
	}
	b.Reset()
	list[1].Suspect = false
	if err := writeInstances(&b, "web", 9, list, true, 0); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "SUSPECT") || strings.Contains(b.String(), "suspect") ||
		!slices.Equal(strings.Fields(strings.SplitN(b.String(), "\n", 2)[0]), []string{"ADDR", "INDEX", "ATTRS"}) {
		t.Fatalf("table without suspects:\n%s", b.String())
	}
}

// TestCLI_StatusStormLine: status adds one line per node whose guard has
// held anything, after the table.
func TestCLI_StatusStormLine(t *testing.T) {
	st := jsonStatus{Leader: "n1", Nodes: []jsonNode{
		{ID: "n1", Addr: "127.0.0.1:7001", State: "Leader", Term: 3, Ready: true, KnownLeader: true,
			StormHeld: 3, StormHolds: 12, StormReleased: 2, StormUnheld: 7},
		{ID: "n2", Addr: "127.0.0.1:7002", State: "Follower", Term: 3, Ready: true, KnownLeader: true},
	}}
	var b bytes.Buffer
	if err := writeStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := "expiry-storm guard on n1: 3 held now; 12 holds since it started: 2 released at their max hold, 7 ended by a heartbeat or otherwise"
	if len(lines) != 5 || lines[4] != want {
		t.Fatalf("status:\n%s\nwant its last line %q", b.String(), want)
	}
}

// TestCLI_StormFlags: the guard's flags, their defaults and their syntax.
func TestCLI_StormFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want ttl.StormConfig
	}{
		{nil, ttl.StormConfig{Threshold: 0.5, MinInstances: 10, MaxHold: 3}},
		{[]string{"-storm-threshold", "0"}, ttl.StormConfig{MinInstances: 10, MaxHold: 3}},
		{[]string{"-storm-threshold", "30", "-storm-cluster-threshold", "60%", "-storm-min-instances", "4", "-storm-max-hold", "2.5x"},
			ttl.StormConfig{Threshold: 0.3, ClusterThreshold: 0.6, MinInstances: 4, MaxHold: 2.5}},
		{[]string{"-storm-max-hold", "5"}, ttl.StormConfig{Threshold: 0.5, MinInstances: 10, MaxHold: 5}},
	} {
		var f stormFlags
		fs := flag.NewFlagSet("server", flag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		got, err := f.config()
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
		if on := got.On(); on != (tc.want.Threshold > 0 || tc.want.ClusterThreshold > 0) {
			t.Errorf("%q: On() = %v", tc.args, on)
		}
	}
	var f stormFlags
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	f.register(fs)
	if got := fs.Lookup("storm-threshold").DefValue + " " + fs.Lookup("storm-max-hold").DefValue + " " + fs.Lookup("storm-cluster-threshold").DefValue; got != "50% 3x 0%" {
		t.Errorf("defaults shown as %q", got)
	}
}
