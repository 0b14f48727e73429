package acl

import (
	"context"
	"fmt"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// MaxExpiresIn bounds a token's lifetime when it is given one.
const MaxExpiresIn = 10 * 365 * 24 * time.Hour

// ToWire describes a token for a client, at now.
func ToWire(t Token, now time.Time) wire.ACLToken {
	w := wire.ACLToken{AccessorID: t.AccessorID, Description: t.Description, Rules: append([]string{}, t.Rules...),
		CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex}
	if !t.ExpiresAt.IsZero() {
		w.ExpiresAtMillis = t.ExpiresAt.UnixMilli()
		w.Expired = !now.Before(t.ExpiresAt)
	}
	return w
}

// auditChange logs a token change on the node that received it from the
// client (a forwarded request is logged there, with the client's address).
func (g *Guard) auditChange(ctx context.Context, event string, who *Identity, tok wire.ACLToken) {
	if backend.IsForwarded(ctx) {
		return
	}
	c := backend.CallerFrom(ctx)
	g.audit.Info("audit: token "+event, "event", "token."+event, "who", who.Who(), "accessor_id", tok.AccessorID,
		"description", tok.Description, "rules", tok.Rules, "from", c.Remote, "via", c.Via)
}

// Bootstrap implements Admin: it needs no token, and works once.
func (g *Guard) Bootstrap(ctx context.Context) (wire.ACLTokenSecret, error) {
	if idx, ok := g.st.ACLTable().Bootstrapped(); ok {
		return wire.ACLTokenSecret{}, fmt.Errorf("ACLs were bootstrapped already, at index %d: use the management token it printed (or another with acl write); if every such token is lost, restore a backup taken before, as docs/acl.md explains: %w", idx, codes.ErrRefused)
	}
	res, err := g.st.ACLBootstrap(ctx)
	if err != nil {
		return res, err
	}
	g.auditChange(ctx, "created", &Identity{Token: Token{AccessorID: "bootstrap"}}, res.Token)
	return res, nil
}

// CheckCreate checks and canonicalises a create request.
func CheckCreate(req *wire.ACLTokenCreateRequest) error {
	if err := CheckDescription(req.Description); err != nil {
		return err
	}
	rules, err := CanonicalRules(req.Rules)
	if err != nil {
		return err
	}
	req.Rules = rules
	if req.ExpiresInMillis < 0 || time.Duration(req.ExpiresInMillis)*time.Millisecond > MaxExpiresIn {
		return codes.Invalid("expires_in_ms %d is out of range: 0 (never) to %d", req.ExpiresInMillis, MaxExpiresIn.Milliseconds())
	}
	return nil
}

// CheckUpdate checks and canonicalises an update request.
func CheckUpdate(req *wire.ACLTokenUpdateRequest) error {
	if err := CheckAccessorID(req.AccessorID); err != nil {
		return err
	}
	if err := CheckDescription(req.Description); err != nil {
		return err
	}
	rules, err := CanonicalRules(req.Rules)
	if err != nil {
		return err
	}
	req.Rules = rules
	return nil
}

func (g *Guard) checkACL(ctx context.Context, what string, want Access) (*Identity, error) {
	id, err := g.identity(ctx)
	if err == nil {
		err = id.CheckACL(what, want)
	}
	if err != nil && want == Write {
		return nil, g.deny(ctx, what, err)
	}
	return id, err
}

// CreateToken implements Admin.
func (g *Guard) CreateToken(ctx context.Context, req wire.ACLTokenCreateRequest) (wire.ACLTokenSecret, error) {
	if err := CheckCreate(&req); err != nil {
		return wire.ACLTokenSecret{}, err
	}
	id, err := g.checkACL(ctx, "creating a token", Write)
	if err != nil {
		return wire.ACLTokenSecret{}, err
	}
	res, err := g.st.ACLCreateToken(ctx, req)
	if err != nil {
		return res, err
	}
	g.auditChange(ctx, "created", id, res.Token)
	return res, nil
}

// UpdateToken implements Admin.
func (g *Guard) UpdateToken(ctx context.Context, req wire.ACLTokenUpdateRequest) (wire.ACLTokenResponse, error) {
	if err := CheckUpdate(&req); err != nil {
		return wire.ACLTokenResponse{}, err
	}
	id, err := g.checkACL(ctx, fmt.Sprintf("updating token %s", req.AccessorID), Write)
	if err != nil {
		return wire.ACLTokenResponse{}, err
	}
	res, err := g.st.ACLUpdateToken(ctx, req)
	if err != nil {
		return res, err
	}
	g.auditChange(ctx, "updated", id, res.Token)
	return res, nil
}

// DeleteToken implements Admin.
func (g *Guard) DeleteToken(ctx context.Context, req wire.ACLTokenIDRequest) (uint64, error) {
	if err := CheckAccessorID(req.AccessorID); err != nil {
		return 0, err
	}
	id, err := g.checkACL(ctx, fmt.Sprintf("deleting token %s", req.AccessorID), Write)
	if err != nil {
		return 0, err
	}
	old, _ := g.st.ACLTable().Token(req.AccessorID)
	idx, err := g.st.ACLDeleteToken(ctx, req)
	if err != nil {
		return 0, err
	}
	w := ToWire(old, g.now())
	w.AccessorID = req.AccessorID
	g.auditChange(ctx, "deleted", id, w)
	return idx, nil
}

// ListTokens implements Admin: every token, never a secret or its hash.
func (g *Guard) ListTokens(ctx context.Context) (wire.ACLTokenListResponse, error) {
	if _, err := g.checkACL(ctx, "listing tokens", Read); err != nil {
		return wire.ACLTokenListResponse{}, err
	}
	t := g.st.ACLTable()
	now := g.now()
	out := wire.ACLTokenListResponse{Tokens: []wire.ACLToken{}, Index: t.Index()}
	for _, tok := range t.Tokens() {
		out.Tokens = append(out.Tokens, ToWire(tok, now))
	}
	return out, nil
}

// ReadToken implements Admin: acl read, or the caller's own token.
func (g *Guard) ReadToken(ctx context.Context, req wire.ACLTokenIDRequest) (wire.ACLTokenResponse, error) {
	if err := CheckAccessorID(req.AccessorID); err != nil {
		return wire.ACLTokenResponse{}, err
	}
	id, err := g.identity(ctx)
	if err != nil {
		return wire.ACLTokenResponse{}, err
	}
	if id.Who() != req.AccessorID {
		if err := id.CheckACL(fmt.Sprintf("reading token %s", req.AccessorID), Read); err != nil {
			return wire.ACLTokenResponse{}, err
		}
	}
	t := g.st.ACLTable()
	tok, ok := t.Token(req.AccessorID)
	if !ok {
		return wire.ACLTokenResponse{}, fmt.Errorf("no token has accessor id %s: %w", req.AccessorID, codes.ErrNotFound)
	}
	return wire.ACLTokenResponse{Token: ToWire(tok, g.now()), Index: t.Index()}, nil
}

// WhoAmI implements Admin: any valid token (or none) may ask.
func (g *Guard) WhoAmI(ctx context.Context) (wire.ACLWhoAmIResponse, error) {
	id, err := g.identity(ctx)
	if err != nil {
		return wire.ACLWhoAmIResponse{}, err
	}
	return wire.ACLWhoAmIResponse{Token: ToWire(id.Token, g.now()), Anonymous: id.Anonymous}, nil
}
