// Package usage holds the token counts of one request in the gateway's own,
// provider-neutral terms. The kinds are disjoint so that
// cost = Σ kind × price with no double counting.
package usage

import "time"

// Tokens is the metered usage of one request.
type Tokens struct {
	// Input is uncached input: OpenAI prompt − cached − cache write;
	// Anthropic input_tokens; Gemini prompt − cached + tool-use prompt.
	Input int64 `json:"input_tokens"`
	// CachedInput is input read from a provider cache.
	CachedInput int64 `json:"cached_input_tokens"`
	// CacheWrite is input written to a provider cache (Anthropic
	// cache_creation_input_tokens, OpenAI cache_write_tokens).
	CacheWrite int64 `json:"cache_write_tokens"`
	// Output is all output, reasoning included.
	Output int64 `json:"output_tokens"`
	// Reasoning is the reasoning/thinking part of Output, for information only.
	Reasoning int64 `json:"reasoning_tokens"`

	// The parts below are subsets of the kinds above that the provider
	// bills at a rate of their own. They are not extra tokens and are not
	// stored: they only change what the request costs (pkg/meter), so the
	// record keeps the four disjoint kinds and the ledger its columns.

	// CacheWrite1h is the part of CacheWrite written with a 1-hour TTL
	// (Anthropic ephemeral_1h_input_tokens), billed at twice the input
	// price instead of the 5-minute write price.
	CacheWrite1h int64 `json:"-"`
	// AudioInput is the audio part of Input (Gemini's AUDIO modality,
	// uncached), which Flash models bill above text.
	AudioInput int64 `json:"-"`
	// ImageOutput is the image part of Output (Gemini's IMAGE modality),
	// which image models bill above text.
	ImageOutput int64 `json:"-"`
}

// PromptTotal is every input token the model saw, cached or not.
func (t Tokens) PromptTotal() int64 { return t.Input + t.CachedInput + t.CacheWrite }

// Total is every token billed.
func (t Tokens) Total() int64 { return t.PromptTotal() + t.Output }

// Plus is t and o counted together, every kind and part, each clamped.
func (t Tokens) Plus(o Tokens) Tokens {
	return Tokens{
		Input:        Clamp(t.Input + o.Input),
		CachedInput:  Clamp(t.CachedInput + o.CachedInput),
		CacheWrite:   Clamp(t.CacheWrite + o.CacheWrite),
		Output:       Clamp(t.Output + o.Output),
		Reasoning:    Clamp(t.Reasoning + o.Reasoning),
		CacheWrite1h: Clamp(t.CacheWrite1h + o.CacheWrite1h),
		AudioInput:   Clamp(t.AudioInput + o.AudioInput),
		ImageOutput:  Clamp(t.ImageOutput + o.ImageOutput),
	}
}

// Clamped is t with every count clamped to [0, MaxCount]. Each count read
// off the wire is clamped already, but a kind the gateway adds up (Gemini's
// prompt less cached plus tool-use prompt, candidates plus thoughts, a
// running total plus an estimate) can still go beyond MaxCount, and the
// ledger refuses such a record.
func (t Tokens) Clamped() Tokens { return t.Plus(Tokens{}) }

// IsZero reports whether no tokens were counted.
func (t Tokens) IsZero() bool { return t == Tokens{} }

// Status is how a request ended.
type Status string

const (
	StatusOK        Status = "ok"        // upstream answered 2xx and the body completed
	StatusError     Status = "error"     // upstream answered with an error status or failed midway
	StatusRejected  Status = "rejected"  // the gateway refused it before any upstream call
	StatusAbandoned Status = "abandoned" // the client went away before the response completed
)

// Record is the one usage record a request yields. It never holds prompt or
// output text.
type Record struct {
	RequestID  string    `json:"request_id"`
	Time       time.Time `json:"time"`
	Account    string    `json:"account"`
	Project    string    `json:"project"`
	Provider   string    `json:"provider"`
	Model      string    `json:"model"`
	Operation  string    `json:"operation"`
	Status     Status    `json:"status"`
	HTTPStatus int       `json:"http_status"`
	Reason     string    `json:"reason,omitempty"` // rejection or failure reason code, never free text
	Stream     bool      `json:"stream"`
	Tokens               // flattened into the JSON object
	Estimated  bool      `json:"estimated"`
	// Credits is what the request cost, in micro-credits (pkg/meter), set
	// once at settlement.
	Credits   int64         `json:"credits_micro"`
	Latency   time.Duration `json:"-"`
	LatencyMS int64         `json:"latency_ms"`
	// TTFT is the time from the request to the first response body byte;
	// zero when no body arrived.
	TTFT time.Duration `json:"-"`
	// ServedModel is the model the provider says answered, when the
	// response names one; the request is priced as that model when the
	// catalog prices it differently (a server-side fallback). Not stored:
	// the record keeps the model the caller asked for.
	ServedModel string `json:"-"`
}

// MaxCount bounds any one count read from a provider (about a trillion
// tokens): far above any real request, low enough that sums of counts
// cannot overflow.
const MaxCount int64 = 1 << 40

// MaxCredits bounds one record's credits, in micro-credits (about a
// billion credits, some six million US dollars at the default rate): far
// above any real request, low enough that balances and roll-ups summing
// such charges stay exact in int64. The meter's charge saturates here and
// the ledger stores nothing above it, so a request can cost no more than a
// record can hold: a larger charge would be a record the ledger refuses,
// and a request that is never billed.
const MaxCredits int64 = 1 << 50

// Clamp limits a count read off the wire to [0, MaxCount], so a malformed
// or hostile body can never bill negative or overflowing tokens.
func Clamp(n int64) int64 { return min(max(n, 0), MaxCount) }
