// Package httpapi is discoverd's HTTP/JSON API (/v1/...): reads, blocking
// queries, writes and Server-Sent Events watches over any
// backend.DiscoveryBackend, for every language and tool that speaks HTTP.
// It is mounted on the node's HTTP listener (server/http.go), which gives it
// TLS, connection limits and timeouts; this package adds the per-request
// rules: body size, wait bounds, CORS, the slow-consumer rule of streams,
// and the caller of each request (its Authorization: Bearer token, for the
// ACL guard; acl.go). Validation and error codes are the native protocol's
// (internal/validate, internal/codes): an error is JSON {"code","message"}
// with the native code and a fitting HTTP status. docs/http.md describes
// the API; openapi.json (also docs/openapi.json) is its OpenAPI 3.1
// document, served at /v1/openapi.json.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

//go:embed openapi.json
var openAPI []byte

// Config tunes the API. Zero fields take their defaults.
type Config struct {
	// CORSOrigin, if set, is the one origin browsers may call the API
	// from ("*" for any); none by default.
	CORSOrigin string
	// MaxBody bounds a request's body. Default 1 MiB (a full batch
	// heartbeat fits).
	MaxBody int64
	// RequestTimeout bounds a call that does not wait by design. Default 10 s.
	RequestTimeout time.Duration
	// StreamWriteTimeout bounds writing one batch of events to a stream; a
	// reader that does not take them in time is cut off. Default 10 s.
	StreamWriteTimeout time.Duration
	// StreamKeepalive is how often an idle stream gets a comment line.
	// Default 15 s.
	StreamKeepalive time.Duration
	Logger          *slog.Logger
}

// Defaults and bounds.
const (
	DefaultMaxBody            = 1 << 20
	DefaultRequestTimeout     = 10 * time.Second
	DefaultStreamWriteTimeout = 10 * time.Second
	DefaultStreamKeepalive    = 15 * time.Second
	// DefaultWait is a blocking query's wait when ?wait is absent.
	DefaultWait = 5 * time.Minute
	// MaxWait is the longest ?wait accepted.
	MaxWait = 10 * time.Minute
)

func (c Config) withDefaults() Config {
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.StreamWriteTimeout <= 0 {
		c.StreamWriteTimeout = DefaultStreamWriteTimeout
	}
	if c.StreamKeepalive <= 0 {
		c.StreamKeepalive = DefaultStreamKeepalive
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// API serves /v1/ over a backend.
type API struct {
	cfg    Config
	be     backend.DiscoveryBackend
	mux    *http.ServeMux
	ctx    context.Context // cancelled by Stop: ends waits and streams
	cancel context.CancelFunc

	streams  atomic.Int64  // event streams open
	slowCuts atomic.Uint64 // event streams cut off for a slow reader
}

// Stats are the API's counts for /metrics.
type Stats struct {
	Streams          int64  // event streams open now
	SlowConsumerCuts uint64 // event streams cut off: the reader did not take events in time
}

// Stats returns the API's counts.
func (a *API) Stats() Stats {
	return Stats{Streams: a.streams.Load(), SlowConsumerCuts: a.slowCuts.Load()}
}

// Route is one method and path pattern of the API.
type Route struct {
	Method, Path string
}

// New returns the API over be.
func New(cfg Config, be backend.DiscoveryBackend) *API {
	ctx, cancel := context.WithCancel(context.Background())
	a := &API{cfg: cfg.withDefaults(), be: be, mux: http.NewServeMux(), ctx: ctx, cancel: cancel}
	for _, r := range a.routes() {
		a.mux.HandleFunc(r.Method+" "+r.Path, r.h)
	}
	a.mux.HandleFunc("/", a.noRoute)
	return a
}

// noRoute answers a request no route takes: 405 with Allow when the path
// is a route's under another method, else 404.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if _, pattern := a.mux.Handler(&http.Request{Method: m, URL: r.URL, Host: r.Host}); pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		writeErr(w, fmt.Errorf("%s %s: no such route (the API is described at /v1/openapi.json): %w", r.Method, r.URL.Path, codes.ErrNotFound))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, ErrorBody{Code: string(codes.CodeUnknownMethod),
		Message: fmt.Sprintf("%s %s: this path takes %s (the API is described at /v1/openapi.json)", r.Method, r.URL.Path, strings.Join(allow, ", "))})
}

type route struct {
	Method, Path string
	h            http.HandlerFunc
}

