package catalog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/pkg/strictyaml"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"go.yaml.in/yaml/v3"
)

// LoadFile returns the embedded defaults with the YAML overlay at path
// applied.
func LoadFile(path string) (*Catalog, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	defaults, err := Default()
	if err != nil {
		return nil, err
	}
	c, err := load(defaults, data)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", path, err)
	}
	return c, nil
}

// MaxFileBytes bounds an overlay file. A catalog of ten thousand models is
// well under a megabyte; the bound turns a wrong path (a log, /dev/zero)
// into an error instead of a start-up that eats memory or never ends.
const MaxFileBytes = 4 << 20

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes, too large for a catalog file", path, MaxFileBytes)
	}
	return data, nil
}

// Load returns a new Catalog: defaults with the YAML overlay applied.
// defaults is not changed; a nil defaults starts from an empty catalog.
//
// Price families are applied first, then models in file order; like:
// copies a model as it stands at that point (defaults plus the entries
// above). Unknown keys are errors, so a misspelt key cannot silently do
// nothing, and every error names the entry it is about. The format is
// described in docs/catalog.md.
func Load(defaults *Catalog, yamlBytes []byte) (*Catalog, error) {
	c, err := load(defaults, yamlBytes)
	if err != nil {
		return nil, fmt.Errorf("catalog: overlay: %w", err)
	}
	return c, nil
}

func load(defaults *Catalog, yamlBytes []byte) (*Catalog, error) {
	var ov overlay
	if err := strictyaml.Decode(yamlBytes, &ov); err != nil {
		return nil, err
	}
	families, specs := defaults.sources()
	if err := ov.applyPrices(families); err != nil {
		return nil, err
	}
	if err := ov.applyModels(specs); err != nil {
		return nil, err
	}
	return build(families, specs)
}

// overlay is the YAML file's shape.
type overlay struct {
	Models []overlayModel `yaml:"models"`
	Prices []overlayPrice `yaml:"prices"`
}

type overlayModel struct {
	Provider      Provider    `yaml:"provider"`
	Name          string      `yaml:"name"`
	Upstream      string      `yaml:"upstream"`
	Like          string      `yaml:"like"`
	Family        string      `yaml:"family"`
	Kind          string      `yaml:"kind"`
	Price         *priceCells `yaml:"price"`
	TPM           *overlayTPM `yaml:"tpm"`
	ContextTokens *count      `yaml:"context_tokens"`
	DisplayName   string      `yaml:"display_name"`
	Created       *date       `yaml:"created"`
	Disabled      *bool       `yaml:"disabled"`
}

// overlayTPM has one field per plan, so an unknown plan is an unknown key.
type overlayTPM struct {
	Free       *count `yaml:"free"`
	Personal   *count `yaml:"personal"`
	Pro        *count `yaml:"pro"`
	Enterprise *count `yaml:"enterprise"`
}

// count is a number of tokens read from a YAML integer: a fraction is an
// error, not cut to a whole number.
type count int64

func (c *count) UnmarshalYAML(n *yaml.Node) error {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		return fmt.Errorf("line %d: want a whole number of tokens, found %q", n.Line, n.Value)
	}
	*c = count(v)
	return nil
}

type overlayPrice struct {
	Provider   Provider `yaml:"provider"`
	Family     string   `yaml:"family"`
	priceCells `yaml:",inline"`
}

// priceCells are prices in USD per million tokens; an absent key leaves a
// cell as it was.
type priceCells struct {
	Input       *usd `yaml:"input"`
	CachedInput *usd `yaml:"cached_input"`
	CacheWrite  *usd `yaml:"cache_write"`
	Output      *usd `yaml:"output"`
	AudioInput  *usd `yaml:"audio_input"`
	ImageOutput *usd `yaml:"image_output"`
}

func (p *priceCells) spec() priceSpec {
	cell := func(u *usd) optMicros {
		if u == nil {
			return optMicros{}
		}
		return some(int64(*u))
	}
	return priceSpec{
		input:       cell(p.Input),
		cachedInput: cell(p.CachedInput),
		cacheWrite:  cell(p.CacheWrite),
		output:      cell(p.Output),
		audioInput:  cell(p.AudioInput),
		imageOutput: cell(p.ImageOutput),
	}
}

// usd is a price in micro-USD read from a YAML number. It parses the
// number's text, never a float, so 0.1 is exactly 100000.
type usd int64

func (u *usd) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a price in US dollars per million tokens", n.Line)
	}
	v, err := ParsePrice(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*u = usd(v)
	return nil
}

// date is a day written 2006-01-02, as the listings show it.
type date time.Time

func (d *date) UnmarshalYAML(n *yaml.Node) error {
	t, err := time.Parse(time.DateOnly, n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("line %d: want a date such as 2025-09-29", n.Line)
	}
	*d = date(t)
	return nil
}

func (ov *overlay) applyPrices(families map[key]priceSpec) error {
	seen := make(map[key]bool, len(ov.Prices))
	for i, p := range ov.Prices {
		if !p.Provider.Valid() || p.Family == "" {
			return fmt.Errorf("prices[%d]: want provider (openai, anthropic or gemini) and family", i)
		}
		k := key{p.Provider, p.Family}
		if seen[k] {
			return fmt.Errorf("prices[%d] (%s/%s): family listed twice", i, k.provider, k.name)
		}
		seen[k] = true
		merged := families[k].merge(p.spec())
		if !merged.complete() {
			return fmt.Errorf("prices[%d] (%s/%s): a new family needs input and output", i, k.provider, k.name)
		}
		families[k] = merged
	}
	return nil
}

