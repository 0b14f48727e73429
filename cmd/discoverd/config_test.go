package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serverFlagsFrom parses args as `discoverd server` does, config file included.
func serverFlagsFrom(t *testing.T, args ...string) (*serverFlags, error) {
	t.Helper()
	var f serverFlags
	fs := newFlagSet("server", "", io.Discard)
	f.register(fs, true)
	config := fs.String("config", "", "")
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if *config != "" {
		if err := applyConfigFile(fs, *config); err != nil {
			return nil, err
		}
	}
	return &f, nil
}

func TestConfig_YAMLAndJSONSetFlagsAndTheCommandLineWins(t *testing.T) {
	yamlFile := writeConfig(t, "n1.yaml", `
id: n1
addr: 127.0.0.1:7001
data-dir: /var/lib/discoverd
peers:
  n1: 127.0.0.1:7001
  n2: 127.0.0.2:7001
raft-heartbeat-timeout: 750ms
snapshot-threshold: 4096
storm-threshold: 40%
`)
	jsonFile := writeConfig(t, "n1.json", `{"id": "n1", "addr": "127.0.0.1:7001", "data-dir": "/var/lib/discoverd",
		"peers": ["n1=127.0.0.1:7001", "n2=127.0.0.2:7001"], "raft-heartbeat-timeout": "750ms", "snapshot-threshold": 4096,
		"storm-threshold": "40%"}`)
	for _, path := range []string{yamlFile, jsonFile} {
		f, err := serverFlagsFrom(t, "-config", path, "-snapshot-threshold", "100")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if f.id != "n1" || f.addr != "127.0.0.1:7001" || f.dataDir != "/var/lib/discoverd" ||
			f.peers != "n1=127.0.0.1:7001,n2=127.0.0.2:7001" || f.heartbeat != 750*time.Millisecond {
			t.Errorf("%s: flags %+v", path, f)
		}
		if f.snapThreshold != 100 {
			t.Errorf("%s: -snapshot-threshold %d, want the command line's 100", path, f.snapThreshold)
		}
	}
}

func TestConfig_BadFilesAreUsageErrorsNamingTheKey(t *testing.T) {
	for name, c := range map[string]struct{ body, want string }{
		"unknown key":      {"id: n1\nhartbeat: 1s\n", `unknown key "hartbeat"`},
		"config in config": {"config: other.yaml\n", `unknown key "config"`},
		"bad value":        {"raft-heartbeat-timeout: soon\n", `key "raft-heartbeat-timeout": invalid value "soon"`},
		"not a map":        {"- id\n- n1\n", "want a map of flag names to values"},
		"not YAML":         {"id: [n1\n", "not YAML or JSON"},
		"null value":       {"id:\n", `key "id": no value`},
		"nested map value": {"peers:\n  n1: {addr: x}\n", `key "peers": map value of "n1"`},
		"comma in a list":  {"peers: [\"n1=a:1,n2=b:1\"]\n", "holds a comma"},
	} {
		_, err := serverFlagsFrom(t, "-config", writeConfig(t, "c.yaml", c.body))
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a usage error saying %q", name, err, c.want)
		}
	}
	if _, err := serverFlagsFrom(t, "-config", filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// The README's example config file is one the server takes.
func TestConfig_READMEExampleIsValid(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const start = "```yaml\n# /etc/discoverd/n1.yaml"
	i := strings.Index(string(readme), start)
	if i < 0 {
		t.Fatal("README.md has no example config file")
	}
	body := string(readme[i+len("```yaml\n"):])
	body = body[:strings.Index(body, "```")]
	f, err := serverFlagsFrom(t, "-config", writeConfig(t, "n1.yaml", body))
	if err != nil {
		t.Fatalf("the README's example config: %v", err)
	}
	if f.id != "n1" || f.peers != "n1=10.0.0.1:1111,n2=10.0.0.2:1111,n3=10.0.0.3:1111" || f.heartbeat != time.Second {
		t.Fatalf("the README's example config gave %+v", f)
	}
}
