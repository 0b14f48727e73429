package dnsserver

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Config configures the DNS listener. Zero fields take their defaults.
type Config struct {
	// Addr is the host:port to serve on, over UDP and TCP; empty (and no
	// PacketConn/Listener): none.
	Addr string
	// PacketConn and Listener, if set, are used instead of listening on
	// Addr (cmd/discoverd opens them before the node starts, so that a
	// busy port fails before anything else has started; tests). Both or
	// neither.
	PacketConn net.PacketConn
	Listener   net.Listener
	// Domain is the zone served, a fully qualified name. Default
	// "discoverd.".
	Domain string
	// TTL is the TTL of every record, whole seconds, 0 to 1 h. Default 5 s;
	// NoTTL makes it 0.
	TTL   time.Duration
	NoTTL bool
	// MaxConns bounds the TCP connections open at once; over it a new one
	// is closed at once. Default 64.
	MaxConns int
	// ReadTimeout bounds reading one query (over TCP: from the connection's
	// start or the last answer). Default 2 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one answer. Default 2 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a TCP connection without a query for this long.
	// Default 8 s (RFC 7766 suggests seconds).
	IdleTimeout time.Duration
	// QueryTimeout bounds reading the local state for one query; past it
	// the answer is SERVFAIL. Default 1 s.
	QueryTimeout time.Duration
}

// Defaults and bounds of Config.
const (
	DefaultDomain       = "discoverd."
	DefaultTTL          = 5 * time.Second
	MaxTTL              = time.Hour
	DefaultMaxConns     = 64
	DefaultReadTimeout  = 2 * time.Second
	DefaultWriteTimeout = 2 * time.Second
	DefaultIdleTimeout  = 8 * time.Second
	DefaultQueryTimeout = time.Second
)

// Enabled reports whether the configuration asks for a listener.
func (c Config) Enabled() bool { return c.Addr != "" || c.PacketConn != nil || c.Listener != nil }

// ParseDomain checks a zone name and returns it fully qualified and in
// lower case: a valid domain name other than the root.
func ParseDomain(d string) (string, error) {
	if d == "" || d == "." {
		return "", fmt.Errorf("domain %q: want a domain name such as %q (the root zone is not discoverd's to serve)", d, DefaultDomain)
	}
	d = strings.ToLower(dns.Fqdn(d))
	if _, ok := dns.IsDomainName(d); !ok || strings.Contains(d, `\`) || strings.Contains(d, "..") {
		return "", fmt.Errorf("domain %q is not a domain name: use letters, digits and '-' in dot-separated labels", d)
	}
	return d, nil
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Domain != "" {
		if _, err := ParseDomain(c.Domain); err != nil {
			return err
		}
	}
	if c.TTL < 0 || c.TTL > MaxTTL || c.TTL%time.Second != 0 {
		return fmt.Errorf("ttl %v: want whole seconds from 0s to %v", c.TTL, MaxTTL)
	}
	if (c.PacketConn == nil) != (c.Listener == nil) {
		return fmt.Errorf("dns: give both PacketConn and Listener, or neither")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	c.Domain, _ = ParseDomain(c.Domain)
	if c.TTL == 0 && !c.NoTTL {
		c.TTL = DefaultTTL
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = DefaultQueryTimeout
	}
	return c
}
