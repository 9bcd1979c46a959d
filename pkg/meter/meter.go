// Package meter turns a request's token usage into the credits it costs.
//
// Credits are integers: a balance holds micro-credits (one credit is
// 1,000,000 micro-credits) and no float ever touches one. A request's cost
// is computed exactly as a fraction, summed over every kind of token, and
// rounded once, so the rounding error of a request is at most half a
// micro-credit however many kinds it used, and sums over many requests do
// not drift (docs/credits.md).
package meter

import (
	"fmt"
	"math/bits"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// MicroCredits is one credit in micro-credits, the unit of every balance
// and of Credits.
const MicroCredits = 1_000_000

// Rate is how many credits one US dollar of provider list price buys, in
// micro-credits per USD, so that a rate need not be a whole number of
// credits: 180 credits per USD is 180 * CreditPerUSD.
type Rate int64

const (
	// CreditPerUSD is a rate of one credit per US dollar.
	CreditPerUSD Rate = MicroCredits
	// DefaultRate is the hosted product's published rate, 180 credits per
	// US dollar.
	DefaultRate Rate = 180 * CreditPerUSD
)

// ParseRate reads a rate written as credits per US dollar, a positive
// decimal with at most six decimal places ("180", "0.5").
func ParseRate(s string) (Rate, error) {
	// A rate has the same shape as a price: a decimal count of whole units
	// held as millionths.
	micro, err := catalog.ParsePrice(s)
	if err != nil || micro == 0 {
		return 0, fmt.Errorf("credit rate %q: want a positive number of credits per US dollar, at most 6 decimal places, such as 180", s)
	}
	return Rate(micro), nil
}

// String renders the rate as ParseRate reads it, in credits per USD.
func (r Rate) String() string { return catalog.FormatPrice(int64(r)) }

// denominator turns Σ tokens × price × rate into micro-credits: prices are
// micro-USD per million tokens (1e6 × 1e6) and the rate is micro-credits
// per USD (a factor of 1e6 that the result, in micro-credits, keeps).
const denominator = 1_000_000 * 1_000_000

// Credits returns what usage t costs at price p, in micro-credits at rate r.
//
// The cost is the exact fraction
//
//	(Input×p.Input + CachedInput×p.CachedInput + CacheWrite×p.CacheWrite + Output×p.Output) × r / 10¹²
//
// where the parts priced apart are at their own price instead: the audio
// part of Input at p.AudioInput, the 1-hour part of CacheWrite at
// p.CacheWrite1h, the image part of Output at p.ImageOutput. The result is
// rounded once to the nearest micro-credit, ties to even. Reasoning tokens
// are part of Output and are not billed again. Ties to even rather than up
// because ties are common (0.025 USD/MTok at 180 credits/USD is 4.5
// micro-credits a token, so every odd count ends in exactly .5) and
// rounding them all up would bill a little more than the list price on
// every such request; splitting them leaves sums unbiased.
//
// Counts are clamped to [0, usage.MaxCount]; negative prices and a
// non-positive rate count as zero, so a request never earns credits. The
// arithmetic is 192-bit integer arithmetic that cannot overflow. A result
// above usage.MaxCredits (about a billion credits) saturates there: that
// is the most a record holds, and a charge beyond it would be refused by
// the ledger, leaving the request unbilled. Prices in the tables reach it
// from about 4 × 10¹⁰ tokens of a request (gpt-5.2-pro output), within
// usage.MaxCount.
func Credits(p catalog.Price, t usage.Tokens, r Rate) int64 {
	if r <= 0 {
		return 0
	}
	// A part priced apart is billed instead of, never on top of, the rest
	// of its kind; clamped to the kind, no body can bill it twice.
	in, write, out := usage.Clamp(t.Input), usage.Clamp(t.CacheWrite), usage.Clamp(t.Output)
	audio := min(usage.Clamp(t.AudioInput), in)
	write1h := min(usage.Clamp(t.CacheWrite1h), write)
	image := min(usage.Clamp(t.ImageOutput), out)
	// sum = Σ count × price, at most 7 × 2⁴⁰ × 2⁶³ < 2¹⁰⁶: 128 bits.
	var hi, lo uint64
	for _, k := range [...]struct{ n, price int64 }{
		{in - audio, p.Input},
		{audio, p.AudioInput},
		{usage.Clamp(t.CachedInput), p.CachedInput},
		{write - write1h, p.CacheWrite},
		{write1h, p.CacheWrite1h},
		{out - image, p.Output},
		{image, p.ImageOutput},
	} {
		h, l := bits.Mul64(uint64(k.n), uint64(max(k.price, 0)))
		var c uint64
		lo, c = bits.Add64(lo, l, 0)
		hi += h + c
	}
	// (w2, w1, w0) = sum × r, 192 bits.
	h1, w0 := bits.Mul64(lo, uint64(r))
	w2, m := bits.Mul64(hi, uint64(r))
	w1, c := bits.Add64(h1, m, 0)
	w2 += c
	// Long division by the 64-bit denominator, one word at a time.
	q2, rem := bits.Div64(0, w2, denominator)
	q1, rem := bits.Div64(rem, w1, denominator)
	q0, rem := bits.Div64(rem, w0, denominator)
	if q2 != 0 || q1 != 0 || q0 >= uint64(usage.MaxCredits) {
		return usage.MaxCredits
	}
	q := int64(q0)
	// rem < 10¹², so 2×rem cannot overflow.
	if 2*rem > denominator || 2*rem == denominator && q&1 == 1 {
		q++
	}
	return q
}
