// Package dnsserver serves discoverd's registrations as DNS (-dns-addr):
// A, AAAA and SRV records of a service's instances, over UDP and TCP, read
// from the node's local state through backend.DiscoveryBackend, like the
// RPC server beside it. It never goes through the native protocol and
// writes nothing. The zone's names, answers and limits are described in
// docs/dns.md; names.go holds the naming rule, handler.go the answers.
//
// DNS has no TLS: the listener is plaintext whatever the node's port is,
// and cmd/discoverd refuses it beyond loopback without -insecure (which a
// node with TLS cannot take; docs/SECURITY.md).
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/connlimit"
)

// maxTCPQueries bounds the queries on one TCP connection; then it is closed
// (the client redials), so that no connection holds its place forever.
const maxTCPQueries = 256

// Server is a running DNS listener.
type Server struct {
	udp, tcp *dns.Server
	ln       *connlimit.Listener
	udpAddr  net.Addr
	wg       sync.WaitGroup
}

// Start serves cfg.Addr (or cfg's PacketConn and Listener) from b.
func Start(cfg Config, b backend.DiscoveryBackend, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	pc, ln := cfg.PacketConn, cfg.Listener
	if pc == nil {
		var err error
		if pc, ln, err = Listen(cfg.Addr); err != nil {
			return nil, err
		}
	}
	h := &handler{cfg: cfg, b: b, gate: readGateOf(b), log: log}
	s := &Server{ln: connlimit.New(ln, cfg.MaxConns), udpAddr: pc.LocalAddr()}
	idle := func() time.Duration { return cfg.IdleTimeout }
	s.udp = &dns.Server{PacketConn: pc, Handler: h, UDPSize: dns.MaxMsgSize, ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout}
	s.tcp = &dns.Server{Listener: s.ln, Handler: h, ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout,
		IdleTimeout: idle, MaxTCPQueries: maxTCPQueries}
	started := make(chan struct{}, 4) // a start and an end per listener: never blocks
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				log.Debug("dns listener stopped", "err", err)
			}
			started <- struct{}{} // in case it failed before starting
		}()
	}
	<-started
	<-started
	log.Info("dns listening", "addr", s.udpAddr.String(), "domain", cfg.Domain, "ttl", cfg.TTL)
	return s, nil
}

// Listen opens the UDP socket and TCP listener of addr. With port 0 the TCP
// listener takes the port the UDP socket got; if another process holds that
// port over TCP, it tries another (a few times).
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen on %s/udp: %w", addr, err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if port != "0" || try == 9 {
			return nil, nil, fmt.Errorf("listen on %s/tcp: %w", pc.LocalAddr(), err)
		}
	}
}

// Addr is the address served (the same port over UDP and TCP).
func (s *Server) Addr() string { return s.udpAddr.String() }

// Refused counts TCP connections closed at once for being over the cap.
func (s *Server) Refused() uint64 { return s.ln.Refused() }

// Shutdown stops serving: the sockets close; queries in flight get their
// answer until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
	s.wg.Wait()
	return err
}
