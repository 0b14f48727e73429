// Command discoverd runs a discoverd node (server), a local cluster for
// development (dev), and the client commands that talk to a cluster
// (register, unregister, services, watch, leader, meta, status, members,
// snapshot, acl); version says which build it is.
//
// Exit status: 0 on success, 1 on failure, 2 on a usage error, 65 when a
// node's data dir is damaged, 70 when a node's Raft log cannot be written
// durably, 130 when register is interrupted a second time while it
// unregisters. Errors go to standard error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/discoverd/discoverd/raftnode"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	// The first SIGINT or SIGTERM cancels ctx: the command stops in order.
	// Later ones are ignored, unless the command asked for a second one to
	// end the process at once (secondSignalExits).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		for range sigs {
			if secondSignalExits.Load() {
				fmt.Fprintln(os.Stderr, "discoverd: interrupted again: exiting at once")
				os.Exit(exitInterrupted)
			}
		}
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel()
	os.Exit(code)
}

// exitDamaged is the exit status of a node whose data dir is damaged
// (EX_DATAERR): a restart cannot help, moving the data dir aside can.
const exitDamaged = 65

// exitInterrupted is the exit status after a second SIGINT or SIGTERM
// ended a command that was still stopping (128 + SIGINT, as shells report
// a process killed by Ctrl-C).
const exitInterrupted = 130

// secondSignalExits, once set, makes a second SIGINT or SIGTERM end the
// process at once with exitInterrupted (register sets it: its stop is an
// unregistration, which a user may not want to wait for).
var secondSignalExits atomic.Bool

// errUsage marks errors that are the caller's: exit status 2.
var errUsage = errors.New("usage error")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"server", "run a discoverd node", runServer},
		{"dev", "run a local cluster with temporary data, for development", runDev},
		{"register", "register an instance and keep it alive until interrupted", runRegister},
		{"unregister", "remove an instance", runUnregister},
		{"services", "list a service's instances, or every service", runServices},
		{"watch", "follow a service's changes", runWatch},
		{"leader", "show a service's leader and its fencing index", runLeader},
		{"meta", "read or change a service's metadata (compare-and-set)", runMeta},
		{"status", "show the cluster's nodes and leader", runStatus},
		{"members", "list the cluster's members, or add, remove, promote or demote one", runMembers},
		{"recover", "rewrite a stopped node's members after the cluster lost its quorum for good", runRecover},
		{"snapshot", "back the cluster's state up to a file, inspect one, or restore one", runSnapshot},
		{"acl", "bootstrap ACLs, manage tokens and their rules, or show which token is used", runACL},
		{"tls", "make a cluster's CA and its servers' and clients' certificates", runTLSHelp},
		{"version", "print discoverd's version", runVersion},
	}
}

// helpText is what a command's -h says before its usage: one line on what
// it does, and an example.
type helpText struct{ what, example string }

