package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/discoverd/discoverd/internal/tlsutil"
)

// serverTLSFlags are the TLS flags of `discoverd server`.
type serverTLSFlags struct {
	ca, cert, key string
	verifyClients bool
	cluster       string
	insecure      bool
	reload        time.Duration
}

func (t *serverTLSFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.ca, "tls-ca", "", "PEM bundle of the CA certificates of the cluster (with -tls-cert and -tls-key: the port is TLS, Raft mutual TLS)")
	fs.StringVar(&t.cert, "tls-cert", "", "this node's server certificate (PEM), made with `discoverd tls cert create -server`")
	fs.StringVar(&t.key, "tls-key", "", "the key of -tls-cert (PEM)")
	fs.BoolVar(&t.verifyClients, "tls-verify-clients", true, "with TLS: require a client certificate signed by the CA on client connections (false: verify one if given)")
	fs.StringVar(&t.cluster, "cluster-name", tlsutil.DefaultCluster, "the cluster's name in its certificates (server.<name>.discoverd)")
	fs.BoolVar(&t.insecure, "insecure", false, "allow listening beyond loopback without TLS: anyone who reaches the port can then take over the cluster")
	fs.DurationVar(&t.reload, "tls-reload", 5*time.Second, "how often to check the TLS files for a change (a changed file is reloaded; SIGHUP reloads at once)")
}

func (t *serverTLSFlags) any() bool { return t.ca != "" || t.cert != "" || t.key != "" }

// store loads the node's TLS files; nil without TLS. addr is the listen
// address: without TLS it must be on loopback unless -insecure.
func (t *serverTLSFlags) store(addr string, log *slog.Logger) (*tlsutil.Store, error) {
	if !t.any() {
		if !t.insecure && !loopback(addr) {
			return nil, usageErr("-addr %s listens beyond loopback without TLS: give -tls-ca, -tls-cert and -tls-key "+
				"(make them with `discoverd tls ca create` and `discoverd tls cert create -server -node ID -addr HOST`), "+
				"or pass -insecure to accept that anyone who reaches the port can take over the cluster", addr)
		}
		if t.insecure {
			log.Warn("running without TLS (-insecure): anyone who reaches the port can take over the cluster")
		}
		return nil, nil
	}
	if t.insecure {
		return nil, usageErr("-insecure and -tls-* exclude each other")
	}
	if t.ca == "" || t.cert == "" || t.key == "" {
		return nil, usageErr("TLS needs -tls-ca, -tls-cert and -tls-key together")
	}
	if t.reload < 100*time.Millisecond || t.reload > time.Hour {
		return nil, usageErr("-tls-reload %v: want 100ms to 1h", t.reload)
	}
	return tlsutil.Load(tlsutil.Files{CA: t.ca, Cert: t.cert, Key: t.key},
		tlsutil.Options{Cluster: t.cluster, VerifyClients: t.verifyClients, Logger: log.With("component", "tls")})
}

// loopback reports whether a listen address (host:port) is on a loopback
// interface only: a loopback IP or "localhost". An empty host (all
// interfaces) is not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// runTLS runs `discoverd tls ca create` and `discoverd tls cert create`.
func runTLS(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "discoverd tls ca create [flags] | discoverd tls cert create (-server -node ID -addr HOST,... | -client -name NAME) [flags]"
	if len(args) < 2 || args[1] != "create" || (args[0] != "ca" && args[0] != "cert") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintf(stdout, "Usage: %s\n", use)
			return nil
		}
		return usageErr("usage: %s", use)
	}
	if args[0] == "ca" {
		return runTLSCA(args[2:], stdout, stderr)
	}
	return runTLSCert(args[2:], stdout, stderr)
}

