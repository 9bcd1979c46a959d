package ledger

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations
var migrationFiles embed.FS

// dialect is what the migration runner needs to know of a backend.
type dialect struct {
	// name is the backend's name and its directory under migrations/.
	name string
	// schemaMigrations creates the table of applied migrations.
	schemaMigrations string
	// lock, if set, runs first in every migration transaction, so that
	// processes migrating one database together take turns.
	lock string
}

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations of a backend in order. They
// are named NNNN_description.sql and numbered 1, 2, 3... without gaps, so
// that a missing or misnamed file is an error here rather than a silently
// skipped change.
func migrations(backend string) ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/"+backend+"/*.sql")
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
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations for %s", backend)
	}
	return ms, nil
}

// migrate applies the migrations the database lacks, each in its own
// transaction together with its schema_migrations row. Several processes may
// open a new database at once: the write lock (SQLite) or the dialect's lock
// (PostgreSQL) serialises them, and each re-checks under the lock whether a
// migration is still needed. A database already up to date is only read.
func migrate(ctx context.Context, b backend) error {
	d := b.dialect()
	ms, err := migrations(d.name)
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	locked := func(c conn) error {
		if d.lock == "" {
			return nil
		}
		_, err := c.exec(ctx, d.lock)
		return err
	}
	if err := b.inTx(ctx, func(c conn) error {
		if err := locked(c); err != nil {
			return err
		}
		_, err := c.exec(ctx, d.schemaMigrations)
		return err
	}); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, b)
	if err != nil {
		return err
	}
	if current > len(ms) {
		return fmt.Errorf("database schema version %d is newer than this program's %d: upgrade tollgate", current, len(ms))
	}
	for _, m := range ms[current:] {
		err := b.inTx(ctx, func(c conn) error {
			if err := locked(c); err != nil {
				return err
			}
			current, err := schemaVersion(ctx, c)
			if err != nil || current >= m.version {
				return err // or another process got there first
			}
			if _, err := c.exec(ctx, m.sql); err != nil {
				return err
			}
			_, err = c.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?, ?, ?)`,
				int64(m.version), m.name, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s/%s: %w", d.name, m.name, err)
		}
	}
	return nil
}

func schemaVersion(ctx context.Context, c conn) (int, error) {
	var v int64
	err := c.query(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`, nil, func(scan func(...any) error) error {
		return scan(&v)
	})
	if err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return int(v), nil
}
