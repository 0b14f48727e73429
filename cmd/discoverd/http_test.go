package main

import (
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHTTP_FlagsAndConfigFileKeys: -http-addr, -enable-pprof and
// -http-max-conns come from the command line or the config file; the
// listener takes the port's deadlines.
func TestHTTP_FlagsAndConfigFileKeys(t *testing.T) {
	path := writeConfig(t, "n1.yaml", "id: n1\nhttp-addr: 127.0.0.1:2111\nenable-pprof: true\nhttp-max-conns: 16\nhandshake-timeout: 2s\n")
	f, err := serverFlagsFrom(t, "-config", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.http.config(f.http.addr, f, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:2111" || !cfg.Pprof || cfg.MaxConns != 16 || cfg.HeaderTimeout != 2*time.Second ||
		cfg.ReadTimeout != f.frameTimeout || cfg.IdleTimeout != f.idleTimeout {
		t.Fatalf("config %+v from %s", cfg, path)
	}
	f, err = serverFlagsFrom(t, "-config", path, "-http-addr", "")
	if err != nil {
		t.Fatal(err)
	}
	if f.http.addr != "" {
		t.Fatalf("-http-addr \"\" on the command line did not win over the file: %q", f.http.addr)
	}
}

// TestHTTP_BadFlagsAreUsageErrors: refused before anything starts, exit 2,
// naming the flag and what to do.
func TestHTTP_BadFlagsAreUsageErrors(t *testing.T) {
	base := []string{"server", "-id", "n1", "-data-dir", t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-http-addr", "0.0.0.0:2111"}, "-http-addr 0.0.0.0:2111 listens beyond loopback without TLS"},
		{[]string{"-enable-pprof"}, "-enable-pprof needs -http-addr"},
		{[]string{"-http-addr", "127.0.0.1:2111", "-http-max-conns", "0"}, "-http-max-conns 0: want 1 to 65536"},
		{[]string{"-http-addr", "nonsense"}, `-http-addr "nonsense" is not host:port`},
		{[]string{"-debug-addr", "127.0.0.1:6060"}, "-debug-addr"},
		{[]string{"-http-cors-origin", "https://ui.example"}, "-http-cors-origin needs -http-addr"},
		{[]string{"-http-addr", "127.0.0.1:2111", "-http-cors-origin", "ui.example"}, `-http-cors-origin "ui.example" is not an origin`},
		{[]string{"-http-addr", "127.0.0.1:2111", "-http-cors-origin", "https://ui.example/app"}, "scheme://host[:port]"},
	} {
		code, _, errs := runCLI(t, append(slices.Clone(base), tc.args...)...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if code, _, errs := runCLI(t, "dev", "-http-addr", "0.0.0.0:2111"); code != 2 || !strings.Contains(errs, "loopback only") {
		t.Errorf("dev -http-addr 0.0.0.0:2111: exit %d, stderr %q", code, errs)
	}
}

// TestHTTP_ABusyPortStopsTheServerBeforeItStarts: -http-addr on a port in
// use fails the command at once, naming the flag, before the node opens
// its data dir.
func TestHTTP_ABusyPortStopsTheServerBeforeItStarts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := port.Addr().String()
	port.Close()
	dir := t.TempDir()
	code, _, errs := runCLI(t, "server", "-id", "n1", "-addr", addr, "-data-dir", dir, "-http-addr", ln.Addr().String())
	if code != 1 || !strings.Contains(errs, "-http-addr") {
		t.Fatalf("exit %d, stderr %q; want 1 naming -http-addr", code, errs)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		t.Fatalf("the data dir holds %d entries (%v): the node started before the HTTP listener failed", len(entries), err)
	}
}

func TestHTTP_DevAddressesFollowTheFirst(t *testing.T) {
	got, err := devHTTPAddrs("127.0.0.1:2111", 3)
	if err != nil || !slices.Equal(got, []string{"127.0.0.1:2111", "127.0.0.1:2112", "127.0.0.1:2113"}) {
		t.Fatalf("devHTTPAddrs: %v %v", got, err)
	}
	if got, err := devHTTPAddrs("", 3); err != nil || !slices.Equal(got, []string{"", "", ""}) {
		t.Fatalf("devHTTPAddrs without an address: %v %v", got, err)
	}
	if _, err := devHTTPAddrs("127.0.0.1:65535", 3); err == nil {
		t.Fatal("devHTTPAddrs past the last port: no error")
	}
}
