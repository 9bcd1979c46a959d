package auth

import (
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// DefaultCacheSize is how many verified tokens a Verifier remembers. A
// deployment holds about one token per project, so a few thousand cover
// every active one.
const DefaultCacheSize = 4096

// Verifier checks tokens against the keys of a KeySet. It is safe for
// concurrent use.
type Verifier struct {
	keys    *KeySet
	revoked Revocations
	// cache maps token strings whose signature verified to their claims,
	// so a repeat caller skips the ed25519 check (tens of microseconds).
	// Only signed tokens get in, so garbage cannot evict good entries;
	// expiry and revocation are checked again on every hit, and an entry
	// from before the keys changed is verified again.
	cache *lru.Cache[string, verified]
}

type verified struct {
	claims Claims
	gen    uint64 // the KeySet generation that verified it
}

// VerifierOption configures NewVerifier.
type VerifierOption func(*Verifier)

// WithCacheSize sets how many verified tokens the Verifier remembers
// (DefaultCacheSize if not given); 0 or less turns the cache off.
func WithCacheSize(n int) VerifierOption {
	return func(v *Verifier) {
		v.cache = nil
		if n > 0 {
			v.cache, _ = lru.New[string, verified](n) // fails only for n <= 0
		}
	}
}

// NewVerifier returns a Verifier trusting keys, by key id, and refusing
// tokens revoked says are revoked (nil for none). It keeps a copy of keys.
func NewVerifier(keys map[string]ed25519.PublicKey, revoked Revocations, opts ...VerifierOption) *Verifier {
	return NewKeySetVerifier(NewKeySet(nil, keys), revoked, opts...)
}

// NewKeySetVerifier returns a Verifier trusting the keys ks holds at each
// call, and refusing tokens revoked says are revoked (nil for none).
func NewKeySetVerifier(ks *KeySet, revoked Revocations, opts ...VerifierOption) *Verifier {
	v := &Verifier{keys: ks, revoked: revoked}
	WithCacheSize(DefaultCacheSize)(v)
	for _, opt := range opts {
		opt(v)
	}
	return v
}

// Verify checks token's form, key, signature, validity period at now and
// revocation, and returns its claims. When the signature is good but the
// token has expired, is not yet valid or is revoked, the claims come back
// with the error, so a rejection can still be counted against its account.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	keys := v.keys.cur.Load()
	if v.cache != nil && len(token) <= maxTokenLen {
		if e, ok := v.cache.Get(token); ok && e.gen == keys.gen {
			return v.check(e.claims, now)
		}
	}
	c, signed, sig, err := parse(token)
	if err != nil {
		return Claims{}, err
	}
	pub, ok := keys.keys[c.KeyID]
	if !ok {
		return Claims{}, fmt.Errorf("%w: key id %q", ErrUnknownKey, c.KeyID)
	}
	if len(pub) != ed25519.PublicKeySize {
		return Claims{}, fmt.Errorf("%w: key id %q has no valid ed25519 public key", ErrUnknownKey, c.KeyID)
	}
	if !ed25519.Verify(pub, []byte(signed), sig) {
		return Claims{}, ErrBadSignature
	}
	if v.cache != nil {
		// The caller's string may point into a whole request buffer;
		// a copy keeps the cache from holding that alive.
		v.cache.Add(strings.Clone(token), verified{claims: c, gen: keys.gen})
	}
	return v.check(c, now)
}

// check applies the time and revocation rules to claims whose signature
// has been verified.
func (v *Verifier) check(c Claims, now time.Time) (Claims, error) {
	switch {
	case !now.Before(c.ExpiresAt):
		return c, ErrExpired
	case c.IssuedAt.After(now.Add(ClockSkew)):
		return c, ErrNotYetValid
	case v.revoked != nil && v.revoked.Revoked(c.TokenID):
		return c, ErrRevoked
	}
	return c, nil
}
