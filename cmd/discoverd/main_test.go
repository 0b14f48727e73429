package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bigFile is a file one byte over the metadata limit.
func bigFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), 64<<10+1), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCLI_UsageErrorsExitTwo runs the CLI in-process on bad input: exit
// status 2, a message on stderr saying what is wrong, nothing started.
func TestCLI_UsageErrorsExitTwo(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage: discoverd <command>"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"server"}, "-id and -data-dir are required"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "extra"}, "unexpected arguments"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-peers", "n2=127.0.0.1:1"}, `node id "n1" is not in the peers list`},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-peers", "garbage"}, "-peers: peer \"garbage\""},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-raft-leader-lease-timeout", "5s"}, "must not exceed the heartbeat timeout"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-ttl-grace", "0s"}, "-ttl-grace 0s must be positive"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-max-frame", "10"}, "-max-frame 10"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-heartbeat-relays", "65"}, "-heartbeat-relays 65: want 0 (off) to 64"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-heartbeat-relays", "-1"}, "-heartbeat-relays -1: want 0 (off) to 64"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-storm-threshold", "100%"}, "want a percentage from 0 (off) to below 100"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-storm-cluster-threshold", "half"}, "want a percentage"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-storm-max-hold", "0x"}, "want a multiple of the TTL above 0"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-storm-min-instances", "0"}, "-storm-min-instances 0: want 1 or more"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-log-level", "loud"}, "-log-level"},
		{[]string{"server", "-nosuchflag"}, "flag provided but not defined"},
		{[]string{"server", "-config", filepath.Join(t.TempDir(), "missing.yaml")}, "-config: open"},
		{[]string{"server", "-backend", "zk"}, `-backend "zk": want raft or etcd`},
		{[]string{"server", "-backend", "etcd"}, "needs -etcd-endpoints"},
		{[]string{"server", "-backend", "etcd", "-etcd-endpoints", "127.0.0.1:2379"}, "is not an http(s)://host:port URL"},
		{[]string{"server", "-backend", "etcd", "-etcd-endpoints", "http://127.0.0.1:2379", "-data-dir", "x"}, "-data-dir applies to the raft backend"},
		{[]string{"server", "-backend", "etcd", "-etcd-endpoints", "http://127.0.0.1:2379", "-peers", "n1=a:1"}, "-peers applies to the raft backend"},
		{[]string{"server", "-id", "n1", "-data-dir", t.TempDir(), "-etcd-endpoints", "http://127.0.0.1:2379"}, "-etcd-endpoints needs -backend etcd"},
		{[]string{"dev", "-nodes", "4"}, "-nodes 4: want 1, 3 or 5"},
		{[]string{"dev", "-addr", "127.0.0.1:65535"}, "want a port from 1 to 65533"},
		{[]string{"register"}, "want NAME HOST:PORT"},
		{[]string{"register", "web", "10.0.0.1:80", "novalue"}, `attribute "novalue": want key=value`},
		{[]string{"register", "web", "10.0.0.1:80", "a=1", "a=2"}, `attribute "a" given twice`},
		{[]string{"register", "-ttl", "500ms", "web", "10.0.0.1:80"}, "ttl 500ms is out of range"},
		{[]string{"register", "web/x", "10.0.0.1:80"}, "service name"},
		{[]string{"unregister", "web"}, "want NAME HOST:PORT"},
		{[]string{"unregister", "web", "10.0.0.1:0"}, "want a number 1-65535"},
		{[]string{"services", "zone=a"}, "looks like an attribute"},
		{[]string{"services", "bad name!"}, "service name"},
		{[]string{"watch", "a", "b"}, "want NAME"},
		{[]string{"leader"}, "want NAME"},
		{[]string{"leader", "db", "-watch", "extra"}, "want NAME"},
		{[]string{"leader", "bad name!"}, "service name"},
		{[]string{"meta"}, "usage: discoverd meta get NAME"},
		{[]string{"meta", "frob", "db"}, `meta "frob": want get, set or delete`},
		{[]string{"meta", "get"}, "want NAME"},
		{[]string{"meta", "get", "bad name!"}, "service name"},
		{[]string{"meta", "set", "db/x", "-file", os.DevNull}, "service name \"db/x\" has '/' at byte 2"},
		{[]string{"meta", "set", "db", "-file", filepath.Join(t.TempDir(), "missing")}, "-file: open"},
		{[]string{"meta", "set", "db", "-file", bigFile(t)}, "metadata of db is 65537 bytes, the limit is 65536"},
		{[]string{"meta", "set", "db", "-index", "-3"}, "invalid value \"-3\" for flag -index"},
		{[]string{"meta", "delete", "db", "extra"}, "want NAME"},
		{[]string{"status", "extra"}, "unexpected arguments"},
		{[]string{"status", "-servers", "nohostport:"}, "server"},
		{[]string{"status", "-timeout", "0s"}, "-timeout must be positive"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not say %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestCLI_HelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"server", "-h"}, {"services", "-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		if !strings.Contains(stdout.String()+stderr.String(), "Usage: discoverd") {
			t.Errorf("%v printed no usage", args)
		}
	}
}

// TestCLI_UnreachableServersExitOne: a failure that is not the caller's
// mistake exits 1 and says what went wrong.
func TestCLI_UnreachableServersExitOne(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"services", "-servers", addr, "-timeout", "1s", "web"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "no discoverd server reachable") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestCLI_UnreachableEtcdExitsOne: a front end whose etcd does not answer
// says so and exits 1.
func TestCLI_UnreachableEtcdExitsOne(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"server", "-backend", "etcd", "-etcd-endpoints", "http://" + dead,
		"-etcd-dial-timeout", "500ms", "-addr", "127.0.0.1:0", "-log-level", "error"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "is etcd running?") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
