package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// The rules the manifests of deploy/kubernetes keep, each one a function of
// the rendered objects: what one object says must agree with what another,
// the config file, the Dockerfile's image and `discoverd server -h` say.
// Every rule appends a problem naming the object, the field and what was
// expected; checkDeployment returns them all.

// shape is what a kustomization is meant to make.
type shape struct {
	replicas     int  // pods of the StatefulSet
	minAvailable int  // the PodDisruptionBudget's
	peers        int  // initial voters in -peers: pods 0 .. peers-1
	partition    int  // the rolling update's partition (0: none)
	leaveOnStop  bool // the pods run with -leave-on-stop
}

// deployment is a rendered kustomization, sorted out.
type deployment struct {
	objs       []object
	sts        object         // the one StatefulSet
	pod        map[string]any // its pod template's spec
	labels     map[string]any // its pod template's labels
	container  map[string]any // the discoverd container
	headless   object         // the Service the StatefulSet names, if any
	services   []object
	pdbs       []object
	configMaps map[string]object
}

// podCommand is the command line one pod runs, as the kubelet expands it
// and the node reads it with its config file.
type podCommand struct {
	pod   string
	env   map[string]string // the container's environment, expanded
	args  []string          // after $(VAR) expansion; args[0] is the subcommand
	flags map[string]flagValue
	// configData is the text of the -config file, configPath its path in
	// the pod.
	configPath, configData string
}

type flagValue struct {
	value string
	from  string // where it is set, for messages
}

type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// sortOut finds the objects the rules need; a missing one is a problem.
func sortOut(objs []object) (*deployment, problems) {
	var bad problems
	d := &deployment{objs: objs, configMaps: map[string]object{}}
	var sets []object
	for _, o := range objs {
		switch kind(o) {
		case "StatefulSet":
			sets = append(sets, o)
		case "Service":
			d.services = append(d.services, o)
		case "PodDisruptionBudget":
			d.pdbs = append(d.pdbs, o)
		case "ConfigMap":
			d.configMaps[name(o)] = o
		}
	}
	if len(sets) != 1 {
		bad.addf("want one StatefulSet, found %d", len(sets))
		return nil, bad
	}
	d.sts = sets[0]
	d.pod = getMap(d.sts, "spec", "template", "spec")
	d.labels = getMap(d.sts, "spec", "template", "metadata", "labels")
	containers := getList(d.pod, "containers")
	if len(containers) != 1 {
		bad.addf("StatefulSet %s: want one container (discoverd), found %d", name(d.sts), len(containers))
		return nil, bad
	}
	d.container, _ = containers[0].(map[string]any)
	for _, s := range d.services {
		if name(s) == getString(d.sts, "spec", "serviceName") {
			d.headless = s
		}
	}
	return d, bad
}

// stsName is the StatefulSet's name; its pods are stsName-0, stsName-1, ...
func (d *deployment) stsName() string { return name(d.sts) }

func (d *deployment) podName(i int) string { return fmt.Sprintf("%s-%d", d.stsName(), i) }

