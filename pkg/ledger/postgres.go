package ledger

import (
	"context"
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

// insertNew inserts the whole batch in one statement, one array per column
// (unnest), returning the ids it stored: one round trip whatever the batch
// size, and one statement to prepare.
func (b *pgDB) insertNew(ctx context.Context, c conn, recs []usage.Record) ([]string, error) {
	// Transpose the rows usageArgs gives into typed columns.
	cols := make([]any, 0, usageFields)
	casts := make([]string, 0, usageFields)
	for i, v := range usageArgs(nil, recs[0]) {
		var typ string
		switch v.(type) {
		case string:
			cols, typ = append(cols, make([]string, 0, len(recs))), "text"
		case int64:
			cols, typ = append(cols, make([]int64, 0, len(recs))), "bigint"
		case bool:
			cols, typ = append(cols, make([]bool, 0, len(recs))), "boolean"
		}
		casts = append(casts, "$"+strconv.Itoa(i+1)+"::"+typ+"[]")
	}
	var row []any
	for _, r := range recs {
		row = usageArgs(row[:0], r)
		for i, v := range row {
			switch col := cols[i].(type) {
			case []string:
				cols[i] = append(col, v.(string))
			case []int64:
				cols[i] = append(col, v.(int64))
			case []bool:
				cols[i] = append(col, v.(bool))
			}
		}
	}
	rows, err := c.(pgConn).q.Query(ctx, `INSERT INTO usage (`+usageColumns+`) SELECT * FROM unnest(`+strings.Join(casts, ", ")+`)
		ON CONFLICT (request_id) DO NOTHING RETURNING request_id`, cols...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
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
