// Package account is the gateway's account layer ([gateway.Policy]): it
// refuses tokens of disabled accounts, unactivated projects and accounts
// without credits, admits each billable request against the account's
// tokens-per-minute budget for its model (and the project's own limits),
// and at settlement corrects the reservation to the actual usage and prices
// the request in credits.
//
// Accounts and projects are read from the ledger through a short-lived
// cache, so the hot path reads the database at most once per account per
// CacheTTL. The debit of a settled request reaches the database through the
// ledger's writer a few milliseconds later, and the writer tells the policy
// when it has (Stored). So a balance is the one read less exactly the
// debits this process settled that the database did not hold when it was
// read: none is forgotten, and none counted twice. Until it settles, each
// admitted request also holds its estimated input's price against the
// balance, so requests sent at once cannot overspend it many times over.
package account

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/limit"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Directory is where accounts and projects are read: the ledger.
type Directory interface {
	GetAccount(ctx context.Context, id string) (ledger.Account, error)
	GetProject(ctx context.Context, id string) (ledger.Project, error)
}

// Config assembles a Policy.
type Config struct {
	Directory Directory
	Catalog   *catalog.Catalog
	// Limiter enforces tokens-per-minute budgets; nil admits without limits.
	Limiter *limit.Limiter
	// Rate converts list prices to credits; default meter.DefaultRate.
	Rate meter.Rate
	// CacheTTL is how long an account or project read from the Directory
	// is used before it is read again (default 2 s): a disabled account or
	// a credit top-up takes effect within it.
	CacheTTL time.Duration
	// StaleTTL is how long a cached entry keeps serving when the Directory
	// fails (default 10 min); beyond it requests are refused with 503.
	StaleTTL time.Duration
	// CacheSize bounds the cached accounts and projects (default 100,000).
	CacheSize int
	Logger    *slog.Logger
	Now       func() time.Time
}

// Policy implements gateway.Policy. It is safe for concurrent use.
type Policy struct {
	dir      Directory
	cat      *catalog.Catalog
	lim      *limit.Limiter
	rate     meter.Rate
	ttl      time.Duration
	stale    time.Duration
	log      *slog.Logger
	now      func() time.Time
	accounts *lru.Cache[string, *cached[ledger.Account]]
	projects *lru.Cache[string, *cached[ledger.Project]]
	debits   debits
}

// cached is one Directory entry as read at loaded. For an account,
// storedBefore is how many of this process's debits to it, in
// micro-credits, the ledger had stored just before the read.
type cached[T any] struct {
	v            T
	err          error // ErrNotFound, remembered like a value
	loaded       time.Time
	storedBefore int64
}

