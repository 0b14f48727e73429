package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/internal/tlsutil"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// TestTLS_CommandsMakeACAAndCertificates: `discoverd tls` writes 0600 files
// that load as the node's TLS, never overwrites, and refuses bad requests.
func TestTLS_CommandsMakeACAAndCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if code, out, errs := runCLI(t, "tls", "ca", "create", "-out", dir, "-cluster-name", "prod"); code != 0 || !strings.Contains(out, "ca-key.pem") {
		t.Fatalf("ca create: exit %d\n%s%s", code, out, errs)
	}
	server := []string{"tls", "cert", "create", "-server", "-node", "n1", "-addr", "10.0.0.7:1111,node1.example.com",
		"-ca", ca, "-ca-key", caKey, "-out", dir, "-cluster-name", "prod", "-days", "30"}
	if code, out, errs := runCLI(t, server...); code != 0 {
		t.Fatalf("server cert: exit %d\n%s%s", code, out, errs)
	}
	client := []string{"tls", "cert", "create", "-client", "-name", "alice", "-ca", ca, "-ca-key", caKey, "-out", dir, "-cluster-name", "prod"}
	if code, out, errs := runCLI(t, client...); code != 0 {
		t.Fatalf("client cert: exit %d\n%s%s", code, out, errs)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "server-n1.pem", "server-n1-key.pem", "client-alice.pem", "client-alice-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	st, err := tlsutil.Load(tlsutil.Files{CA: ca, Cert: filepath.Join(dir, "server-n1.pem"), Key: filepath.Join(dir, "server-n1-key.pem")},
		tlsutil.Options{Cluster: "prod"})
	if err != nil {
		t.Fatalf("the server certificate does not load as a node's: %v", err)
	}
	if got := st.Leaf().DNSNames; !strings.Contains(strings.Join(got, " "), "node1.example.com") || len(st.Leaf().IPAddresses) != 1 {
		t.Errorf("server certificate names %v %v", got, st.Leaf().IPAddresses)
	}
	if _, err := tlsutil.ClientConfig(tlsutil.ClientFiles{CA: ca, Cert: filepath.Join(dir, "client-alice.pem"), Key: filepath.Join(dir, "client-alice-key.pem")}); err != nil {
		t.Errorf("client files: %v", err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "server-n1.pem"))
	if code, _, errs := runCLI(t, server...); code != 1 || !strings.Contains(errs, "exists: not overwriting") {
		t.Errorf("second server cert: exit %d, %s", code, errs)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "server-n1.pem")); !bytes.Equal(before, after) {
		t.Error("the existing certificate was changed")
	}
	if code, _, errs := runCLI(t, "tls", "ca", "create", "-out", dir); code != 1 || !strings.Contains(errs, "not overwriting") {
		t.Errorf("second CA: exit %d, %s", code, errs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tls"}, "usage: discoverd tls ca create"},
		{[]string{"tls", "cert", "create", "-ca", ca, "-ca-key", caKey}, "give one of -server and -client"},
		{[]string{"tls", "cert", "create", "-server", "-client"}, "give one of -server and -client"},
		{[]string{"tls", "cert", "create", "-server", "-addr", "10.0.0.1"}, "-node"},
		{[]string{"tls", "cert", "create", "-server", "-node", "n_1", "-addr", "10.0.0.1"}, "-node"},
		{[]string{"tls", "cert", "create", "-server", "-node", "n1"}, "-addr: name at least one"},
		{[]string{"tls", "cert", "create", "-client", "-name", "a", "-addr", "10.0.0.1"}, "-node and -addr are for -server"},
		{[]string{"tls", "cert", "create", "-client", "-name", "a", "-days", "0"}, "-days 0"},
		{[]string{"tls", "ca", "create", "-cluster-name", "a.b"}, "-cluster-name"},
	} {
		if code, _, errs := runCLI(t, tc.args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if code, _, errs := runCLI(t, "tls", "cert", "create", "-client", "-name", "bob", "-ca", filepath.Join(dir, "nope.pem"), "-out", dir); code != 1 ||
		!strings.Contains(errs, "discoverd tls ca create") {
		t.Errorf("a missing CA: exit %d, %s", code, errs)
	}
}

// TestTLS_ServerRefusesToListenBeyondLoopbackWithoutTLS: exit 2 and a
// message that says how to make certificates or pass -insecure.
func TestTLS_ServerRefusesToListenBeyondLoopbackWithoutTLS(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:1111", "[::]:0", "example.com:1111"} {
		code, _, errs := runCLI(t, "server", "-id", "n1", "-data-dir", t.TempDir(), "-addr", addr)
		if code != 2 || !strings.Contains(errs, "beyond loopback without TLS") || !strings.Contains(errs, "-tls-ca") ||
			!strings.Contains(errs, "discoverd tls ca create") || !strings.Contains(errs, "-insecure") {
			t.Errorf("-addr %s: exit %d, %q", addr, code, errs)
		}
	}
	code, _, errs := runCLI(t, "server", "-backend", "etcd", "-etcd-endpoints", "http://127.0.0.1:1", "-addr", "0.0.0.0:0")
	if code != 2 || !strings.Contains(errs, "beyond loopback without TLS") {
		t.Errorf("an etcd front end beyond loopback: exit %d, %q", code, errs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-ca", "a.pem"}, "needs -tls-ca, -tls-cert and -tls-key together"},
		{[]string{"-insecure", "-tls-ca", "a.pem", "-tls-cert", "b", "-tls-key", "c"}, "-insecure and -tls-* exclude each other"},
		{[]string{"-max-conns", "0"}, "must be positive"},
		{[]string{"-handshake-timeout", "1ms"}, "-handshake-timeout 1ms"},
	} {
		args := append([]string{"server", "-id", "n1", "-data-dir", t.TempDir()}, tc.args...)
		if code, _, errs := runCLI(t, args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if code, _, errs := runCLI(t, "dev", "-addr", "0.0.0.0:1111"); code != 2 || !strings.Contains(errs, "loopback only") {
		t.Errorf("dev beyond loopback: exit %d, %q", code, errs)
	}
}

func TestTLS_Loopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1111": true, "127.1.2.3:1": true, "[::1]:1111": true, "localhost:1111": true,
		"0.0.0.0:1111": false, ":1111": false, "10.0.0.1:1111": false, "[::]:1": false, "myhost:1111": false, "garbage": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestCLI_TTLFlag: -ttl 0 is a usage error, a bare number gets a hint.
func TestCLI_TTLFlag(t *testing.T) {
	for arg, want := range map[string]string{
		"0":     "ttl 0s is out of range: allowed 1s to 24h",
		"10":    `"10" has no unit: did you mean 10s?`,
		"abc":   "is not a duration",
		"25h":   "ttl 25h0m0s is out of range",
		"500ms": "ttl 500ms is out of range",
	} {
		code, _, errs := runCLI(t, "register", "-ttl", arg, "web", "10.0.0.1:80")
		if code != 2 || !strings.Contains(errs, want) {
			t.Errorf("-ttl %s: exit %d, %q; want 2 and %q", arg, code, errs, want)
		}
	}
}

// TestCLI_AttributesMustBeText: the CLI refuses what the servers refuse,
// before sending it.
func TestCLI_AttributesMustBeText(t *testing.T) {
	for _, attr := range []string{"k=a\nb", "k=\xff", "a\x01=b"} {
		code, _, errs := runCLI(t, "register", "web", "10.0.0.1:80", attr)
		if code != 2 || !strings.Contains(errs, "invalid argument") {
			t.Errorf("attribute %q: exit %d, %q", attr, code, errs)
		}
	}
}

// TestDeploy_SystemdUnitUsesRealFlags: every flag the systemd unit passes to
// `discoverd server` exists, and the env files set every variable it uses.
func TestDeploy_SystemdUnitUsesRealFlags(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", "discoverd.service"))
	if err != nil {
		t.Fatal(err)
	}
	var f serverFlags
	fs := newFlagSet("server", "", &bytes.Buffer{})
	f.register(fs, true)
	vars := map[string]bool{}
	inExec := false
	for _, line := range strings.Split(string(unit), "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			inExec = true
		}
		if !inExec {
			continue
		}
		for _, tok := range strings.Fields(line) {
			if strings.HasPrefix(tok, "-") && fs.Lookup(strings.TrimPrefix(tok, "-")) == nil {
				t.Errorf("the unit passes %s, which discoverd server does not have", tok)
			}
			if strings.HasPrefix(tok, "${") {
				vars[strings.Trim(tok, "${}")] = true
			}
		}
		if !strings.HasSuffix(line, "\\") {
			inExec = false
		}
	}
	envs, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "cluster-*", "*.env"))
	if len(envs) != 8 || len(vars) == 0 {
		t.Fatalf("env files %v, variables %v", envs, vars)
	}
	for _, e := range envs {
		data, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		for v := range vars {
			if !strings.Contains(string(data), "\n"+v+"=") {
				t.Errorf("%s does not set %s", e, v)
			}
		}
	}
}
