package catalog

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func mustDefault(t testing.TB) *Catalog {
	t.Helper()
	c, err := Default()
	if err != nil {
		t.Fatalf("Default: %v", err)
	}
	return c
}

// TestDefaultFamilies pins the price family of every served model, so a
// change to the resolution rule that reprices a model shows up here.
func TestDefaultFamilies(t *testing.T) {
	want := map[key]string{
		{Anthropic, "claude-3-5-haiku-20241022"}:  "claude-3-5-haiku",
		{Anthropic, "claude-3-7-sonnet-20250219"}: "claude-3-7-sonnet",
		{Anthropic, "claude-3-haiku-20240307"}:    "claude-3-haiku",
		{Anthropic, "claude-haiku-4-5"}:           "claude-haiku-4-5",
		{Anthropic, "claude-haiku-4-5-20251001"}:  "claude-haiku-4-5",
		{Anthropic, "claude-opus-4-1-20250805"}:   "claude-opus-4-1",
		{Anthropic, "claude-opus-4-20250514"}:     "claude-opus-4",
		{Anthropic, "claude-opus-4-5"}:            "claude-opus-4-5",
		{Anthropic, "claude-opus-4-5-20251101"}:   "claude-opus-4-5",
		{Anthropic, "claude-sonnet-4-0"}:          "claude-sonnet-4",
		{Anthropic, "claude-sonnet-4-20250514"}:   "claude-sonnet-4",
		{Anthropic, "claude-sonnet-4-5"}:          "claude-sonnet-4-5",
		{Anthropic, "claude-sonnet-4-5-20250929"}: "claude-sonnet-4-5",

		{Gemini, "gemini-2.0-flash"}:                      "gemini-2.0-flash",
		{Gemini, "gemini-2.0-flash-lite"}:                 "gemini-2.0-flash-lite",
		{Gemini, "gemini-2.5-flash"}:                      "gemini-2.5-flash",
		{Gemini, "gemini-2.5-flash-image"}:                "gemini-2.5-flash-image",
		{Gemini, "gemini-2.5-flash-image-preview"}:        "gemini-2.5-flash-image",
		{Gemini, "gemini-2.5-flash-lite"}:                 "gemini-2.5-flash-lite",
		{Gemini, "gemini-2.5-flash-lite-preview-09-2025"}: "gemini-2.5-flash-lite",
		{Gemini, "gemini-2.5-flash-preview-09-2025"}:      "gemini-2.5-flash",
		{Gemini, "gemini-2.5-pro"}:                        "gemini-2.5-pro",
		{Gemini, "gemini-3-flash-preview"}:                "gemini-3-flash-preview",
		{Gemini, "gemini-3-pro-image-preview"}:            "gemini-3-pro-image-preview",
		{Gemini, "gemini-3-pro-preview"}:                  "gemini-3-pro-preview",
		{Gemini, "gemini-flash-latest"}:                   "gemini-2.5-flash",
		{Gemini, "gemini-flash-lite-latest"}:              "gemini-2.5-flash-lite",

		{OpenAI, "codex-mini-latest"}:      "codex-mini-latest",
		{OpenAI, "gpt-4.1"}:                "gpt-4.1",
		{OpenAI, "gpt-4.1-mini"}:           "gpt-4.1-mini",
		{OpenAI, "gpt-4.1-nano"}:           "gpt-4.1-nano",
		{OpenAI, "gpt-4o"}:                 "gpt-4o",
		{OpenAI, "gpt-4o-mini"}:            "gpt-4o-mini",
		{OpenAI, "gpt-5"}:                  "gpt-5",
		{OpenAI, "gpt-5-2025-08-07"}:       "gpt-5",
		{OpenAI, "gpt-5-codex"}:            "gpt-5-codex",
		{OpenAI, "gpt-5-mini"}:             "gpt-5-mini",
		{OpenAI, "gpt-5-mini-2025-08-07"}:  "gpt-5-mini",
		{OpenAI, "gpt-5-nano"}:             "gpt-5-nano",
		{OpenAI, "gpt-5-pro"}:              "gpt-5-pro",
		{OpenAI, "gpt-5.1"}:                "gpt-5.1",
		{OpenAI, "gpt-5.1-2025-11-13"}:     "gpt-5.1",
		{OpenAI, "gpt-5.1-codex"}:          "gpt-5.1-codex",
		{OpenAI, "gpt-5.1-codex-max"}:      "gpt-5.1-codex-max",
		{OpenAI, "gpt-5.1-codex-mini"}:     "gpt-5.1-codex-mini",
		{OpenAI, "gpt-5.2"}:                "gpt-5.2",
		{OpenAI, "gpt-5.2-2025-12-11"}:     "gpt-5.2",
		{OpenAI, "gpt-5.2-pro"}:            "gpt-5.2-pro",
		{OpenAI, "gpt-5.2-pro-2025-12-11"}: "gpt-5.2-pro",
		{OpenAI, "o3"}:                     "o3",
		{OpenAI, "o3-mini"}:                "o3-mini",
		{OpenAI, "o4-mini"}:                "o4-mini",
	}
	if len(want) != 52 {
		t.Fatalf("table pins %d models, want 52", len(want))
	}
	c := mustDefault(t)
	all := c.All()
	if len(all) != len(want) {
		t.Errorf("Default serves %d models, want %d", len(all), len(want))
	}
	for _, m := range all {
		if _, ok := want[key{m.Provider, m.Name}]; !ok {
			t.Errorf("unexpected model %s/%s", m.Provider, m.Name)
		}
	}
	for k, family := range want {
		m, ok := c.Lookup(k.provider, k.name)
		if !ok {
			t.Errorf("Lookup(%s, %s): not found", k.provider, k.name)
			continue
		}
		if m.Family != family {
			t.Errorf("%s/%s: family %q, want %q", k.provider, k.name, m.Family, family)
		}
	}
}

