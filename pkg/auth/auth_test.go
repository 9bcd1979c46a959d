package auth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// t0 is the tests' "now".
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testSigner(kid string, seed byte) *Signer {
	return NewSigner(kid, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
}

func testClaims() Claims {
	return Claims{
		Account:   "acc_123",
		Project:   "prj_456",
		TokenID:   "tok-1",
		IssuedAt:  t0,
		ExpiresAt: t0.Add(24 * time.Hour),
	}
}

func mint(t testing.TB, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Mint(c)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

func TestRoundTrip(t *testing.T) {
	s := testSigner("k1", 1)
	v := NewVerifier(map[string]ed25519.PublicKey{"k1": s.PublicKey()}, nil)
	in := testClaims()
	in.IssuedAt = in.IssuedAt.Add(300 * time.Millisecond).In(time.FixedZone("X", 3600)) // kept to the second
	tok := mint(t, s, in)

	if !strings.HasPrefix(tok, "tg1.") || strings.Count(tok, ".") != 2 {
		t.Errorf("token %q: want tg1.<payload>.<signature>", tok)
	}
	want := Claims{KeyID: "k1", Account: "acc_123", Project: "prj_456", TokenID: "tok-1", IssuedAt: t0, ExpiresAt: t0.Add(24 * time.Hour)}
	for name, verify := range map[string]func() (Claims, error){
		"Verify":        func() (Claims, error) { return v.Verify(tok, t0) },
		"Verify cached": func() (Claims, error) { return v.Verify(tok, t0.Add(time.Hour)) },
		"Parse":         func() (Claims, error) { return Parse(tok) },
	} {
		got, err := verify()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got != want {
			t.Errorf("%s = %+v, want %+v", name, got, want)
		}
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	wantJSON := `{"kid":"k1","acc":"acc_123","prj":"prj_456","iat":1767323045,"exp":1767409445,"jti":"tok-1"}`
	if string(raw) != wantJSON {
		t.Errorf("payload %s, want %s", raw, wantJSON)
	}
	// ed25519 is deterministic and the payload canonical: same claims,
	// same token.
	if again := mint(t, s, want); again != tok {
		t.Errorf("re-minting the same claims gave a different token")
	}
}

func TestMintDefaults(t *testing.T) {
	s := testSigner("k1", 1)
	before := time.Now().Add(-time.Second)
	c := Claims{Account: "a", Project: "p", ExpiresAt: time.Now().Add(time.Hour)}
	tok1, tok2 := mint(t, s, c), mint(t, s, c)
	got1, err := Parse(tok1)
	if err != nil {
		t.Fatal(err)
	}
	got2, _ := Parse(tok2)
	if got1.KeyID != "k1" {
		t.Errorf("KeyID %q, want the signer's", got1.KeyID)
	}
	if id, err := hex.DecodeString(got1.TokenID); err != nil || len(id) != 16 {
		t.Errorf("TokenID %q: want 128 bits in hex", got1.TokenID)
	}
	if got1.TokenID == got2.TokenID {
		t.Error("two mints gave the same token id")
	}
	if got1.IssuedAt.Before(before) || got1.IssuedAt.After(time.Now()) {
		t.Errorf("IssuedAt %v, want now", got1.IssuedAt)
	}
}

func TestMintRefuses(t *testing.T) {
	s := testSigner("k1", 1)
	long := strings.Repeat("x", maxFieldLen+1)
	tests := []struct {
		name   string
		signer *Signer
		change func(*Claims)
	}{
		{"empty account", s, func(c *Claims) { c.Account = "" }},
		{"empty project", s, func(c *Claims) { c.Project = "" }},
		{"no expiry", s, func(c *Claims) { c.ExpiresAt = time.Time{} }},
		{"expiry at issue", s, func(c *Claims) { c.ExpiresAt = c.IssuedAt }},
		{"expiry within the issue second", s, func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(500 * time.Millisecond) }},
		{"expiry before issue", s, func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(-time.Hour) }},
		{"issued before 1970", s, func(c *Claims) { c.IssuedAt = time.Unix(-5, 0) }},
		{"other key id", s, func(c *Claims) { c.KeyID = "k2" }},
		{"long account", s, func(c *Claims) { c.Account = long }},
		{"invalid UTF-8", s, func(c *Claims) { c.Project = "p\xff" }},
		{"control character", s, func(c *Claims) { c.Account = "a\nb" }},
		{"too long once escaped", testSigner(strings.Repeat("<", maxFieldLen), 1), func(c *Claims) {
			c.Account, c.Project, c.TokenID = strings.Repeat("<", maxFieldLen), strings.Repeat(">", maxFieldLen), strings.Repeat("&", maxFieldLen)
		}},
		{"empty signer kid", testSigner("", 1), func(*Claims) {}},
		{"no private key", NewSigner("k1", nil), func(*Claims) {}},
		{"short private key", NewSigner("k1", make(ed25519.PrivateKey, 10)), func(*Claims) {}},
	}
	for _, tt := range tests {
		c := testClaims()
		tt.change(&c)
		if tok, err := tt.signer.Mint(c); err == nil {
			t.Errorf("%s: Mint succeeded: %s", tt.name, tok)
		}
	}
}

// resign replaces a token's payload and signs it again with s, to build
// tokens that are properly signed but not what Mint would write.
func resign(s *Signer, payload string) string { return s.sign([]byte(payload)) }

func TestVerifyErrors(t *testing.T) {
	k1, k2, other := testSigner("k1", 1), testSigner("k2", 2), testSigner("k1", 9)
	revoked := NewRevocationSet("tok-revoked")
	v := NewVerifier(map[string]ed25519.PublicKey{"k1": k1.PublicKey(), "k2": k2.PublicKey()}, revoked)

	good := mint(t, k1, testClaims())
	parts := strings.Split(good, ".")
	withClaims := func(change func(*Claims)) string {
		c := testClaims()
		change(&c)
		return mint(t, k1, c)
	}
	tampered := func() string {
		c := testClaims()
		c.KeyID, c.Account = "k1", "acc_victim"
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(encodePayload(c)) + "." + parts[2]
	}()
	// The last character of an 86-character signature carries 2 bits and
	// 4 zero bits; 'B' sets one of those.
	strayBits := good[:len(good)-1] + string("BCDEFGHIJKLMNOPQ"[strings.IndexByte("AQgw", good[len(good)-1])])
	canonical := `{"kid":"k1","acc":"a","prj":"p","iat":1767323045,"exp":1767409445,"jti":"j"}`

	tests := []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"good", good, t0, nil},
		{"empty", "", t0, ErrMalformed},
		{"garbled", "tg1.!!!.???", t0, ErrMalformed},
		{"wrong prefix", "tg2" + good[3:], t0, ErrMalformed},
		{"provider key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", t0, ErrMalformed},
		{"no prefix", good[4:], t0, ErrMalformed},
		{"bearer left on", "Bearer " + good, t0, ErrMalformed},
		{"truncated signature", good[:len(good)-3], t0, ErrMalformed},
		{"truncated in the payload", good[:len(parts[0])+1+len(parts[1])/2], t0, ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], t0, ErrMalformed},
		{"four parts", good + ".x", t0, ErrMalformed},
		{"empty payload", parts[0] + ".." + parts[2], t0, ErrMalformed},
		{"too long", good + strings.Repeat("A", maxTokenLen), t0, ErrMalformed},
		{"padding", parts[0] + "." + parts[1] + "." + parts[2] + "==", t0, ErrMalformed},
		{"newline in payload", parts[0] + "." + parts[1][:10] + "\n" + parts[1][10:] + "." + parts[2], t0, ErrMalformed},
		{"newline in signature", parts[0] + "." + parts[1] + "." + parts[2][:10] + "\r\n" + parts[2][10:len(parts[2])-2], t0, ErrMalformed},
		{"standard base64 alphabet", parts[0] + ".+" + parts[1][1:] + "." + parts[2], t0, ErrMalformed},
		{"stray bits in signature", strayBits, t0, ErrMalformed},
		{"payload not JSON", resign(k1, "not json"), t0, ErrMalformed},
		{"payload an array", resign(k1, "[]"), t0, ErrMalformed},
		{"payload with spaces", resign(k1, strings.ReplaceAll(canonical, ",", ", ")), t0, ErrMalformed},
		{"payload reordered", resign(k1, `{"acc":"a","kid":"k1","prj":"p","iat":1767323045,"exp":1767409445,"jti":"j"}`), t0, ErrMalformed},
		{"payload upper-case key", resign(k1, strings.Replace(canonical, `"acc"`, `"ACC"`, 1)), t0, ErrMalformed},
		{"payload duplicate key", resign(k1, strings.Replace(canonical, `"acc":"a"`, `"acc":"a","acc":"b"`, 1)), t0, ErrMalformed},
		{"payload extra field", resign(k1, strings.Replace(canonical, `}`, `,"adm":true}`, 1)), t0, ErrMalformed},
		{"payload escaped", resign(k1, strings.Replace(canonical, `"a"`, `"\u0061"`, 1)), t0, ErrMalformed},
		{"payload float time", resign(k1, strings.Replace(canonical, `1767409445`, `1.767409445e9`, 1)), t0, ErrMalformed},
		{"payload without jti", resign(k1, strings.Replace(canonical, `,"jti":"j"`, ``, 1)), t0, ErrMalformed},
		{"payload issued at zero", resign(k1, strings.Replace(canonical, `1767323045`, `0`, 1)), t0, ErrMalformed},
		{"payload without account", resign(k1, strings.Replace(canonical, `"a"`, `""`, 1)), t0, ErrMalformed},
		{"payload canonical", resign(k1, canonical), t0, nil},
		{"tampered payload", tampered, t0, ErrBadSignature},
		{"forged with another key", mint(t, other, testClaims()), t0, ErrBadSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(withClaims(func(c *Claims) { c.TokenID = "x" }), ".")[2], t0, ErrBadSignature},
		{"unknown kid", mint(t, testSigner("k3", 3), testClaims()), t0, ErrUnknownKey},
		{"second key", mint(t, k2, testClaims()), t0, nil},
		{"expired", good, t0.Add(24 * time.Hour), ErrExpired},
		{"last valid second", good, t0.Add(24*time.Hour - time.Nanosecond), nil},
		{"long expired", good, t0.Add(365 * 24 * time.Hour), ErrExpired},
		{"issued within skew", withClaims(func(c *Claims) { c.IssuedAt = t0.Add(ClockSkew) }), t0, nil},
		{"issued beyond skew", withClaims(func(c *Claims) { c.IssuedAt = t0.Add(ClockSkew + time.Second) }), t0, ErrNotYetValid},
		{"revoked", withClaims(func(c *Claims) { c.TokenID = "tok-revoked" }), t0, ErrRevoked},
	}
	errs := []error{ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrExpired, ErrNotYetValid, ErrRevoked}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Twice: the second call may be answered from the cache.
			for range 2 {
				_, err := v.Verify(tt.token, tt.now)
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("Verify: %v, want %v", err, tt.want)
				}
				for _, other := range errs {
					if other != tt.want && errors.Is(err, other) {
						t.Errorf("Verify: %v is also %v", err, other)
					}
				}
				if err != nil && len(tt.token) >= 8 && strings.Contains(err.Error(), tt.token) {
					t.Errorf("error message contains the token: %v", err)
				}
				for _, part := range strings.Split(tt.token, ".") {
					if err != nil && len(part) >= 8 && strings.Contains(err.Error(), part) {
						t.Errorf("error message contains part of the token: %v", err)
					}
				}
			}
		})
	}
}

