// Package deploy_test checks the deployment files of deploy/ against each
// other and against the binary: the Kubernetes manifests of
// deploy/kubernetes (rendered as kustomize would: kustomize_test.go), the
// repository's Dockerfile and .dockerignore (dockerfile_test.go), the flags
// of `discoverd server -h` (flags_test.go), and the TLS Secret
// make-tls-secret.sh makes. manifests_test.go holds the rules; each rule has
// a broken variant that must trip it (broken_test.go). pods_test.go runs the
// pods' own command lines as real processes.
package deploy_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/discoverd/discoverd/test/prockit"
)

func TestMain(m *testing.M) { os.Exit(prockit.RunTests(m)) }

// repoPath is a path inside the repository, from its root.
func repoPath(t testing.TB, rel ...string) string {
	t.Helper()
	root, err := prockit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root}, rel...)...)
}

// discoverdBin is the discoverd binary, built once per test process.
func discoverdBin(t testing.TB) string {
	t.Helper()
	bin, err := prockit.Build()
	if err != nil {
		t.Fatalf("build discoverd: %v", err)
	}
	return bin
}
