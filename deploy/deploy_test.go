package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// kustomizations are the kustomizations of deploy/kubernetes, with what
// each is meant to make.
var kustomizations = map[string]shape{
	"base":                  {replicas: 3, minAvailable: 2, peers: 3},
	"overlays/five":         {replicas: 5, minAvailable: 3, peers: 3},
	"overlays/five-leaving": {replicas: 5, minAvailable: 3, peers: 3, partition: 3, leaveOnStop: true},
}

// kubeDir is deploy/kubernetes, or a kustomization in it.
func kubeDir(t testing.TB, rel ...string) string {
	return repoPath(t, append([]string{"deploy", "kubernetes"}, rel...)...)
}

// renderOK renders a kustomization of deploy/kubernetes, or fails the test.
func renderOK(t testing.TB, dir string) []object {
	t.Helper()
	objs, err := render(dir)
	if err != nil {
		t.Fatalf("render %s: %v", dir, err)
	}
	return objs
}

// dockerImage is what the repository's Dockerfile says about its image;
// the test fails if the Dockerfile breaks a rule.
func dockerImage(t testing.TB) image {
	t.Helper()
	img, bad := checkDockerfile(readFile(t, repoPath(t, "Dockerfile")), readFile(t, repoPath(t, "go.mod")))
	for _, b := range bad {
		t.Error(b)
	}
	if len(bad) > 0 {
		t.FailNow()
	}
	return img
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKubernetes_ManifestsAgree: in every kustomization, the StatefulSet,
// its Services, PodDisruptionBudget, ConfigMap and volumes agree with each
// other, with the config file and with the Dockerfile's image: ports, probe
// paths, labels and selectors, -peers/-join DNS names for the replica count,
// mounts, TLS, the grace period, the security context.
func TestKubernetes_ManifestsAgree(t *testing.T) {
	h := discoverdServerFlags(t)
	img := dockerImage(t)
	for dir, want := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			for _, b := range checkDeployment(renderOK(t, kubeDir(t, dir)), want, h, img) {
				t.Error(b)
			}
		})
	}
}

// TestKubernetes_FlagsAreDiscoverdServerFlags: every flag the pods' command
// lines set, in the args or the config file, is a flag of `discoverd
// server -h` of this tree, with a value of its type.
func TestKubernetes_FlagsAreDiscoverdServerFlags(t *testing.T) {
	h := discoverdServerFlags(t)
	for dir, want := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			for _, b := range flagProblems(podCommands(t, renderOK(t, kubeDir(t, dir)), want.replicas), h) {
				t.Error(b)
			}
		})
	}
}

// podCommands is the command line of every pod, or fails the test.
func podCommands(t testing.TB, objs []object, replicas int) []*podCommand {
	t.Helper()
	d, bad := sortOut(objs)
	if d == nil {
		t.Fatal(bad)
	}
	var cmds []*podCommand
	for i := range replicas {
		p, bad := d.command(d.podName(i))
		if p == nil || len(bad) > 0 {
			t.Fatalf("pod %s: %v", d.podName(i), bad)
		}
		cmds = append(cmds, p)
	}
	return cmds
}

