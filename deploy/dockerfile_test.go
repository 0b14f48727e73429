package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// The Dockerfile's rules: a Go build stage of go.mod's Go with cgo off, and
// a final stage on distroless/static or scratch that holds only the static
// binary, runs it as a numeric non-root user and EXPOSEs the pods' ports.
// The Dockerfile is read as text: this machine has no docker to build it.

// dockerStage is one FROM and the instructions after it.
type dockerStage struct {
	from, as string
	instrs   []dockerInstr
}

type dockerInstr struct {
	cmd  string // upper case: RUN, ENV, COPY, ...
	args string
}

// parseDockerfile splits a Dockerfile into stages, joining continued lines
// and dropping comments.
func parseDockerfile(text string) ([]dockerStage, error) {
	var stages []dockerStage
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "#") || (t == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(t, `\`) {
			cur.WriteString(strings.TrimSuffix(t, `\`) + " ")
			continue
		}
		cur.WriteString(t)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	for _, l := range logical {
		cmd, args, _ := strings.Cut(l, " ")
		in := dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.as = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				continue // an ARG before the first FROM
			}
			return nil, fmt.Errorf("%s before the first FROM", in.cmd)
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return stages, nil
}

var (
	goImageRE = regexp.MustCompile(`^(?:docker\.io/)?(?:library/)?golang:(\d+)\.(\d+)(?:\.(\d+))?(?:-\S+)?$`)
	goLineRE  = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?\s*$`)
	cgoOffRE  = regexp.MustCompile(`(^|\s)CGO_ENABLED=0(\s|$)`)
	goBuildRE = regexp.MustCompile(`\bgo build\b.*\s-o\s+(\S+).*\s\./cmd/discoverd(\s|$)`)
)

// checkDockerfile applies the rules to a Dockerfile's text, given go.mod's,
// and returns what the pods depend on: the final stage's user, ports and
// entrypoint.
func checkDockerfile(text, goMod string) (image, problems) {
	var bad problems
	var img image
	stages, err := parseDockerfile(text)
	if err != nil {
		bad.addf("Dockerfile: %v", err)
		return img, bad
	}
	if len(stages) < 2 {
		bad.addf("Dockerfile: want a build stage and a final stage, found %d stage(s)", len(stages))
		return img, bad
	}
	mod := goLineRE.FindStringSubmatch(goMod)
	// The build stage: the one that runs `go build -o OUT ./cmd/discoverd`.
	var build *dockerStage
	var out string
	for i := range stages[:len(stages)-1] {
		for _, in := range stages[i].instrs {
			if m := goBuildRE.FindStringSubmatch(in.args); in.cmd == "RUN" && m != nil {
				build, out = &stages[i], m[1]
			}
		}
	}
	if build == nil {
		bad.addf("Dockerfile: no stage before the last runs `go build -o OUT ./cmd/discoverd`")
		return img, bad
	}
	if m := goImageRE.FindStringSubmatch(build.from); m == nil || mod == nil || m[1] != mod[1] || m[2] != mod[2] || (m[3] != "" && atoi(m[3]) < atoi(mod[3])) {
		bad.addf("Dockerfile: the build stage is FROM %s, want golang:%s.%s (the go line of go.mod)", build.from, at(mod, 1), at(mod, 2))
	}
	cgoOff := false // at the go build: ENV before it, or the line's own setting
	for _, in := range build.instrs {
		switch {
		case in.cmd == "ENV":
			if v, ok := envPairs(in.args)["CGO_ENABLED"]; ok {
				cgoOff = v == "0"
			}
		case in.cmd == "RUN" && goBuildRE.MatchString(in.args):
			if cgoOffRE.MatchString(in.args) {
				cgoOff = true
			} else if strings.Contains(in.args, "CGO_ENABLED=") {
				cgoOff = false
			}
		}
	}
	if !cgoOff {
		bad.addf("Dockerfile: the build stage must set CGO_ENABLED=0 (ENV, or on the go build line): the final image has no libc")
	}

	final := stages[len(stages)-1]
	if base := final.from; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		bad.addf("Dockerfile: the final stage is FROM %s, want gcr.io/distroless/static… or scratch (a static binary needs nothing else)", base)
	}
	copied := ""
	img.uid = -1
	for _, in := range final.instrs {
		f := strings.Fields(in.args)
		switch in.cmd {
		case "COPY":
			if len(f) == 3 && (f[0] == "--from="+build.as || f[0] == "--from="+strconv.Itoa(stageIndex(stages, build))) && path.Clean(f[1]) == path.Clean(out) {
				copied = f[2]
			}
		case "USER":
			u, g, _ := strings.Cut(in.args, ":")
			uid, err := strconv.Atoi(u)
			if _, gerr := strconv.Atoi(g); err != nil || (g != "" && gerr != nil) || uid == 0 {
				bad.addf("Dockerfile: USER %s: want a numeric non-root uid (and gid), so that Kubernetes' runAsNonRoot can check it", in.args)
				continue
			}
			img.uid = uid
		case "EXPOSE":
			for _, p := range f {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					bad.addf("Dockerfile: EXPOSE %s: want TCP port numbers", in.args)
				}
				img.exposed = append(img.exposed, n)
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &img.entrypoint); err != nil {
				bad.addf("Dockerfile: ENTRYPOINT %s: want the exec form, [\"/discoverd\"] (the shell form needs a shell, and eats signals)", in.args)
			}
		}
	}
	if img.uid < 0 {
		bad.addf("Dockerfile: the final stage has no USER uid: it would run as root")
	}
	if copied == "" {
		bad.addf("Dockerfile: the final stage does not COPY --from=%s %s (the binary the build stage makes)", build.as, out)
	}
	if len(img.entrypoint) != 1 || img.entrypoint[0] != copied {
		bad.addf("Dockerfile: ENTRYPOINT %q, want [%q]: the binary alone, so that the pods' args start with its subcommand", img.entrypoint, copied)
	}
	return img, bad
}

