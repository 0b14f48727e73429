package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/dnsserver"
	"github.com/discoverd/discoverd/internal/tlsutil"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/server"
)

// devHTTPAddr is dev's default -http-addr: the first node's HTTP port; the
// others take the next ports.
const devHTTPAddr = "127.0.0.1:2111"

// devDNSAddr is dev's default -dns-addr: the first node's DNS port (UDP and
// TCP); the others take the next ports.
const devDNSAddr = "127.0.0.1:3111"

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serverFlags
	fs := newFlagSet("dev", "", stderr)
	nodes := fs.Int("nodes", 3, "number of nodes (1, 3 or 5)")
	addr := fs.String("addr", "127.0.0.1:1111", "address of the first node; the others take the next ports")
	dataDir := fs.String("data-dir", "", "keep the nodes' data under this directory (default: a temporary one, removed on exit)")
	withTLS := fs.Bool("tls", false, "TLS: make a throw-away CA and certificates (under the data dir, in tls/) and print the client flags to use")
	f.register(fs, false)
	fs.Lookup("acl").Usage = "access control: every call needs a token allowing it; dev bootstraps ACLs once the cluster has a leader and prints the management token (docs/acl.md)"
	// Development clusters log only warnings, and serve health and metrics
	// over HTTP, one port per node.
	for name, v := range map[string]string{"log-level": "warn", "http-addr": devHTTPAddr, "dns-addr": devDNSAddr} {
		_ = fs.Set(name, v)
		fs.Lookup(name).DefValue = v
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *nodes != 1 && *nodes != 3 && *nodes != 5 {
		return usageErr("-nodes %d: want 1, 3 or 5", *nodes)
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return usageErr("-addr %q is not host:port: %v", *addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port+*nodes-1 > 65535 {
		return usageErr("-addr %q: want a port from 1 to %d", *addr, 65536-*nodes)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "discoverd-dev-"); err != nil {
			return fmt.Errorf("create temporary data dir: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	if !loopback(*addr) {
		return usageErr("-addr %s: dev runs on loopback only (run `discoverd server` for anything else)", *addr)
	}
	var store func(id string) (*tlsutil.Store, error)
	var clientEnv string
	var clientFiles tlsutil.ClientFiles
	if *withTLS {
		tdir := filepath.Join(dir, "tls")
		if store, clientFiles, err = devTLS(tdir, host, *nodes, log); err != nil {
			return err
		}
		clientEnv = fmt.Sprintf(" DISCOVERD_CA=%s DISCOVERD_CERT=%s DISCOVERD_KEY=%s", clientFiles.CA, clientFiles.Cert, clientFiles.Key)
	}

	var peers []raftnode.Peer
	var addrs []string
	for i := 0; i < *nodes; i++ {
		a := net.JoinHostPort(host, strconv.Itoa(port+i))
		peers = append(peers, raftnode.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: a})
		addrs = append(addrs, a)
	}
	httpAddrs, err := devHTTPAddrs(f.http.addr, *nodes)
	if err != nil {
		return err
	}
	dnsAddrs, err := devPorts("-dns-addr", f.dns.addr, *nodes)
	if err != nil {
		return err
	}
	// Listen on every port first, so a busy port fails before anything
	// starts: the nodes' ports, then their HTTP ports.
	var lns, hlns []net.Listener
	closeAll := func(lists ...[]net.Listener) {
		for _, l := range lists {
			for _, ln := range l {
				ln.Close()
			}
		}
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			closeAll(lns)
			return fmt.Errorf("listen on %s (is another discoverd running? choose another -addr): %w", a, err)
		}
		lns = append(lns, ln)
	}
	for _, a := range httpAddrs {
		if a == "" {
			hlns = append(hlns, nil)
			continue
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			closeAll(lns, hlns)
			return fmt.Errorf("listen on %s (is another discoverd running? choose another -http-addr, or -http-addr \"\" for none): %w", a, err)
		}
		hlns = append(hlns, ln)
	}
	// And the DNS ports (dns.go), closed with the nodes' ports.
	dnsClose := make([]func(), len(dnsAddrs))
	closeDNS := func(from int) {
		for _, c := range dnsClose[from:] {
			if c != nil {
				c()
			}
		}
	}
	dnsCfgs := make([]dnsserver.Config, len(dnsAddrs))
	for i, a := range dnsAddrs {
		if dnsCfgs[i], err = f.dns.config(a, &f, store != nil); err != nil {
			closeAll(lns, hlns)
			closeDNS(0)
			return err
		}
		if dnsClose[i], err = listenDNS(&dnsCfgs[i]); err != nil {
			closeAll(lns, hlns)
			closeDNS(0)
			return fmt.Errorf("%w (is another discoverd running? choose another -dns-addr, or -dns-addr \"\" for none)", err)
		}
	}
	var srvs []*server.Server
	// The cluster stops as a whole: no node hands leadership to another
	// about to stop, nor logs the others' stop as a failure.
	stopAll := func() error {
		return shutdown(func(sctx context.Context) error {
			return server.ShutdownCluster(sctx, srvs)
		}, f.shutdownTimeout, stopGrace, log)
	}
	for i, p := range peers {
		cfg, err := f.config(log.With("node", p.ID))
		if err != nil {
			return err
		}
		cfg.Raft.ID, cfg.Raft.Addr, cfg.Raft.Peers = p.ID, p.Addr, peers
		cfg.Raft.DataDir = filepath.Join(dir, p.ID)
		cfg.Listener = lns[i]
		if store != nil {
			if cfg.TLS, err = store(p.ID); err != nil {
				closeAll(lns[i:], hlns[i:])
				closeDNS(i)
				return errors.Join(err, stopAll())
			}
		}
		if cfg.HTTP, err = f.http.config(httpAddrs[i], &f, store != nil); err != nil {
			closeAll(lns[i:], hlns[i:])
			closeDNS(i)
			return errors.Join(err, stopAll())
		}
		cfg.HTTP.Listener = hlns[i]
		cfg.DNS = dnsCfgs[i]
		srv, err := server.Start(cfg)
		if err != nil {
			closeAll(lns[i:], hlns[i:])
			closeDNS(i)
			return errors.Join(fmt.Errorf("start %s: %w", p.ID, err), stopAll())
		}
		srvs = append(srvs, srv)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	leader, err := srvs[0].WaitLeader(wctx)
	cancel()
	if err != nil {
		return errors.Join(err, stopAll())
	}
	var aclLines string
	if f.acl {
		if aclLines, err = devBootstrap(ctx, addrs, clientFiles); err != nil {
			return errors.Join(err, stopAll())
		}
	}
	fmt.Fprintf(stdout, "discoverd dev cluster: %d nodes, leader %s, data in %s\n", *nodes, leader, dir)
	// The token first: the DISCOVERD= line says the cluster is ready.
	fmt.Fprint(stdout, aclLines)
	fmt.Fprintf(stdout, "export DISCOVERD=%s%s\n", strings.Join(addrs, ","), clientEnv)
	if httpAddrs[0] != "" {
		scheme := "http"
		if store != nil {
			scheme = "https"
		}
		var urls []string
		for _, a := range httpAddrs {
			urls = append(urls, scheme+"://"+a)
		}
		fmt.Fprintf(stdout, "HTTP API (/v1/), health and metrics (/health/live, /health/ready, /metrics): %s\n", strings.Join(urls, " "))
	}
	if dnsAddrs[0] != "" {
		fmt.Fprintf(stdout, "dns (UDP and TCP, zone %s): %s\n", dnsCfgs[0].Domain, strings.Join(dnsAddrs, " "))
	}
	fmt.Fprintf(stdout, "Press Ctrl-C to stop.\n")
	<-ctx.Done()
	fmt.Fprintf(stdout, "stopping\n")
	return stopAll()
}

// devBootstrapTimeout bounds dev's ACL bootstrap.
const devBootstrapTimeout = 30 * time.Second

// devBootstrap bootstraps the dev cluster's ACLs through the client, as
// `discoverd acl bootstrap` would, and returns the lines to print: the
// management token and its export line — or, in a kept data dir whose
// cluster was bootstrapped by an earlier run, where to find the token.
func devBootstrap(ctx context.Context, addrs []string, files tlsutil.ClientFiles) (string, error) {
	tc, err := tlsutil.ClientConfig(files)
	if err != nil {
		return "", err
	}
	cl, err := client.NewWithConfig(client.Config{Servers: addrs, TLS: tc, RequestTimeout: devBootstrapTimeout})
	if err != nil {
		return "", err
	}
	defer cl.Close()
	bctx, cancel := context.WithTimeout(ctx, devBootstrapTimeout)
	defer cancel()
	res, err := cl.ACLBootstrap(bctx)
	switch {
	case errors.Is(err, client.ErrRefused):
		return "ACLs on, bootstrapped by an earlier run with this data dir: use the management token it printed (export DISCOVERD_TOKEN=...)\n", nil
	case err != nil:
		return "", fmt.Errorf("ACL bootstrap: %w", err)
	}
	return fmt.Sprintf("ACLs on: management token %s (%s); its secret is shown only now:\nexport DISCOVERD_TOKEN=%s\n",
		res.Token.AccessorID, strings.Join(res.Token.Rules, ", "), res.Secret), nil
}

// devTLS makes (or, in a kept data dir, reuses) a CA, a server certificate
// per node for host and a client certificate "dev" in dir, and returns how
// to load each node's certificates and the client's files.
func devTLS(dir, host string, nodes int, log *slog.Logger) (func(id string) (*tlsutil.Store, error), tlsutil.ClientFiles, error) {
	var none tlsutil.ClientFiles
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	ca, err := tlsutil.LoadCA(caCert, caKey)
	if err != nil {
		if ca, err = tlsutil.NewCA(tlsutil.DefaultCluster, 30); err != nil {
			return nil, none, err
		}
		if err := writePair(caCert, caKey, ca.CertPEM, ca.KeyPEM); err != nil {
			return nil, none, err
		}
	}
	issue := func(base string, r tlsutil.CertRequest) error {
		cert, key := filepath.Join(dir, base+".pem"), filepath.Join(dir, base+"-key.pem")
		if _, err := os.Stat(cert); err == nil {
			return nil // made by an earlier run with this data dir
		}
		p, err := ca.Issue(r)
		if err != nil {
			return err
		}
		return writePair(cert, key, p.CertPEM, p.KeyPEM)
	}
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		if err := issue("server-"+id, tlsutil.CertRequest{Server: true, Name: id, Hosts: []string{host, "localhost"}, Days: 30}); err != nil {
			return nil, none, err
		}
	}
	if err := issue("client-dev", tlsutil.CertRequest{Name: "dev", Days: 30}); err != nil {
		return nil, none, err
	}
	load := func(id string) (*tlsutil.Store, error) {
		return tlsutil.Load(tlsutil.Files{CA: caCert, Cert: filepath.Join(dir, "server-"+id+".pem"), Key: filepath.Join(dir, "server-"+id+"-key.pem")},
			tlsutil.Options{VerifyClients: true, Logger: log.With("node", id, "component", "tls")})
	}
	return load, tlsutil.ClientFiles{CA: caCert, Cert: filepath.Join(dir, "client-dev.pem"), Key: filepath.Join(dir, "client-dev-key.pem")}, nil
}
