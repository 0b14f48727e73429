package main

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/server"
)

// httpFlags are the flags of the node's HTTP listener (server/http.go):
// /health/live, /health/ready, /metrics and, with -enable-pprof, Go's
// profiler. `discoverd server` has it off unless -http-addr is given;
// `discoverd dev` turns it on, one port per node.
type httpFlags struct {
	addr     string
	pprof    bool
	maxConns int
	cors     string
}

func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "http-addr", "", "host:port to serve the HTTP API (/v1/), /health/live, /health/ready and /metrics on (HTTPS with the node's certificate under TLS); off when empty. Beyond loopback it needs TLS or -insecure, as -addr does")
	fs.BoolVar(&f.pprof, "enable-pprof", false, "also serve Go's profiler under /debug/pprof/ on -http-addr (with TLS: to clients with a certificate of the CA)")
	fs.StringVar(&f.cors, "http-cors-origin", "", "the one browser origin (scheme://host[:port], or * for any) the HTTP API under /v1/ answers cross-origin requests from; none when empty")
	fs.IntVar(&f.maxConns, "http-max-conns", server.DefaultHTTPMaxConns, "most connections open at once on -http-addr (beyond it new ones are closed at once)")
}

// config checks the flags and returns the listener's configuration for a
// node with (or without) TLS, listening at addr: the port's own deadlines
// (sf: -handshake-timeout for the TLS handshake and the request header,
// -frame-timeout for the whole request, -idle-timeout for a kept-alive
// connection) apply to it too.
func (f *httpFlags) config(addr string, sf *serverFlags, withTLS bool) (server.HTTPConfig, error) {
	if addr == "" {
		if f.cors != "" {
			return server.HTTPConfig{}, usageErr("-http-cors-origin needs -http-addr: the HTTP API is served on the HTTP listener")
		}
		if f.pprof {
			return server.HTTPConfig{}, usageErr("-enable-pprof needs -http-addr: the profiler is served on the HTTP listener")
		}
		return server.HTTPConfig{}, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return server.HTTPConfig{}, usageErr("-http-addr %q is not host:port: %v", addr, err)
	}
	if !withTLS && !sf.tls.insecure && !loopback(addr) {
		return server.HTTPConfig{}, usageErr("-http-addr %s listens beyond loopback without TLS: give -tls-ca, -tls-cert and -tls-key "+
			"(the HTTP listener then serves HTTPS with the node's certificate), or pass -insecure to accept that anyone who reaches it "+
			"reads the node's metrics (and, with -enable-pprof, profiles it)", addr)
	}
	if f.maxConns < 1 || f.maxConns > 65536 {
		return server.HTTPConfig{}, usageErr("-http-max-conns %d: want 1 to 65536", f.maxConns)
	}
	if err := checkOrigin(f.cors); err != nil {
		return server.HTTPConfig{}, err
	}
	return server.HTTPConfig{Addr: addr, Pprof: f.pprof, MaxConns: f.maxConns, API: httpapi.Config{CORSOrigin: f.cors},
		HeaderTimeout: sf.handshakeTimeout, ReadTimeout: sf.frameTimeout, IdleTimeout: sf.idleTimeout}, nil
}

// checkOrigin checks -http-cors-origin: empty, *, or one scheme://host[:port].
func checkOrigin(o string) error {
	if o == "" || o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return usageErr("-http-cors-origin %q is not an origin: give scheme://host[:port] as a browser sends it (e.g. https://ui.example.com), or * for any", o)
	}
	return nil
}

// listenHTTP opens the listener cfg names, before the node starts, so that
// a busy port stops the command before anything else has started. The
// returned function closes it (harmless once the node has).
func listenHTTP(cfg *server.HTTPConfig) (func(), error) {
	if cfg.Addr == "" || cfg.Listener != nil {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("-http-addr: %w", err)
	}
	cfg.Listener = ln
	return func() { _ = ln.Close() }, nil
}

// devHTTPAddrs returns the HTTP addresses of n dev nodes: first and the
// ports after it; none if first is empty.
func devHTTPAddrs(first string, n int) ([]string, error) {
	if first == "" {
		return make([]string, n), nil
	}
	host, portStr, err := net.SplitHostPort(first)
	if err != nil {
		return nil, usageErr("-http-addr %q is not host:port: %v", first, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port+n-1 > 65535 {
		return nil, usageErr("-http-addr %q: want a port from 1 to %d", first, 65536-n)
	}
	if !loopback(first) {
		return nil, usageErr("-http-addr %s: dev runs on loopback only", first)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
	}
	return out, nil
}
