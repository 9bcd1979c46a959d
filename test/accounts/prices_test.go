package accounts_test

import (
	"encoding/csv"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// The expectations of these tests are computed from the published tables
// the catalog is built from, read here on their own, not through
// pkg/catalog or pkg/meter.

// creditsPerUSD is the hosted product's published rate, the gateway's
// default.
const creditsPerUSD = 180

func readCSV(t *testing.T, name string) []map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(harness.RepoRoot(), "pkg", "catalog", "data", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out []map[string]string
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, col := range rows[0] {
			m[col] = r[i]
		}
		out = append(out, m)
	}
	return out
}

// tpmFromCSV is the plan's tokens-per-minute figure for a model in
// model-limits.csv.
func tpmFromCSV(t *testing.T, model, plan string) int64 {
	t.Helper()
	for _, r := range readCSV(t, "model-limits.csv") {
		if r["model"] == model {
			n, err := strconv.ParseInt(r["tpm_"+plan], 10, 64)
			if err != nil {
				t.Fatalf("model-limits.csv %s tpm_%s: %v", model, plan, err)
			}
			return n
		}
	}
	t.Fatalf("model-limits.csv has no %s", model)
	return 0
}

// microCreditsFromCSV prices one request from model-prices.csv: the row
// of the longest family name the model starts with, each kind at its USD
// per million tokens (an empty cached or cache-write price is the input
// price), times creditsPerUSD, rounded once to the nearest micro-credit
// with ties to even.
func microCreditsFromCSV(t *testing.T, model string, tok usage.Tokens) int64 {
	t.Helper()
	var row map[string]string
	for _, r := range readCSV(t, "model-prices.csv") {
		if strings.HasPrefix(model, r["model"]) && (row == nil || len(r["model"]) > len(row["model"])) {
			row = r
		}
	}
	if row == nil {
		t.Fatalf("model-prices.csv has no family for %s", model)
	}
	price := func(col string) *big.Rat {
		v := row[col]
		if v == "" {
			v = row["input_usd_per_mtok"]
		}
		r, ok := new(big.Rat).SetString(v)
		if !ok {
			t.Fatalf("model-prices.csv %s %s: %q", row["model"], col, v)
		}
		return r
	}
	// tokens × USD per million tokens × credits per USD × 10⁶ micro-credits
	// per credit / 10⁶ tokens: the millions cancel.
	sum := new(big.Rat)
	for _, k := range []struct {
		n   int64
		col string
	}{
		{tok.Input, "input_usd_per_mtok"},
		{tok.CachedInput, "cached_input_usd_per_mtok"},
		{tok.CacheWrite, "cache_write_usd_per_mtok"},
		{tok.Output, "output_usd_per_mtok"},
	} {
		sum.Add(sum, new(big.Rat).Mul(new(big.Rat).SetInt64(k.n), price(k.col)))
	}
	sum.Mul(sum, new(big.Rat).SetInt64(creditsPerUSD))
	return roundHalfEven(sum)
}

func roundHalfEven(r *big.Rat) int64 {
	q, m := new(big.Int).DivMod(r.Num(), r.Denom(), new(big.Int))
	twice := new(big.Int).Mul(m, big.NewInt(2))
	switch twice.Cmp(r.Denom()) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	return q.Int64()
}

func TestRoundHalfEven(t *testing.T) {
	for _, tc := range []struct {
		num, den int64
		want     int64
	}{{5, 2, 2}, {7, 2, 4}, {9, 4, 2}, {11, 4, 3}, {0, 1, 0}, {3, 1, 3}} {
		if got := roundHalfEven(big.NewRat(tc.num, tc.den)); got != tc.want {
			t.Errorf("round(%d/%d) = %d, want %d", tc.num, tc.den, got, tc.want)
		}
	}
}
