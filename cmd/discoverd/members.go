package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/raftnode"
)

// The members command: the cluster's Raft configuration, read and changed
// through the leader (docs/operations.md); and recover, which rewrites a
// stopped node's configuration after a quorum was lost for good.

const membersUse = "discoverd members [-json] | discoverd members add -id ID -addr HOST:PORT [-nonvoter] | discoverd members remove|promote|demote -id ID [-force]"

func runMembers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "add", "remove", "promote", "demote":
			return runMemberChange(ctx, args[0], args[1:], stdout, stderr)
		}
		return usageErr("members %q: want add, remove, promote or demote (%s)", args[0], membersUse)
	}
	var cf clientFlags
	fs := newFlagSet("members", "", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print {"leader","commit_index","members":[{"id","addr","voter","state","applied_index","lag","last_contact_ms","ready","error"}]}`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	ms, err := cl.Members(rctx)
	if err != nil {
		return err
	}
	out := jsonMembers{Leader: ms.Leader, CommitIndex: ms.CommitIndex, Members: []jsonMember{}}
	for _, m := range ms.Members {
		out.Members = append(out.Members, jsonMember{ID: m.ID, Addr: m.Addr, Voter: m.Voter, State: m.Status.State,
			AppliedIndex: m.Status.AppliedIndex, Lag: m.Lag, LastContactMillis: m.Status.LastContactMillis,
			Ready: m.Status.Ready, Error: m.Status.Error})
	}
	if *asJSON {
		return writeJSON(stdout, out)
	}
	return writeMembers(stdout, out)
}

type jsonMembers struct {
	Leader      string       `json:"leader"`
	CommitIndex uint64       `json:"commit_index"`
	Members     []jsonMember `json:"members"`
}

type jsonMember struct {
	ID                string `json:"id"`
	Addr              string `json:"addr"`
	Voter             bool   `json:"voter"`
	State             string `json:"state"` // Leader, Follower, Candidate, or unreachable
	AppliedIndex      uint64 `json:"applied_index"`
	Lag               uint64 `json:"lag"`
	LastContactMillis int64  `json:"last_contact_ms"`
	Ready             bool   `json:"ready"`
	Error             string `json:"error,omitempty"`
}

func writeMembers(w io.Writer, ms jsonMembers) error {
	fmt.Fprintf(w, "leader: %s  commit index: %d\n", orNone(ms.Leader), ms.CommitIndex)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDR\tSUFFRAGE\tSTATE\tLAST CONTACT\tAPPLIED\tLAG\tERROR")
	for _, m := range ms.Members {
		suffrage := "voter"
		if !m.Voter {
			suffrage = "nonvoter"
		}
		if m.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t%s\n", m.ID, m.Addr, suffrage, m.State, m.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n", m.ID, m.Addr, suffrage, m.State, formatLastContact(m.LastContactMillis), m.AppliedIndex, m.Lag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func runMemberChange(ctx context.Context, op string, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("members "+op, "", stderr)
	cf.register(fs)
	id := fs.String("id", "", "the member's node id (required)")
	var addr *string
	var nonvoter, force *bool
	if op == "add" {
		addr = fs.String("addr", "", "host:port the member is reached at: its -advertise, else its -addr (required)")
		nonvoter = fs.Bool("nonvoter", false, "add it as a non-voter (a read replica) and leave it so; otherwise it is promoted to voter once caught up")
	} else {
		force = fs.Bool("force", false, "skip the check that the voters left hold a quorum of healthy ones")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *id == "" {
		return usageErr("members %s needs -id", op)
	}
	if err := raftnode.ValidateID(*id); err != nil {
		return usageErr("-id: %v", err)
	}
	ch := client.MemberChange{Op: op, ID: *id}
	if op == "add" {
		if *addr == "" {
			return usageErr("members add needs -addr host:port")
		}
		ch.Addr, ch.NonVoter = *addr, *nonvoter
	} else {
		ch.Force = *force
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	changed, err := cl.ChangeMember(rctx, ch)
	if err != nil {
		return err
	}
	if changed {
		fmt.Fprintf(stdout, "%s %s: done\n", op, *id)
	} else {
		fmt.Fprintf(stdout, "%s %s: nothing to do (the cluster is already so)\n", op, *id)
	}
	return nil
}

// recoverWarning is printed before recover changes anything.
const recoverWarning = `WARNING: discoverd recover rewrites this node's Raft configuration.
Use it only when the cluster lost its quorum for good (a majority of voters
will never come back). Every surviving node must be stopped and recovered
with the same -peers; entries only the lost nodes held are gone. Started
again, the survivors elect a leader among themselves; add new nodes with
-join afterwards.
`

func runRecover(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("recover", "", stderr)
	id := fs.String("id", "", "this node's id (required; the one its data dir belongs to)")
	dataDir := fs.String("data-dir", "", "the stopped node's data dir (required)")
	peers := fs.String("peers", "", "the surviving voters id=host:port,... — identical on every survivor, this node included (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *id == "" || *dataDir == "" || *peers == "" {
		return usageErr("recover needs -id, -data-dir and -peers")
	}
	ps, err := raftnode.ParsePeers(*peers)
	if err != nil {
		return usageErr("-peers: %v", err)
	}
	fmt.Fprint(stderr, recoverWarning)
	log, err := logging.New(stderr, "text", slog.LevelWarn)
	if err != nil {
		return err
	}
	cfg := raftnode.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.Logger = *id, *dataDir, log
	for _, p := range ps {
		if p.ID == *id {
			cfg.Addr = p.Addr
		}
	}
	if cfg.Addr == "" {
		return usageErr("-peers does not name this node (%q): list every surviving voter, this one included", *id)
	}
	if err := raftnode.Recover(cfg, fsm.New(fsm.Config{}), ps); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recovered %s: its configuration is now %d voter(s): %s\nStart every survivor; they elect a leader among themselves.\n", *id, len(ps), *peers)
	return nil
}
