package test

import (
	"encoding/json"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The acl commands and -token with real processes, the way an operator
// uses them: `discoverd dev -acl` prints a token that works; bootstrap
// works once; tokens are created, listed, shown, updated and deleted; a
// token's rules decide what the other commands may do; -token beats
// $DISCOVERD_TOKEN.

// aclSecret is what `acl bootstrap -json` and `acl token create -json` print.
type aclSecret struct {
	Token struct {
		AccessorID  string   `json:"accessor_id"`
		Description string   `json:"description"`
		Rules       []string `json:"rules"`
		ExpiresAtMS int64    `json:"expires_at_ms"`
	} `json:"token"`
	Secret string `json:"secret"`
}

// tokenLine finds "export DISCOVERD_TOKEN=<token>" in out.
var tokenLine = regexp.MustCompile(`(?m)^\s*export DISCOVERD_TOKEN=(\S+)$`)

// aclCLI runs a client command against servers with token ("" for none:
// an empty -token overrides any $DISCOVERD_TOKEN in h.env).
func (h *harness) aclCLI(servers, token string, args ...string) cliResult {
	h.t.Helper()
	return h.cli(20*time.Second, append(args, "-servers", servers, "-token", token, "-timeout", "15s")...)
}

// TestACLCLI_DevPrintsAWorkingToken: `discoverd dev -acl` bootstraps its
// cluster and prints the management token with its export line; the token
// works, and without it a command has only the anonymous token's rights.
func TestACLCLI_DevPrintsAWorkingToken(t *testing.T) {
	h := newHarness(t)
	addr := devAddr(t, 1)
	p := h.start("dev-acl", "dev", "-acl", "-nodes", "1", "-addr", addr, "-http-addr", "", "-dns-addr", "")
	poll(t, 30*time.Second, 20*time.Millisecond, "dev -acl to print DISCOVERD=", func() (bool, string) {
		if p.exited() {
			t.Fatalf("dev -acl exited before serving:\n%s", p.Describe())
		}
		return p.logContains("export DISCOVERD="), "no DISCOVERD= line yet"
	})
	out := p.LogTail(20)
	m := tokenLine.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "ACLs on: management token ") || !strings.Contains(out, "shown only now") {
		t.Fatalf("dev -acl printed no management token:\n%s", out)
	}
	token := m[1]

	r := h.aclCLI(addr, token, "acl", "whoami")
	if r.code != 0 || !strings.Contains(r.stdout, `service "*" write`) || !strings.Contains(r.stdout, "acl write") {
		t.Fatalf("whoami with dev's token: %v", r)
	}
	reg := h.start("register-web", "register", "web", "10.0.0.1:80", "-servers", addr, "-token", token)
	poll(t, 20*time.Second, 50*time.Millisecond, "register with dev's token", func() (bool, string) {
		if reg.exited() {
			t.Fatalf("register with dev's token exited:\n%s", reg.Describe())
		}
		return reg.logContains("registered web 10.0.0.1:80"), reg.LogTail(5)
	})
	r = h.aclCLI(addr, "", "register", "web", "10.0.0.2:80")
	if r.code != 1 || !strings.Contains(r.stderr, `needs the rule service "web" write`) || !strings.Contains(r.stderr, "anonymous") {
		t.Fatalf("register without a token: want permission_denied naming the rule and the anonymous token; %v", r)
	}
	r = h.aclCLI(addr, "", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "needs the rule operator read") {
		t.Fatalf("status without a token: want permission_denied naming operator read; %v", r)
	}
	if r := h.aclCLI(addr, token, "status"); r.code != 0 {
		t.Fatalf("status with dev's token: %v", r)
	}

	reg.signal(t, syscall.SIGINT)
	if code := reg.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("register exited %d after SIGINT\n%s", code, reg.Describe())
	}
	p.signal(t, syscall.SIGINT)
	if code := p.wait(t, devStopBound); code != 0 {
		t.Fatalf("dev -acl exited %d after SIGINT\n%s", code, p.Describe())
	}
}

