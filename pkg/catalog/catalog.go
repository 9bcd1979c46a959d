// Package catalog is the gateway's table of served models: the names each
// provider serves, the name sent upstream, what their tokens cost and how
// many tokens per minute each plan may spend on them.
//
// The defaults are the platform's published tables, embedded in the binary
// so that a bare install serves the same 52 models as the hosted product.
// An operator overlays a YAML file (Load, LoadFile) to add, change or stop
// serving models without a release; docs/catalog.md describes the format.
//
// A Catalog never changes once built, so it is safe for concurrent use
// without locks; a reload builds a new one and swaps it in.
package catalog

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Provider names an upstream API. Its values are the path prefixes the
// gateway routes by.
type Provider string

// The providers the gateway speaks.
const (
	OpenAI    Provider = "openai"
	Anthropic Provider = "anthropic"
	Gemini    Provider = "gemini"
)

// Valid reports whether p is a provider the gateway speaks, so that a typo
// in an overlay is an error rather than a model nobody can reach.
func (p Provider) Valid() bool {
	switch p {
	case OpenAI, Anthropic, Gemini:
		return true
	}
	return false
}

// Plan is an account's plan; TPM limits are set per plan.
type Plan string

// The plans. Enterprise accounts get per-account overrides elsewhere; the
// catalog's enterprise figure is their starting point.
const (
	PlanFree       Plan = "free"
	PlanPersonal   Plan = "personal"
	PlanPro        Plan = "pro"
	PlanEnterprise Plan = "enterprise"
)

// Model kinds. Embedding models produce no output tokens, so they are the
// only kind allowed a zero output price.
const (
	KindChat      = "chat"
	KindEmbedding = "embedding"
)

// DefaultContextTokens is the input limit of a model that does not set
// one: the hosted product's 200k-token cap, which also keeps every request
// inside the providers' lowest price tier.
const DefaultContextTokens = 200_000

// Model is one served model name, with everything the gateway needs to
// route, limit and bill a request for it.
type Model struct {
	Provider Provider
	// Name is the name clients send.
	Name string
	// Upstream is the name sent to the provider; it is Name unless the
	// catalog maps one name onto another.
	Upstream string
	// Family is the price family the model resolved to (see resolveFamily),
	// or Name for a model priced explicitly with no family of its own.
	Family string
	Price  Price
	// TPM is the tokens-per-minute limit per plan. It has an entry for
	// every plan: enterprise is the pro figure unless set explicitly. The
	// map is shared by every copy of the Model and must not be modified.
	TPM map[Plan]int64
	// Kind is KindChat or KindEmbedding.
	Kind string
	// ContextTokens is the most input tokens a request may carry.
	ContextTokens int64
	// DisplayName and Created are for the providers' /models listings.
	// Created is the date in the name, else the earliest dated name of the
	// same family, else 2025-01-01 as a stable placeholder.
	DisplayName string
	Created     time.Time
}

// Limit returns the model's TPM limit for plan, and false for a plan the
// catalog does not know.
func (m Model) Limit(plan Plan) (int64, bool) {
	v, ok := m.TPM[plan]
	return v, ok
}

// key identifies a model or a price family within a provider.
type key struct {
	provider Provider
	name     string
}

// modelSpec is a model as the tables and overlays describe it, before its
// price, limits and defaults are resolved. A Catalog keeps its specs so
// that an overlay applies to what the tables say rather than to derived
// values: changing a family's price reprices every model of that family.
type modelSpec struct {
	origin   string // where it was last defined, for error messages
	provider Provider
	name     string
	upstream string
	// family is set explicitly; when empty the family is resolved from
	// priceFrom, which is the name itself or, for a model defined with
	// like:, the name of the model it is like.
	family        string
	priceFrom     string
	price         priceSpec // cells set on the model itself
	tpm           map[Plan]int64
	kind          string
	contextTokens int64
	displayName   string
	created       time.Time
	disabled      bool
}

func (s *modelSpec) clone() *modelSpec {
	c := *s
	c.tpm = maps.Clone(s.tpm)
	if c.tpm == nil {
		c.tpm = make(map[Plan]int64)
	}
	return &c
}

// Catalog is an immutable set of served models.
type Catalog struct {
	families map[key]priceSpec
	specs    map[key]*modelSpec
	models   map[key]Model
	all      []Model // sorted by provider, then name
	byProv   map[Provider][]Model
}

// Default returns the catalog built from the embedded tables.
func Default() (*Catalog, error) {
	families, err := parsePrices(pricesCSV)
	if err != nil {
		return nil, fmt.Errorf("catalog: embedded prices: %w", err)
	}
	specs, err := parseLimits(limitsCSV)
	if err != nil {
		return nil, fmt.Errorf("catalog: embedded limits: %w", err)
	}
	c, err := build(families, specs)
	if err != nil {
		return nil, fmt.Errorf("catalog: embedded tables: %w", err)
	}
	return c, nil
}

// Lookup returns the model a client asked for by its exact served name.
// It is on every request's path: one map lookup, no allocation.
func (c *Catalog) Lookup(p Provider, name string) (Model, bool) {
	m, ok := c.models[key{p, name}]
	return m, ok
}

// Models returns the provider's models sorted by name, in a new slice.
func (c *Catalog) Models(p Provider) []Model {
	return slices.Clone(c.byProv[p])
}

// All returns every served model sorted by provider, then name, in a new
// slice.
func (c *Catalog) All() []Model {
	return slices.Clone(c.all)
}