func (a *API) routes() []route {
	return []route{
		{"GET", "/v1/services", a.services},
		{"GET", "/v1/services/{name}", a.list},
		{"GET", "/v1/services/{name}/events", a.events},
		{"PUT", "/v1/services/{name}/instances/{addr}", a.register},
		{"DELETE", "/v1/services/{name}/instances/{addr}", a.unregister},
		{"PUT", "/v1/services/{name}/instances/{addr}/heartbeat", a.heartbeat},
		{"PUT", "/v1/heartbeat", a.heartbeatBatch},
		{"GET", "/v1/status", a.status},
		{"GET", "/v1/members", a.members},
		{"GET", "/v1/openapi.json", a.openAPI},
		{"POST", "/v1/acl/bootstrap", a.aclBootstrap},
		{"GET", "/v1/acl/tokens", a.aclList},
		{"POST", "/v1/acl/tokens", a.aclCreate},
		{"GET", "/v1/acl/tokens/{accessor}", a.aclRead},
		{"PUT", "/v1/acl/tokens/{accessor}", a.aclUpdate},
		{"DELETE", "/v1/acl/tokens/{accessor}", a.aclDelete},
		{"GET", "/v1/acl/whoami", a.aclWhoAmI},
	}
}

// Routes lists the API's routes (the OpenAPI document's check).
func (a *API) Routes() []Route {
	var out []Route
	for _, r := range a.routes() {
		out = append(out, Route{r.Method, r.Path})
	}
	return out
}

// Stop ends blocking queries and streams (the node is stopping); they
// answer shutting_down.
func (a *API) Stop() { a.cancel() }

// ServeHTTP serves the API: CORS first, then the caller (its token) into
// the request's context, then the body limit, then the route.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if o := a.cfg.CORSOrigin; o != "" && r.Header.Get("Origin") != "" {
		if o == "*" || r.Header.Get("Origin") == o {
			w.Header().Set("Access-Control-Allow-Origin", o)
			w.Header().Set("Access-Control-Expose-Headers", "X-Discoverd-Index, X-Discoverd-Known-Leader, X-Discoverd-Last-Contact")
			if o != "*" {
				w.Header().Add("Vary", "Origin")
			}
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
				w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
				w.Header().Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
	}
	r, err := a.withCaller(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBody)
	}
	a.mux.ServeHTTP(w, r)
}