// New builds a Policy.
func New(cfg Config) (*Policy, error) {
	if cfg.Directory == nil || cfg.Catalog == nil {
		return nil, errors.New("account: a Directory and a Catalog are required")
	}
	p := &Policy{dir: cfg.Directory, cat: cfg.Catalog, lim: cfg.Limiter, rate: cfg.Rate,
		ttl: cfg.CacheTTL, stale: cfg.StaleTTL, log: cfg.Logger, now: cfg.Now,
		debits: debits{pending: map[string]pendingDebit{}, accounts: map[string]*accountDebits{}}}
	if p.rate <= 0 {
		p.rate = meter.DefaultRate
	}
	if p.ttl <= 0 {
		p.ttl = 2 * time.Second
	}
	if p.stale <= 0 {
		p.stale = 10 * time.Minute
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	size := cfg.CacheSize
	if size <= 0 {
		size = 100_000
	}
	var err error
	if p.accounts, err = lru.New[string, *cached[ledger.Account]](size); err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	if p.projects, err = lru.New[string, *cached[ledger.Project]](size); err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	return p, nil
}

// unavailable is the refusal when the account store cannot be read.
func unavailable() *gateway.Failure {
	return gateway.Fail(gateway.StatusServiceUnavailable, gateway.CodeInternal,
		"The gateway cannot read its account store right now. Retry shortly.")
}

// Authorize implements gateway.Policy.
func (p *Policy) Authorize(ctx context.Context, c auth.Claims) *gateway.Failure {
	acct, f := p.account(ctx, c.Account)
	if f != nil {
		return f
	}
	if !acct.v.Enabled {
		return gateway.Fail(gateway.StatusForbidden, gateway.CodeForbidden,
			"AI features are disabled for account %q.", c.Account)
	}
	proj, f := p.project(ctx, c.Project)
	if f != nil {
		return f
	}
	if proj.v.Account != c.Account {
		return gateway.Fail(gateway.StatusUnauthorized, gateway.CodeBadToken,
			"This gateway key names a project that does not belong to its account.")
	}
	if !proj.v.Activated {
		return gateway.Fail(gateway.StatusForbidden, gateway.CodeForbidden,
			"Project %q is not activated yet; its gateway key works once the project is activated.", c.Project)
	}
	if left, held := p.debits.left(c.Account, acct.v.Balance, acct.storedBefore); left <= 0 {
		return noCredits(c.Account, left+held > 0)
	}
	return nil
}

// noCredits is NoCredits, or when the balance is above zero but held by
// requests in flight, a refusal that says so.
func noCredits(account string, held bool) *gateway.Failure {
	f := NoCredits(account)
	if held {
		f.Message = fmt.Sprintf("Account %q has no credits left beyond what its requests in flight may cost. "+
			"Retry once they finish, or add credits.", account)
	}
	return f
}

// NoCredits is the refusal of a request from an account whose balance is
// at or below zero. It says not to retry: only a top-up helps.
func NoCredits(account string) *gateway.Failure {
	f := gateway.Fail(gateway.StatusTooManyRequests, gateway.CodeQuota,
		"Account %q has no credits left. Add credits to continue.", account)
	f.NoRetry = true
	return f
}

func (p *Policy) account(ctx context.Context, id string) (*cached[ledger.Account], *gateway.Failure) {
	e, err := load(ctx, p, p.accounts, id, p.dir.GetAccount, p.debits.storedOf)
	switch {
	case err != nil:
		return nil, unavailable()
	case e.err != nil:
		return nil, gateway.Fail(gateway.StatusUnauthorized, gateway.CodeBadToken,
			"This gateway key's account does not exist.")
	}
	return e, nil
}

func (p *Policy) project(ctx context.Context, id string) (*cached[ledger.Project], *gateway.Failure) {
	e, err := load(ctx, p, p.projects, id, p.dir.GetProject, nil)
	switch {
	case err != nil:
		return nil, unavailable()
	case e.err != nil:
		return nil, gateway.Fail(gateway.StatusUnauthorized, gateway.CodeBadToken,
			"This gateway key's project does not exist.")
	}
	return e, nil
}

// load returns the cached entry for id, reading it again once it is older
// than the TTL. snapshot, if set, is taken just before each read and kept
// with the entry. When the read fails, a cached entry younger than StaleTTL
// keeps serving; the error is returned only when there is none.
func load[T any](ctx context.Context, p *Policy, c *lru.Cache[string, *cached[T]], id string,
	get func(context.Context, string) (T, error), snapshot func(id string) int64) (*cached[T], error) {
	now := p.now()
	e, ok := c.Get(id)
	if ok && now.Sub(e.loaded) < p.ttl {
		return e, nil
	}
	var storedBefore int64
	if snapshot != nil {
		storedBefore = snapshot(id)
	}
	v, err := get(ctx, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		fresh := &cached[T]{err: err, loaded: now}
		c.Add(id, fresh)
		return fresh, nil
	case err != nil:
		p.log.LogAttrs(ctx, slog.LevelWarn, "account store read failed", slog.String("error", err.Error()))
		if ok && now.Sub(e.loaded) < p.stale {
			return e, nil
		}
		return nil, err
	}
	fresh := &cached[T]{v: v, loaded: now, storedBefore: storedBefore}
	c.Add(id, fresh)
	return fresh, nil
}

// Admit implements gateway.Policy.
func (p *Policy) Admit(ctx context.Context, a gateway.Admission) (gateway.Grant, *gateway.Failure) {
	m, ok := p.cat.Lookup(catalog.Provider(a.Provider), a.Model)
	if !ok { // the gateway looked it up already; a race with a catalog reload
		return nil, gateway.Fail(gateway.StatusNotFound, gateway.CodeModelNotFound, "The model %q does not exist.", a.Model)
	}
	g := &grant{p: p, provider: a.Provider, price: m.Price, family: m.Family, account: a.Claims.Account}
	acct, f := p.account(ctx, a.Claims.Account)
	if f != nil {
		return nil, f
	}
	// Until it settles, the request holds its estimated input's price (at
	// least one micro-credit) against the balance, so requests sent at once
	// cannot spend far beyond it: each is admitted only while the balance,
	// less what is settled and what is held, is above zero.
	g.hold = max(meter.Credits(m.Price, usage.Tokens{Input: a.Input}, p.rate), 1)
	if left, held := p.debits.hold(a.Claims.Account, acct.v.Balance, acct.storedBefore, g.hold); left <= 0 {
		return nil, noCredits(a.Claims.Account, left+held > 0)
	}
	if p.lim == nil {
		return g, nil
	}
	admitted := false
	defer func() {
		if !admitted {
			p.debits.release(a.Claims.Account, g.hold)
		}
	}()
	proj, f := p.project(ctx, a.Claims.Project)
	if f != nil {
		return nil, f
	}
	tpm := p.tpm(acct.v, m)
	cost := max(a.Input, 1)
	// A request that asks for prompt caching, to a provider whose budgets
	// leave cache reads out, may count far less than its input: a 20k-token
	// prompt of which 19k is cached fits a 12k budget. It is reserved at
	// most the whole budget rather than refused as too large for good; its
	// usage settles the difference.
	capped := func(budget int64) int64 {
		if a.CacheMarked && limit.CacheReadsExcluded(a.Provider) {
			return min(cost, budget)
		}
		return cost
	}
	checks := make([]limit.Check, 0, 3)
	if tpm > 0 {
		checks = append(checks, limit.Check{Key: accountTPMKey + "{" + a.Claims.Account + "}:" + m.Name, Limit: tpm, Cost: capped(tpm)})
	}
	if proj.v.TPM > 0 {
		checks = append(checks, limit.Check{Key: projectTPMKey + "{" + a.Claims.Account + "}:" + proj.v.ID, Limit: proj.v.TPM, Cost: capped(proj.v.TPM)})
	}
	if proj.v.RPM > 0 {
		checks = append(checks, limit.Check{Key: projectRPMKey + "{" + a.Claims.Account + "}:" + proj.v.ID, Limit: proj.v.RPM, Cost: 1, Requests: true})
	}
	d, res, err := p.lim.Admit(ctx, p.now(), checks...)
	if err != nil {
		p.log.LogAttrs(ctx, slog.LevelError, "rate limiter", slog.String("error", err.Error()))
		return nil, gateway.Fail(gateway.StatusServiceUnavailable, gateway.CodeInternal,
			"The gateway cannot check rate limits right now. Retry shortly.")
	}
	if !d.Allowed {
		return nil, refusal(checks, d, a.Model)
	}
	admitted = true
	g.res = res
	if len(checks) > 0 && !checks[0].Requests {
		b := d.Budgets[0]
		g.limits = gateway.RateLimit{Limit: b.Limit, Remaining: b.Remaining, Reset: b.Reset}
		g.admitted = p.now()
	}
	return g, nil
}

// Budget key prefixes. The account id is a Redis hash tag ({id}) so that
// one request's keys share a cluster slot.
const (
	accountTPMKey = "tpm:"
	projectTPMKey = "ptpm:"
	projectRPMKey = "prpm:"
)

// tpm is the account's tokens-per-minute limit for m: its own override,
// else its plan's figure; Enterprise accounts without an override get the
// Pro figure.
func (p *Policy) tpm(a ledger.Account, m catalog.Model) int64 {
	if n, ok := a.TPMOverrides[m.Name]; ok && n > 0 {
		return n
	}
	if n, ok := m.Limit(a.Plan); ok {
		return n
	}
	if a.Plan == catalog.PlanEnterprise {
		n, _ := m.Limit(catalog.PlanPro)
		return n
	}
	return 0
}

// maxSDKRetryAfter is the longest retry-after, in seconds, that every
// official SDK waits for; a longer wait is sent with x-should-retry: false.
const maxSDKRetryAfter = 60

// refusal is the 429 for a refused admission, naming which budget refused.
func refusal(checks []limit.Check, d limit.Decision, model string) *gateway.Failure {
	c := checks[d.Refused]
	b := d.Budgets[d.Refused]
	var f *gateway.Failure
	what := "tokens per minute for " + model
	switch {
	case c.Requests:
		what = "requests per minute for this project"
	case strings.HasPrefix(c.Key, projectTPMKey):
		what = "tokens per minute for this project"
	}
	if d.TooLarge {
		f = gateway.Fail(gateway.StatusTooManyRequests, gateway.CodeRateLimited,
			"Request too large: it needs about %d tokens, over the limit of %d %s.", c.Cost, c.Limit, what)
		f.NoRetry = true
	} else {
		// The message says what retry-after says: whole seconds, rounded up.
		retry := max(int(min(math.Ceil(d.RetryAfter.Seconds()), math.MaxInt32)), 1)
		f = gateway.Fail(gateway.StatusTooManyRequests, gateway.CodeRateLimited,
			"Rate limit reached: limit %d %s, %d remaining. Retry after %ds.", c.Limit, what, max(b.Remaining, 0), retry)
		f.RetryAfter = retry
		// The Python SDKs honour retry-after only up to 60 s and otherwise
		// retry within about a second and a half, which is refused again.
		f.NoRetry = retry > maxSDKRetryAfter
	}
	// The headers show the refusing budget, or for a requests budget,
	// which has no token figure, the first token budget (the account's).
	for i, ch := range checks {
		if i == d.Refused && !ch.Requests || c.Requests && !ch.Requests {
			b := d.Budgets[i]
			f.Limits = gateway.RateLimit{Limit: b.Limit, Remaining: b.Remaining, Reset: b.Reset}
			break
		}
	}
	f.RequestLimit = c.Requests
	return f
}

// grant is an admitted request's reservation and price.
type grant struct {
	p        *Policy
	provider string
	price    catalog.Price
	family   string // the requested model's price family
	account  string
	hold     int64 // micro-credits held against the balance until Settle
	res      limit.Reservation
	limits   gateway.RateLimit // as admission left them, at admitted
	admitted time.Time
}

// Limits implements gateway.Grant. The headers are written when the
// provider's response arrives, which can be long after admission, so the
// reset counts from now: the time the budget is whole again does not move
// with the provider's latency. Once that time has passed, the budget is
// whole.
func (g *grant) Limits() gateway.RateLimit {
	rl := g.limits
	if rl.Limit == 0 {
		return rl
	}
	if elapsed := g.p.now().Sub(g.admitted); elapsed >= rl.Reset {
		rl.Reset, rl.Remaining = 0, rl.Limit
	} else if elapsed > 0 {
		rl.Reset -= elapsed
	}
	return rl
}

// Settle implements gateway.Grant.
func (g *grant) Settle(ctx context.Context, rec *usage.Record) {
	price := g.price
	if rec.ServedModel != "" && rec.ServedModel != rec.Model {
		// A server-side fallback to another model: the tokens are its. A
		// dated name, or the upstream name of an overlay model (which
		// shares its family and may carry a price of the operator's own),
		// is the same model.
		if m, ok := g.p.cat.Lookup(catalog.Provider(g.provider), rec.ServedModel); ok && m.Family != g.family && m.Price != price {
			price = m.Price
			g.p.log.LogAttrs(ctx, slog.LevelInfo, "priced as the model that answered",
				slog.String("request_id", rec.RequestID), slog.String("model", rec.Model), slog.String("served_model", m.Name))
		}
	}
	rec.Credits = meter.Credits(price, rec.Tokens, g.p.rate)
	g.p.debits.release(g.account, g.hold)
	g.p.debits.settle(rec.RequestID, g.account, rec.Credits)
	if g.p.lim == nil {
		return
	}
	if err := g.p.lim.Settle(ctx, g.p.now(), g.res, limit.Counted(g.provider, rec.Tokens)); err != nil {
		g.p.log.LogAttrs(ctx, slog.LevelWarn, "rate limiter settle", slog.String("error", err.Error()))
	}
}

// Stored is told of each batch of usage records the ledger has committed
// (ledger.WriterOptions.OnStored): their debits are in the database from
// now on, so a balance read from here on holds them.
func (p *Policy) Stored(recs []usage.Record) { p.debits.stored(recs) }

// debits tracks, per account, the credits this process settled and how
// many of them the ledger has stored. A balance read from the database
// lacks exactly the settled debits that were not stored before the read.
type debits struct {
	mu       sync.Mutex
	pending  map[string]pendingDebit // by request id, until stored
	accounts map[string]*accountDebits
}

type pendingDebit struct {
	account string
	credits int64
}

// accountDebits are in micro-credits: settled and stored only grow; held
// is what admitted requests that have not settled hold.
type accountDebits struct{ settled, stored, held int64 }

// left is what an account whose balance was read after storedBefore of
// its debits were stored has left: the balance less the debits the read
// lacks and what requests in flight hold, which it returns too.
func (d *debits) left(account string, balance, storedBefore int64) (left, held int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.accounts[account]; ok {
		return a.left(balance, storedBefore), a.held
	}
	return balance, 0
}

// left is what a balance read after storedBefore of a's debits were stored
// has left: less the debits the read lacks and what requests in flight
// hold; d.mu is held.
func (a *accountDebits) left(balance, storedBefore int64) int64 {
	return balance - (a.settled - storedBefore) - a.held
}

// hold reserves n micro-credits of the account's balance for a request in
// flight when left (as left returns it) is above zero; it returns left and
// held as they were before.
func (d *debits) hold(account string, balance, storedBefore, n int64) (left, held int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.of(account)
	left, held = a.left(balance, storedBefore), a.held
	if left > 0 {
		a.held += n
	}
	return left, held
}

// release gives back what hold reserved.
func (d *debits) release(account string, n int64) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.of(account).held -= n
}

func (d *debits) settle(requestID, account string, credits int64) {
	if credits == 0 || account == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.pending[requestID]; dup {
		return // an id is billed once, as the ledger stores it once
	}
	d.pending[requestID] = pendingDebit{account, credits}
	d.of(account).settled += credits
}

// stored marks recs' debits as in the database. A record it did not settle
// (one a previous process spooled) or already marked (a batch retried
// after a failure) changes nothing.
func (d *debits) stored(recs []usage.Record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range recs {
		if pd, ok := d.pending[r.RequestID]; ok {
			delete(d.pending, r.RequestID)
			d.of(pd.account).stored += pd.credits
		}
	}
}

// storedOf is what the ledger holds of the account's debits so far.
func (d *debits) storedOf(account string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.accounts[account]; ok {
		return a.stored
	}
	return 0
}

// of returns the account's counters; d.mu is held.
func (d *debits) of(account string) *accountDebits {
	a, ok := d.accounts[account]
	if !ok {
		a = &accountDebits{}
		d.accounts[account] = a
	}
	return a
}
