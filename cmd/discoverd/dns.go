package main

import (
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/discoverd/discoverd/dnsserver"
)

// dnsFlags are the flags of the node's DNS listener (package dnsserver,
// docs/dns.md). `discoverd server` has it off unless -dns-addr is given;
// `discoverd dev` turns it on, one port per node.
type dnsFlags struct {
	addr     string
	domain   string
	ttl      time.Duration
	maxConns int
}

func (f *dnsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "dns-addr", "", "host:port to answer DNS queries on, over UDP and TCP (A, AAAA and SRV of the services; plaintext: DNS has no TLS); off when empty. Beyond loopback it needs -insecure (so never with TLS)")
	fs.StringVar(&f.domain, "dns-domain", dnsserver.DefaultDomain, "the DNS zone served on -dns-addr: <name>.service.<domain> and the like; other zones are refused")
	fs.DurationVar(&f.ttl, "dns-ttl", dnsserver.DefaultTTL, "TTL of the DNS records, whole seconds from 0s to 1h")
	fs.IntVar(&f.maxConns, "dns-max-conns", dnsserver.DefaultMaxConns, "most TCP connections open at once on -dns-addr (beyond it new ones are closed at once)")
}

// config checks the flags and returns the listener's configuration, at
// addr, for a node with (or without) TLS. DNS has no TLS and tells anyone
// who reaches it every instance's address, so beyond loopback it needs
// -insecure; a node with TLS files cannot take -insecure, so its DNS stays
// on loopback. The port's -frame-timeout bounds reading a query and
// writing an answer.
func (f *dnsFlags) config(addr string, sf *serverFlags, withTLS bool) (dnsserver.Config, error) {
	if f.ttl < 0 || f.ttl > dnsserver.MaxTTL || f.ttl%time.Second != 0 {
		return dnsserver.Config{}, usageErr("-dns-ttl %v: want whole seconds from 0s to %v", f.ttl, dnsserver.MaxTTL)
	}
	domain, err := dnsserver.ParseDomain(f.domain)
	if err != nil {
		return dnsserver.Config{}, usageErr("-dns-domain: %v", err)
	}
	if addr == "" {
		return dnsserver.Config{}, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return dnsserver.Config{}, usageErr("-dns-addr %q is not host:port: %v", addr, err)
	}
	if withTLS && !loopback(addr) {
		return dnsserver.Config{}, usageErr("-dns-addr %s listens beyond loopback on a node with TLS: DNS has no TLS, so anyone who reaches it "+
			"would read every instance's address, which TLS keeps to the cluster's clients; listen on loopback and forward to it from a local resolver", addr)
	}
	if !sf.tls.insecure && !loopback(addr) {
		return dnsserver.Config{}, usageErr("-dns-addr %s listens beyond loopback: DNS has no TLS, so anyone who reaches it reads every "+
			"instance's address; listen on loopback (and forward to it from a local resolver), or pass -insecure to accept that", addr)
	}
	if f.maxConns < 1 || f.maxConns > 65536 {
		return dnsserver.Config{}, usageErr("-dns-max-conns %d: want 1 to 65536", f.maxConns)
	}
	return dnsserver.Config{Addr: addr, Domain: domain, TTL: f.ttl, NoTTL: f.ttl == 0, MaxConns: f.maxConns,
		ReadTimeout: sf.frameTimeout, WriteTimeout: sf.frameTimeout}, nil
}

// listenDNS opens the sockets cfg names, before the node starts, so that a
// busy port stops the command before anything else has started. The
// returned function closes them (harmless once the node has).
func listenDNS(cfg *dnsserver.Config) (func(), error) {
	if cfg.Addr == "" || cfg.Listener != nil {
		return func() {}, nil
	}
	pc, ln, err := dnsserver.Listen(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("-dns-addr: %w", err)
	}
	cfg.PacketConn, cfg.Listener = pc, ln
	return func() { _ = pc.Close(); _ = ln.Close() }, nil
}

// devPorts returns the addresses of n dev nodes for the listener flag
// names (-dns-addr): first and the ports after it; none if first is empty.
func devPorts(flag, first string, n int) ([]string, error) {
	if first == "" {
		return make([]string, n), nil
	}
	host, portStr, err := net.SplitHostPort(first)
	if err != nil {
		return nil, usageErr("%s %q is not host:port: %v", flag, first, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port+n-1 > 65535 {
		return nil, usageErr("%s %q: want a port from 1 to %d", flag, first, 65536-n)
	}
	if !loopback(first) {
		return nil, usageErr("%s %s: dev runs on loopback only", flag, first)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
	}
	return out, nil
}
