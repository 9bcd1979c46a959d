package auth

import (
	"crypto/ed25519"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Revocations says whether a token id has been revoked. Verify asks on
// every call, cached or not, so implementations must be fast and safe for
// concurrent use.
type Revocations interface {
	Revoked(tokenID string) bool
}

// RevocationSet is an in-memory Revocations. Reads take no lock: Revoked
// is on every request's path while revocations are rare, so a change
// copies the set and swaps it in. The zero value is an empty set.
type RevocationSet struct {
	mu  sync.Mutex // serialises writers
	ids atomic.Pointer[map[string]struct{}]
}

// NewRevocationSet returns a set holding ids.
func NewRevocationSet(ids ...string) *RevocationSet {
	s := new(RevocationSet)
	s.Add(ids...)
	return s
}

// Revoked reports whether tokenID is in the set.
func (s *RevocationSet) Revoked(tokenID string) bool {
	m := s.ids.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[tokenID]
	return ok
}

// Add revokes ids; Verify refuses their tokens from the next call on.
func (s *RevocationSet) Add(ids ...string) {
	s.update(func(m map[string]struct{}) {
		for _, id := range ids {
			m[id] = struct{}{}
		}
	})
}

// Remove takes ids out of the set.
func (s *RevocationSet) Remove(ids ...string) {
	s.update(func(m map[string]struct{}) {
		for _, id := range ids {
			delete(m, id)
		}
	})
}

// Len returns how many ids are revoked.
func (s *RevocationSet) Len() int {
	if m := s.ids.Load(); m != nil {
		return len(*m)
	}
	return 0
}

func (s *RevocationSet) update(change func(map[string]struct{})) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]struct{})
	if old := s.ids.Load(); old != nil {
		m = maps.Clone(*old)
	}
	change(m)
	s.ids.Store(&m)
}

// DefaultCacheSize is how many verified tokens a Verifier remembers. A
// deployment holds about one token per project, so a few thousand cover
// every active one.
const DefaultCacheSize = 4096

// Verifier checks tokens against a fixed set of public keys. It is safe for
// concurrent use. To change the keys, build a new Verifier: the cache is
// only sound because the keys never change under it.
type Verifier struct {
	keys    map[string]ed25519.PublicKey
	revoked Revocations
	// cache maps token strings whose signature verified to their claims,
	// so a repeat caller skips the ed25519 check (tens of microseconds).
	// Only signed tokens get in, so garbage cannot evict good entries;
	// expiry and revocation are checked again on every hit.
	cache *lru.Cache[string, Claims]
}

// VerifierOption configures NewVerifier.
type VerifierOption func(*Verifier)

// WithCacheSize sets how many verified tokens the Verifier remembers
// (DefaultCacheSize if not given); 0 or less turns the cache off.
func WithCacheSize(n int) VerifierOption {
	return func(v *Verifier) {
		v.cache = nil
		if n > 0 {
			v.cache, _ = lru.New[string, Claims](n) // fails only for n <= 0
		}
	}
}

// NewVerifier returns a Verifier trusting keys, by key id, and refusing
// tokens revoked says are revoked (nil for none). It keeps a copy of keys.
func NewVerifier(keys map[string]ed25519.PublicKey, revoked Revocations, opts ...VerifierOption) *Verifier {
	v := &Verifier{
		keys:    make(map[string]ed25519.PublicKey, len(keys)),
		revoked: revoked,
	}
	for kid, pub := range keys {
		v.keys[kid] = append(ed25519.PublicKey(nil), pub...)
	}
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
	if v.cache != nil && len(token) <= maxTokenLen {
		if c, ok := v.cache.Get(token); ok {
			return v.check(c, now)
		}
	}
	c, signed, sig, err := parse(token)
	if err != nil {
		return Claims{}, err
	}
	pub, ok := v.keys[c.KeyID]
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
		v.cache.Add(strings.Clone(token), c)
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
