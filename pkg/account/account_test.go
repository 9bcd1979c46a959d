package account_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/account"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/limit"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// clock is a settable time source shared by the policy and the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	db    *ledger.DB
	cat   *catalog.Catalog
	clock *clock
	pol   *account.Policy
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := ledger.OpenSQLite(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	// Mid-window, so a test's requests share one limiter window.
	c := &clock{t: time.Date(2026, 11, 27, 12, 0, 5, 0, time.UTC)}
	lim, err := limit.New(limit.NewMemory(0), limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := account.New(account.Config{Directory: db, Catalog: cat, Limiter: lim, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{db: db, cat: cat, clock: c, pol: pol}
}

// add creates an account with one project.
func (f *fixture) add(t *testing.T, acct string, plan catalog.Plan, credits int64, activated bool) auth.Claims {
	t.Helper()
	ctx := context.Background()
	if _, err := f.db.CreateAccount(ctx, acct, plan, credits); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateProject(ctx, acct+"-web", acct, activated); err != nil {
		t.Fatal(err)
	}
	return auth.Claims{Account: acct, Project: acct + "-web"}
}

func TestAuthorize(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ok := f.add(t, "ok", catalog.PlanFree, 5*meter.MicroCredits, true)
	disabled := f.add(t, "disabled", catalog.PlanFree, 5*meter.MicroCredits, true)
	if err := f.db.SetEnabled(ctx, "disabled", false); err != nil {
		t.Fatal(err)
	}
	inactive := f.add(t, "inactive", catalog.PlanFree, 5*meter.MicroCredits, false)
	broke := f.add(t, "broke", catalog.PlanFree, 0, true)
	other := f.add(t, "other", catalog.PlanFree, 5*meter.MicroCredits, true)
	tests := []struct {
		name   string
		claims auth.Claims
		status int
		code   gateway.Code
	}{
		{"enabled, activated, credits", ok, 0, ""},
		{"AI features disabled", disabled, 403, gateway.CodeForbidden},
		{"project not activated", inactive, 403, gateway.CodeForbidden},
		{"no credits", broke, 429, gateway.CodeQuota},
		{"unknown account", auth.Claims{Account: "ghost", Project: "ok-web"}, 401, gateway.CodeBadToken},
		{"unknown project", auth.Claims{Account: "ok", Project: "ghost"}, 401, gateway.CodeBadToken},
		{"another account's project", auth.Claims{Account: "ok", Project: other.Project}, 401, gateway.CodeBadToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fail := f.pol.Authorize(ctx, tt.claims)
			if tt.status == 0 {
				if fail != nil {
					t.Fatalf("refused: %v", fail)
				}
				return
			}
			if fail == nil || fail.Status != tt.status || fail.Code != tt.code {
				t.Fatalf("got %v, want %d %s", fail, tt.status, tt.code)
			}
			if tt.code == gateway.CodeQuota && !fail.NoRetry {
				t.Error("an out-of-credits refusal must tell SDKs not to retry")
			}
		})
	}
}

func admit(t *testing.T, f *fixture, c auth.Claims, provider, model string, input int64) (gateway.Grant, *gateway.Failure) {
	t.Helper()
	return f.pol.Admit(context.Background(), gateway.Admission{Claims: c, Provider: provider, Model: model, Input: input})
}

// The Free plan allows claude-3-5-haiku-20241022 1,200 tokens per minute:
// reservations, settlement to the actual usage (cached input excluded for
// Anthropic), refusal with retry-after, and the window rolling over.
func TestAdmitTPM(t *testing.T) {
	f := newFixture(t)
	c := f.add(t, "free", catalog.PlanFree, 100*meter.MicroCredits, true)
	const model = "claude-3-5-haiku-20241022"
	m, _ := f.cat.Lookup("anthropic", model)
	limitFree, _ := m.Limit(catalog.PlanFree)

	g, fail := admit(t, f, c, "anthropic", model, 400)
	if fail != nil {
		t.Fatalf("first request refused: %v", fail)
	}
	if l := g.Limits(); l.Limit != limitFree || l.Remaining != limitFree-400 {
		t.Fatalf("limits %+v, want limit %d remaining %d", l, limitFree, limitFree-400)
	}
	// It used 400 input, 300 output and read 5,000 cached tokens, which do
	// not count for Anthropic.
	rec := usage.Record{Tokens: usage.Tokens{Input: 400, CachedInput: 5000, Output: 300}}
	g.Settle(context.Background(), &rec)
	if want := meter.Credits(m.Price, rec.Tokens, meter.DefaultRate); rec.Credits != want || want == 0 {
		t.Fatalf("credits %d, want %d", rec.Credits, want)
	}
	g, fail = admit(t, f, c, "anthropic", model, 100)
	if fail != nil {
		t.Fatalf("second request refused: %v", fail)
	}
	if got, want := g.Limits().Remaining, limitFree-700-100; got != want {
		t.Fatalf("remaining %d after 700 used and 100 reserved, want %d", got, want)
	}
	g.Settle(context.Background(), &usage.Record{Tokens: usage.Tokens{Input: 100}})
	// 800 used: a 500-token request no longer fits.
	_, fail = admit(t, f, c, "anthropic", model, 500)
	if fail == nil || fail.Status != 429 || fail.Code != gateway.CodeRateLimited {
		t.Fatalf("over the limit: got %v, want 429 rate_limited", fail)
	}
	if fail.RetryAfter < 1 || fail.RetryAfter > 60 || fail.NoRetry || fail.Limits.Limit != limitFree || fail.Limits.Remaining != limitFree-800 {
		t.Fatalf("refusal retry-after %d no-retry %v limits %+v", fail.RetryAfter, fail.NoRetry, fail.Limits)
	}
	if want := fmt.Sprintf("Retry after %ds.", fail.RetryAfter); !strings.HasSuffix(fail.Message, want) {
		t.Errorf("refusal message %q does not end %q, which retry-after says", fail.Message, want)
	}
	// A request larger than the whole budget is refused for good.
	_, fail = admit(t, f, c, "anthropic", model, limitFree+1)
	if fail == nil || fail.Status != 429 || !fail.NoRetry {
		t.Fatalf("too large: got %v, want 429 without retry", fail)
	}
	f.clock.Add(time.Duration(fail.RetryAfter+60) * time.Second)
	g, fail = admit(t, f, c, "anthropic", model, 500)
	if fail != nil {
		t.Fatalf("after the window: %v", fail)
	}
	// A reply far over the reservation puts the account minutes in debt: the
	// refusal says so and tells the SDKs not to retry, since the Python ones
	// would retry at once instead of waiting over a minute.
	g.Settle(context.Background(), &usage.Record{Tokens: usage.Tokens{Input: 500, Output: 3 * limitFree}})
	_, fail = admit(t, f, c, "anthropic", model, 10)
	if fail == nil || fail.RetryAfter <= 60 || !fail.NoRetry {
		t.Fatalf("in debt: got %+v, want retry-after over 60 s without SDK retries", fail)
	}
}

// A request bigger than the whole budget is refused for good, unless it
// asks for prompt caching from a provider whose budgets leave cache reads
// out (Anthropic): most of it may be read from the cache, so it is admitted
// on a whole budget, reserving that budget, and its usage settles the rest.
func TestCacheMarkedRequestOverTheBudget(t *testing.T) {
	for _, tc := range []struct {
		name, provider, model string
		cacheMarked, admitted bool
	}{
		{"anthropic, cache marked", "anthropic", "claude-3-5-haiku-20241022", true, true},
		{"anthropic, no cache mark", "anthropic", "claude-3-5-haiku-20241022", false, false},
		{"openai counts cache reads", "openai", "gpt-4o-mini", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.add(t, "free", catalog.PlanFree, 100*meter.MicroCredits, true)
			m, _ := f.cat.Lookup(catalog.Provider(tc.provider), tc.model)
			budget, _ := m.Limit(catalog.PlanFree)
			g, fail := f.pol.Admit(context.Background(), gateway.Admission{Claims: c, Provider: tc.provider, Model: tc.model,
				Input: budget + 5000, CacheMarked: tc.cacheMarked})
			if !tc.admitted {
				if fail == nil || !fail.NoRetry || !strings.Contains(fail.Message, "too large") {
					t.Fatalf("got %v, want a 429 too large, without retry", fail)
				}
				return
			}
			if fail != nil {
				t.Fatalf("refused: %v", fail)
			}
			if l := g.Limits(); l.Remaining != 0 {
				t.Errorf("remaining %d, want the whole budget reserved", l.Remaining)
			}
			// Most of it was read from the cache: only the rest counts.
			g.Settle(context.Background(), &usage.Record{Tokens: usage.Tokens{Input: 300, CachedInput: budget + 4700, Output: 100}})
			g, fail = f.pol.Admit(context.Background(), gateway.Admission{Claims: c, Provider: tc.provider, Model: tc.model, Input: 100})
			if fail != nil {
				t.Fatalf("after settling 400 counted tokens: %v", fail)
			}
			if got, want := g.Limits().Remaining, budget-400-100; got != want {
				t.Errorf("remaining %d, want %d", got, want)
			}
		})
	}
}

// A response from another model than the one asked for (a server-side
// fallback) is priced as the model that answered, when the catalog knows it;
// an unknown name, or one of the same family (a dated name, an overlay
// model's upstream name), leaves the requested model's price.
func TestSettlePricesServedModel(t *testing.T) {
	f := newFixture(t)
	// An operator's own name and price for a model served upstream as an
	// alias: the response names the dated model, which is the same one.
	cat, err := catalog.Load(f.cat, []byte(`models: [{provider: anthropic, name: house-haiku, like: claude-haiku-4-5, upstream: claude-haiku-4-5, price: {input: 9, output: 99}}]`))
	if err != nil {
		t.Fatal(err)
	}
	f.cat = cat
	f.pol, err = account.New(account.Config{Directory: f.db, Catalog: cat, Limiter: nil, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	c := f.add(t, "fb", catalog.PlanPro, 100*meter.MicroCredits, true)
	const asked, fallback = "claude-haiku-4-5", "claude-opus-4-5-20251101"
	askedM, _ := f.cat.Lookup("anthropic", asked)
	fallbackM, ok := f.cat.Lookup("anthropic", fallback)
	if !ok || fallbackM.Price == askedM.Price {
		t.Fatalf("fixture: %s must be in the catalog at another price than %s", fallback, asked)
	}
	tokens := usage.Tokens{Input: 1000, Output: 500}
	for _, tc := range []struct {
		served string
		want   catalog.Price
	}{
		{"", askedM.Price},
		{asked, askedM.Price},
		{"claude-haiku-4-5-20251001", askedM.Price}, // the dated name of the same model
		{"claude-unknown-9", askedM.Price},
		{fallback, fallbackM.Price},
	} {
		g, fail := admit(t, f, c, "anthropic", asked, 10)
		if fail != nil {
			t.Fatal(fail)
		}
		rec := usage.Record{Model: asked, ServedModel: tc.served, Tokens: tokens}
		g.Settle(context.Background(), &rec)
		if want := meter.Credits(tc.want, tokens, meter.DefaultRate); rec.Credits != want {
			t.Errorf("served %q: %d credits, want %d", tc.served, rec.Credits, want)
		}
	}
	house, _ := cat.Lookup("anthropic", "house-haiku")
	for _, served := range []string{"claude-haiku-4-5", "claude-haiku-4-5-20251001"} {
		g, fail := admit(t, f, c, "anthropic", "house-haiku", 10)
		if fail != nil {
			t.Fatal(fail)
		}
		rec := usage.Record{Model: "house-haiku", ServedModel: served, Tokens: tokens}
		g.Settle(context.Background(), &rec)
		if want := meter.Credits(house.Price, tokens, meter.DefaultRate); rec.Credits != want {
			t.Errorf("house-haiku served as %q: %d credits, want the overlay's price, %d", served, rec.Credits, want)
		}
	}
}

// Cached input counts for OpenAI and Gemini.
func TestAdmitCountsCachedInputForOpenAI(t *testing.T) {
	f := newFixture(t)
	c := f.add(t, "oa", catalog.PlanFree, 100*meter.MicroCredits, true)
	const model = "gpt-4o-mini"
	m, ok := f.cat.Lookup("openai", model)
	if !ok {
		t.Fatal("gpt-4o-mini not in catalog")
	}
	tpm, _ := m.Limit(catalog.PlanFree)
	g, fail := admit(t, f, c, "openai", model, 10)
	if fail != nil {
		t.Fatal(fail)
	}
	g.Settle(context.Background(), &usage.Record{Tokens: usage.Tokens{Input: 10, CachedInput: 90, Output: 50}})
	g, fail = admit(t, f, c, "openai", model, 1)
	if fail != nil {
		t.Fatal(fail)
	}
	if got, want := g.Limits().Remaining, tpm-150-1; got != want {
		t.Fatalf("remaining %d, want %d (cached input counted)", got, want)
	}
}

func TestEnterpriseOverrideAndProjectLimits(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.add(t, "big", catalog.PlanEnterprise, 100*meter.MicroCredits, true)
	const model = "gpt-4o-mini"
	if err := f.db.SetTPMOverride(ctx, "big", model, 50); err != nil {
		t.Fatal(err)
	}
	if err := f.db.SetProjectLimits(ctx, c.Project, 2, 0); err != nil {
		t.Fatal(err)
	}
	g, fail := admit(t, f, c, "openai", model, 10)
	if fail != nil {
		t.Fatal(fail)
	}
	if g.Limits().Limit != 50 {
		t.Fatalf("limit %d, want the override 50", g.Limits().Limit)
	}
	if _, fail = admit(t, f, c, "openai", model, 10); fail != nil {
		t.Fatal(fail)
	}
	_, fail = admit(t, f, c, "openai", model, 10)
	if fail == nil || fail.Status != 429 {
		t.Fatalf("third request in a minute with rpm 2: got %v, want 429", fail)
	}
	if !fail.RequestLimit {
		t.Errorf("the project's request limit refused, but the failure says a token limit: %+v", fail)
	}
	if _, body := openai.New().Error(fail); !strings.Contains(string(body), `"type":"requests"`) {
		t.Errorf("OpenAI renders a request limit as %s, want type requests", body)
	}
	// Enterprise without an override: the Pro figure.
	m, _ := f.cat.Lookup("openai", "gpt-4o")
	pro, _ := m.Limit(catalog.PlanPro)
	if err := f.db.SetProjectLimits(ctx, c.Project, 0, 0); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(3 * time.Second) // past the project cache
	g, fail = admit(t, f, c, "openai", "gpt-4o", 10)
	if fail != nil {
		t.Fatal(fail)
	}
	if g.Limits().Limit != pro {
		t.Fatalf("enterprise limit %d, want pro %d", g.Limits().Limit, pro)
	}
}

// A balance is the ledger's less exactly the debits this process settled
// that the ledger did not hold when it was read: a settled debit counts at
// once, is never forgotten across a cache reload while the ledger lacks it,
// and is not counted twice once the ledger has it, so an account with
// credits left is never refused.
func TestSettledDebitsCountOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	rec := usage.Record{Time: f.clock.Now(), Account: "small", Project: "small-web", Provider: "openai",
		Model: "gpt-4o-mini", Operation: "chat", Status: usage.StatusOK, Tokens: usage.Tokens{Input: 1000, Output: 1000}}
	cost := meter.Credits(f.priceOf(t, "openai", "gpt-4o-mini"), rec.Tokens, meter.DefaultRate)
	c := f.add(t, "small", catalog.PlanPro, 2*cost+cost/2, true) // two requests and a half
	settle := func(id string) usage.Record {
		t.Helper()
		g, fail := admit(t, f, c, "openai", "gpt-4o-mini", 10)
		if fail != nil {
			t.Fatal(fail)
		}
		r := rec
		r.RequestID = id
		g.Settle(ctx, &r)
		if r.Credits != cost {
			t.Fatalf("settled %d micro-credits, want %d", r.Credits, cost)
		}
		return r
	}
	store := func(recs ...usage.Record) {
		t.Helper()
		if err := f.db.InsertUsage(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		f.pol.Stored(recs)
	}
	allowed := func(when string, want bool) {
		t.Helper()
		fail := f.pol.Authorize(ctx, c)
		switch {
		case want && fail != nil:
			t.Fatalf("%s: refused with credits left: %v", when, fail)
		case !want && (fail == nil || fail.Code != gateway.CodeQuota):
			t.Fatalf("%s: %v, want insufficient_quota", when, fail)
		}
	}
	reload := func() { f.clock.Add(2100 * time.Millisecond) }

	allowed("before any request", true)
	r1 := settle("r1")
	r2 := settle("r2")
	allowed("two settled, none stored, cache fresh", true)
	reload()
	allowed("two settled, none stored, reloaded", true)
	store(r1)
	allowed("one stored after the read", true)
	reload()
	allowed("one of two stored, reloaded", true) // counted twice, it would look overdrawn
	reload()
	allowed("one of two stored, reloaded again", true)
	store(r2, r1) // a retried batch repeats r1
	reload()
	allowed("both stored, a batch retried", true)
	r3 := settle("r3")
	allowed("overdrawn, not stored", false)
	reload()
	allowed("overdrawn, not stored, reloaded", false)
	reload()
	allowed("overdrawn, not stored, much later", false)
	store(r3)
	reload()
	allowed("overdrawn, stored", false)
	// A record a previous process spooled is stored without this one
	// having settled it: nothing of this process's changes.
	store(usage.Record{RequestID: "old", Time: f.clock.Now(), Account: "small", Project: "small-web", Provider: "openai",
		Model: "gpt-4o-mini", Status: usage.StatusOK, Credits: cost})
	if _, err := f.db.Credit(ctx, "small", 3*cost, "top-up"); err != nil {
		t.Fatal(err)
	}
	reload()
	allowed("topped up past the old record", true)
}

func (f *fixture) priceOf(t *testing.T, provider, model string) catalog.Price {
	t.Helper()
	m, ok := f.cat.Lookup(catalog.Provider(provider), model)
	if !ok {
		t.Fatalf("%s/%s not in the catalog", provider, model)
	}
	return m.Price
}

// flaky fails every read while down is set.
type flaky struct {
	account.Directory
	mu   sync.Mutex
	down bool
}

func (d *flaky) set(down bool) { d.mu.Lock(); d.down = down; d.mu.Unlock() }
func (d *flaky) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return errors.New("connection refused")
	}
	return nil
}
func (d *flaky) GetAccount(ctx context.Context, id string) (ledger.Account, error) {
	if err := d.err(); err != nil {
		return ledger.Account{}, err
	}
	return d.Directory.GetAccount(ctx, id)
}
func (d *flaky) GetProject(ctx context.Context, id string) (ledger.Project, error) {
	if err := d.err(); err != nil {
		return ledger.Project{}, err
	}
	return d.Directory.GetProject(ctx, id)
}

func TestDirectoryDown(t *testing.T) {
	f := newFixture(t)
	c := f.add(t, "a", catalog.PlanPro, meter.MicroCredits, true)
	d := &flaky{Directory: f.db}
	pol, err := account.New(account.Config{Directory: d, Catalog: f.cat, Now: f.clock.Now, StaleTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if fail := pol.Authorize(ctx, c); fail != nil {
		t.Fatal(fail)
	}
	d.set(true)
	f.clock.Add(10 * time.Second)
	if fail := pol.Authorize(ctx, c); fail != nil {
		t.Fatalf("a cached account must keep serving while the store is down: %v", fail)
	}
	f.clock.Add(2 * time.Minute)
	if fail := pol.Authorize(ctx, c); fail == nil || fail.Status != 503 {
		t.Fatalf("past the stale limit: %v, want 503", fail)
	}
	if fail := pol.Authorize(ctx, auth.Claims{Account: "never-seen", Project: "x"}); fail == nil || fail.Status != 503 {
		t.Fatalf("uncached while down: %v, want 503", fail)
	}
	d.set(false)
	if fail := pol.Authorize(ctx, c); fail != nil {
		t.Fatalf("store back: %v", fail)
	}
}

// Many goroutines admitting against one budget never reserve more than it.
func TestAdmitConcurrent(t *testing.T) {
	f := newFixture(t)
	c := f.add(t, "busy", catalog.PlanFree, 100*meter.MicroCredits, true)
	const model = "claude-3-5-haiku-20241022"
	m, _ := f.cat.Lookup("anthropic", model)
	tpm, _ := m.Limit(catalog.PlanFree)
	var mu sync.Mutex
	var admitted int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				cost := int64(10 + (i*7+j)%40)
				if _, fail := admit(t, f, c, "anthropic", model, cost); fail == nil {
					mu.Lock()
					admitted += cost
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if admitted > tpm || admitted < tpm-50 {
		t.Fatalf("admitted %d tokens in one window, limit %d", admitted, tpm)
	}
	t.Log("admitted " + strconv.FormatInt(admitted, 10))
}

// The rate-limit headers of a response are written when the provider's
// headers arrive, which can be long after admission: the reset they name is
// the time the budget is whole again, however long the provider took.
// Anthropic's anthropic-ratelimit-tokens-reset is now + Reset, OpenAI's
// x-ratelimit-reset-tokens is Reset itself.
func TestLimitsResetAtResponseTime(t *testing.T) {
	f := newFixture(t)
	c := f.add(t, "slow", catalog.PlanFree, 100*meter.MicroCredits, true)
	const model = "claude-3-5-haiku-20241022"
	windowEnd := time.Date(2026, 11, 27, 12, 1, 0, 0, time.UTC) // the fixture starts at 12:00:05
	for _, tt := range []struct {
		name    string
		latency time.Duration
		want    time.Duration
	}{
		{"at once", 0, 55 * time.Second},
		{"after 30 s", 30 * time.Second, 25 * time.Second},
		{"after the window ended", 70 * time.Second, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, fail := admit(t, f, c, "anthropic", model, 10)
			if fail != nil {
				t.Fatal(fail)
			}
			defer g.Settle(context.Background(), &usage.Record{Tokens: usage.Tokens{Input: 10}})
			start := f.clock.Now()
			f.clock.Add(tt.latency)
			defer f.clock.Add(-tt.latency)
			if got := g.Limits().Reset; got != tt.want {
				t.Errorf("reset %v after %v upstream, want %v (the window ends %v)", got, tt.latency, tt.want, windowEnd.Sub(start))
			}
		})
	}
}

// Requests in flight have not settled, so their debits are not yet known:
// an account with credits for one request must not get a hundred admitted
// at once. Each admitted request holds its estimated input's price against
// the balance until it settles, so an account overspends by at most about
// one request's unestimated output, however many it sends at once.
func TestInFlightRequestsHoldCredits(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const model = "gpt-4o-mini"
	const input = 100_000
	est := meter.Credits(f.priceOf(t, "openai", model), usage.Tokens{Input: input}, meter.DefaultRate)
	c := f.add(t, "burst", catalog.PlanEnterprise, 2*est+est/2, true) // two requests and a half
	if err := f.db.SetTPMOverride(ctx, "burst", model, 100*input); err != nil {
		t.Fatal(err)
	}
	var grants []gateway.Grant
	for range 20 {
		if fail := f.pol.Authorize(ctx, c); fail != nil {
			if fail.Code != gateway.CodeQuota {
				t.Fatalf("refused with %v, want insufficient_quota", fail)
			}
			continue
		}
		g, fail := admit(t, f, c, "openai", model, input)
		if fail != nil {
			if fail.Code != gateway.CodeQuota || !fail.NoRetry {
				t.Fatalf("refused with %v, want insufficient_quota", fail)
			}
			continue
		}
		grants = append(grants, g)
	}
	if fail := f.pol.Authorize(ctx, c); fail == nil || !strings.Contains(fail.Message, "in flight") {
		t.Errorf("credits held by requests in flight: refused with %v, want a message that says so", fail)
	}
	if len(grants) != 3 {
		t.Fatalf("%d requests admitted at once with credits for 2.5, want 3", len(grants))
	}
	// A request that ends without usage (the provider refused it) gives its
	// hold back; one that settles is debited its actual price instead.
	grants[0].Settle(ctx, &usage.Record{RequestID: "r0"})
	if fail := f.pol.Authorize(ctx, c); fail != nil {
		t.Fatalf("two requests in flight, half a request's credits free: refused with %v", fail)
	}
	grants[1].Settle(ctx, &usage.Record{RequestID: "r1"})
	grants[2].Settle(ctx, &usage.Record{RequestID: "r2"})
	if fail := f.pol.Authorize(ctx, c); fail != nil {
		t.Fatalf("nothing in flight and nothing spent: refused with %v", fail)
	}
	g, fail := admit(t, f, c, "openai", model, input)
	if fail != nil {
		t.Fatalf("nothing in flight and nothing spent: refused with %v", fail)
	}
	g.Settle(ctx, &usage.Record{RequestID: "r3", Tokens: usage.Tokens{Input: input}})
	if _, fail := admit(t, f, c, "openai", model, input); fail != nil {
		t.Fatalf("1.5 requests' credits left: refused with %v", fail)
	}
}

// A 429 carries the account's token budget for the rate-limit headers
// whichever budget refused it: the account's TPM, the project's tokens, or
// the project's requests per minute (which has no token figure of its own).
func TestRefusalCarriesTokenBudget(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.add(t, "rpm", catalog.PlanPro, 100*meter.MicroCredits, true)
	const model = "gpt-4o-mini"
	m, _ := f.cat.Lookup("openai", model)
	tpm, _ := m.Limit(catalog.PlanPro)
	if err := f.db.SetProjectLimits(ctx, c.Project, 1, 0); err != nil {
		t.Fatal(err)
	}
	g, fail := admit(t, f, c, "openai", model, 10)
	if fail != nil {
		t.Fatal(fail)
	}
	defer g.Settle(ctx, &usage.Record{Tokens: usage.Tokens{Input: 10}})
	_, fail = admit(t, f, c, "openai", model, 10)
	if fail == nil || !fail.RequestLimit {
		t.Fatalf("second request with rpm 1: %v, want a request-limit 429", fail)
	}
	if fail.Limits.Limit != tpm || fail.Limits.Remaining != tpm-10 {
		t.Errorf("refusal limits %+v, want the account's TPM budget: limit %d, remaining %d", fail.Limits, tpm, tpm-10)
	}
}
