package main

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDNS_FlagsAndConfigFileKeys: -dns-addr, -dns-domain, -dns-ttl and
// -dns-max-conns come from the command line or the config file; the
// listener takes the port's -frame-timeout; beyond loopback it takes
// -insecure, and a node with TLS (which cannot take -insecure) keeps it on
// loopback (DNS has no TLS).
func TestDNS_FlagsAndConfigFileKeys(t *testing.T) {
	path := writeConfig(t, "n1.yaml", "id: n1\ndns-addr: 127.0.0.1:3111\ndns-domain: Disco.Example\ndns-ttl: 0s\ndns-max-conns: 8\nframe-timeout: 3s\n")
	f, err := serverFlagsFrom(t, "-config", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.dns.config(f.dns.addr, f, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:3111" || cfg.Domain != "disco.example." || cfg.TTL != 0 || !cfg.NoTTL || cfg.MaxConns != 8 ||
		cfg.ReadTimeout != 3*time.Second || cfg.WriteTimeout != 3*time.Second {
		t.Fatalf("config %+v from %s", cfg, path)
	}
	f.tls.insecure = true
	if _, err := f.dns.config("0.0.0.0:53", f, false); err != nil {
		t.Fatalf("-dns-addr 0.0.0.0:53 -insecure: %v", err)
	}
	f.tls.insecure = false
	if _, err := f.dns.config("0.0.0.0:53", f, true); err == nil || !strings.Contains(err.Error(), "beyond loopback on a node with TLS") {
		t.Fatalf("-dns-addr 0.0.0.0:53 on a node with TLS: %v, want it refused", err)
	}
	if _, err := f.dns.config("127.0.0.1:53", f, true); err != nil {
		t.Fatalf("-dns-addr 127.0.0.1:53 on a node with TLS: %v", err)
	}
}

// TestDNS_BadFlagsAreUsageErrors: refused before anything starts, exit 2,
// naming the flag and what to do.
func TestDNS_BadFlagsAreUsageErrors(t *testing.T) {
	base := []string{"server", "-id", "n1", "-data-dir", t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-dns-addr", "0.0.0.0:3111"}, "-dns-addr 0.0.0.0:3111 listens beyond loopback: DNS has no TLS"},
		{[]string{"-dns-addr", "nonsense"}, `-dns-addr "nonsense" is not host:port`},
		{[]string{"-dns-addr", "127.0.0.1:3111", "-dns-max-conns", "0"}, "-dns-max-conns 0: want 1 to 65536"},
		{[]string{"-dns-ttl", "2h"}, "-dns-ttl 2h0m0s: want whole seconds from 0s to 1h0m0s"},
		{[]string{"-dns-ttl", "1500ms"}, "-dns-ttl 1.5s: want whole seconds"},
		{[]string{"-dns-domain", "."}, "-dns-domain: domain \".\""},
		{[]string{"-dns-domain", "a..b"}, "is not a domain name"},
	} {
		code, _, errs := runCLI(t, append(slices.Clone(base), tc.args...)...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if code, _, errs := runCLI(t, "dev", "-dns-addr", "0.0.0.0:3111"); code != 2 || !strings.Contains(errs, "loopback only") {
		t.Errorf("dev -dns-addr 0.0.0.0:3111: exit %d, stderr %q", code, errs)
	}
}

// TestDNS_ABusyPortStopsTheServerBeforeItStarts: -dns-addr on a UDP port in
// use fails the command at once, naming the flag.
func TestDNS_ABusyPortStopsTheServerBeforeItStarts(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	code, _, errs := runCLI(t, "server", "-id", "n1", "-data-dir", t.TempDir(), "-addr", closedAddr(t), "-dns-addr", pc.LocalAddr().String())
	if code == 0 || !strings.Contains(errs, "-dns-addr") || !strings.Contains(errs, "address already in use") {
		t.Fatalf("busy -dns-addr: exit %d, stderr %q", code, errs)
	}
}
