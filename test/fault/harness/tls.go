package harness

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"

	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/tlsutil"
)

// clusterTLS is a run's CA and certificates.
type clusterTLS struct {
	dir    string
	client *tls.Config
}

// makeTLS makes a CA, one server certificate per node (for every host the
// node is reached at) and a client certificate into dir.
func makeTLS(dir string, addrs []Addrs) (*clusterTLS, error) {
	ca, err := tlsutil.NewCA(tlsutil.DefaultCluster, 2)
	if err != nil {
		return nil, err
	}
	if err := tlsutil.WriteNew(filepath.Join(dir, "ca.pem"), ca.CertPEM); err != nil {
		return nil, err
	}
	for i, a := range addrs {
		var hosts []string
		for _, hp := range []string{a.Listen, a.Advertise, a.Client} {
			if h, _, err := net.SplitHostPort(hp); err == nil {
				hosts = append(hosts, h)
			}
		}
		p, err := ca.Issue(tlsutil.CertRequest{Server: true, Name: fmt.Sprintf("n%d", i+1), Hosts: hosts, Days: 2})
		if err != nil {
			return nil, err
		}
		base := filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		if err := tlsutil.WriteNew(base+".pem", p.CertPEM); err != nil {
			return nil, err
		}
		if err := tlsutil.WriteNew(base+"-key.pem", p.KeyPEM); err != nil {
			return nil, err
		}
	}
	p, err := ca.Issue(tlsutil.CertRequest{Name: "fault-suite", Days: 2})
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, err
	}
	pool, err := tlsutil.LoadPool(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	return &clusterTLS{dir: dir, client: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}}}, nil
}

// tlsArgs are node i's TLS flags: its certificate, or -insecure for a node
// that listens beyond loopback without TLS (network namespaces).
func (c *Cluster) tlsArgs(i int) []string {
	if c.tls == nil {
		host, _, _ := net.SplitHostPort(c.Nodes[i].Addrs.Listen)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return []string{"-insecure"}
		}
		return nil
	}
	base := filepath.Join(c.tls.dir, c.Nodes[i].ID)
	return []string{"-tls-ca", filepath.Join(c.tls.dir, "ca.pem"), "-tls-cert", base + ".pem", "-tls-key", base + "-key.pem"}
}

// ClientTLS is the TLS option for the run's clients (nil without TLS).
func (c *Cluster) ClientTLS() func(addr string) *tls.Config {
	if c.tls == nil {
		return nil
	}
	return rpcconn.ForServer(c.tls.client)
}

// ClientTLSConfig is the same TLS as one config, for the Go client, which
// verifies each server by the host it dials (nil without TLS).
func (c *Cluster) ClientTLSConfig() *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls.client.Clone()
}
