package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// RequestIDs makes the ids that key usage records. Adapters always make
// their own: a client-chosen id could collide with another request's and be
// billed once, or knock out another tenant's record. A random prefix per
// source keeps ids unique across replicas and restarts without coordination;
// a counter keeps them cheap.
type RequestIDs struct {
	prefix string
	seq    atomic.Uint64
}

// NewRequestIDs returns a source with a fresh random prefix.
func NewRequestIDs() *RequestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &RequestIDs{prefix: "tg-" + hex.EncodeToString(b[:]) + "-"}
}

// Next returns a new id. It is safe for concurrent use.
func (s *RequestIDs) Next() string {
	return s.prefix + strconv.FormatUint(s.seq.Add(1), 36)
}
