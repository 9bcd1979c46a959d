package meter

import (
	"encoding/csv"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Worked by hand from the price table, so they check the formula rather
// than echo it.
func TestCreditsWorked(t *testing.T) {
	sonnet := catalog.Price{Input: 3_000_000, CachedInput: 300_000, CacheWrite: 3_750_000, CacheWrite1h: 6_000_000, Output: 15_000_000}
	flash := catalog.Price{Input: 100_000, CachedInput: 25_000, CacheWrite: 100_000, Output: 400_000}
	flash25 := catalog.Price{Input: 300_000, CachedInput: 30_000, CacheWrite: 300_000, CacheWrite1h: 600_000, Output: 2_500_000, AudioInput: 1_000_000, ImageOutput: 2_500_000}
	flashImage := catalog.Price{Input: 300_000, CachedInput: 30_000, CacheWrite: 300_000, CacheWrite1h: 600_000, Output: 2_500_000, AudioInput: 300_000, ImageOutput: 30_000_000}
	tests := []struct {
		name   string
		price  catalog.Price
		tokens usage.Tokens
		rate   Rate
		want   int64
	}{
		// 12k × 3.00 + 30k × 0.30 + 2k × 3.75 + 800 × 15.00 USD/MTok
		// = 0.036 + 0.009 + 0.0075 + 0.012 = 0.0645 USD; × 180 = 11.61 credits.
		{"sonnet all kinds", sonnet, usage.Tokens{Input: 12_000, CachedInput: 30_000, CacheWrite: 2_000, Output: 800, Reasoning: 300}, DefaultRate, 11_610_000},
		// Reasoning is inside Output: 0.0645 USD again, whatever Reasoning says.
		{"reasoning not billed twice", sonnet, usage.Tokens{Input: 12_000, CachedInput: 30_000, CacheWrite: 2_000, Output: 800, Reasoning: 800}, DefaultRate, 11_610_000},
		// 1,000 5-minute writes × 3.75 USD/MTok = 0.00375 USD = 675,000
		// micro-credits; 1-hour writes are 2 × input, 6.00 USD/MTok: 1,080,000.
		{"5-minute cache writes", sonnet, usage.Tokens{CacheWrite: 1000}, DefaultRate, 675_000},
		{"1-hour cache writes at twice the input price", sonnet, usage.Tokens{CacheWrite: 1000, CacheWrite1h: 1000}, DefaultRate, 1_080_000},
		{"1-hour part of the writes", sonnet, usage.Tokens{CacheWrite: 1000, CacheWrite1h: 400}, DefaultRate, 600*675 + 400*1080},
		{"1-hour part above all writes is clamped to them", sonnet, usage.Tokens{CacheWrite: 1000, CacheWrite1h: 5000}, DefaultRate, 1_080_000},
		{"1-hour part without writes bills nothing", sonnet, usage.Tokens{CacheWrite1h: 1000}, DefaultRate, 0},
		// 400 text × 0.30 + 600 audio × 1.00 USD/MTok = 0.00072 USD = 129,600.
		{"audio input at its own price", flash25, usage.Tokens{Input: 1000, AudioInput: 600}, DefaultRate, 129_600},
		{"audio above input is clamped to it", flash25, usage.Tokens{Input: 1000, AudioInput: 9000}, DefaultRate, 180_000},
		// 10 text × 2.50 + 1,290 image × 30.00 USD/MTok = 0.038725 USD = 6,970,500.
		{"image output at its own price", flashImage, usage.Tokens{Output: 1300, ImageOutput: 1290}, DefaultRate, 6_970_500},
		{"image above output is clamped to it", flashImage, usage.Tokens{Output: 10, ImageOutput: 1290}, DefaultRate, 54_000},
		// 1 token × 3.00 USD/MTok = 3e-6 USD = 540 micro-credits.
		{"one input token", sonnet, usage.Tokens{Input: 1}, DefaultRate, 540},
		{"nothing", sonnet, usage.Tokens{}, DefaultRate, 0},
		// 0.025 USD/MTok × 180 = 4.5 micro-credits a cached token.
		{"tie rounds to even, down", flash, usage.Tokens{CachedInput: 1}, DefaultRate, 4},    // 4.5
		{"tie rounds to even, up", flash, usage.Tokens{CachedInput: 3}, DefaultRate, 14},     // 13.5
		{"tie rounds to even, down 2", flash, usage.Tokens{CachedInput: 5}, DefaultRate, 22}, // 22.5
		{"tie rounds to even, up 2", flash, usage.Tokens{CachedInput: 7}, DefaultRate, 32},   // 31.5
		// 4.5 + 4.5 = 9 exactly: rounding each kind would bill 8 (ties to
		// even) or 10 (ties up); the request is rounded once, as a whole.
		{"one rounding per request", catalog.Price{Input: 100_000, CachedInput: 25_000, CacheWrite: 25_000, Output: 400_000},
			usage.Tokens{CachedInput: 1, CacheWrite: 1}, DefaultRate, 9},
		// 18 + 4.5 + 72 = 94.5 → 94.
		{"kinds summed before rounding", flash, usage.Tokens{Input: 1, CachedInput: 1, Output: 1}, DefaultRate, 94},
		// At 1 credit per USD a token at 0.10 USD/MTok is 0.1 micro-credits.
		{"below half a unit", flash, usage.Tokens{Input: 1}, CreditPerUSD, 0},
		{"exactly half, even below", flash, usage.Tokens{Input: 5}, CreditPerUSD, 0},
		{"above half a unit", flash, usage.Tokens{Input: 6}, CreditPerUSD, 1},
		{"exactly half, even above", flash, usage.Tokens{Input: 15}, CreditPerUSD, 2},
		// A rate below one credit per USD: 0.5 credits per USD, 1000 input
		// tokens at 3.00 USD/MTok = 0.003 USD = 0.0015 credits.
		{"fractional rate", sonnet, usage.Tokens{Input: 1000}, CreditPerUSD / 2, 1_500},
		{"negative counts are zero", sonnet, usage.Tokens{Input: -5, Output: 1}, DefaultRate, 2_700},
		{"zero rate", sonnet, usage.Tokens{Input: 1000}, 0, 0},
		{"negative rate", sonnet, usage.Tokens{Input: 1000}, -DefaultRate, 0},
		{"negative price", catalog.Price{Input: -3_000_000, Output: 15_000_000}, usage.Tokens{Input: 1000, Output: 1}, DefaultRate, 2_700},
		// Counts beyond MaxCount bill as MaxCount: 2^40 × 0.40 USD/MTok × 180.
		{"count clamped", flash, usage.Tokens{Output: math.MaxInt64}, DefaultRate, (1 << 40) * 72},
		{"saturates", catalog.Price{Input: math.MaxInt64}, usage.Tokens{Input: math.MaxInt64}, Rate(math.MaxInt64), usage.MaxCredits},
		// 2^40 output tokens at 168 USD/MTok (gpt-5.2-pro) is 4.6 × 10¹⁶
		// micro-credits, beyond what a record holds.
		{"saturates at a record's most", catalog.Price{Input: 21_000_000, Output: 168_000_000}, usage.Tokens{Output: usage.MaxCount}, DefaultRate, usage.MaxCredits},
		{"just below a record's most", catalog.Price{Input: 1_000_000, Output: 1_000_000_000}, usage.Tokens{Output: usage.MaxCredits/180_000 - 1}, DefaultRate, (usage.MaxCredits/180_000 - 1) * 180_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Credits(tt.price, tt.tokens, tt.rate); got != tt.want {
				t.Errorf("Credits = %d, want %d", got, tt.want)
			}
		})
	}
}

