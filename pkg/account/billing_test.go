package account_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/account"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/limit"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// This file checks billing from first principles: the expectations are
// computed from the price and limit tables as text, with a family rule
// written from docs/catalog.md and the credit formula from docs/credits.md,
// never through pkg/catalog or pkg/meter. What is checked is what the
// gateway does with a record: Policy.Admit, Grant.Settle, the limiter and
// the ledger.

// tableRows reads a CSV of pkg/catalog/data as maps from column to cell.
func tableRows(t *testing.T, name string) []map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "catalog", "data", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := make([]map[string]string, 0, len(rows)-1)
	for _, r := range rows[1:] {
		m := make(map[string]string, len(r))
		for i, col := range rows[0] {
			m[col] = r[i]
		}
		out = append(out, m)
	}
	return out
}

// usdPrices is one price row in USD per million tokens, each empty cell
// already replaced by what docs/catalog.md says it bills at.
type usdPrices struct {
	input, cached, write, write1h, output, audio, image *big.Rat
}

func priceTable(t *testing.T) map[string]usdPrices {
	t.Helper()
	rat := func(s string) *big.Rat {
		if s == "" {
			return nil
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("price %q", s)
		}
		return r
	}
	or := func(r, fallback *big.Rat) *big.Rat {
		if r == nil {
			return fallback
		}
		return r
	}
	out := map[string]usdPrices{}
	for _, r := range tableRows(t, "model-prices.csv") {
		in, output := rat(r["input_usd_per_mtok"]), rat(r["output_usd_per_mtok"])
		out[r["provider"]+"/"+r["model"]] = usdPrices{
			input:   in,
			cached:  or(rat(r["cached_input_usd_per_mtok"]), in),
			write:   or(rat(r["cache_write_usd_per_mtok"]), in),
			write1h: new(big.Rat).Mul(in, big.NewRat(2, 1)),
			output:  output,
			audio:   or(rat(r["audio_input_usd_per_mtok"]), in),
			image:   or(rat(r["image_output_usd_per_mtok"]), output),
		}
	}
	return out
}

// versionTail is one tail docs/catalog.md strips from a served name: a
// date, an MMDD snapshot, a version number, -latest or -preview.
var versionTail = regexp.MustCompile(`-(\d{8}|\d{4}-\d{2}-\d{2}|\d{2}-\d{4}|\d{4}|\d{3}|latest|preview)$`)

// familyOf is docs/catalog.md's rule: the name, else its alias, else the
// name less one tail, again.
func familyOf(provider, name string, prices map[string]usdPrices) (string, bool) {
	aliases := map[string]string{
		"claude-sonnet-4-0":        "claude-sonnet-4",
		"claude-opus-4-0":          "claude-opus-4",
		"gemini-flash-latest":      "gemini-2.5-flash",
		"gemini-flash-lite-latest": "gemini-2.5-flash-lite",
	}
	for {
		if _, ok := prices[provider+"/"+name]; ok {
			return name, true
		}
		if a, ok := aliases[name]; ok {
			return a, true
		}
		rest := versionTail.ReplaceAllString(name, "")
		if rest == name || rest == "" {
			return "", false
		}
		name = rest
	}
}

// expectedMicroCredits is docs/credits.md's formula at 180 credits per
// USD: Σ tokens × USD/MTok × 180 is micro-credits (the millions cancel),
// the parts priced apart at their own price instead of their kind's,
// reasoning not billed (it is inside output), rounded once, half to even.
// A charge beyond what a ledger record holds is that maximum.
func expectedMicroCredits(p usdPrices, tok usage.Tokens) int64 {
	kinds := []struct {
		n     int64
		price *big.Rat
	}{
		{tok.Input - tok.AudioInput, p.input},
		{tok.AudioInput, p.audio},
		{tok.CachedInput, p.cached},
		{tok.CacheWrite - tok.CacheWrite1h, p.write},
		{tok.CacheWrite1h, p.write1h},
		{tok.Output - tok.ImageOutput, p.output},
		{tok.ImageOutput, p.image},
	}
	sum := new(big.Rat)
	for _, k := range kinds {
		sum.Add(sum, new(big.Rat).Mul(big.NewRat(k.n, 1), k.price))
	}
	sum.Mul(sum, big.NewRat(180, 1))
	q, r := new(big.Int).QuoRem(sum.Num(), sum.Denom(), new(big.Int))
	switch c := new(big.Int).Lsh(r, 1).Cmp(sum.Denom()); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > ledger.MaxCredits {
		return ledger.MaxCredits
	}
	return q.Int64()
}