// reqCtx is the request's context, also ended by Stop.
func (a *API) reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(a.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// shutdownErr turns an error caused by Stop into shutting_down.
func (a *API) shutdownErr(err error) error {
	if err != nil && a.ctx.Err() != nil {
		return fmt.Errorf("the node is stopping: %w", codes.ErrShuttingDown)
	}
	return err
}

// Status is the HTTP status for an error code.
func Status(c codes.Code) int {
	switch c {
	case codes.CodeOK:
		return http.StatusOK
	case codes.CodeInvalidArgument:
		return http.StatusBadRequest
	case codes.CodeNotFound:
		return http.StatusNotFound
	case codes.CodeConflict, codes.CodeRefused:
		return http.StatusConflict
	case codes.CodePermissionDenied:
		return http.StatusForbidden
	case codes.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case codes.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case codes.CodeNoLeader, codes.CodeNotLeader, codes.CodeStaleNode, codes.CodeNotReady, codes.CodeShuttingDown,
		codes.CodeUnavailable, codes.CodeOverloaded:
		return http.StatusServiceUnavailable
	case codes.CodeTimeout, codes.CodeUnknownOutcome:
		return http.StatusGatewayTimeout
	case codes.CodeUnknownMethod:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// RetryAfterSeconds is the Retry-After of a 503 or 429: the cluster's state
// changes within an election or so.
const RetryAfterSeconds = 1

// ErrorBody is an error's JSON.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Index, on a conflict: the index the metadata is at now.
	Index uint64 `json:"index,omitempty"`
}

func writeErr(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = fmt.Errorf("the request body is over %d bytes, the limit: %w", mbe.Limit, codes.ErrTooLarge)
	}
	c := codes.Of(err)
	st := Status(c)
	if st == http.StatusServiceUnavailable || st == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	}
	b := ErrorBody{Code: string(c), Message: err.Error()}
	b.Index, _ = codes.ConflictIndex(err)
	writeJSON(w, st, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// freshness sets the read headers.
func (a *API) freshness(w http.ResponseWriter, index uint64) {
	f := a.be.Freshness()
	h := w.Header()
	h.Set("X-Discoverd-Index", strconv.FormatUint(index, 10))
	h.Set("X-Discoverd-Known-Leader", strconv.FormatBool(f.KnownLeader))
	h.Set("X-Discoverd-Last-Contact", strconv.FormatInt(f.LastContactMillis, 10))
}

// query parses the read parameters shared by reads.
type query struct {
	consistent bool
	attrs      map[string]string
	index      uint64
	wait       time.Duration
}

func parseQuery(r *http.Request, blocking bool) (query, error) {
	var q query
	v := r.URL.Query()
	for k := range v {
		switch k {
		case "consistent":
		case "attr", "index", "wait":
			if blocking {
				continue
			}
			fallthrough
		default:
			return q, codes.Invalid("unknown query parameter %q: this path takes %s", k, map[bool]string{true: "consistent, attr, index and wait", false: "consistent"}[blocking])
		}
	}
	if s, ok := v["consistent"]; ok {
		if len(s) > 1 || (s[0] != "" && s[0] != "true" && s[0] != "false") {
			return q, codes.Invalid("consistent=%q: give consistent, consistent=true or consistent=false", strings.Join(s, ","))
		}
		q.consistent = s[0] != "false"
	}
	for _, kv := range v["attr"] {
		k, val, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			return q, codes.Invalid("attr=%q is not key:value", kv)
		}
		if q.attrs == nil {
			q.attrs = map[string]string{}
		}
		if old, dup := q.attrs[k]; dup && old != val {
			return q, codes.Invalid("attr %q is given twice with different values (%q, %q): an instance has one value per key", k, old, val)
		}
		q.attrs[k] = val
	}
	if q.attrs != nil {
		if err := validate.Attrs(q.attrs); err != nil {
			return q, err
		}
	}
	if s := v.Get("index"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return q, codes.Invalid("index=%q is not a whole number: give the X-Discoverd-Index of a previous answer", s)
		}
		q.index = n
	}
	q.wait = DefaultWait
	if s := v.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > MaxWait {
			return q, codes.Invalid("wait=%q: give a duration from 1ms to %s, e.g. 30s", s, MaxWait)
		}
		if q.index == 0 {
			return q, codes.Invalid("wait=%s without index: a blocking query waits for a change after index=N (X-Discoverd-Index of a previous answer)", s)
		}
		q.wait = d
	}
	return q, nil
}

// ServicesBody answers GET /v1/services.
type ServicesBody struct {
	Index    uint64         `json:"index"`
	Services []ServiceCount `json:"services"`
}

// ServiceCount is one service and its number of instances.
type ServiceCount struct {
	Name      string `json:"name"`
	Instances uint64 `json:"instances"`
}

func (a *API) services(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, false)
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
	defer cancel()
	idx, svcs, err := a.be.Services(ctx, backend.ServicesOptions{Consistent: q.consistent})
	if err != nil {
		writeErr(w, err)
		return
	}
	out := ServicesBody{Index: idx, Services: make([]ServiceCount, 0, len(svcs))}
	for _, s := range svcs {
		out.Services = append(out.Services, ServiceCount{Name: s.Name, Instances: s.Instances})
	}
	a.freshness(w, idx)
	writeJSON(w, http.StatusOK, out)
}

// ListBody answers GET /v1/services/{name}.
type ListBody struct {
	Index     uint64         `json:"index"`
	Instances []InstanceBody `json:"instances"`
}

// InstanceBody is one instance, with the native protocol's field names.
type InstanceBody struct {
	Name        string            `json:"name"`
	Addr        string            `json:"addr"`
	Attrs       map[string]string `json:"attrs"`
	TTLMillis   int64             `json:"ttl_ms"`
	CreateIndex uint64            `json:"create_index"`
	Index       uint64            `json:"index"`
	Suspect     bool              `json:"suspect,omitempty"`
}

