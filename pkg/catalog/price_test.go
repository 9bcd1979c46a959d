package catalog

import (
	"strconv"
	"testing"
)

func TestParsePrice(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"2.50", 2_500_000, false},
		{"0.01875", 18_750, false},
		{"0.1", 100_000, false}, // no float rounding: 0.1 is not exact in binary
		{"0.000001", 1, false},
		{"1.0000010", 1_000_001, false}, // trailing zeros beyond six places are fine
		{"168", 168_000_000, false},
		{"007.5", 7_500_000, false},
		{"2.", 2_000_000, false},
		{".5", 500_000, false},
		{"999999999999.999999", 999_999_999_999_999_999, false},
		{"1000000000000", 0, true}, // would overflow
		{"0.0000001", 0, true},     // finer than a micro-dollar
		{"", 0, true},
		{".", 0, true},
		{"-1", 0, true},
		{"+1", 0, true},
		{"1e-3", 0, true},
		{"1_000", 0, true},
		{" 1", 0, true},
		{"1.2.3", 0, true},
		{"NaN", 0, true},
		{".inf", 0, true},
	}
	for _, tt := range tests {
		got, err := ParsePrice(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParsePrice(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatPrice(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0.00"},
		{2_500_000, "2.50"},
		{18_750, "0.01875"},
		{1, "0.000001"},
		{168_000_000, "168.00"},
		{-1_250_000, "-1.25"},
	}
	for _, tt := range tests {
		if got := FormatPrice(tt.in); got != tt.want {
			t.Errorf("FormatPrice(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzPriceRoundTrip(f *testing.F) {
	for _, s := range []string{"0", "2.50", "0.01875", "1.000001", "-1", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParsePrice(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParsePrice(%q) = %d, negative", s, v)
		}
		back, err := ParsePrice(FormatPrice(v))
		if err != nil || back != v {
			t.Fatalf("ParsePrice(FormatPrice(%d)) = %d, %v", v, back, err)
		}
		// Whatever strconv reads as a float should agree where the float
		// is exact enough to compare.
		if fl, err := strconv.ParseFloat(s, 64); err == nil && fl < 1e6 {
			if d := fl*1e6 - float64(v); d > 0.5 || d < -0.5 {
				t.Fatalf("ParsePrice(%q) = %d, float says %v", s, v, fl*1e6)
			}
		}
	})
}

func TestPriceFallbacks(t *testing.T) {
	tests := []struct {
		name string
		spec priceSpec
		want Price
	}{
		{"all cells", priceSpec{some(3), some(1), some(4), some(15), some(7), some(40)}, Price{3, 1, 4, 6, 15, 7, 40}},
		{"no modality cells bill their kind", priceSpec{input: some(3), cachedInput: some(1), cacheWrite: some(4), output: some(15)}, Price{3, 1, 4, 6, 15, 3, 15}},
		{"no cached input bills input", priceSpec{input: some(15), output: some(120)}, Price{15, 15, 15, 30, 120, 15, 120}},
		{"no cache write bills input", priceSpec{input: some(2), cachedInput: some(1), output: some(8)}, Price{2, 1, 2, 4, 8, 2, 8}},
	}
	for _, tt := range tests {
		if got := tt.spec.resolve(); got != tt.want {
			t.Errorf("%s: resolve() = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestPricesWithoutModalityColumns: the platform's published table has no
// modality columns; it still loads, and every modality bills at its kind.
func TestPricesWithoutModalityColumns(t *testing.T) {
	const published = "provider,model,input_usd_per_mtok,cached_input_usd_per_mtok,cache_write_usd_per_mtok,output_usd_per_mtok,source\n" +
		"gemini,gemini-2.5-flash,0.30,0.03,,2.50,LiteLLM (audio input 1.00)\n"
	families, err := parsePrices(published)
	if err != nil {
		t.Fatal(err)
	}
	got := families[key{Gemini, "gemini-2.5-flash"}].resolve()
	if got.AudioInput != 300_000 || got.ImageOutput != 2_500_000 {
		t.Errorf("price %+v: want audio input at the input price, image output at the output price", got)
	}
}
