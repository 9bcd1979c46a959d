package ledger

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/services"
)

// benchBackends opens an empty ledger per backend for a benchmark.
func benchBackends(b *testing.B, run func(b *testing.B, s *DB)) {
	b.Run("sqlite", func(b *testing.B) {
		run(b, openURL(b, filepath.Join(b.TempDir(), "usage.db")))
	})
	b.Run("postgres", func(b *testing.B) {
		pg := services.StartPostgres(b)
		run(b, openURL(b, pg.URL()))
	})
}

// benchRecord is a realistic record: one of a few accounts, projects and
// models, so that a batch updates a handful of roll-up rows and balances.
func benchRecord(i int) usage.Record {
	return usage.Record{
		RequestID: fmt.Sprintf("bench-%010d", i), Time: time.Unix(1_790_000_000+int64(i/100), 0),
		Account: []string{"acme", "beta", "gamma"}[i%3], Project: []string{"shop", "blog"}[i%2], Provider: "openai",
		Model: []string{"gpt-4o", "gpt-4o-mini", "o3"}[i%3], Operation: "chat", Status: usage.StatusOK, HTTPStatus: 200,
		Stream: i%2 == 0, Tokens: usage.Tokens{Input: 812, CachedInput: 128, Output: 204, Reasoning: 64},
		Credits: 1234, Latency: 850 * time.Millisecond, LatencyMS: 850, TTFT: 210 * time.Millisecond,
	}
}

func benchAccounts(b *testing.B, s *DB) {
	for _, a := range []string{"acme", "beta", "gamma"} {
		if _, err := s.CreateAccount(b.Context(), a, catalog.PlanPro, 1<<40); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInsertUsage is the store's write throughput in the Writer's
// default batches of new records, each debiting a balance and updating
// roll-ups.
func BenchmarkInsertUsage(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *DB) {
		benchAccounts(b, s)
		batch := WriterOptions{}.withDefaults().BatchSize
		recs := make([]usage.Record, batch)
		next := 0
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			for i := range recs {
				recs[i] = benchRecord(next)
				next++
			}
			if err := s.InsertUsage(b.Context(), recs...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "records/s")
	})
}

// BenchmarkWriter is the whole path with default options: Write spools
// each record, and the figure counts until Close has them all in the store.
func BenchmarkWriter(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *DB) {
		benchAccounts(b, s)
		w, err := NewWriter(s, b.TempDir(), WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for b.Loop() {
			if err := w.Write(benchRecord(n)); err != nil {
				b.Fatal(err)
			}
			n++
		}
		if err := w.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
	})
}
