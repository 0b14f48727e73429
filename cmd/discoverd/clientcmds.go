package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/validate"
)

// clientFlags are shared by the client commands.
type clientFlags struct {
	servers       string
	timeout       time.Duration
	ca, cert, key string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.servers, "servers", "", "discoverd servers host:port,... (default $DISCOVERD, else 127.0.0.1:1111)")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Second, "how long a request may take, failovers included")
	fs.StringVar(&c.ca, "ca", os.Getenv("DISCOVERD_CA"), "TLS: the cluster's CA certificate (default $DISCOVERD_CA); without it, no TLS")
	fs.StringVar(&c.cert, "cert", os.Getenv("DISCOVERD_CERT"), "TLS: this client's certificate (default $DISCOVERD_CERT), made with `discoverd tls cert create -client`")
	fs.StringVar(&c.key, "key", os.Getenv("DISCOVERD_KEY"), "TLS: the key of -cert (default $DISCOVERD_KEY)")
}

func (c *clientFlags) client(ttl time.Duration) (*client.Client, error) {
	cfg := client.Config{RequestTimeout: c.timeout, TTL: ttl}
	if c.servers != "" {
		cfg.Servers = strings.Split(c.servers, ",")
	}
	if c.timeout <= 0 {
		return nil, usageErr("-timeout must be positive")
	}
	tc, err := tlsutil.ClientConfig(tlsutil.ClientFiles{CA: c.ca, Cert: c.cert, Key: c.key})
	if err != nil {
		return nil, err
	}
	cfg.TLS = tc
	cl, err := client.NewWithConfig(cfg)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	return cl, nil
}

// ttlFlag is -ttl: a duration with a unit, 1s to 24h. A bare number gets
// a hint ("-ttl 10": did you mean 10s?), and 0 is refused (it would mean
// the default, which is not what someone typing 0 meant).
type ttlFlag time.Duration

func (f *ttlFlag) String() string { return time.Duration(*f).String() }

func (f *ttlFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("%q has no unit: did you mean %ss?", s, s)
		}
		return fmt.Errorf("%q is not a duration (e.g. 10s, 2m)", s)
	}
	if err := validate.TTL(d); err != nil || d == 0 {
		return fmt.Errorf("ttl %v is out of range: allowed 1s to 24h", d)
	}
	*f = ttlFlag(d)
	return nil
}

// parseAttrs parses key=value arguments.
func parseAttrs(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	attrs := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageErr("attribute %q: want key=value", a)
		}
		if _, dup := attrs[k]; dup {
			return nil, usageErr("attribute %q given twice", k)
		}
		attrs[k] = v
	}
	if err := validate.Attrs(attrs); err != nil {
		return nil, usageErr("%v", err)
	}
	return attrs, nil
}

func runRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("register", "NAME HOST:PORT [key=value ...]", stderr)
	cf.register(fs)
	ttl := new(time.Duration)
	*ttl = client.DefaultTTL
	fs.Var((*ttlFlag)(ttl), "ttl", "time to live without a heartbeat (1s to 24h, with a unit: 10s, 2m); heartbeats go every ~ttl/3")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usageErr("want NAME HOST:PORT [key=value ...]")
	}
	name, addr := fs.Arg(0), fs.Arg(1)
	attrs, err := parseAttrs(fs.Args()[2:])
	if err != nil {
		return err
	}
	if err := validate.Registration(name, addr, attrs, *ttl); err != nil {
		return usageErr("%v", err)
	}
	cl, err := cf.client(*ttl)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	err = cl.RegisterAddr(rctx, name, addr, attrs, *ttl)
	cancel()
	if err != nil {
		_ = cl.Close()
		return err
	}
	fmt.Fprintf(stdout, "registered %s %s (ttl %v); heartbeating until interrupted\n", name, addr, *ttl)
	<-ctx.Done()
	// Close unregisters.
	if err := cl.Close(); err != nil {
		return fmt.Errorf("unregister on exit: %w", err)
	}
	fmt.Fprintf(stdout, "unregistered %s %s\n", name, addr)
	return nil
}

func runUnregister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("unregister", "NAME HOST:PORT", stderr)
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageErr("want NAME HOST:PORT")
	}
	name, addr := fs.Arg(0), fs.Arg(1)
	if err := validate.Instance(name, addr); err != nil {
		return usageErr("%v", err)
	}
	cl, err := cf.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	if err := cl.UnregisterAddr(rctx, name, addr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unregistered %s %s\n", name, addr)
	return nil
}

