package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var builds struct {
	mu   sync.Mutex
	bins map[string]string
}

// Build compiles cmd/discoverd with the faultclock tag (plus extra tags, e.g.
// "faultbugs") into dir, once per tag set per process, and returns the path.
func Build(dir string, extraTags ...string) (string, error) {
	tags := append([]string{"faultclock"}, extraTags...)
	key := strings.Join(tags, ",")
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if b, ok := builds.bins[key]; ok {
		return b, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "discoverd-"+strings.ReplaceAll(key, ",", "-"))
	cmd := exec.Command("go", "build", "-tags", key, "-o", bin, "./cmd/discoverd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -tags %s ./cmd/discoverd: %v\n%s", key, err, out)
	}
	if builds.bins == nil {
		builds.bins = map[string]string{}
	}
	builds.bins[key] = bin
	return bin, nil
}

// ModuleRoot walks up from the working directory to discoverd's go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/discoverd/discoverd\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/discoverd/discoverd above the working directory")
		}
		dir = parent
	}
}
