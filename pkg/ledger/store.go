// Package ledger stores what the gateway metered: one usage record per
// request, written exactly once however often it is retried.
//
// The store is SQLite (modernc.org/sqlite, pure Go) in WAL mode, so that
// several processes can share one file: `tollgate usage` reads while
// `tollgate dev` writes, and neither blocks the other for longer than a write
// transaction. The hot path does not write to the store directly; it hands
// records to a [Writer], which batches them.
package ledger

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// busyTimeout is how long a connection waits for another connection's (or
// process's) write lock before failing with SQLITE_BUSY. Write transactions
// here are one batch of inserts, milliseconds long.
const busyTimeout = 10 * time.Second

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is the usage ledger in one SQLite file. It is safe for concurrent use,
// and several Stores, in one process or several, may share a file.
type Store struct {
	db *sql.DB
	// insertBatch inserts rowsPerInsert rows, prepared once: parsing the
	// statement on every flush cost as much as running it.
	insertBatch *sql.Stmt
}

// OpenSQLite opens (creating it if needed) the ledger at path and brings its
// schema up to date.
//
// The connection settings are what make sharing the file safe: journal_mode
// WAL (readers never block the writer, nor it them), busy_timeout (a writer
// waits its turn instead of failing), BEGIN IMMEDIATE for every transaction (a
// write transaction takes the lock up front, so two writers can never
// deadlock upgrading read locks, which busy_timeout cannot resolve) and
// synchronous FULL (a committed batch survives a power cut, not only a
// crash; batching makes the extra fsync cheap).
//
// path must name a file: ":memory:" would give every pooled connection its
// own empty database, and SQLite URIs ("file:...", or a '?' in the path) are
// refused rather than half-interpreted.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	switch {
	case path == "", path == ":memory:", strings.HasPrefix(path, "file:"), strings.Contains(path, "?"):
		return nil, fmt.Errorf("ledger: open %q: want the path of a database file", path)
	}
	dsn := path + "?" + strings.Join([]string{
		"_busy_timeout=" + strconv.FormatInt(busyTimeout.Milliseconds(), 10),
		"_journal_mode=WAL",
		"_synchronous=FULL",
		"_txlock=immediate",
	}, "&")
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.migrateWaiting(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	if s.insertBatch, err = db.PrepareContext(ctx, buildInsertSQL(rowsPerInsert)); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database. Records a [Writer] still holds are not written:
// close the Writer first.
func (s *Store) Close() error {
	_ = s.insertBatch.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("ledger: close: %w", err)
	}
	return nil
}

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order. They are named
// NNNN_description.sql and numbered 1, 2, 3... without gaps, so that a missing
// or misnamed file is an error here rather than a silently skipped change.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names { // Glob sorts
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: want NNNN_description.sql", base)
		}
		if version != len(ms)+1 {
			return nil, fmt.Errorf("migration %s: want version %d", base, len(ms)+1)
		}
		body, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: version, name: base, sql: string(body)})
	}
	return ms, nil
}

// migrate applies the migrations the database lacks, each in its own
// transaction together with its schema_migrations row. Several processes may
// open a new file at once: the write lock serialises them, and each
// re-checks under the lock whether a migration is still needed. A database
// already up to date is only read, so opening it never waits for a writer.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	// Inside a transaction, which begins IMMEDIATE and so waits its turn:
	// a bare statement on a brand-new file can get SQLITE_BUSY at once when
	// several processes open it together (SQLite skips the busy handler where
	// waiting could deadlock a lock upgrade).
	if err := s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_ns INTEGER NOT NULL
		) STRICT`)
		return err
	}); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, s.db)
	if err != nil {
		return err
	}
	if current > len(ms) {
		return fmt.Errorf("database schema version %d is newer than this program's %d: upgrade tollgate", current, len(ms))
	}
	for _, m := range ms[current:] {
		if err := s.apply(ctx, m); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// migrateWaiting migrates, retrying while another process holds the new
// file: when several open a database that does not exist yet, SQLite can
// answer SQLITE_BUSY at once (setting up WAL is one of the cases where it
// does not call the busy handler), so the wait busy_timeout gives every
// other statement is given here by hand, up to the same bound.
func (s *Store) migrateWaiting(ctx context.Context) error {
	deadline := time.Now().Add(busyTimeout)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := s.migrate(ctx)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// isBusy reports whether err is SQLite's "database is locked" (SQLITE_BUSY,
// with any extended code).
func isBusy(err error) bool {
	var se interface{ Code() int }
	return errors.As(err, &se) && se.Code()&0xff == 5
}

func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	if err := q.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

func (s *Store) apply(ctx context.Context, m migration) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	current, err := schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if current >= m.version {
		return nil // another process got there first
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?, ?, ?)`,
		m.version, m.name, time.Now().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

