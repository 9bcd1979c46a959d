package anthropic

import (
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// NewMeter implements gateway.Provider.
func (*Provider) NewMeter(r gateway.Route, _ gateway.Rewritten) gateway.Meter { return &meter{} }

// meter follows Anthropic's usage: message_start has the input side (its
// output count is not final), message_delta has cumulative totals that
// overwrite — never add to — what came before, as the SDK accumulators do.
type meter struct {
	u      usage.Tokens
	state  gateway.Completeness
	chars  int64
	failed bool
}

func (m *meter) Usage() (usage.Tokens, gateway.Completeness) { return m.u, m.state }
func (m *meter) OutputChars() int64                          { return m.chars }

// Failed implements gateway.StreamFailer.
func (m *meter) Failed() bool { return m.failed }

func (m *meter) Document(doc []byte) {
	if raw, ok := jsonscan.Field(doc, "usage"); ok && m.read(raw) {
		m.state = gateway.FinalUsage
	}
}

func (m *meter) Event(ev sse.Event) bool {
	switch gateway.EventType(ev) {
	case "message_start":
		if raw, ok := jsonscan.Field(ev.Data, "message", "usage"); ok && m.read(raw) && m.state < gateway.PartialUsage {
			m.state = gateway.PartialUsage
		}
	case "message_delta":
		if raw, ok := jsonscan.Field(ev.Data, "usage"); ok && m.read(raw) {
			m.state = gateway.FinalUsage
		}
	case "error":
		// An error after the stream started (overloaded_error midway):
		// the 200 already sent does not make the request a success. The
		// usage read before it stands.
		m.failed = true
	case "content_block_delta":
		for _, f := range [...]string{"text", "partial_json", "thinking"} {
			if raw, ok := jsonscan.Field(ev.Data, "delta", f); ok {
				m.chars += int64(len(raw))
			}
		}
	}
	return false
}

// read overwrites the counters present in raw and reports whether it held
// any.
func (m *meter) read(raw []byte) bool {
	any := false
	set := func(dst *int64, path ...string) {
		if n, ok := gateway.Count(raw, path...); ok {
			*dst, any = n, true
		}
	}
	set(&m.u.Input, "input_tokens")
	set(&m.u.CachedInput, "cache_read_input_tokens")
	set(&m.u.CacheWrite, "cache_creation_input_tokens")
	set(&m.u.CacheWrite1h, "cache_creation", "ephemeral_1h_input_tokens")
	// 1-hour writes are a part of all writes; the gateway refuses ttl 1h,
	// but if upstream wrote some anyway they cost twice the input price.
	m.u.CacheWrite1h = min(m.u.CacheWrite1h, m.u.CacheWrite)
	set(&m.u.Output, "output_tokens")
	set(&m.u.Reasoning, "output_tokens_details", "thinking_tokens")
	m.u.Reasoning = min(m.u.Reasoning, m.u.Output) // thinking is part of the output
	return any
}
