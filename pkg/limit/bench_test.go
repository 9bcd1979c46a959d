package limit

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/services"
)

// BenchmarkMemoryAdmit is one decision against an account's budget; run it
// with -cpu 1 for the one-core figure.
func BenchmarkMemoryAdmit(b *testing.B) {
	l := newLimiter(b, NewMemory(DefaultMaxKeys), Options{})
	ctx := context.Background()
	check := Check{Key: "tpm:{acct_0123456789}:claude-sonnet-4-5", Limit: usage.MaxCount, Cost: 1}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		d, _, err := l.Admit(ctx, now, check)
		if err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkMemoryAdmitSettle is a request's whole life against an account
// and a project's tokens and requests budgets.
func BenchmarkMemoryAdmitSettle(b *testing.B) {
	l := newLimiter(b, NewMemory(DefaultMaxKeys), Options{})
	ctx := context.Background()
	checks := []Check{
		{Key: "tpm:{acct_0123456789}:claude-sonnet-4-5", Limit: usage.MaxCount, Cost: 100},
		{Key: "ptpm:{acct_0123456789}:proj_0123456789", Limit: usage.MaxCount, Cost: 100},
		{Key: "prpm:{acct_0123456789}:proj_0123456789", Limit: usage.MaxCount, Cost: 1, Requests: true},
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		d, r, err := l.Admit(ctx, now, checks...)
		if err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
		if err := l.Settle(ctx, now, r, 90); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisAdmit is one decision in Redis on loopback, a round trip
// each; it reports the latency percentiles of its calls.
func BenchmarkRedisAdmit(b *testing.B) {
	srv := services.StartRedis(b)
	l := newLimiter(b, NewRedis(newClient(b, srv.Addr()), RedisOptions{}), Options{FailureMode: FailClosed})
	ctx := context.Background()
	check := Check{Key: "tpm:{acct_0123456789}:claude-sonnet-4-5", Limit: usage.MaxCount, Cost: 1}
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		d, _, err := l.Admit(ctx, start, check)
		lat = append(lat, time.Since(start))
		if err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