// helps holds the helpText of every command and subcommand, by the name
// its flag set has (newFlagSet).
var helps = map[string]helpText{
	"server": {"Runs one discoverd node: a member of a Raft cluster, or with -backend etcd a front end over etcd.",
		"discoverd server -id n1 -addr 127.0.0.1:7001 -data-dir ./d1 -peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003"},
	"dev": {"Runs a local cluster of 1, 3 or 5 nodes in one process, with temporary data, for development.",
		"discoverd dev -nodes 3 -addr 127.0.0.1:1111"},
	"register": {"Registers an instance of a service and heartbeats it until interrupted, then unregisters it.",
		"discoverd register -ttl 10s web 10.0.0.5:8080 zone=a"},
	"unregister": {"Removes an instance of a service.",
		"discoverd unregister web 10.0.0.5:8080"},
	"services": {"Lists the instances of a service, or without a NAME every service with its number of instances.",
		"discoverd services web role=primary"},
	"watch": {"Prints a service's instances, then every change to them until interrupted.",
		"discoverd watch -json web"},
	"leader": {"Prints a service's leader (its oldest registration) with its fencing index, or with -watch every change of leader until interrupted.",
		"discoverd leader -watch db"},
	"meta": {"Reads or changes a service's metadata, one blob of up to 64 KiB changed only by compare-and-set on its index.",
		"discoverd meta get db -json"},
	"meta get": {"Prints a service's metadata exactly as stored (its index on standard error), or with -json both.",
		"discoverd meta get db > db.conf"},
	"meta set": {"Sets a service's metadata from -file or standard input if it is at -index (0: only if it has none), and prints its new index.",
		"discoverd meta set db -index 42 -file db.conf"},
	"meta delete": {"Deletes a service's metadata (with -index, only if it is at that index).",
		"discoverd meta delete db -index 43"},
	"status": {"Shows the cluster's leader and every node's state, indices, readiness and last contact with the leader.",
		"discoverd status -servers 127.0.0.1:1111"},
	"members": {"Lists the cluster's members (from the leader): voter or non-voter, state, last contact with the leader, applied index and lag.",
		"discoverd members -json"},
	"members add": {"Adds a node: as a non-voter, then promoted to voter once it has caught up (-nonvoter: it stays a read replica). The node must run with the same id and address.",
		"discoverd members add -id n4 -addr 10.0.0.4:1111"},
	"members remove": {"Removes a node from the cluster; refused when the voters left would not hold a quorum of healthy ones, unless -force.",
		"discoverd members remove -id n2"},
	"members promote": {"Makes a non-voter a voter, once it has caught up with the leader.",
		"discoverd members promote -id n4"},
	"members demote": {"Makes a voter a non-voter; refused when the voters left would not hold a quorum of healthy ones, unless -force.",
		"discoverd members demote -id n3"},
	"recover": {"Offline, on a stopped node: rewrites its Raft configuration to -peers after a majority of voters was lost for good. Run it on every survivor with the same -peers, then start them.",
		"discoverd recover -id n1 -data-dir ./d1 -peers n1=10.0.0.1:1111"},
	"snapshot": {"Backs the cluster's state up to a file (taken on the leader), checks and describes such a file, or restores one into a running cluster.",
		"discoverd snapshot save backup.snap"},
	"snapshot save": {"Writes a backup of the cluster's whole state, taken on the leader, to FILE (written aside and renamed when complete).",
		"discoverd snapshot save /var/backups/discoverd-$(date +%F).snap"},
	"snapshot inspect": {"Checks a backup file (header, checksum, every value of the state) and prints its header and what it holds.",
		"discoverd snapshot inspect -json backup.snap"},
	"snapshot restore": {"Replaces the whole state of the cluster, on every node, with a backup file's, through the leader. Watchers resync.",
		"discoverd snapshot restore backup.snap"},
	"acl": {"Manages access control (docs/acl.md): bootstraps it once, creates, lists, shows, updates and deletes tokens, and shows which token a command presents.",
		"discoverd acl token create -description \"web deploys\" -rule 'service \"web*\" write'"},
	"acl bootstrap": {"Creates the management token (every right) once per cluster with -acl, and prints its secret: the only time it is shown.",
		"discoverd acl bootstrap"},
	"acl token": {"Creates, lists, shows, updates and deletes tokens; each needs a token with acl write (acl read to list and show).",
		"discoverd acl token list"},
	"acl token create": {"Creates a token with the rules given by -rule (none: it may do nothing) and prints its secret, once.",
		"discoverd acl token create -description \"web deploys\" -rule 'service \"web*\" write' -expires 720h"},
	"acl token list": {"Lists every token: accessor id, description, rules and expiry (never a secret).",
		"discoverd acl token list -json"},
	"acl token show": {"Shows one token: accessor id, description, rules, expiry and indices.",
		"discoverd acl token show -id anonymous"},
	"acl token update": {"Changes a token's description (-description) or replaces its rules (-rule, or -clear-rules); what is not given stays. -id anonymous sets what callers without a token may do.",
		"discoverd acl token update -id anonymous -rule 'service \"public-*\" read'"},
	"acl token delete": {"Deletes a token: requests presenting it are denied from then on, and its watches end.",
		"discoverd acl token delete -id 2b6f0d5e-8c1a-4f0e-9d43-6a1c2b7e9f10"},
	"acl whoami": {"Describes the token this command presents (-token, else $DISCOVERD_TOKEN), or the anonymous token without one.",
		"discoverd acl whoami -json"},
	"tls": {"Makes a cluster's CA, and certificates for its servers and clients.",
		"discoverd tls ca create -out pki"},
	"tls ca create": {"Makes a cluster's CA: ca.pem (for every node and client) and ca-key.pem (keep it off the nodes).",
		"discoverd tls ca create -out pki"},
	"tls cert create": {"Makes a server's or a client's certificate, signed by the cluster's CA.",
		"discoverd tls cert create -server -node n1 -addr 127.0.0.1 -ca pki/ca.pem -ca-key pki/ca-key.pem -out pki"},
	"version": {"Prints discoverd's version, the Go version it was built with, and its platform.",
		"discoverd version"},
}

// writeHelp writes a command's help text, a blank line after it.
func writeHelp(w io.Writer, name string) {
	if h, ok := helps[name]; ok {
		fmt.Fprintf(w, "%s\n\nExample: %s\n\n", h.what, h.example)
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: discoverd <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'discoverd <command> -h' for what a command does and its flags; 'discoverd -version' for the version.\n"+
		"Client commands use -servers, else $DISCOVERD (comma-separated), else 127.0.0.1:1111;\n"+
		"with ACLs on, -token, else $DISCOVERD_TOKEN.\n")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "discoverd %s: %v\n", name, err)
			return 2
		case errors.Is(err, raftnode.ErrDataDirDamaged):
			fmt.Fprintf(stderr, "discoverd %s: %v\n", name, err)
			return exitDamaged
		default:
			fmt.Fprintf(stderr, "discoverd %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "discoverd: unknown command %q\n\n", name)
	usage(stderr)
	return 2
}