func instanceBody(in wire.Instance) InstanceBody {
	if in.Attrs == nil {
		in.Attrs = map[string]string{}
	}
	return InstanceBody{Name: in.Name, Addr: in.Addr, Attrs: in.Attrs, TTLMillis: in.TTLMillis,
		CreateIndex: in.CreateIndex, Index: in.Index, Suspect: in.Suspect}
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	var q query
	name, ok := named(w, r, func() (err error) { q, err = parseQuery(r, true); return err })
	if !ok {
		return
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	var minIndex uint64
	var err error
	if q.index > 0 {
		// A blocking query may outlast the listener's write timeout.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(q.wait + a.cfg.RequestTimeout))
		if minIndex, err = a.waitChange(ctx, name, q.index, q.wait); err != nil {
			writeErr(w, a.shutdownErr(err))
			return
		}
	}
	lctx, lcancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer lcancel()
	idx, ins, err := a.be.List(lctx, name, backend.ListOptions{Attrs: q.attrs, Consistent: q.consistent, MinIndex: minIndex})
	if err != nil {
		writeErr(w, a.shutdownErr(err))
		return
	}
	out := ListBody{Index: idx, Instances: make([]InstanceBody, 0, len(ins))}
	for _, in := range ins {
		out.Instances = append(out.Instances, instanceBody(in))
	}
	a.freshness(w, idx)
	writeJSON(w, http.StatusOK, out)
}

// named returns the path's service name once it and what parse checks are
// valid; else it answers the error and returns false.
func named(w http.ResponseWriter, r *http.Request, parse func() error) (string, bool) {
	name := r.PathValue("name")
	err := parse()
	if err == nil {
		err = validate.Name(name)
	}
	if err != nil {
		writeErr(w, err)
		return "", false
	}
	return name, true
}

// waitChange waits until the service changes after index, or wait runs
// out (then it returns 0 and no error: the answer is the current state).
// It returns the index of the change, which the answer's read must reach.
// A watch resumed after index tells of every change after it (and a
// current marker once caught up, which is no change), or of lost history
// with a resync, which wakes the query too. A service the caller may not
// read (with ACLs on) is answered as a read answers it, without instances:
// the query waits as on a service that never changes, and says nothing of
// it.
func (a *API) waitChange(ctx context.Context, name string, index uint64, wait time.Duration) (uint64, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := a.be.Subscribe(wctx, name, index, 0)
	if err != nil {
		if unreadable(err) {
			<-wctx.Done()
		}
		if ctx.Err() == nil && wctx.Err() != nil {
			return 0, nil
		}
		return 0, err
	}
	defer st.Close()
	for {
		evs, err := st.Next(wctx)
		if err != nil {
			if unreadable(err) {
				// The token lost the right while waiting: the read
				// after answers as for a service it may not read.
				return 0, nil
			}
			if ctx.Err() == nil && wctx.Err() != nil {
				return 0, nil
			}
			return 0, err
		}
		var last uint64
		for _, ev := range evs {
			// A current marker only says the stream has caught up.
			if ev.Kind != wire.KindCurrent {
				last = max(last, ev.Index)
			}
		}
		if last > 0 {
			return last, nil
		}
	}
}

// RegisterBody is the body of PUT /v1/services/{name}/instances/{addr}.
type RegisterBody struct {
	Attrs map[string]string `json:"attrs"`
	// TTL is a Go duration ("10s"); empty: the default.
	TTL string `json:"ttl"`
	// RequestID makes retries of one write idempotent: the same id on each.
	RequestID string `json:"request_id"`
}

// WriteBody answers a write: the index of the committed change.
type WriteBody struct {
	Index uint64 `json:"index"`
}

// decodeBody decodes a JSON body strictly: one object, no unknown fields.
func decodeBody(r *http.Request, v any, optional bool) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		if optional {
			return nil
		}
		return codes.Invalid("the request has no body: send a JSON object")
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	if err != nil {
		return codes.Invalid("the body is not the JSON object this path takes: %v", err)
	}
	if dec.More() {
		return codes.Invalid("the body holds more than one JSON value: send one object")
	}
	return nil
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	name, addr := r.PathValue("name"), r.PathValue("addr")
	var b RegisterBody
	err := noQuery(r)
	if err == nil {
		err = decodeBody(r, &b, true)
	}
	var ttl time.Duration
	if err == nil && b.TTL != "" {
		if ttl, err = time.ParseDuration(b.TTL); err != nil || ttl < validate.MinTTL || ttl > validate.MaxTTL {
			err = codes.Invalid("ttl %q: give a duration from %s to %s, e.g. \"10s\" (or none for the default)", b.TTL, validate.MinTTL, validate.MaxTTL)
		}
	}
	if err == nil {
		err = validate.Registration(name, addr, b.Attrs, ttl)
	}
	if err == nil {
		err = validate.RequestID(b.RequestID)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
	defer cancel()
	idx, err := a.be.Register(ctx, backend.Registration{Name: name, Addr: addr, Attrs: b.Attrs, TTL: ttl, RequestID: b.RequestID})
	a.writeResult(w, idx, err)
}

func (a *API) writeResult(w http.ResponseWriter, idx uint64, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, WriteBody{Index: idx})
}

