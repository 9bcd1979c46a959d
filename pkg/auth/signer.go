package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Signer mints tokens with one private key. It lives with the controller
// that hands out tokens, never in the processor.
type Signer struct {
	kid  string
	priv ed25519.PrivateKey
}

// NewSigner returns a Signer for priv under key id kid. A kid that is not a
// valid claim or a key of the wrong size makes Mint fail.
func NewSigner(kid string, priv ed25519.PrivateKey) *Signer {
	return &Signer{kid: kid, priv: priv}
}

// GenerateKey returns a Signer with a new random key. An empty kid is
// derived from the public key (KeyIDFor).
func GenerateKey(kid string) (*Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("auth: generate key: %w", err)
	}
	if kid == "" {
		kid = KeyIDFor(priv.Public().(ed25519.PublicKey))
	}
	return NewSigner(kid, priv), nil
}

// KeyIDFor derives a key id from a public key: the first 8 bytes of its
// SHA-256 in hex. Deriving it means a key file needs no separate id and
// two different keys practically never share one.
func KeyIDFor(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// KeyID returns the id tokens from s carry.
func (s *Signer) KeyID() string { return s.kid }

// PublicKey returns the key that verifies tokens from s.
func (s *Signer) PublicKey() ed25519.PublicKey {
	return append(ed25519.PublicKey(nil), s.priv.Public().(ed25519.PublicKey)...)
}

// Mint signs c into a token. KeyID defaults to the signer's and must match
// it if set; TokenID defaults to 128 random bits and IssuedAt to now.
// Times are kept to the second. Mint refuses an empty account or project
// and an ExpiresAt not after IssuedAt: a token that never expires is not
// something to create by leaving a field out.
func (s *Signer) Mint(c Claims) (string, error) {
	if len(s.priv) != ed25519.PrivateKeySize {
		return "", errors.New("auth: mint: signer has no valid ed25519 private key")
	}
	switch c.KeyID {
	case "":
		c.KeyID = s.kid
	case s.kid:
	default:
		return "", fmt.Errorf("auth: mint: claims name key %q but the signer's key is %q", c.KeyID, s.kid)
	}
	if c.TokenID == "" {
		id, err := newTokenID()
		if err != nil {
			return "", fmt.Errorf("auth: mint: %w", err)
		}
		c.TokenID = id
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	tok := s.sign(encodePayload(c))
	if len(tok) > maxTokenLen {
		return "", fmt.Errorf("auth: mint: token would be %d bytes, over the %d a verifier accepts", len(tok), maxTokenLen)
	}
	return tok, nil
}

// sign assembles a token around an encoded payload.
func (s *Signer) sign(payload []byte) string {
	buf := make([]byte, 0, len(Prefix)+1+base64.RawURLEncoding.EncodedLen(len(payload))+1+sigB64Len)
	buf = append(buf, Prefix+"."...)
	buf = base64.RawURLEncoding.AppendEncode(buf, payload)
	sig := ed25519.Sign(s.priv, buf)
	buf = append(buf, '.')
	buf = base64.RawURLEncoding.AppendEncode(buf, sig)
	return string(buf)
}

// newTokenID returns 128 random bits in hex: enough that ids never collide,
// so revoking one token never revokes another. Hex, not base64url, because
// operators pass ids on command lines, where one in 64 base64url ids would
// start with '-' and parse as a flag.
func newTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// URLSafe reports whether s is made only of letters, digits, '-' and '_':
// the characters of token ids (base64url, before hex), and of the provider
// keys an operator may paste where an id or a file's path belongs.
func URLSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
