package openai

import (
	"bytes"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonedit"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// NewMeter implements gateway.Provider.
func (*Provider) NewMeter(r gateway.Route, rw gateway.Rewritten) gateway.Meter {
	return &meter{op: r.Operation, hide: rw.HideUsage}
}

type meter struct {
	op     string
	hide   bool
	u      usage.Tokens
	found  bool
	chars  int64
	failed bool
	ended  bool // the stream's final event ([DONE], a terminal or error event) passed
	// chunk holds a chat chunk's members while Event reads them (here, not
	// on its stack, which they would escape from on every call).
	chunk [len(chunkKeys)][]byte
}

// chunkKeys are the members of a chat chunk the meter reads, in one pass.
var chunkKeys = [...]string{"error", "usage", "choices"}

// Failed implements gateway.StreamFailer.
func (m *meter) Failed() bool { return m.failed }

// Ended implements gateway.StreamEnder.
func (m *meter) Ended() bool { return m.ended }

// done is the data of a chat stream's final event.
var done = []byte("[DONE]")

// Usage implements gateway.Meter. OpenAI sends usage once, at the end.
// nullUsage is what OpenAI adds to every chunk of a stream that asked for
// usage. An unescaped quote cannot occur inside a JSON string, so these
// bytes can only be the member itself.
var (
	nullUsage      = []byte(`,"usage":null`)
	nullUsageFirst = []byte(`"usage":null,`)
)

// AppendEvent implements gateway.EventEditor: when the gateway asked for
// stream usage on the client's behalf, every chunk gained "usage":null;
// removing it gives the client the bytes it would have had without the
// gateway.
func (m *meter) AppendEvent(dst, raw []byte) []byte {
	for _, member := range [...][]byte{nullUsage, nullUsageFirst} {
		if i := bytes.LastIndex(raw, member); i >= 0 {
			dst = append(dst, raw[:i]...)
			return append(dst, raw[i+len(member):]...)
		}
	}
	return append(dst, raw...)
}

func (m *meter) Usage() (usage.Tokens, gateway.Completeness) {
	if m.found {
		return m.u, gateway.FinalUsage
	}
	return m.u, gateway.NoUsage
}
func (m *meter) OutputChars() int64 { return m.chars }

func (m *meter) Document(doc []byte) {
	if raw, ok := jsonscan.Field(doc, "usage"); ok && !jsonedit.IsNull(raw) {
		m.read(raw)
	}
}

func (m *meter) Event(ev sse.Event) bool {
	if m.op == opResponses {
		return m.responsesEvent(ev)
	}
	data := ev.Data
	if len(data) == 0 || data[0] != '{' {
		m.ended = m.ended || bytes.Equal(bytes.TrimSpace(data), done)
		return false
	}
	defer clear(m.chunk[:]) // they alias the event
	jsonscan.Members(data, chunkKeys[:], m.chunk[:])
	errObj, usageObj, choices := m.chunk[0], m.chunk[1], m.chunk[2]
	// A chunk with a top-level error is how a chat stream fails after its
	// 200 (the SDKs raise it as an APIError). It is the stream's last
	// event: the SDKs stop reading there and close.
	if errObj != nil && !jsonedit.IsNull(errObj) {
		m.failed, m.ended = true, true
		return false
	}
	if usageObj != nil && !jsonedit.IsNull(usageObj) {
		m.read(usageObj)
		// The chunk the gateway asked for on the client's behalf carries
		// usage and no choices: the client never sees it.
		if m.hide {
			return jsonedit.IsEmptyArray(choices)
		}
		return false
	}
	if choices != nil {
		if first := jsonedit.FirstElement(choices); first != nil {
			if c, ok := jsonscan.Field(first, "delta", "content"); ok {
				m.chars += int64(len(c))
			}
			if tc, ok := jsonscan.Field(first, "delta", "tool_calls"); ok {
				m.chars += int64(len(tc))
			}
		}
	}
	return false
}

func (m *meter) responsesEvent(ev sse.Event) bool {
	switch typ := gateway.EventType(ev); typ {
	case "response.completed", "response.incomplete", "response.failed":
		m.ended = true
		if raw, ok := jsonscan.Field(ev.Data, "response", "usage"); ok && !jsonedit.IsNull(raw) {
			m.read(raw)
		}
		// A failed response ends the stream as an error, with whatever
		// usage it reports; incomplete is a success cut by a limit the
		// client set (max_output_tokens).
		if typ == "response.failed" {
			m.failed = true
		}
	case "error":
		m.failed, m.ended = true, true // nothing follows it
	case "response.output_text.delta", "response.function_call_arguments.delta", "response.reasoning_summary_text.delta":
		if raw, ok := jsonscan.Field(ev.Data, "delta"); ok {
			m.chars += int64(len(raw))
		}
	}
	return false
}

// read maps an OpenAI usage object onto the gateway's disjoint kinds. Chat
// reports prompt/completion tokens, Responses input/output tokens; cached
// and cache-written tokens are subsets of the prompt and reasoning a subset
// of the output.
func (m *meter) read(raw []byte) {
	prompt, ok := gateway.Count(raw, "prompt_tokens")
	if !ok {
		prompt, ok = gateway.Count(raw, "input_tokens")
	}
	out, ok2 := gateway.Count(raw, "completion_tokens")
	if !ok2 {
		out, ok2 = gateway.Count(raw, "output_tokens")
	}
	if !ok && !ok2 {
		return
	}
	cached, ok := gateway.Count(raw, "prompt_tokens_details", "cached_tokens")
	if !ok {
		cached, _ = gateway.Count(raw, "input_tokens_details", "cached_tokens")
	}
	written, ok := gateway.Count(raw, "prompt_tokens_details", "cache_write_tokens")
	if !ok {
		written, _ = gateway.Count(raw, "input_tokens_details", "cache_write_tokens")
	}
	reasoning, ok := gateway.Count(raw, "completion_tokens_details", "reasoning_tokens")
	if !ok {
		reasoning, _ = gateway.Count(raw, "output_tokens_details", "reasoning_tokens")
	}
	// Cached and written tokens are both details of the prompt (the SDK
	// documents them as a breakdown of prompt/input tokens) and a token is
	// either read from the cache or written to it, never both; reasoning is
	// a subset of the output. Clamping keeps the kinds disjoint whatever
	// the body says.
	cached = min(cached, prompt)
	written = min(written, prompt-cached)
	reasoning = min(reasoning, out)
	m.u = usage.Tokens{Input: prompt - cached - written, CachedInput: cached, CacheWrite: written, Output: out, Reasoning: reasoning}
	// Audio in the prompt (chat with gpt-4o-audio and its kin) is billed
	// above text: the part of the uncached input priced apart.
	audio, _ := gateway.Count(raw, "prompt_tokens_details", "audio_tokens")
	m.u.AudioInput = min(audio, m.u.Input)
	m.found = true
}
