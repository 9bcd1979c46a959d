package catalog

import (
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The platform's published tables, copied from shared/data so the binary
// serves them with no files around; the price table adds the modality
// columns its source notes give (docs/catalog.md). Strings, not byte
// slices, so nothing can change them.
var (
	//go:embed data/model-prices.csv
	pricesCSV string
	//go:embed data/model-limits.csv
	limitsCSV string
)

// table reads a CSV file whose first row names the columns, so the code
// finds columns by name and a reordered file still parses.
type table struct {
	name string
	r    *csv.Reader
	cols map[string]int
}

func newTable(name, data string, want ...string) (*table, error) {
	r := csv.NewReader(strings.NewReader(data))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", name, err)
	}
	cols := make(map[string]int, len(header))
	for i, h := range header {
		cols[strings.TrimSpace(h)] = i
	}
	for _, w := range want {
		if _, ok := cols[w]; !ok {
			return nil, fmt.Errorf("%s: no %q column", name, w)
		}
	}
	return &table{name: name, r: r, cols: cols}, nil
}

// next returns the next row as a lookup by column name, or io.EOF.
func (t *table) next() (func(col string) string, string, error) {
	rec, err := t.r.Read()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			err = fmt.Errorf("%s: %w", t.name, err)
		}
		return nil, "", err
	}
	line, _ := t.r.FieldPos(0)
	where := fmt.Sprintf("%s line %d", t.name, line)
	return func(col string) string {
		i, ok := t.cols[col]
		if !ok {
			return "" // an optional column the file does not have
		}
		return strings.TrimSpace(rec[i])
	}, where, nil
}

// parsePrices reads model-prices.csv: one row per provider and family,
// USD per million tokens, an empty cell for a kind not priced separately.
// The modality columns (audio input, image output) are optional, so the
// platform's published table, which has none, still loads.
func parsePrices(data string) (map[key]priceSpec, error) {
	t, err := newTable("model-prices.csv", data,
		"provider", "model", "input_usd_per_mtok", "cached_input_usd_per_mtok",
		"cache_write_usd_per_mtok", "output_usd_per_mtok")
	if err != nil {
		return nil, err
	}
	families := make(map[key]priceSpec)
	for {
		col, where, err := t.next()
		if errors.Is(err, io.EOF) {
			return families, nil
		}
		if err != nil {
			return nil, err
		}
		k := key{Provider(col("provider")), col("model")}
		if !k.provider.Valid() || k.name == "" {
			return nil, fmt.Errorf("%s: want a known provider and a family name", where)
		}
		if _, dup := families[k]; dup {
			return nil, fmt.Errorf("%s: %s/%s is listed twice", where, k.provider, k.name)
		}
		var spec priceSpec
		for _, c := range [...]struct {
			col  string
			cell *optMicros
		}{
			{"input_usd_per_mtok", &spec.input},
			{"cached_input_usd_per_mtok", &spec.cachedInput},
			{"cache_write_usd_per_mtok", &spec.cacheWrite},
			{"output_usd_per_mtok", &spec.output},
			{"audio_input_usd_per_mtok", &spec.audioInput},
			{"image_output_usd_per_mtok", &spec.imageOutput},
		} {
			v := col(c.col)
			if v == "" {
				continue
			}
			micros, err := ParsePrice(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", where, c.col, err)
			}
			*c.cell = some(micros)
		}
		if !spec.complete() {
			return nil, fmt.Errorf("%s: %s/%s needs an input and an output price", where, k.provider, k.name)
		}
		families[k] = spec
	}
}

// parseLimits reads model-limits.csv: one row per served model with its
// TPM limit for each plan.
func parseLimits(data string) (map[key]*modelSpec, error) {
	plans := [...]struct {
		col  string
		plan Plan
	}{
		{"tpm_free", PlanFree},
		{"tpm_personal", PlanPersonal},
		{"tpm_pro", PlanPro},
	}
	t, err := newTable("model-limits.csv", data, "provider", "model", "tpm_free", "tpm_personal", "tpm_pro")
	if err != nil {
		return nil, err
	}
	specs := make(map[key]*modelSpec)
	for {
		col, where, err := t.next()
		if errors.Is(err, io.EOF) {
			return specs, nil
		}
		if err != nil {
			return nil, err
		}
		k := key{Provider(col("provider")), col("model")}
		if !k.provider.Valid() || k.name == "" {
			return nil, fmt.Errorf("%s: want a known provider and a model name", where)
		}
		if _, dup := specs[k]; dup {
			return nil, fmt.Errorf("%s: %s/%s is listed twice", where, k.provider, k.name)
		}
		s := &modelSpec{
			origin:    where,
			provider:  k.provider,
			name:      k.name,
			priceFrom: k.name,
			tpm:       make(map[Plan]int64, 4),
		}
		for _, p := range plans {
			v, err := strconv.ParseInt(col(p.col), 10, 64)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("%s: %s: want a positive whole number of tokens", where, p.col)
			}
			s.tpm[p.plan] = v
		}
		specs[k] = s
	}
}
