package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// BenchmarkInsertUsage is the store's write throughput in batches of new
// records, each debiting a balance and updating roll-ups: the Writer's
// default batch, the earlier default, 1,024, and 39, what a gateway serving
// some 800 requests a second flushes every FlushInterval.
func BenchmarkInsertUsage(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *DB) {
		benchAccounts(b, s)
		next := 0
		for _, batch := range []int{WriterOptions{}.withDefaults().BatchSize, 1024, 39} {
			b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
				recs := make([]usage.Record, batch)
				n := 0
				b.ReportAllocs()
				self0, servers0 := cpuUsed(b)
				for b.Loop() {
					for i := range recs {
						recs[i] = benchRecord(next)
						next++
					}
					if err := s.InsertUsage(b.Context(), recs...); err != nil {
						b.Fatal(err)
					}
					n += batch
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
				reportCPU(b, n, self0, servers0)
			})
		}
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
		self0, servers0 := cpuUsed(b)
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
		reportCPU(b, n, self0, servers0)
	})
}

// cpuUsed is the CPU time (user + system) this process has used, and the
// PostgreSQL servers it started have: the postmasters with the backends they
// reaped and those still running. On the shared, loaded machine, wall time
// says little; CPU per record says what the work costs.
func cpuUsed(b *testing.B) (self, servers time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	type proc struct {
		ppid, ticks, childTicks int64
		comm                    string
	}
	procs := map[int64]proc{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		// pid (comm) state ppid … utime stime cutime cstime (fields 14 to 17)
		open, close := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(stat[close+1:]))
		if len(f) < 15 {
			continue
		}
		n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		procs[pid] = proc{ppid: n(1), ticks: n(11) + n(12), childTicks: n(13) + n(14), comm: string(stat[open+1 : close])}
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	me := int64(os.Getpid())
	for pid, p := range procs {
		if p.ppid != me || p.comm != "postgres" {
			continue
		}
		servers += time.Duration(p.ticks+p.childTicks) * tick
		for _, c := range procs {
			if c.ppid == pid {
				servers += time.Duration(c.ticks) * tick
			}
		}
	}
	return self, servers
}

// reportCPU reports the CPU per record since self0 and servers0 (from
// cpuUsed), this process's and the database server's.
func reportCPU(b *testing.B, records int, self0, servers0 time.Duration) {
	self, servers := cpuUsed(b)
	b.ReportMetric(float64(self-self0)/float64(time.Microsecond)/float64(records), "cpu-µs/record")
	if servers > 0 {
		b.ReportMetric(float64(servers-servers0)/float64(time.Microsecond)/float64(records), "server-cpu-µs/record")
	}
}
