package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Broken variants of the real files, each of which a rule must catch: the
// rules are only as good as the mistakes they are seen to stop.

// edit changes one object of a rendered kustomization.
type edit struct {
	kind, name string
	ops        []jsonPatchOp
	// config, if set, rewrites the text of the ConfigMap's config file.
	config func(string) string
}

func op(o, path string, value any) jsonPatchOp { return jsonPatchOp{Op: o, Path: path, Value: value} }

const ctr = "/spec/template/spec/containers/0"

// renderedCopy renders a kustomization afresh: cases change their copy.
func renderedCopy(t *testing.T, dir string) []object {
	t.Helper()
	objs := renderOK(t, kubeDir(t, dir))
	b, err := json.Marshal(objs)
	if err != nil {
		t.Fatal(err)
	}
	var out []object
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e edit) apply(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		if kind(o) != e.kind || name(o) != e.name {
			continue
		}
		for _, p := range e.ops {
			if err := p.apply(o); err != nil {
				t.Fatalf("%s %s: %v", e.kind, e.name, err)
			}
		}
		if e.config != nil {
			data := getMap(o, "data")
			before := data["discoverd.yaml"].(string)
			data["discoverd.yaml"] = e.config(before)
			if data["discoverd.yaml"] == before {
				t.Fatalf("the config edit changed nothing")
			}
		}
		return
	}
	t.Fatalf("no %s %s", e.kind, e.name)
}

func replaceText(old, new string) func(string) string {
	return func(s string) string { return strings.Replace(s, old, new, 1) }
}