// priceRow is one row of the price table read straight from its text, in
// USD per million tokens.
type priceRow struct {
	input, cachedInput, cacheWrite, cacheWrite1h, output *big.Rat
	audioInput, imageOutput                              *big.Rat
}

// readPriceTable parses the catalog's price CSV independently of the
// catalog, keyed by provider/family.
func readPriceTable(t testing.TB) map[string]priceRow {
	t.Helper()
	f, err := os.Open("../catalog/data/model-prices.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := make(map[string]int)
	for i, h := range recs[0] {
		col[h] = i
	}
	rat := func(s string) *big.Rat {
		if s == "" {
			return nil
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("price %q is not a number", s)
		}
		return r
	}
	rows := make(map[string]priceRow)
	for _, rec := range recs[1:] {
		row := priceRow{
			input:       rat(rec[col["input_usd_per_mtok"]]),
			cachedInput: rat(rec[col["cached_input_usd_per_mtok"]]),
			cacheWrite:  rat(rec[col["cache_write_usd_per_mtok"]]),
			output:      rat(rec[col["output_usd_per_mtok"]]),
			audioInput:  rat(rec[col["audio_input_usd_per_mtok"]]),
			imageOutput: rat(rec[col["image_output_usd_per_mtok"]]),
		}
		// An empty cell is billed at the input price (catalog.Price).
		if row.cachedInput == nil {
			row.cachedInput = row.input
		}
		if row.cacheWrite == nil {
			row.cacheWrite = row.input
		}
		// An empty modality cell bills the kind's price.
		if row.audioInput == nil {
			row.audioInput = row.input
		}
		if row.imageOutput == nil {
			row.imageOutput = row.output
		}
		// A 1-hour cache write is twice the input price (Anthropic's rule).
		row.cacheWrite1h = new(big.Rat).Mul(row.input, big.NewRat(2, 1))
		rows[rec[col["provider"]]+"/"+rec[col["model"]]] = row
	}
	return rows
}

// exactMicroCredits is the unrounded cost: tokens × USD per MTok × credits
// per USD is micro-credits, since the two millions cancel.
func exactMicroCredits(row priceRow, tok usage.Tokens, creditsPerUSD *big.Rat) *big.Rat {
	clamp := func(n int64) int64 { return min(max(n, 0), usage.MaxCount) }
	// Audio input, 1-hour writes and image output are parts of their
	// kind, billed instead of it.
	audio := min(clamp(tok.AudioInput), clamp(tok.Input))
	write1h := min(clamp(tok.CacheWrite1h), clamp(tok.CacheWrite))
	image := min(clamp(tok.ImageOutput), clamp(tok.Output))
	sum := new(big.Rat)
	for _, k := range []struct {
		n     int64
		price *big.Rat
	}{
		{clamp(tok.Input) - audio, row.input},
		{audio, row.audioInput},
		{clamp(tok.CachedInput), row.cachedInput},
		{clamp(tok.CacheWrite) - write1h, row.cacheWrite},
		{write1h, row.cacheWrite1h},
		{clamp(tok.Output) - image, row.output},
		{image, row.imageOutput},
	} {
		sum.Add(sum, new(big.Rat).Mul(new(big.Rat).SetInt64(k.n), k.price))
	}
	return sum.Mul(sum, creditsPerUSD)
}

// roundHalfEven rounds a non-negative rational to the nearest integer,
// ties to even, saturating at usage.MaxCredits, the most a record holds.
func roundHalfEven(x *big.Rat) int64 {
	q, r := new(big.Int).QuoRem(x.Num(), x.Denom(), new(big.Int))
	switch new(big.Int).Lsh(r, 1).Cmp(x.Denom()) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	if !q.IsInt64() || q.Int64() > usage.MaxCredits {
		return usage.MaxCredits
	}
	return q.Int64()
}

// randomTokens draws counts over the whole range a request can report:
// zeros, every order of magnitude up to MaxCount, and out-of-range values
// that must be clamped.
func randomTokens(rng *rand.Rand) usage.Tokens {
	count := func() int64 {
		switch p := rng.IntN(100); {
		case p < 20:
			return 0
		case p < 24:
			return usage.MaxCount
		case p < 26:
			return usage.MaxCount + 1 + rng.Int64N(math.MaxInt64-usage.MaxCount)
		case p < 28:
			return -1 - rng.Int64N(math.MaxInt64)
		default:
			return rng.Int64N(int64(1) << rng.IntN(41))
		}
	}
	tok := usage.Tokens{Input: count(), CachedInput: count(), CacheWrite: count(), CacheWrite1h: count(), Output: count(),
		AudioInput: count(), ImageOutput: count()}
	if tok.Output > 0 {
		tok.Reasoning = rng.Int64N(tok.Output + 1)
	}
	return tok
}

// TestCreditsEveryModel checks every served model against the price CSV
// read in the test, at rates from a millionth of a credit to the largest
// ParseRate accepts.
func TestCreditsEveryModel(t *testing.T) {
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	rows := readPriceTable(t)
	rates := []string{"180", "1", "0.000001", "333.333333", "7.25", "999999999999"}
	rng := rand.New(rand.NewPCG(1, 2))
	million := big.NewRat(1_000_000, 1)
	models := cat.All()
	if len(models) < 50 {
		t.Fatalf("catalog has %d models; want the full table", len(models))
	}
	for _, m := range models {
		row, ok := rows[string(m.Provider)+"/"+m.Family]
		if !ok {
			t.Errorf("%s/%s: family %q has no row in the price CSV", m.Provider, m.Name, m.Family)
			continue
		}
		// The catalog's resolved price is the CSV row, in micro-USD.
		for _, c := range []struct {
			kind string
			got  int64
			want *big.Rat
		}{
			{"input", m.Price.Input, row.input},
			{"cached input", m.Price.CachedInput, row.cachedInput},
			{"cache write", m.Price.CacheWrite, row.cacheWrite},
			{"1-hour cache write", m.Price.CacheWrite1h, row.cacheWrite1h},
			{"audio input", m.Price.AudioInput, row.audioInput},
			{"image output", m.Price.ImageOutput, row.imageOutput},
			{"output", m.Price.Output, row.output},
		} {
			if new(big.Rat).SetInt64(c.got).Cmp(new(big.Rat).Mul(c.want, million)) != 0 {
				t.Errorf("%s/%s %s price: catalog %d micro-USD, CSV %s USD", m.Provider, m.Name, c.kind, c.got, c.want.FloatString(6))
			}
		}
		for _, rs := range rates {
			rate, err := ParseRate(rs)
			if err != nil {
				t.Fatal(err)
			}
			perUSD, _ := new(big.Rat).SetString(rs)
			for range 100 {
				tok := randomTokens(rng)
				want := roundHalfEven(exactMicroCredits(row, tok, perUSD))
				if got := Credits(m.Price, tok, rate); got != want {
					t.Fatalf("%s/%s at %s credits/USD, %+v: got %d micro-credits, CSV says %d", m.Provider, m.Name, rs, tok, got, want)
				}
			}
		}
	}
}

// TestNoDrift bills a million random requests and checks that the sum of
// what was billed equals the sum of independently rounded costs, that it is
// within half a micro-credit per request of the exact total, and that the
// rounding is not biased one way.
func TestNoDrift(t *testing.T) {
	const n = 1_000_000
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	models := cat.All()
	rng := rand.New(rand.NewPCG(3, 4))
	// Costs are exact fractions x / 10¹² micro-credits, x = Σ count ×
	// micro-USD per MTok × micro-credits per USD.
	denom := big.NewInt(1_000_000_000_000)
	rate := big.NewInt(int64(DefaultRate))
	var (
		billed, rounded int64   // Σ Credits, Σ independently rounded
		exact           big.Int // Σ x
		errSum          int64   // Σ (billed×10¹² − x): the signed rounding error, in 10⁻¹² micro-credits
		errSq           float64 // Σ error², in micro-credits²
		tiesUp, tiesDn  int
		x, q, r         big.Int
		term            big.Int
	)
	// Counts uniform up to 2¹⁷ spread every price's fractional parts evenly,
	// so a fair rule has mean error zero. (Counts clustered on a few small
	// values would give any rule a bias set by the prices, not the rule.)
	realistic := func() int64 {
		if rng.IntN(4) == 0 {
			return 0
		}
		return rng.Int64N(1 << 17)
	}
	for range n {
		m := models[rng.IntN(len(models))]
		tok := usage.Tokens{Input: realistic(), CachedInput: realistic(), CacheWrite: realistic(), Output: realistic()}
		got := Credits(m.Price, tok, DefaultRate)
		billed += got

		x.SetInt64(0)
		for _, k := range [...][2]int64{
			{tok.Input, m.Price.Input}, {tok.CachedInput, m.Price.CachedInput},
			{tok.CacheWrite, m.Price.CacheWrite}, {tok.Output, m.Price.Output},
		} {
			term.SetInt64(k[0])
			x.Add(&x, term.Mul(&term, r.SetInt64(k[1])))
		}
		x.Mul(&x, rate)
		exact.Add(&exact, &x)
		q.QuoRem(&x, denom, &r)
		want, rem := q.Int64(), r.Int64()
		e := -rem // rounded down: billed − exact = −rem/10¹²
		switch {
		case 2*rem > denom.Int64():
			want, e = want+1, denom.Int64()-rem
		case 2*rem == denom.Int64() && want%2 == 1:
			want, e = want+1, denom.Int64()-rem
			tiesUp++
		case 2*rem == denom.Int64():
			tiesDn++
		}
		if got != want {
			t.Fatalf("%s %+v: Credits = %d, independent rounding = %d", m.Name, tok, got, want)
		}
		// Each request's error is at most half a unit.
		if 2*max(e, -e) > denom.Int64() {
			t.Fatalf("%s %+v: rounding error %d/10¹² exceeds half a micro-credit", m.Name, tok, e)
		}
		rounded += want
		errSum += e
		errSq += math.Pow(float64(e)/1e12, 2)
	}
	if billed != rounded {
		t.Fatalf("Σ billed = %d, Σ independently rounded = %d", billed, rounded)
	}
	// The drift is exactly Σ billed − exact total; it must match the sum of
	// the per-request errors and stay within n/2 micro-credits.
	drift := new(big.Rat).Sub(new(big.Rat).SetInt64(billed), new(big.Rat).SetFrac(&exact, denom))
	if drift.Cmp(big.NewRat(errSum, denom.Int64())) != 0 {
		t.Fatalf("drift %s ≠ Σ per-request errors %d/10¹²", drift.FloatString(6), errSum)
	}
	bound := big.NewRat(n, 2)
	if new(big.Rat).Abs(drift).Cmp(bound) > 0 {
		t.Fatalf("|drift| = %s micro-credits over %d requests, bound %s", drift.FloatString(6), n, bound.FloatString(0))
	}
	// No bias: if the per-request errors have mean zero, their sum stays
	// within six standard deviations, √Σe², of zero. Ceiling would drift
	// by about n/2 (500,000) and ties-up by ties/2, both far outside.
	sigma := math.Sqrt(errSq)
	f, _ := drift.Float64()
	if math.Abs(f) > 6*sigma {
		t.Errorf("drift %.3f micro-credits over %d requests is %.1f standard deviations (%.1f): biased", f, n, f/sigma, sigma)
	}
	ties := tiesUp + tiesDn
	if ties < 1000 {
		t.Fatalf("only %d ties: the test does not exercise tie rounding", ties)
	}
	if d := math.Abs(float64(tiesUp - tiesDn)); d > 6*math.Sqrt(float64(ties)) {
		t.Errorf("ties rounded up %d, down %d: biased", tiesUp, tiesDn)
	}
	t.Logf("%d requests: billed %d micro-credits, drift %s (%.2f σ, σ = %.1f), %d ties (%d up, %d down)",
		n, billed, drift.FloatString(6), f/sigma, sigma, ties, tiesUp, tiesDn)
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr bool
	}{
		{"180", DefaultRate, false},
		{"1", CreditPerUSD, false},
		{"0.5", 500_000, false},
		{"0.000001", 1, false},
		{"333.333333", 333_333_333, false},
		{"0", 0, true},
		{"0.0000001", 0, true},
		{"-180", 0, true},
		{"1e3", 0, true},
		{"", 0, true},
		{"abc", 0, true},
		{"1/3", 0, true},
		{"1000000000000", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "credits per US dollar") {
			t.Errorf("ParseRate(%q) error %q does not say what a rate is", tt.in, err)
		}
	}
	if s := DefaultRate.String(); s != "180.00" {
		t.Errorf("DefaultRate.String() = %q", s)
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"180", "0.5", "0.000001", "999999999999.999999", "0", "-1", "1e3", ".5", "1."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r <= 0 {
			t.Fatalf("ParseRate(%q) = %d, not positive", s, r)
		}
		want, ok := new(big.Rat).SetString(s)
		if !ok || new(big.Rat).SetInt64(int64(r)).Cmp(want.Mul(want, big.NewRat(MicroCredits, 1))) != 0 {
			t.Fatalf("ParseRate(%q) = %d micro-credits per USD", s, r)
		}
		if back, err := ParseRate(r.String()); err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %d, round trip %q → %d, %v", s, r, r.String(), back, err)
		}
	})
}

