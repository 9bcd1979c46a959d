package ledger

import (
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/test/services"
)

// backendEnv is where a shared test's ledger lives.
type backendEnv struct {
	url string
	pg  *services.Postgres // the server, for PostgreSQL; nil for SQLite
}

// backendTests run on every backend, each on an empty ledger.
var backendTests = []struct {
	name string
	test func(t *testing.T, s *DB, env backendEnv)
}{
	{"Accounts", testAccounts},
	{"Projects", testProjects},
	{"AccountErrors", testAccountErrors},
	{"CreditConcurrent", testCreditConcurrent},
	{"UsageReplay", testUsageReplay},
	{"Summarize", testSummarize},
	{"Outage", testOutage},
	{"Kill", testKill},
	{"ConcurrentWriters", testConcurrentWriters},
}

// TestBackends runs backendTests on SQLite and on PostgreSQL; the
// PostgreSQL tests share one server, each with a database of its own.
func TestBackends(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		for _, tt := range backendTests {
			t.Run(tt.name, func(t *testing.T) {
				url := "sqlite://" + filepath.Join(t.TempDir(), "usage.db")
				tt.test(t, openURL(t, url), backendEnv{url: url})
			})
		}
	})
	t.Run("postgres", func(t *testing.T) {
		pg := services.StartPostgres(t)
		for _, tt := range backendTests {
			t.Run(tt.name, func(t *testing.T) {
				url := pg.NewDatabase(t)
				tt.test(t, openURL(t, url), backendEnv{url: url, pg: pg})
			})
		}
	})
}

func openURL(t testing.TB, url string) *DB {
	t.Helper()
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}
