package catalog

import (
	"fmt"
	"strconv"
	"strings"
)

// Price is what a model's tokens cost, in micro-USD per million tokens
// (USD × 1e6 per MTok): 2.50 USD per MTok is 2_500_000. Integers keep
// billing exact, since credits are integer micro-credits and no float may
// touch a balance. The cost of n tokens in micro-USD is n × rate / 1e6.
//
// The four kinds are disjoint, matching usage.Tokens. A kind the price
// table leaves empty is billed at Input:
//   - CachedInput empty: the provider lists no discount for cache reads
//     (gpt-5-pro, gpt-5.2-pro), so a cached token costs what any input
//     token costs. Charging the full rate never bills less than the
//     provider does.
//   - CacheWrite empty: the provider does not bill cache writes separately
//     (OpenAI, Gemini); a token written to the cache is an ordinary input
//     token on its invoice, so Input is exactly what it costs. OpenAI's
//     cache_write_tokens are recorded as CacheWrite all the same, so this
//     fallback is what keeps their cost that of input.
//
// The last three price parts of a kind that the provider bills apart
// (usage.Tokens):
//   - CacheWrite1h, the 1-hour part of CacheWrite, has no cell of its own:
//     it is always twice Input, Anthropic's rule for every model, and only
//     Anthropic reports such writes.
//   - AudioInput and ImageOutput, the audio part of Input and the image
//     part of Output (Gemini modalities), follow Input and Output unless
//     the table sets them: a model without an override bills every
//     modality alike.
type Price struct {
	Input        int64 // uncached input
	CachedInput  int64 // input read from a provider cache
	CacheWrite   int64 // input written to a provider cache (Anthropic 5-minute TTL, OpenAI)
	CacheWrite1h int64 // input written to Anthropic's cache with a 1-hour TTL
	Output       int64 // output, reasoning included
	AudioInput   int64 // uncached audio input (Gemini Flash models)
	ImageOutput  int64 // generated image output (gemini-2.5-flash-image)
}

// priceSpec is a price as written in a table or an overlay, before the
// fallbacks of Price apply. Keeping which cells were set lets an overlay
// change Input and have an empty CachedInput follow it.
type priceSpec struct {
	input, cachedInput, cacheWrite, output optMicros
	audioInput, imageOutput                optMicros
}

// optMicros is a price cell that may be empty.
type optMicros struct {
	v   int64
	set bool
}

func some(v int64) optMicros { return optMicros{v: v, set: true} }

// or returns o if it is set, else base.
func (o optMicros) or(base optMicros) optMicros {
	if o.set {
		return o
	}
	return base
}

// merge overlays the cells set in over on p.
func (p priceSpec) merge(over priceSpec) priceSpec {
	return priceSpec{
		input:       over.input.or(p.input),
		cachedInput: over.cachedInput.or(p.cachedInput),
		cacheWrite:  over.cacheWrite.or(p.cacheWrite),
		output:      over.output.or(p.output),
		audioInput:  over.audioInput.or(p.audioInput),
		imageOutput: over.imageOutput.or(p.imageOutput),
	}
}

// complete reports whether the cells without a fallback are set.
func (p priceSpec) complete() bool { return p.input.set && p.output.set }

// resolve applies the fallbacks documented on Price.
func (p priceSpec) resolve() Price {
	return Price{
		Input:        p.input.v,
		CachedInput:  p.cachedInput.or(p.input).v,
		CacheWrite:   p.cacheWrite.or(p.input).v,
		CacheWrite1h: 2 * p.input.v, // ParsePrice keeps a price under 10¹⁸, so this cannot overflow
		Output:       p.output.v,
		AudioInput:   p.audioInput.or(p.input).v,
		ImageOutput:  p.imageOutput.or(p.output).v,
	}
}

// maxPriceIntDigits bounds the whole-dollar part so that the value in
// micro-USD fits an int64 (1e12 × 1e6 < 9.2e18).
const maxPriceIntDigits = 12

// ParsePrice parses a non-negative decimal amount of US dollars such as
// "0.01875" into micro-USD (18750). It reads the digits instead of going
// through a float, so every price in the tables converts exactly. A value
// that would need a fraction of a micro-dollar (more than six significant
// decimal places) is refused rather than rounded, as are signs, exponents
// and anything else that is not plain digits with an optional point.
func ParsePrice(s string) (int64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("price %q: want a decimal number of US dollars such as 2.50", s)
	}
	whole = strings.TrimLeft(whole, "0")
	frac = strings.TrimRight(frac, "0")
	if len(whole) > maxPriceIntDigits {
		return 0, fmt.Errorf("price %q: too large", s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("price %q: more than 6 decimal places is finer than a micro-dollar", s)
	}
	var w, f int64
	if whole != "" {
		w, _ = strconv.ParseInt(whole, 10, 64) // digits only, at most 12 of them
	}
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return w*1_000_000 + f, nil
}

// FormatPrice renders micro-USD as a decimal dollar amount with at least
// two decimal places and no trailing zeros beyond them: 2500000 → "2.50",
// 18750 → "0.01875". ParsePrice(FormatPrice(v)) == v for v ≥ 0.
func FormatPrice(micros int64) string {
	sign := ""
	u := uint64(micros)
	if micros < 0 {
		sign, u = "-", -u
	}
	frac := fmt.Sprintf("%06d", u%1_000_000)
	frac = strings.TrimRight(frac, "0")
	for len(frac) < 2 {
		frac += "0"
	}
	return sign + strconv.FormatUint(u/1_000_000, 10) + "." + frac
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
