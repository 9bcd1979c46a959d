package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// fuzzSeeds are tokens to start from: valid ones from two keys and one
// unknown key, and near misses.
func fuzzSeeds(f *testing.F) []string {
	f.Helper()
	k1, k2, k3 := testSigner("k1", 1), testSigner("k2", 2), testSigner("k3", 3)
	good := mint(f, k1, testClaims())
	c := testClaims()
	c.Account, c.Project, c.TokenID = "ünïcode <&>", "p\u2028q", strings.Repeat("j", maxFieldLen)
	return []string{
		good,
		mint(f, k2, c),
		mint(f, k3, testClaims()),
		resign(k1, `{"kid":"k1","acc":"a","prj":"p","iat":1,"exp":2,"jti":"j"}`),
		resign(k1, `{"kid":"k1","acc":"a","prj":"p","iat":-62135596800,"exp":253402300799,"jti":"j"}`),
		good[:len(good)-1],
		good + "A",
		"tg1..",
		"tg1.e30." + strings.Repeat("A", sigB64Len),
		"",
	}
}

// FuzzParse: Parse never panics, never quotes the token in an error, and
// anything it accepts is exactly the canonical encoding of what it
// returned.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := Parse(token)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			checkMessage(t, err, token)
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("Parse accepted invalid claims %+v: %v", c, err)
		}
		payloadB64 := strings.Split(token, ".")[1]
		if want := base64.RawURLEncoding.EncodeToString(encodePayload(c)); payloadB64 != want {
			t.Fatalf("Parse accepted payload %q, canonical is %q", payloadB64, want)
		}
	})
}

// FuzzVerify: Verify never panics, and a token it accepts is the very token
// the signer mints for the claims it returned, so no other spelling of a
// token can pass.
func FuzzVerify(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	signers := map[string]*Signer{"k1": testSigner("k1", 1), "k2": testSigner("k2", 2)}
	keys := map[string]ed25519.PublicKey{}
	for kid, s := range signers {
		keys[kid] = s.PublicKey()
	}
	revoked := NewRevocationSet("revoked")
	cached := NewVerifier(keys, revoked)
	uncached := NewVerifier(keys, revoked, WithCacheSize(0))
	f.Fuzz(func(t *testing.T, token string) {
		c1, err1 := cached.Verify(token, t0)
		c2, err2 := uncached.Verify(token, t0)
		if c1 != c2 || !sameKind(err1, err2) {
			t.Fatalf("cached Verify = %+v, %v; uncached = %+v, %v", c1, err1, c2, err2)
		}
		if err1 != nil {
			checkMessage(t, err1, token)
			return
		}
		again, err := signers[c1.KeyID].Mint(c1)
		if err != nil {
			t.Fatalf("re-minting accepted claims %+v: %v", c1, err)
		}
		if again != token {
			t.Fatalf("Verify accepted %q, but its claims mint %q", token, again)
		}
		c3, err := uncached.Verify(again, t0)
		if err != nil || c3 != c1 {
			t.Fatalf("re-minted token: %+v, %v; want %+v", c3, err, c1)
		}
	})
}

func sameKind(a, b error) bool {
	for _, e := range []error{ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrExpired, ErrNotYetValid, ErrRevoked} {
		if errors.Is(a, e) != errors.Is(b, e) {
			return false
		}
	}
	return (a == nil) == (b == nil)
}

// checkMessage fails if err's message repeats the token or a sizeable part
// of it. Short parts are skipped: "tg1" or "k1" may appear by chance.
func checkMessage(t *testing.T, err error, token string) {
	t.Helper()
	msg := err.Error()
	for _, part := range append(strings.Split(token, "."), token) {
		if len(part) >= 12 && strings.Contains(msg, part) {
			t.Fatalf("error %q contains part of the token", msg)
		}
	}
}