// validate reports whether rec can be stored: it needs a request id (the
// idempotency key) and a time that Unix nanoseconds can represent (years 1678
// to 2262; the zero time.Time is not one, and is always a bug upstream).
func validate(rec usage.Record) error {
	if rec.RequestID == "" {
		return errors.New("usage record without a request id")
	}
	if rec.Time.Before(time.Unix(0, math.MinInt64)) || rec.Time.After(time.Unix(0, math.MaxInt64)) {
		return fmt.Errorf("usage record %s: time %v out of range", rec.RequestID, rec.Time)
	}
	return nil
}

const usageColumns = `request_id, time_ns, account, project, provider, model, operation, status,
	http_status, reason, stream, input_tokens, cached_input_tokens, cache_write_tokens,
	output_tokens, reasoning_tokens, estimated, latency_ns, latency_ms`

// InsertUsage stores recs in one transaction: all of them or none. A record
// whose request id is already stored is skipped, so a retried write never
// duplicates a request; the first write of an id wins.
func (s *Store) InsertUsage(ctx context.Context, recs ...usage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	for _, rec := range recs {
		if err := validate(rec); err != nil {
			return fmt.Errorf("ledger: insert: %w", err)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: insert: begin: %w", err)
	}
	defer tx.Rollback()
	// Many rows per statement: the per-statement cost (argument conversion,
	// locking, a VM run) dominated a busy gateway's ledger CPU when paid
	// per row.
	args := make([]any, 0, min(len(recs), rowsPerInsert)*usageFields)
	for len(recs) > 0 {
		n := min(len(recs), rowsPerInsert)
		args = args[:0]
		for _, r := range recs[:n] {
			args = append(args,
				r.RequestID, r.Time.UnixNano(), r.Account, r.Project, r.Provider, r.Model, r.Operation, string(r.Status),
				r.HTTPStatus, r.Reason, r.Stream, r.Input, r.CachedInput, r.CacheWrite,
				r.Output, r.Reasoning, r.Estimated, int64(r.Latency), r.LatencyMS)
		}
		var err error
		if n == rowsPerInsert {
			_, err = tx.StmtContext(ctx, s.insertBatch).ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, buildInsertSQL(n), args...)
		}
		if err != nil {
			return fmt.Errorf("ledger: insert %d records from %s: %w", n, recs[0].RequestID, err)
		}
		recs = recs[n:]
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger: insert: commit: %w", err)
	}
	return nil
}

const (
	usageFields   = 19
	rowsPerInsert = 64 // 64 × 19 parameters, far below SQLite's limit
)

func buildInsertSQL(rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO usage (" + usageColumns + ") VALUES ")
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", usageFields), ",") + ")"
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(" ON CONFLICT (request_id) DO NOTHING")
	return b.String()
}

// Filter selects usage records. Zero fields select everything.
type Filter struct {
	Account, Project, Provider, Model string    // exact matches
	Since                             time.Time // inclusive
	Until                             time.Time // exclusive
	Limit                             int       // at most this many records, the earliest first
}

// ListUsage returns the records f selects, ordered by time then request id.
// Times come back in UTC, to the nanosecond, without a monotonic reading.
func (s *Store) ListUsage(ctx context.Context, f Filter) ([]usage.Record, error) {
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ column, value string }{
		{"account", f.Account}, {"project", f.Project}, {"provider", f.Provider}, {"model", f.Model},
	} {
		if c.value != "" {
			where = append(where, c.column+" = ?")
			args = append(args, c.value)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "time_ns >= ?")
		args = append(args, clampUnixNano(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "time_ns < ?")
		args = append(args, clampUnixNano(f.Until))
	}
	query := `SELECT ` + usageColumns + ` FROM usage`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY time_ns, request_id"
	if f.Limit > 0 {
		query += " LIMIT ?"
		args = append(args, f.Limit)
	}

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: list usage: %w", err)
	}
	defer rows.Close()
	var recs []usage.Record
	for rows.Next() {
		var (
			r                 usage.Record
			timeNS, latencyNS int64
			status            string
		)
		if err := rows.Scan(
			&r.RequestID, &timeNS, &r.Account, &r.Project, &r.Provider, &r.Model, &r.Operation, &status,
			&r.HTTPStatus, &r.Reason, &r.Stream, &r.Input, &r.CachedInput, &r.CacheWrite,
			&r.Output, &r.Reasoning, &r.Estimated, &latencyNS, &r.LatencyMS,
		); err != nil {
			return nil, fmt.Errorf("ledger: list usage: %w", err)
		}
		r.Time = time.Unix(0, timeNS).UTC()
		r.Status = usage.Status(status)
		r.Latency = time.Duration(latencyNS)
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: list usage: %w", err)
	}
	return recs, nil
}

// clampUnixNano is t in Unix nanoseconds, clamped to what int64 holds, so
// that a filter bound far in the past or future still means "unbounded".
func clampUnixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}
