package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

func mustLoad(t *testing.T, base *Catalog, y string) *Catalog {
	t.Helper()
	c, err := Load(base, []byte(y))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func mustLookup(t *testing.T, c *Catalog, p Provider, name string) Model {
	t.Helper()
	m, ok := c.Lookup(p, name)
	if !ok {
		t.Fatalf("Lookup(%s, %s): not found", p, name)
	}
	return m
}

const exampleOverlay = `
models:
  - {provider: openai, name: gpt-3.5-turbo, like: gpt-4o-mini}
  - provider: openai
    name: text-embedding-3-small
    kind: embedding
    price: {input: 0.02, output: 0}
    tpm: {free: 1000000, personal: 1000000, pro: 1000000}
  - {provider: anthropic, name: claude-sonnet-4-5, tpm: {pro: 500000}}
  - {provider: gemini, name: gemini-2.5-pro, disabled: true}
  - provider: anthropic
    name: claude-sonnet
    upstream: claude-sonnet-4-5-20250929
    like: claude-sonnet-4-5-20250929
    display_name: Claude Sonnet (current)
    created: 2025-09-29
    context_tokens: 100000
prices:
  - {provider: openai, family: gpt-4o, input: 2.75, cached_input: 1.25, output: 11}
`

func TestLoadExample(t *testing.T) {
	defaults := mustDefault(t)
	c := mustLoad(t, defaults, exampleOverlay)

	turbo := mustLookup(t, c, OpenAI, "gpt-3.5-turbo")
	mini := mustLookup(t, c, OpenAI, "gpt-4o-mini")
	if turbo.Family != "gpt-4o-mini" || turbo.Price != mini.Price || turbo.TPM[PlanFree] != mini.TPM[PlanFree] {
		t.Errorf("gpt-3.5-turbo = %+v, want priced and limited like gpt-4o-mini %+v", turbo, mini)
	}
	if turbo.Upstream != "gpt-3.5-turbo" || turbo.DisplayName != "GPT-3.5 Turbo" {
		t.Errorf("gpt-3.5-turbo: upstream %q display %q, want its own name", turbo.Upstream, turbo.DisplayName)
	}

	emb := mustLookup(t, c, OpenAI, "text-embedding-3-small")
	wantEmb := Price{Input: 20_000, CachedInput: 20_000, CacheWrite: 20_000, CacheWrite1h: 40_000, Output: 0, AudioInput: 20_000, ImageOutput: 0}
	if emb.Kind != KindEmbedding || emb.Price != wantEmb || emb.Family != "text-embedding-3-small" {
		t.Errorf("text-embedding-3-small = kind %q price %+v family %q", emb.Kind, emb.Price, emb.Family)
	}
	if emb.TPM[PlanEnterprise] != 1_000_000 {
		t.Errorf("text-embedding-3-small: enterprise TPM %d, want the pro figure", emb.TPM[PlanEnterprise])
	}

	sonnet := mustLookup(t, c, Anthropic, "claude-sonnet-4-5")
	if sonnet.TPM[PlanPro] != 500_000 || sonnet.TPM[PlanEnterprise] != 500_000 || sonnet.TPM[PlanFree] != 18_000 {
		t.Errorf("claude-sonnet-4-5 TPM = %v, want pro and enterprise 500000, free unchanged", sonnet.TPM)
	}
	if dated := mustLookup(t, c, Anthropic, "claude-sonnet-4-5-20250929"); dated.TPM[PlanPro] != 180_000 {
		t.Errorf("the dated model's TPM changed with the alias: %v", dated.TPM)
	}

	if _, ok := c.Lookup(Gemini, "gemini-2.5-pro"); ok {
		t.Error("gemini-2.5-pro still served after disabled: true")
	}
	if n := len(c.Models(Gemini)); n != 13 {
		t.Errorf("Models(gemini): %d, want 13", n)
	}

	alias := mustLookup(t, c, Anthropic, "claude-sonnet")
	if alias.Upstream != "claude-sonnet-4-5-20250929" || alias.Family != "claude-sonnet-4-5" ||
		alias.ContextTokens != 100_000 || alias.DisplayName != "Claude Sonnet (current)" ||
		!alias.Created.Equal(time.Date(2025, 9, 29, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("claude-sonnet = %+v", alias)
	}

	for _, name := range []string{"gpt-4o", "gpt-4o-mini"} {
		m := mustLookup(t, c, OpenAI, name)
		want := mustLookup(t, defaults, OpenAI, name).Price
		if name == "gpt-4o" {
			want = Price{2_750_000, 1_250_000, 2_750_000, 5_500_000, 11_000_000, 2_750_000, 11_000_000}
		}
		if m.Price != want {
			t.Errorf("%s: price %+v, want %+v", name, m.Price, want)
		}
	}

	// The defaults are untouched.
	if len(defaults.All()) != 52 {
		t.Errorf("defaults now serve %d models", len(defaults.All()))
	}
	if _, ok := defaults.Lookup(Gemini, "gemini-2.5-pro"); !ok {
		t.Error("Load changed the defaults: gemini-2.5-pro gone")
	}
	if m := mustLookup(t, defaults, Anthropic, "claude-sonnet-4-5"); m.TPM[PlanPro] != 180_000 {
		t.Errorf("Load changed the defaults: claude-sonnet-4-5 TPM %v", m.TPM)
	}
	if m := mustLookup(t, defaults, OpenAI, "gpt-4o"); m.Price.Input != 2_500_000 {
		t.Errorf("Load changed the defaults: gpt-4o price %+v", m.Price)
	}
}

func TestLoadFamilyPrice(t *testing.T) {
	defaults := mustDefault(t)
	tests := []struct {
		name  string
		yaml  string
		model string
		want  Price
	}{
		{
			name:  "family price reaches dated models",
			yaml:  `prices: [{provider: openai, family: gpt-5, input: 2}]`,
			model: "gpt-5-2025-08-07",
			want:  Price{2_000_000, 125_000, 2_000_000, 4_000_000, 10_000_000, 2_000_000, 10_000_000},
		},
		{
			name:  "empty cached cell follows a new input price",
			yaml:  `prices: [{provider: openai, family: gpt-5-pro, input: 16}]`,
			model: "gpt-5-pro",
			want:  Price{16_000_000, 16_000_000, 16_000_000, 32_000_000, 120_000_000, 16_000_000, 120_000_000},
		},
		{
			name:  "model price over family price",
			yaml:  `models: [{provider: openai, name: gpt-5-mini, price: {output: "2.10"}}]`,
			model: "gpt-5-mini",
			want:  Price{250_000, 25_000, 250_000, 500_000, 2_100_000, 250_000, 2_100_000},
		},
		{
			name:  "like follows the other model's family",
			yaml:  "prices: [{provider: openai, family: gpt-4o-mini, output: 0.7}]\nmodels: [{provider: openai, name: my-mini, like: gpt-4o-mini}]",
			model: "my-mini",
			want:  Price{150_000, 75_000, 150_000, 300_000, 700_000, 150_000, 700_000},
		},
		{
			name:  "new dated snapshot resolves its family and takes its limits",
			yaml:  `models: [{provider: openai, name: gpt-4o-2024-08-06}]`,
			model: "gpt-4o-2024-08-06",
			want:  Price{2_500_000, 1_250_000, 2_500_000, 5_000_000, 10_000_000, 2_500_000, 10_000_000},
		},
		{
			name:  "new family for a new model",
			yaml:  "prices: [{provider: openai, family: gpt-3.5-turbo, input: 0.5, output: 1.5}]\nmodels: [{provider: openai, name: gpt-3.5-turbo-0125, tpm: {free: 1, personal: 2, pro: 3}}]",
			model: "gpt-3.5-turbo-0125",
			want:  Price{500_000, 500_000, 500_000, 1_000_000, 1_500_000, 500_000, 1_500_000},
		},
		{
			name:  "explicit family",
			yaml:  `models: [{provider: openai, name: house-model, family: o3, tpm: {free: 1, personal: 2, pro: 3}}]`,
			model: "house-model",
			want:  Price{2_000_000, 500_000, 2_000_000, 4_000_000, 8_000_000, 2_000_000, 8_000_000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, defaults, tt.yaml)
			if got := mustLookup(t, c, OpenAI, tt.model).Price; got != tt.want {
				t.Errorf("%s: price %+v, want %+v", tt.model, got, tt.want)
			}
		})
	}
	c := mustLoad(t, defaults, tests[4].yaml)
	if got := mustLookup(t, c, OpenAI, "gpt-4o-2024-08-06").TPM[PlanFree]; got != 18_000 {
		t.Errorf("gpt-4o-2024-08-06: free TPM %d, want gpt-4o's 18000", got)
	}
}

// TestLoadNameCharacters: the characters real model names use are accepted,
// colons and slashes included for the providers that take the name in a
// JSON body, and spaces everywhere (a Gemini client escapes one in the path).
func TestLoadNameCharacters(t *testing.T) {
	c := mustLoad(t, mustDefault(t), `models:
  - {provider: openai, name: "ft:gpt-4o-mini:acme::abc_123", like: gpt-4o-mini}
  - {provider: openai, name: "house model", like: gpt-4o-mini}
  - {provider: openai, name: "acme/gpt", like: gpt-4o-mini}
  - {provider: anthropic, name: claude-sonnet-4-5@20250929, like: claude-sonnet-4-5, upstream: claude-sonnet-4-5-20250929}
  - {provider: gemini, name: Gemini-2.5.Pro_house, like: gemini-2.5-pro}
  - {provider: gemini, name: "my model", like: gemini-2.5-flash}
`)
	mustLookup(t, c, OpenAI, "ft:gpt-4o-mini:acme::abc_123")
	mustLookup(t, c, OpenAI, "house model")
	mustLookup(t, c, OpenAI, "acme/gpt")
	mustLookup(t, c, Anthropic, "claude-sonnet-4-5@20250929")
	mustLookup(t, c, Gemini, "Gemini-2.5.Pro_house")
	mustLookup(t, c, Gemini, "my model")
}

// TestLoadLargestTPM: the largest limit the overlay takes is one the rate
// limiter enforces, so the model is served rather than failing every
// request.
func TestLoadLargestTPM(t *testing.T) {
	c := mustLoad(t, mustDefault(t), `models: [{provider: openai, name: gpt-4o, tpm: {pro: 1099511627776}}]`)
	m := mustLookup(t, c, OpenAI, "gpt-4o")
	if got, _ := m.Limit(PlanPro); got != usage.MaxCount {
		t.Fatalf("pro limit %d, want %d", got, usage.MaxCount)
	}
}

// TestLoadFileTooLarge: a file past MaxFileBytes (or an endless one such as
// /dev/zero given by mistake) is an error, not read to the end.
func TestLoadFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	data := []byte("models: []\n" + strings.Repeat("# padding\n", MaxFileBytes/10+1))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(path)
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("LoadFile of %d bytes: %v, want a too-large error", len(data), err)
	}
}

