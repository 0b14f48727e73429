// Package tlsutil holds discoverd's TLS: the certificates of a node (loaded
// from files, reloaded on change), the configurations of its one port and of
// its connections to peers, the rule that says who is a server of the
// cluster, and the making of certificates (gen.go) for `discoverd tls`, the
// dev cluster and tests.
//
// The naming scheme. Every certificate is signed by the cluster's CA. A
// server's certificate names, as DNS SANs, server.<cluster>.discoverd (the
// role: it may speak Raft and forward to peers) and
// <node>.server.<cluster>.discoverd, plus the addresses clients dial it at
// (IP or DNS SANs). A client's certificate names client.<cluster>.discoverd
// and <name>.client.<cluster>.discoverd. A node accepts a Raft connection
// only from a verified certificate that names server.<cluster>.discoverd;
// nodes dialling each other verify that same name, whatever address they
// dial (a proxy, a load balancer); clients verify the address they dial.
package tlsutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCluster is the cluster name when none is given.
const DefaultCluster = "default"

// ServerName is the DNS SAN every server certificate of cluster carries.
func ServerName(cluster string) string { return "server." + cluster + ".discoverd" }

// ClientName is the DNS SAN every client certificate of cluster carries.
func ClientName(cluster string) string { return "client." + cluster + ".discoverd" }

// ErrNotServer is returned when a connection that only servers may open
// (Raft) presents no certificate naming a server of the cluster.
var ErrNotServer = errors.New("peer is not a server of this cluster")

// Files names a node's TLS files.
type Files struct {
	CA   string // PEM bundle of the CA certificates to trust (several during a CA rotation)
	Cert string // this node's certificate chain (PEM)
	Key  string // its private key (PEM)
}

// bundle is one consistent set of loaded files.
type bundle struct {
	cert  tls.Certificate
	leaf  *x509.Certificate
	pool  *x509.CertPool
	stamp string // the files' sizes and modification times, to notice a change
}

// Store holds a node's certificates and serves the TLS configurations made
// from them. Reload replaces them; connections already established keep
// theirs, new ones get the new ones. Safe for concurrent use.
type Store struct {
	files         Files
	cluster       string
	verifyClients bool
	log           *slog.Logger

	cur    atomic.Pointer[bundle]
	reload sync.Mutex // serializes Reload
}

// Options shape a Store.
type Options struct {
	// Cluster is the cluster name of the SAN scheme. Default DefaultCluster.
	Cluster string
	// VerifyClients requires a client certificate signed by the CA on every
	// client connection; false makes it optional (verified when given).
	// Raft connections always require a server certificate.
	VerifyClients bool
	Logger        *slog.Logger
}

// Load reads the files and checks that they belong together: the key is the
// certificate's, the certificate chains to the CA and names a server of the
// cluster. Errors name the file and what to do.
func Load(files Files, opts Options) (*Store, error) {
	if opts.Cluster == "" {
		opts.Cluster = DefaultCluster
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{files: files, cluster: opts.Cluster, verifyClients: opts.VerifyClients, log: opts.Logger}
	b, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(b)
	return s, nil
}

// Cluster is the cluster name of the store's SAN scheme.
func (s *Store) Cluster() string { return s.cluster }

func stamp(paths ...string) (string, error) {
	var b bytes.Buffer
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (s *Store) load() (*bundle, error) {
	st, err := stamp(s.files.CA, s.files.Cert, s.files.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool, err := LoadPool(s.files.CA)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s with key %s: %w", s.files.Cert, s.files.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: certificate %s: %w", s.files.Cert, err)
		}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	// A node's certificate serves its port and authenticates it to its
	// peers: it must be valid for both.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: ServerName(s.cluster),
			KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("tls: certificate %s is not a server certificate of cluster %q signed by the CA in %s (make one with `discoverd tls cert create -server`): %w",
				s.files.Cert, s.cluster, s.files.CA, err)
		}
	}
	return &bundle{cert: cert, leaf: leaf, pool: pool, stamp: st}, nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA bundle %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Reload reads the files again. On an error the store keeps what it had