// FuzzCredits compares Credits with the rational computation on arbitrary
// prices, counts and rates, saturation included.
func FuzzCredits(f *testing.F) {
	f.Add(int64(3_000_000), int64(300_000), int64(3_750_000), int64(6_000_000), int64(15_000_000), int64(1_000_000), int64(30_000_000),
		int64(12_000), int64(30_000), int64(2_000), int64(500), int64(800), int64(300), int64(90), int64(DefaultRate))
	f.Add(int64(math.MaxInt64), int64(0), int64(-1), int64(math.MaxInt64), int64(1), int64(math.MaxInt64), int64(-1),
		int64(math.MaxInt64), int64(-5), int64(1), int64(7), int64(1<<40), int64(math.MaxInt64), int64(3), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, pi, pc, pw, pw1h, po, pa, pimg, ni, nc, nw, nw1h, no, na, nimg, rate int64) {
		p := catalog.Price{Input: pi, CachedInput: pc, CacheWrite: pw, CacheWrite1h: pw1h, Output: po, AudioInput: pa, ImageOutput: pimg}
		tok := usage.Tokens{Input: ni, CachedInput: nc, CacheWrite: nw, CacheWrite1h: nw1h, Output: no, AudioInput: na, ImageOutput: nimg}
		usd := func(micros int64) *big.Rat { return big.NewRat(max(micros, 0), 1_000_000) }
		row := priceRow{usd(pi), usd(pc), usd(pw), usd(pw1h), usd(po), usd(pa), usd(pimg)}
		want := int64(0)
		if rate > 0 {
			want = roundHalfEven(exactMicroCredits(row, tok, big.NewRat(rate, MicroCredits)))
		}
		if got := Credits(p, tok, Rate(rate)); got != want {
			t.Fatalf("Credits(%+v, %+v, %d) = %d, want %d", p, tok, rate, got, want)
		}
	})
}

