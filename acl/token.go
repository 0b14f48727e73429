package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
)

// Token is one token as the replicated state holds it: never its secret,
// only the secret's SHA-256.
type Token struct {
	AccessorID  string
	SecretHash  []byte // SHA-256 of the secret; empty for the anonymous token
	Description string
	Rules       []string  // canonical rule texts (Rule.String)
	ExpiresAt   time.Time // zero: never
	CreateIndex uint64
	ModifyIndex uint64
}

// AnonymousID is the accessor id of the anonymous token: the rights of a
// caller that presents no token. It has no secret and cannot be deleted;
// it has no rules until an operator gives it some.
const AnonymousID = "anonymous"

// MaxDescription bounds a token's description.
const MaxDescription = 256

// ManagementRules are the rules of the token acl bootstrap creates.
var ManagementRules = []string{`service "*" write`, "operator write", "acl write"}

// A credential, what a caller presents, is "<accessor id>.<secret>": the
// accessor id (a random UUID) finds the token, the secret (32 random bytes,
// base64url) proves it. Both are made by NewCredential from crypto/rand.
const (
	accessorLen = 36
	secretBytes = 32
)

// NewCredential makes a fresh accessor id and secret, and returns the
// credential to hand out once and the hash to store.
func NewCredential() (accessorID, credential string, hash []byte, err error) {
	var b [16 + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", nil, fmt.Errorf("reading random bytes for a token: %w", err)
	}
	u := b[:16]
	u[6] = u[6]&0x0f | 0x40 // UUID version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(u)
	accessorID = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	secret := base64.RawURLEncoding.EncodeToString(b[16:])
	return accessorID, accessorID + "." + secret, HashSecret(secret), nil
}

// HashSecret is what the state stores of a secret. A plain SHA-256 is
// enough: secrets are 256 random bits, not passwords.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SplitCredential splits "<accessor id>.<secret>".
func SplitCredential(cred string) (accessorID, secret string, ok bool) {
	accessorID, secret, ok = strings.Cut(cred, ".")
	return accessorID, secret, ok && len(accessorID) == accessorLen && secret != ""
}

// CheckAccessorID checks the form of an accessor id given by a caller.
func CheckAccessorID(id string) error {
	if id == AnonymousID {
		return nil
	}
	if len(id) != accessorLen || strings.Trim(id, "0123456789abcdef-") != "" {
		return codes.Invalid("accessor id %q is not a token's accessor id (36 characters of hex digits and dashes, or %q)", printable(id), AnonymousID)
	}
	return nil
}

// CheckDescription checks a token's description.
func CheckDescription(d string) error {
	if len(d) > MaxDescription {
		return codes.Invalid("description is %d bytes, the limit is %d", len(d), MaxDescription)
	}
	return nil
}

// printable cuts what a caller sent before it goes into a message.
func printable(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// dummyHash is compared against when no token has the presented accessor
// id, so that a wrong accessor id costs the same hash and comparison as a
// wrong secret.
var dummyHash = HashSecret("discoverd: no token has this accessor id")

// verify reports whether secret matches t (nil: no such token) in time that
// does not depend on whether t exists or on where the hashes differ.
func verify(t *Token, secret string) bool {
	want := dummyHash
	if t != nil && len(t.SecretHash) == sha256.Size {
		want = t.SecretHash
	}
	got := HashSecret(secret)
	eq := subtle.ConstantTimeCompare(got, want) == 1
	verifications.Add(1)
	return eq && t != nil && len(t.SecretHash) == sha256.Size
}
