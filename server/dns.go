package server

import (
	"context"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/dnsserver"
)

// startDNS starts the DNS listener (-dns-addr, package dnsserver) if the
// configuration asks for one, over b: the Raft store, whose read gate it
// respects, the ACL guard over it (-acl: DNS then has the anonymous
// token's rights), or the etcd store. It runs once the node is built.
func (s *Server) startDNS(b backend.DiscoveryBackend) error {
	if !s.cfg.DNS.Enabled() {
		return nil
	}
	d, err := dnsserver.Start(s.cfg.DNS, b, s.log.With("component", "dns"))
	if err != nil {
		return err
	}
	s.dns = d
	return nil
}

// stopDNS stops the DNS listener, if any: answers in flight go out until
// ctx ends.
func (s *Server) stopDNS(ctx context.Context) {
	if s.dns != nil {
		_ = s.dns.Shutdown(ctx)
	}
}

// DNS is the node's DNS listener (nil: none).
func (s *Server) DNS() *dnsserver.Server { return s.dns }