// command is the command line of pod: its container's args with $(VAR)
// expanded from its env as the kubelet does, and the flags they and the
// -config file set (the command line wins, as in `discoverd server`); nil
// when the args are not a `discoverd server` command line.
func (d *deployment) command(pod string) (*podCommand, problems) {
	var bad problems
	cname := getString(d.container, "name")
	vars := map[string]string{}
	for _, e := range getList(d.container, "env") {
		n := getString(e, "name")
		switch {
		case get(e, "value") != nil:
			v, undefined := expand(getString(e, "value"), vars)
			for _, u := range undefined {
				bad.addf("container %s: env %s uses $(%s), which no env before it defines: Kubernetes leaves it as it is", cname, n, u)
			}
			vars[n] = v
		case get(e, "valueFrom", "fieldRef") != nil:
			switch fp := getString(e, "valueFrom", "fieldRef", "fieldPath"); fp {
			case "metadata.name":
				vars[n] = pod
			case "metadata.namespace":
				vars[n] = "NAMESPACE"
			default:
				vars[n] = "<" + fp + ">"
			}
		case get(e, "valueFrom", "resourceFieldRef") != nil:
			res := getString(e, "valueFrom", "resourceFieldRef", "resource")
			r, _ := strings.CutPrefix(res, "limits.")
			if get(d.container, "resources", "limits", r) == nil {
				bad.addf("container %s: env %s takes %s, which the container does not set", cname, n, res)
			}
			vars[n] = "<" + res + ">"
		default:
			vars[n] = "<" + n + ">"
		}
	}
	p := &podCommand{pod: pod, env: vars, flags: map[string]flagValue{}}
	if get(d.container, "command") != nil {
		bad.addf("container %s sets command, which replaces the image's ENTRYPOINT (discoverd): give only args", cname)
	}
	for _, a := range getList(d.container, "args") {
		s, _ := a.(string)
		v, undefined := expand(s, vars)
		for _, u := range undefined {
			bad.addf("container %s: arg %q uses $(%s), which its env does not define: Kubernetes leaves it as it is", cname, s, u)
		}
		p.args = append(p.args, v)
	}
	if len(p.args) == 0 || p.args[0] != "server" {
		bad.addf("container %s: args must start with the subcommand server (the image's ENTRYPOINT is discoverd), got %q", cname, p.args)
		return nil, bad
	}
	from := "args of container " + cname
	for _, a := range p.args[1:] {
		n, v, hasValue := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		n = strings.TrimPrefix(n, "-")
		if !strings.HasPrefix(a, "-") || n == "" {
			bad.addf("container %s: arg %q is not a flag: write -name=value", cname, a)
			continue
		}
		if !hasValue {
			v = "true" // a boolean flag alone; flagProblems checks that it is one
		}
		if _, dup := p.flags[n]; dup {
			bad.addf("container %s: -%s is given twice", cname, n)
		}
		p.flags[n] = flagValue{value: v, from: from}
	}
	if cfg, ok := p.flags["config"]; ok {
		p.configPath = cfg.value
		bad = append(bad, d.readConfig(p)...)
	}
	return p, bad
}

// expand does Kubernetes' $(VAR) expansion of an env value or an arg: $$ is
// a $, and a $(VAR) no earlier env defines stays as it is (undefined).
func expand(s string, vars map[string]string) (out string, undefined []string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		end := strings.IndexByte(s[i:], ')')
		if s[i+1] != '(' || end < 0 {
			b.WriteByte(s[i])
			continue
		}
		n := s[i+2 : i+end]
		if v, ok := vars[n]; ok {
			b.WriteString(v)
		} else {
			b.WriteString(s[i : i+end+1])
			undefined = append(undefined, n)
		}
		i += end
	}
	return b.String(), undefined
}

// readConfig finds the -config file in the ConfigMap mounted at its path
// and adds the flags it sets that the command line does not.
func (d *deployment) readConfig(p *podCommand) problems {
	var bad problems
	mount, vol, rel := d.mountOf(p.configPath)
	cmName := getString(vol, "configMap", "name")
	if mount == nil || cmName == "" {
		bad.addf("-config=%s is not in a mounted ConfigMap volume", p.configPath)
		return bad
	}
	if get(vol, "configMap", "items") != nil {
		bad.addf("volume %s: configMap items are not understood by this test: mount the whole ConfigMap", getString(vol, "name"))
		return bad
	}
	cm, ok := d.configMaps[cmName]
	if !ok {
		bad.addf("volume %s names ConfigMap %s, which the kustomization does not make", getString(vol, "name"), cmName)
		return bad
	}
	text, ok := get(cm, "data", rel).(string)
	if !ok {
		bad.addf("-config=%s: ConfigMap %s has no key %q", p.configPath, cmName, rel)
		return bad
	}
	p.configData = text
	keys, err := configFlags([]byte(text))
	if err != nil {
		bad.addf("-config=%s (ConfigMap %s): %v", p.configPath, cmName, err)
		return bad
	}
	for k, v := range keys {
		if _, onCommandLine := p.flags[k]; !onCommandLine {
			p.flags[k] = flagValue{value: v, from: fmt.Sprintf("key %q of ConfigMap %s", k, cmName)}
		}
	}
	return bad
}