// TestKubernetes_BrokenManifestsAreCaught: each case breaks one thing of the
// rendered base, and the rules must say so.
func TestKubernetes_BrokenManifestsAreCaught(t *testing.T) {
	h := discoverdServerFlags(t)
	img := dockerImage(t)
	base := kustomizations["base"]
	if bad := checkDeployment(renderedCopy(t, "base"), base, h, img); len(bad) > 0 {
		t.Fatalf("the unbroken base breaks rules: %v", bad)
	}
	sts := func(ops ...jsonPatchOp) edit { return edit{kind: "StatefulSet", name: "discoverd", ops: ops} }
	cfg := func(old, new string) edit {
		return edit{kind: "ConfigMap", name: "discoverd-config", config: replaceText(old, new)}
	}
	for _, c := range []struct {
		name string
		edit edit
		want string
	}{
		{"native port not a container port", sts(op("replace", ctr+"/ports/0/containerPort", 1112.0)),
			"port 1111 (-addr or -http-addr) is not a port of container discoverd"},
		{"headless Service targets no port", edit{kind: "Service", name: "discoverd", ops: []jsonPatchOp{op("replace", "/spec/ports/0/targetPort", "grpc")}},
			"targets grpc, which is no port of container discoverd"},
		{"client Service without the native port", edit{kind: "Service", name: "discoverd-client", ops: []jsonPatchOp{op("replace", "/spec/ports/0/targetPort", "http")}},
			"Service discoverd-client has no port to the native port 1111"},
		{"readiness on the liveness path", sts(op("replace", ctr+"/readinessProbe/httpGet/path", "/health/live")),
			`readinessProbe path "/health/live", want /health/ready`},
		{"liveness on the native port", sts(op("replace", ctr+"/livenessProbe/httpGet/port", "rpc")),
			"livenessProbe port rpc, want the -http-addr port 8080"},
		{"no readiness probe", sts(op("remove", ctr+"/readinessProbe", nil)),
			"container discoverd has no readinessProbe"},
		{"probe over HTTP with TLS on", sts(op("replace", ctr+"/startupProbe/httpGet/scheme", "HTTP")),
			`startupProbe scheme "HTTP", want HTTPS`},
		{"client Service selects other pods", edit{kind: "Service", name: "discoverd-client", ops: []jsonPatchOp{op("replace", "/spec/selector/app.kubernetes.io~1name", "discover")}},
			"Service discoverd-client: selector"},
		{"StatefulSet selector misses the template", sts(op("add", "/spec/selector/matchLabels/tier", "db")),
			"StatefulSet discoverd: selector"},
		{"budget allows losing the majority", edit{kind: "PodDisruptionBudget", name: "discoverd", ops: []jsonPatchOp{op("replace", "/spec/minAvailable", 1.0)}},
			"minAvailable 1, want 2"},
		{"budget selects other pods", edit{kind: "PodDisruptionBudget", name: "discoverd", ops: []jsonPatchOp{op("replace", "/spec/selector/matchLabels/app.kubernetes.io~1component", "client")}},
			"PodDisruptionBudget discoverd: selector"},
		{"anti-affinity selects other pods", sts(op("replace", "/spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/0/labelSelector/matchLabels/app.kubernetes.io~1name", "other")),
			"pod anti-affinity selector"},
		{"anti-affinity only preferred", sts(op("replace", "/spec/template/spec/affinity/podAntiAffinity",
			map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{}})),
			"want a required pod anti-affinity on kubernetes.io/hostname"},
		{"anti-affinity per zone", sts(op("replace", "/spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/0/topologyKey", "topology.kubernetes.io/zone")),
			"want a required pod anti-affinity on kubernetes.io/hostname"},
		{"spread selects other pods", sts(op("replace", "/spec/template/spec/topologySpreadConstraints/0/labelSelector/matchLabels/app.kubernetes.io~1name", "other")),
			"topology spread selector"},
		{"serviceName names no Service", sts(op("replace", "/spec/serviceName", "discoverd-headless")),
			`serviceName "discoverd-headless" names no Service`},
		{"headless Service hides unready pods", edit{kind: "Service", name: "discoverd", ops: []jsonPatchOp{op("remove", "/spec/publishNotReadyAddresses", nil)}},
			"publishNotReadyAddresses must be true"},
		{"headless Service with a cluster IP", edit{kind: "Service", name: "discoverd", ops: []jsonPatchOp{op("remove", "/spec/clusterIP", nil)}},
			"clusterIP must be None"},
		{"pods made one after another", sts(op("remove", "/spec/podManagementPolicy", nil)),
			`podManagementPolicy "", want Parallel`},
		{"wrong replica count", sts(op("replace", "/spec/replicas", 4.0)),
			"replicas 4, want 3"},
		{"mount of no volume", sts(op("replace", ctr+"/volumeMounts/1/name", "conf")),
			"volumeMount conf names no volume"},
		{"volume mounted nowhere", sts(op("add", "/spec/template/spec/volumes/-", map[string]any{"name": "scratch", "emptyDir": map[string]any{}})),
			"volume scratch is mounted nowhere"},
		{"ConfigMap the kustomization does not make", sts(op("replace", "/spec/template/spec/volumes/0/configMap/name", "discoverd-conf")),
			"names ConfigMap discoverd-conf, which the kustomization does not make"},
		{"claim without storage", sts(op("remove", "/spec/volumeClaimTemplates/0/spec/resources", nil)),
			"volumeClaimTemplate data requests no storage"},
		{"peer on another Service", cfg("discoverd-1: discoverd-1.discoverd:1111", "discoverd-1: discoverd-1.other:1111"),
			`-peers: discoverd-1="discoverd-1.other:1111", want discoverd-1=discoverd-1.discoverd:1111`},
		{"a voter missing from -peers", cfg("  discoverd-2: discoverd-2.discoverd:1111\n", ""),
			"-peers=\"discoverd-0=discoverd-0.discoverd:1111,discoverd-1=discoverd-1.discoverd:1111\": want pods 0 to 2 of 3"},
		{"join beyond the voters", cfg("  - discoverd-2.discoverd:1111", "  - discoverd-7.discoverd:1111"),
			`-join lists "discoverd-7.discoverd:1111", not one of the initial voters`},
		{"data dir outside the volume", cfg("data-dir: /var/lib/discoverd/data", "data-dir: /tmp/data"),
			`-data-dir="/tmp/data" must be below the mount of a volumeClaimTemplate`},
		{"data dir the volume's root", cfg("data-dir: /var/lib/discoverd/data", "data-dir: /var/lib/discoverd"),
			`-data-dir="/var/lib/discoverd" must be below the mount of a volumeClaimTemplate`},
		{"native port differs from the Services'", cfg(`addr: ":1111"`, `addr: ":1112"`),
			"port 1112 (-addr or -http-addr) is not a port of container discoverd"},
		{"grace shorter than a stop", cfg("shutdown-timeout: 10s", "shutdown-timeout: 20s"),
			"terminationGracePeriodSeconds 30 is shorter than -shutdown-timeout 20s"},
		{"grace period cut", sts(op("replace", "/spec/template/spec/terminationGracePeriodSeconds", 20.0)),
			"terminationGracePeriodSeconds 20 is shorter than -shutdown-timeout 10s"},
		{"certificate outside the Secret", sts(op("replace", ctr+"/env/2/value", "/etc/discoverd/server.pem")),
			"-tls-cert=/etc/discoverd/server.pem is not in a Secret volume"},
		{"TLS files unreadable by the node", sts(op("replace", "/spec/template/spec/volumes/1/secret/defaultMode", 256.0)),
			"want defaultMode 0440 and the pod's fsGroup"},
		{"TLS files readable by everyone", sts(op("replace", "/spec/template/spec/volumes/1/secret/defaultMode", 292.0)),
			"want defaultMode 0440 and the pod's fsGroup"},
		{"TLS off", sts(op("remove", ctr+"/args/6", nil), op("remove", ctr+"/args/5", nil), op("remove", ctr+"/args/4", nil)),
			"TLS is off"},
		{"root allowed", sts(op("replace", "/spec/template/spec/securityContext/runAsNonRoot", false)),
			"runAsNonRoot must be true"},
		{"a user the image does not have", sts(op("replace", "/spec/template/spec/securityContext/runAsUser", 1000.0)),
			"runAsUser 1000, want the image's non-root USER 65532"},
		{"writable root filesystem", sts(op("remove", ctr+"/securityContext/readOnlyRootFilesystem", nil)),
			"readOnlyRootFilesystem must be true"},
		{"privilege escalation", sts(op("replace", ctr+"/securityContext/allowPrivilegeEscalation", true)),
			"allowPrivilegeEscalation must be false"},
		{"no memory limit", sts(op("remove", ctr+"/resources/limits", nil)),
			"resources.limits.memory is not set"},
		{"a port the image does not EXPOSE", sts(op("add", ctr+"/ports/-", map[string]any{"name": "debug", "containerPort": 6060.0})),
			"port debug (6060) is not EXPOSEd"},
		{"-leave-on-stop in the base", sts(op("add", ctr+"/args/-", "-leave-on-stop")),
			"-leave-on-stop is true, want false"},
		{"advertise on another port", sts(op("replace", ctr+"/args/3", "-advertise=$(POD_NAME).discoverd:1112")),
			`-advertise="discoverd-0.discoverd:1112", want "discoverd-0.discoverd:1111"`},
		{"id not the pod's name", sts(op("replace", ctr+"/args/2", "-id=discoverd")),
			`-id="discoverd", want the pod's name`},
		{"an arg with an undefined variable", sts(op("replace", ctr+"/args/3", "-advertise=$(POD_NAME).discoverd.$(POD_NAMESPACE).svc:1111")),
			"uses $(POD_NAMESPACE), which its env does not define"},
		{"an arg that is no flag", sts(op("add", ctr+"/args/-", "leave-on-stop")),
			`arg "leave-on-stop" is not a flag`},
		{"a command over the entrypoint", sts(op("add", ctr+"/command", []any{"/bin/sh"})),
			"sets command, which replaces the image's ENTRYPOINT"},
		{"args without the subcommand", sts(op("remove", ctr+"/args/0", nil)),
			"args must start with the subcommand server"},
		{"client commands in the pod aimed elsewhere", sts(op("replace", ctr+"/env/4/value", "127.0.0.1:1112")),
			`env DISCOVERD="127.0.0.1:1112", want 127.0.0.1:1111`},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs := renderedCopy(t, "base")
			c.edit.apply(t, objs)
			bad := checkDeployment(objs, base, h, img)
			if !slices.ContainsFunc(bad, func(b string) bool { return strings.Contains(b, c.want) }) {
				t.Errorf("no problem says %q; the problems: %q", c.want, bad)
			}
		})
	}
}

