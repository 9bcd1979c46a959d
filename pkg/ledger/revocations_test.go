package ledger

import (
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/services"
)

// clock is a settable d.now, safe to read from a watch's goroutine.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := new(clock)
	c.set(t)
	return c
}
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// TestRevocations runs on both backends, each test with two handles on one
// database: what one replica revokes, another reads.
func TestRevocations(t *testing.T) {
	tests := []struct {
		name string
		test func(t *testing.T, a, b *DB)
	}{
		{"RevokeAndList", testRevokeAndList},
		{"Watch", testRevocationWatch},
		{"WatchFullReload", testRevocationWatchFullReload},
		{"PruneUnderClockSkew", testRevocationPruneUnderClockSkew},
		{"FarExpiry", testRevocationFarExpiry},
	}
	t.Run("sqlite", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				url := "sqlite://" + filepath.Join(t.TempDir(), "usage.db")
				tt.test(t, openURL(t, url), openURL(t, url))
			})
		}
	})
	t.Run("postgres", func(t *testing.T) {
		pg := services.StartPostgres(t)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				url := pg.NewDatabase(t)
				tt.test(t, openURL(t, url), openURL(t, url))
			})
		}
	})
}

var revokeT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func tokenIDs(rs []Revocation) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.TokenID)
	}
	return out
}

func testRevokeAndList(t *testing.T, a, b *DB) {
	ctx := t.Context()
	clk := newClock(revokeT0)
	a.now, b.now = clk.now, clk.now

	for _, bad := range []struct {
		id  string
		exp time.Time
	}{
		{"", revokeT0.Add(time.Hour)},
		{string(make([]byte, 129)), revokeT0.Add(time.Hour)},
		{"\xff\xfe", revokeT0.Add(time.Hour)},
		{"tok-zero-expiry", time.Time{}},
	} {
		if err := a.RevokeToken(ctx, bad.id, bad.exp); !errors.Is(err, ErrInvalid) {
			t.Errorf("RevokeToken(%q, %v) = %v, want ErrInvalid", bad.id, bad.exp, err)
		}
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.RevokeToken(ctx, "tok-a", revokeT0.Add(24*time.Hour)))
	clk.add(time.Second)
	must(b.RevokeToken(ctx, "tok-short", revokeT0.Add(10*time.Second)))
	clk.add(time.Second)
	must(a.RevokeToken(ctx, "tok-c", revokeT0.Add(48*time.Hour)))
	// Again with an earlier expiry: kept as it was; with a later one: extended.
	must(b.RevokeToken(ctx, "tok-c", revokeT0.Add(time.Hour)))
	must(b.RevokeToken(ctx, "tok-a", revokeT0.Add(72*time.Hour)))

	all, err := b.Revocations(ctx, time.Time{})
	must(err)
	if got := tokenIDs(all); !slices.Equal(got, []string{"tok-a", "tok-short", "tok-c"}) {
		t.Fatalf("Revocations(all) = %v, want tok-a, tok-short, tok-c in revocation order", got)
	}
	want := []Revocation{
		{"tok-a", revokeT0, revokeT0.Add(72 * time.Hour)},
		{"tok-short", revokeT0.Add(time.Second), revokeT0.Add(10 * time.Second)},
		{"tok-c", revokeT0.Add(2 * time.Second), revokeT0.Add(48 * time.Hour)},
	}
	for i, r := range all {
		if !r.RevokedAt.Equal(want[i].RevokedAt) || !r.ExpiresAt.Equal(want[i].ExpiresAt) {
			t.Errorf("revocation %d = %+v, want %+v", i, r, want[i])
		}
	}
	since, err := a.Revocations(ctx, revokeT0.Add(time.Second))
	must(err)
	if got := tokenIDs(since); !slices.Equal(got, []string{"tok-short", "tok-c"}) {
		t.Errorf("Revocations(since t0+1s) = %v, want tok-short, tok-c", got)
	}

	// Past tok-short's expiry it is no longer listed; its row is deleted
	// by a revocation a day later, not before (testRevocationPruneUnderClockSkew).
	clk.set(revokeT0.Add(10 * time.Second))
	all, err = a.Revocations(ctx, time.Time{})
	must(err)
	if got := tokenIDs(all); !slices.Equal(got, []string{"tok-a", "tok-c"}) {
		t.Errorf("after tok-short expired: %v, want tok-a, tok-c", got)
	}
	clk.set(revokeT0.Add(10*time.Second + revocationPruneDelay))
	must(a.RevokeToken(ctx, "tok-d", revokeT0.Add(100*time.Hour)))
	clk.set(revokeT0.Add(5 * time.Second))
	all, err = b.Revocations(ctx, time.Time{})
	must(err)
	if got := tokenIDs(all); !slices.Equal(got, []string{"tok-a", "tok-c", "tok-d"}) {
		t.Errorf("after pruning: %v, want tok-a, tok-c, tok-d (tok-short's row deleted)", got)
	}
}

