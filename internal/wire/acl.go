package wire

// ACL methods (docs/protocol.md, "ACLs"). A caller's token goes in each
// request's header (Header.Token); these methods manage the tokens.
const (
	// MethodACLBootstrap creates the first management token, once.
	MethodACLBootstrap = "ACLBootstrap"
	// MethodACLTokenCreate creates a token and answers its secret, once.
	MethodACLTokenCreate = "ACLTokenCreate"
	// MethodACLTokenUpdate replaces a token's description and rules.
	MethodACLTokenUpdate = "ACLTokenUpdate"
	// MethodACLTokenDelete deletes a token.
	MethodACLTokenDelete = "ACLTokenDelete"
	// MethodACLTokenList lists every token (never a secret).
	MethodACLTokenList = "ACLTokenList"
	// MethodACLTokenRead reads one token.
	MethodACLTokenRead = "ACLTokenRead"
	// MethodACLWhoAmI describes the caller's own token.
	MethodACLWhoAmI = "ACLWhoAmI"
)

// ACLToken describes a token, never its secret.
type ACLToken struct {
	AccessorID  string   `codec:"accessor_id" json:"accessor_id"`
	Description string   `codec:"description" json:"description"`
	Rules       []string `codec:"rules" json:"rules"`
	// ExpiresAtMillis is when the token stops working (Unix ms); 0: never.
	ExpiresAtMillis int64  `codec:"expires_at_ms,omitempty" json:"expires_at_ms,omitempty"`
	Expired         bool   `codec:"expired,omitempty" json:"expired,omitempty"` // at the answering node's clock
	CreateIndex     uint64 `codec:"create_index" json:"create_index"`
	ModifyIndex     uint64 `codec:"modify_index" json:"modify_index"`
}

// ACLTokenSecret is a token with its credential, answered only by
// bootstrap and create: the one time it is shown.
type ACLTokenSecret struct {
	Token ACLToken `codec:"token" json:"token"`
	// Secret is the credential to present: "<accessor id>.<secret>".
	Secret string `codec:"secret" json:"secret"`
	Index  uint64 `codec:"index" json:"index"`
}

// ACLBootstrapRequest asks for the first management token. It has no fields.
type ACLBootstrapRequest struct{}

// ACLTokenCreateRequest creates a token with a fresh accessor id and secret.
type ACLTokenCreateRequest struct {
	Description string   `codec:"description" json:"description"`
	Rules       []string `codec:"rules" json:"rules"`
	// ExpiresInMillis, if not 0, makes the token stop working that long
	// after the leader creates it.
	ExpiresInMillis int64 `codec:"expires_in_ms,omitempty" json:"expires_in_ms,omitempty"`
}

// ACLTokenUpdateRequest replaces a token's description and rules; its
// secret and expiry stay. The anonymous token is updated so too.
type ACLTokenUpdateRequest struct {
	AccessorID  string   `codec:"accessor_id" json:"accessor_id"`
	Description string   `codec:"description" json:"description"`
	Rules       []string `codec:"rules" json:"rules"`
}

// ACLTokenIDRequest names one token (read, delete).
type ACLTokenIDRequest struct {
	AccessorID string `codec:"accessor_id" json:"accessor_id"`
}

// ACLTokenResponse is one token and the index of the state read or written.
type ACLTokenResponse struct {
	Token ACLToken `codec:"token" json:"token"`
	Index uint64   `codec:"index" json:"index"`
}

// ACLTokenListResponse is every token, sorted by accessor id.
type ACLTokenListResponse struct {
	Tokens []ACLToken `codec:"tokens" json:"tokens"`
	Index  uint64     `codec:"index" json:"index"`
}

// ACLWhoAmIResponse describes the caller's token.
type ACLWhoAmIResponse struct {
	Token     ACLToken `codec:"token" json:"token"`
	Anonymous bool     `codec:"anonymous,omitempty" json:"anonymous,omitempty"` // no token was presented
}