// TestKubernetes_BrokenFlagsAreCaught: a config key or an arg that is no
// flag of `discoverd server`, or a value its flag refuses, is named.
func TestKubernetes_BrokenFlagsAreCaught(t *testing.T) {
	h := discoverdServerFlags(t)
	for _, c := range []struct {
		name string
		edit edit
		want string
	}{
		{"misspelt key", edit{kind: "ConfigMap", name: "discoverd-config", config: replaceText("shutdown-timeout:", "shutdown-timout:")},
			`-shutdown-timout (key "shutdown-timout" of ConfigMap discoverd-config) is not a flag of ` + "`discoverd server`"},
		{"duration without a unit", edit{kind: "ConfigMap", name: "discoverd-config", config: replaceText("shutdown-timeout: 10s", "shutdown-timeout: 10")},
			`-shutdown-timeout (key "shutdown-timeout" of ConfigMap discoverd-config): "10" is not a duration`},
		{"misspelt arg", edit{kind: "StatefulSet", name: "discoverd", ops: []jsonPatchOp{op("add", ctr+"/args/-", "-log-levl=debug")}},
			"-log-levl (args of container discoverd) is not a flag of `discoverd server`"},
		{"boolean flag with a word", edit{kind: "StatefulSet", name: "discoverd", ops: []jsonPatchOp{op("add", ctr+"/args/-", "-raft-apply-batch=maybe")}},
			`-raft-apply-batch (args of container discoverd): "maybe" is not a bool`},
		{"number flag with a word", edit{kind: "StatefulSet", name: "discoverd", ops: []jsonPatchOp{op("add", ctr+"/args/-", "-max-conns=many")}},
			`-max-conns (args of container discoverd): "many" is not a int`},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs := renderedCopy(t, "base")
			c.edit.apply(t, objs)
			bad := flagProblems(podCommands(t, objs, 3), h)
			if !slices.ContainsFunc(bad, func(b string) bool { return strings.Contains(b, c.want) }) {
				t.Errorf("no problem says %q; the problems: %q", c.want, bad)
			}
		})
	}
}