func TestLoadErrors(t *testing.T) {
	defaults := mustDefault(t)
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top-level key", `model: []`, []string{`unknown key "model"`}},
		{"unknown model key", `models: [{provider: openai, name: gpt-4o, tokens: 5}]`, []string{`unknown key "tokens"`}},
		{"unknown plan", `models: [{provider: openai, name: gpt-4o, tpm: {premium: 5}}]`, []string{`unknown key "premium"`}},
		{"unknown price key", `models: [{provider: openai, name: gpt-4o, price: {input_cached: 1}}]`, []string{`unknown key "input_cached"`}},
		{"unknown family key", `prices: [{provider: openai, family: gpt-4o, in: 1}]`, []string{`unknown key "in"`}},
		{"unknown provider", `models: [{provider: azure, name: gpt-4o}]`, []string{"models[0]", "provider"}},
		{"no name", `models: [{provider: openai}]`, []string{"models[0]", "name"}},
		{"gemini name with a slash", `models: [{provider: gemini, name: a/b, like: gemini-2.5-pro}]`, []string{"models[0]", `name "a/b"`}},
		{"name with a control character", `models: [{provider: openai, name: "a\tb", like: gpt-4o}]`, []string{"models[0]", "name"}},
		{"gemini name with a colon", `models: [{provider: gemini, name: "a:b", like: gemini-2.5-pro}]`, []string{"models[0]", `name "a:b"`}},
		{"upstream with a control character", `models: [{provider: openai, name: a, like: gpt-4o, upstream: "gpt\u001b4o"}]`, []string{"models[0] (openai/a)", `upstream "gpt\x1b4o"`}},
		{"gemini upstream with a colon", `models: [{provider: gemini, name: a, like: gemini-2.5-pro, upstream: "b:c"}]`, []string{"models[0] (gemini/a)", `upstream "b:c"`}},
		{"like unknown", `models: [{provider: openai, name: x, like: gpt-9}]`, []string{"models[0] (openai/x)", "like", "gpt-9"}},
		{"like other provider", `models: [{provider: openai, name: x, like: claude-sonnet-4-5}]`, []string{"models[0] (openai/x)", "like"}},
		{"like itself", `models: [{provider: openai, name: gpt-4o, like: gpt-4o}]`, []string{"models[0] (openai/gpt-4o)", "like"}},
		{"disable unknown", `models: [{provider: gemini, name: gemini-9, disabled: true}]`, []string{"models[0] (gemini/gemini-9)", "no such model"}},
		{"no price", `models: [{provider: openai, name: o3-pro, tpm: {free: 1, personal: 1, pro: 1}}]`, []string{"models[0] (openai/o3-pro)", "no price"}},
		{"no tpm", `models: [{provider: openai, name: my-model, price: {input: 1, output: 2}}]`, []string{"models[0] (openai/my-model)", "free, personal, pro"}},
		{"partial tpm", `models: [{provider: openai, name: my-model, price: {input: 1, output: 2}, tpm: {pro: 5}}]`, []string{"openai/my-model", "free, personal"}},
		{"no output price", `models: [{provider: openai, name: my-model, price: {input: 1}, tpm: {free: 1, personal: 1, pro: 1}}]`, []string{"openai/my-model", "no price"}},
		{"zero output for chat", `models: [{provider: openai, name: gpt-4o, price: {output: 0}}]`, []string{"models[0] (openai/gpt-4o)", "output price"}},
		{"zero input", `models: [{provider: openai, name: gpt-4o, price: {input: 0}}]`, []string{"openai/gpt-4o", "input price"}},
		{"bad kind", `models: [{provider: openai, name: gpt-4o, kind: image}]`, []string{"models[0] (openai/gpt-4o)", "kind"}},
		{"zero tpm", `models: [{provider: openai, name: gpt-4o, tpm: {free: 0}}]`, []string{"models[0] (openai/gpt-4o)", "tpm.free"}},
		{"negative tpm", `models: [{provider: openai, name: gpt-4o, tpm: {enterprise: -5}}]`, []string{"tpm.enterprise"}},
		{"absurd tpm", `models: [{provider: openai, name: gpt-4o, tpm: {pro: 9223372036854775807}}]`, []string{"models[0] (openai/gpt-4o)", "tpm.pro", "largest"}},
		{"tpm just above the limiter's range", `models: [{provider: openai, name: gpt-4o, tpm: {enterprise: 1099511627777}}]`, []string{"tpm.enterprise", "largest"}},
		{"zero context", `models: [{provider: openai, name: gpt-4o, context_tokens: 0}]`, []string{"models[0] (openai/gpt-4o)", "context_tokens"}},
		{"fractional tpm", `models: [{provider: openai, name: gpt-4o, tpm: {free: 1.5}}]`, []string{"line 1", "whole number", `"1.5"`}},
		{"tpm not a number", `models: [{provider: openai, name: gpt-4o, tpm: {free: lots}}]`, []string{"whole number", `"lots"`}},
		{"fractional context", `models: [{provider: openai, name: gpt-4o, context_tokens: 1e5}]`, []string{"whole number"}},
		{"price too fine", `models: [{provider: openai, name: gpt-4o, price: {input: 0.0000001}}]`, []string{"line 1", "micro-dollar"}},
		{"negative price", `prices: [{provider: openai, family: gpt-4o, input: -1}]`, []string{"price \"-1\""}},
		{"price not a number", `prices: [{provider: openai, family: gpt-4o, input: [1]}]`, []string{"want a price"}},
		{"duplicate model", "models: [{provider: openai, name: gpt-4o, tpm: {pro: 1}}, {provider: openai, name: gpt-4o, tpm: {pro: 2}}]", []string{"models[1] (openai/gpt-4o)", "twice"}},
		{"duplicate family", "prices: [{provider: openai, family: gpt-4o, input: 1}, {provider: openai, family: gpt-4o, input: 2}]", []string{"prices[1] (openai/gpt-4o)", "twice"}},
		{"new family without output", `prices: [{provider: openai, family: gpt-9, input: 1}]`, []string{"prices[0] (openai/gpt-9)", "input and output"}},
		{"family without provider", `prices: [{family: gpt-9, input: 1, output: 1}]`, []string{"prices[0]", "provider"}},
		{"unknown explicit family", `models: [{provider: openai, name: gpt-4o, family: gpt-9}]`, []string{"models[0] (openai/gpt-4o)", "gpt-9"}},
		{"two documents", "models: []\n---\nmodels: []\n", []string{"one YAML document"}},
		{"not yaml", "models: [", []string{"overlay"}},
		{"bad date", `models: [{provider: openai, name: gpt-4o, created: yesterday}]`, []string{"line 1", "date"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(defaults, []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Load succeeded (%d models), want an error", len(c.All()))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadReportsEveryBadModel(t *testing.T) {
	for _, y := range []string{`
models:
  - {provider: openai, name: a-model}
  - {provider: openai, name: b-model}
`, `
models:
  - {provider: openai, name: a-model, like: nope}
  - {provider: openai, name: ok-model, like: gpt-4o-mini}
  - {provider: openai, name: b-model, kind: image}
  - {provider: azure, name: c-model}
`} {
		_, err := Load(mustDefault(t), []byte(y))
		if err == nil || !strings.Contains(err.Error(), "openai/a-model") || !strings.Contains(err.Error(), "openai/b-model") {
			t.Errorf("error %v, want every bad model named", err)
		}
		if err != nil && strings.Contains(err.Error(), "ok-model") {
			t.Errorf("error %v names a good model", err)
		}
	}
}

func TestLoadEmptyAndLayered(t *testing.T) {
	defaults := mustDefault(t)
	for _, y := range []string{"", "\n# nothing\n", "models: []\nprices: []\n"} {
		c := mustLoad(t, defaults, y)
		if len(c.All()) != 52 {
			t.Errorf("Load(%q): %d models, want the 52 defaults", y, len(c.All()))
		}
	}

	off := mustLoad(t, defaults, `models: [{provider: gemini, name: gemini-2.5-pro, disabled: true}]`)
	if _, ok := off.Lookup(Gemini, "gemini-2.5-pro"); ok {
		t.Fatal("gemini-2.5-pro served after disabling")
	}
	on := mustLoad(t, off, `models: [{provider: gemini, name: gemini-2.5-pro, disabled: false}]`)
	if m := mustLookup(t, on, Gemini, "gemini-2.5-pro"); m.Price.Input != 1_250_000 {
		t.Errorf("re-enabled gemini-2.5-pro price %+v", m.Price)
	}
	// like: sees models added above it in the same file.
	chain := mustLoad(t, defaults, `
models:
  - {provider: openai, name: first, like: o3, tpm: {pro: 7}}
  - {provider: openai, name: second, like: first}
`)
	if m := mustLookup(t, chain, OpenAI, "second"); m.Family != "o3" || m.TPM[PlanPro] != 7 {
		t.Errorf("second = family %q TPM %v, want o3's family and first's limits", m.Family, m.TPM)
	}
}

func TestLoadWithoutDefaults(t *testing.T) {
	c := mustLoad(t, nil, `
prices:
  - {provider: anthropic, family: house, input: 1, cache_write: 1.25, output: 5}
models:
  - {provider: anthropic, name: house-20250101, tpm: {free: 10, personal: 20, pro: 30, enterprise: 40}}
`)
	all := c.All()
	if len(all) != 1 {
		t.Fatalf("%d models, want 1", len(all))
	}
	m := all[0]
	if m.Family != "house" || m.Price != (Price{1_000_000, 1_000_000, 1_250_000, 2_000_000, 5_000_000, 1_000_000, 5_000_000}) || m.TPM[PlanEnterprise] != 40 {
		t.Errorf("model = %+v", m)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(path, []byte(exampleOverlay), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFile(path)
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	mustLookup(t, c, OpenAI, "gpt-3.5-turbo")

	if _, err := LoadFile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadFile of a missing file succeeded")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("modles: []"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "modles") {
		t.Errorf("LoadFile(bad) error %v, want it to name the file and the key", err)
	}
}

// TestLoadModalityPrices: the audio-input and image-output cells behave as
// every other cell: like: copies them, prices: and price: set them, and an
// unset one follows the input or output price it falls back to.
func TestLoadModalityPrices(t *testing.T) {
	defaults := mustDefault(t)
	tests := []struct {
		name, yaml, model  string
		audio, imageOutput int64
	}{
		{"like copies the overrides", `models: [{provider: gemini, name: my-flash, like: gemini-2.5-flash}]`,
			"my-flash", 1_000_000, 2_500_000},
		{"family image output", `prices: [{provider: gemini, family: gemini-2.5-flash-image, image_output: 40}]`,
			"gemini-2.5-flash-image", 300_000, 40_000_000},
		{"model audio input", `models: [{provider: gemini, name: gemini-2.0-flash, price: {audio_input: 0.7}}]`,
			"gemini-2.0-flash", 700_000, 400_000},
		{"an unset cell follows a new input price", `prices: [{provider: gemini, family: gemini-2.5-pro, input: 2}]`,
			"gemini-2.5-pro", 2_000_000, 10_000_000},
		{"a set cell does not", `prices: [{provider: gemini, family: gemini-2.5-flash, input: 0.4}]`,
			"gemini-2.5-flash", 1_000_000, 2_500_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustLookup(t, mustLoad(t, defaults, tt.yaml), Gemini, tt.model).Price
			if p.AudioInput != tt.audio || p.ImageOutput != tt.imageOutput {
				t.Errorf("%s: audio input %d, image output %d; want %d, %d", tt.model, p.AudioInput, p.ImageOutput, tt.audio, tt.imageOutput)
			}
		})
	}
	if _, err := Load(defaults, []byte(`prices: [{provider: gemini, family: gemini-2.5-flash, audio: 1}]`)); err == nil {
		t.Error("a misspelt modality key loaded")
	}
}