// sources returns deep copies of the tables c was built from, for an
// overlay to change. A nil Catalog has empty tables.
func (c *Catalog) sources() (map[key]priceSpec, map[key]*modelSpec) {
	if c == nil {
		return make(map[key]priceSpec), make(map[key]*modelSpec)
	}
	specs := make(map[key]*modelSpec, len(c.specs))
	for k, s := range c.specs {
		specs[k] = s.clone()
	}
	return maps.Clone(c.families), specs
}

// build resolves every spec into a Model. It reports every bad model at
// once, in name order, so an operator fixes an overlay in one pass.
func build(families map[key]priceSpec, specs map[key]*modelSpec) (*Catalog, error) {
	c := &Catalog{
		families: families,
		specs:    specs,
		models:   make(map[key]Model, len(specs)),
		byProv:   make(map[Provider][]Model),
	}
	keys := slices.SortedFunc(maps.Keys(specs), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.provider, b.provider), cmp.Compare(a.name, b.name))
	})
	var errs []error
	for _, k := range keys {
		s := specs[k]
		if s.disabled {
			continue
		}
		m, err := c.resolve(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s/%s): %w", s.origin, s.provider, s.name, err))
			continue
		}
		c.all = append(c.all, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	fillCreated(c.all)
	for _, m := range c.all {
		c.models[key{m.Provider, m.Name}] = m
		c.byProv[m.Provider] = append(c.byProv[m.Provider], m)
	}
	return c, nil
}

// resolve turns one spec into a Model, applying defaults.
func (c *Catalog) resolve(s *modelSpec) (Model, error) {
	kind := cmp.Or(s.kind, KindChat)
	family, price, err := c.price(s, kind)
	if err != nil {
		return Model{}, err
	}
	tpm, err := c.limits(s, family)
	if err != nil {
		return Model{}, err
	}
	if family == "" {
		family = s.name
	}
	return Model{
		Provider:      s.provider,
		Name:          s.name,
		Upstream:      cmp.Or(s.upstream, s.name),
		Family:        family,
		Price:         price,
		TPM:           tpm,
		Kind:          kind,
		ContextTokens: cmp.Or(s.contextTokens, DefaultContextTokens),
		DisplayName:   cmp.Or(s.displayName, displayName(s.name)),
		Created:       s.created,
	}, nil
}

// price resolves a spec's family and price. family is empty when the model
// is priced explicitly and no family row matches its name.
func (c *Catalog) price(s *modelSpec, kind string) (family string, _ Price, _ error) {
	has := func(f string) bool {
		_, ok := c.families[key{s.provider, f}]
		return ok
	}
	if s.family != "" {
		if !has(s.family) {
			return "", Price{}, fmt.Errorf("family %q has no price row for %s", s.family, s.provider)
		}
		family = s.family
	} else {
		family, _ = resolveFamily(s.priceFrom, has)
	}
	spec := s.price
	if family != "" {
		spec = c.families[key{s.provider, family}].merge(s.price)
	}
	if !spec.complete() {
		return "", Price{}, fmt.Errorf("no price: %q matches no price family; set like:, family: or price: {input, output}", s.priceFrom)
	}
	p := spec.resolve()
	switch {
	case p.Input <= 0:
		return "", Price{}, errors.New("input price must be above zero")
	case p.Output <= 0 && kind != KindEmbedding:
		return "", Price{}, errors.New("output price must be above zero for a chat model")
	}
	return family, p, nil
}

// missingPlans lists the plans every model needs a limit for that tpm
// lacks.
func missingPlans(tpm map[Plan]int64) []string {
	var missing []string
	for _, p := range [...]Plan{PlanFree, PlanPersonal, PlanPro} {
		if _, ok := tpm[p]; !ok {
			missing = append(missing, string(p))
		}
	}
	return missing
}

// limits resolves a spec's TPM limits. A spec that lacks a limit for a
// required plan takes the limits it lacks from the model named like its
// family, if the catalog has one: a new dated snapshot added by an overlay
// is limited like the undated model.
func (c *Catalog) limits(s *modelSpec, family string) (map[Plan]int64, error) {
	tpm := maps.Clone(s.tpm)
	if tpm == nil {
		tpm = make(map[Plan]int64, 4)
	}
	missing := missingPlans(tpm)
	if base, ok := c.specs[key{s.provider, family}]; ok && base != s && len(missing) > 0 {
		for p, v := range base.tpm {
			if _, set := tpm[p]; !set {
				tpm[p] = v
			}
		}
		missing = missingPlans(tpm)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no tpm limit for %s (set tpm or like)", strings.Join(missing, ", "))
	}
	if _, ok := tpm[PlanEnterprise]; !ok {
		tpm[PlanEnterprise] = tpm[PlanPro]
	}
	return tpm, nil
}

// fillCreated gives every model without a date of its own the date in its
// name, else the earliest date in the name of a model of the same family,
// else a fixed placeholder, so listings are stable from run to run.
func fillCreated(models []Model) {
	earliest := make(map[key]time.Time)
	for i := range models {
		m := &models[i]
		if m.Created.IsZero() {
			m.Created, _ = nameDate(m.Name)
		}
		if m.Created.IsZero() {
			continue
		}
		k := key{m.Provider, m.Family}
		if t, ok := earliest[k]; !ok || m.Created.Before(t) {
			earliest[k] = m.Created
		}
	}
	for i := range models {
		m := &models[i]
		if !m.Created.IsZero() {
			continue
		}
		if t, ok := earliest[key{m.Provider, m.Family}]; ok {
			m.Created = t
		} else {
			m.Created = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		}
	}
}
