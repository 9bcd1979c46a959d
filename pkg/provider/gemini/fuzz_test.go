package gemini_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/provider/internal/metertest"
	"github.com/tollgate-dev/tollgate/pkg/sse"
)

// FuzzGeminiUsage feeds arbitrary bytes to the generateContent meter (whole
// document) and the stream meters (one SSE event, raw SSE bytes, a streamed
// JSON array). The meters must not panic nor report a negative count, and
// since a chunk's usage replaces the running total and Output is
// candidates + thoughts, Output ≥ Reasoning must hold whenever the
// usageMetadata read has non-negative integer counters whose sums fit in an
// int64.
func FuzzGeminiUsage(f *testing.F) {
	for _, name := range []string{"generate-basic.json", "generate-thoughts-tooluse.json", "stream-array.json"} {
		f.Add(metertest.Testdata(f, name))
	}
	stream := metertest.Testdata(f, "stream-reasoning.sse")
	f.Add(stream)
	var d sse.Decoder
	n := 0
	_ = d.Feed(stream, func(ev sse.Event) error {
		if n++; n <= 3 || bytes.Contains(ev.Data, []byte("finishReason")) {
			f.Add(bytes.Clone(ev.Data))
		}
		return nil
	})
	for _, s := range []string{
		`{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":40,"candidatesTokenCount":30,"thoughtsTokenCount":20,"toolUsePromptTokenCount":10}}`,
		`[{"usageMetadata":{"promptTokenCount":8}},{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":3}}]`,
		`{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}`,
		`{"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":4,"candidatesTokenCount":3,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":9}],"cacheTokensDetails":[{"modality":"AUDIO","tokenCount":1}],"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":3}]}}`,
		``,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		type run struct {
			what        string
			path, query string
			feed        func(m gateway.Meter)
			oracle      bool
		}
		runs := []run{
			{"document", generatePath, "", func(m gateway.Meter) { m.Document(data) }, true},
			{"array element", streamPath, "", func(m gateway.Meter) { m.Document(data) }, true},
			{"sse event", streamPath, streamSSEQuery, func(m gateway.Meter) { m.Event(sse.Event{Data: data}) }, true},
			{"sse bytes", streamPath, streamSSEQuery, func(m gateway.Meter) {
				var d sse.Decoder
				emit := func(ev sse.Event) error { m.Event(ev); return nil }
				_ = d.Feed(data, emit)
				_ = d.Close(emit)
			}, false},
			{"array bytes", streamPath, "", func(m gateway.Meter) {
				var s jsonscan.ArraySplitter
				_ = s.Feed(data, func(elem []byte) error { m.Document(elem); return nil })
				_ = s.Close()
			}, false},
		}
		for _, r := range runs {
			m := newMeter(t, r.path, r.query)
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
			if u := m.(gateway.RunningTotaler).UncountedChars(); u < 0 || u > m.OutputChars() {
				t.Fatalf("%s: UncountedChars %d outside [0, OutputChars %d]", r.what, u, m.OutputChars())
			}
			if state == gateway.NoUsage && !got.IsZero() {
				t.Fatalf("%s: NoUsage with counts %+v", r.what, got)
			}
			if r.oracle && got.Output < got.Reasoning && consistentUsage(data) {
				t.Fatalf("%s: Output %d < Reasoning %d although usageMetadata is consistent: %q",
					r.what, got.Output, got.Reasoning, data)
			}
		}
	})
}

// consistentUsage reports whether doc's usageMetadata (decoded with
// encoding/json, last repeated key wins as in the meter) has only
// non-negative integer counters and sums that fit in an int64.
func consistentUsage(doc []byte) bool {
	u, ok := metertest.UsageObject(doc, "usageMetadata")
	if !ok {
		return false
	}
	var sum uint64
	for _, k := range []string{"promptTokenCount", "cachedContentTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "toolUsePromptTokenCount"} {
		n, _, ok := metertest.Count(u, k)
		if !ok {
			return false
		}
		sum += uint64(n)
		if sum > math.MaxInt64 {
			return false
		}
	}
	return true
}
