package deploy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/testport"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/test/prockit"
)

// The TLS Secret make-tls-secret.sh makes, and the pods' command lines run
// as real processes on loopback with it.

// fakeKubectl records each call's arguments, one call a line, in
// $KUBECTL_LOG, and takes what `apply -f -` is given.
const fakeKubectl = `#!/bin/sh
echo "$*" >> "$KUBECTL_LOG"
case " $* " in
*" apply "*) cat > /dev/null ;;
*) echo "kind: Secret" ;;
esac
`

// secretRun is one run of make-tls-secret.sh in its own directory.
type secretRun struct {
	dir   string // the working directory: the script's pki is dir/pki
	code  int
	out   string
	calls []string // kubectl's arguments, one call each
}

func (r secretRun) pki(rel ...string) string {
	return filepath.Join(append([]string{r.dir, "pki"}, rel...)...)
}

// runSecretScript runs deploy/kubernetes/make-tls-secret.sh with args in
// dir, with the discoverd binary of this tree and a kubectl that records
// its calls.
func runSecretScript(t *testing.T, dir string, args ...string) secretRun {
	t.Helper()
	kubectl := filepath.Join(dir, "kubectl")
	if err := os.WriteFile(kubectl, []byte(fakeKubectl), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "kubectl.log")
	_ = os.Remove(log)
	cmd := exec.Command("sh", append([]string{kubeDir(t, "make-tls-secret.sh")}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DISCOVERD_BIN="+discoverdBin(t), "KUBECTL="+kubectl, "KUBECTL_LOG="+log)
	out, err := cmd.CombinedOutput()
	r := secretRun{dir: dir, out: string(out)}
	if err != nil {
		r.code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		}
	}
	if b, err := os.ReadFile(log); err == nil {
		r.calls = strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	return r
}

// tlsVolume is the Secret volume of the pods' TLS files.
func tlsVolume(t *testing.T, d *deployment, p *podCommand) (secretName, mountPath string) {
	t.Helper()
	mount, vol, _ := d.mountOf(p.flags["tls-cert"].value)
	secretName = getString(vol, "secret", "secretName")
	if mount == nil || secretName == "" {
		t.Fatalf("-tls-cert=%s is not in a Secret volume", p.flags["tls-cert"].value)
	}
	return secretName, getString(mount, "mountPath")
}

// TestKubernetes_TLSSecretScript: make-tls-secret.sh gives every pod of the
// largest overlay the TLS files its command line names, in the Secret its
// volume mounts, in the namespace given: certificates the node accepts
// (a server certificate of the cluster-name the pods run with, signed by
// the CA) that name the pod's -advertise host, the client Service in the
// namespace and the address the client commands in the pod dial. The CA
// key stays out of the Secret. A second run refuses to replace the
// certificates, and a bad pod count is refused; neither calls kubectl.
func TestKubernetes_TLSSecretScript(t *testing.T) {
	h := discoverdServerFlags(t)
	objs := renderOK(t, kubeDir(t, "overlays/five"))
	d, bad := sortOut(objs)
	if d == nil {
		t.Fatal(bad)
	}
	cmds := podCommands(t, objs, kustomizations["overlays/five"].replicas)
	secretName, mountPath := tlsVolume(t, d, cmds[0])

	const ns = "team-a"
	r := runSecretScript(t, t.TempDir(), ns)
	if r.code != 0 {
		t.Fatalf("make-tls-secret.sh %s: exit %d\n%s", ns, r.code, r.out)
	}
	want := []string{
		fmt.Sprintf("-n %s create secret generic %s --from-file=pki/secret --dry-run=client -o yaml", ns, secretName),
		fmt.Sprintf("-n %s apply -f -", ns),
	}
	slices.Sort(r.calls) // the two ends of a pipe run at once
	slices.Sort(want)
	if !slices.Equal(r.calls, want) {
		t.Errorf("kubectl was called with\n%q\nwant\n%q", r.calls, want)
	}

	referenced := map[string]bool{}
	for _, p := range cmds {
		files := map[string]string{}
		for _, f := range []string{"tls-ca", "tls-cert", "tls-key"} {
			rel, ok := strings.CutPrefix(p.flags[f].value, mountPath+"/")
			if !ok {
				t.Fatalf("pod %s: -%s=%s is not under %s", p.pod, f, p.flags[f].value, mountPath)
			}
			referenced[rel] = true
			files[f] = r.pki("secret", rel)
		}
		store, err := tlsutil.Load(tlsutil.Files{CA: files["tls-ca"], Cert: files["tls-cert"], Key: files["tls-key"]},
			tlsutil.Options{Cluster: h.value(p, "cluster-name")})
		if err != nil {
			t.Errorf("pod %s: the node would not start with its TLS files: %v", p.pod, err)
			continue
		}
		leaf := store.Leaf()
		host, _, _ := net.SplitHostPort(p.flags["advertise"].value)
		names := []string{host}
		for _, s := range d.services {
			if name(s) != name(d.headless) {
				names = append(names, fmt.Sprintf("%s.%s.svc", name(s), ns))
			}
		}
		for _, n := range names {
			if err := leaf.VerifyHostname(n); err != nil {
				t.Errorf("pod %s: its certificate does not name %s, which peers or clients dial: %v", p.pod, n, err)
			}
		}
		if local, _, _ := net.SplitHostPort(p.env["DISCOVERD"]); leaf.VerifyHostname(local) != nil {
			t.Errorf("pod %s: its certificate does not name %s, which the client commands in the pod dial", p.pod, local)
		}
	}
	entries, err := os.ReadDir(r.pki("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !referenced[e.Name()] {
			t.Errorf("the Secret holds %s, which no pod uses (the CA key must stay out)", e.Name())
		}
	}
	if _, err := tlsutil.ClientConfig(tlsutil.ClientFiles{CA: r.pki("ca.pem"), Cert: r.pki("client-admin.pem"), Key: r.pki("client-admin-key.pem")}); err != nil {
		t.Errorf("the client certificate: %v", err)
	}

	before, _ := os.ReadFile(r.pki("secret", "server-discoverd-0.pem"))
	again := runSecretScript(t, r.dir, ns)
	after, _ := os.ReadFile(r.pki("secret", "server-discoverd-0.pem"))
	if again.code != 1 || !strings.Contains(again.out, "move it away") || len(again.calls) != 0 || string(before) != string(after) {
		t.Errorf("a second run: exit %d, kubectl calls %q, certificate replaced %v:\n%s", again.code, again.calls, string(before) != string(after), again.out)
	}
	for _, pods := range []string{"x", "0", "-1"} {
		bad := runSecretScript(t, t.TempDir(), ns, pods)
		if bad.code != 2 || !strings.Contains(bad.out, "PODS must be") || len(bad.calls) != 0 {
			t.Errorf("make-tls-secret.sh %s %s: exit %d, kubectl calls %q:\n%s", ns, pods, bad.code, bad.calls, bad.out)
		}
	}
}

// pod is one pod of TestKubernetes_PodsServeAsACluster: a discoverd
// process with the pod's command line.
type pod struct {
	name     string
	rpc      string // 127.0.0.1:port standing for the pod's -addr
	httpAddr string // and for its -http-addr
	proc     *prockit.Proc
}

// TestKubernetes_PodsServeAsACluster runs the base's three pods as
// discoverd processes with their exact command lines — the args, expanded
// as the kubelet does, and the ConfigMap's config file — and the TLS files
// make-tls-secret.sh makes, moved to loopback: the mounts become
// directories, -addr and -http-addr loopback ports, and -peer-dial sends
// each pod's DNS name (there is no cluster DNS here) to its port. The pods
// elect a leader and become ready; the probes' paths answer 200 over HTTPS
// without a client certificate, as the kubelet asks; a client with the
// script's client certificate registers and lists. Then a rolling restart
// of one pod: it stops on SIGTERM within terminationGracePeriodSeconds,
// comes back with the same command line and its volume, is ready again and
// serves the registration.
func TestKubernetes_PodsServeAsACluster(t *testing.T) {
	h := discoverdServerFlags(t)
	want := kustomizations["base"]
	objs := renderOK(t, kubeDir(t, "base"))
	d, bad := sortOut(objs)
	if d == nil {
		t.Fatal(bad)
	}
	cmds := podCommands(t, objs, want.replicas)
	if bad := flagProblems(cmds, h); len(bad) > 0 {
		t.Fatalf("the pods' command lines cannot run: `discoverd server` of this tree refuses them:\n%s", strings.Join(bad, "\n"))
	}
	secret := runSecretScript(t, t.TempDir(), "default", strconv.Itoa(want.replicas))
	if secret.code != 0 {
		t.Fatalf("make-tls-secret.sh: exit %d\n%s", secret.code, secret.out)
	}
	_, tlsMount := tlsVolume(t, d, cmds[0])
	dir := t.TempDir()

	ports, err := testport.Pick(2 * len(cmds))
	if err != nil {
		t.Fatal(err)
	}
	pods := make([]*pod, len(cmds))
	var dial []string
	for i, p := range cmds {
		pods[i] = &pod{name: p.pod, rpc: fmt.Sprintf("127.0.0.1:%d", ports[2*i]), httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		dial = append(dial, p.pod+"="+pods[i].rpc)
	}
	for i, p := range cmds {
		// Each mount of the pod becomes a directory of the test.
		mounts := map[string]string{tlsMount: secret.pki("secret")}
		for _, m := range getList(d.container, "volumeMounts") {
			mp := getString(m, "mountPath")
			if mp == tlsMount {
				continue
			}
			local := filepath.Join(dir, p.pod, getString(m, "name"))
			mounts[mp] = local
			if err := os.MkdirAll(local, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		moved := func(v string) string {
			for mp, local := range mounts {
				if r, ok := strings.CutPrefix(v, mp+"/"); ok {
					return filepath.Join(local, r)
				}
			}
			return v
		}
		cfgMount, _, rel := d.mountOf(p.configPath)
		if err := os.WriteFile(filepath.Join(mounts[getString(cfgMount, "mountPath")], rel), []byte(p.configData), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{p.args[0]}
		for _, a := range p.args[1:] {
			n, v, _ := strings.Cut(a, "=")
			args = append(args, n+"="+moved(v))
		}
		// Paths the config file gives, moved: the command line wins.
		for n, v := range p.flags {
			if !strings.HasPrefix(v.from, "args") && moved(v.value) != v.value {
				args = append(args, "-"+n+"="+moved(v.value))
			}
		}
		args = append(args, "-addr="+pods[i].rpc, "-http-addr="+pods[i].httpAddr, "-peer-dial="+strings.Join(dial, ","))
		proc, err := prockit.Start(prockit.Spec{Name: p.pod, Cmd: exec.Command(discoverdBin(t), args...), Log: filepath.Join(dir, p.pod+".log")})
		if err != nil {
			t.Fatal(err)
		}
		pods[i].proc = proc
		t.Cleanup(func() { _ = pods[i].proc.Kill() })
	}

	cliTLS, err := tlsutil.ClientConfig(tlsutil.ClientFiles{CA: secret.pki("ca.pem"), Cert: secret.pki("client-admin.pem"), Key: secret.pki("client-admin-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet's probes: HTTPS, no client certificate. This one checks
	// the node's certificate too.
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cliTLS.RootCAs, MinVersion: tls.VersionTLS13}}}
	for _, p := range pods {
		waitReady(t, p, pods, probe, cliTLS)
	}

	c, err := client.NewWithConfig(client.Config{Servers: []string{pods[0].rpc, pods[1].rpc, pods[2].rpc}, TLS: cliTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.RegisterWithHost("web", "10.0.0.5", 8080, map[string]string{"zone": "a"}); err != nil {
		t.Fatalf("register through the pods: %v", err)
	}

	// A rolling restart of the last pod, as the StatefulSet does it first.
	last := pods[len(pods)-1]
	grace, ok := getNumber(d.pod, "terminationGracePeriodSeconds")
	if !ok {
		grace = 30
	}
	if err := last.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := last.proc.Wait(time.Duration(grace) * time.Second); err != nil {
		t.Fatalf("the kubelet would SIGKILL it: %v", err)
	}
	if code := last.proc.ExitCode(); code != 0 {
		t.Fatalf("%s exited with status %d on SIGTERM, want 0 (log %s)", last.name, code, last.proc.Log())
	}
	if last.proc, err = last.proc.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, last, pods, probe, cliTLS)
	one, err := client.NewWithConfig(client.Config{Servers: []string{last.rpc}, TLS: cliTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, _, err := one.Instances(ctx, "web", client.ListOptions{})
	if err != nil || len(list) != 1 || list[0].Addr != "10.0.0.5:8080" {
		t.Fatalf("the restarted pod lists web as %v (%v), want the registration made before", list, err)
	}
}

// waitReady waits until p answers 200 on its probes' paths and, asked for
// the cluster's status, says it is ready and every pod is a member under
// one leader.
func waitReady(t *testing.T, p *pod, pods []*pod, probe *http.Client, cliTLS *tls.Config) {
	t.Helper()
	c, err := client.NewWithConfig(client.Config{Servers: []string{p.rpc}, TLS: cliTLS, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check := func() string {
		if p.proc.Exited() {
			t.Fatalf("%s exited with status %d (log %s)", p.name, p.proc.ExitCode(), p.proc.Log())
		}
		for _, path := range []string{"/health/live", "/health/ready"} {
			resp, err := probe.Get("https://" + p.httpAddr + path)
			if err != nil {
				return fmt.Sprintf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Sprintf("GET %s: %s", path, resp.Status)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil {
			return "status: " + err.Error()
		}
		ready := 0
		for _, n := range st.Nodes {
			if n.Ready && n.Leader == st.Leader {
				ready++
			}
		}
		if st.Leader == "" || len(st.Nodes) != len(pods) || ready != len(pods) {
			return fmt.Sprintf("status: leader %q, %d nodes, %d ready: %+v", st.Leader, len(st.Nodes), ready, st.Nodes)
		}
		return ""
	}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		state := check()
		if state == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s: %s (log %s)", p.name, state, p.proc.Log())
		}
		<-tick.C
	}
}