// TestVerifyReturnsClaimsOfRefusedTokens: a token whose signature holds but
// that is refused for its times or revocation still names its account.
func TestVerifyReturnsClaimsOfRefusedTokens(t *testing.T) {
	s := testSigner("k1", 1)
	v := NewVerifier(map[string]ed25519.PublicKey{"k1": s.PublicKey()}, NewRevocationSet("tok-1"))
	c, err := v.Verify(mint(t, s, testClaims()), t0)
	if !errors.Is(err, ErrRevoked) || c.Account != "acc_123" {
		t.Errorf("Verify = %+v, %v; want the claims with ErrRevoked", c, err)
	}
	c, err = v.Verify(mint(t, testSigner("k1", 9), testClaims()), t0)
	if !errors.Is(err, ErrBadSignature) || c != (Claims{}) {
		t.Errorf("Verify of a forged token = %+v, %v; want no claims", c, err)
	}
}

func TestRotation(t *testing.T) {
	old, cur := testSigner("2025", 1), testSigner("2026", 2)
	oldTok, curTok := mint(t, old, testClaims()), mint(t, cur, testClaims())

	both := NewVerifier(map[string]ed25519.PublicKey{"2025": old.PublicKey(), "2026": cur.PublicKey()}, nil)
	for _, tok := range []string{oldTok, curTok} {
		if _, err := both.Verify(tok, t0); err != nil {
			t.Errorf("verifier with both keys: %v", err)
		}
	}
	rotated := NewVerifier(map[string]ed25519.PublicKey{"2026": cur.PublicKey()}, nil)
	if _, err := rotated.Verify(oldTok, t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old token after rotation: %v, want ErrUnknownKey", err)
	}
	if _, err := rotated.Verify(curTok, t0); err != nil {
		t.Errorf("current token after rotation: %v", err)
	}
	// The same key id bound to a different key is a forgery, not a rotation.
	swapped := NewVerifier(map[string]ed25519.PublicKey{"2025": cur.PublicKey()}, nil)
	if _, err := swapped.Verify(oldTok, t0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("token under a key id bound to another key: %v, want ErrBadSignature", err)
	}
}