// configFlags reads a `discoverd server -config` file as the server does
// (cmd/discoverd/config.go): YAML or JSON, one key per flag; a list is
// joined with commas, a map becomes sorted id=value pairs.
func configFlags(data []byte) (map[string]string, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var keys map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&keys); err != nil {
		return nil, fmt.Errorf("want a map of flag names to values: %v", err)
	}
	out := map[string]string{}
	for k, v := range keys {
		var parts []string
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				parts = append(parts, fmt.Sprint(e))
			}
		case map[string]any:
			for id, e := range v {
				parts = append(parts, fmt.Sprintf("%s=%v", id, e))
			}
			sort.Strings(parts)
		case nil:
			return nil, fmt.Errorf("key %q has no value", k)
		default:
			parts = []string{fmt.Sprint(v)}
		}
		out[k] = strings.Join(parts, ",")
	}
	return out, nil
}

// mountOf is the container's volume mount that holds file (an absolute
// path), the volume or volumeClaimTemplate it mounts, and file's path in
// it; nils when no mount holds it.
func (d *deployment) mountOf(file string) (mount, volume map[string]any, rel string) {
	for _, m := range getList(d.container, "volumeMounts") {
		mp := strings.TrimSuffix(getString(m, "mountPath"), "/")
		r, ok := strings.CutPrefix(path.Clean(file), mp+"/")
		if !ok || mp == "" {
			continue
		}
		return m.(map[string]any), d.volume(getString(m, "name")), r
	}
	return nil, nil, ""
}

// volume is the pod's volume or the StatefulSet's volumeClaimTemplate of
// that name (a template has a "spec"), or nil.
func (d *deployment) volume(n string) map[string]any {
	for _, v := range getList(d.pod, "volumes") {
		if getString(v, "name") == n {
			return v.(map[string]any)
		}
	}
	for _, c := range getList(d.sts, "spec", "volumeClaimTemplates") {
		if getString(c, "metadata", "name") == n {
			return map[string]any{"name": n, "spec": get(c, "spec")}
		}
	}
	return nil
}

// containerPort resolves a port reference (a name, or a number) to one of
// the container's ports.
func (d *deployment) containerPort(ref any) (int, bool) {
	for _, p := range getList(d.container, "ports") {
		n, _ := getNumber(p, "containerPort")
		switch r := ref.(type) {
		case string:
			if r != "" && getString(p, "name") == r {
				return int(n), true
			}
		case float64:
			if r == n {
				return int(n), true
			}
		}
	}
	return 0, false
}

// selects reports whether a label selector (a map of labels) is not empty
// and picks the pods of the template.
func (d *deployment) selects(sel map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if d.labels[k] != v {
			return false
		}
	}
	return true
}

// image is what the Dockerfile's final stage says, that the pods depend on.
type image struct {
	uid        int   // USER
	exposed    []int // EXPOSE
	entrypoint []string
}

// checkDeployment applies every rule to a rendered kustomization.
func checkDeployment(objs []object, want shape, h helpFlags, img image) problems {
	d, bad := sortOut(objs)
	if d == nil {
		return bad
	}
	bad = append(bad, checkWorkload(d, want)...)
	bad = append(bad, checkServices(d)...)
	bad = append(bad, checkDisruptions(d, want)...)
	bad = append(bad, checkSecurity(d, img)...)
	bad = append(bad, checkVolumes(d)...)
	for i := range want.replicas {
		p, pb := d.command(d.podName(i))
		bad = append(bad, pb...)
		if p == nil {
			break
		}
		bad = append(bad, checkPod(d, p, want, h, img)...)
	}
	return dedupe(bad)
}