// (and says so): a half-written file never takes a node's TLS away.
func (s *Store) Reload() error {
	s.reload.Lock()
	defer s.reload.Unlock()
	b, err := s.load()
	if err != nil {
		s.log.Error("tls: reload failed; keeping the certificates loaded before", "err", err)
		return err
	}
	old := s.cur.Swap(b)
	s.log.Info("tls: certificates reloaded", "cert", s.files.Cert, "serial", b.leaf.SerialNumber.String(),
		"not_after", b.leaf.NotAfter.UTC().Format(time.RFC3339), "was", old.leaf.SerialNumber.String())
	return nil
}

// Watch reloads the files whenever their size or modification time changes,
// checking every interval, until ctx ends.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := stamp(s.files.CA, s.files.Cert, s.files.Key)
		if err != nil || st == s.cur.Load().stamp {
			continue // a file briefly missing mid-rotation: look again next time
		}
		_ = s.Reload()
	}
}

// Leaf is the certificate the node presents now.
func (s *Store) Leaf() *x509.Certificate { return s.cur.Load().leaf }

// ServerConfig is the configuration of the node's port: TLS 1.3, the
// current certificate, client certificates verified against the current CA
// (required, or verified if given). Raft connections are checked further
// after their protocol byte (IsServer).
func (s *Store) ServerConfig() *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if s.verifyClients {
		auth = tls.RequireAndVerifyClientCert
	}
	return s.ServerConfigWith(auth)
}

// ServerConfigWith is ServerConfig with the given client authentication and
// ALPN protocols: the node's HTTP listener verifies a client certificate
// only if one is given (health probes have none) and decides per path
// (server/http.go).
func (s *Store) ServerConfigWith(auth tls.ClientAuthType, protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			b := s.cur.Load()
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.cert},
				ClientCAs: b.pool, ClientAuth: auth, NextProtos: protos}, nil
		},
	}
}

// VerifyClients reports whether clients must present a certificate of the
// CA (Options.VerifyClients, -tls-verify-clients).
func (s *Store) VerifyClients() bool { return s.verifyClients }

// PeerConfig returns the configuration for dialling another node (Raft,
// forwarding, status): the node's own certificate as its client
// certificate, and the peer verified as a server of the cluster whatever
// address it was dialled at. Call it per connection: it reflects reloads.
func (s *Store) PeerConfig() *tls.Config {
	b := s.cur.Load()
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.cert},
		RootCAs: b.pool, ServerName: ServerName(s.cluster)}
}

// IsServer checks that a connection's peer presented a certificate, verified
// against the CA, that names a server of cluster.
func IsServer(st tls.ConnectionState, cluster string) error {
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no verified certificate", ErrNotServer)
	}
	leaf := st.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, ServerName(cluster)) {
		return fmt.Errorf("%w: certificate %q does not name %s", ErrNotServer, leaf.Subject.CommonName, ServerName(cluster))
	}
	return nil
}

// ClientFiles names a client's TLS files (the CLI's -ca, -cert, -key).
type ClientFiles struct {
	CA, Cert, Key string
}

// ClientConfig returns the TLS configuration of a client: the servers
// verified against the CA (by the address dialled: rpcconn sets ServerName
// per connection), and the client certificate if one is given. A nil
// config and no error mean no TLS (no file given).
func ClientConfig(f ClientFiles) (*tls.Config, error) {
	if f.CA == "" && f.Cert == "" && f.Key == "" {
		return nil, nil
	}
	if f.CA == "" {
		return nil, errors.New("tls: a client certificate needs the CA too (-ca or $DISCOVERD_CA)")
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: give both the client certificate and its key (-cert and -key, or $DISCOVERD_CERT and $DISCOVERD_KEY)")
	}
	pool, err := LoadPool(f.CA)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: client certificate %s with key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