// TestKubernetes_BrokenKustomizationsAreCaught: overlays changed on disk
// (in a copy of deploy/kubernetes) render to what the rules refuse, or do
// not render, with an error that says why.
func TestKubernetes_BrokenKustomizationsAreCaught(t *testing.T) {
	h := discoverdServerFlags(t)
	img := dockerImage(t)
	for _, c := range []struct {
		name     string
		file     string // in deploy/kubernetes
		old, new string
		dir      string // the kustomization to render
		want     string // in the render error, or else in a problem
	}{
		{"five keeps the budget of three", "overlays/five/kustomization.yaml", "value: 3", "value: 2", "overlays/five",
			"minAvailable 2, want 3"},
		{"five without the replicas", "overlays/five/kustomization.yaml", "count: 5", "count: 3", "overlays/five",
			"replicas 3, want 5"},
		{"leaving with the wrong partition", "overlays/five-leaving/kustomization.yaml", "partition: 3", "partition: 2", "overlays/five-leaving",
			"rollingUpdate partition 2, want 3"},
		{"leaving without -leave-on-stop", "overlays/five-leaving/kustomization.yaml", "value: -leave-on-stop", "value: -log-level=info", "overlays/five-leaving",
			"-leave-on-stop is false, want true"},
		{"five without -join", "base/discoverd.yaml", "join:\n  - discoverd-0.discoverd:1111\n  - discoverd-1.discoverd:1111\n  - discoverd-2.discoverd:1111\n", "", "overlays/five",
			"pod discoverd-3 is not in -peers and has no -join"},
		{"replicas of no workload", "overlays/five/kustomization.yaml", "- name: discoverd\n", "- name: discoverd-x\n", "overlays/five",
			"replicas: no workload named discoverd-x"},
		{"a strategic merge patch", "overlays/five/kustomization.yaml", "      - op: replace\n        path: /spec/minAvailable\n        value: 3",
			"      spec:\n        minAvailable: 3", "overlays/five", "want a JSON 6902 patch"},
		{"a patch of nothing", "overlays/five/kustomization.yaml", "kind: PodDisruptionBudget", "kind: Deployment", "overlays/five",
			"no Deployment named discoverd"},
		{"a field the test does not apply", "base/kustomization.yaml", "resources:", "namePrefix: x-\nresources:", "base",
			`field "namePrefix" is not one this test applies`},
		{"a missing resource", "base/kustomization.yaml", "- pdb.yaml", "- budget.yaml", "base",
			"resource budget.yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			copyTree(t, kubeDir(t), root)
			p := filepath.Join(root, c.file)
			text := readFile(t, p)
			if !strings.Contains(text, c.old) {
				t.Fatalf("%s holds no %q", c.file, c.old)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(text, c.old, c.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := render(filepath.Join(root, c.dir))
			if err != nil {
				if !strings.Contains(err.Error(), c.want) {
					t.Errorf("render error %q does not say %q", err, c.want)
				}
				return
			}
			bad := checkDeployment(objs, kustomizations[c.dir], h, img)
			if !slices.ContainsFunc(bad, func(b string) bool { return strings.Contains(b, c.want) }) {
				t.Errorf("no problem says %q; the problems: %q", c.want, bad)
			}
		})
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDockerfile_BrokenDockerfilesAreCaught: each case breaks one rule of
// the real Dockerfile or .dockerignore.
func TestDockerfile_BrokenDockerfilesAreCaught(t *testing.T) {
	dockerfile := readFile(t, repoPath(t, "Dockerfile"))
	goMod := readFile(t, repoPath(t, "go.mod"))
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"final stage on a distribution", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:12",
			"the final stage is FROM debian:12"},
		{"final stage on the Go image", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM golang:1.26",
			"the final stage is FROM golang:1.26"},
		{"user by name", "USER 65532:65532", "USER nonroot", "USER nonroot: want a numeric non-root uid"},
		{"root user", "USER 65532:65532", "USER 0", "USER 0: want a numeric non-root uid"},
		{"no user", "USER 65532:65532\n", "", "the final stage has no USER uid"},
		{"cgo on", "ENV CGO_ENABLED=0 GOTOOLCHAIN=local", "ENV CGO_ENABLED=1 GOTOOLCHAIN=local", "must set CGO_ENABLED=0"},
		{"cgo left to the image", "ENV CGO_ENABLED=0 GOTOOLCHAIN=local", "ENV GOTOOLCHAIN=local", "must set CGO_ENABLED=0"},
		{"older Go than go.mod", "FROM golang:1.26 AS build", "FROM golang:1.25 AS build", "want golang:1.26"},
		{"shell-form entrypoint", `ENTRYPOINT ["/discoverd"]`, "ENTRYPOINT /discoverd", "want the exec form"},
		{"entrypoint with the subcommand", `ENTRYPOINT ["/discoverd"]`, `ENTRYPOINT ["/discoverd", "server"]`, `want ["/discoverd"]`},
		{"binary not copied", "COPY --from=build /out/discoverd /discoverd", "COPY --from=build /out/other /discoverd", "the final stage does not COPY --from=build /out/discoverd"},
		{"no build of discoverd", "./cmd/discoverd", "./cmd/other", "no stage before the last runs `go build -o OUT ./cmd/discoverd`"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(dockerfile, c.old) {
				t.Fatalf("the Dockerfile holds no %q", c.old)
			}
			_, bad := checkDockerfile(strings.Replace(dockerfile, c.old, c.new, 1), goMod)
			if !slices.ContainsFunc(bad, func(b string) bool { return strings.Contains(b, c.want) }) {
				t.Errorf("no problem says %q; the problems: %q", c.want, bad)
			}
		})
	}

	t.Run("a port not EXPOSEd", func(t *testing.T) {
		img, bad := checkDockerfile(strings.Replace(dockerfile, "EXPOSE 1111 8080", "EXPOSE 1111", 1), goMod)
		if len(bad) > 0 {
			t.Fatal(bad)
		}
		bad = checkDeployment(renderedCopy(t, "base"), kustomizations["base"], discoverdServerFlags(t), img)
		if want := "port http (8080) is not EXPOSEd"; !slices.ContainsFunc(bad, func(b string) bool { return strings.Contains(b, want) }) {
			t.Errorf("no problem says %q; the problems: %q", want, bad)
		}
	})

	files := []string{"go.mod", "go.sum", "cmd/discoverd/main.go", "internal/wire/messages.go", ".git/HEAD", "deploy/README.md", "x.test", "a/b/c.test"}
	for _, c := range []struct {
		name, ignore string
		want         []string
	}{
		{"a directory", ".git\ninternal\n", []string{"internal/wire/messages.go", ".git/HEAD"}},
		{"brought back", "internal\n!internal/wire\n", nil},
		{"a pattern", "*.mod\n", []string{"go.mod"}},
		{"any depth", "**/*.test\n", []string{"x.test", "a/b/c.test"}},
		{"one level only", "*/*.go\n", nil},
		{"every Go file", "**/*.go\n", []string{"cmd/discoverd/main.go", "internal/wire/messages.go"}},
		{"a leading slash", "/deploy\n", []string{"deploy/README.md"}},
	} {
		t.Run(".dockerignore "+c.name, func(t *testing.T) {
			got, err := ignoredFiles(c.ignore, files)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("%q leaves out %q, want %q", c.ignore, got, c.want)
			}
		})
	}
}