func runTLSCA(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tls ca create", "", stderr)
	out := fs.String("out", ".", "directory to write ca.pem and ca-key.pem to")
	days := fs.Int("days", tlsutil.DefaultCADays, "days the CA is valid")
	cluster := fs.String("cluster-name", tlsutil.DefaultCluster, "the cluster's name")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *days < 1 || *days > 100*365 {
		return usageErr("-days %d: want 1 to %d", *days, 100*365)
	}
	if err := validName(*cluster); err != nil {
		return usageErr("-cluster-name: %v", err)
	}
	ca, err := tlsutil.NewCA(*cluster, *days)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(*out, "ca.pem"), filepath.Join(*out, "ca-key.pem")
	if err := writePair(certPath, keyPath, ca.CertPEM, ca.KeyPEM); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (the CA certificate: give it to every node and client) and %s (its key: keep it off the nodes)\n", certPath, keyPath)
	fmt.Fprintf(stdout, "valid until %s\n", ca.Cert.NotAfter.UTC().Format("2006-01-02"))
	return nil
}

func runTLSCert(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tls cert create", "", stderr)
	srv := fs.Bool("server", false, "a server certificate (for `discoverd server -tls-cert`)")
	cli := fs.Bool("client", false, "a client certificate (for the client commands' -cert)")
	node := fs.String("node", "", "with -server: the node id")
	addrs := fs.String("addr", "", "with -server: the IPs and DNS names clients reach the node at, comma-separated (ports are ignored)")
	name := fs.String("name", "", "with -client: the client's name")
	caFile := fs.String("ca", "ca.pem", "the CA certificate")
	caKey := fs.String("ca-key", "ca-key.pem", "the CA key")
	out := fs.String("out", ".", "directory to write the certificate and key to")
	days := fs.Int("days", tlsutil.DefaultCertDays, "days the certificate is valid (at most until the CA expires)")
	cluster := fs.String("cluster-name", tlsutil.DefaultCluster, "the cluster's name (as the nodes' -cluster-name)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *srv == *cli {
		return usageErr("give one of -server and -client")
	}
	if *days < 1 || *days > 100*365 {
		return usageErr("-days %d: want 1 to %d", *days, 100*365)
	}
	if err := validName(*cluster); err != nil {
		return usageErr("-cluster-name: %v", err)
	}
	req := tlsutil.CertRequest{Server: *srv, Cluster: *cluster, Days: *days}
	var base string
	if *srv {
		if *name != "" {
			return usageErr("-name is for -client; a server certificate takes -node")
		}
		if err := validName(*node); err != nil {
			return usageErr("-node: %v", err)
		}
		hosts, err := parseHosts(*addrs)
		if err != nil {
			return usageErr("-addr: %v", err)
		}
		req.Name, req.Hosts, base = *node, hosts, "server-"+*node
	} else {
		if *node != "" || *addrs != "" {
			return usageErr("-node and -addr are for -server; a client certificate takes -name")
		}
		if err := validName(*name); err != nil {
			return usageErr("-name: %v", err)
		}
		req.Name, base = *name, "client-"+*name
	}
	ca, err := tlsutil.LoadCA(*caFile, *caKey)
	if err != nil {
		return fmt.Errorf("%v (make one with `discoverd tls ca create`)", err)
	}
	pair, err := ca.Issue(req)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(*out, base+".pem"), filepath.Join(*out, base+"-key.pem")
	if err := writePair(certPath, keyPath, pair.CertPEM, pair.KeyPEM); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", certPath, keyPath)
	return nil
}

// writePair writes a certificate and its key (0600, never over a file that
// exists); if the key cannot be written the certificate is removed again.
func writePair(certPath, keyPath string, certPEM, keyPEM []byte) error {
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists: not overwriting it (move it away first)", p)
		}
	}
	if err := tlsutil.WriteNew(certPath, certPEM); err != nil {
		return err
	}
	if err := tlsutil.WriteNew(keyPath, keyPEM); err != nil {
		_ = os.Remove(certPath)
		return err
	}
	return nil
}

// validName checks a node id, client name or cluster name: what may stand
// in a DNS label.
func validName(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%q: want 1 to 63 letters, digits and '-'", s)
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1) {
			return fmt.Errorf("%q: want 1 to 63 letters, digits and '-' (not first or last)", s)
		}
	}
	return nil
}

// parseHosts splits "10.0.0.7,node1.example.com:1111" into hosts.
func parseHosts(s string) ([]string, error) {
	var out []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		out = append(out, strings.Trim(h, "[]"))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("name at least one IP or DNS name clients reach the node at")
	}
	return out, nil
}