// testRevocationFarExpiry: a token may expire after 2262, past what
// nanoseconds since 1970 hold in an int64 (the verifier takes any expiry
// a signer wrote); its revocation must hold, not wrap around into the past
// and be dropped as expired.
func testRevocationFarExpiry(t *testing.T, a, b *DB) {
	ctx := t.Context()
	clk := newClock(revokeT0)
	a.now, b.now = clk.now, clk.now
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := a.RevokeToken(ctx, "far-future", far); err != nil {
		t.Fatal(err)
	}
	all, err := b.Revocations(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tokenIDs(all); !slices.Equal(got, []string{"far-future"}) {
		t.Fatalf("revocations %v, want far-future", got)
	}
	if !all[0].ExpiresAt.After(revokeT0.Add(200 * 365 * 24 * time.Hour)) {
		t.Errorf("expiry read back as %v, want the latest a ledger holds", all[0].ExpiresAt)
	}
}

// testRevocationPruneUnderClockSkew: a revocation made where the clock is
// ahead (an operator's laptop running the CLI against the shared ledger)
// must not delete the rows of tokens that have expired by its clock only:
// a replica whose clock is right would accept such a revoked token again
// until it expires there.
func testRevocationPruneUnderClockSkew(t *testing.T, a, b *DB) {
	ctx := t.Context()
	clkA, clkB := newClock(revokeT0.Add(3*time.Hour)), newClock(revokeT0)
	a.now, b.now = clkA.now, clkB.now
	if err := b.RevokeToken(ctx, "leaked", revokeT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeToken(ctx, "other", revokeT0.Add(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	all, err := b.Revocations(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tokenIDs(all); !slices.Contains(got, "leaked") {
		t.Errorf("revocations %v: a revocation through a handle 3h ahead deleted \"leaked\", which expires in 1h", got)
	}
}

// waitFor polls cond every few milliseconds for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
	}
}

func testRevocationWatch(t *testing.T, a, b *DB) {
	ctx := t.Context()
	clkA, clkB := newClock(revokeT0), newClock(revokeT0)
	a.now, b.now = clkA.now, clkB.now
	if err := a.RevokeToken(ctx, "before-start", revokeT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var errs atomic.Int64
	w, err := b.WatchRevocations(ctx, RevocationWatchOptions{Every: 10 * time.Millisecond, OnError: func(error) { errs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Revoked("before-start") || w.Revoked("other") || w.Len() != 1 {
		t.Fatalf("after the first read: before-start %v, other %v, len %d", w.Revoked("before-start"), w.Revoked("other"), w.Len())
	}

	clkA.add(time.Minute)
	if err := a.RevokeToken(ctx, "later", revokeT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a revocation through the other handle", func() bool { return w.Revoked("later") })

	// A replica whose clock is 30s behind stamps its revocation before the
	// latest one seen: the overlap (a minute by default) still finds it.
	clkA.add(-30 * time.Second)
	if err := a.RevokeToken(ctx, "slow-clock", revokeT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a revocation stamped in the past", func() bool { return w.Revoked("slow-clock") })
	if !w.Revoked("before-start") || w.Len() != 3 {
		t.Errorf("set lost entries: len %d", w.Len())
	}
	if n := errs.Load(); n != 0 {
		t.Errorf("%d poll errors", n)
	}
	w.Close()
	w.Close() // a second Close is harmless
}

func testRevocationWatchFullReload(t *testing.T, a, b *DB) {
	ctx := t.Context()
	clkA, clkB := newClock(revokeT0), newClock(revokeT0)
	a.now, b.now = clkA.now, clkB.now
	if err := a.RevokeToken(ctx, "expiring", revokeT0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	w, err := b.WatchRevocations(ctx, RevocationWatchOptions{Every: 5 * time.Millisecond, Overlap: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Revoked("expiring") {
		t.Fatal("first read missed a revocation")
	}
	// Stamped an hour before anything seen: only a full reload finds it.
	clkA.add(-time.Hour)
	if err := a.RevokeToken(ctx, "far-behind", revokeT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a revocation far behind, by a full reload", func() bool { return w.Revoked("far-behind") })
	// Once its token has expired, a full reload forgets a revocation.
	clkB.add(2 * time.Minute)
	waitFor(t, "forgetting an expired token", func() bool { return !w.Revoked("expiring") })
	if !w.Revoked("far-behind") {
		t.Error("full reload lost an unexpired revocation")
	}
}

func TestWatchRevocationsFailsOnClosedLedger(t *testing.T) {
	s, err := Open(t.Context(), "sqlite://"+filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.WatchRevocations(t.Context(), RevocationWatchOptions{}); err == nil {
		t.Error("WatchRevocations on a closed ledger succeeded")
	}
}