// TestACLCLI_TokenLifecycle: against three -acl server processes, through
// the CLI only — bootstrap once, create, list, show, update, delete,
// whoami; what a token's rules allow; -token against $DISCOVERD_TOKEN.
func TestACLCLI_TokenLifecycle(t *testing.T) {
	h := newHarness(t)
	c := h.startClusterWith(3, func(*node) []string { return []string{"-acl"} })
	all := c.servers()

	// Bootstrap, through any node, once the cluster has a leader (the
	// client retries no_leader: nothing was proposed).
	var mgmt, mgmtID string
	poll(t, 30*time.Second, 200*time.Millisecond, "acl bootstrap", func() (bool, string) {
		r := h.aclCLI(all, "", "acl", "bootstrap")
		if r.code != 0 {
			return false, r.String()
		}
		m := tokenLine.FindStringSubmatch(r.stdout)
		id := regexp.MustCompile(`(?m)^accessor id  (\S+)$`).FindStringSubmatch(r.stdout)
		if m == nil || id == nil || !strings.Contains(r.stdout, "It is shown this once") ||
			!strings.Contains(r.stdout, "token        "+m[1]+"\n") || !strings.HasPrefix(m[1], id[1]+".") {
			t.Fatalf("acl bootstrap printed:\n%s", r.stdout)
		}
		mgmt, mgmtID = m[1], id[1]
		return true, ""
	})
	r := h.aclCLI(all, "", "acl", "bootstrap")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "ACLs were bootstrapped already") {
		t.Fatalf("a second bootstrap: want exit 1 saying it was bootstrapped already; %v", r)
	}
	r = h.aclCLI(all, mgmt, "acl", "bootstrap")
	if r.code != 1 || !strings.Contains(r.stderr, "ACLs were bootstrapped already") {
		t.Fatalf("a second bootstrap, with the management token: %v", r)
	}

	create := func(args ...string) aclSecret {
		t.Helper()
		r := h.mustCLI(20*time.Second, append([]string{"acl", "token", "create", "-json", "-servers", all, "-token", mgmt}, args...)...)
		var s aclSecret
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || !strings.HasPrefix(s.Secret, s.Token.AccessorID+".") {
			t.Fatalf("acl token create -json printed %q: %v", r.stdout, err)
		}
		return s
	}
	reader := create("-description", "web reader", "-rule", `service "web" read`)
	writer := create("-description", "web deploys", "-rule", `service "web*" write`, "-expires", "720h")
	if writer.Token.ExpiresAtMS == 0 || time.Until(time.UnixMilli(writer.Token.ExpiresAtMS)) < 719*time.Hour {
		t.Fatalf("-expires 720h: the token expires at %d", writer.Token.ExpiresAtMS)
	}
	// Without -json: the accessor id and the secret, once.
	r = h.aclCLI(all, mgmt, "acl", "token", "create", "-description", "scratch", "-rule", "operator read")
	scratch := tokenLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || scratch == nil || !strings.Contains(r.stdout, "Its rules: operator read; it expires: never.") {
		t.Fatalf("acl token create: %v", r)
	}

	// The list: a row per token, never a secret.
	r = h.aclCLI(all, mgmt, "acl", "token", "list")
	if r.code != 0 {
		t.Fatalf("acl token list: %v", r)
	}
	rows := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(rows) != 7 || !strings.HasPrefix(rows[0], "ACCESSOR ID") || !strings.HasPrefix(rows[6], "5 tokens at index ") {
		t.Fatalf("acl token list: want a header, 5 tokens and a summary:\n%s", r.stdout)
	}
	row := func(id string) string {
		for _, l := range rows {
			if strings.HasPrefix(l, id+" ") {
				return l
			}
		}
		t.Fatalf("acl token list has no row for %s:\n%s", id, r.stdout)
		return ""
	}
	if l := row(reader.Token.AccessorID); !regexp.MustCompile(`  web reader +service "web" read +never$`).MatchString(l) {
		t.Fatalf("reader's row: %q", l)
	}
	if l := row(writer.Token.AccessorID); !strings.Contains(l, time.UnixMilli(writer.Token.ExpiresAtMS).UTC().Format(time.RFC3339)) {
		t.Fatalf("writer's row: %q, want its expiry in RFC 3339", l)
	}
	if l := row(mgmtID); !strings.Contains(l, `service "*" write; operator write; acl write`) {
		t.Fatalf("management token's row: %q", l)
	}
	if l := row("anonymous"); !strings.Contains(l, "(none)") {
		t.Fatalf("anonymous token's row: %q, want no rules", l)
	}
	for _, s := range []string{mgmt, reader.Secret, writer.Secret, scratch[1]} {
		_, secret, _ := strings.Cut(s, ".")
		if strings.Contains(r.stdout, secret) {
			t.Fatalf("acl token list shows a secret:\n%s", r.stdout)
		}
	}

	// What the rules allow: the reader may not register, the writer may.
	r = h.aclCLI(all, reader.Secret, "unregister", "web", "10.0.0.9:80")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, `service "web" write`) ||
		!strings.Contains(r.stderr, reader.Token.AccessorID) {
		t.Fatalf("unregister with a read-only token: want permission_denied naming the rule and the token; %v", r)
	}
	r = h.aclCLI(all, reader.Secret, "register", "web", "10.0.0.1:80")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, `service "web" write`) {
		t.Fatalf("register with a read-only token: %v", r)
	}
	if r.took > 10*time.Second {
		t.Fatalf("the denied register took %v: permission_denied must not be retried", r.took)
	}
	reg := h.start("register-web", "register", "web", "10.0.0.1:80", "-servers", all, "-token", writer.Secret, "-ttl", "5s")
	poll(t, 20*time.Second, 50*time.Millisecond, "register with the writer's token", func() (bool, string) {
		if reg.exited() {
			t.Fatalf("register with the writer's token exited:\n%s", reg.Describe())
		}
		return reg.logContains("registered web 10.0.0.1:80"), reg.LogTail(5)
	})
	r = h.aclCLI(all, reader.Secret, "services", "web", "-consistent")
	if r.code != 0 || !strings.Contains(r.stdout, "10.0.0.1:80") {
		t.Fatalf("services web with the reader's token: %v", r)
	}
	r = h.aclCLI(all, "", "services", "web", "-consistent")
	if r.code != 0 || strings.Contains(r.stdout, "10.0.0.1:80") || !strings.Contains(r.stdout, "0 instances of web") {
		t.Fatalf("services web without a token: want it to say nothing (0 instances); %v", r)
	}
	if r := h.aclCLI(all, reader.Secret, "status"); r.code != 1 || !strings.Contains(r.stderr, "needs the rule operator read") {
		t.Fatalf("status with the reader's token: want permission_denied naming operator read; %v", r)
	}

	// show, and update keeping what is not given.
	r = h.aclCLI(all, mgmt, "acl", "token", "show", "-id", reader.Token.AccessorID)
	if r.code != 0 || !strings.Contains(r.stdout, "description   web reader\n") || !strings.Contains(r.stdout, `rules         service "web" read`) {
		t.Fatalf("acl token show: %v", r)
	}
	r = h.aclCLI(all, mgmt, "acl", "token", "update", "-id", reader.Token.AccessorID, "-rule", `service "web" write`)
	if r.code != 0 || !strings.Contains(r.stdout, "description   web reader\n") || !strings.Contains(r.stdout, `rules         service "web" write`) {
		t.Fatalf("update -rule: want the new rule and the description kept; %v", r)
	}
	r = h.aclCLI(all, mgmt, "acl", "token", "update", "-id", reader.Token.AccessorID, "-description", "web writer now")
	if r.code != 0 || !strings.Contains(r.stdout, "description   web writer now\n") || !strings.Contains(r.stdout, `rules         service "web" write`) {
		t.Fatalf("update -description: want the rules kept; %v", r)
	}
	r = h.aclCLI(all, reader.Secret, "unregister", "web", "10.0.0.9:80")
	if r.code != 1 || strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "not registered") {
		t.Fatalf("unregister after the update: want not_found, no longer permission_denied; %v", r)
	}
	r = h.aclCLI(all, reader.Secret, "acl", "token", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "needs the rule acl read") {
		t.Fatalf("acl token list without acl read: %v", r)
	}

	// whoami: -token, else $DISCOVERD_TOKEN; -token '' presents none.
	h.env = append(h.env, "DISCOVERD_TOKEN="+mgmt)
	whoami := func(args ...string) string {
		t.Helper()
		return h.mustCLI(20*time.Second, append([]string{"acl", "whoami", "-servers", all}, args...)...).stdout
	}
	if out := whoami(); !strings.Contains(out, "accessor id   "+mgmtID) {
		t.Fatalf("whoami with $DISCOVERD_TOKEN: want the management token\n%s", out)
	}
	if out := whoami("-token", writer.Secret); !strings.Contains(out, "accessor id   "+writer.Token.AccessorID) {
		t.Fatalf("whoami -token with $DISCOVERD_TOKEN set: want -token's\n%s", out)
	}
	if out := whoami("-token", ""); !strings.Contains(out, "accessor id   anonymous") || !strings.Contains(out, "no token presented") {
		t.Fatalf("whoami -token '': want the anonymous token\n%s", out)
	}
	if r := h.cli(20*time.Second, "acl", "token", "list", "-servers", all); r.code != 0 || !strings.Contains(r.stdout, "5 tokens") {
		t.Fatalf("acl token list with $DISCOVERD_TOKEN: %v", r)
	}

	// The anonymous token: what callers without a token may do.
	h.mustCLI(20*time.Second, "acl", "token", "update", "-id", "anonymous", "-rule", `service "web" read`, "-servers", all)
	r = h.aclCLI(all, "", "services", "web", "-consistent")
	if r.code != 0 || !strings.Contains(r.stdout, "10.0.0.1:80") {
		t.Fatalf("services web without a token, once anonymous may read web: %v", r)
	}

	// delete: the token is refused from then on.
	r = h.cli(20*time.Second, "acl", "token", "delete", "-id", reader.Token.AccessorID, "-servers", all)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "deleted token "+reader.Token.AccessorID+" at index ") {
		t.Fatalf("acl token delete: %v", r)
	}
	r = h.aclCLI(all, reader.Secret, "acl", "whoami")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "not known") {
		t.Fatalf("whoami with a deleted token: %v", r)
	}
	r = h.cli(20*time.Second, "acl", "token", "show", "-id", reader.Token.AccessorID, "-servers", all)
	if r.code != 1 || !strings.Contains(r.stderr, "no token has accessor id") {
		t.Fatalf("show of a deleted token: %v", r)
	}
	if r := h.cli(20*time.Second, "acl", "token", "delete", "-id", "anonymous", "-servers", all); r.code != 2 {
		t.Fatalf("delete -id anonymous: want a usage error; %v", r)
	}

	reg.signal(t, syscall.SIGINT)
	if code := reg.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("register exited %d after SIGINT\n%s", code, reg.Describe())
	}
}