// jsonInstance is the -json shape of services.
type jsonInstance struct {
	Name  string            `json:"name"`
	Addr  string            `json:"addr"`
	Attrs map[string]string `json:"attrs"`
	Index uint64            `json:"index"`
}

func runServices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("services", "NAME [key=value ...]", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print a JSON array of {"name","addr","attrs","index"}`)
	consistent := fs.Bool("consistent", false, "linearizable read, confirmed by the leader")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usageErr("want NAME [key=value ...]")
	}
	name := fs.Arg(0)
	if err := validate.Name(name); err != nil {
		return usageErr("%v", err)
	}
	filter, err := parseAttrs(fs.Args()[1:])
	if err != nil {
		return err
	}
	cl, err := cf.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	list, idx, err := cl.Instances(rctx, name, client.ListOptions{Attrs: filter, Consistent: *consistent})
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]jsonInstance, 0, len(list))
		for _, s := range list {
			attrs := s.Attrs
			if attrs == nil {
				attrs = map[string]string{}
			}
			out = append(out, jsonInstance{Name: s.Name, Addr: s.Addr, Attrs: attrs, Index: s.Index})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ADDR\tINDEX\tATTRS\n")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Addr, s.Index, formatAttrs(s.Attrs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d instances of %s at index %d\n", len(list), name, idx)
	return nil
}

func formatAttrs(a map[string]string) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", k, a[k])
	}
	return b.String()
}

// jsonEvent is the -json shape of watch.
type jsonEvent struct {
	Kind   string            `json:"kind"`
	Index  uint64            `json:"index"`
	Name   string            `json:"name"`
	Addr   string            `json:"addr,omitempty"`
	Attrs  map[string]string `json:"attrs,omitempty"`
	Reason string            `json:"reason,omitempty"`
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("watch", "NAME", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print one JSON object per event: {"kind","index","name","addr","attrs"}`)
	from := fs.Uint64("from", 0, "resume after this index instead of starting with the current state")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("want NAME")
	}
	name := fs.Arg(0)
	if err := validate.Name(name); err != nil {
		return usageErr("%v", err)
	}
	cl, err := cf.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, cf.timeout)
	w, err := cl.Watch(wctx, name, *from)
	cancel()
	if err != nil {
		return err
	}
	defer w.Close()
	enc := json.NewEncoder(stdout)
	for {
		// Next fails over across servers by itself; it ends only with ctx or
		// an error no other server can fix.
		e, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		je := jsonEvent{Kind: string(e.Kind), Index: e.Index, Name: name, Reason: e.Reason}
		if e.Service != nil {
			je.Addr, je.Attrs = e.Service.Addr, e.Service.Attrs
		}
		if *asJSON {
			if err := enc.Encode(je); err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%-7s %8d %s", je.Kind, je.Index, name)
		if je.Addr != "" {
			line += " " + je.Addr
		}
		if len(je.Attrs) > 0 {
			line += " " + formatAttrs(je.Attrs)
		}
		if je.Reason != "" {
			line += " (" + je.Reason + ")"
		}
		if _, err := fmt.Fprintln(stdout, line); err != nil {
			return err
		}
	}
}

// jsonStatus is the -json shape of status.
type jsonStatus struct {
	Leader string     `json:"leader"`
	Nodes  []jsonNode `json:"nodes"`
}

type jsonNode struct {
	ID           string `json:"id"`
	Addr         string `json:"addr"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Error        string `json:"error,omitempty"`
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("status", "", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print {"leader","nodes":[{"id","addr","state","term","applied_index","commit_index"}]}`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	cl, err := cf.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	st, err := cl.Status(rctx)
	if err != nil {
		return err
	}
	out := jsonStatus{Leader: st.Leader, Nodes: []jsonNode{}}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, jsonNode{ID: n.ID, Addr: n.Addr, State: n.State, Term: n.Term,
			AppliedIndex: n.AppliedIndex, CommitIndex: n.CommitIndex, Error: n.Error})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "leader: %s\n", orNone(out.Leader))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tADDR\tSTATE\tTERM\tAPPLIED\tCOMMIT\n")
	for _, n := range out.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", n.ID, n.Addr, n.State, n.Term, n.AppliedIndex, n.CommitIndex)
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
