package anthropic_test

import (
	"bytes"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/internal/metertest"
	"github.com/tollgate-dev/tollgate/pkg/sse"
)

// FuzzAnthropicUsage feeds arbitrary bytes to the Messages meter as a whole
// document, as one SSE event under each name that carries usage, and as a
// raw SSE stream. The meter must not panic nor report a negative count.
// For one document or event whose usage object is consistent (non-negative
// integer counts, thinking_tokens present only with an output_tokens at
// least as large), Output ≥ Reasoning must hold. Across several events no
// such claim is made: the meter overwrites field by field, as the SDKs do,
// and a stream whose events disagree can leave thinking above output.
func FuzzAnthropicUsage(f *testing.F) {
	for _, name := range []string{"messages-basic.json", "messages-thinking.json"} {
		f.Add(metertest.Testdata(f, name), "")
	}
	for _, name := range []string{"messages-stream.sse", "messages-stream-opus46.sse", "messages-stream-cache-read.sse"} {
		stream := metertest.Testdata(f, name)
		f.Add(stream, "stream")
		var d sse.Decoder
		_ = d.Feed(stream, func(ev sse.Event) error {
			if bytes.Contains(ev.Data, []byte(`"usage"`)) {
				f.Add(bytes.Clone(ev.Data), ev.Name)
			}
			return nil
		})
	}
	for _, s := range [][2]string{
		{`{"type":"message_delta","usage":{"input_tokens":1,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":40,"output_tokens_details":{"thinking_tokens":30}}}`, "message_delta"},
		{`{"type":"message_start","message":{"usage":{"input_tokens":394,"output_tokens":1}}}`, ""},
		{`{"usage":{"output_tokens":9223372036854775807}}`, "message_delta"},
		{`{"type": "ping"}`, "ping"},
		{``, ""},
	} {
		f.Add([]byte(s[0]), s[1])
	}

	f.Fuzz(func(t *testing.T, data []byte, name string) {
		type run struct {
			what   string
			feed   func(m gateway.Meter)
			oracle []string
		}
		runs := []run{
			{"document", func(m gateway.Meter) { m.Document(data) }, []string{"usage"}},
			{"event " + name, func(m gateway.Meter) { m.Event(sse.Event{Name: name, Data: data}) }, nil},
			{"message_start", func(m gateway.Meter) { m.Event(sse.Event{Name: "message_start", Data: data}) }, []string{"message", "usage"}},
			{"message_delta", func(m gateway.Meter) { m.Event(sse.Event{Name: "message_delta", Data: data}) }, []string{"usage"}},
			{"unnamed event", func(m gateway.Meter) { m.Event(sse.Event{Data: data}) }, nil},
			{"stream bytes", func(m gateway.Meter) {
				var d sse.Decoder
				emit := func(ev sse.Event) error { m.Event(ev); return nil }
				_ = d.Feed(data, emit)
				_ = d.Close(emit)
			}, nil},
		}
		for _, r := range runs {
			m := newMeter(t)
			r.feed(m)
			got, state := m.Usage()
			if metertest.Negative(got) {
				t.Fatalf("%s: usage %+v has a negative kind (state %v) for %q", r.what, got, state, data)
			}
			if metertest.PartsExceed(got) {
				t.Fatalf("%s: usage %+v has a part larger than its kind for %q", r.what, got, data)
			}
			if m.OutputChars() < 0 {
				t.Fatalf("%s: OutputChars %d < 0", r.what, m.OutputChars())
			}
			if state == gateway.NoUsage && !got.IsZero() {
				t.Fatalf("%s: NoUsage with counts %+v", r.what, got)
			}
			if r.oracle != nil && got.Output < got.Reasoning && consistentUsage(data, r.oracle) {
				t.Fatalf("%s: Output %d < Reasoning %d although the usage object is consistent: %q",
					r.what, got.Output, got.Reasoning, data)
			}
		}
	})
}

// consistentUsage reports whether the usage object at path in doc (decoded
// with encoding/json, last repeated key wins as in the meter) holds only
// non-negative integer counts and thinking_tokens not above output_tokens.
func consistentUsage(doc []byte, path []string) bool {
	u, ok := metertest.UsageObject(doc, path...)
	if !ok {
		return false
	}
	count := metertest.Count
	for _, k := range []string{"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} {
		if _, _, ok := count(u, k); !ok {
			return false
		}
	}
	out, outPresent, ok := count(u, "output_tokens")
	if !ok {
		return false
	}
	raw, present := u["output_tokens_details"]
	if !present {
		return true
	}
	details, isObj := raw.(map[string]any)
	if !isObj {
		return false
	}
	thinking, thinkingPresent, ok := count(details, "thinking_tokens")
	if !ok {
		return false
	}
	return !thinkingPresent || thinking == 0 || outPresent && thinking <= out
}
