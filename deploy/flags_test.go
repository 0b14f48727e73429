package deploy_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The flags of `discoverd server`, read from the help of the binary built
// from this tree: a manifest may use only those, with values of their
// types. The flags are package main's, out of reach of an import; the help
// lists every one (flag.PrintDefaults).

// serverFlag is one flag of `discoverd server -h`.
type serverFlag struct {
	name  string
	typ   string // "" for a boolean; "duration", "int", "uint", "float", "string" or another word
	def   string // the default, when the help gives one
	usage string
}

// helpFlags are the flags of `discoverd server -h`, and the grace a stop
// gets past -shutdown-timeout (its usage says it).
type helpFlags struct {
	flags     map[string]serverFlag
	stopGrace time.Duration
}

var serverHelp struct {
	once sync.Once
	h    helpFlags
	err  error
}

// discoverdServerFlags runs `discoverd server -h` once per test process.
func discoverdServerFlags(t testing.TB) helpFlags {
	t.Helper()
	bin := discoverdBin(t)
	serverHelp.once.Do(func() {
		var out bytes.Buffer
		cmd := exec.Command(bin, "server", "-h")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			serverHelp.err = fmt.Errorf("%s server -h: %v\n%s", bin, err, out.Bytes())
			return
		}
		serverHelp.h, serverHelp.err = parseHelp(out.String())
	})
	if serverHelp.err != nil {
		t.Fatal(serverHelp.err)
	}
	return serverHelp.h
}

var (
	defaultRE   = regexp.MustCompile(`\(default (.*)\)$`)
	stopGraceRE = regexp.MustCompile(`Raft then gets (\S+) more`)
)

// parseHelp reads flag.PrintDefaults' output: "  -name type" lines, each
// followed by its usage on a line of its own starting with a tab, which
// ends with "(default X)" when the default is not the zero value.
func parseHelp(help string) (helpFlags, error) {
	h := helpFlags{flags: map[string]serverFlag{}}
	var cur *serverFlag
	for _, line := range strings.Split(help, "\n") {
		if strings.HasPrefix(line, "  -") {
			head, usage, _ := strings.Cut(strings.TrimPrefix(line, "  -"), "\t") // one-letter flags keep their usage on the line
			name, typ, _ := strings.Cut(strings.TrimSpace(head), " ")
			h.flags[name] = serverFlag{name: name, typ: typ, usage: strings.TrimSpace(usage)}
			f := h.flags[name]
			cur = &f
		} else if cur != nil && strings.HasPrefix(strings.TrimLeft(line, " "), "\t") {
			cur.usage = strings.TrimSpace(cur.usage + " " + strings.TrimSpace(line))
		} else {
			continue
		}
		if m := defaultRE.FindStringSubmatch(cur.usage); m != nil {
			cur.def = m[1]
			if s, err := strconv.Unquote(m[1]); err == nil {
				cur.def = s
			}
		}
		h.flags[cur.name] = *cur
	}
	if len(h.flags) < 10 {
		return h, fmt.Errorf("`discoverd server -h` lists %d flags: not flag.PrintDefaults output?\n%s", len(h.flags), help)
	}
	st, ok := h.flags["shutdown-timeout"]
	m := stopGraceRE.FindStringSubmatch(st.usage)
	if !ok || m == nil {
		return h, fmt.Errorf("the usage of -shutdown-timeout no longer says how long Raft gets after it (%q): update stopGraceRE", st.usage)
	}
	g, err := time.ParseDuration(m[1])
	if err != nil {
		return h, fmt.Errorf("the usage of -shutdown-timeout: %q is not a duration", m[1])
	}
	h.stopGrace = g
	return h, nil
}

// check says what is wrong with value for the flag, by its type; "" if
// nothing (a type this test does not know takes any value).
func (f serverFlag) check(value string) string {
	var err error
	switch f.typ {
	case "":
		_, err = strconv.ParseBool(value)
	case "duration":
		_, err = time.ParseDuration(value)
	case "int":
		_, err = strconv.ParseInt(value, 0, 64)
	case "uint":
		_, err = strconv.ParseUint(value, 0, 64)
	case "float":
		_, err = strconv.ParseFloat(value, 64)
	}
	if err != nil {
		typ := f.typ
		if typ == "" {
			typ = "bool"
		}
		return fmt.Sprintf("%q is not a %s", value, typ)
	}
	return ""
}

// value is the flag's value in a pod: from its command line, else its
// config file, else the default the help gives.
func (h helpFlags) value(p *podCommand, name string) string {
	if v, ok := p.flags[name]; ok {
		return v.value
	}
	return h.flags[name].def
}