func BenchmarkCredits(b *testing.B) {
	p := catalog.Price{Input: 3_000_000, CachedInput: 300_000, CacheWrite: 3_750_000, Output: 15_000_000}
	tok := usage.Tokens{Input: 12_345, CachedInput: 30_000, CacheWrite: 2_000, Output: 801}
	var sink int64
	for b.Loop() {
		sink += Credits(p, tok, DefaultRate)
	}
	if sink == 0 {
		b.Fatal("no credits")
	}
}

// TestCreditsOpenAICacheWrites: OpenAI reports cache writes as a part of the
// prompt and bills them as input; with the cache-write cell empty, moving
// prompt tokens from Input to CacheWrite must not change what a request
// costs on any OpenAI model.
func TestCreditsOpenAICacheWrites(t *testing.T) {
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cat.All() {
		if m.Provider != catalog.OpenAI {
			continue
		}
		asInput := Credits(m.Price, usage.Tokens{Input: 700, CachedInput: 300, Output: 10}, DefaultRate)
		asWrite := Credits(m.Price, usage.Tokens{Input: 500, CachedInput: 300, CacheWrite: 200, Output: 10}, DefaultRate)
		if asInput != asWrite {
			t.Errorf("%s: 200 prompt tokens cost %d as input, %d as cache writes", m.Name, asInput, asWrite)
		}
	}
}