// applyModels applies every entry it can and reports all the bad ones
// together, so one edit can fix a file.
func (ov *overlay) applyModels(specs map[key]*modelSpec) error {
	seen := make(map[key]bool, len(ov.Models))
	var errs []error
	for i, m := range ov.Models {
		if !m.Provider.Valid() || m.Name == "" {
			errs = append(errs, fmt.Errorf("models[%d]: want provider (openai, anthropic or gemini) and name", i))
			continue
		}
		where := fmt.Sprintf("models[%d] (%s/%s)", i, m.Provider, m.Name)
		k := key{m.Provider, m.Name}
		if seen[k] {
			errs = append(errs, fmt.Errorf("%s: model listed twice", where))
			continue
		}
		seen[k] = true
		err := checkName(m.Provider, "name", m.Name)
		if err == nil && m.Upstream != "" {
			err = checkName(m.Provider, "upstream", m.Upstream)
		}
		var s *modelSpec
		if err == nil {
			s, err = m.base(specs)
		}
		if err == nil {
			err = m.applyTo(s)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		s.origin = fmt.Sprintf("models[%d]", i)
		specs[k] = s
	}
	return errors.Join(errs...)
}

// checkName refuses a model name that clients could not send or that would
// not reach the provider intact. OpenAI and Anthropic take the name in a
// JSON body, where any text travels (a served "house model" is reachable);
// Gemini takes it as one path segment before ":generateContent", which a
// slash or a colon would cut. A control character or invalid UTF-8 would
// garble `tollgate models` and the listings, and is a typo anywhere.
func checkName(p Provider, field, name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("%s %q: not valid UTF-8", field, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || p == Gemini && (r == '/' || r == ':') {
			return fmt.Errorf("%s %q: %q is not allowed in a %s model name", field, name, r, p)
		}
	}
	return nil
}

// base returns the spec an entry starts from: a copy of the model it is
// like, the model it changes, or a new model.
func (m *overlayModel) base(specs map[key]*modelSpec) (*modelSpec, error) {
	existing := specs[key{m.Provider, m.Name}]
	switch {
	case m.Like != "":
		like, ok := specs[key{m.Provider, m.Like}]
		if !ok || m.Like == m.Name {
			return nil, fmt.Errorf("like: %s/%s is not another model in the catalog", m.Provider, m.Like)
		}
		// Priced and limited like the other model, but still its own
		// model: it keeps its name upstream and in listings. priceFrom
		// carries over, so the price follows the other model's family.
		s := like.clone()
		s.name, s.upstream, s.displayName, s.created, s.disabled = m.Name, "", "", time.Time{}, false
		if existing != nil {
			s.upstream, s.displayName, s.created = existing.upstream, existing.displayName, existing.created
		}
		return s, nil
	case existing != nil:
		return existing.clone(), nil
	case m.Disabled != nil && *m.Disabled:
		return nil, errors.New("disabled: the catalog has no such model to stop serving")
	}
	return &modelSpec{provider: m.Provider, name: m.Name, priceFrom: m.Name, tpm: make(map[Plan]int64, 4)}, nil
}

// applyTo sets the fields the entry gives on s.
func (m *overlayModel) applyTo(s *modelSpec) error {
	if m.Upstream != "" {
		s.upstream = m.Upstream
	}
	if m.Family != "" {
		s.family = m.Family
	}
	switch m.Kind {
	case "":
	case KindChat, KindEmbedding:
		s.kind = m.Kind
	default:
		return fmt.Errorf("kind %q: want %s or %s", m.Kind, KindChat, KindEmbedding)
	}
	if m.Price != nil {
		s.price = s.price.merge(m.Price.spec())
	}
	if m.TPM != nil {
		for _, t := range [...]struct {
			plan Plan
			v    *count
		}{
			{PlanFree, m.TPM.Free},
			{PlanPersonal, m.TPM.Personal},
			{PlanPro, m.TPM.Pro},
			{PlanEnterprise, m.TPM.Enterprise},
		} {
			if t.v == nil {
				continue
			}
			if *t.v <= 0 {
				return fmt.Errorf("tpm.%s: want a positive number of tokens per minute", t.plan)
			}
			// The rate limiter refuses a budget above usage.MaxCount, so
			// a larger limit would fail every request for the model.
			if int64(*t.v) > usage.MaxCount {
				return fmt.Errorf("tpm.%s: %d is above the largest limit, %d tokens per minute", t.plan, int64(*t.v), usage.MaxCount)
			}
			s.tpm[t.plan] = int64(*t.v)
		}
	}
	if m.ContextTokens != nil {
		if *m.ContextTokens <= 0 {
			return errors.New("context_tokens: want a positive number of tokens")
		}
		s.contextTokens = int64(*m.ContextTokens)
	}
	if m.DisplayName != "" {
		s.displayName = m.DisplayName
	}
	if m.Created != nil {
		s.created = time.Time(*m.Created)
	}
	if m.Disabled != nil {
		s.disabled = *m.Disabled
	}
	return nil
}
