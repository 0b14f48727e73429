package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/internal/validate"
)

// clientFlags are shared by the client commands.
type clientFlags struct {
	servers       string
	timeout       time.Duration
	ca, cert, key string
	token         tokenFlag
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.servers, "servers", "", "discoverd servers host:port,... (default $DISCOVERD, else 127.0.0.1:1111)")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Second, "how long a request may take, failovers included")
	fs.StringVar(&c.ca, "ca", os.Getenv("DISCOVERD_CA"), "TLS: the cluster's CA certificate (default $DISCOVERD_CA); without it, no TLS")
	fs.StringVar(&c.cert, "cert", os.Getenv("DISCOVERD_CERT"), "TLS: this client's certificate (default $DISCOVERD_CERT), made with 'discoverd tls cert create -client'")
	fs.StringVar(&c.key, "key", os.Getenv("DISCOVERD_KEY"), "TLS: the key of -cert (default $DISCOVERD_KEY)")
	fs.Var(&c.token, "token", "the ACL `token` sent with every request, <accessor id>.<secret> (default $DISCOVERD_TOKEN; -token '' sends none: the anonymous token's rights)")
}

// tokenFlag is -token. Its default, $DISCOVERD_TOKEN, is read when the
// client is made rather than given to flag, so that -h never prints a
// secret; -token "" given explicitly overrides the variable.
type tokenFlag struct {
	value string
	set   bool
}

func (f *tokenFlag) String() string {
	if f == nil {
		return ""
	}
	return f.value
}

func (f *tokenFlag) Set(s string) error {
	f.value, f.set = strings.TrimSpace(s), true
	return nil
}

// credential is the token to send: -token if given, else $DISCOVERD_TOKEN.
// A token that is not <accessor id>.<secret> is a usage error, named by
// where it came from (never printed: it may be most of a secret).
func (f *tokenFlag) credential() (string, error) {
	cred, from := f.value, "-token"
	if !f.set {
		cred, from = strings.TrimSpace(os.Getenv("DISCOVERD_TOKEN")), "$DISCOVERD_TOKEN"
	}
	if cred == "" {
		return "", nil
	}
	if _, _, ok := acl.SplitCredential(cred); !ok {
		return "", usageErr("%s is not a token: a token is <accessor id>.<secret>, as 'discoverd acl bootstrap' and 'discoverd acl token create' print it", from)
	}
	return cred, nil
}

// client returns a client for the flags; opts adjust its configuration.
// request opens a client and a context bounded by -timeout for the
// requests of one command; done releases both.
func (c *clientFlags) request(ctx context.Context) (*client.Client, context.Context, func(), error) {
	cl, err := c.client(0)
	if err != nil {
		return nil, nil, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	return cl, rctx, func() { cancel(); _ = cl.Close() }, nil
}

func (c *clientFlags) client(ttl time.Duration, opts ...func(*client.Config)) (*client.Client, error) {
	cfg := client.Config{RequestTimeout: c.timeout, TTL: ttl}
	for _, o := range opts {
		o(&cfg)
	}
	if c.servers != "" {
		cfg.Servers = strings.Split(c.servers, ",")
	}
	if c.timeout <= 0 {
		return nil, usageErr("-timeout must be positive")
	}
	token, err := c.token.credential()
	if err != nil {
		return nil, err
	}
	cfg.Token = token
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

// unregisterOnExit bounds register's unregistration after SIGINT or
// SIGTERM: a cluster that does not answer by then lets the instance expire
// after its TTL instead.
const unregisterOnExit = 2 * time.Second

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
	reporter := &heartbeatReporter{w: stderr, every: heartbeatReportEvery, now: time.Now}
	cl, err := cf.client(*ttl, func(cfg *client.Config) { cfg.OnHeartbeat = reporter.report })
	if err != nil {
		return err
	}
	// A second interrupt, while this one unregisters, ends the process at
	// once (main; exit status 130).
	secondSignalExits.Store(true)
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	err = cl.RegisterAddr(rctx, name, addr, attrs, *ttl)
	cancel()
	if err != nil {
		_ = cl.Close()
		return err
	}
	fmt.Fprintf(stdout, "registered %s %s (ttl %v); heartbeating until interrupted\n", name, addr, *ttl)
	<-ctx.Done()
	fmt.Fprintf(stderr, "discoverd register: unregistering %s %s (waiting at most %v; interrupt again to exit at once)\n",
		name, addr, unregisterOnExit)
	return unregisterAndClose(cl, name, addr, *ttl, unregisterOnExit, stdout)
}

// unregisterAndClose unregisters what register registered and closes the
// client, giving up after within: the instance then expires after its TTL.
func unregisterAndClose(cl *client.Client, name, addr string, ttl, within time.Duration, stdout io.Writer) error {
	uctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := cl.UnregisterAddr(uctx, name, addr)
		_ = cl.Close() // nothing left to unregister: stops the heartbeats, closes the connection
		done <- err
	}()
	// The unregistration is bounded by uctx; the timer bounds the rest.
	t := time.NewTimer(within + time.Second)
	defer t.Stop()
	var err error
	select {
	case err = <-done:
	case <-t.C:
		err = fmt.Errorf("gave up after %v", within)
	}
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "unregistered %s %s\n", name, addr)
		return nil
	case errors.Is(err, client.ErrNotFound):
		fmt.Fprintf(stdout, "%s %s was no longer registered\n", name, addr)
		return nil
	}
	return fmt.Errorf("unregister on exit: %w; the instance expires once its TTL (%v) passes without a heartbeat", err, ttl)
}