// TestKubernetes_EveryKustomizationIsChecked: no kustomization under
// deploy/kubernetes escapes the tests above.
func TestKubernetes_EveryKustomizationIsChecked(t *testing.T) {
	root := kubeDir(t)
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.Name() != "kustomization.yaml" {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		if _, ok := kustomizations[filepath.ToSlash(rel)]; !ok {
			t.Errorf("%s is not in deploy_test.go's kustomizations: add it with what it should make", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKubernetes_FiveLeavingChangesOnlyPodsThreeAndFour: overlays/five-leaving
// is overlays/five with a partition of 3 and -leave-on-stop, nothing else:
// anything more would restart pods 0-2 when the base is applied again.
func TestKubernetes_FiveLeavingChangesOnlyPodsThreeAndFour(t *testing.T) {
	five := renderOK(t, kubeDir(t, "overlays/five"))
	leaving := renderOK(t, kubeDir(t, "overlays/five-leaving"))
	for _, o := range leaving {
		if kind(o) != "StatefulSet" {
			continue
		}
		delete(getMap(o, "spec", "updateStrategy"), "rollingUpdate")
		c := getList(o, "spec", "template", "spec", "containers")[0].(map[string]any)
		args := getList(c, "args")
		c["args"] = slices.DeleteFunc(slices.Clone(args), func(a any) bool { return a == "-leave-on-stop" })
	}
	if !reflect.DeepEqual(five, leaving) {
		a, _ := json.MarshalIndent(five, "", " ")
		b, _ := json.MarshalIndent(leaving, "", " ")
		t.Fatalf("overlays/five-leaving differs from overlays/five by more than the partition and -leave-on-stop:\n%s", firstDifference(string(a), string(b)))
	}
}

// firstDifference shows where two texts part, with a few lines around.
func firstDifference(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) && i < len(lb); i++ {
		if la[i] != lb[i] {
			lo := max(0, i-3)
			return "five:    " + strings.Join(la[lo:min(len(la), i+3)], "\n         ") +
				"\nleaving: " + strings.Join(lb[lo:min(len(lb), i+3)], "\n         ")
		}
	}
	return "one is longer"
}

// TestDockerfile_StaticNonRootImage: the Dockerfile builds a static binary
// (cgo off) with go.mod's Go, and its final stage is distroless/static or
// scratch, a numeric non-root USER, the binary as the ENTRYPOINT, and the
// pods' ports EXPOSEd (TestKubernetes_ManifestsAgree checks the ports and
// user against the pods); .dockerignore leaves out .git and pki/, and
// nothing the build reads.
func TestDockerfile_StaticNonRootImage(t *testing.T) {
	img := dockerImage(t)
	if len(img.exposed) == 0 {
		t.Errorf("Dockerfile EXPOSEs no port")
	}
	root := repoPath(t)
	files, err := buildFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("go list found %d files that build discoverd: %v", len(files), files)
	}
	ignore := readFile(t, repoPath(t, ".dockerignore"))
	// The repository's history, and the CA key make-tls-secret.sh writes
	// to pki/ when run from the root, stay out of the build context.
	secrets := []string{".git/HEAD", "pki/ca-key.pem"}
	left, err := ignoredFiles(ignore, append(files, secrets...))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range secrets {
		if !slices.Contains(left, f) {
			t.Errorf(".dockerignore does not leave out %s", f)
		}
	}
	for _, f := range left {
		if !slices.Contains(secrets, f) {
			t.Errorf(".dockerignore leaves out %s, which `go build ./cmd/discoverd` reads", f)
		}
	}
}

// TestKubernetes_READMECommandsNameWhatExists: the paths the step-by-step
// README gives exist, and the volumes it deletes after scaling back are
// those of the pods that left (<claim>-<StatefulSet>-<ordinal>).
func TestKubernetes_READMECommandsNameWhatExists(t *testing.T) {
	readme := readFile(t, kubeDir(t, "README.md"))
	paths := regexp.MustCompile(`deploy/kubernetes/[\w./-]*[\w/]`).FindAllString(readme, -1)
	if len(paths) < 5 {
		t.Fatalf("the README names %d paths of deploy/kubernetes: %q", len(paths), paths)
	}
	for _, p := range paths {
		if _, err := os.Stat(repoPath(t, filepath.FromSlash(p))); err != nil {
			t.Errorf("the README names %s: %v", p, err)
		}
	}
	d, bad := sortOut(renderOK(t, kubeDir(t, "overlays/five")))
	if d == nil {
		t.Fatal(bad)
	}
	claim := getString(getList(d.sts, "spec", "volumeClaimTemplates")[0], "metadata", "name")
	var pvcs []string
	for i := kustomizations["base"].replicas; i < kustomizations["overlays/five"].replicas; i++ {
		pvcs = append(pvcs, fmt.Sprintf("%s-%s", claim, d.podName(i)))
	}
	if want := "delete pvc " + strings.Join(pvcs, " "); !strings.Contains(readme, want) {
		t.Errorf("the README does not say %q", want)
	}
}