// runTLSHelp is runTLS, with the command's help text before the usage
// runTLS prints for -h.
func runTLSHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelpFlag(args[0]) {
		writeHelp(stdout, "tls")
	}
	return runTLS(ctx, args, stdout, stderr)
}

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// subcommand is one of a command's subcommands (meta get, snapshot save).
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// runSubcommand runs the subcommand args[0] names; -h prints the command's
// help, its usage line use and each subcommand's summary.
func runSubcommand(ctx context.Context, command, use string, subs []subcommand, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelpFlag(args[0]) {
		if len(args) == 0 {
			return usageErr("usage: %s", use)
		}
		writeHelp(stdout, command)
		fmt.Fprintf(stdout, "Usage: %s\n\n", use)
		names := make([]string, len(subs))
		width := 8
		for _, sc := range subs {
			width = max(width, len(sc.name))
		}
		for i, sc := range subs {
			fmt.Fprintf(stdout, "  %-*s %s\n", width, sc.name, sc.summary)
			names[i] = sc.name
		}
		fmt.Fprintf(stdout, "\nRun 'discoverd %s %s -h' (%s) for the flags.\n", command, names[0], strings.Join(names[1:], ", "))
		return nil
	}
	var names []string
	for _, sc := range subs {
		if sc.name == args[0] {
			return sc.run(ctx, args[1:], stdout, stderr)
		}
		names = append(names, sc.name)
	}
	return usageErr("%s %q: want %s or %s (%s)", command, args[0], strings.Join(names[:len(names)-1], ", "), names[len(names)-1], use)
}

// newFlagSet returns a flag set whose errors become usage errors and whose
// usage starts with the command's help text (helps).
func newFlagSet(name, argsUsage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("discoverd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		writeHelp(stderr, name)
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags (before or after the arguments; -- ends them):\n",
			strings.TrimSpace("discoverd "+name+" [flags] "+argsUsage))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, wherever they are among the arguments (reorderArgs);
// a bad flag is a usage error (already printed by flag).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(reorderArgs(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// reorderArgs moves the flags among args before the positional arguments,
// keeping the order of each, so that flags may follow the arguments they
// modify (`services web -json`, `register web 10.0.0.5:80 -ttl 5s`). A flag
// is an argument starting with - or -- that names a flag of fs, or -h or
// -help; it takes the next argument along as its value when it needs one
// (not a boolean flag, and not written -name=value). An argument starting
// with - that names no flag is moved too, so that fs.Parse reports it —
// unless it holds "=": that is an attribute (key=value, and "-x=1" is a
// valid one). "--" ends the flags: every argument after it is positional,
// and so is a lone "-". Positional arguments come back after a "--", so
// fs.Parse takes none of them for a flag (and not at all when the last
// argument is a flag missing its value: fs.Parse then refuses it).
func reorderArgs(fs *flag.FlagSet, args []string) []string {
	var flags, positional []string
	dangling := false // the last argument is a flag that needs a value
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil && (hasValue || name == "") && name != "h" && name != "help" {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		if f != nil && !hasValue && !isBoolFlag(f) {
			if i+1 == len(args) {
				dangling = true
				break
			}
			i++
			flags = append(flags, args[i])
		}
	}
	if len(positional) == 0 || dangling {
		return flags // with a dangling flag last, for fs.Parse to refuse
	}
	return append(append(flags, "--"), positional...)
}

// isBoolFlag reports whether f is a boolean flag (one that takes no value
// unless written -name=value).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// version is discoverd's version, set when building a release with
// -ldflags "-X main.version=v1.2.3". "dev" (unset) makes versionString ask
// the build information instead.
var version = "dev"

// versionString is what `discoverd version` prints:
// "discoverd <version> (<go version>, <os>/<arch>)".
func versionString() string {
	v := version
	if v == "dev" || v == "" {
		v = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok {
			v = versionFromBuildInfo(bi)
		}
	}
	return fmt.Sprintf("discoverd %s (%s, %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// versionFromBuildInfo is the version of a build without -X main.version:
// the main module's version when the go command stamped one (a module
// version, or a pseudo-version from the repository the build was made in),
// else "dev-" and the VCS revision's first 12 digits ("-dirty" when the
// work tree had changes), else "dev".
func versionFromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "-dirty"
	}
	return "dev-" + rev
}

// runVersion runs `discoverd version`.
func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	_, err := fmt.Fprintln(stdout, versionString())
	return err
}
