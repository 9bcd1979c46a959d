package anthropic_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/internal/metertest"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

func newMeter(t testing.TB) gateway.Meter {
	t.Helper()
	p := anthropic.New()
	r, f := p.Match(http.MethodPost, "/v1/messages", "")
	if f != nil {
		t.Fatal(f)
	}
	return p.NewMeter(r, gateway.Rewritten{})
}

func feedSSE(t testing.TB, m gateway.Meter, stream []byte) {
	t.Helper()
	if dropped := metertest.FeedSSE(t, m, stream); len(dropped) > 0 {
		t.Errorf("events dropped (%q); Anthropic events are never dropped", dropped)
	}
}

func ev(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

func TestMeterDocument(t *testing.T) {
	for _, tc := range []struct {
		name  string
		doc   string
		want  usage.Tokens
		state gateway.Completeness
	}{
		{
			name: "the three input counters are additive, not subsets",
			doc: `{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":30,"cache_read_input_tokens":20,
				"cache_creation":{"ephemeral_5m_input_tokens":30,"ephemeral_1h_input_tokens":0},"output_tokens":40,
				"output_tokens_details":{"thinking_tokens":5}}}`,
			want:  usage.Tokens{Input: 10, CachedInput: 20, CacheWrite: 30, Output: 40, Reasoning: 5},
			state: gateway.FinalUsage,
		},
		{
			name: "1-hour writes are the part of the writes they are",
			doc: `{"usage":{"input_tokens":0,"cache_creation_input_tokens":1000,"cache_read_input_tokens":0,
				"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":1000},"output_tokens":0}}`,
			want:  usage.Tokens{CacheWrite: 1000, CacheWrite1h: 1000},
			state: gateway.FinalUsage,
		},
		{
			name: "1-hour writes above all writes are clamped to them",
			doc: `{"usage":{"input_tokens":5,"cache_creation_input_tokens":30,
				"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":80},"output_tokens":1}}`,
			want:  usage.Tokens{Input: 5, CacheWrite: 30, CacheWrite1h: 30, Output: 1},
			state: gateway.FinalUsage,
		},
		{
			name:  "older shape without cache counters",
			doc:   `{"usage":{"input_tokens":7,"output_tokens":3}}`,
			want:  usage.Tokens{Input: 7, Output: 3},
			state: gateway.FinalUsage,
		},
		{
			// pydantic-ai cassette test_anthropic_compaction_usage_with_cache:
			// the top level is the "message" entry only.
			name: "a compaction step is billed on top of the top-level counters",
			doc: `{"type":"message","usage":{"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},
				"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"inference_geo":"global","input_tokens":180,
				"iterations":[{"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":55096},"cache_creation_input_tokens":55096,
				"cache_read_input_tokens":0,"input_tokens":100,"output_tokens":82,"type":"compaction"},
				{"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"cache_creation_input_tokens":0,
				"cache_read_input_tokens":0,"input_tokens":180,"output_tokens":8,"type":"message"}],
				"output_tokens":8,"server_tool_use":{"web_fetch_requests":0,"web_search_requests":0},"service_tier":"standard"}}`,
			want:  usage.Tokens{Input: 280, CacheWrite: 55096, Output: 90},
			state: gateway.FinalUsage,
		},
		{
			name: "message and fallback_message entries are the top level, split up",
			doc: `{"usage":{"input_tokens":42,"output_tokens":128,"iterations":[{"input_tokens":42,"output_tokens":128,
				"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"type":"fallback_message","model":"claude-opus-4-8"}]}}`,
			want:  usage.Tokens{Input: 42, Output: 128},
			state: gateway.FinalUsage,
		},
		{
			name:  "iterations that cannot be read add nothing",
			doc:   `{"usage":{"input_tokens":7,"output_tokens":3,"iterations":{"type":"compaction","input_tokens":5}}}`,
			want:  usage.Tokens{Input: 7, Output: 3},
			state: gateway.FinalUsage,
		},
		{
			name:  "no usage",
			doc:   `{"type":"message","content":[]}`,
			state: gateway.NoUsage,
		},
		{
			name:  "usage without counters",
			doc:   `{"usage":{"service_tier":"standard"}}`,
			state: gateway.NoUsage,
		},
		{
			name:  "recorded message",
			doc:   "@messages-basic.json",
			want:  usage.Tokens{Input: 13, Output: 5},
			state: gateway.FinalUsage,
		},
		{
			name:  "recorded message with thinking (billed inside output_tokens)",
			doc:   "@messages-thinking.json",
			want:  usage.Tokens{Input: 46, Output: 417},
			state: gateway.FinalUsage,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := []byte(tc.doc)
			if tc.doc[0] == '@' {
				doc = metertest.Testdata(t, tc.doc[1:])
			}
			m := newMeter(t)
			m.Document(doc)
			got, state := m.Usage()
			if state != tc.state {
				t.Errorf("completeness = %v, want %v", state, tc.state)
			}
			if state != gateway.NoUsage && got != tc.want {
				t.Errorf("usage = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMeterStream(t *testing.T) {
	start := ev("message_start", `{"type":"message_start","message":{"id":"m","usage":{"input_tokens":394,"cache_creation_input_tokens":11,"cache_read_input_tokens":22,"output_tokens":1}}}`)
	text := ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there"}}`)
	for _, tc := range []struct {
		name   string
		stream string
		want   usage.Tokens
		state  gateway.Completeness
	}{
		{
			name:   "message_start alone is partial: output 1 is not final",
			stream: start + text,
			want:   usage.Tokens{Input: 394, CachedInput: 22, CacheWrite: 11, Output: 1},
			state:  gateway.PartialUsage,
		},
		{
			name: "older message_delta (output only) overwrites output and keeps the input side",
			stream: start + text +
				ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":79}}`) +
				ev("message_stop", `{"type":"message_stop"}`),
			want:  usage.Tokens{Input: 394, CachedInput: 22, CacheWrite: 11, Output: 79},
			state: gateway.FinalUsage,
		},
		{
			name: "newer message_delta repeats the input side: overwritten, never added",
			stream: start + text +
				ev("message_delta", `{"type":"message_delta","usage":{"input_tokens":394,"cache_creation_input_tokens":11,"cache_read_input_tokens":22,"output_tokens":50,"output_tokens_details":{"thinking_tokens":12}}}`),
			want:  usage.Tokens{Input: 394, CachedInput: 22, CacheWrite: 11, Output: 50, Reasoning: 12},
			state: gateway.FinalUsage,
		},
		{
			name: "two cumulative message_delta events: the last wins",
			stream: start +
				ev("message_delta", `{"type":"message_delta","usage":{"output_tokens":10}}`) +
				ev("message_delta", `{"type":"message_delta","usage":{"output_tokens":25}}`),
			want:  usage.Tokens{Input: 394, CachedInput: 22, CacheWrite: 11, Output: 25},
			state: gateway.FinalUsage,
		},
		{
			name: "events named only by their type field still count",
			stream: "data: " + `{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}` + "\n\n" +
				"data: " + `{"type":"message_delta","usage":{"output_tokens":9}}` + "\n\n",
			want:  usage.Tokens{Input: 5, Output: 9},
			state: gateway.FinalUsage,
		},
		{
			name: "ping and error events carry no usage",
			stream: start + ev("ping", `{"type": "ping"}`) +
				ev("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"usage":{"output_tokens":999}}`),
			want:  usage.Tokens{Input: 394, CachedInput: 22, CacheWrite: 11, Output: 1},
			state: gateway.PartialUsage,
		},
		{
			// pydantic-ai cassette test_anthropic_advisor_tool_stream: the
			// advisor's own model call is not in the top-level counters.
			name: "an advisor call is billed on top of the top-level counters",
			stream: ev("message_start", `{"type":"message_start","message":{"usage":{"input_tokens":1128,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}}`) +
				ev("message_delta", `{"type":"message_delta","usage":{"input_tokens":2411,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":145,`+
					`"output_tokens_details":{"thinking_tokens":47},"iterations":[`+
					`{"input_tokens":1128,"output_tokens":135,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"type":"message"},`+
					`{"input_tokens":2543,"output_tokens":18,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"type":"advisor_message","model":"claude-opus-4-8"},`+
					`{"input_tokens":1283,"output_tokens":10,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"type":"message"}]}}   `),
			want:  usage.Tokens{Input: 2411 + 2543, Output: 145 + 18, Reasoning: 47},
			state: gateway.FinalUsage,
		},
		{
			// The streamed compaction cassette: message_delta overwrites
			// message_start's cache read with the message's own 0, and the
			// compaction step's read comes from its entry.
			name: "a streamed compaction step: the last iterations list counts once",
			stream: ev("message_start", `{"type":"message_start","message":{"usage":{"input_tokens":181,"cache_creation_input_tokens":0,"cache_read_input_tokens":55096,"output_tokens":1}}}`) +
				ev("message_delta", `{"type":"message_delta","usage":{"input_tokens":181,"output_tokens":4,"iterations":[`+
					`{"input_tokens":100,"output_tokens":83,"cache_read_input_tokens":55096,"cache_creation_input_tokens":0,"type":"compaction"}]}}`) +
				ev("message_delta", `{"type":"message_delta","usage":{"input_tokens":181,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":8,"iterations":[`+
					`{"input_tokens":100,"output_tokens":83,"cache_read_input_tokens":55096,"cache_creation_input_tokens":0,"type":"compaction"},`+
					`{"input_tokens":181,"output_tokens":8,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"type":"message"}]}}`),
			want:  usage.Tokens{Input: 281, CachedInput: 55096, Output: 91},
			state: gateway.FinalUsage,
		},
		{
			name:   "recorded stream (padded JSON)",
			stream: "@messages-stream.sse",
			want:   usage.Tokens{Input: 13, Output: 5},
			state:  gateway.FinalUsage,
		},
		{
			name:   "recorded stream, newer shape",
			stream: "@messages-stream-opus46.sse",
			want:   usage.Tokens{Input: 17, Output: 20},
			state:  gateway.FinalUsage,
		},
		{
			name:   "recorded stream with a cache read",
			stream: "@messages-stream-cache-read.sse",
			want:   usage.Tokens{Input: 4, CachedInput: 1165, Output: 221},
			state:  gateway.FinalUsage,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := []byte(tc.stream)
			if tc.stream[0] == '@' {
				stream = metertest.Testdata(t, tc.stream[1:])
			}
			m := newMeter(t)
			feedSSE(t, m, stream)
			got, state := m.Usage()
			if state != tc.state || got != tc.want {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
		})
	}
}

// TestMeterStreamErrors: an error event after the 200 makes the request an
// error, and the usage read before it stands.
// TestMeterServedModel: the model the message names, from a document or
// message_start, is the one that answered.
func TestMeterServedModel(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"document", `{"model":"claude-opus-4-8","type":"message","usage":{"input_tokens":14,"output_tokens":11}}`, "claude-opus-4-8"},
		{"stream", ev("message_start", `{"type":"message_start","message":{"model":"claude-opus-4-8","usage":{"input_tokens":14,"output_tokens":0}}}`) +
			ev("message_delta", `{"type":"message_delta","usage":{"output_tokens":11}}`), "claude-opus-4-8"},
		{"no model", `{"usage":{"input_tokens":1,"output_tokens":1}}`, ""},
		{"model not a string", `{"model":5,"usage":{"input_tokens":1,"output_tokens":1}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t)
			if strings.HasPrefix(tc.body, "event:") {
				feedSSE(t, m, []byte(tc.body))
			} else {
				m.Document([]byte(tc.body))
			}
			if got := m.(gateway.ServedModeler).ServedModel(); got != tc.want {
				t.Errorf("served model %q, want %q", got, tc.want)
			}
			if u, state := m.Usage(); state != gateway.FinalUsage || u.IsZero() {
				t.Errorf("usage %+v (%v) lost while reading the model", u, state)
			}
		})
	}
}

func TestMeterStreamErrors(t *testing.T) {
	start := ev("message_start", `{"type":"message_start","message":{"id":"m","usage":{"input_tokens":394,"cache_creation_input_tokens":10,"cache_read_input_tokens":20,"output_tokens":1}}}`)
	text := ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello world, partial output here"}}`)
	overloaded := `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	for _, tc := range []struct {
		name   string
		stream string
		want   usage.Tokens
		state  gateway.Completeness
		failed bool
	}{
		{"error event midway", start + text + ev("error", overloaded),
			usage.Tokens{Input: 394, CachedInput: 20, CacheWrite: 10, Output: 1}, gateway.PartialUsage, true},
		{"error named only by its type", start + "data: " + overloaded + "\n\n",
			usage.Tokens{Input: 394, CachedInput: 20, CacheWrite: 10, Output: 1}, gateway.PartialUsage, true},
		{"error before any usage", ev("error", overloaded), usage.Tokens{}, gateway.NoUsage, true},
		{"a stream that ends well", start + text + ev("message_delta", `{"type":"message_delta","usage":{"output_tokens":9}}`) + ev("message_stop", `{"type":"message_stop"}`),
			usage.Tokens{Input: 394, CachedInput: 20, CacheWrite: 10, Output: 9}, gateway.FinalUsage, false},
		{"text that mentions an error is not one", start + ev("content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"event: error"}}`),
			usage.Tokens{Input: 394, CachedInput: 20, CacheWrite: 10, Output: 1}, gateway.PartialUsage, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t)
			feedSSE(t, m, []byte(tc.stream))
			got, state := m.Usage()
			if state != tc.state || got != tc.want {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
			if f := gateway.MeterFailed(m); f != tc.failed {
				t.Errorf("failed = %v, want %v", f, tc.failed)
			}
		})
	}
}

func TestMeterOutputChars(t *testing.T) {
	m := newMeter(t)
	feedSSE(t, m, []byte(
		ev("content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"abcd"}}`)+
			ev("content_block_delta", `{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}`)+
			ev("content_block_delta", `{"type":"content_block_delta","delta":{"type":"thinking_delta","thinking":"hmm"}}`)))
	if c := m.OutputChars(); c < int64(len("abcd")+len(`{"a":1}`)+len("hmm")) {
		t.Errorf("OutputChars = %d, want text, tool JSON and thinking counted", c)
	}
	if _, state := m.Usage(); state != gateway.NoUsage {
		t.Errorf("completeness = %v, want NoUsage", state)
	}
}

// TestMeterNeverNegative: a negative count from upstream must not reach the
// ledger (it would be a credit).
func TestMeterNeverNegative(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"negative input", `{"usage":{"input_tokens":-5,"output_tokens":3}}`},
		{"negative cache read", `{"usage":{"input_tokens":5,"cache_read_input_tokens":-3,"output_tokens":3}}`},
		{"negative output", `{"usage":{"input_tokens":5,"output_tokens":-1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t)
			m.Document([]byte(tc.doc))
			if got, _ := m.Usage(); metertest.Negative(got) {
				t.Errorf("usage = %+v has a negative kind", got)
			}
		})
	}
}