func TestNewVerifierCopiesKeys(t *testing.T) {
	s := testSigner("k1", 1)
	keys := map[string]ed25519.PublicKey{"k1": s.PublicKey()}
	v := NewVerifier(keys, nil, WithCacheSize(0))
	delete(keys, "k1")
	if _, err := v.Verify(mint(t, s, testClaims()), t0); err != nil {
		t.Errorf("Verify after the caller's map changed: %v", err)
	}
	bad := NewVerifier(map[string]ed25519.PublicKey{"k1": make(ed25519.PublicKey, 5)}, nil)
	if _, err := bad.Verify(mint(t, s, testClaims()), t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify against a short public key: %v, want ErrUnknownKey", err)
	}
}

// TestCacheRechecks shows that a cached token is still refused once it
// expires or is revoked, and that the cache holds only signed tokens.
func TestCacheRechecks(t *testing.T) {
	s := testSigner("k1", 1)
	revoked := NewRevocationSet()
	for _, size := range []int{0, 1, DefaultCacheSize} {
		v := NewVerifier(map[string]ed25519.PublicKey{"k1": s.PublicKey()}, revoked, WithCacheSize(size))
		tok := mint(t, s, testClaims())
		if _, err := v.Verify(tok, t0); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, err := v.Verify(tok, t0.Add(24*time.Hour)); !errors.Is(err, ErrExpired) {
			t.Errorf("size %d: cached token after expiry: %v, want ErrExpired", size, err)
		}
		if _, err := v.Verify(tok, t0.Add(-time.Hour)); !errors.Is(err, ErrNotYetValid) {
			t.Errorf("size %d: cached token before issue: %v, want ErrNotYetValid", size, err)
		}
		revoked.Add("tok-1")
		if _, err := v.Verify(tok, t0); !errors.Is(err, ErrRevoked) {
			t.Errorf("size %d: cached token after revocation: %v, want ErrRevoked", size, err)
		}
		revoked.Remove("tok-1")
		if _, err := v.Verify(tok, t0); err != nil {
			t.Errorf("size %d: after the revocation was lifted: %v", size, err)
		}
		forged := mint(t, testSigner("k1", 9), testClaims())
		for range 2 {
			if _, err := v.Verify(forged, t0); !errors.Is(err, ErrBadSignature) {
				t.Errorf("size %d: forged token: %v, want ErrBadSignature", size, err)
			}
		}
		if v.cache != nil && v.cache.Contains(forged) {
			t.Errorf("size %d: the cache holds a forged token", size)
		}
		if (v.cache != nil) != (size > 0) {
			t.Errorf("size %d: cache present %v", size, v.cache != nil)
		}
	}
}

