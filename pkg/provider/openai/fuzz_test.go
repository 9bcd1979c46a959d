package openai_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/internal/metertest"
	"github.com/tollgate-dev/tollgate/pkg/sse"
)

// FuzzOpenAIUsage feeds arbitrary bytes to the chat and Responses meters as
// a whole document, as one SSE event (with and without an event name) and
// as a raw SSE stream. Whatever arrives, the meters must not panic and must
// not report a negative count; and when the usage object they read is
// consistent (every count a non-negative integer, reasoning not above the
// output it is part of), Output ≥ Reasoning must hold in the result.
func FuzzOpenAIUsage(f *testing.F) {
	for _, name := range []string{"chat-basic.json", "chat-cached.json", "responses-basic.json"} {
		f.Add(metertest.Testdata(f, name))
	}
	for _, name := range []string{"chat-stream-usage.sse", "responses-stream.sse"} {
		stream := metertest.Testdata(f, name)
		f.Add(stream)
		var d sse.Decoder
		_ = d.Feed(stream, func(ev sse.Event) error {
			if bytes.Contains(ev.Data, []byte(`"usage":{`)) {
				f.Add(bytes.Clone(ev.Data))
			}
			return nil
		})
	}
	for _, s := range []string{
		`{"usage":{"prompt_tokens":100,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":30},"completion_tokens_details":{"reasoning_tokens":20}}}`,
		`{"type":"response.completed","response":{"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":6},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":7}}}}`,
		`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`,
		`{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":25}}}`,
		`{"type":"response.completed","response":{"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":3,"cache_write_tokens":6},"output_tokens":1}}}`,
		`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}}`,
		`{"usage":{"completion_tokens":5,"output_tokens":9,"completion_tokens_details":{"reasoning_tokens":5},"output_tokens_details":{"reasoning_tokens":9}}}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}`,
		`{"usage":null,"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}`,
		`[DONE]`,
		``,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		type run struct {
			name   string
			path   string
			hide   bool
			feed   func(m gateway.Meter)
			oracle []string // where the usage object the meter reads sits
		}
		runs := []run{
			{"chat document", chatPath, false, func(m gateway.Meter) { m.Document(data) }, []string{"usage"}},
			{"chat event", chatPath, false, func(m gateway.Meter) { m.Event(sse.Event{Data: data}) }, []string{"usage"}},
			{"chat event, usage hidden", chatPath, true, func(m gateway.Meter) { m.Event(sse.Event{Data: data}) }, []string{"usage"}},
			{"responses document", responsesPath, false, func(m gateway.Meter) { m.Document(data) }, []string{"usage"}},
			{"responses event", responsesPath, false, func(m gateway.Meter) { m.Event(sse.Event{Data: data}) }, nil},
			{"responses completed event", responsesPath, false, func(m gateway.Meter) {
				m.Event(sse.Event{Name: "response.completed", Data: data})
			}, []string{"response", "usage"}},
			{"chat stream bytes", chatPath, true, func(m gateway.Meter) { feedStream(m, data) }, nil},
			{"responses stream bytes", responsesPath, false, func(m gateway.Meter) { feedStream(m, data) }, nil},
		}
		for _, r := range runs {
			m := newMeter(t, r.path, r.hide)
			r.feed(m)
			got, state := m.Usage()
			if metertest.Negative(got) {
				t.Fatalf("%s: usage %+v has a negative kind (state %v) for %q", r.name, got, state, data)
			}
			if m.OutputChars() < 0 {
				t.Fatalf("%s: OutputChars %d < 0", r.name, m.OutputChars())
			}
			if state == gateway.NoUsage && !got.IsZero() {
				t.Fatalf("%s: NoUsage with counts %+v", r.name, got)
			}
			if r.oracle != nil && got.Output < got.Reasoning && consistentUsage(data, r.oracle) {
				t.Fatalf("%s: Output %d < Reasoning %d although the usage object is consistent: %q",
					r.name, got.Output, got.Reasoning, data)
			}
		}
		checkEventEditor(t, newMeter(t, chatPath, true), data)
	})
}

// checkEventEditor: when the gateway hid usage, the meter edits every kept
// event to remove the "usage":null the gateway's request made upstream
// add. The edit may only remove that member, once, and must leave a valid
// JSON payload valid.
func checkEventEditor(t *testing.T, m gateway.Meter, data []byte) {
	ed, ok := m.(gateway.EventEditor)
	if !ok {
		return
	}
	raw := append(append([]byte("data: "), data...), "\n\n"...)
	out := ed.AppendEvent([]byte("prefix"), raw)
	if !bytes.HasPrefix(out, []byte("prefix")) {
		t.Fatalf("AppendEvent dropped what dst held: %q", out)
	}
	out = out[len("prefix"):]
	if bytes.Equal(out, raw) {
		return
	}
	member := []byte(`"usage":null`)
	if len(raw)-len(out) != len(member)+1 || !bytes.Contains(raw, member) {
		t.Fatalf("AppendEvent removed more than one usage:null member:\n in %q\nout %q", raw, out)
	}
	payload := bytes.TrimSuffix(bytes.TrimPrefix(out, []byte("data: ")), []byte("\n\n"))
	if json.Valid(data) && !bytes.ContainsAny(data, "\r\n") && !json.Valid(payload) {
		t.Fatalf("AppendEvent made valid JSON invalid:\n in %q\nout %q", data, payload)
	}
}

func feedStream(m gateway.Meter, data []byte) {
	var d sse.Decoder
	emit := func(ev sse.Event) error { m.Event(ev); return nil }
	_ = d.Feed(data, emit)
	_ = d.Close(emit)
}

// consistentUsage decodes doc with encoding/json (which, like the meter's
// scanner, takes the last of repeated keys) and reports whether the usage
// object at path holds only non-negative integer counts, every reasoning
// count at most every output count present, and no reasoning without an
// output count.
func consistentUsage(doc []byte, path []string) bool {
	u, ok := metertest.UsageObject(doc, path...)
	if !ok {
		return false
	}
	count := metertest.Count
	var outs, reasons []int64
	for _, k := range []string{"prompt_tokens", "input_tokens", "completion_tokens", "output_tokens"} {
		n, present, ok := count(u, k)
		if !ok {
			return false
		}
		if present && (k == "completion_tokens" || k == "output_tokens") {
			outs = append(outs, n)
		}
	}
	for _, d := range []struct{ obj, key string }{
		{"prompt_tokens_details", "cached_tokens"}, {"input_tokens_details", "cached_tokens"},
		{"completion_tokens_details", "reasoning_tokens"}, {"output_tokens_details", "reasoning_tokens"},
	} {
		raw, present := u[d.obj]
		if !present {
			continue
		}
		obj, isObj := raw.(map[string]any)
		if !isObj {
			return false
		}
		n, present, ok := count(obj, d.key)
		if !ok {
			return false
		}
		if present && d.key == "reasoning_tokens" {
			reasons = append(reasons, n)
		}
	}
	for _, r := range reasons {
		if r > 0 && len(outs) == 0 {
			return false
		}
		for _, o := range outs {
			if r > o {
				return false
			}
		}
	}
	return true
}
