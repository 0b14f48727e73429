package test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The layout check: README.md's Layout section draws the stack of Go
// packages, one row per line, top to bottom, in the first code block after
// its heading. A package imports only packages of lower rows; a row written
// as a subtree ("test/...") is a group whose packages may also import each
// other. Every package must have a row, and every row entry must name a
// package, so the drawing cannot drift from the tree.

// stackRow is one line of the drawing.
type stackRow []string

// readStack returns the rows of README.md's Layout drawing, top first.
func readStack(readme []byte) ([]stackRow, error) {
	sc := bufio.NewScanner(bytes.NewReader(readme))
	state := 0 // 0: before the heading, 1: before the block, 2: in it
	var rows []stackRow
	for sc.Scan() {
		line := sc.Text()
		switch {
		case state == 0 && line == "## Layout":
			state = 1
		case state == 1 && strings.HasPrefix(line, "## "):
			return nil, fmt.Errorf("the Layout section of README.md has no code block")
		case state == 1 && strings.HasPrefix(line, "```"):
			state = 2
		case state == 2 && strings.HasPrefix(line, "```"):
			return rows, nil
		case state == 2 && strings.TrimSpace(line) != "":
			rows = append(rows, strings.Fields(line))
		}
	}
	return nil, fmt.Errorf("README.md has no complete code block under a \"## Layout\" heading")
}

// matches reports whether a row entry names pkg (both relative to the
// module root).
func matches(entry, pkg string) bool {
	if tree, ok := strings.CutSuffix(entry, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return pkg == entry
}

// checkStack returns every way imports (package → the module packages it
// imports, paths relative to the module root) break the drawing.
func checkStack(rows []stackRow, imports map[string][]string) []string {
	var bad []string
	rowOf := map[string]int{} // package → its row, 0 = top
	entryOf := map[string]string{}
	used := map[string]bool{}
	pkgs := make([]string, 0, len(imports))
	for p := range imports {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	for _, p := range pkgs {
		for i, row := range rows {
			for _, e := range row {
				if !matches(e, p) {
					continue
				}
				if prev, ok := entryOf[p]; ok {
					bad = append(bad, fmt.Sprintf("%s is drawn twice, as %s and as %s", p, prev, e))
					continue
				}
				rowOf[p], entryOf[p], used[e] = i, e, true
			}
		}
		if _, ok := rowOf[p]; !ok {
			bad = append(bad, fmt.Sprintf("package %s has no row in README.md's Layout drawing: add it to the row whose packages it may import from below", p))
		}
	}
	for _, row := range rows {
		for _, e := range row {
			if !used[e] {
				bad = append(bad, fmt.Sprintf("README.md's Layout drawing names %s, which is no package of the module", e))
			}
		}
	}
	for _, p := range pkgs {
		pr, ok := rowOf[p]
		if !ok {
			continue
		}
		for _, imp := range imports[p] {
			ir, ok := rowOf[imp]
			switch {
			case !ok:
			case ir > pr:
			case ir == pr && entryOf[p] == entryOf[imp] && strings.HasSuffix(entryOf[p], "/..."):
				// one subtree: its packages may use each other
			case ir == pr:
				bad = append(bad, fmt.Sprintf("%s imports %s of its own row (%s)", p, imp, strings.Join(rows[pr], " ")))
			default:
				bad = append(bad, fmt.Sprintf("%s imports %s, which sits above it (row %d over row %d)", p, imp, ir+1, pr+1))
			}
		}
	}
	return bad
}

// moduleImports lists every package of the module and the module packages it
// imports (tests aside), under the default build tags and under every tag
// the module's files use, so that tagged files are checked too.
func moduleImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	run := func(args ...string) string {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return string(out)
	}
	module := strings.TrimSpace(run("list", "-m"))
	imports := map[string][]string{}
	for _, tags := range []string{"", "faultroot,faultbugs,faultclock"} {
		out := run("list", "-tags", tags, "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			rel := func(p string) (string, bool) {
				if p == module {
					return ".", true
				}
				return strings.CutPrefix(p, module+"/")
			}
			pkg, ok := rel(f[0])
			if !ok {
				continue
			}
			list := imports[pkg]
			for _, imp := range f[1:] {
				if r, ok := rel(imp); ok && !slices.Contains(list, r) {
					list = append(list, r)
				}
			}
			imports[pkg] = list
		}
	}
	return imports
}

// TestLayout_ImportsPointDownTheStack: every package of the module has its
// row in README.md's Layout drawing, and imports only packages drawn below it.
func TestLayout_ImportsPointDownTheStack(t *testing.T) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := readStack(readme)
	if err != nil {
		t.Fatal(err)
	}
	imports := moduleImports(t, root)
	if len(imports) < 20 {
		t.Fatalf("go list found only %d packages: %v", len(imports), imports)
	}
	for _, b := range checkStack(rows, imports) {
		t.Error(b)
	}
}

// TestLayout_CheckCatchesWhatBreaksTheDrawing: the check itself, on a drawn
// stack and import graphs that break it in each way it knows.
func TestLayout_CheckCatchesWhatBreaksTheDrawing(t *testing.T) {
	readme := []byte("# x\n\n## Layout\n\ntext\n\n```\ntest/...\nserver\nraftnode  ttl\nfsm\n```\n\n## Other\n")
	rows, err := readStack(readme)
	if err != nil {
		t.Fatal(err)
	}
	if want := []stackRow{{"test/..."}, {"server"}, {"raftnode", "ttl"}, {"fsm"}}; !slices.EqualFunc(rows, want, slices.Equal) {
		t.Fatalf("rows %q, want %q", rows, want)
	}
	good := map[string][]string{
		"test/fault": {"test/fault/check", "server"}, "test/fault/check": nil,
		"server": {"raftnode", "ttl", "fsm"}, "raftnode": nil, "ttl": {"fsm"}, "fsm": nil,
	}
	if bad := checkStack(rows, good); len(bad) != 0 {
		t.Fatalf("a graph that keeps to the drawing: %q", bad)
	}
	for _, tc := range []struct {
		name  string
		edit  func(m map[string][]string)
		wants string
	}{
		{"upward import", func(m map[string][]string) { m["fsm"] = []string{"raftnode"} }, "fsm imports raftnode, which sits above it"},
		{"import within a row", func(m map[string][]string) { m["ttl"] = []string{"raftnode"} }, "ttl imports raftnode of its own row"},
		{"a product package importing test/", func(m map[string][]string) { m["server"] = []string{"test/fault"} }, "server imports test/fault, which sits above it"},
		{"a package without a row", func(m map[string][]string) { m["rpc"] = nil }, "package rpc has no row"},
		{"a row naming no package", func(m map[string][]string) { delete(m, "ttl") }, "names ttl, which is no package"},
	} {
		m := map[string][]string{}
		for k, v := range good {
			m[k] = slices.Clone(v)
		}
		tc.edit(m)
		bad := checkStack(rows, m)
		if len(bad) != 1 || !strings.Contains(bad[0], tc.wants) {
			t.Errorf("%s: %q, want one complaint containing %q", tc.name, bad, tc.wants)
		}
	}
	if _, err := readStack([]byte("## Layout\n\nno drawing\n\n## Next\n")); err == nil {
		t.Error("a Layout section without a code block was accepted")
	}
}