// TestKubernetes_ParseHelp: the help of `discoverd server -h` gives the
// flags, their types and defaults, and the stop grace; a help that does
// not say the grace is refused.
func TestKubernetes_ParseHelp(t *testing.T) {
	help := "Usage: discoverd server [flags]\n\nFlags:\n" +
		"  -addr string\n    \thost:port to listen on (default \"127.0.0.1:1111\")\n" +
		"  -insecure\n    \tallow listening beyond loopback\n" +
		"  -raft-apply-batch\n    \tgroup commit (default true)\n" +
		"  -shutdown-timeout duration\n    \thow long a stop waits (Raft then gets 15s more before the process exits anyway) (default 10s)\n" +
		"  -snapshot-threshold uint\n    \tentries (default 8192)\n" +
		"  -max-conns int\n    \tmost connections (default 4096)\n" +
		"  -tls-cert discoverd tls cert create -server\n    \tthe certificate, made with `discoverd tls cert create -server`\n" +
		"  -a\tone letter\n  -b string\n    \tb\n  -c string\n    \tc\n  -d string\n    \td\n"
	h, err := parseHelp(help)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, typ, def string }{
		{"addr", "string", "127.0.0.1:1111"}, {"insecure", "", ""}, {"raft-apply-batch", "", "true"},
		{"shutdown-timeout", "duration", "10s"}, {"snapshot-threshold", "uint", "8192"}, {"max-conns", "int", "4096"},
		{"tls-cert", "discoverd tls cert create -server", ""}, {"a", "", ""},
	} {
		f, ok := h.flags[c.name]
		if !ok || f.typ != c.typ || f.def != c.def {
			t.Errorf("-%s: got %+v (found %v), want type %q default %q", c.name, f, ok, c.typ, c.def)
		}
	}
	if h.stopGrace.String() != "15s" {
		t.Errorf("stop grace %v, want 15s", h.stopGrace)
	}
	if _, err := parseHelp(strings.Replace(help, "Raft then gets 15s more", "then it stops", 1)); err == nil || !strings.Contains(err.Error(), "update stopGraceRE") {
		t.Errorf("a help without the stop grace: %v", err)
	}
	for _, c := range []struct {
		flag, value string
		ok          bool
	}{{"shutdown-timeout", "10s", true}, {"shutdown-timeout", "10", false}, {"insecure", "true", true}, {"insecure", "yes", false},
		{"max-conns", "-3", true}, {"snapshot-threshold", "-3", false}, {"tls-cert", "anything", true}} {
		if msg := h.flags[c.flag].check(c.value); (msg == "") != c.ok {
			t.Errorf("-%s=%s: %q", c.flag, c.value, msg)
		}
	}
}
