package raftnode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRaftnode_ParsePeers(t *testing.T) {
	cases := []struct {
		in   string
		want []Peer
		err  string
	}{
		{"", nil, ""},
		{"n1=127.0.0.1:7001", []Peer{{"n1", "127.0.0.1:7001"}}, ""},
		{" n1=a:1 , n2=b:2 ,", []Peer{{"n1", "a:1"}, {"n2", "b:2"}}, ""},
		{"n1", nil, "want id=host:port"},
		{"=a:1", nil, "want id=host:port"},
		{"n1=", nil, "want id=host:port"},
		{"n1=nohostport", nil, "not host:port"},
		{"n 1=a:1", nil, "use letters, digits"},
		{"n1=a:1,n1=b:2", nil, `peer id "n1" appears twice`},
		{"n1=a:1,n2=a:1", nil, `peer address "a:1" appears twice`},
		{strings.Repeat("x", 65) + "=a:1", nil, "longer than 64 bytes"},
	}
	for _, tc := range cases {
		got, err := ParsePeers(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePeers(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParsePeers(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("ParsePeers(%q)[%d] = %v, want %v", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

func TestRaftnode_ConfigValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.ID, c.Addr, c.DataDir = "n1", "127.0.0.1:7001", "/tmp/x"
		c.Peers = []Peer{{"n1", "127.0.0.1:7001"}, {"n2", "127.0.0.1:7002"}}
		return c
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		err    string
	}{
		{"valid", func(*Config) {}, ""},
		{"no peers is a single-node cluster", func(c *Config) { c.Peers = nil }, ""},
		{"empty id", func(c *Config) { c.ID = "" }, "node id is empty"},
		{"bad addr", func(c *Config) { c.Addr = "nowhere" }, "is not host:port"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir is not set"},
		{"not in peers", func(c *Config) { c.ID = "n9" }, `node id "n9" is not in the peers list`},
		{"tiny timeouts", func(c *Config) { c.ElectionTimeout = time.Millisecond }, "at least 5ms"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }, "must not exceed the heartbeat timeout"},
		{"max append entries", func(c *Config) { c.MaxAppendEntries = 5000 }, "want 1-1024"},
		{"snapshot retain", func(c *Config) { c.SnapshotRetain = 0 }, "at least 1"},
	}
	for _, tc := range cases {
		c := good()
		tc.mutate(&c)
		err := c.Validate()
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want one saying %q", tc.name, err, tc.err)
		}
	}
}

func TestRaftnode_DataDirBelongsToOneNode(t *testing.T) {
	dir := t.TempDir()
	if err := checkNodeID(dir, "n1"); err != nil {
		t.Fatalf("fresh dir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, nodeIDFile)); err != nil || string(b) != "n1\n" {
		t.Fatalf("node-id file = %q, %v", b, err)
	}
	if err := checkNodeID(dir, "n1"); err != nil {
		t.Fatalf("same node again: %v", err)
	}
	err := checkNodeID(dir, "n2")
	if err == nil || !strings.Contains(err.Error(), `belongs to node "n1", not "n2"`) {
		t.Fatalf("another node's dir: %v", err)
	}
}
