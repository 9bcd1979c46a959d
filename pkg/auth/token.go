// Package auth mints and verifies gateway tokens: the credential a workload
// holds instead of a provider key.
//
// A token names an account, a project and the key that signed it, and
// expires. It is signed with ed25519 so that the processor, which verifies
// every request, holds only public keys: a processor compromise leaks no
// way to mint tokens. Keys rotate by key id (a verifier trusts several);
// single tokens are withdrawn by token id (a revocation set).
//
// The wire form is
//
//	tg1.<base64url(payload JSON)>.<base64url(ed25519 signature)>
//
// with unpadded base64url, the signature covering "tg1.<payload>". The
// fixed "tg1." prefix lets people and secret scanners recognise a leaked
// token, and versions the format. The payload is
//
//	{"kid":"…","acc":"…","prj":"…","iat":1767225600,"exp":1798761600,"jti":"…"}
//
// with the fields in that order, times in Unix seconds and jti 128 random
// bits in base64url. Exactly one string encodes a given set of claims
// under a given key: Parse refuses any other spelling of the same payload
// (other key order, spaces, escapes, base64 padding or stray bits), so a
// token cannot be altered and still be accepted, and a cache keyed by the
// token string cannot be bypassed by re-spelling it.
package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Prefix starts every token; its dot follows.
const Prefix = "tg1"

// Errors returned by Parse and Verify, for errors.Is. Their messages, and
// those of the errors wrapping them, never contain the token.
var (
	ErrMalformed    = errors.New("auth: malformed token")
	ErrUnknownKey   = errors.New("auth: token signed by an unknown key")
	ErrBadSignature = errors.New("auth: bad token signature")
	ErrExpired      = errors.New("auth: token expired")
	ErrNotYetValid  = errors.New("auth: token not yet valid")
	ErrRevoked      = errors.New("auth: token revoked")
)

// ClockSkew is how far in the future a token's issue time may be before it
// is refused: the minting controller's clock and the processor's may
// disagree a little, and a fresh token should not fail for that.
const ClockSkew = 60 * time.Second

const (
	// maxFieldLen bounds each string claim, and with it the token: a
	// token travels in a header on every request.
	maxFieldLen = 128
	// maxTokenLen bounds a token, so anything longer is refused before
	// any decoding. Mint refuses to produce a longer one (possible only
	// with long claims full of characters JSON escapes); real tokens are
	// around 250 bytes.
	maxTokenLen = 4096
	sigB64Len   = 86 // base64url of an ed25519 signature, unpadded
)

// Claims are what a token asserts.
type Claims struct {
	KeyID     string    // the signing key's id
	Account   string    // billed for the requests
	Project   string    // the scope the token works in
	TokenID   string    // unique per token, for revocation
	IssuedAt  time.Time // second precision, UTC once parsed
	ExpiresAt time.Time // the token is refused from this instant on
}

