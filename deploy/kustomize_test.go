package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// The part of kustomize this test needs, done by hand so that the test
// needs no kustomize binary: a kustomization's resources (files of YAML
// documents, or other kustomizations), its configMapGenerator (files
// only), replicas, and patches in JSON 6902 form (a list of operations)
// with a target of a kind and a name. Any other field is an error naming
// it: the test must not pass over what it does not apply.
//
// One difference from kustomize on purpose: a generated ConfigMap keeps its
// name, without kustomize's hash of the content. kustomize renames the
// references to it in the same build, so that a reference resolves here
// exactly when it resolves there.

// object is one Kubernetes object as sigs.k8s.io/yaml decodes it.
type object = map[string]any

// kustomization is the part of kustomization.yaml this test applies.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	Replicas []struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	} `json:"replicas"`
	Patches []struct {
		Path   string `json:"path"`
		Patch  string `json:"patch"`
		Target struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"target"`
	} `json:"patches"`
}

// kustomizationFields are the fields of a kustomization.yaml render applies
// (apiVersion and kind are checked).
var kustomizationFields = []string{"apiVersion", "kind", "resources", "configMapGenerator", "replicas", "patches"}

// render returns the objects the kustomization in dir makes.
func render(dir string) ([]object, error) {
	path := filepath.Join(dir, "kustomization.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var fields map[string]any
	if err := yaml.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	for f := range fields {
		if !slices.Contains(kustomizationFields, f) {
			return nil, fmt.Errorf("%s: field %q is not one this test applies (%s): teach kustomize_test.go or leave it out",
				path, f, strings.Join(kustomizationFields, ", "))
		}
	}
	if fields["kind"] != "Kustomization" {
		return nil, fmt.Errorf("%s: kind %v, want Kustomization", path, fields["kind"])
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	var objs []object
	for _, r := range k.Resources {
		rp := filepath.Join(dir, r)
		fi, err := os.Stat(rp)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %v", path, r, err)
		}
		var got []object
		if fi.IsDir() {
			got, err = render(rp)
		} else {
			got, err = readObjects(rp)
		}
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	for _, g := range k.ConfigMapGenerator {
		cm := object{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": g.Name}}
		data := map[string]any{}
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = filepath.Base(f), f
			}
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				return nil, fmt.Errorf("%s: configMapGenerator %s: %v", path, g.Name, err)
			}
			data[key] = string(b)
		}
		cm["data"] = data
		objs = append(objs, cm)
	}
	for _, r := range k.Replicas {
		found := false
		for _, o := range objs {
			if name(o) == r.Name && slices.Contains([]string{"StatefulSet", "Deployment", "ReplicaSet"}, kind(o)) {
				spec, _ := o["spec"].(map[string]any)
				if spec == nil {
					return nil, fmt.Errorf("%s: replicas: %s %s has no spec", path, kind(o), r.Name)
				}
				spec["replicas"] = float64(r.Count)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: replicas: no workload named %s", path, r.Name)
		}
	}
	for i, p := range k.Patches {
		text := p.Patch
		if p.Path != "" {
			b, err := os.ReadFile(filepath.Join(dir, p.Path))
			if err != nil {
				return nil, fmt.Errorf("%s: patch %d: %v", path, i, err)
			}
			text = string(b)
		}
		if p.Target.Kind == "" || p.Target.Name == "" {
			return nil, fmt.Errorf("%s: patch %d: give its target a kind and a name", path, i)
		}
		var ops []jsonPatchOp
		if err := yaml.UnmarshalStrict([]byte(text), &ops); err != nil {
			return nil, fmt.Errorf("%s: patch %d: want a JSON 6902 patch, a list of operations (a strategic merge patch is not applied by this test): %v", path, i, err)
		}
		n := 0
		for _, o := range objs {
			if kind(o) != p.Target.Kind || name(o) != p.Target.Name {
				continue
			}
			for _, op := range ops {
				if err := op.apply(o); err != nil {
					return nil, fmt.Errorf("%s: patch %d on %s %s: %v", path, i, p.Target.Kind, p.Target.Name, err)
				}
			}
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: patch %d: no %s named %s", path, i, p.Target.Kind, p.Target.Name)
		}
	}
	return objs, nil
}

// readObjects reads a file of YAML documents separated by "---" lines.
func readObjects(path string) ([]object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []object
	for i, doc := range splitDocuments(data) {
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return nil, fmt.Errorf("%s: document %d: %v", path, i+1, err)
		}
		if o == nil {
			continue // only comments
		}
		if kind(o) == "" || name(o) == "" {
			return nil, fmt.Errorf("%s: document %d has no kind or no metadata.name", path, i+1)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if bytes.Equal(bytes.TrimRight(line, " \r\n"), []byte("---")) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}

// jsonPatchOp is one operation of a JSON 6902 patch: add, replace or remove.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func (op jsonPatchOp) apply(doc object) error {
	if !strings.HasPrefix(op.Path, "/") {
		return fmt.Errorf("path %q: want a JSON pointer (/a/b/0)", op.Path)
	}
	keys := strings.Split(op.Path[1:], "/")
	for i, k := range keys {
		keys[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(k)
	}
	parentPath, last := keys[:len(keys)-1], keys[len(keys)-1]
	var parent any = doc
	// set replaces the parent's value where the parent itself sits (a list
	// that grows or shrinks is a new slice).
	set := func(any) {}
	for _, k := range parentPath {
		switch p := parent.(type) {
		case map[string]any:
			v, ok := p[k]
			if !ok {
				return fmt.Errorf("path %s: no %q", op.Path, k)
			}
			set = func(nv any) { p[k] = nv }
			parent = v
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(p) {
				return fmt.Errorf("path %s: no element %q", op.Path, k)
			}
			set = func(nv any) { p[i] = nv }
			parent = p[i]
		default:
			return fmt.Errorf("path %s: %q is inside a scalar", op.Path, k)
		}
	}
	switch p := parent.(type) {
	case map[string]any:
		_, exists := p[last]
		switch {
		case op.Op == "add":
			p[last] = op.Value
		case op.Op == "replace" && exists:
			p[last] = op.Value
		case op.Op == "remove" && exists:
			delete(p, last)
		case op.Op == "replace" || op.Op == "remove":
			return fmt.Errorf("%s %s: nothing there", op.Op, op.Path)
		default:
			return fmt.Errorf("op %q: this test applies add, replace and remove", op.Op)
		}
	case []any:
		i, err := strconv.Atoi(last)
		if last == "-" && op.Op == "add" {
			i, err = len(p), nil
		}
		if err != nil || i < 0 || i > len(p) || (i == len(p) && op.Op != "add") {
			return fmt.Errorf("%s %s: no element %q", op.Op, op.Path, last)
		}
		switch op.Op {
		case "add":
			set(slices.Insert(slices.Clone(p), i, op.Value))
		case "replace":
			p[i] = op.Value
		case "remove":
			set(slices.Delete(slices.Clone(p), i, i+1))
		default:
			return fmt.Errorf("op %q: this test applies add, replace and remove", op.Op)
		}
	default:
		return fmt.Errorf("path %s: the parent is a scalar", op.Path)
	}
	return nil
}

// Accessors of decoded YAML: nil, "" or false where the path is missing.

func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func getMap(v any, path ...string) map[string]any {
	m, _ := get(v, path...).(map[string]any)
	return m
}

func getList(v any, path ...string) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func getString(v any, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

// getNumber is a number at path; ok is false when there is none.
func getNumber(v any, path ...string) (n float64, ok bool) {
	n, ok = get(v, path...).(float64)
	return n, ok
}

func getBool(v any, path ...string) bool {
	b, _ := get(v, path...).(bool)
	return b
}

func kind(o object) string { return getString(o, "kind") }
func name(o object) string { return getString(o, "metadata", "name") }