// TestDefaultModelsArePriced checks what billing and limiting rely on for
// every served model.
func TestDefaultModelsArePriced(t *testing.T) {
	for _, m := range mustDefault(t).All() {
		id := string(m.Provider) + "/" + m.Name
		p := m.Price
		if p.Input <= 0 || p.Output <= 0 {
			t.Errorf("%s: price %+v, want input and output above zero", id, p)
		}
		if p.CachedInput <= 0 || p.CachedInput > p.Input {
			t.Errorf("%s: cached input %d, want in (0, input=%d]", id, p.CachedInput, p.Input)
		}
		if p.CacheWrite < p.Input {
			t.Errorf("%s: cache write %d below input %d", id, p.CacheWrite, p.Input)
		}
		for _, plan := range []Plan{PlanFree, PlanPersonal, PlanPro, PlanEnterprise} {
			if v, ok := m.Limit(plan); !ok || v <= 0 {
				t.Errorf("%s: Limit(%s) = %d, %v", id, plan, v, ok)
			}
		}
		if ent, _ := m.Limit(PlanEnterprise); ent != m.TPM[PlanPro] {
			t.Errorf("%s: enterprise TPM %d, want the pro figure %d", id, ent, m.TPM[PlanPro])
		}
		if m.Upstream != m.Name || m.Kind != KindChat || m.ContextTokens != DefaultContextTokens {
			t.Errorf("%s: upstream %q kind %q context %d, want the defaults", id, m.Upstream, m.Kind, m.ContextTokens)
		}
		if m.DisplayName == "" || m.Created.IsZero() {
			t.Errorf("%s: display name %q created %v", id, m.DisplayName, m.Created)
		}
	}
}

// TestDefaultPrices pins a few rows cell by cell, including the fallbacks
// for empty cells.
func TestDefaultPrices(t *testing.T) {
	tests := []struct {
		p    Provider
		name string
		want Price
		tpm  [3]int64 // free, personal, pro
	}{
		{Anthropic, "claude-sonnet-4-5-20250929", Price{3_000_000, 300_000, 3_750_000, 6_000_000, 15_000_000, 3_000_000, 15_000_000}, [3]int64{18000, 90000, 180000}},
		{Anthropic, "claude-3-haiku-20240307", Price{250_000, 30_000, 300_000, 500_000, 1_250_000, 250_000, 1_250_000}, [3]int64{6000, 12000, 18000}},
		{Gemini, "gemini-2.0-flash-lite", Price{75_000, 18_750, 75_000, 150_000, 300_000, 75_000, 300_000}, [3]int64{50000, 100000, 150000}},
		{OpenAI, "gpt-5.2-pro-2025-12-11", Price{21_000_000, 21_000_000, 21_000_000, 42_000_000, 168_000_000, 21_000_000, 168_000_000}, [3]int64{18000, 90000, 180000}},
		{OpenAI, "gpt-5-nano", Price{50_000, 5_000, 50_000, 100_000, 400_000, 50_000, 400_000}, [3]int64{300000, 600000, 900000}},
		// Modality overrides (providers.md §9): audio input on Flash
		// models, image output on gemini-2.5-flash-image. The CSV gives no
		// audio rate for gemini-2.0-flash(-lite), so theirs is the input's.
		{Gemini, "gemini-2.5-flash", Price{300_000, 30_000, 300_000, 600_000, 2_500_000, 1_000_000, 2_500_000}, [3]int64{8000, 40000, 64000}},
		{Gemini, "gemini-2.5-flash-lite", Price{100_000, 10_000, 100_000, 200_000, 400_000, 300_000, 400_000}, [3]int64{50000, 100000, 150000}},
		{Gemini, "gemini-3-flash-preview", Price{500_000, 50_000, 500_000, 1_000_000, 3_000_000, 1_000_000, 3_000_000}, [3]int64{24000, 120000, 240000}},
		{Gemini, "gemini-2.5-flash-image", Price{300_000, 30_000, 300_000, 600_000, 2_500_000, 300_000, 30_000_000}, [3]int64{3000, 6000, 20000}},
	}
	c := mustDefault(t)
	for _, tt := range tests {
		m, ok := c.Lookup(tt.p, tt.name)
		if !ok {
			t.Fatalf("Lookup(%s, %s): not found", tt.p, tt.name)
		}
		if m.Price != tt.want {
			t.Errorf("%s: price %+v, want %+v", tt.name, m.Price, tt.want)
		}
		got := [3]int64{m.TPM[PlanFree], m.TPM[PlanPersonal], m.TPM[PlanPro]}
		if got != tt.tpm {
			t.Errorf("%s: tpm %v, want %v", tt.name, got, tt.tpm)
		}
	}
}