// payload is the JSON form of Claims. Its field order is the wire order.
type payload struct {
	KeyID     string `json:"kid"`
	Account   string `json:"acc"`
	Project   string `json:"prj"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	TokenID   string `json:"jti"`
}

// encodePayload is the one canonical payload for c.
func encodePayload(c Claims) []byte {
	b, err := json.Marshal(payload{
		KeyID:     c.KeyID,
		Account:   c.Account,
		Project:   c.Project,
		IssuedAt:  c.IssuedAt.Unix(),
		ExpiresAt: c.ExpiresAt.Unix(),
		TokenID:   c.TokenID,
	})
	if err != nil {
		panic("auth: encoding a struct of strings and integers failed: " + err.Error())
	}
	return b
}

// validate checks what both Mint and Parse require of claims.
func (c Claims) validate() error {
	for _, f := range [...]struct{ name, v string }{
		{"key id", c.KeyID},
		{"account", c.Account},
		{"project", c.Project},
		{"token id", c.TokenID},
	} {
		if err := checkField(f.v); err != nil {
			return fmt.Errorf("%s %w", f.name, err)
		}
	}
	if c.IssuedAt.Unix() <= 0 {
		// Also keeps a parsed IssuedAt from being the zero time.Time,
		// which Mint would read as "not set".
		return errors.New("issue time is not after 1970")
	}
	if c.ExpiresAt.Unix() <= c.IssuedAt.Unix() {
		return errors.New("lifetime is not positive: expiry is not after issue time")
	}
	return nil
}

// checkField keeps claims printable and of bounded size: they end up in
// logs, metrics and error messages, and invalid UTF-8 would not survive
// the JSON round trip.
func checkField(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > maxFieldLen:
		return fmt.Errorf("is longer than %d bytes", maxFieldLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.ContainsFunc(s, unicode.IsControl):
		return errors.New("contains control characters")
	}
	return nil
}

// Parse decodes a token without verifying its signature or times, for
// tools that show what a token says (tollgate token inspect). Never trust
// its result for access: use Verifier.Verify.
func Parse(token string) (Claims, error) {
	c, _, _, err := parse(token)
	return c, err
}

// parse decodes token into its claims, the signed part and the signature.
func parse(token string) (c Claims, signed string, sig []byte, err error) {
	if len(token) > maxTokenLen {
		return Claims{}, "", nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenLen)
	}
	rest, ok := strings.CutPrefix(token, Prefix+".")
	if !ok {
		return Claims{}, "", nil, fmt.Errorf("%w: no %q prefix", ErrMalformed, Prefix+".")
	}
	payloadB64, sigB64, ok := strings.Cut(rest, ".")
	if !ok || payloadB64 == "" {
		return Claims{}, "", nil, fmt.Errorf("%w: want three parts separated by dots", ErrMalformed)
	}
	if len(sigB64) != sigB64Len {
		return Claims{}, "", nil, fmt.Errorf("%w: signature has the wrong length", ErrMalformed)
	}
	sig = make([]byte, ed25519.SignatureSize)
	if _, err := base64.RawURLEncoding.Decode(sig, []byte(sigB64)); err != nil || !isEncoding(sig, sigB64) {
		return Claims{}, "", nil, fmt.Errorf("%w: signature is not canonical base64url", ErrMalformed)
	}
	raw, err := base64.RawURLEncoding.DecodeString(payloadB64)
	if err != nil {
		return Claims{}, "", nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err != nil {
		// The JSON error would quote part of the payload, so it is left
		// out of the message.
		return Claims{}, "", nil, fmt.Errorf("%w: payload is not the expected JSON object", ErrMalformed)
	}
	c = Claims{
		KeyID:     p.KeyID,
		Account:   p.Account,
		Project:   p.Project,
		TokenID:   p.TokenID,
		IssuedAt:  time.Unix(p.IssuedAt, 0).UTC(),
		ExpiresAt: time.Unix(p.ExpiresAt, 0).UTC(),
	}
	if err := c.validate(); err != nil {
		return Claims{}, "", nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// One comparison makes both layers canonical: the JSON (key order,
	// spacing, escapes, duplicate or unknown keys) and the base64, whose
	// decoder would otherwise skip CR and LF and ignore stray low bits.
	if !isEncoding(encodePayload(c), payloadB64) {
		return Claims{}, "", nil, fmt.Errorf("%w: payload is not in canonical form", ErrMalformed)
	}
	return c, token[:len(Prefix)+1+len(payloadB64)], sig, nil
}

// isEncoding reports whether s is exactly the token encoding of b:
// base64url without padding. Decoding is lenient (it skips CR and LF and
// ignores stray low bits), so parse checks that each part re-encodes to
// itself.
func isEncoding(b []byte, s string) bool {
	var buf [maxTokenLen]byte
	if base64.RawURLEncoding.EncodedLen(len(b)) != len(s) || len(s) > len(buf) {
		return false
	}
	out := buf[:len(s)]
	base64.RawURLEncoding.Encode(out, b)
	return string(out) == s
}
