package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
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

// rowsPerInsert is how many usage rows the largest prepared INSERT takes:
// 64 × 21 parameters, far below SQLite's limit.
const rowsPerInsert = 64

// sqliteDB is the SQLite backend.
type sqliteDB struct {
	sqlConn
	db *sql.DB
	// inserts[i] inserts 1<<i rows, up to rowsPerInsert, each prepared
	// once: parsing a many-row statement costs as much as running it, so a
	// batch goes out as full statements and a tail made of powers of two.
	inserts []*sql.Stmt
}

// OpenSQLite opens (creating it if needed) the ledger in the SQLite file at
// path and brings its schema up to date.
//
// The connection settings are what make sharing the file safe: journal_mode
// WAL (readers never block the writer, nor it them), busy_timeout (a writer
// waits its turn instead of failing), BEGIN IMMEDIATE for every transaction (a
// write transaction takes the lock up front, so two writers can never
// deadlock upgrading read locks, which busy_timeout cannot resolve),
// synchronous FULL (a committed batch survives a power cut, not only a
// crash; batching makes the extra fsync cheap) and foreign keys on.
//
// path must name a file: ":memory:" would give every pooled connection its
// own empty database, and SQLite URIs ("file:...", or a '?' in the path) are
// refused rather than half-interpreted.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	switch {
	case path == "", path == ":memory:", strings.HasPrefix(path, "file:"), strings.Contains(path, "?"):
		return nil, invalidf("open %q: want the path of a database file", path)
	}
	dsn := path + "?" + strings.Join([]string{
		"_busy_timeout=" + strconv.FormatInt(busyTimeout.Milliseconds(), 10),
		"_journal_mode=WAL",
		"_synchronous=FULL",
		"_txlock=immediate",
		"_pragma=foreign_keys(1)",
	}, "&")
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	b := &sqliteDB{sqlConn: sqlConn{db}, db: db}
	if err := b.migrateWaiting(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	for rows := 1; rows <= rowsPerInsert; rows *= 2 {
		st, err := db.PrepareContext(ctx, insertSQL(rows))
		if err != nil {
			b.close()
			return nil, fmt.Errorf("ledger: open %s: %w", path, err)
		}
		b.inserts = append(b.inserts, st)
	}
	return &DB{b: b, now: time.Now}, nil
}

func (b *sqliteDB) close() error {
	for _, st := range b.inserts {
		_ = st.Close()
	}
	return b.db.Close()
}

func (b *sqliteDB) dialect() dialect {
	return dialect{name: "sqlite", schemaMigrations: `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_ns INTEGER NOT NULL
	) STRICT`}
}

// migrateWaiting migrates, retrying while another process holds the new
// file: when several open a database that does not exist yet, SQLite can
// answer SQLITE_BUSY at once (setting up WAL is one of the cases where it
// does not call the busy handler), so the wait busy_timeout gives every
// other statement is given here by hand, up to the same bound.
func (b *sqliteDB) migrateWaiting(ctx context.Context) error {
	deadline := time.Now().Add(busyTimeout)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := migrate(ctx, b)
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

// inTx runs fn in a transaction, which begins IMMEDIATE (see OpenSQLite).
func (b *sqliteDB) inTx(ctx context.Context, fn func(conn) error) error {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(sqlConn{tx}); err != nil {
		return err
	}
	return tx.Commit()
}

// insertNew inserts many rows per statement: the per-statement cost
// (argument conversion, locking, a VM run) dominated a busy gateway's ledger
// CPU when paid per row. Each statement is the largest prepared one that
// the remaining rows fill.
func (b *sqliteDB) insertNew(ctx context.Context, c conn, recs []usage.Record) ([]string, error) {
	tx := c.(sqlConn).q.(*sql.Tx)
	ids := make([]string, 0, len(recs))
	args := make([]any, 0, min(len(recs), rowsPerInsert)*usageFields)
	for len(recs) > 0 {
		i := min(bits.Len(uint(len(recs))), len(b.inserts)) - 1
		n := 1 << i
		args = args[:0]
		for _, r := range recs[:n] {
			args = usageArgs(args, r)
		}
		rows, err := tx.StmtContext(ctx, b.inserts[i]).QueryContext(ctx, args...)
		if err != nil {
			return nil, err
		}
		if ids, err = scanIDs(rows, ids); err != nil {
			return nil, err
		}
		recs = recs[n:]
	}
	return ids, nil
}

func scanIDs(rows *sql.Rows, ids []string) ([]string, error) {
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// insertSQL inserts rows usage rows, returning the ids of those it stored.
func insertSQL(rows int) string {
	return "INSERT INTO usage (" + usageColumns + ") VALUES " + placeholders(rows, usageFields) +
		" ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
}

// sqlConn is a database/sql handle or transaction as a conn.
type sqlConn struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	}
}

func (c sqlConn) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c sqlConn) query(ctx context.Context, query string, args []any, row func(scan func(...any) error) error) error {
	rows, err := c.q.QueryContext(ctx, query, args...)
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
