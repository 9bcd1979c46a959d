package ledger

import (
	"context"
	"maps"
	"math"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Revocation is a revoked gateway token.
type Revocation struct {
	TokenID   string    `json:"token_id"`
	RevokedAt time.Time `json:"revoked_at"`
	// ExpiresAt is when the token expires anyway; the ledger forgets the
	// revocation after it.
	ExpiresAt time.Time `json:"expires_at"`
}

// maxTokenIDLen bounds a stored token id: minted ids are 22 bytes.
const maxTokenIDLen = 128

// revocationPruneDelay is how long after its token's expiry a revocation's
// row is deleted. The expiry is read on each reader's clock, the deletion
// runs on the revoker's, which may be ahead (the CLI on an operator's
// machine): deleted at once, a row would be gone for replicas that still
// take the token as unexpired, and they would accept it again.
const revocationPruneDelay = 24 * time.Hour

// RevokeToken records that the token with id tokenID is revoked until
// expiresAt, when it expires anyway. Revoking a revoked token again is not
// an error; the later expiry is kept. Revocations whose token expired
// more than revocationPruneDelay ago are deleted on the way.
func (d *DB) RevokeToken(ctx context.Context, tokenID string, expiresAt time.Time) error {
	switch {
	case tokenID == "" || len(tokenID) > maxTokenIDLen || !utf8.ValidString(tokenID):
		return invalidf("token id: want 1 to %d bytes of UTF-8", maxTokenIDLen)
	case expiresAt.IsZero():
		return invalidf("revoke token: no expiry time given")
	}
	now := d.now().UTC()
	// A token may expire after 2262, where UnixNano wraps around into the
	// past and the revocation would read as expired at once: the latest
	// time the column holds stands for any later one.
	expiresNS := int64(math.MaxInt64)
	if expiresAt.Before(time.Unix(0, math.MaxInt64)) {
		expiresNS = expiresAt.UnixNano()
	}
	_, err := d.b.exec(ctx, `INSERT INTO revoked_tokens (token_id, revoked_ns, expires_ns) VALUES (?, ?, ?)
		ON CONFLICT (token_id) DO UPDATE SET expires_ns = excluded.expires_ns
		WHERE excluded.expires_ns > revoked_tokens.expires_ns`, tokenID, now.UnixNano(), expiresNS)
	if err == nil {
		_, err = d.b.exec(ctx, `DELETE FROM revoked_tokens WHERE expires_ns <= ?`, now.Add(-revocationPruneDelay).UnixNano())
	}
	return wrap("revoke token", err)
}

// Revocations returns the revocations of tokens not yet expired that were
// revoked at or after since (the zero time: all of them), oldest first.
func (d *DB) Revocations(ctx context.Context, since time.Time) ([]Revocation, error) {
	var (
		out     []Revocation
		sinceNS int64 = -1 << 63
	)
	if !since.IsZero() {
		sinceNS = since.UnixNano()
	}
	err := d.b.query(ctx, `SELECT token_id, revoked_ns, expires_ns FROM revoked_tokens
		WHERE revoked_ns >= ? AND expires_ns > ? ORDER BY revoked_ns, token_id`,
		[]any{sinceNS, d.now().UnixNano()}, func(scan func(...any) error) error {
			var (
				r                  Revocation
				revoked, expiresNS int64
			)
			if err := scan(&r.TokenID, &revoked, &expiresNS); err != nil {
				return err
			}
			r.RevokedAt, r.ExpiresAt = time.Unix(0, revoked).UTC(), time.Unix(0, expiresNS).UTC()
			out = append(out, r)
			return nil
		})
	if err != nil {
		return nil, wrap("list revocations", err)
	}
	return out, nil
}

// RevocationWatchOptions tune WatchRevocations.
type RevocationWatchOptions struct {
	// Every is how often the ledger is polled for new revocations, which
	// bounds how long a token revoked elsewhere is still accepted here
	// (default one second).
	Every time.Duration
	// Overlap is how far before the latest revocation seen each poll looks
	// again, so that one stamped by a replica whose clock is behind, or
	// committed a moment after a later one, is still found (default one
	// minute). A full reload every Overlap catches anything older and
	// forgets expired tokens.
	Overlap time.Duration
	// OnError is told when a poll fails; the last list read stays in force,
	// so an outage never un-revokes a token. nil: errors are dropped.
	OnError func(error)
}

// RevocationWatch is the ledger's list of revoked token ids, kept in
// memory and refreshed by polling; Revoked answers without touching the
// database. It implements auth.Revocations.
type RevocationWatch struct {
	ids    atomic.Pointer[map[string]struct{}]
	cancel context.CancelFunc
	done   chan struct{}
}

// WatchRevocations reads every revocation of an unexpired token, then
// keeps polling for new ones until Close. The first read's error is
// returned: a gateway must not start with no revocation list.
func (d *DB) WatchRevocations(ctx context.Context, o RevocationWatchOptions) (*RevocationWatch, error) {
	if o.Every <= 0 {
		o.Every = time.Second
	}
	if o.Overlap <= 0 {
		o.Overlap = time.Minute
	}
	w := &RevocationWatch{done: make(chan struct{})}
	latest, err := w.load(ctx, d, time.Time{}, time.Time{})
	if err != nil {
		return nil, err
	}
	ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(w.done)
		tick := time.NewTicker(o.Every)
		defer tick.Stop()
		lastFull := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			since := latest.Add(-o.Overlap)
			full := time.Since(lastFull) >= o.Overlap
			if full {
				since = time.Time{}
			}
			l, err := w.load(ctx, d, since, latest)
			if err != nil {
				if o.OnError != nil && ctx.Err() == nil {
					o.OnError(err)
				}
				continue
			}
			latest = l
			if full {
				lastFull = time.Now()
			}
		}
	}()
	return w, nil
}

// load reads the revocations since (all when zero, replacing the set;
// otherwise adding to it) and returns the latest revocation time seen.
func (w *RevocationWatch) load(ctx context.Context, d *DB, since, latest time.Time) (time.Time, error) {
	rs, err := d.Revocations(ctx, since)
	if err != nil {
		return latest, err
	}
	old := w.ids.Load()
	var ids map[string]struct{}
	if since.IsZero() || old == nil {
		ids = make(map[string]struct{}, len(rs))
	}
	for _, r := range rs {
		if r.RevokedAt.After(latest) {
			latest = r.RevokedAt
		}
		if ids == nil {
			if _, ok := (*old)[r.TokenID]; ok {
				continue
			}
			ids = maps.Clone(*old) // copy on the first change only
		}
		ids[r.TokenID] = struct{}{}
	}
	if ids != nil {
		w.ids.Store(&ids)
	}
	return latest, nil
}

// Revoked reports whether the ledger, as last read, revokes tokenID.
func (w *RevocationWatch) Revoked(tokenID string) bool {
	_, ok := (*w.ids.Load())[tokenID]
	return ok
}

// Len returns how many unexpired tokens are revoked, as last read.
func (w *RevocationWatch) Len() int { return len(*w.ids.Load()) }

// Close stops polling and waits for a poll in progress to end.
func (w *RevocationWatch) Close() {
	w.cancel()
	<-w.done
}
