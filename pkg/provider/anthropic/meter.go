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
	extra  usage.Tokens // the iterations the top-level counters leave out
	state  gateway.Completeness
	chars  int64
	failed bool
	ended  bool   // message_stop passed
	model  string // the model the response says answered
}

func (m *meter) Usage() (usage.Tokens, gateway.Completeness) { return m.u.Plus(m.extra), m.state }
func (m *meter) OutputChars() int64                          { return m.chars }

// Failed implements gateway.StreamFailer.
func (m *meter) Failed() bool { return m.failed }

// Ended implements gateway.StreamEnder.
func (m *meter) Ended() bool { return m.ended }

// ServedModel implements gateway.ServedModeler.
func (m *meter) ServedModel() string { return m.model }

// messageKeys are the members of a message the meter reads.
var messageKeys = []string{"usage", "model"}

// message reads a message object's usage and model, reporting whether the
// usage held counters.
func (m *meter) message(msg []byte) bool {
	var vals [2][]byte
	if !jsonscan.Members(msg, messageKeys, vals[:]) {
		return false
	}
	if s, ok := jsonscan.String(vals[1]); ok {
		m.model = s
	}
	return vals[0] != nil && m.read(vals[0])
}

func (m *meter) Document(doc []byte) {
	if m.message(doc) {
		m.state = gateway.FinalUsage
	}
}

func (m *meter) Event(ev sse.Event) bool {
	switch gateway.EventType(ev) {
	case "message_start":
		if raw, ok := jsonscan.Field(ev.Data, "message"); ok && m.message(raw) && m.state < gateway.PartialUsage {
			m.state = gateway.PartialUsage
		}
	case "message_delta":
		if raw, ok := jsonscan.Field(ev.Data, "usage"); ok && m.read(raw) {
			m.state = gateway.FinalUsage
		}
	case "message_stop":
		m.ended = true
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
	any := readCounts(raw, &m.u)
	if n, ok := gateway.Count(raw, "output_tokens_details", "thinking_tokens"); ok {
		m.u.Reasoning, any = n, true
	}
	m.u.Reasoning = min(m.u.Reasoning, m.u.Output) // thinking is part of the output
	if iters, ok := jsonscan.Field(raw, "iterations"); ok {
		m.extra = uncounted(iters)
	}
	return any
}

// readCounts overwrites the input, cache and output counters of u that raw
// holds, and reports whether it held any.
func readCounts(raw []byte, u *usage.Tokens) bool {
	any := false
	set := func(dst *int64, path ...string) {
		if n, ok := gateway.Count(raw, path...); ok {
			*dst, any = n, true
		}
	}
	set(&u.Input, "input_tokens")
	set(&u.CachedInput, "cache_read_input_tokens")
	set(&u.CacheWrite, "cache_creation_input_tokens")
	set(&u.CacheWrite1h, "cache_creation", "ephemeral_1h_input_tokens")
	// 1-hour writes are a part of all writes; the gateway refuses ttl 1h,
	// but if upstream wrote some anyway they cost twice the input price.
	u.CacheWrite1h = min(u.CacheWrite1h, u.CacheWrite)
	set(&u.Output, "output_tokens")
	return any
}

// uncounted sums the usage.iterations entries that the top-level counters
// leave out: a compaction step (context management) and an advisor tool's
// model call. The "message" and "fallback_message" entries are the
// top-level counters, split up. The list is cumulative like the counters
// around it, so each read replaces the last.
func uncounted(iters []byte) usage.Tokens {
	var sum usage.Tokens
	jsonscan.Elements(iters, func(it []byte) bool {
		raw, _ := jsonscan.Field(it, "type")
		if typ, _ := jsonscan.String(raw); typ != "compaction" && typ != "advisor_message" {
			return true
		}
		var u usage.Tokens
		readCounts(it, &u)
		sum = sum.Plus(u)
		return true
	})
	return sum
}
