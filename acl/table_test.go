package acl

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
)

func newToken(t *testing.T, rules ...string) (Token, string) {
	t.Helper()
	id, cred, hash, err := NewCredential()
	if err != nil {
		t.Fatal(err)
	}
	canon, err := CanonicalRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	return Token{AccessorID: id, SecretHash: hash, Rules: canon, CreateIndex: 5, ModifyIndex: 5}, cred
}

func TestCredential(t *testing.T) {
	id, cred, hash, err := NewCredential()
	if err != nil {
		t.Fatal(err)
	}
	if CheckAccessorID(id) != nil || len(hash) != 32 {
		t.Fatalf("accessor %q hash %d bytes", id, len(hash))
	}
	gotID, secret, ok := SplitCredential(cred)
	if !ok || gotID != id || string(HashSecret(secret)) != string(hash) {
		t.Fatalf("SplitCredential(%q) = %q %q %v", cred, gotID, secret, ok)
	}
	if strings.Contains(string(hash), secret) {
		t.Fatal("hash holds the secret")
	}
	_, cred2, _, _ := NewCredential()
	if cred2 == cred {
		t.Fatal("two credentials alike")
	}
	for _, bad := range []string{"", "x", "nodot", id, id + ".", "short." + secret} {
		if _, _, ok := SplitCredential(bad); ok {
			t.Errorf("SplitCredential(%q) ok", bad)
		}
	}
	for _, bad := range []string{"", "ANONYMOUS", strings.Repeat("g", 36), id + "0"} {
		if CheckAccessorID(bad) == nil {
			t.Errorf("CheckAccessorID(%q) passed", bad)
		}
	}
}

func TestResolve(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	web, webCred := newToken(t, `service "web*" write`)
	old, oldCred := newToken(t, `service "*" read`)
	old.ExpiresAt = now.Add(-time.Second)
	anon := Token{AccessorID: AnonymousID, Rules: []string{`service "public" read`}}

	if _, err := NewTable(0, 0, nil).Resolve("", now); !errors.Is(err, ErrNotBootstrapped) {
		t.Errorf("before bootstrap: %v", err)
	}
	tbl := NewTable(3, 9, []Token{web, old, anon})
	id, err := tbl.Resolve(webCred, now)
	if err != nil || id.Who() != web.AccessorID || id.Anonymous {
		t.Fatalf("web token: %+v %v", id, err)
	}
	if id.CheckService("registering", "web-1", Write) != nil || id.CheckService("registering", "db", Write) == nil {
		t.Error("web* writer")
	}
	err = id.CheckService(`registering in service "db"`, "db", Write)
	if !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), `service "db" write`) || !strings.Contains(err.Error(), web.AccessorID) || strings.Contains(err.Error(), webCred) {
		t.Errorf("denied message: %v", err)
	}
	if err := id.CheckOperator("members", Read); !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "operator read") {
		t.Errorf("operator: %v", err)
	}

	id, err = tbl.Resolve("", now)
	if err != nil || !id.Anonymous || id.Service("public") != Read || id.Service("web") != None {
		t.Errorf("anonymous: %+v %v", id, err)
	}
	if err := id.CheckService("x", "web", Read); err == nil || !strings.Contains(err.Error(), "anonymous token") {
		t.Errorf("anonymous denied: %v", err)
	}

	if _, err := tbl.Resolve(oldCred, now); !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	wrongSecret := web.AccessorID + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	_, missing, _, _ := NewCredential()
	e1 := errOf(tbl.Resolve(wrongSecret, now))
	e2 := errOf(tbl.Resolve(missing, now))
	if !errors.Is(e1, codes.ErrPermissionDenied) || e1.Error() != e2.Error() {
		t.Errorf("a wrong secret (%v) and an unknown accessor (%v) must be told apart by nothing", e1, e2)
	}
	if err := errOf(tbl.Resolve("garbage", now)); !errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed: %v", err)
	}
	if toks := tbl.Tokens(); len(toks) != 3 || toks[0].AccessorID > toks[1].AccessorID {
		t.Errorf("tokens %v", toks)
	}
}

func errOf(_ *Identity, err error) error { return err }

// TestVerifySameWork checks that a credential with an unknown accessor id
// costs the same hash and constant-time comparison as one with a wrong
// secret: nothing in the work done tells them apart (BenchmarkResolve
// measures the time of each).
func TestVerifySameWork(t *testing.T) {
	tok, _ := newToken(t)
	tbl := NewTable(1, 1, []Token{tok})
	_, missing, _, _ := NewCredential()
	wrong := tok.AccessorID + ".BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	for _, cred := range []string{missing, wrong} {
		before := verifications.Load()
		if _, err := tbl.Resolve(cred, time.Now()); err == nil {
			t.Fatalf("%s resolved", cred)
		}
		if n := verifications.Load() - before; n != 1 {
			t.Errorf("%s: %d verifications, want 1", cred, n)
		}
	}
	if verify(nil, "x") || verify(&Token{}, "x") {
		t.Error("verify passed without a stored hash")
	}
}

func BenchmarkResolve(b *testing.B) {
	var toks []Token
	var existing string
	for i := 0; i < 1000; i++ {
		id, _, hash, _ := NewCredential()
		toks = append(toks, Token{AccessorID: id, SecretHash: hash})
		existing = id
	}
	tbl := NewTable(1, 1, toks)
	_, missing, _, _ := NewCredential()
	now := time.Now()
	b.Run("wrong-secret", func(b *testing.B) {
		cred := existing + ".BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
		for i := 0; i < b.N; i++ {
			_, _ = tbl.Resolve(cred, now)
		}
	})
	b.Run("unknown-accessor", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _ = tbl.Resolve(missing, now)
		}
	})
}
