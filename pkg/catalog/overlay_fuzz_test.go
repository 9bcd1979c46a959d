package catalog

import "testing"

// FuzzLoad feeds arbitrary overlay files to Load. Whatever it accepts must
// be a catalog the gateway can bill with: every model found by its own
// name, priced (output may be free only for embeddings), limited on every
// plan, and with a context limit.
func FuzzLoad(f *testing.F) {
	def, err := Default()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"models: [{provider: openai, name: gpt-3.5-turbo, like: gpt-4o-mini}]\n",
		"models:\n  - provider: openai\n    name: text-embedding-3-small\n    kind: embedding\n    price: {input: 0.02, output: 0}\n    tpm: {free: 1000, personal: 1000, pro: 1000}\n",
		"models: [{provider: anthropic, name: claude-sonnet-4-5, tpm: {pro: 500000}}, {provider: gemini, name: gemini-2.5-pro, disabled: true}]\n",
		"prices: [{provider: openai, family: gpt-4o, input: 2.5, cached_input: 1.25, output: 10}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, overlay []byte) {
		c, err := Load(def, overlay)
		if err != nil {
			return
		}
		for _, m := range c.All() {
			got, ok := c.Lookup(m.Provider, m.Name)
			if !ok || got.Name != m.Name {
				t.Fatalf("%s/%s listed but not found", m.Provider, m.Name)
			}
			if m.Price.Input <= 0 || m.Price.CachedInput < 0 || m.Price.CacheWrite < 0 || m.Price.Output < 0 ||
				m.Price.Output == 0 && m.Kind != KindEmbedding {
				t.Fatalf("%s/%s has price %+v (kind %q)", m.Provider, m.Name, m.Price, m.Kind)
			}
			if m.ContextTokens <= 0 {
				t.Fatalf("%s/%s has no context limit (%d); the gateway relies on one", m.Provider, m.Name, m.ContextTokens)
			}
			for _, p := range []Plan{PlanFree, PlanPersonal, PlanPro, PlanEnterprise} {
				if n, ok := m.Limit(p); !ok || n <= 0 {
					t.Fatalf("%s/%s has no positive TPM for plan %s (%d)", m.Provider, m.Name, p, n)
				}
			}
		}
	})
}
