package ledger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// conn runs statements, in a transaction or not. Statements use '?'
// placeholders; the PostgreSQL conn numbers them.
type conn interface {
	exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	// query calls row for each result row, with the function that scans it.
	query(ctx context.Context, query string, args []any, row func(scan func(dest ...any) error) error) error
}

// backend is one database: the statements both run alike go through conn;
// what differs (connection setup, migrations, the bulk insert) is here.
type backend interface {
	conn
	inTx(ctx context.Context, fn func(conn) error) error
	// dialect is what the shared migration runner needs to know.
	dialect() dialect
	// insertNew inserts recs (valid, distinct ids, sorted by id) into the
	// usage table, skipping ids already stored, and returns the ids it
	// inserted. c is a transaction from inTx.
	insertNew(ctx context.Context, c conn, recs []usage.Record) ([]string, error)
	close() error
}

// DB is the ledger in SQLite or PostgreSQL; it implements [Store].
type DB struct {
	b   backend
	now func() time.Time
}

var _ Store = (*DB)(nil)

// Open opens the ledger at url and brings its schema up to date:
// "postgres://…" or "postgresql://…" is PostgreSQL (a pgx connection
// string), "sqlite:///path/usage.db" or a plain path is a SQLite file.
func Open(ctx context.Context, url string) (*DB, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return OpenPostgres(ctx, url)
	case strings.HasPrefix(url, "sqlite://"):
		return OpenSQLite(ctx, strings.TrimPrefix(url, "sqlite://"))
	case strings.Contains(url, "://"):
		scheme, _, _ := strings.Cut(url, "://")
		return nil, invalidf("ledger URL scheme %q: want postgres://, sqlite:// or a file path", scheme)
	case pgKeywordValue.MatchString(url) || pgUserinfo.MatchString(url):
		// Not a path: taken for one, it would make a new SQLite file named
		// after the password, and a ledger of each replica's own. The
		// value is not shown: it holds a password.
		return nil, invalidf("the ledger URL looks like a PostgreSQL connection string without its scheme (not shown: it may hold a password): " +
			"write it as postgres://user:password@host:port/db?sslmode=…")
	}
	return OpenSQLite(ctx, url)
}

// What a PostgreSQL connection string without its postgres:// scheme looks
// like: libpq's keyword=value form ("host=db user=u password=p"), or a URL
// without its scheme, whose user:password@ comes before any '/' (or '\':
// "C:\Users\me@corp\usage.db" is a path).
var (
	pgKeywordValue = regexp.MustCompile(`(^|\s)(host|hostaddr|port|dbname|user|password|passfile|sslmode|service|connect_timeout)\s*=`)
	pgUserinfo     = regexp.MustCompile(`^[^/\\@]*:[^/\\]*@`)
)

// Close closes the database. Records a [Writer] has not drained stay in
// its spool: close the Writer first.
func (d *DB) Close() error {
	if err := d.b.close(); err != nil {
		return fmt.Errorf("ledger: close: %w", err)
	}
	return nil
}

func (d *DB) inTx(ctx context.Context, fn func(conn) error) error { return d.b.inTx(ctx, fn) }

// mustExist returns ErrNotFound unless a row of kind (account, project) has id.
func mustExist(ctx context.Context, c conn, kind, id string) error {
	found := false
	err := c.query(ctx, `SELECT 1 FROM `+kind+`s WHERE id = ?`, []any{id}, func(func(...any) error) error {
		found = true
		return nil
	})
	if err == nil && !found {
		err = notFound(kind, id)
	}
	return err
}

func (d *DB) mustExist(ctx context.Context, kind, id string) error {
	return mustExist(ctx, d.b, kind, id)
}

// CreateAccount implements [Store].
func (d *DB) CreateAccount(ctx context.Context, id string, plan catalog.Plan, credits int64) (Account, error) {
	if err := checkID("account", id); err != nil {
		return Account{}, err
	}
	if err := checkPlan(plan); err != nil {
		return Account{}, err
	}
	if err := checkAmount("initial credits", credits); err != nil {
		return Account{}, err
	}
	now := d.now().UTC()
	a := Account{ID: id, Plan: plan, Enabled: true, Balance: credits, Created: now.Round(0)}
	err := d.inTx(ctx, func(c conn) error {
		n, err := c.exec(ctx, `INSERT INTO accounts (id, plan, enabled, balance, created_ns) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`, id, string(plan), true, credits, now.UnixNano())
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("ledger: account %q: %w", id, ErrExists)
		}
		if credits != 0 {
			return addCreditEntry(ctx, c, id, now, credits, credits, "initial credits")
		}
		return nil
	})
	if err != nil {
		return Account{}, wrap("create account", err)
	}
	return a, nil
}

func addCreditEntry(ctx context.Context, c conn, account string, at time.Time, amount, balance int64, reason string) error {
	_, err := c.exec(ctx, `INSERT INTO credit_entries (account, time_ns, amount, balance_after, reason) VALUES (?, ?, ?, ?, ?)`,
		account, at.UnixNano(), amount, balance, reason)
	return err
}

