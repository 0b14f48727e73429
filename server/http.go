package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/discoverd/discoverd/httpapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discoverd/discoverd/internal/connlimit"
)

// The node's HTTP listener (-http-addr): the HTTP/JSON API under /v1/
// (httpapi), /health/live, /health/ready, /metrics and, with -enable-pprof, Go's profiler under /debug/pprof/.
//
// It gets the same protection as the node's port (docs/SECURITY.md): with
// TLS it serves HTTPS with the node's certificate, reloaded with it; a
// client certificate is verified when one is given, and /metrics and
// /debug/pprof/ require one unless clients need none on the port either
// (-tls-verify-clients=false), and so does /v1/, while /health/* answer without one
// (Kubernetes probes have none). What a connection can hold is bounded: a
// cap on connections open at once (over it a new one is closed at once),
// deadlines for the TLS handshake and the request header, for the whole
// request, for the response, and for an idle kept-alive connection, and a
// bound on the header's size.

// HTTPConfig configures the node's HTTP listener. Zero fields take their
// defaults.
type HTTPConfig struct {
	// Addr is the host:port to listen on; empty (and no Listener): none.
	Addr string
	// Listener, if set, is used instead of listening on Addr
	// (cmd/discoverd opens it before the node starts, so that a busy port
	// fails before anything else has started; tests).
	Listener net.Listener
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof bool
	// MaxConns bounds the connections open at once; over it a new one is
	// closed at once. Default 64.
	MaxConns int
	// HeaderTimeout bounds the TLS handshake and the request's header
	// together. Default 5 s.
	HeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default 10 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response, from the end of the
	// request's header. Default 65 s: a 60 s CPU profile fits.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection without a request for
	// this long. Default 2 min.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header. Default 8 KiB.
	MaxHeaderBytes int
	// API configures the HTTP/JSON API under /v1/ (httpapi; its
	// CORSOrigin is -http-cors-origin).
	API httpapi.Config
}

// Defaults of HTTPConfig.
const (
	DefaultHTTPMaxConns       = 64
	DefaultHTTPHeaderTimeout  = 5 * time.Second
	DefaultHTTPReadTimeout    = 10 * time.Second
	DefaultHTTPWriteTimeout   = 65 * time.Second
	DefaultHTTPIdleTimeout    = 2 * time.Minute
	DefaultHTTPMaxHeaderBytes = 8 << 10
)

func (c HTTPConfig) withDefaults() HTTPConfig {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultHTTPMaxConns
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = DefaultHTTPHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultHTTPReadTimeout
	}
	c.ReadTimeout = max(c.ReadTimeout, c.HeaderTimeout)
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultHTTPWriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultHTTPIdleTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultHTTPMaxHeaderBytes
	}
	return c
}

// httpServer is a running HTTP listener.
type httpServer struct {
	srv *http.Server
	ln  *connlimit.Listener
	log *slog.Logger
	// certRequired: /metrics and /debug/pprof/ need a verified client
	// certificate (TLS with -tls-verify-clients).
	certRequired bool
	api          *httpapi.API  // /v1/
	done         chan struct{} // closed when Serve has returned
}

// startHTTP starts the HTTP listener if the configuration asks for one. It
// runs once the node is built: every handler reads the node.
func (s *Server) startHTTP() error {
	cfg := s.cfg.HTTP.withDefaults()
	ln := cfg.Listener
	if ln == nil {
		if cfg.Addr == "" {
			return nil
		}
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listen on %s (-http-addr): %w", cfg.Addr, err)
		}
	}
	h := &httpServer{ln: connlimit.New(ln, cfg.MaxConns), log: s.log.With("component", "http"), done: make(chan struct{})}
	var serveLn net.Listener = h.ln
	scheme := "http"
	if st := s.cfg.TLS; st != nil {
		serveLn = tls.NewListener(h.ln, st.ServerConfigWith(tls.VerifyClientCertIfGiven, "http/1.1"))
		h.certRequired = st.VerifyClients()
		scheme = "https"
	}
	// The HTTP/JSON API, over the node's backend like the native port.
	apiCfg := cfg.API
	apiCfg.Logger = h.log
	h.api = httpapi.New(apiCfg, s.be)
	// A registry per server, not the global one: a process may run
	// several nodes (discoverd dev, tests).
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newCollector(s, h.ln, h.api)} {
		if err := reg.Register(c); err != nil {
			_ = ln.Close()
			return fmt.Errorf("metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"live": true})
	})
	mux.HandleFunc("GET /health/ready", s.serveReady)
	mux.Handle("GET /metrics", h.needCert(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelWarn), MaxRequestsInFlight: 4})))
	mux.Handle("/v1/", h.needCert(h.api))
	if cfg.Pprof {
		mux.Handle("/debug/pprof/", h.needCert(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", h.needCert(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", h.needCert(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", h.needCert(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", h.needCert(http.HandlerFunc(pprof.Trace)))
	}
	h.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		// Handshake failures, plaintext on the TLS port, and the like:
		// a stranger's doing, logged only at debug.
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(serveLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Warn("HTTP listener stopped", "err", err)
		}
	}()
	s.http = h
	h.log.Info("serving HTTP", "addr", scheme+"://"+ln.Addr().String(), "pprof", cfg.Pprof, "client_cert_for_metrics", h.certRequired)
	return nil
}

// stopHTTP stops the HTTP listener: at once, or (graceful) letting
// requests in flight finish within ctx.
func (s *Server) stopHTTP(ctx context.Context, graceful bool) {
	h := s.http
	if h == nil {
		return
	}
	h.api.Stop() // blocking queries and streams end now, not at the grace's end
	if !graceful || h.srv.Shutdown(ctx) != nil {
		_ = h.srv.Close()
	}
	<-h.done
}

// HTTPAddr is the address of the node's HTTP listener, "" without one.
func (s *Server) HTTPAddr() string {
	if s.http == nil {
		return ""
	}
	return s.http.ln.Addr().String()
}

// serveReady answers /health/ready: 200 when the node is ready to serve, 503
// with why not. A Raft node is ready once it has caught up with the cluster
// since it started and while it knows a leader (the read gate's rule,
// backend/raftstore/readgate.go); an etcd front end while etcd answers a
// linearizable read.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ready, why := s.readiness(r.Context())
	if !ready {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// readinessTimeout bounds an etcd front end's readiness read.
const readinessTimeout = time.Second

// readiness reports whether the node is ready to serve, and why not.
func (s *Server) readiness(ctx context.Context) (bool, string) {
	if s.etcd != nil {
		ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
		defer cancel()
		if _, err := s.etcd.ReadIndex(ctx); err != nil {
			return false, "etcd does not answer: " + err.Error()
		}
		return true, ""
	}
	return s.store.Readiness()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// needCert wraps a handler that only clients with a verified certificate of
// the cluster's CA may use, when the node requires client certificates.
func (h *httpServer) needCert(next http.Handler) http.Handler {
	if !h.certRequired {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "this path needs a client certificate signed by the cluster's CA "+
				"(make one with `discoverd tls cert create -client`); only /health/live and /health/ready answer without one",
				http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