func dedupe(bad problems) problems {
	var out problems
	seen := map[string]bool{}
	for _, b := range bad {
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out
}

func checkWorkload(d *deployment, want shape) problems {
	var bad problems
	n := d.stsName()
	if r, _ := getNumber(d.sts, "spec", "replicas"); int(r) != want.replicas {
		bad.addf("StatefulSet %s: replicas %v, want %d", n, get(d.sts, "spec", "replicas"), want.replicas)
	}
	if p := getString(d.sts, "spec", "podManagementPolicy"); p != "Parallel" {
		bad.addf("StatefulSet %s: podManagementPolicy %q, want Parallel: with OrderedReady pod 1 waits for pod 0 to be ready, and pod 0 is not ready until a majority runs", n, p)
	}
	if t := getString(d.sts, "spec", "updateStrategy", "type"); t != "" && t != "RollingUpdate" {
		bad.addf("StatefulSet %s: updateStrategy %q, want RollingUpdate (one pod at a time, each ready before the next)", n, t)
	}
	if p, _ := getNumber(d.sts, "spec", "updateStrategy", "rollingUpdate", "partition"); int(p) != want.partition {
		bad.addf("StatefulSet %s: rollingUpdate partition %v, want %d", n, p, want.partition)
	}
	if sel := getMap(d.sts, "spec", "selector", "matchLabels"); !d.selects(sel) || get(d.sts, "spec", "selector", "matchExpressions") != nil {
		bad.addf("StatefulSet %s: selector %v does not pick its pod template's labels %v (give matchLabels only)", n, sel, d.labels)
	}
	return bad
}

func checkServices(d *deployment) problems {
	var bad problems
	rpc := d.rpcPort()
	if d.headless == nil {
		bad.addf("StatefulSet %s: serviceName %q names no Service of the kustomization: it must be the headless Service that gives the pods their DNS names",
			d.stsName(), getString(d.sts, "spec", "serviceName"))
	} else {
		if getString(d.headless, "spec", "clusterIP") != "None" {
			bad.addf("Service %s (the StatefulSet's serviceName): clusterIP must be None (headless)", name(d.headless))
		}
		if !getBool(d.headless, "spec", "publishNotReadyAddresses") {
			bad.addf("Service %s: publishNotReadyAddresses must be true: pods find each other by DNS before any of them is ready", name(d.headless))
		}
	}
	clients := 0
	for _, s := range d.services {
		sel := getMap(s, "spec", "selector")
		if !d.selects(sel) {
			bad.addf("Service %s: selector %v does not pick the pods (labels %v)", name(s), sel, d.labels)
		}
		hasRPC := false
		for _, p := range getList(s, "spec", "ports") {
			target := get(p, "targetPort")
			if target == nil {
				target = get(p, "port")
			}
			cp, ok := d.containerPort(target)
			if !ok {
				bad.addf("Service %s: port %s targets %v, which is no port of container %s", name(s), getString(p, "name"), target, getString(d.container, "name"))
			}
			hasRPC = hasRPC || (ok && cp == rpc)
		}
		if !hasRPC {
			bad.addf("Service %s has no port to the native port %d (-addr)", name(s), rpc)
		}
		if name(s) != name(d.headless) && getString(s, "spec", "clusterIP") != "None" {
			clients++
		}
	}
	if clients == 0 {
		bad.addf("no client Service: want one with a cluster IP besides the headless one")
	}
	return bad
}

// rpcPort is the port of the container's -addr, 0 when it is not known.
func (d *deployment) rpcPort() int {
	p, _ := d.command(d.podName(0))
	if p == nil {
		return 0
	}
	_, port, err := net.SplitHostPort(p.flags["addr"].value)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n
}

func checkDisruptions(d *deployment, want shape) problems {
	var bad problems
	if len(d.pdbs) != 1 {
		bad.addf("want one PodDisruptionBudget, found %d", len(d.pdbs))
	}
	for _, pdb := range d.pdbs {
		if sel := getMap(pdb, "spec", "selector", "matchLabels"); !d.selects(sel) {
			bad.addf("PodDisruptionBudget %s: selector %v does not pick the pods (labels %v)", name(pdb), sel, d.labels)
		}
		m, _ := getNumber(pdb, "spec", "minAvailable")
		if int(m) != want.minAvailable || int(m) != want.replicas/2+1 {
			bad.addf("PodDisruptionBudget %s: minAvailable %v, want %d: a majority of %d replicas", name(pdb), get(pdb, "spec", "minAvailable"), want.replicas/2+1, want.replicas)
		}
	}
	terms := getList(d.pod, "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
	oneNode := false
	for _, t := range terms {
		sel := getMap(t, "labelSelector", "matchLabels")
		if !d.selects(sel) {
			bad.addf("StatefulSet %s: pod anti-affinity selector %v does not pick the pods (labels %v): it keeps them apart from nothing", d.stsName(), sel, d.labels)
		}
		oneNode = oneNode || getString(t, "topologyKey") == "kubernetes.io/hostname"
	}
	if !oneNode {
		bad.addf("StatefulSet %s: want a required pod anti-affinity on kubernetes.io/hostname: one node must never hold two of the voters", d.stsName())
	}
	for _, c := range getList(d.pod, "topologySpreadConstraints") {
		if sel := getMap(c, "labelSelector", "matchLabels"); !d.selects(sel) {
			bad.addf("StatefulSet %s: topology spread selector %v does not pick the pods (labels %v)", d.stsName(), sel, d.labels)
		}
	}
	return bad
}

func checkSecurity(d *deployment, img image) problems {
	var bad problems
	c := getString(d.container, "name")
	// A container's setting wins over the pod's.
	setting := func(k string) any {
		if v := get(d.container, "securityContext", k); v != nil {
			return v
		}
		return get(d.pod, "securityContext", k)
	}
	if setting("runAsNonRoot") != true {
		bad.addf("container %s: runAsNonRoot must be true", c)
	}
	if uid, _ := setting("runAsUser").(float64); uid == 0 || int(uid) != img.uid {
		bad.addf("container %s: runAsUser %v, want the image's non-root USER %d", c, setting("runAsUser"), img.uid)
	}
	if get(d.container, "securityContext", "readOnlyRootFilesystem") != true {
		bad.addf("container %s: readOnlyRootFilesystem must be true", c)
	}
	if get(d.container, "securityContext", "allowPrivilegeEscalation") != false {
		bad.addf("container %s: allowPrivilegeEscalation must be false", c)
	}
	for _, r := range []string{"requests/cpu", "requests/memory", "limits/memory"} {
		k, v, _ := strings.Cut(r, "/")
		if get(d.container, "resources", k, v) == nil {
			bad.addf("container %s: resources.%s.%s is not set", c, k, v)
		}
	}
	for _, p := range getList(d.container, "ports") {
		n, _ := getNumber(p, "containerPort")
		if !slices.Contains(img.exposed, int(n)) {
			bad.addf("container %s: port %s (%v) is not EXPOSEd by the Dockerfile (%v)", c, getString(p, "name"), n, img.exposed)
		}
	}
	return bad
}

func checkVolumes(d *deployment) problems {
	var bad problems
	mounted := map[string]bool{}
	for _, m := range getList(d.container, "volumeMounts") {
		n := getString(m, "name")
		mounted[n] = true
		if d.volume(n) == nil {
			bad.addf("container %s: volumeMount %s names no volume and no volumeClaimTemplate", getString(d.container, "name"), n)
		}
	}
	for _, v := range getList(d.pod, "volumes") {
		if n := getString(v, "name"); !mounted[n] {
			bad.addf("StatefulSet %s: volume %s is mounted nowhere", d.stsName(), n)
		}
		if cm := getString(v, "configMap", "name"); cm != "" && d.configMaps[cm] == nil {
			bad.addf("StatefulSet %s: volume %s names ConfigMap %s, which the kustomization does not make", d.stsName(), getString(v, "name"), cm)
		}
	}
	for _, c := range getList(d.sts, "spec", "volumeClaimTemplates") {
		n := getString(c, "metadata", "name")
		if !mounted[n] {
			bad.addf("StatefulSet %s: volumeClaimTemplate %s is mounted nowhere", d.stsName(), n)
		}
		if get(c, "spec", "resources", "requests", "storage") == nil {
			bad.addf("StatefulSet %s: volumeClaimTemplate %s requests no storage", d.stsName(), n)
		}
	}
	return bad
}

// hostPort splits a flag's host:port value; a problem when it is not one.
func hostPort(bad *problems, p *podCommand, flag string) (string, int) {
	v := p.flags[flag]
	host, port, err := net.SplitHostPort(v.value)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		bad.addf("pod %s: -%s=%q (%s) is not host:port", p.pod, flag, v.value, v.from)
	}
	return host, n
}

// checkPod applies the rules on the command line of a pod.
func checkPod(d *deployment, p *podCommand, want shape, h helpFlags, img image) problems {
	var bad problems
	c := getString(d.container, "name")
	if id := p.flags["id"].value; id != p.pod {
		bad.addf("pod %s: -id=%q, want the pod's name", p.pod, id)
	}
	_, rpc := hostPort(&bad, p, "addr")
	_, httpPort := hostPort(&bad, p, "http-addr")
	for _, port := range []int{rpc, httpPort} {
		if _, ok := d.containerPort(float64(port)); !ok && port != 0 {
			bad.addf("pod %s: port %d (-addr or -http-addr) is not a port of container %s", p.pod, port, c)
		}
	}
	if adv := fmt.Sprintf("%s.%s:%d", p.pod, name(d.headless), rpc); p.flags["advertise"].value != adv {
		bad.addf("pod %s: -advertise=%q, want %q: the pod's DNS name under the headless Service, and its -addr port", p.pod, p.flags["advertise"].value, adv)
	}
	if env := p.env["DISCOVERD"]; env != "" {
		if host, port, err := net.SplitHostPort(env); err != nil || port != strconv.Itoa(rpc) || !net.ParseIP(host).IsLoopback() {
			bad.addf("container %s: env DISCOVERD=%q, want 127.0.0.1:%d: the client commands run in the pod talk to its own node", c, env, rpc)
		}
	}

	tls := p.flags["tls-ca"].value != "" && p.flags["tls-cert"].value != "" && p.flags["tls-key"].value != ""
	if !tls || p.flags["insecure"].value == "true" {
		bad.addf("pod %s: TLS is off (give -tls-ca, -tls-cert and -tls-key, and no -insecure): anyone who reaches a pod could take the cluster over", p.pod)
	}
	scheme := "HTTP"
	if tls {
		scheme = "HTTPS" // -http-addr serves HTTPS with the node's certificate
	}
	for _, probe := range []struct {
		field, path string
		required    bool
	}{{"readinessProbe", "/health/ready", true}, {"livenessProbe", "/health/live", true}, {"startupProbe", "/health/live", false}} {
		pr := getMap(d.container, probe.field)
		if pr == nil {
			if probe.required {
				bad.addf("container %s has no %s", c, probe.field)
			}
			continue
		}
		if got := getString(pr, "httpGet", "path"); got != probe.path {
			bad.addf("container %s: %s path %q, want %s", c, probe.field, got, probe.path)
		}
		if port, ok := d.containerPort(get(pr, "httpGet", "port")); !ok || port != httpPort {
			bad.addf("container %s: %s port %v, want the -http-addr port %d", c, probe.field, get(pr, "httpGet", "port"), httpPort)
		}
		if got := getString(pr, "httpGet", "scheme"); got != scheme && !(got == "" && scheme == "HTTP") {
			bad.addf("container %s: %s scheme %q, want %s (TLS is %v)", c, probe.field, got, scheme, tls)
		}
	}

	for _, f := range []string{"tls-ca", "tls-cert", "tls-key"} {
		v := p.flags[f]
		mount, vol, _ := d.mountOf(v.value)
		if tls && (mount == nil || getString(vol, "secret", "secretName") == "" || get(mount, "readOnly") != true) {
			bad.addf("pod %s: -%s=%s is not in a Secret volume mounted read-only", p.pod, f, v.value)
		}
		if mode, ok := getNumber(vol, "secret", "defaultMode"); tls && mount != nil && (!ok || int(mode)&0o040 == 0 || int(mode)&0o007 != 0 || get(d.pod, "securityContext", "fsGroup") == nil) {
			bad.addf("volume %s: want defaultMode 0440 and the pod's fsGroup: the files belong to root, and user %d reads them through its group (no one else may)", getString(vol, "name"), img.uid)
		}
	}
	dataDir := p.flags["data-dir"].value
	if mount, vol, rel := d.mountOf(dataDir); mount == nil || get(vol, "spec") == nil || get(mount, "readOnly") == true || rel == "" {
		bad.addf("pod %s: -data-dir=%q must be below the mount of a volumeClaimTemplate (the pod's own volume), writable", p.pod, dataDir)
	}

	shutdown, err := time.ParseDuration(h.value(p, "shutdown-timeout"))
	grace, ok := getNumber(d.pod, "terminationGracePeriodSeconds")
	if !ok {
		grace = 30 // Kubernetes' default
	}
	if err == nil && time.Duration(grace)*time.Second < shutdown+h.stopGrace {
		bad.addf("StatefulSet %s: terminationGracePeriodSeconds %v is shorter than -shutdown-timeout %v plus the %v Raft gets after it: the kubelet would SIGKILL a node still stopping",
			d.stsName(), grace, shutdown, h.stopGrace)
	}
	if leave := p.flags["leave-on-stop"].value == "true"; leave != want.leaveOnStop {
		bad.addf("pod %s: -leave-on-stop is %v, want %v: only pods about to be scaled away leave; a rolling restart with it would shrink the cluster", p.pod, leave, want.leaveOnStop)
	}
	bad = append(bad, checkMembers(d, p, want, rpc)...)
	return bad
}

// checkMembers checks -peers and -join: the initial voters are pods
// 0 .. want.peers-1 by their stable DNS names; every other pod joins
// through them.
func checkMembers(d *deployment, p *podCommand, want shape, rpc int) problems {
	var bad problems
	peerAddr := map[string]string{}
	for _, e := range strings.Split(p.flags["peers"].value, ",") {
		id, addr, _ := strings.Cut(e, "=")
		peerAddr[id] = addr
	}
	if len(peerAddr) != want.peers || want.peers > want.replicas {
		bad.addf("-peers=%q: want pods 0 to %d of %d", p.flags["peers"].value, want.peers-1, want.replicas)
	}
	var members []string
	for j := range want.peers {
		pod := d.podName(j)
		w := fmt.Sprintf("%s.%s:%d", pod, name(d.headless), rpc)
		members = append(members, w)
		if peerAddr[pod] != w {
			bad.addf("-peers: %s=%q, want %s=%s (the pod's -advertise)", pod, peerAddr[pod], pod, w)
		}
	}
	join := p.flags["join"].value
	if _, voter := peerAddr[p.pod]; !voter && join == "" {
		bad.addf("pod %s is not in -peers and has no -join: it could not become a member", p.pod)
	}
	if join != "" {
		for _, a := range strings.Split(join, ",") {
			if !slices.Contains(members, a) {
				bad.addf("-join lists %q, not one of the initial voters %v", a, members)
			}
		}
	}
	return bad
}

// flagProblems says which flags of the pods' command lines `discoverd
// server` does not have, and which values their flags refuse.
func flagProblems(cmds []*podCommand, h helpFlags) problems {
	var bad problems
	for _, p := range cmds {
		names := make([]string, 0, len(p.flags))
		for n := range p.flags {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			v := p.flags[n]
			f, ok := h.flags[n]
			if !ok {
				bad.addf("-%s (%s) is not a flag of `discoverd server` (see `discoverd server -h`)", n, v.from)
				continue
			}
			if msg := f.check(v.value); msg != "" {
				bad.addf("-%s (%s): %s", n, v.from, msg)
			}
		}
	}
	return dedupe(bad)
}