// heartbeatReportEvery is the least time between two of register's lines
// about failing heartbeats.
const heartbeatReportEvery = 5 * time.Second

// heartbeatReporter tells register's user about heartbeat failures as they
// happen, rate-limited: the first failure at once, then at most one line
// every `every` with the number of failures since the last line, and one
// line when heartbeats succeed again. It is the client's OnHeartbeat hook.
type heartbeatReporter struct {
	w     io.Writer
	every time.Duration
	now   func() time.Time

	mu       sync.Mutex
	failing  bool
	since    time.Time // the first failure of the current run of failures
	total    int       // failures in the current run
	unsaid   int       // failures since the last line
	lastLine time.Time
}

// report is the client's OnHeartbeat hook.
func (r *heartbeatReporter) report(name, addr string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if err == nil {
		if r.failing {
			fmt.Fprintf(r.w, "discoverd register: heartbeats of %s %s succeed again, after %s in %v\n",
				name, addr, plural(r.total, "failure", "failures"), now.Sub(r.since).Round(100*time.Millisecond))
			r.failing, r.total, r.unsaid = false, 0, 0
		}
		return
	}
	r.total++
	if !r.failing {
		r.failing, r.since, r.lastLine = true, now, now
		if errors.Is(err, client.ErrNotFound) {
			fmt.Fprintf(r.w, "discoverd register: %s %s is no longer registered (it expired), registering it again: %v\n", name, addr, err)
			return
		}
		fmt.Fprintf(r.w, "discoverd register: heartbeat of %s %s failed, retrying: %v\n", name, addr, err)
		return
	}
	r.unsaid++
	if d := now.Sub(r.lastLine); d >= r.every {
		fmt.Fprintf(r.w, "discoverd register: heartbeats of %s %s still failing: %s in the last %v; the last: %v\n",
			name, addr, plural(r.unsaid, "failure", "failures"), d.Round(100*time.Millisecond), err)
		r.unsaid, r.lastLine = 0, now
	}
}