// noQuery refuses query parameters on a path that takes none.
func noQuery(r *http.Request) error {
	if r.URL.RawQuery != "" {
		return codes.Invalid("query %q: this path takes no query parameters", r.URL.RawQuery)
	}
	return nil
}

func (a *API) unregister(w http.ResponseWriter, r *http.Request) {
	name, addr := r.PathValue("name"), r.PathValue("addr")
	u := backend.Unregistration{Name: name, Addr: addr}
	err := validate.Instance(name, addr)
	for k, v := range r.URL.Query() {
		if err != nil {
			break
		}
		switch {
		case len(v) != 1:
			err = codes.Invalid("query parameter %q is given %d times: give it once", k, len(v))
		case k == "request_id":
			u.RequestID = v[0]
			err = validate.RequestID(u.RequestID)
		case k == "if_index":
			if u.IfIndex, err = strconv.ParseUint(v[0], 10, 64); err != nil {
				err = codes.Invalid("if_index=%q is not a whole number: give the index of the registration to remove", v[0])
			}
		default:
			err = codes.Invalid("unknown query parameter %q: this path takes request_id and if_index", k)
		}
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
	defer cancel()
	idx, err := a.be.Unregister(ctx, u)
	a.writeResult(w, idx, err)
}

func (a *API) heartbeat(w http.ResponseWriter, r *http.Request) {
	k := wire.InstanceKey{Name: r.PathValue("name"), Addr: r.PathValue("addr")}
	err := noQuery(r)
	if err == nil {
		err = validate.Instance(k.Name, k.Addr)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	res, err := a.beat(r, []wire.InstanceKey{k})
	if err == nil {
		err = res[0]
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) beat(r *http.Request, keys []wire.InstanceKey) ([]error, error) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
	defer cancel()
	res, err := a.be.Heartbeat(ctx, keys)
	if err == nil && len(res) != len(keys) {
		err = fmt.Errorf("heartbeat: %d results for %d instances: %w", len(res), len(keys), codes.ErrInternal)
	}
	return res, err
}

// HeartbeatBody is the body of PUT /v1/heartbeat.
type HeartbeatBody struct {
	Instances []Key `json:"instances"`
}

// Key names one instance.
type Key struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// HeartbeatResults answers PUT /v1/heartbeat: one result per instance, in
// order; an empty code is success, not_found means register again.
type HeartbeatResults struct {
	Results []Result `json:"results"`
}

// Result is one instance's outcome.
type Result struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

func (a *API) heartbeatBatch(w http.ResponseWriter, r *http.Request) {
	var b HeartbeatBody
	err := noQuery(r)
	if err == nil {
		err = decodeBody(r, &b, false)
	}
	if err == nil && (len(b.Instances) == 0 || len(b.Instances) > validate.MaxHeartbeats) {
		err = codes.Invalid("heartbeat names %d instances: want 1 to %d", len(b.Instances), validate.MaxHeartbeats)
	}
	keys := make([]wire.InstanceKey, len(b.Instances))
	for i, k := range b.Instances {
		if err != nil {
			break
		}
		keys[i] = wire.InstanceKey{Name: k.Name, Addr: k.Addr}
		if err = validate.Instance(k.Name, k.Addr); err != nil {
			err = fmt.Errorf("instances[%d]: %w", i, err)
		}
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	res, err := a.beat(r, keys)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := HeartbeatResults{Results: make([]Result, len(res))}
	for i, e := range res {
		if e != nil {
			out.Results[i] = Result{Code: string(codes.Of(e)), Message: e.Error()}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
	defer cancel()
	st, err := a.be.Status(ctx)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, codecJSON(st))
}

func (a *API) members(w http.ResponseWriter, r *http.Request) {
	m, ok := a.be.(backend.Membership)
	err := noQuery(r)
	if err == nil && !ok {
		err = fmt.Errorf("this node's backend has no members of its own (an etcd front end: ask etcd): %w", codes.ErrRefused)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
	defer cancel()
	res, err := m.Members(ctx)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, codecJSON(res))
}

func (a *API) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
