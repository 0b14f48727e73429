package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/client"
)

// The acl command: bootstrap ACLs, manage tokens, and say which token is
// presented (docs/acl.md).

// aclUse and aclTokenUse are the usage lines of acl and acl token.
const (
	aclUse      = "discoverd acl bootstrap [-json] | discoverd acl token create|list|show|update|delete ... | discoverd acl whoami [-json]"
	aclTokenUse = "discoverd acl token create [-description D] [-rule R ...] [-expires 720h] [-json] | list [-json] | show -id ID [-json] | update -id ID [-description D] [-rule R ... | -clear-rules] [-json] | delete -id ID"
)

func runACL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "acl", aclUse, []subcommand{
		{"bootstrap", "creates the management token, once per cluster, and prints its secret", runACLBootstrap},
		{"token", "creates, lists, shows, updates or deletes tokens", runACLToken},
		{"whoami", "describes the token this command presents (-token, $DISCOVERD_TOKEN), or the anonymous one", runACLWhoAmI},
	}, args, stdout, stderr)
}

func runACLToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "acl token", aclTokenUse, []subcommand{
		{"create", "creates a token with -rule rules and prints its secret, once", runACLTokenCreate},
		{"list", "lists every token (never a secret)", runACLTokenList},
		{"show", "shows one token", runACLTokenShow},
		{"update", "changes a token's description or rules; the rest stays", runACLTokenUpdate},
		{"delete", "deletes a token: requests presenting it are denied from then on", runACLTokenDelete},
	}, args, stdout, stderr)
}

// aclCommand parses an acl subcommand's flags — the client flags and what
// extra adds — which take no arguments.
func aclCommand(name string, args []string, stderr io.Writer, extra func(fs *flag.FlagSet)) (*clientFlags, *flag.FlagSet, error) {
	cf := &clientFlags{}
	fs := newFlagSet(name, "", stderr)
	cf.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := parse(fs, args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() != 0 {
		return nil, nil, usageErr("unexpected arguments %q", fs.Args())
	}
	return cf, fs, nil
}

// ruleFlags is -rule, repeatable. Each rule is checked as it is given, so a
// typo is a usage error before anything is sent.
type ruleFlags []string

func (r *ruleFlags) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(*r, "; ")
}

func (r *ruleFlags) Set(s string) error {
	if _, err := acl.ParseRule(s); err != nil {
		return errors.New(strings.TrimSuffix(err.Error(), ": "+client.ErrInvalidArgument.Error()))
	}
	if len(*r) == acl.MaxRules {
		return fmt.Errorf("more than %d rules", acl.MaxRules)
	}
	*r = append(*r, s)
	return nil
}

const ruleUsage = "a `rule`: " + `'service "<name or prefix*>" read|write', 'operator read|write' or 'acl read|write'; repeat it for each rule`

// expiresFlag is -expires: a duration with a unit, above 0 and at most
// acl.MaxExpiresIn.
type expiresFlag time.Duration

func (f *expiresFlag) String() string {
	if f == nil || *f == 0 {
		return ""
	}
	return time.Duration(*f).String()
}

func (f *expiresFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("%q has no unit: did you mean %sh?", s, s)
		}
		return fmt.Errorf("%q is not a duration (e.g. 720h, 90m)", s)
	}
	if d <= 0 || d > acl.MaxExpiresIn {
		return fmt.Errorf("%v is out of range: above 0, at most %v (omit -expires for a token that never expires)", d, acl.MaxExpiresIn)
	}
	*f = expiresFlag(d)
	return nil
}

// idFlag adds -id, the accessor id of the token a command acts on.
func idFlag(fs *flag.FlagSet) *string {
	return fs.String("id", "", "the token's `accessor-id` (as 'acl token list' shows it; \"anonymous\" for the anonymous token)")
}

// checkID checks -id before anything is sent.
func checkID(id string) error {
	if id == "" {
		return usageErr("-id is required: the token's accessor id (discoverd acl token list shows them)")
	}
	if strings.Contains(id, ".") {
		// Not echoed: it is likely a whole token, secret included.
		return usageErr("-id takes a token's accessor id, the part of the token before the '.', not the token itself")
	}
	if err := acl.CheckAccessorID(id); err != nil {
		return usageErr("-id: %s", strings.TrimSuffix(err.Error(), ": "+client.ErrInvalidArgument.Error()))
	}
	return nil
}

func runACLBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON *bool
	cf, _, err := aclCommand("acl bootstrap", args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, `print {"token":{"accessor_id","description","rules","create_index","modify_index"},"secret","index"}`)
	})
	if err != nil {
		return err
	}
	return callAndPrint(ctx, cf, stdout, *asJSON, func(cl *client.Client, rctx context.Context) (*client.ACLTokenSecret, error) {
		return cl.ACLBootstrap(rctx)
	}, func(res *client.ACLTokenSecret) error {
		return writeSecret(stdout, res, fmt.Sprintf("This is the management token (%s).", strings.Join(res.Token.Rules, ", ")))
	})
}

// writeSecret prints a new token's accessor id and secret, and that the
// secret is shown only now.
func writeSecret(w io.Writer, res *client.ACLTokenSecret, what string) error {
	_, err := fmt.Fprintf(w, "accessor id  %s\ntoken        %s\n\n%s\nIt is shown this once: keep it in your secret store.\n  export DISCOVERD_TOKEN=%s\n",
		res.Token.AccessorID, res.Secret, what, res.Secret)
	return err
}

func runACLTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		rules       ruleFlags
		expires     expiresFlag
		description *string
		asJSON      *bool
	)
	cf, _, err := aclCommand("acl token create", args, stderr, func(fs *flag.FlagSet) {
		description = fs.String("description", "", "what the token is for (at most 256 bytes)")
		fs.Var(&rules, "rule", ruleUsage+"; none: the token may do nothing")
		fs.Var(&expires, "expires", "the token stops working this long (a `duration`, e.g. 720h) after it is created; default: never")
		asJSON = fs.Bool("json", false, `print {"token":{"accessor_id","description","rules","expires_at_ms","create_index","modify_index"},"secret","index"}`)
	})
	if err != nil {
		return err
	}
	if err := acl.CheckDescription(*description); err != nil {
		return usageErr("-description: %s", strings.TrimSuffix(err.Error(), ": "+client.ErrInvalidArgument.Error()))
	}
	return callAndPrint(ctx, cf, stdout, *asJSON, func(cl *client.Client, rctx context.Context) (*client.ACLTokenSecret, error) {
		return cl.ACLCreateToken(rctx, client.ACLTokenCreate{Description: *description, Rules: rules, ExpiresIn: time.Duration(expires)})
	}, func(res *client.ACLTokenSecret) error {
		return writeSecret(stdout, res, "Its rules: "+formatRules(res.Token.Rules)+"; it expires: "+formatExpires(res.Token)+".")
	})
}

func runACLTokenList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON *bool
	cf, _, err := aclCommand("acl token list", args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, `print {"tokens":[{"accessor_id","description","rules","expires_at_ms","expired","create_index","modify_index"}],"index"}`)
	})
	if err != nil {
		return err
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	list, idx, err := cl.ACLTokens(rctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, struct {
			Tokens []client.ACLToken `json:"tokens"`
			Index  uint64            `json:"index"`
		}{list, idx})
	}
	return writeTokens(stdout, list, idx)
}

// writeTokens prints acl token list as a table.
func writeTokens(w io.Writer, list []client.ACLToken, idx uint64) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCESSOR ID\tDESCRIPTION\tRULES\tEXPIRES")
	for _, t := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.AccessorID, orDash(t.Description), formatRules(t.Rules), formatExpires(t))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%s at index %d\n", plural(len(list), "token", "tokens"), idx)
	return err
}

// formatRules joins a token's rules with "; ", or says it has none.
func formatRules(rules []string) string {
	if len(rules) == 0 {
		return "(none)"
	}
	return strings.Join(rules, "; ")
}

// formatExpires is when a token expires: RFC 3339 (UTC), "never", and
// " (expired)" once it has.
func formatExpires(t client.ACLToken) string {
	if t.ExpiresAtMillis == 0 {
		return "never"
	}
	s := time.UnixMilli(t.ExpiresAtMillis).UTC().Format(time.RFC3339)
	if t.Expired {
		s += " (expired)"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeToken prints one token, a field a line.
func writeToken(w io.Writer, t client.ACLToken) error {
	rules := "(none)"
	if len(t.Rules) > 0 {
		rules = strings.Join(t.Rules, "\n              ")
	}
	_, err := fmt.Fprintf(w, "accessor id   %s\ndescription   %s\nrules         %s\nexpires       %s\ncreate index  %d\nmodify index  %d\n",
		t.AccessorID, orDash(t.Description), rules, formatExpires(t), t.CreateIndex, t.ModifyIndex)
	return err
}

const tokenJSONUsage = `print {"accessor_id","description","rules","expires_at_ms","expired","create_index","modify_index"}`

func runACLTokenShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		id     *string
		asJSON *bool
	)
	cf, _, err := aclCommand("acl token show", args, stderr, func(fs *flag.FlagSet) {
		id = idFlag(fs)
		asJSON = fs.Bool("json", false, tokenJSONUsage)
	})
	if err != nil {
		return err
	}
	if err := checkID(*id); err != nil {
		return err
	}
	return callAndPrint(ctx, cf, stdout, *asJSON, func(cl *client.Client, rctx context.Context) (*client.ACLToken, error) {
		return cl.ACLToken(rctx, *id)
	}, func(t *client.ACLToken) error { return writeToken(stdout, *t) })
}

func runACLTokenUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		id, description *string
		rules           ruleFlags
		clearRules      *bool
		asJSON          *bool
	)
	cf, fs, err := aclCommand("acl token update", args, stderr, func(fs *flag.FlagSet) {
		id = idFlag(fs)
		description = fs.String("description", "", "the new description (default: the token's stays)")
		fs.Var(&rules, "rule", ruleUsage+"; given, they replace all of the token's rules (default: they stay)")
		clearRules = fs.Bool("clear-rules", false, "remove every rule: the token may do nothing")
		asJSON = fs.Bool("json", false, tokenJSONUsage)
	})
	if err != nil {
		return err
	}
	if err := checkID(*id); err != nil {
		return err
	}
	setDescription := false
	fs.Visit(func(f *flag.Flag) { setDescription = setDescription || f.Name == "description" })
	switch {
	case *clearRules && len(rules) > 0:
		return usageErr("-clear-rules and -rule together: give the new rules, or none with -clear-rules")
	case !setDescription && !*clearRules && len(rules) == 0:
		return usageErr("nothing to change: give -description, -rule or -clear-rules")
	}
	if err := acl.CheckDescription(*description); err != nil {
		return usageErr("-description: %s", strings.TrimSuffix(err.Error(), ": "+client.ErrInvalidArgument.Error()))
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	// An update replaces both: what is not given is what the token has.
	cur, err := cl.ACLToken(rctx, *id)
	if err != nil {
		return err
	}
	newDescription, newRules := cur.Description, cur.Rules
	if setDescription {
		newDescription = *description
	}
	switch {
	case *clearRules:
		newRules = []string{}
	case len(rules) > 0:
		newRules = rules
	}
	t, err := cl.ACLUpdateToken(rctx, *id, newDescription, newRules)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, t)
	}
	fmt.Fprintf(stdout, "updated token %s\n", t.AccessorID)
	return writeToken(stdout, *t)
}

func runACLTokenDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var id *string
	cf, _, err := aclCommand("acl token delete", args, stderr, func(fs *flag.FlagSet) { id = idFlag(fs) })
	if err != nil {
		return err
	}
	if err := checkID(*id); err != nil {
		return err
	}
	if *id == acl.AnonymousID {
		return usageErr("the anonymous token cannot be deleted: take its rights away with 'discoverd acl token update -id anonymous -clear-rules'")
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	idx, err := cl.ACLDeleteToken(rctx, *id)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "deleted token %s at index %d\n", *id, idx)
	return err
}

func runACLWhoAmI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON *bool
	cf, _, err := aclCommand("acl whoami", args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, `print {"token":{"accessor_id","description","rules","expires_at_ms","expired","create_index","modify_index"},"anonymous"}`)
	})
	if err != nil {
		return err
	}
	return callAndPrint(ctx, cf, stdout, *asJSON, func(cl *client.Client, rctx context.Context) (*client.ACLWhoAmI, error) {
		return cl.ACLWhoAmI(rctx)
	}, func(who *client.ACLWhoAmI) error {
		return writeWhoAmI(stdout, who)
	})
}

func writeWhoAmI(stdout io.Writer, who *client.ACLWhoAmI) error {
	if who.Anonymous {
		fmt.Fprintln(stdout, "no token presented (-token, $DISCOVERD_TOKEN): the anonymous token's rights apply")
	}
	return writeToken(stdout, who.Token)
}

// callAndPrint makes one call on a client of cf's flags, bounded by its
// -timeout, and prints the answer: as JSON with asJSON, else with text.
func callAndPrint[T any](ctx context.Context, cf *clientFlags, stdout io.Writer, asJSON bool,
	call func(*client.Client, context.Context) (T, error), text func(T) error) error {
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	res, err := call(cl, rctx)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, res)
	}
	return text(res)
}