// plural returns "1 instance", "2 instances", "0 instances".
func plural[N int | uint64](n N, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
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
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := cl.UnregisterAddr(rctx, name, addr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unregistered %s %s\n", name, addr)
	return nil
}

// jsonInstance is the -json shape of services.
type jsonInstance struct {
	Name    string            `json:"name"`
	Addr    string            `json:"addr"`
	Attrs   map[string]string `json:"attrs"`
	Index   uint64            `json:"index"`
	Suspect bool              `json:"suspect"`
}

// jsonList is the -json shape of services NAME: the instances and the
// freshness of the answer.
type jsonList struct {
	Name          string         `json:"name"`
	Index         uint64         `json:"index"`
	KnownLeader   bool           `json:"known_leader"`
	LastContactMS int64          `json:"last_contact_ms"`
	Instances     []jsonInstance `json:"instances"`
}

// jsonServiceCount is the -json shape of services without a NAME.
type jsonServiceCount struct {
	Name      string `json:"name"`
	Instances uint64 `json:"instances"`
}

func runServices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("services", "[NAME [key=value ...]]", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print {"name","index","known_leader","last_contact_ms","instances":[{"name","addr","attrs","index","suspect"}]}; without NAME, an array of {"name","instances"}`)
	consistent := fs.Bool("consistent", false, "linearizable read, confirmed by the leader")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return listServices(ctx, &cf, *asJSON, *consistent, stdout)
	}
	name := fs.Arg(0)
	if strings.Contains(name, "=") {
		return usageErr("%q looks like an attribute: give the service's NAME first (services NAME key=value ...)", name)
	}
	if err := validate.Name(name); err != nil {
		return usageErr("%v", err)
	}
	filter, err := parseAttrs(fs.Args()[1:])
	if err != nil {
		return err
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	res, err := cl.List(rctx, name, client.ListOptions{Attrs: filter, Consistent: *consistent})
	if err != nil {
		return err
	}
	list, idx := res.Instances, res.Index
	lastContactMS := res.LastContact.Milliseconds()
	if res.LastContact < 0 {
		lastContactMS = -1
	}
	if *asJSON {
		out := jsonList{Name: name, Index: idx, KnownLeader: res.KnownLeader, LastContactMS: lastContactMS,
			Instances: make([]jsonInstance, 0, len(list))}
		for _, s := range list {
			attrs := s.Attrs
			if attrs == nil {
				attrs = map[string]string{}
			}
			out.Instances = append(out.Instances, jsonInstance{Name: s.Name, Addr: s.Addr, Attrs: attrs, Index: s.Index, Suspect: s.Suspect})
		}
		return writeJSON(stdout, out)
	}
	return writeInstances(stdout, name, idx, list, res.KnownLeader, lastContactMS)
}

// writeInstances prints services NAME as a table. A SUSPECT column (yes or
// no) appears only when some instance is suspect.
func writeInstances(stdout io.Writer, name string, idx uint64, list []*client.Service, knownLeader bool, lastContactMS int64) error {
	suspect := 0
	for _, s := range list {
		if s.Suspect {
			suspect++
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if suspect > 0 {
		fmt.Fprintf(tw, "ADDR\tINDEX\tSUSPECT\tATTRS\n")
	} else {
		fmt.Fprintf(tw, "ADDR\tINDEX\tATTRS\n")
	}
	for _, s := range list {
		if suspect > 0 {
			mark := "no"
			if s.Suspect {
				mark = "yes"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s.Addr, s.Index, mark, formatAttrs(s.Attrs))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Addr, s.Index, formatAttrs(s.Attrs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s of %s at index %d\n", plural(len(list), "instance", "instances"), name, idx)
	if suspect > 0 {
		fmt.Fprintf(stdout, "%d suspect: stopped heartbeating with many others at once; the expiry-storm guard holds their expiry back for a while\n", suspect)
	}
	if !knownLeader {
		// The node answered from its last state: say how old it may be.
		fmt.Fprintf(stdout, "the answering node knows no leader (last contact: %s): this state may be out of date\n",
			formatLastContact(lastContactMS))
	}
	return nil
}

// listServices is services without a NAME: every service that has
// instances, sorted by name, with its number of instances.
func listServices(ctx context.Context, cf *clientFlags, asJSON, consistent bool, stdout io.Writer) error {
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	list, idx, err := cl.ServiceNames(rctx, client.ServiceNamesOptions{Consistent: consistent})
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]jsonServiceCount, 0, len(list))
		for _, sc := range list {
			out = append(out, jsonServiceCount{Name: sc.Name, Instances: sc.Instances})
		}
		return writeJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tINSTANCES\n")
	for _, sc := range list {
		fmt.Fprintf(tw, "%s\t%d\n", sc.Name, sc.Instances)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s at index %d\n", plural(len(list), "service", "services"), idx)
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
	Kind    string            `json:"kind"`
	Index   uint64            `json:"index"`
	Name    string            `json:"name"`
	Addr    string            `json:"addr,omitempty"`
	Attrs   map[string]string `json:"attrs,omitempty"`
	Reason  string            `json:"reason,omitempty"`
	Suspect bool              `json:"suspect,omitempty"`
	// A meta event: the metadata's size and bytes, or deleted.
	Size       *int   `json:"size,omitempty"`
	DataBase64 []byte `json:"data_base64,omitempty"`
	Deleted    bool   `json:"deleted,omitempty"`
}

// parseName parses a command that takes one argument, a service NAME.
func parseName(fs *flag.FlagSet, args []string) (string, error) {
	if err := parse(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", usageErr("want NAME")
	}
	name := fs.Arg(0)
	if err := validate.Name(name); err != nil {
		return "", usageErr("%v", err)
	}
	return name, nil
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("watch", "NAME", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print one JSON object per event: {"kind","index","name","addr","attrs","reason","suspect"} (meta: {"kind","index","name","size","data_base64"} or "deleted")`)
	from := fs.Uint64("from", 0, "resume after this index instead of starting with the current state")
	name, err := parseName(fs, args)
	if err != nil {
		return err
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
			je.Addr, je.Attrs, je.Suspect = e.Service.Addr, e.Service.Attrs, e.Service.Suspect
		}
		if e.Kind == client.EventMeta {
			if e.Meta == nil {
				je.Deleted = true
			} else {
				n := len(e.Meta.Data)
				je.Size, je.DataBase64 = &n, e.Meta.Data
			}
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
		if je.Suspect {
			line += " [suspect]"
		}
		switch {
		case je.Deleted:
			line += " (deleted)"
		case je.Size != nil:
			line += " (" + plural(*je.Size, "byte", "bytes") + ")"
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

// jsonNode is one node in status -json. For a node that did not answer
// (state "unreachable", with error) only id, addr, state and error mean
// something.
type jsonNode struct {
	ID                string `json:"id"`
	Addr              string `json:"addr"`
	State             string `json:"state"`
	Term              uint64 `json:"term"`
	AppliedIndex      uint64 `json:"applied_index"`
	CommitIndex       uint64 `json:"commit_index"`
	Ready             bool   `json:"ready"`
	KnownLeader       bool   `json:"known_leader"`
	LastContactMillis int64  `json:"last_contact_ms"`
	Error             string `json:"error,omitempty"`
	LogStore          string `json:"log_store,omitempty"` // bolt or wal (raft backend)
	// The expiry-storm guard on this node, since it started (it holds
	// expiries only while it leads): held now, holds begun, released at
	// their max hold, ended otherwise.
	StormHeld     uint64 `json:"storm_held"`
	StormHolds    uint64 `json:"storm_holds"`
	StormReleased uint64 `json:"storm_released"`
	StormUnheld   uint64 `json:"storm_unheld"`
}

// unreachable reports whether the node did not answer status.
func (n jsonNode) unreachable() bool { return n.State == "unreachable" || n.Error != "" }

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("status", "", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print {"leader","nodes":[{"id","addr","state","term","applied_index","commit_index","ready","known_leader","last_contact_ms","error","log_store","storm_held","storm_holds","storm_released","storm_unheld"}]}`)
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
	st, err := cl.Status(rctx)
	if err != nil {
		return err
	}
	out := jsonStatus{Leader: st.Leader, Nodes: []jsonNode{}}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, jsonNode{ID: n.ID, Addr: n.Addr, State: n.State, Term: n.Term,
			AppliedIndex: n.AppliedIndex, CommitIndex: n.CommitIndex, Ready: n.Ready, KnownLeader: n.KnownLeader,
			LastContactMillis: n.LastContactMillis, Error: n.Error, LogStore: n.LogStore,
			StormHeld: n.StormHeld, StormHolds: n.StormHolds, StormReleased: n.StormReleased, StormUnheld: n.StormUnheld})
	}
	if *asJSON {
		return writeJSON(stdout, out)
	}
	return writeStatus(stdout, out)
}

// writeStatus prints status as a table. A node that did not answer shows
// "-" for what it would have said, and why it did not answer.
func writeStatus(w io.Writer, st jsonStatus) error {
	fmt.Fprintf(w, "leader: %s\n", orNone(st.Leader))
	withErrors := slices.ContainsFunc(st.Nodes, jsonNode.unreachable)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	header := "ID\tADDR\tSTATE\tTERM\tAPPLIED\tCOMMIT\tREADY\tLAST CONTACT"
	if withErrors {
		header += "\tERROR"
	}
	fmt.Fprintln(tw, header)
	for _, n := range st.Nodes {
		if n.unreachable() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t%s\n", n.ID, n.Addr, n.State, n.Error)
			continue
		}
		ready := "no"
		if n.Ready {
			ready = "yes"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s", n.ID, n.Addr, n.State, n.Term, n.AppliedIndex, n.CommitIndex,
			ready, formatLastContact(n.LastContactMillis))
		if withErrors {
			line += "\t" // an empty ERROR cell keeps the columns aligned
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(b.String()) {
		if _, err := fmt.Fprintln(w, strings.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	for _, n := range st.Nodes {
		if n.unreachable() || n.StormHolds == 0 {
			continue
		}
		if _, err := fmt.Fprintf(w, "expiry-storm guard on %s: %d held now; %s since it started: %d released at their max hold, %d ended by a heartbeat or otherwise\n",
			n.ID, n.StormHeld, plural(n.StormHolds, "hold", "holds"), n.StormReleased, n.StormUnheld); err != nil {
			return err
		}
	}
	return nil
}

// formatLastContact shows how long ago a node last heard from the leader:
// "never" (-1: not since it started), "0s" (the leader itself), "450ms",
// "1.2s", "3m4s".
func formatLastContact(ms int64) string {
	switch {
	case ms < 0:
		return "never"
	case ms == 0:
		return "0s"
	case ms < 1000:
		return fmt.Sprintf("%dms", ms)
	case ms < 60_000:
		return fmt.Sprintf("%.1fs", float64(ms)/1000)
	}
	return (time.Duration(ms) * time.Millisecond).Round(time.Second).String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// jsonLeader is the -json shape of leader: the service's leader, or with
// addr "" and fencing_index 0 none (only -watch prints that).
type jsonLeader struct {
	Name         string            `json:"name"`
	Addr         string            `json:"addr"`
	FencingIndex uint64            `json:"fencing_index"`
	Attrs        map[string]string `json:"attrs"`
}

func runLeader(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("leader", "NAME", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print {"name","addr","fencing_index","attrs"} (with -watch one per line; addr "" when there is none)`)
	watch := fs.Bool("watch", false, "print the leader, then a line on every change of leader until interrupted")
	name, err := parseName(fs, args)
	if err != nil {
		return err
	}
	cl, err := cf.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	show := func(l *client.Service) error {
		if *asJSON {
			out := jsonLeader{Name: name, Attrs: map[string]string{}}
			if l != nil {
				out.Addr, out.FencingIndex = l.Addr, l.CreateIndex
				if l.Attrs != nil {
					out.Attrs = l.Attrs
				}
			}
			b, err := json.Marshal(out)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		line := "no leader of " + name
		if l != nil {
			line = fmt.Sprintf("leader of %s: %s (fencing index %d)", name, l.Addr, l.CreateIndex)
			if len(l.Attrs) > 0 {
				line += " " + formatAttrs(l.Attrs)
			}
		}
		_, err := fmt.Fprintln(stdout, line)
		return err
	}
	if !*watch {
		rctx, cancel := context.WithTimeout(ctx, cf.timeout)
		defer cancel()
		list, _, err := cl.Instances(rctx, name, client.ListOptions{})
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return fmt.Errorf("no leader of %s", name)
		}
		return show(list[0]) // oldest registration first
	}
	sctx, cancel := context.WithTimeout(ctx, cf.timeout)
	set, err := cl.ServicesContext(sctx, name)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted before the first state: nothing to print
		}
		return err
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			set.Close() // ends the loop below
		case <-stopped:
		}
	}()
	for l := range set.Leaders() {
		if err := show(l); err != nil {
			set.Close()
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := set.Err(); err != nil {
		return err
	}
	return errors.New("stopped following the service")
}