const accountColumns = `id, plan, enabled, balance, created_ns`

func scanAccount(scan func(...any) error) (Account, error) {
	var (
		a       Account
		plan    string
		created int64
	)
	if err := scan(&a.ID, &plan, &a.Enabled, &a.Balance, &created); err != nil {
		return Account{}, err
	}
	a.Plan = catalog.Plan(plan)
	a.Created = time.Unix(0, created).UTC()
	return a, nil
}

// GetAccount implements [Store].
func (d *DB) GetAccount(ctx context.Context, id string) (Account, error) {
	accounts, err := d.accounts(ctx, id)
	if err != nil {
		return Account{}, wrap("get account", err)
	}
	if len(accounts) == 0 {
		return Account{}, notFound("account", id)
	}
	return accounts[0], nil
}

// ListAccounts implements [Store].
func (d *DB) ListAccounts(ctx context.Context) ([]Account, error) {
	accounts, err := d.accounts(ctx, "")
	if err != nil {
		return nil, wrap("list accounts", err)
	}
	return accounts, nil
}

// accounts reads one account, or all if id is "", with their overrides.
func (d *DB) accounts(ctx context.Context, id string) ([]Account, error) {
	var (
		accounts []Account
		where    string
		args     []any
	)
	if id != "" {
		where, args = ` WHERE id = ?`, []any{id}
	}
	// Reads run outside a transaction: SQLite's transactions take the write
	// lock, and a plan read a moment before its overrides is harmless.
	c := d.b
	index := map[string]int{}
	if err := c.query(ctx, `SELECT `+accountColumns+` FROM accounts`+where+` ORDER BY id`, args, func(scan func(...any) error) error {
		a, err := scanAccount(scan)
		index[a.ID] = len(accounts)
		accounts = append(accounts, a)
		return err
	}); err != nil {
		return nil, err
	}
	where = strings.Replace(where, "id", "account", 1)
	err := c.query(ctx, `SELECT account, model, tpm FROM account_tpm_overrides`+where, args, func(scan func(...any) error) error {
		var (
			account, model string
			tpm            int64
		)
		if err := scan(&account, &model, &tpm); err != nil {
			return err
		}
		if i, ok := index[account]; ok {
			a := &accounts[i]
			if a.TPMOverrides == nil {
				a.TPMOverrides = map[string]int64{}
			}
			a.TPMOverrides[model] = tpm
		}
		return nil
	})
	return accounts, err
}

// update runs an UPDATE of one row by id, reporting ErrNotFound if there is none.
func (d *DB) update(ctx context.Context, op, kind, id, set string, args ...any) error {
	if err := checkID(kind, id); err != nil {
		return err
	}
	n, err := d.b.exec(ctx, `UPDATE `+kind+`s SET `+set+` WHERE id = ?`, append(args, id)...)
	if err != nil {
		return wrap(op, err)
	}
	if n == 0 {
		return notFound(kind, id)
	}
	return nil
}

// SetPlan implements [Store].
func (d *DB) SetPlan(ctx context.Context, id string, plan catalog.Plan) error {
	if err := checkPlan(plan); err != nil {
		return err
	}
	return d.update(ctx, "set plan", "account", id, `plan = ?`, string(plan))
}

// SetEnabled implements [Store].
func (d *DB) SetEnabled(ctx context.Context, id string, enabled bool) error {
	return d.update(ctx, "set enabled", "account", id, `enabled = ?`, enabled)
}

// SetTPMOverride implements [Store].
func (d *DB) SetTPMOverride(ctx context.Context, id, model string, tpm int64) error {
	if err := checkID("account", id); err != nil {
		return err
	}
	if err := checkModel(model); err != nil {
		return err
	}
	if err := checkLimit("TPM override", tpm); err != nil {
		return err
	}
	err := d.inTx(ctx, func(c conn) error {
		if err := mustExist(ctx, c, "account", id); err != nil {
			return err
		}
		if tpm == 0 {
			_, err := c.exec(ctx, `DELETE FROM account_tpm_overrides WHERE account = ? AND model = ?`, id, model)
			return err
		}
		_, err := c.exec(ctx, `INSERT INTO account_tpm_overrides (account, model, tpm) VALUES (?, ?, ?)
			ON CONFLICT (account, model) DO UPDATE SET tpm = excluded.tpm`, id, model, tpm)
		return err
	})
	return wrap("set TPM override", err)
}