func TestCachedVerifyDoesNotAllocate(t *testing.T) {
	s := testSigner("k1", 1)
	v := NewVerifier(map[string]ed25519.PublicKey{"k1": s.PublicKey()}, NewRevocationSet("other"))
	tok := mint(t, s, testClaims())
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := v.Verify(tok, t0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("cached Verify allocates %v times, want 0", allocs)
	}
}

func TestRevocationSet(t *testing.T) {
	var zero RevocationSet
	if zero.Revoked("a") || zero.Len() != 0 {
		t.Error("zero RevocationSet is not empty")
	}
	s := NewRevocationSet("a", "b")
	s.Add("c")
	s.Remove("a", "missing")
	for id, want := range map[string]bool{"a": false, "b": true, "c": true, "d": false} {
		if got := s.Revoked(id); got != want {
			t.Errorf("Revoked(%q) = %v, want %v", id, got, want)
		}
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d, want 2", s.Len())
	}
}

func TestConcurrentVerify(t *testing.T) {
	s := testSigner("k1", 1)
	revoked := NewRevocationSet()
	v := NewVerifier(map[string]ed25519.PublicKey{"k1": s.PublicKey()}, revoked, WithCacheSize(8))
	toks := make([]string, 16) // more than the cache holds, to exercise eviction
	for i := range toks {
		c := testClaims()
		c.TokenID = string(rune('a' + i))
		toks[i] = mint(t, s, c)
	}
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				tok := toks[(g*7+i)%len(toks)]
				if _, err := v.Verify(tok, t0); err != nil && !errors.Is(err, ErrRevoked) {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					revoked.Add(string(rune('a' + i%len(toks))))
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

func TestKeyIDFor(t *testing.T) {
	a, b := testSigner("", 1).PublicKey(), testSigner("", 2).PublicKey()
	if KeyIDFor(a) != KeyIDFor(bytes.Clone(a)) || KeyIDFor(a) == KeyIDFor(b) || len(KeyIDFor(a)) != 16 {
		t.Errorf("KeyIDFor: %q, %q", KeyIDFor(a), KeyIDFor(b))
	}
	g, err := GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	if g.KeyID() != KeyIDFor(g.PublicKey()) {
		t.Errorf("GenerateKey(\"\") kid %q, want %q", g.KeyID(), KeyIDFor(g.PublicKey()))
	}
	if g, _ := GenerateKey("named"); g.KeyID() != "named" {
		t.Errorf("GenerateKey(\"named\") kid %q", g.KeyID())
	}
}

func BenchmarkVerify(b *testing.B) {
	s := testSigner("k1", 1)
	keys := map[string]ed25519.PublicKey{"k1": s.PublicKey()}
	tok := mint(b, s, testClaims())
	b.Run("cold", func(b *testing.B) {
		v := NewVerifier(keys, NewRevocationSet(), WithCacheSize(0))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		v := NewVerifier(keys, NewRevocationSet())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		v := NewVerifier(keys, NewRevocationSet())
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := v.Verify(tok, t0); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkMint(b *testing.B) {
	s := testSigner("k1", 1)
	c := testClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Mint(c); err != nil {
			b.Fatal(err)
		}
	}
}