// billingCases are the usages every model is billed for, in this order
// (the account is in debt only after the last).
var billingCases = []struct {
	name string
	tok  usage.Tokens
}{
	{"nothing", usage.Tokens{}},
	{"one input token", usage.Tokens{Input: 1}},
	{"one cached token", usage.Tokens{CachedInput: 1}},
	{"seven cached tokens", usage.Tokens{CachedInput: 7}},
	{"one cache write", usage.Tokens{CacheWrite: 1}},
	{"one output token", usage.Tokens{Output: 1}},
	{"every kind", usage.Tokens{Input: 12_000, CachedInput: 30_000, CacheWrite: 2_000, Output: 800, Reasoning: 300}},
	// The same usage with all of the output reasoning costs the same.
	{"every kind, all reasoning", usage.Tokens{Input: 12_000, CachedInput: 30_000, CacheWrite: 2_000, Output: 800, Reasoning: 800}},
	{"parts priced apart", usage.Tokens{Input: 12_000, AudioInput: 5_000, CachedInput: 30_000, CacheWrite: 2_000, CacheWrite1h: 500,
		Output: 1_800, ImageOutput: 1_290, Reasoning: 200}},
	{"odd counts", usage.Tokens{Input: 333_333, CachedInput: 77_777, CacheWrite: 1_111, Output: 55_555, Reasoning: 5}},
	{"a billion of each", usage.Tokens{Input: 1e9, CachedInput: 1e9, CacheWrite: 1e9, Output: 1e9, Reasoning: 5e8}},
	// The largest count a record holds: on the dearest models its price
	// is beyond what one record's credits can be.
	{"the largest counts", usage.Tokens{Input: usage.MaxCount, CachedInput: usage.MaxCount, CacheWrite: usage.MaxCount, Output: usage.MaxCount}},
}

// servedModel is a served name with the family the tables and docs give it.
type servedModel struct {
	provider, name, family string
	tpmFree                int64
}

// servedModels lists model-limits.csv, each name's family resolved by the
// documented rule, and the overlay's like: form, which bills as the model
// it copies.
func servedModels(t *testing.T, prices map[string]usdPrices) []servedModel {
	t.Helper()
	var out []servedModel
	for _, r := range tableRows(t, "model-limits.csv") {
		fam, ok := familyOf(r["provider"], r["model"], prices)
		if !ok {
			t.Fatalf("%s/%s: no family by the documented rule", r["provider"], r["model"])
		}
		tpm, err := strconv.ParseInt(r["tpm_free"], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, servedModel{r["provider"], r["model"], fam, tpm})
	}
	if len(out) != 52 {
		t.Fatalf("model-limits.csv serves %d models, want 52", len(out))
	}
	return out
}

// likeOverlay adds one model of each provider through like:, each billed
// and limited as the model it names.
const likeOverlay = `models:
  - {provider: anthropic, name: house-sonnet, like: claude-sonnet-4-5-20250929}
  - {provider: openai, name: house-pro, like: gpt-5-pro}
  - {provider: gemini, name: house-flash, like: gemini-flash-latest}
`

var likeModels = []struct{ provider, name, like string }{
	{"anthropic", "house-sonnet", "claude-sonnet-4-5-20250929"},
	{"openai", "house-pro", "gpt-5-pro"},
	{"gemini", "house-flash", "gemini-flash-latest"},
}

func billingCatalog(t *testing.T, prices map[string]usdPrices) (*catalog.Catalog, []servedModel) {
	t.Helper()
	def, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(def, []byte(likeOverlay))
	if err != nil {
		t.Fatal(err)
	}
	models := servedModels(t, prices)
	for _, l := range likeModels {
		for _, m := range models[:52] {
			if m.provider == l.provider && m.name == l.like {
				models = append(models, servedModel{l.provider, l.name, m.family, m.tpmFree})
			}
		}
	}
	if len(models) != 52+len(likeModels) {
		t.Fatalf("%d models, want 52 and the like: ones", len(models))
	}
	return cat, models
}