func TestLookupIsExact(t *testing.T) {
	c := mustDefault(t)
	for _, tt := range []struct {
		p    Provider
		name string
	}{
		{Gemini, "models/gemini-2.5-flash"}, // the caller strips models/
		{OpenAI, "GPT-4o"},
		{OpenAI, "gpt-4o "},
		{Anthropic, "gpt-4o"}, // another provider's model
		{OpenAI, "o3-pro"},
		{Provider("azure"), "gpt-4o"},
		{OpenAI, ""},
	} {
		if m, ok := c.Lookup(tt.p, tt.name); ok {
			t.Errorf("Lookup(%q, %q) = %s, want not found", tt.p, tt.name, m.Name)
		}
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	c := mustDefault(t)
	name := strings.Clone("claude-sonnet-4-5")
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := c.Lookup(Anthropic, name); !ok {
			t.Fatal("not found")
		}
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %v times, want 0", allocs)
	}
}

func TestModelsSortedAndCopied(t *testing.T) {
	c := mustDefault(t)
	counts := map[Provider]int{OpenAI: 25, Anthropic: 13, Gemini: 14}
	total := 0
	for p, n := range counts {
		ms := c.Models(p)
		if len(ms) != n {
			t.Errorf("Models(%s): %d models, want %d", p, len(ms), n)
		}
		if !slices.IsSortedFunc(ms, func(a, b Model) int { return strings.Compare(a.Name, b.Name) }) {
			t.Errorf("Models(%s) not sorted by name", p)
		}
		for _, m := range ms {
			if m.Provider != p {
				t.Errorf("Models(%s) holds %s/%s", p, m.Provider, m.Name)
			}
		}
		total += n
		ms[0].Name = "changed"
		if c.Models(p)[0].Name == "changed" {
			t.Errorf("Models(%s) returned the catalog's own slice", p)
		}
	}
	all := c.All()
	if len(all) != total {
		t.Errorf("All: %d models, want %d", len(all), total)
	}
	all[0].Name = "changed"
	if c.All()[0].Name == "changed" {
		t.Error("All returned the catalog's own slice")
	}
	if len(c.Models("azure")) != 0 {
		t.Error("Models of an unknown provider is not empty")
	}
}

func TestDisplayNameAndCreated(t *testing.T) {
	c := mustDefault(t)
	date := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		p       Provider
		name    string
		display string
		created time.Time
	}{
		{Anthropic, "claude-3-5-haiku-20241022", "Claude 3.5 Haiku (2024-10-22)", date(2024, 10, 22)},
		{Anthropic, "claude-sonnet-4-5", "Claude Sonnet 4.5", date(2025, 9, 29)}, // from its dated sibling
		{Anthropic, "claude-sonnet-4-0", "Claude Sonnet 4.0", date(2025, 5, 14)},
		{OpenAI, "gpt-5.1-codex-mini", "GPT-5.1 Codex Mini", date(2025, 1, 1)}, // no date anywhere: placeholder
		{OpenAI, "gpt-4o", "GPT-4o", date(2025, 1, 1)},
		{OpenAI, "o4-mini", "o4 Mini", date(2025, 1, 1)},
		{OpenAI, "gpt-5.2-2025-12-11", "GPT-5.2 (2025-12-11)", date(2025, 12, 11)},
		{OpenAI, "codex-mini-latest", "Codex Mini (latest)", date(2025, 1, 1)},
		{Gemini, "gemini-2.5-flash-lite-preview-09-2025", "Gemini 2.5 Flash Lite (preview, 2025-09)", date(2025, 9, 1)},
		{Gemini, "gemini-flash-latest", "Gemini Flash (latest)", date(2025, 9, 1)},
	}
	for _, tt := range tests {
		m, ok := c.Lookup(tt.p, tt.name)
		if !ok {
			t.Fatalf("Lookup(%s, %s): not found", tt.p, tt.name)
		}
		if m.DisplayName != tt.display {
			t.Errorf("%s: display name %q, want %q", tt.name, m.DisplayName, tt.display)
		}
		if !m.Created.Equal(tt.created) {
			t.Errorf("%s: created %v, want %v", tt.name, m.Created, tt.created)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	c := mustDefault(b)
	for b.Loop() {
		if _, ok := c.Lookup(Anthropic, "claude-sonnet-4-5-20250929"); !ok {
			b.Fatal("not found")
		}
	}
}
