package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/discoverd/discoverd/acl"
	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// ACLs over HTTP (docs/http.md, "ACLs"). A caller presents its token as
// "Authorization: Bearer <accessor id>.<secret>"; ServeHTTP puts it in
// every request's context (backend.WithCaller) and the guard the API is
// given (acl.Guard, with -acl) checks it, as it does for the native
// protocol and DNS. The token routes call the guard's acl.Admin.

// errBadAuthorization never quotes the header: it may hold a secret.
var errBadAuthorization = codes.Invalid("the Authorization header is not of the form \"Bearer <token>\": give the token as acl bootstrap or acl token create printed it, <accessor id>.<secret>, or no Authorization header for the anonymous token's rights")

// BearerToken returns the token of r's Authorization header ("" without
// one: the anonymous token's rights), or invalid_argument if the header is
// not "Bearer <token>". Neither the token nor the header ever goes into an
// error or a log line.
func BearerToken(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", codes.Invalid("the request has %d Authorization headers: give one, \"Bearer <token>\"", len(vals))
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	tok = strings.TrimLeft(tok, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || !isToken68(tok) {
		return "", errBadAuthorization
	}
	return tok, nil
}

// isToken68 reports whether s is the token of a Bearer credential (RFC
// 6750's b64token: letters, digits, "-._~+/", then any "=").
func isToken68(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~+/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// withCaller puts the request's caller in its context: the token of its
// Authorization header, its remote address, and "http". With ACLs off
// (the backend is no guard) the header is not looked at: a proxy in front
// of the node may use it for its own scheme (Basic), as it did before
// ACLs existed.
func (a *API) withCaller(r *http.Request) (*http.Request, error) {
	var tok string
	if _, on := a.be.(acl.Admin); on {
		var err error
		if tok, err = BearerToken(r); err != nil {
			return r, err
		}
	}
	return r.WithContext(backend.WithCaller(r.Context(), backend.Caller{Token: tok, Remote: r.RemoteAddr, Via: "http"})), nil
}

// unreadable reports whether err says the caller may not read a service:
// a read answers such a service as one without instances (the guard's
// List), so a blocking query must not say more.
func unreadable(err error) bool {
	var de *acl.DeniedError
	return errors.As(err, &de) && de.Need.Resource == acl.ResourceService
}

// admin returns the guard's token methods, or answers the native port's
// refusal when ACLs are off, or invalid_argument for a query.
func (a *API) admin(w http.ResponseWriter, r *http.Request) (acl.Admin, bool) {
	ad, ok := a.be.(acl.Admin)
	err := noQuery(r)
	if err == nil && !ok {
		err = fmt.Errorf("%s %s: %w", r.Method, r.URL.Path, acl.ErrOff)
	}
	if err != nil {
		writeErr(w, err)
		return nil, false
	}
	return ad, true
}

// answer writes v, or err.
func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
}

// POST /v1/acl/bootstrap: the first management token, once. POST, as
// token creation: each success makes a new secret, and a retry does not
// answer the same (a second bootstrap is refused).
func (a *API) aclBootstrap(w http.ResponseWriter, r *http.Request) {
	ad, ok := a.admin(w, r)
	if !ok {
		return
	}
	if err := decodeBody(r, &struct{}{}, true); err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	res, err := ad.Bootstrap(ctx)
	answer(w, res, err)
}

// ACLTokenCreateBody is the body of POST /v1/acl/tokens: the native
// ACLTokenCreateRequest, whose expiry may also be given as a Go duration.
type ACLTokenCreateBody struct {
	Description string   `json:"description"`
	Rules       []string `json:"rules"`
	// ExpiresInMillis, if not 0, makes the token stop working that long
	// after the leader creates it.
	ExpiresInMillis int64 `json:"expires_in_ms"`
	// ExpiresIn is the same as a Go duration ("720h"); not with
	// expires_in_ms.
	ExpiresIn string `json:"expires_in"`
}

func (a *API) aclCreate(w http.ResponseWriter, r *http.Request) {
	ad, ok := a.admin(w, r)
	if !ok {
		return
	}
	var b ACLTokenCreateBody
	err := decodeBody(r, &b, false)
	req := wire.ACLTokenCreateRequest{Description: b.Description, Rules: b.Rules, ExpiresInMillis: b.ExpiresInMillis}
	if err == nil && b.ExpiresIn != "" {
		d, perr := time.ParseDuration(b.ExpiresIn)
		switch {
		case b.ExpiresInMillis != 0:
			err = codes.Invalid("expires_in and expires_in_ms are both given: give one")
		case perr != nil || d < time.Millisecond || d > acl.MaxExpiresIn:
			err = codes.Invalid("expires_in %q: give a duration from 1ms to %s, e.g. \"720h\" (or none: the token never expires)", printable(b.ExpiresIn), acl.MaxExpiresIn)
		default:
			req.ExpiresInMillis = d.Milliseconds()
		}
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	res, err := ad.CreateToken(ctx, req)
	answer(w, res, err)
}

// ACLTokenUpdateBody is the body of PUT /v1/acl/tokens/{accessor}: the
// token's new description and rules, which replace the old ones (its
// secret and expiry stay). rules must be given, [] for none, so that a
// body without them does not take every right away by mistake.
type ACLTokenUpdateBody struct {
	Description string    `json:"description"`
	Rules       *[]string `json:"rules"`
}

func (a *API) aclUpdate(w http.ResponseWriter, r *http.Request) {
	ad, ok := a.admin(w, r)
	if !ok {
		return
	}
	var b ACLTokenUpdateBody
	err := decodeBody(r, &b, false)
	if err == nil && b.Rules == nil {
		err = codes.Invalid("the body has no rules: an update replaces the token's description and rules; give \"rules\" ([] for none)")
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	res, err := ad.UpdateToken(ctx, wire.ACLTokenUpdateRequest{AccessorID: r.PathValue("accessor"), Description: b.Description, Rules: *b.Rules})
	answer(w, res, err)
}

func (a *API) aclDelete(w http.ResponseWriter, r *http.Request) {
	ad, ok := a.admin(w, r)
	if !ok {
		return
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	idx, err := ad.DeleteToken(ctx, wire.ACLTokenIDRequest{AccessorID: r.PathValue("accessor")})
	a.writeResult(w, idx, err)
}

func (a *API) aclRead(w http.ResponseWriter, r *http.Request) {
	adminRead(a, w, r, func(ad acl.Admin, ctx context.Context) (wire.ACLTokenResponse, error) {
		return ad.ReadToken(ctx, wire.ACLTokenIDRequest{AccessorID: r.PathValue("accessor")})
	})
}

func (a *API) aclList(w http.ResponseWriter, r *http.Request) {
	adminRead(a, w, r, acl.Admin.ListTokens)
}

func (a *API) aclWhoAmI(w http.ResponseWriter, r *http.Request) {
	adminRead(a, w, r, acl.Admin.WhoAmI)
}

// adminRead serves a token route without a body: one call of the guard,
// its answer as JSON.
func adminRead[T any](a *API, w http.ResponseWriter, r *http.Request, call func(acl.Admin, context.Context) (T, error)) {
	ad, ok := a.admin(w, r)
	if !ok {
		return
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	res, err := call(ad, ctx)
	answer(w, res, err)
}

// printable cuts what a caller sent before it goes into a message.
func printable(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