// Credit implements [Store].
func (d *DB) Credit(ctx context.Context, id string, amount int64, reason string) (int64, error) {
	if err := checkID("account", id); err != nil {
		return 0, err
	}
	if amount == 0 {
		return 0, invalidf("credit amount 0: want a non-zero number of micro-credits")
	}
	if err := checkAmount("credit amount", amount); err != nil {
		return 0, err
	}
	if err := checkReason(reason); err != nil {
		return 0, err
	}
	var balance int64
	err := d.inTx(ctx, func(c conn) error {
		found := false
		if err := c.query(ctx, `UPDATE accounts SET balance = balance + ? WHERE id = ? RETURNING balance`, []any{amount, id},
			func(scan func(...any) error) error {
				found = true
				return scan(&balance)
			}); err != nil {
			return err
		}
		if !found {
			return notFound("account", id)
		}
		return addCreditEntry(ctx, c, id, d.now(), amount, balance, reason)
	})
	if err != nil {
		return 0, wrap("credit", err)
	}
	return balance, nil
}

// CreditEntries implements [Store].
func (d *DB) CreditEntries(ctx context.Context, id string) ([]CreditEntry, error) {
	if err := d.mustExist(ctx, "account", id); err != nil {
		return nil, wrap("credit entries", err)
	}
	var entries []CreditEntry
	err := d.b.query(ctx, `SELECT time_ns, amount, balance_after, reason FROM credit_entries WHERE account = ? ORDER BY id`, []any{id},
		func(scan func(...any) error) error {
			var (
				e  CreditEntry
				ns int64
			)
			err := scan(&ns, &e.Amount, &e.BalanceAfter, &e.Reason)
			e.Time = time.Unix(0, ns).UTC()
			entries = append(entries, e)
			return err
		})
	if err != nil {
		return nil, wrap("credit entries", err)
	}
	return entries, nil
}

// CreateProject implements [Store].
func (d *DB) CreateProject(ctx context.Context, id, account string, activated bool) (Project, error) {
	if err := checkID("project", id); err != nil {
		return Project{}, err
	}
	if err := checkID("account", account); err != nil {
		return Project{}, err
	}
	now := d.now().UTC()
	p := Project{ID: id, Account: account, Activated: activated, Created: now.Round(0)}
	err := d.inTx(ctx, func(c conn) error {
		if err := mustExist(ctx, c, "account", account); err != nil {
			return err
		}
		n, err := c.exec(ctx, `INSERT INTO projects (id, account, activated, rpm, tpm, created_ns) VALUES (?, ?, ?, 0, 0, ?)
			ON CONFLICT (id) DO NOTHING`, id, account, activated, now.UnixNano())
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("ledger: project %q: %w", id, ErrExists)
		}
		return nil
	})
	if err != nil {
		return Project{}, wrap("create project", err)
	}
	return p, nil
}

const projectColumns = `id, account, activated, rpm, tpm, created_ns`

func scanProject(scan func(...any) error) (Project, error) {
	var (
		p       Project
		created int64
	)
	err := scan(&p.ID, &p.Account, &p.Activated, &p.RPM, &p.TPM, &created)
	p.Created = time.Unix(0, created).UTC()
	return p, err
}

// GetProject implements [Store].
func (d *DB) GetProject(ctx context.Context, id string) (Project, error) {
	var (
		p     Project
		found bool
	)
	err := d.b.query(ctx, `SELECT `+projectColumns+` FROM projects WHERE id = ?`, []any{id}, func(scan func(...any) error) error {
		var err error
		p, err = scanProject(scan)
		found = true
		return err
	})
	if err != nil {
		return Project{}, wrap("get project", err)
	}
	if !found {
		return Project{}, notFound("project", id)
	}
	return p, nil
}

// ActivateProject implements [Store].
func (d *DB) ActivateProject(ctx context.Context, id string) error {
	return d.update(ctx, "activate project", "project", id, `activated = ?`, true)
}

// SetProjectLimits implements [Store].
func (d *DB) SetProjectLimits(ctx context.Context, id string, rpm, tpm int64) error {
	if err := checkLimit("project RPM", rpm); err != nil {
		return err
	}
	if err := checkLimit("project TPM", tpm); err != nil {
		return err
	}
	return d.update(ctx, "set project limits", "project", id, `rpm = ?, tpm = ?`, rpm, tpm)
}

// ListProjects implements [Store].
func (d *DB) ListProjects(ctx context.Context, account string) ([]Project, error) {
	var (
		where string
		args  []any
	)
	if account != "" {
		if err := d.mustExist(ctx, "account", account); err != nil {
			return nil, wrap("list projects", err)
		}
		where, args = ` WHERE account = ?`, []any{account}
	}
	var projects []Project
	err := d.b.query(ctx, `SELECT `+projectColumns+` FROM projects`+where+` ORDER BY id`, args, func(scan func(...any) error) error {
		p, err := scanProject(scan)
		projects = append(projects, p)
		return err
	})
	if err != nil {
		return nil, wrap("list projects", err)
	}
	return projects, nil
}

// wrap adds the operation to a database error; the ledger's own errors
// (validation, not found, exists) already say what they are about.
func wrap(op string, err error) error {
	if err == nil || errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) {
		return err
	}
	return fmt.Errorf("ledger: %s: %w", op, err)
}
