// Package ledger is the durable store of what Tollgate bills: accounts and
// their credit balances, projects, one usage record per request, and hourly
// roll-ups of that usage for analytics.
//
// Two backends implement one [Store]: SQLite (modernc.org/sqlite, pure Go,
// WAL mode, the embedded default: several processes on one node share the
// file) and PostgreSQL (pgx, for several replicas). [Open] picks one from a
// URL. Each has its own numbered migrations; the rules (validation,
// idempotency, roll-ups, debits) are written once, above both.
//
// Inserting a usage record is idempotent by request id, and in the same
// transaction debits the account's balance by the record's credits and adds
// the record to its hourly roll-up, so a retried write never bills or counts
// twice. The hot path does not write to the store: it hands records to a
// [Writer], which appends them to a local spool file and drains that into the
// store in batches. See docs/ledger.md.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/internal/errtext"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Store is the ledger, whichever database holds it. *DB implements it over
// SQLite and over PostgreSQL. All methods are safe for concurrent use.
type Store interface {
	// CreateAccount creates an enabled account on plan with credits
	// micro-credits (recorded as the first credit entry when non-zero).
	CreateAccount(ctx context.Context, id string, plan catalog.Plan, credits int64) (Account, error)
	GetAccount(ctx context.Context, id string) (Account, error)
	// ListAccounts returns every account, ordered by id.
	ListAccounts(ctx context.Context) ([]Account, error)
	SetPlan(ctx context.Context, id string, plan catalog.Plan) error
	// SetEnabled turns the account's AI features on or off.
	SetEnabled(ctx context.Context, id string, enabled bool) error
	// SetTPMOverride sets the account's tokens-per-minute limit for model,
	// replacing the plan's; tpm 0 removes the override.
	SetTPMOverride(ctx context.Context, id, model string, tpm int64) error
	// Credit adds amount micro-credits (negative: removes them) to the
	// balance, records why, and returns the new balance.
	Credit(ctx context.Context, id string, amount int64, reason string) (balance int64, err error)
	// CreditEntries returns the account's credit entries, oldest first.
	CreditEntries(ctx context.Context, id string) ([]CreditEntry, error)

	// CreateProject creates a project of an existing account.
	CreateProject(ctx context.Context, id, account string, activated bool) (Project, error)
	GetProject(ctx context.Context, id string) (Project, error)
	// ActivateProject activates the project; activating an active one is
	// not an error.
	ActivateProject(ctx context.Context, id string) error
	// SetProjectLimits sets the project's requests and tokens per minute;
	// 0 means no per-project limit.
	SetProjectLimits(ctx context.Context, id string, rpm, tpm int64) error
	// ListProjects returns the account's projects ordered by id, or every
	// project if account is "".
	ListProjects(ctx context.Context, account string) ([]Project, error)

	// InsertUsage stores recs in one transaction, all or none; see [DB.InsertUsage].
	InsertUsage(ctx context.Context, recs ...usage.Record) error
	// ListUsage returns the usage records f selects.
	ListUsage(ctx context.Context, f Filter) ([]usage.Record, error)
	// Summarize aggregates the hourly roll-ups q selects.
	Summarize(ctx context.Context, q Query) ([]Bucket, error)

	Close() error
}

// Account is a customer: what its plan allows and what it has left to spend.
type Account struct {
	ID      string       `json:"id"`
	Plan    catalog.Plan `json:"plan"`
	Enabled bool         `json:"enabled"` // AI features on; a disabled account's tokens are refused
	// Balance is in micro-credits. It goes below zero when a request that
	// was admitted costs more than was left.
	Balance int64 `json:"balance_micro"`
	// TPMOverrides maps a model to the account's tokens-per-minute limit,
	// in place of the plan's (Enterprise accounts; allowed on any plan).
	TPMOverrides map[string]int64 `json:"tpm_overrides,omitempty"`
	Created      time.Time        `json:"created"`
}

// Project is one workload of an account; gateway tokens are minted per project.
type Project struct {
	ID        string    `json:"id"` // unique across accounts
	Account   string    `json:"account"`
	Activated bool      `json:"activated"`
	RPM       int64     `json:"rpm,omitempty"` // requests per minute for this project; 0: no limit
	TPM       int64     `json:"tpm,omitempty"` // tokens per minute for this project; 0: no limit
	Created   time.Time `json:"created"`
}

// CreditEntry is one change to a balance other than a usage debit: with the
// usage records' credits, the entries account for the whole balance.
type CreditEntry struct {
	Time         time.Time `json:"time"`
	Amount       int64     `json:"amount_micro"`
	BalanceAfter int64     `json:"balance_after_micro"`
	Reason       string    `json:"reason"`
}

// Errors the operations wrap. Match them with errors.Is; the messages are
// written to be shown to a CLI user as they are.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrInvalid is wrapped by every validation error.
	ErrInvalid = errors.New("invalid")
)

// invalidError is a validation error: its message says what is wrong and
// what is wanted, and it matches ErrInvalid.
type invalidError string

func (e invalidError) Error() string        { return "ledger: " + string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error { return invalidError(fmt.Sprintf(format, args...)) }

// slug is an account or project id: a DNS label, so that it can name
// Kubernetes objects and appear in URLs and metric labels unescaped.
var slug = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func checkID(kind, id string) error {
	if !slug.MatchString(id) {
		return invalidf("%s id %s: want 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit", kind, errtext.Quote(id))
	}
	return nil
}

func checkPlan(p catalog.Plan) error {
	switch p {
	case catalog.PlanFree, catalog.PlanPersonal, catalog.PlanPro, catalog.PlanEnterprise:
		return nil
	}
	return invalidf("plan %s: want free, personal, pro or enterprise", errtext.Quote(string(p)))
}

// MaxCredits bounds one credit change and one record's credits (in
// micro-credits, about a billion credits): far above any real amount, low
// enough that sums stay exact in int64. It is usage.MaxCredits, where the
// meter's charges saturate, so that every charge is storable.
const MaxCredits = usage.MaxCredits

const (
	maxReason = 200 // bytes in a credit entry's reason
	maxModel  = 200 // bytes in a model name of a TPM override
)

func checkAmount(what string, n int64) error {
	if n < -MaxCredits || n > MaxCredits {
		return invalidf("%s %d: want at most %d micro-credits either way", what, n, MaxCredits)
	}
	return nil
}

func checkReason(reason string) error {
	if strings.TrimSpace(reason) == "" || len(reason) > maxReason || !utf8.ValidString(reason) || strings.ContainsRune(reason, 0) {
		return invalidf("credit reason %s: want some text, at most %d bytes", errtext.Quote(reason), maxReason)
	}
	return nil
}

func checkModel(model string) error {
	if model == "" || len(model) > maxModel || !utf8.ValidString(model) || strings.ContainsRune(model, 0) {
		return invalidf("model %s: want a model name", errtext.Quote(model))
	}
	return nil
}

func checkLimit(what string, n int64) error {
	if n < 0 || n > usage.MaxCount {
		return invalidf("%s %d: want 0 (no limit) to %d", what, n, usage.MaxCount)
	}
	return nil
}

func notFound(kind, id string) error {
	return fmt.Errorf("ledger: %s %s: %w", kind, errtext.Quote(id), ErrNotFound)
}
