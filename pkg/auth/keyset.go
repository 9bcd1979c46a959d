package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// KeySet is the keys in force: the signer new tokens are minted with and
// every key tokens are verified with. Its keys can be replaced while
// tokens are being minted and verified, so a key is rotated without a
// restart. It is safe for concurrent use; make one with NewKeySet.
type KeySet struct {
	cur atomic.Pointer[keySnapshot]
}

type keySnapshot struct {
	signer *Signer // nil: verification only
	keys   map[string]ed25519.PublicKey
	// gen tells a Verifier's cached tokens which key set verified them.
	gen uint64
}

// ErrNoSigner is returned by Mint on a KeySet that only verifies.
var ErrNoSigner = errors.New("auth: no signing key")

// NewKeySet returns a KeySet minting with signer (nil: none) and trusting
// keys, by key id. It keeps a copy of keys.
func NewKeySet(signer *Signer, keys map[string]ed25519.PublicKey) *KeySet {
	ks := &KeySet{}
	ks.Set(signer, keys)
	return ks
}

// Set replaces the signer and the trusted keys. Tokens verified with a key
// no longer trusted are refused from then on, cached or not.
func (ks *KeySet) Set(signer *Signer, keys map[string]ed25519.PublicKey) {
	next := &keySnapshot{signer: signer, keys: make(map[string]ed25519.PublicKey, len(keys))}
	for kid, pub := range keys {
		next.keys[kid] = append(ed25519.PublicKey(nil), pub...)
	}
	for {
		old := ks.cur.Load()
		if old != nil {
			next.gen = old.gen + 1
		}
		if ks.cur.CompareAndSwap(old, next) {
			return
		}
	}
}

// Mint signs c with the current signer.
func (ks *KeySet) Mint(c Claims) (string, error) {
	s := ks.cur.Load().signer
	if s == nil {
		return "", ErrNoSigner
	}
	return s.Mint(c)
}

// SignerID is the key id new tokens are signed with ("" if none).
func (ks *KeySet) SignerID() string {
	if s := ks.cur.Load().signer; s != nil {
		return s.KeyID()
	}
	return ""
}

// KeyIDs lists the trusted key ids, sorted.
func (ks *KeySet) KeyIDs() []string {
	return slices.Sorted(maps.Keys(ks.cur.Load().keys))
}

// same reports whether signer and keys are what ks holds now.
func (ks *KeySet) same(signer *Signer, keys map[string]ed25519.PublicKey) bool {
	cur := ks.cur.Load()
	if (cur.signer == nil) != (signer == nil) || signer != nil && cur.signer.KeyID() != signer.KeyID() {
		return false
	}
	return maps.EqualFunc(cur.keys, keys, func(a, b ed25519.PublicKey) bool { return a.Equal(b) })
}

// KeyDirWatch keeps a KeySet in step with a signing-key directory.
type KeyDirWatch struct {
	// Interval between reads of the directory (default 10s).
	Interval time.Duration
	// SignAfter is how long a key added while the watch runs is trusted
	// before it signs. Replicas read a mounted Secret at different times
	// (the kubelet syncs each pod's volume on its own, within a minute or
	// two), so a key must be trusted everywhere before anyone signs with
	// it, or a token minted through one replica is refused by another.
	// Zero: a new key signs from the read that finds it.
	SignAfter time.Duration
	// OnChange is told the new signer's key id and trusted key ids after
	// each change; OnError is told why a read was refused, the keys in
	// force staying as they were. Both may be nil.
	OnChange func(signer string, keys []string)
	OnError  func(error)
}

// Run re-reads dir every Interval until ctx ends, and puts what it finds
// into ks when it differs: every key there verifies at once; the key whose
// id sorts last among those seen for SignAfter signs (the keys ks held
// when Run started count as seen long ago), or, if none has been, the last
// of all. A directory that cannot be read, or holds no key or a bad one,
// changes nothing: a half-written rotation never leaves the gateway
// without keys.
func (w KeyDirWatch) Run(ctx context.Context, dir string, ks *KeySet) {
	interval := w.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	seen := make(map[string]time.Time) // key id → first read that found it
	for _, kid := range ks.KeyIDs() {
		seen[kid] = time.Time{}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		signers, err := loadKeyDirSigners(dir)
		if err != nil {
			if w.OnError != nil {
				w.OnError(err)
			}
			continue
		}
		now := time.Now()
		var signer, newest *Signer
		keys := make(map[string]ed25519.PublicKey, len(signers))
		for kid, s := range signers {
			keys[kid] = s.PublicKey()
			first, ok := seen[kid]
			if !ok {
				first = now
				seen[kid] = now
			}
			if newest == nil || kid > newest.KeyID() {
				newest = s
			}
			if now.Sub(first) >= w.SignAfter && (signer == nil || kid > signer.KeyID()) {
				signer = s
			}
		}
		if signer == nil {
			signer = newest
		}
		for kid := range seen {
			if _, ok := signers[kid]; !ok {
				delete(seen, kid) // a key put back later waits again
			}
		}
		if ks.same(signer, keys) {
			continue
		}
		ks.Set(signer, keys)
		if w.OnChange != nil {
			w.OnChange(signer.KeyID(), ks.KeyIDs())
		}
	}
}
