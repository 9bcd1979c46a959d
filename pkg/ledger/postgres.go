package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// pgDB is the PostgreSQL backend.
type pgDB struct {
	pgConn
	pool *pgxpool.Pool
}

// OpenPostgres connects to the PostgreSQL database at url (a pgx connection
// string, "postgres://user:password@host:port/db?sslmode=…") and brings the
// ledger's schema up to date. Several replicas may share the database, and
// may migrate it together.
func OpenPostgres(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message leaves the password out.
		return nil, fmt.Errorf("ledger: postgres URL: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ledger: open postgres: %w", err)
	}
	b := &pgDB{pgConn: pgConn{q: pool}, pool: pool}
	if err := migrate(ctx, b); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ledger: open postgres %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return &DB{b: b, now: time.Now}, nil
}

func (b *pgDB) close() error {
	b.pool.Close()
	return nil
}

func (b *pgDB) dialect() dialect {
	return dialect{
		name: "postgres",
		schemaMigrations: `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    bigint NOT NULL PRIMARY KEY,
			name       text   NOT NULL,
			applied_ns bigint NOT NULL
		)`,
		// A transaction-scoped advisory lock, its key chosen for this use
		// ("tollgate ledger migrate").
		lock: `SELECT pg_advisory_xact_lock(7206751650315036281)`,
	}
}

func (b *pgDB) inTx(ctx context.Context, fn func(conn) error) error {
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return fn(pgConn{q: tx}) })
}

// insertNew stores the batch with COPY, whose binary rows cost both ends
// far less than binding the batch as parameters did (measured: half the
// client CPU, a third less server CPU; docs/benchmarks.md).
//
// A batch almost always holds only new ids, so it is first copied straight
// into usage, inside a savepoint: all its ids are then new. Only when that
// meets an id already stored (a spool segment replayed after a crash, a
// retry, another writer with the same record) does a unique violation roll
// the savepoint back, and the batch goes through a temporary table instead:
// COPY into it, then one INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING
// that stores the new rows and names them. Either way the rows go in id
// order, the lock order every writer follows (see InsertUsage), so writers
// racing on the same ids wait for each other and never deadlock.
func (b *pgDB) insertNew(ctx context.Context, c conn, recs []usage.Record) ([]string, error) {
	tx := c.(pgConn).q.(pgx.Tx)
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := sp.CopyFrom(ctx, pgx.Identifier{"usage"}, usageColumnNames, copyRows(recs)); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != uniqueViolation || pgErr.TableName != "usage" {
			return nil, err
		}
		if err := sp.Rollback(ctx); err != nil {
			return nil, err
		}
		return insertSkippingStored(ctx, tx, recs)
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, err
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.RequestID
	}
	return ids, nil
}

// uniqueViolation is PostgreSQL's SQLSTATE unique_violation.
const uniqueViolation = "23505"

// insertSkippingStored inserts the records of recs whose ids usage does not
// hold yet and returns their ids. The temporary table is the connection's,
// and ON COMMIT DELETE ROWS empties it at the end of each transaction. It
// is created if missing on every call rather than once per connection: a
// transaction that created it and then rolled back also removed it, and a
// pooler may hand over any server connection.
func insertSkippingStored(ctx context.Context, tx pgx.Tx, recs []usage.Record) ([]string, error) {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS usage_batch (LIKE usage) ON COMMIT DELETE ROWS`); err != nil {
		return nil, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", "usage_batch"}, usageColumnNames, copyRows(recs)); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `INSERT INTO usage (`+usageColumns+`) SELECT `+usageColumns+` FROM pg_temp.usage_batch
		ORDER BY request_id ON CONFLICT (request_id) DO NOTHING RETURNING request_id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// copyRows is recs as COPY rows in usageColumns order. CopyFrom encodes each
// row before it asks for the next, so one slice serves them all.
func copyRows(recs []usage.Record) pgx.CopyFromSource {
	row := make([]any, 0, usageFields)
	return pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		row = usageArgs(row[:0], recs[i])
		return row, nil
	})
}

// pgConn is a pool or a transaction as a conn.
type pgConn struct {
	q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	}
}

func (c pgConn) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := c.q.Exec(ctx, numbered(query), args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (c pgConn) query(ctx context.Context, query string, args []any, row func(scan func(...any) error) error) error {
	rows, err := c.q.Query(ctx, numbered(query), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// numbered rewrites the '?' placeholders of query as PostgreSQL's $1, $2….
// The ledger's statements have no '?' anywhere else.
func numbered(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
