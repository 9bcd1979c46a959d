package auth

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Revocations says whether a token id has been revoked. Verify asks on
// every call, cached or not, so implementations must be fast and safe for
// concurrent use.
type Revocations interface {
	Revoked(tokenID string) bool
}

// AnyRevocations revokes a token that any of its lists revokes, e.g. the
// ledger's list shared by every replica and a data dir's revocation file.
type AnyRevocations []Revocations

// Revoked implements Revocations.
func (a AnyRevocations) Revoked(tokenID string) bool {
	for _, r := range a {
		if r.Revoked(tokenID) {
			return true
		}
	}
	return false
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
	if s == nil {
		return false
	}
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

// update applies change to a copy of the set and swaps the copy in.
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