// envPairs reads an ENV instruction: KEY=VALUE pairs, or the old form
// KEY VALUE.
func envPairs(args string) map[string]string {
	out := map[string]string{}
	f := strings.Fields(args)
	if len(f) > 0 && !strings.Contains(f[0], "=") {
		out[f[0]] = strings.Join(f[1:], " ")
		return out
	}
	for _, kv := range f {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = strings.Trim(v, `"'`)
	}
	return out
}

func stageIndex(stages []dockerStage, s *dockerStage) int {
	for i := range stages {
		if &stages[i] == s {
			return i
		}
	}
	return -1
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func at(m []string, i int) string {
	if i < len(m) {
		return m[i]
	}
	return "?"
}

// ignoredFiles returns the files among files (slash paths from the
// repository root) that the .dockerignore patterns keep out of the build
// context: a pattern (filepath.Match syntax, ** for any number of
// directories) leaves out what it matches and everything below it; a
// pattern starting with ! brings back what it matches; the last match wins.
func ignoredFiles(dockerignore string, files []string) ([]string, error) {
	type rule struct {
		re     *regexp.Regexp
		negate bool
	}
	var rules []rule
	for _, l := range strings.Split(dockerignore, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		pattern, negate := strings.CutPrefix(l, "!")
		re, err := patternRE(strings.TrimPrefix(path.Clean(pattern), "/"))
		if err != nil {
			return nil, fmt.Errorf(".dockerignore: %q: %v", l, err)
		}
		rules = append(rules, rule{re: re, negate: negate})
	}
	var out []string
	for _, f := range files {
		ignored := false
		for _, r := range rules {
			// the file itself or one of the directories above it
			for p := f; p != "." && p != "/"; p = path.Dir(p) {
				if r.re.MatchString(p) {
					ignored = !r.negate
					break
				}
			}
		}
		if ignored {
			out = append(out, f)
		}
	}
	return out, nil
}

// patternRE turns a .dockerignore pattern into a regexp of whole paths.
func patternRE(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(?:.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			end := strings.IndexByte(p[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [")
			}
			b.WriteString(p[i : i+end+1])
			i += end
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// buildFiles lists the files `go build ./cmd/discoverd` reads, as slash
// paths from the module root: go.mod, go.sum and the source files of the
// module's packages it builds, with cgo off as in the image.
func buildFiles(root string) ([]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if not .Standard}}{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}{{end}}`,
		"./cmd/discoverd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	outb, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v", err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(outb)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dir, err := relSlash(root, f[0])
		if err != nil {
			return nil, err
		}
		for _, name := range f[1:] {
			files = append(files, path.Join(dir, name))
		}
	}
	return files, nil
}

func relSlash(root, dir string) (string, error) {
	if dir == root {
		return ".", nil
	}
	r, ok := strings.CutPrefix(dir, root+string(os.PathSeparator))
	if !ok {
		return "", fmt.Errorf("%s is not under %s", dir, root)
	}
	return strings.ReplaceAll(r, string(os.PathSeparator), "/"), nil
}
