// Command discoverd runs a discoverd node (server), a local cluster for
// development (dev), and the client commands that talk to a cluster
// (register, unregister, services, watch, status).
//
// Exit status: 0 on success, 1 on failure, 2 on a usage error, 65 when a
// node's data dir is damaged, 70 when a node's Raft log cannot be written
// durably. Errors go to standard error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/discoverd/discoverd/raftnode"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitDamaged is the exit status of a node whose data dir is damaged
// (EX_DATAERR): a restart cannot help, moving the data dir aside can.
const exitDamaged = 65

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
		{"services", "list a service's instances", runServices},
		{"watch", "follow a service's changes", runWatch},
		{"status", "show the cluster's nodes and leader", runStatus},
		{"tls", "make a cluster's CA and its servers' and clients' certificates", runTLS},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: discoverd <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'discoverd <command> -h' for a command's flags.\n"+
		"Client commands use -servers, else $DISCOVERD (comma-separated), else 127.0.0.1:1111.\n")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	if name == "-h" || name == "-help" || name == "--help" || name == "help" {
		usage(stdout)
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

// newFlagSet returns a flag set whose errors become usage errors.
func newFlagSet(name, argsUsage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("discoverd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: discoverd %s [flags] %s\n\nFlags:\n", name, argsUsage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; a bad flag is a usage error (already printed by flag).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}
