package client

import (
	"context"
	"fmt"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// ACL tokens (docs/acl.md). With ACLs on, every request carries
// Config.Token and is allowed or denied by its rules (`service "web*"
// write`, `operator read`, `acl write`); a caller without a token has the
// anonymous token's rights. These calls manage the tokens; all but
// ACLBootstrap and ACLWhoAmI need a token with an acl rule (read to read,
// write to change).
//
// The writes carry no request id, so unlike the registry's writes they are
// not retried once they may have reached the leader: one that fails with
// ErrUnknownOutcome or ErrTimeout may have been applied (check with
// ACLTokens before trying again).

// ACLToken describes a token, never its secret: accessor id, description,
// rules (canonical text), expiry (ExpiresAtMillis, Unix ms; 0: never; and
// Expired at the answering node's clock), create and modify indices.
type ACLToken = wire.ACLToken

// ACLTokenSecret is a new token with its credential ("<accessor
// id>.<secret>", for Config.Token): what ACLBootstrap and ACLCreateToken
// answer, the only time the secret is shown.
type ACLTokenSecret = wire.ACLTokenSecret

// ACLWhoAmI describes the caller's own token; Anonymous says none was
// presented (the anonymous token's rights apply).
type ACLWhoAmI = wire.ACLWhoAmIResponse

// ACLAnonymousID is the accessor id of the anonymous token: the rights of
// callers that present no token. It has none until an operator updates it
// (ACLUpdateToken); it cannot be deleted.
const ACLAnonymousID = "anonymous"

// ACLTokenCreate describes a token for ACLCreateToken.
type ACLTokenCreate struct {
	Description string
	// Rules: `service "<name or prefix*>" read|write`, `operator
	// read|write`, `acl read|write`. None: the token grants nothing.
	Rules []string
	// ExpiresIn, if not 0, makes the token stop working that long after
	// the leader creates it (rounded up to the millisecond).
	ExpiresIn time.Duration
}

// ACLBootstrap turns ACLs on for use: it creates the management token (all
// rights) and the anonymous token (none), once per cluster, and returns the
// management token with its secret. It needs no token. A second bootstrap
// fails with ErrRefused.
func (c *Client) ACLBootstrap(ctx context.Context) (*ACLTokenSecret, error) {
	var resp wire.ACLTokenSecret
	if err := c.call(ctx, wire.MethodACLBootstrap, &wire.ACLBootstrapRequest{}, &resp); err != nil {
		return nil, fmt.Errorf("acl bootstrap: %w", err)
	}
	fillRules(&resp.Token)
	return &resp, nil
}

// ACLCreateToken creates a token with a fresh accessor id and secret, and
// returns it with its secret, shown only this once.
func (c *Client) ACLCreateToken(ctx context.Context, t ACLTokenCreate) (*ACLTokenSecret, error) {
	if t.ExpiresIn < 0 {
		return nil, fmt.Errorf("acl token create: ExpiresIn %v is negative: %w", t.ExpiresIn, ErrInvalidArgument)
	}
	req := &wire.ACLTokenCreateRequest{Description: t.Description, Rules: nonNilRules(t.Rules),
		ExpiresInMillis: int64((t.ExpiresIn + time.Millisecond - 1) / time.Millisecond)}
	var resp wire.ACLTokenSecret
	if err := c.call(ctx, wire.MethodACLTokenCreate, req, &resp); err != nil {
		return nil, fmt.Errorf("acl token create: %w", err)
	}
	fillRules(&resp.Token)
	return &resp, nil
}

// ACLUpdateToken replaces a token's description and rules (both: read the
// token first to keep what should stay); its secret and expiry stay.
// ACLAnonymousID updates the anonymous token. ErrNotFound: no such token.
func (c *Client) ACLUpdateToken(ctx context.Context, accessorID, description string, rules []string) (*ACLToken, error) {
	if err := checkAccessorID(accessorID); err != nil {
		return nil, err
	}
	req := &wire.ACLTokenUpdateRequest{AccessorID: accessorID, Description: description, Rules: nonNilRules(rules)}
	var resp wire.ACLTokenResponse
	if err := c.call(ctx, wire.MethodACLTokenUpdate, req, &resp); err != nil {
		return nil, fmt.Errorf("acl token update %s: %w", accessorID, err)
	}
	fillRules(&resp.Token)
	return &resp.Token, nil
}

// ACLDeleteToken deletes a token and returns the index of the delete;
// requests carrying it are denied from then on. ErrNotFound: no such
// token; the anonymous token cannot be deleted (ErrRefused).
func (c *Client) ACLDeleteToken(ctx context.Context, accessorID string) (uint64, error) {
	if err := checkAccessorID(accessorID); err != nil {
		return 0, err
	}
	var resp wire.WriteResponse
	if err := c.call(ctx, wire.MethodACLTokenDelete, &wire.ACLTokenIDRequest{AccessorID: accessorID}, &resp); err != nil {
		return 0, fmt.Errorf("acl token delete %s: %w", accessorID, err)
	}
	return resp.Index, nil
}

// ACLTokens lists every token, sorted by accessor id (never a secret), and
// returns the index of the tokens' last change.
func (c *Client) ACLTokens(ctx context.Context) ([]ACLToken, uint64, error) {
	var resp wire.ACLTokenListResponse
	if err := c.call(ctx, wire.MethodACLTokenList, &wire.Empty{}, &resp); err != nil {
		return nil, 0, fmt.Errorf("acl token list: %w", err)
	}
	if resp.Tokens == nil {
		resp.Tokens = []ACLToken{}
	}
	for i := range resp.Tokens {
		fillRules(&resp.Tokens[i])
	}
	return resp.Tokens, resp.Index, nil
}

// ACLToken reads one token (acl read, or the caller's own token).
// ErrNotFound: no such token.
func (c *Client) ACLToken(ctx context.Context, accessorID string) (*ACLToken, error) {
	if err := checkAccessorID(accessorID); err != nil {
		return nil, err
	}
	var resp wire.ACLTokenResponse
	if err := c.call(ctx, wire.MethodACLTokenRead, &wire.ACLTokenIDRequest{AccessorID: accessorID}, &resp); err != nil {
		return nil, fmt.Errorf("acl token read %s: %w", accessorID, err)
	}
	fillRules(&resp.Token)
	return &resp.Token, nil
}

// ACLWhoAmI describes the token this client presents (Config.Token), or the
// anonymous token without one. Any valid token may ask; an unknown or
// expired one fails with ErrPermissionDenied.
func (c *Client) ACLWhoAmI(ctx context.Context) (*ACLWhoAmI, error) {
	var resp wire.ACLWhoAmIResponse
	if err := c.call(ctx, wire.MethodACLWhoAmI, &wire.Empty{}, &resp); err != nil {
		return nil, fmt.Errorf("acl whoami: %w", err)
	}
	fillRules(&resp.Token)
	return &resp, nil
}

// checkAccessorID refuses an empty accessor id before anything is sent;
// the server checks the rest of its form.
func checkAccessorID(id string) error {
	if id == "" {
		return fmt.Errorf("no accessor id given: %w", ErrInvalidArgument)
	}
	return nil
}

// fillRules makes a token's rules an empty list rather than nil when it has
// none, so that it encodes as [] (JSON), not null.
func fillRules(t *ACLToken) {
	if t.Rules == nil {
		t.Rules = []string{}
	}
}

// nonNilRules sends "no rules" as an empty list, not as nil.
func nonNilRules(rules []string) []string {
	if rules == nil {
		return []string{}
	}
	return rules
}
