package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// childEnv names the database a child process writes to (see TestMain).
const childEnv = "TOLLGATE_LEDGER_TEST_CHILD_DB"

// TestMain doubles as the body of the child process in
// TestStoreSharedAcrossProcesses: a real second process, with its own SQLite
// library state and file locks, like `tollgate usage` next to `tollgate dev`.
func TestMain(m *testing.M) {
	if url := os.Getenv(writerChildEnv); url != "" {
		writerChild(url, os.Getenv(writerChildSpoolEnv))
		return
	}
	if path := os.Getenv(childEnv); path != "" {
		if err := child(path); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child writes records "child-0".."child-N-1" one transaction each, then
// waits until it sees the parent's records, and prints how many there are.
func child(path string) error {
	ctx := context.Background()
	n, err := strconv.Atoi(os.Getenv("TOLLGATE_LEDGER_TEST_N"))
	if err != nil {
		return err
	}
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		return err
	}
	defer s.Close()
	base := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	for i := range n {
		if err := s.InsertUsage(ctx, rec("child-"+strconv.Itoa(i), base.Add(time.Duration(i)))); err != nil {
			return err
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		recs, err := s.ListUsage(ctx, Filter{Account: "acct"})
		if err != nil {
			return err
		}
		if len(recs) >= 2*n || time.Now().After(deadline) {
			fmt.Println(len(recs))
			return nil
		}
	}
}

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, path
}

// rec returns a minimal valid record.
func rec(id string, at time.Time) usage.Record {
	return usage.Record{RequestID: id, Time: at, Account: "acct", Project: "proj", Provider: "openai", Model: "gpt-4o", Status: usage.StatusOK}
}

func list(t *testing.T, s *DB, f Filter) []usage.Record {
	t.Helper()
	recs, err := s.ListUsage(t.Context(), f)
	if err != nil {
		t.Fatalf("ListUsage: %v", err)
	}
	return recs
}

func ids(recs []usage.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.RequestID
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	s, _ := openTemp(t)
	berlin := time.FixedZone("CET", 3600)
	tests := []usage.Record{
		{
			RequestID: "req-all-fields", Time: time.Date(2026, 11, 27, 12, 34, 56, 123456789, berlin),
			Account: "acct-1", Project: "proj-1", Provider: "anthropic", Model: "claude-sonnet-4-5",
			Operation: "messages", Status: usage.StatusAbandoned, HTTPStatus: 200, Reason: "client_gone",
			Stream: true, Estimated: true,
			Tokens:  usage.Tokens{Input: 1, CachedInput: 2, CacheWrite: 3, Output: 4, Reasoning: 5},
			Latency: 1234567891 * time.Nanosecond, LatencyMS: 1234,
		},
		{RequestID: "req-zero-values", Time: time.Unix(0, 1)},
		{RequestID: "req-before-1970", Time: time.Date(1900, 1, 1, 0, 0, 0, 999, time.UTC), HTTPStatus: 429, Status: usage.StatusRejected},
		{RequestID: "req-monotonic", Time: time.Now(), Tokens: usage.Tokens{Input: usage.MaxCount}, Credits: MaxCredits, TTFT: 3 * time.Millisecond},
		{RequestID: "req-unicode-ünï 日本", Time: time.Unix(1, 0), Account: "ä'\"; DROP TABLE usage;--", Latency: -1},
		{RequestID: "req-earliest", Time: time.Unix(0, -1<<63)},
		{RequestID: "req-latest", Time: time.Unix(0, 1<<63-1)},
	}
	if err := s.InsertUsage(t.Context(), tests...); err != nil {
		t.Fatal(err)
	}
	got := map[string]usage.Record{}
	for _, r := range list(t, s, Filter{}) {
		got[r.RequestID] = r
	}
	for _, want := range tests {
		t.Run(want.RequestID, func(t *testing.T) {
			g, ok := got[want.RequestID]
			if !ok {
				t.Fatal("not stored")
			}
			if !g.Time.Equal(want.Time) || g.Time.Location() != time.UTC {
				t.Errorf("Time = %v, want %v in UTC", g.Time, want.Time)
			}
			want.Time = want.Time.UTC().Round(0) // as documented: UTC, no monotonic reading
			if !reflect.DeepEqual(g, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", g, want)
			}
		})
	}
}

func TestInsertIdempotent(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	at := time.Unix(1000, 0)
	first := rec("req-1", at)
	first.Output = 10
	retry := first
	retry.Output = 99 // a retried write that differs must not change the row

	if err := s.InsertUsage(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertUsage(ctx, first); err != nil {
		t.Fatalf("second insert of the same record: %v", err)
	}
	if err := s.InsertUsage(ctx, retry, rec("req-2", at), rec("req-2", at)); err != nil {
		t.Fatalf("batch with a repeat: %v", err)
	}
	got := list(t, s, Filter{})
	if want := []string{"req-1", "req-2"}; !slices.Equal(ids(got), want) {
		t.Fatalf("rows %q, want %q", ids(got), want)
	}
	if got[0].Output != 10 {
		t.Errorf("req-1 Output = %d, want the first write's 10", got[0].Output)
	}
}

// A batch larger than one INSERT statement, with repeats inside one
// statement and across statements, stores each id once, first write first.
func TestInsertLargeBatch(t *testing.T) {
	s, _ := openTemp(t)
	at := time.Unix(2000, 0)
	var batch []usage.Record
	for i := range 3*rowsPerInsert + 7 {
		r := rec(fmt.Sprintf("req-%04d", i%150), at.Add(time.Duration(i%150)*time.Second))
		r.Output = int64(i)
		batch = append(batch, r)
	}
	if err := s.InsertUsage(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	got := list(t, s, Filter{})
	if len(got) != 150 {
		t.Fatalf("%d rows, want 150", len(got))
	}
	for i, r := range got {
		if r.RequestID != fmt.Sprintf("req-%04d", i) || r.Output != int64(i) {
			t.Fatalf("row %d = %s output %d, want req-%04d with the first write's output %d", i, r.RequestID, r.Output, i, i)
		}
	}
}

// Every batch size goes out as prepared statements of powers of two: each
// size stores all its new rows, skips the one it repeats, and counts only
// the new ones in the roll-up.
func TestInsertEveryBatchSize(t *testing.T) {
	s, _ := openTemp(t)
	at := time.Unix(3600, 0)
	stored := 0
	for n := 1; n <= 2*rowsPerInsert+1; n++ {
		batch := make([]usage.Record, 0, n+1)
		for i := range n {
			r := rec(fmt.Sprintf("n%03d-%03d", n, i), at)
			r.Input = 1
			batch = append(batch, r)
		}
		if n > 1 {
			batch = append(batch, rec(fmt.Sprintf("n%03d-000", n-1), at)) // stored by the previous batch
		}
		if err := s.InsertUsage(t.Context(), batch...); err != nil {
			t.Fatalf("batch of %d: %v", n, err)
		}
		stored += n
	}
	if got := len(list(t, s, Filter{})); got != stored {
		t.Fatalf("%d rows, want %d", got, stored)
	}
	sum, err := s.Summarize(t.Context(), Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 1 || sum[0].Requests != int64(stored) || sum[0].Input != int64(stored) {
		t.Fatalf("roll-up %+v, want %d requests and %d input tokens", sum, stored, stored)
	}
}

func TestInsertInvalid(t *testing.T) {
	s, _ := openTemp(t)
	ok := rec("ok", time.Unix(1, 0))
	tests := []struct {
		name string
		rec  usage.Record
		want string
	}{
		{"no request id", rec("", time.Unix(1, 0)), "request id"},
		{"zero time", rec("zero", time.Time{}), "out of range"},
		{"year 3000", rec("far", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)), "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.InsertUsage(t.Context(), ok, tt.rec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("InsertUsage = %v, want error containing %q", err, tt.want)
			}
			if got := list(t, s, Filter{}); len(got) != 0 {
				t.Errorf("a failed batch stored %q; want all or nothing", ids(got))
			}
		})
	}
}

func TestListUsageFilters(t *testing.T) {
	s, _ := openTemp(t)
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id, account, project, provider, model string, at time.Time) usage.Record {
		return usage.Record{RequestID: id, Time: at, Account: account, Project: project, Provider: provider, Model: model}
	}
	// Inserted out of order; "b" and "a" share a time to exercise the tie-break.
	recs := []usage.Record{
		mk("d", "acct-2", "p1", "gemini", "gemini-2.5-pro", t0.Add(3*time.Hour)),
		mk("b", "acct-1", "p1", "openai", "gpt-4o", t0.Add(time.Hour)),
		mk("a", "acct-1", "p2", "openai", "gpt-4o-mini", t0.Add(time.Hour)),
		mk("c", "acct-1", "p1", "anthropic", "claude-sonnet-4-5", t0.Add(2*time.Hour)),
		mk("e", "acct-1", "p1", "openai", "gpt-4o", t0.Add(2*time.Hour+time.Nanosecond)),
	}
	if err := s.InsertUsage(t.Context(), recs...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		filter Filter
		want   []string
	}{
		{"all, by time then id", Filter{}, []string{"a", "b", "c", "e", "d"}},
		{"account", Filter{Account: "acct-1"}, []string{"a", "b", "c", "e"}},
		{"project", Filter{Project: "p1"}, []string{"b", "c", "e", "d"}},
		{"provider", Filter{Provider: "openai"}, []string{"a", "b", "e"}},
		{"model", Filter{Model: "gpt-4o"}, []string{"b", "e"}},
		{"combined", Filter{Account: "acct-1", Project: "p1", Provider: "openai"}, []string{"b", "e"}},
		{"no match", Filter{Account: "nobody"}, nil},
		{"since is inclusive", Filter{Since: t0.Add(2 * time.Hour)}, []string{"c", "e", "d"}},
		{"until is exclusive", Filter{Until: t0.Add(2 * time.Hour)}, []string{"a", "b"}},
		{"range to the nanosecond", Filter{Since: t0.Add(2*time.Hour + 1), Until: t0.Add(3*time.Hour + 1)}, []string{"e", "d"}},
		{"since in another zone", Filter{Since: t0.Add(2 * time.Hour).In(time.FixedZone("X", -5*3600))}, []string{"c", "e", "d"}},
		{"empty range", Filter{Since: t0.Add(time.Hour), Until: t0.Add(time.Hour)}, nil},
		{"limit", Filter{Limit: 2}, []string{"a", "b"}},
		{"limit with filter", Filter{Provider: "openai", Limit: 2}, []string{"a", "b"}},
		{"negative limit is no limit", Filter{Limit: -1}, []string{"a", "b", "c", "e", "d"}},
		{"bounds beyond int64 nanoseconds", Filter{Since: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, []string{"a", "b", "c", "e", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(list(t, s, tt.filter)); !slices.Equal(got, tt.want) {
				t.Errorf("ListUsage(%+v) = %q, want %q", tt.filter, got, tt.want)
			}
		})
	}
}

func TestOpenSQLite(t *testing.T) {
	s, path := openTemp(t)
	ctx := t.Context()

	var mode string
	if err := sqlHandle(s).QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	var timeout int
	if err := sqlHandle(s).QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&timeout); err != nil {
		t.Fatal(err)
	}
	if timeout != int(busyTimeout.Milliseconds()) {
		t.Errorf("busy_timeout = %d, want %d", timeout, busyTimeout.Milliseconds())
	}

	if err := s.InsertUsage(ctx, rec("kept", time.Unix(1, 0))); err != nil {
		t.Fatal(err)
	}
	// Reopening applies nothing again and keeps the data.
	s2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	var versions []int
	rows, err := sqlHandle(s2).QueryContext(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ms, err := migrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(ms) || versions[0] != 1 {
		t.Errorf("schema_migrations versions %v, want 1..%d once each", versions, len(ms))
	}
	if got := ids(list(t, s2, Filter{})); !slices.Equal(got, []string{"kept"}) {
		t.Errorf("after reopen: %q", got)
	}
}

func TestOpenSQLiteNewerSchema(t *testing.T) {
	s, path := openTemp(t)
	if _, err := sqlHandle(s).ExecContext(t.Context(), "INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(t.Context(), path)
	if err == nil {
		s2.Close()
		t.Fatal("OpenSQLite of a database from a newer version succeeded")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("error %q does not say the schema is newer", err)
	}
}

func TestOpenSQLiteBadPath(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{"", ":memory:", "file:x.db?mode=memory", filepath.Join(dir, "a?b.db"), filepath.Join(dir, "missing", "dir", "x.db")} {
		t.Run(path, func(t *testing.T) {
			s, err := OpenSQLite(t.Context(), path)
			if err == nil {
				s.Close()
				t.Fatalf("OpenSQLite(%q) succeeded", path)
			}
		})
	}
}

// TestOpenSQLiteConcurrentMigrations opens a new file from several Stores at
// once, as several processes starting together would.
func TestOpenSQLiteConcurrentMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			s, err := OpenSQLite(t.Context(), path)
			if err != nil {
				t.Errorf("open %d: %v", i, err)
				return
			}
			defer s.Close()
			if err := s.InsertUsage(t.Context(), rec("r"+strconv.Itoa(i), time.Unix(int64(i), 0))); err != nil {
				t.Errorf("insert %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := list(t, s, Filter{}); len(got) != 6 {
		t.Errorf("%d rows, want 6", len(got))
	}
}

// TestStoreSharedInProcess opens two Stores on one file, as two processes
// would, and writes from both at once.
func TestStoreSharedInProcess(t *testing.T) {
	a, path := openTemp(t)
	b, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	const n = 200
	var wg sync.WaitGroup
	for _, side := range []struct {
		name string
		s    *DB
	}{{"a", a}, {"b", b}} {
		wg.Go(func() {
			for i := range n {
				if err := side.s.InsertUsage(t.Context(), rec(fmt.Sprintf("%s-%03d", side.name, i), time.Unix(int64(i), 0))); err != nil {
					t.Errorf("%s insert %d: %v", side.name, i, err)
					return
				}
			}
		})
	}
	// A reader keeps reading while both write; WAL means it never waits.
	wg.Go(func() {
		for range 50 {
			if _, err := a.ListUsage(t.Context(), Filter{Limit: 10}); err != nil {
				t.Errorf("concurrent read: %v", err)
				return
			}
		}
	})
	wg.Wait()

	for _, s := range []*DB{a, b} {
		if got := list(t, s, Filter{}); len(got) != 2*n {
			t.Errorf("a handle sees %d rows, want %d", len(got), 2*n)
		}
	}
}

// TestReadThenWriteTransactions checks that a transaction that reads before
// it writes (as migrate does) waits for a concurrent writer instead of
// failing: in WAL mode a deferred transaction whose snapshot went stale gets
// SQLITE_BUSY at once, which busy_timeout cannot help; BEGIN IMMEDIATE takes
// the write lock before the snapshot.
func TestReadThenWriteTransactions(t *testing.T) {
	a, path := openTemp(t)
	b, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	insert := `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?, 'test', 0)`

	aHolds, bRead := make(chan struct{}), make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		<-aHolds
		tx, err := sqlHandle(b).BeginTx(ctx, nil)
		if err != nil {
			errc <- err
			return
		}
		defer tx.Rollback()
		if _, err := schemaVersion(ctx, sqlConn{tx}); err != nil {
			errc <- err
			return
		}
		bRead <- struct{}{}
		if _, err := tx.ExecContext(ctx, insert, 1002); err != nil {
			errc <- fmt.Errorf("write after read: %w", err)
			return
		}
		errc <- tx.Commit()
	}()

	tx, err := sqlHandle(a).BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, insert, 1001); err != nil {
		t.Fatal(err)
	}
	close(aHolds)
	// With BEGIN IMMEDIATE, b cannot even begin while a holds the lock; with
	// deferred transactions it reads now and its write fails below.
	select {
	case <-bRead:
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("second transaction: %v", err)
	}
}

func TestStoreSharedAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	s, path := openTemp(t)
	const n = 100
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path, "TOLLGATE_LEDGER_TEST_N="+strconv.Itoa(n))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	for i := range n {
		if err := s.InsertUsage(t.Context(), rec("parent-"+strconv.Itoa(i), base.Add(time.Duration(i)))); err != nil {
			t.Fatalf("parent insert: %v", err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != strconv.Itoa(2*n) {
		t.Errorf("child saw %s rows, want %d", got, 2*n)
	}
	got := list(t, s, Filter{})
	if len(got) != 2*n {
		t.Fatalf("parent sees %d rows, want %d", len(got), 2*n)
	}
	// Both processes' records, interleaved by time.
	if got[0].RequestID != "child-0" || got[1].RequestID != "parent-0" {
		t.Errorf("first rows %q, want child-0, parent-0", ids(got[:2]))
	}
}

// sqlHandle is the database/sql handle of a SQLite ledger.
func sqlHandle(s *DB) *sql.DB { return s.b.(*sqliteDB).db }

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	for _, url := range []string{"sqlite://" + filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")} {
		s, err := Open(t.Context(), url)
		if err != nil {
			t.Errorf("Open(%q): %v", url, err)
			continue
		}
		s.Close()
	}
	for _, url := range []string{"mysql://localhost/x", "sqlite://", "postgres://user:secret@%zz"} {
		s, err := Open(t.Context(), url)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", url)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error shows the password: %v", url, err)
		}
	}
	if _, err := Open(t.Context(), "mysql://x"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"mysql"`) {
		t.Errorf("unknown scheme: %v, want ErrInvalid naming it", err)
	}
}

// TestMigrateExistingLedger opens a usage.db an earlier release wrote
// (schema 0001 only): its records keep their values and are rolled up.
func TestMigrateExistingLedger(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "usage.db")
	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 10, 30, 0, 0, time.UTC).UnixNano()
	for _, stmt := range []string{
		ms[0].sql,
		`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_ns INTEGER NOT NULL) STRICT`,
		`INSERT INTO schema_migrations VALUES (1, '0001_usage.sql', 0)`,
		fmt.Sprintf(`INSERT INTO usage VALUES ('old-1', %d, 'acme', 'shop', 'openai', 'gpt-4o', 'chat', 'ok', 200, '', 0, 10, 2, 0, 5, 1, 0, 7, 0)`, at),
		fmt.Sprintf(`INSERT INTO usage VALUES ('old-2', %d, 'acme', 'shop', 'openai', 'gpt-4o', 'chat', 'rejected', 429, 'tpm_limit', 0, 0, 0, 0, 0, 0, 0, 0, 0)`, at+1),
		`INSERT INTO usage VALUES ('old-3', -1, 'acme', 'shop', 'openai', 'gpt-4o', 'chat', 'rejected', 402, '', 0, 0, 0, 0, 0, 0, 0, 0, 0)`,
	} {
		if _, err := old.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	old.Close()

	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Summarize(ctx, Query{Account: "acme", By: "hour"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Bucket{
		{Start: time.Unix(-3600, 0).UTC(), Requests: 1, Rejections: map[string]int64{"unspecified": 1}},
		{Start: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC), Tokens: usage.Tokens{Input: 10, CachedInput: 2, Output: 5, Reasoning: 1},
			Requests: 2, Rejections: map[string]int64{"tpm_limit": 1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("roll-ups of the old records\n got %+v\nwant %+v", got, want)
	}
	recs := list(t, s, Filter{})
	if len(recs) != 3 || recs[1].RequestID != "old-1" || recs[1].Input != 10 || recs[1].Latency != 7 || recs[1].Credits != 0 || recs[1].TTFT != 0 {
		t.Errorf("old records after migrating: %+v", recs)
	}
}

// TestOpenPostgresWithoutScheme: a PostgreSQL connection string given
// without its postgres:// scheme — libpq's keyword=value form, which pgx
// and psql take too, or a URL whose scheme was left out — is refused, not
// taken for the path of a new SQLite file (each replica would bill into a
// ledger of its own, in a file named after the password). The error names
// the mistake and never shows the value, which holds a password.
func TestOpenPostgresWithoutScheme(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, url := range []string{
		"host=db.internal port=5432 user=tollgate password=S3cretPW dbname=ledger sslmode=require",
		"dbname=ledger password='S3cretPW'",
		"tollgate:S3cretPW@db.internal:5432/ledger",
		"tollgate:S3cretPW@db.internal",
	} {
		t.Run(url, func(t *testing.T) {
			s, err := Open(t.Context(), url)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", url)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "postgres://") {
				t.Errorf("error %v: want ErrInvalid saying to use postgres://", err)
			}
			if strings.Contains(err.Error(), "S3cretPW") {
				t.Errorf("the error shows the password: %v", err)
			}
			if names, _ := filepath.Glob("*"); len(names) > 0 {
				t.Errorf("files made: %q", names)
			}
		})
	}
	// Paths with '=' or '@' in them are still paths.
	dir := t.TempDir()
	for _, path := range []string{filepath.Join(dir, "a=b.db"), filepath.Join(dir, "user@host", "usage.db"), `C:\me@corp\usage.db`} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Errorf("Open(%q): %v", path, err)
			continue
		}
		s.Close()
	}
}