// TestBillingFromTheTables settles every case on every served model
// through the policy and stores the records in the ledger: each charge is
// the tables' price, the balance falls by exactly their sum, and the usage
// summary adds up to the records.
func TestBillingFromTheTables(t *testing.T) {
	ctx := context.Background()
	prices := priceTable(t)
	cat, models := billingCatalog(t, prices)
	f := newFixture(t)
	// No limiter: what is checked here is the price, and the largest
	// counts would leave a TPM budget in debt.
	pol, err := account.New(account.Config{Directory: f.db, Catalog: cat, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const opening = ledger.MaxCredits
	for i, m := range models {
		t.Run(m.provider+"/"+m.name, func(t *testing.T) {
			p := prices[m.provider+"/"+m.family]
			c := f.add(t, fmt.Sprintf("bill-%02d", i), catalog.PlanPro, opening, true)
			var (
				recs []usage.Record
				sum  ledger.Bucket
			)
			for j, tc := range billingCases {
				g, fail := pol.Admit(ctx, gateway.Admission{Claims: c, Provider: m.provider, Model: m.name, Input: 10})
				if fail != nil {
					t.Fatalf("%s: admission refused: %v", tc.name, fail)
				}
				rec := usage.Record{RequestID: fmt.Sprintf("%s-%02d", c.Account, j), Time: f.clock.Now(), Account: c.Account, Project: c.Project,
					Provider: m.provider, Model: m.name, Operation: "chat", Status: usage.StatusOK, HTTPStatus: 200, Tokens: tc.tok}
				g.Settle(ctx, &rec)
				if want := expectedMicroCredits(p, tc.tok); rec.Credits != want {
					t.Errorf("%s %+v: billed %d micro-credits, the %s row says %d", tc.name, tc.tok, rec.Credits, m.family, want)
				}
				recs = append(recs, rec)
				sum.Input += rec.Input
				sum.CachedInput += rec.CachedInput
				sum.CacheWrite += rec.CacheWrite
				sum.Output += rec.Output
				sum.Reasoning += rec.Reasoning
				sum.Requests++
				sum.Credits += rec.Credits
			}
			if recs[6].Credits != recs[7].Credits {
				t.Errorf("reasoning billed on top of output: %d, %d micro-credits", recs[6].Credits, recs[7].Credits)
			}
			if err := f.db.InsertUsage(ctx, recs...); err != nil {
				t.Fatalf("the ledger refuses what the gateway billed: %v", err)
			}
			a, err := f.db.GetAccount(ctx, c.Account)
			if err != nil {
				t.Fatal(err)
			}
			if a.Balance != opening-sum.Credits {
				t.Errorf("balance %d, want %d - %d", a.Balance, int64(opening), sum.Credits)
			}
			got, err := f.db.Summarize(ctx, ledger.Query{Account: c.Account})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Tokens != sum.Tokens || got[0].Requests != sum.Requests || got[0].Credits != sum.Credits {
				t.Errorf("summary %+v, want %+v", got, sum)
			}
		})
	}
}

// TestTPMFromTheTables settles one usage with every kind on every served
// model and reads the account's Free budget back: it is model-limits.csv's
// figure, less input, cache writes and output, and less cached input too
// except on Anthropic (netlify-ai-gateway.md §4); reasoning is output.
func TestTPMFromTheTables(t *testing.T) {
	ctx := context.Background()
	prices := priceTable(t)
	cat, models := billingCatalog(t, prices)
	f := newFixture(t)
	lim, err := limit.New(limit.NewMemory(0), limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := account.New(account.Config{Directory: f.db, Catalog: cat, Limiter: lim, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok := usage.Tokens{Input: 100, CachedInput: 400, CacheWrite: 30, Output: 50, Reasoning: 20}
	for i, m := range models {
		c := f.add(t, fmt.Sprintf("tpm-%02d", i), catalog.PlanFree, 1_000_000_000, true)
		admit := func(input int64) gateway.Grant {
			t.Helper()
			g, fail := pol.Admit(ctx, gateway.Admission{Claims: auth.Claims{Account: c.Account, Project: c.Project},
				Provider: m.provider, Model: m.name, Input: input})
			if fail != nil {
				t.Fatalf("%s/%s: refused: %v", m.provider, m.name, fail)
			}
			return g
		}
		g := admit(tok.Total())
		if got := g.Limits().Limit; got != m.tpmFree {
			t.Errorf("%s/%s: Free TPM %d, model-limits.csv says %d", m.provider, m.name, got, m.tpmFree)
		}
		g.Settle(ctx, &usage.Record{RequestID: c.Account, Tokens: tok})
		counted := tok.Input + tok.CacheWrite + tok.Output
		if m.provider != "anthropic" {
			counted += tok.CachedInput
		}
		if got, want := admit(1).Limits().Remaining, m.tpmFree-counted-1; got != want {
			t.Errorf("%s/%s: %d tokens left of %d after %+v and one more, want %d (%d counted)",
				m.provider, m.name, got, m.tpmFree, tok, want, counted)
		}
	}
}
