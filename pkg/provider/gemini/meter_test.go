package gemini_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/internal/metertest"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

const (
	generatePath   = "/v1beta/models/gemini-2.5-flash:generateContent"
	streamPath     = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
	streamSSEQuery = "alt=sse"
)

func newMeter(t testing.TB, path, rawQuery string) gateway.Meter {
	t.Helper()
	p := gemini.New()
	r, f := p.Match(http.MethodPost, path, rawQuery)
	if f != nil {
		t.Fatal(f)
	}
	return p.NewMeter(r, gateway.Rewritten{})
}

func feedSSE(t testing.TB, m gateway.Meter, stream []byte) {
	t.Helper()
	if dropped := metertest.FeedSSE(t, m, stream); len(dropped) > 0 {
		t.Errorf("events dropped (%q); Gemini streams pass byte for byte", dropped)
	}
}

func TestMeterDocument(t *testing.T) {
	for _, tc := range []struct {
		name  string
		doc   string
		want  usage.Tokens
		state gateway.Completeness
	}{
		{
			name: "cached is a subset of prompt; thoughts are output; tool-use prompt is input",
			doc: `{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],
				"usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":40,"candidatesTokenCount":30,
				"thoughtsTokenCount":20,"toolUsePromptTokenCount":10,"totalTokenCount":160}}`,
			want:  usage.Tokens{Input: 70, CachedInput: 40, Output: 50, Reasoning: 20},
			state: gateway.FinalUsage,
		},
		{
			name:  "missing counters are zero (omitempty on the wire)",
			doc:   `{"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}`,
			want:  usage.Tokens{Input: 8},
			state: gateway.FinalUsage,
		},
		{
			name:  "cached above prompt is clamped",
			doc:   `{"usageMetadata":{"promptTokenCount":5,"cachedContentTokenCount":9,"candidatesTokenCount":1}}`,
			want:  usage.Tokens{Input: 0, CachedInput: 5, Output: 1},
			state: gateway.FinalUsage,
		},
		{
			name:  "usageMetadata null",
			doc:   `{"candidates":[],"usageMetadata":null}`,
			state: gateway.NoUsage,
		},
		{
			name:  "usageMetadata without a count (Vertex's trafficType only, or empty) is no usage",
			doc:   `{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"trafficType":"ON_DEMAND","promptTokenCount":null}}`,
			state: gateway.NoUsage,
		},
		{
			name:  "empty usageMetadata",
			doc:   `{"usageMetadata":{}}`,
			state: gateway.NoUsage,
		},
		{
			name:  "no usageMetadata (embeddings)",
			doc:   `{"embeddings":[{"values":[0.1]}]}`,
			state: gateway.NoUsage,
		},
		{
			name:  "recorded generateContent",
			doc:   "@generate-basic.json",
			want:  usage.Tokens{Input: 45, Output: 23},
			state: gateway.FinalUsage,
		},
		{
			name:  "recorded thoughts and tool-use prompt",
			doc:   "@generate-thoughts-tooluse.json",
			want:  usage.Tokens{Input: 32 + 720, Output: 341 + 103, Reasoning: 103},
			state: gateway.FinalUsage,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := []byte(tc.doc)
			if tc.doc[0] == '@' {
				doc = metertest.Testdata(t, tc.doc[1:])
			}
			m := newMeter(t, generatePath, "")
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

func chunk(text, finish, meta string) string {
	fr := ""
	if finish != "" {
		fr = `,"finishReason":"` + finish + `"`
	}
	return `{"candidates":[{"content":{"parts":[{"text":"` + text + `"}],"role":"model"}` + fr + `,"index":0}],"usageMetadata":` + meta + `}`
}

func TestMeterStreamRunningTotals(t *testing.T) {
	chunks := []string{
		chunk("Hello", "", `{"promptTokenCount":8,"totalTokenCount":8}`),
		chunk(" there", "", `{"promptTokenCount":8,"candidatesTokenCount":5,"thoughtsTokenCount":4,"totalTokenCount":17}`),
		chunk("!", "STOP", `{"promptTokenCount":8,"cachedContentTokenCount":2,"candidatesTokenCount":12,"thoughtsTokenCount":4,"toolUsePromptTokenCount":3,"totalTokenCount":27}`),
	}
	final := usage.Tokens{Input: 8 - 2 + 3, CachedInput: 2, Output: 16, Reasoning: 4}
	for _, tc := range []struct {
		name  string
		n     int // chunks delivered
		want  usage.Tokens
		state gateway.Completeness
	}{
		{"first chunk only: partial", 1, usage.Tokens{Input: 8}, gateway.PartialUsage},
		{"two chunks: the latest running total, not the sum", 2, usage.Tokens{Input: 8, Output: 9, Reasoning: 4}, gateway.PartialUsage},
		{"finishReason chunk: final, last total taken", 3, final, gateway.FinalUsage},
	} {
		t.Run("sse/"+tc.name, func(t *testing.T) {
			var stream string
			for _, c := range chunks[:tc.n] {
				stream += "data: " + c + "\r\n\r\n"
			}
			m := newMeter(t, streamPath, streamSSEQuery)
			feedSSE(t, m, []byte(stream))
			if got, state := m.Usage(); got != tc.want || state != tc.state {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
		})
		t.Run("array/"+tc.name, func(t *testing.T) {
			m := newMeter(t, streamPath, "")
			for _, c := range chunks[:tc.n] {
				m.Document([]byte(c))
			}
			if got, state := m.Usage(); got != tc.want || state != tc.state {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
		})
	}

	t.Run("a usage-only chunk after the finish updates the final total", func(t *testing.T) {
		m := newMeter(t, streamPath, streamSSEQuery)
		m.Event(sse.Event{Data: []byte(chunks[2])})
		m.Event(sse.Event{Data: []byte(`{"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":13,"totalTokenCount":21}}`)})
		if got, state := m.Usage(); state != gateway.FinalUsage || got != (usage.Tokens{Input: 8, Output: 13}) {
			t.Errorf("usage = %+v (%v)", got, state)
		}
	})

	t.Run("output chars count the text of the chunks", func(t *testing.T) {
		m := newMeter(t, streamPath, streamSSEQuery)
		for _, c := range chunks {
			m.Event(sse.Event{Data: []byte(c)})
		}
		if m.OutputChars() < int64(len("Hello there!")) {
			t.Errorf("OutputChars = %d", m.OutputChars())
		}
	})
}

// TestMeterModalities: the audio part of uncached input and the image part
// of output, read from the modality arrays, ride along with the counts they
// are parts of (providers.md §4.3, §9).
func TestMeterModalities(t *testing.T) {
	for _, tc := range []struct {
		name, meta string
		want       usage.Tokens
	}{
		{"audio prompt, part of it cached",
			`{"promptTokenCount":1000,"cachedContentTokenCount":300,"candidatesTokenCount":20,
			"promptTokensDetails":[{"modality":"TEXT","tokenCount":400},{"modality":"AUDIO","tokenCount":600}],
			"cacheTokensDetails":[{"modality":"AUDIO","tokenCount":100},{"modality":"TEXT","tokenCount":200}]}`,
			usage.Tokens{Input: 700, CachedInput: 300, Output: 20, AudioInput: 500}},
		{"generated image",
			`{"promptTokenCount":8,"candidatesTokenCount":1300,"thoughtsTokenCount":50,
			"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290},{"modality":"TEXT","tokenCount":10}]}`,
			usage.Tokens{Input: 8, Output: 1350, Reasoning: 50, ImageOutput: 1290}},
		{"modalities as numbers (alt=json;enum-encoding=int): AUDIO 4, IMAGE 2",
			`{"promptTokenCount":1000,"cachedContentTokenCount":300,"candidatesTokenCount":20,
			"promptTokensDetails":[{"modality":1,"tokenCount":400},{"modality":4,"tokenCount":600}],
			"cacheTokensDetails":[{"modality":4,"tokenCount":100},{"modality":1,"tokenCount":200}],
			"candidatesTokensDetails":[{"modality":2,"tokenCount":15},{"modality":3,"tokenCount":5}]}`,
			usage.Tokens{Input: 700, CachedInput: 300, Output: 20, AudioInput: 500, ImageOutput: 15}},
		{"text only", `{"promptTokenCount":8,"candidatesTokenCount":2,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]}`,
			usage.Tokens{Input: 8, Output: 2}},
		{"audio above the uncached input is clamped to it",
			`{"promptTokenCount":10,"cachedContentTokenCount":4,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":99}]}`,
			usage.Tokens{Input: 6, CachedInput: 4, AudioInput: 6}},
		{"image above the candidates is clamped to them (thoughts are never images)",
			`{"promptTokenCount":1,"candidatesTokenCount":5,"thoughtsTokenCount":7,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":99}]}`,
			usage.Tokens{Input: 1, Output: 12, Reasoning: 7, ImageOutput: 5}},
		{"entries of one modality are summed", `{"promptTokenCount":10,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":3},{"modality":"AUDIO","tokenCount":4}]}`,
			usage.Tokens{Input: 10, AudioInput: 7}},
		{"a details array that is not one counts nothing", `{"promptTokenCount":10,"promptTokensDetails":{"modality":"AUDIO","tokenCount":3}}`,
			usage.Tokens{Input: 10}},
		{"negative or odd counts count nothing", `{"promptTokenCount":10,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":-3},{"modality":"AUDIO","tokenCount":"4"},{"modality":"AUDIO"}]}`,
			usage.Tokens{Input: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, generatePath, "")
			m.Document([]byte(`{"candidates":[{"finishReason":"STOP"}],"usageMetadata":` + tc.meta + `}`))
			if got, _ := m.Usage(); got != tc.want {
				t.Errorf("usage = %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("a stream's last running total wins", func(t *testing.T) {
		m := newMeter(t, streamPath, streamSSEQuery)
		m.Event(sse.Event{Data: []byte(chunk("a", "", `{"promptTokenCount":10,"candidatesTokenCount":1,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1}]}`))})
		m.Event(sse.Event{Data: []byte(chunk("b", "STOP", `{"promptTokenCount":10,"candidatesTokenCount":5,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":4}]}`))})
		if got, _ := m.Usage(); got != (usage.Tokens{Input: 10, Output: 5, ImageOutput: 4}) {
			t.Errorf("usage = %+v", got)
		}
	})
}

// TestMeterModalityCredits follows a response from the wire to what it
// costs: audio on gemini-2.5-flash and images on gemini-2.5-flash-image at
// their own rates (1.00 and 30.00 USD/MTok), not the text rate.
func TestMeterModalityCredits(t *testing.T) {
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model, meta string
		want        int64 // micro-credits at 180 credits/USD
	}{
		// 400 text × 0.30 + 600 audio × 1.00 USD/MTok = 0.00072 USD.
		{"gemini-2.5-flash", `{"promptTokenCount":1000,"promptTokensDetails":[{"modality":"TEXT","tokenCount":400},{"modality":"AUDIO","tokenCount":600}]}`, 129_600},
		// The CSV gives gemini-2.0-flash no audio rate: input rate, 0.10.
		{"gemini-2.0-flash", `{"promptTokenCount":1000,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":1000}]}`, 18_000},
		// 10 text × 2.50 + 1,290 image × 30.00 USD/MTok = 0.038725 USD.
		{"gemini-2.5-flash-image", `{"promptTokenCount":0,"candidatesTokenCount":1300,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290},{"modality":"TEXT","tokenCount":10}]}`, 6_970_500},
	} {
		t.Run(tc.model, func(t *testing.T) {
			model, ok := cat.Lookup(catalog.Gemini, tc.model)
			if !ok {
				t.Fatalf("%s is not in the catalog", tc.model)
			}
			m := newMeter(t, generatePath, "")
			m.Document([]byte(`{"usageMetadata":` + tc.meta + `}`))
			u, _ := m.Usage()
			if got := meter.Credits(model.Price, u, meter.DefaultRate); got != tc.want {
				t.Errorf("%+v costs %d micro-credits, want %d", u, got, tc.want)
			}
		})
	}
}

// TestMeterBlockedPrompt: a blocked prompt is answered with one chunk that
// has promptFeedback.blockReason, usage and no candidate. It ends the
// stream, so its usage is final, as the same answer without a stream is.
func TestMeterBlockedPrompt(t *testing.T) {
	const blocked = `{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.5-flash"}`
	want := usage.Tokens{Input: 12}
	for _, tc := range []struct {
		name        string
		path, query string
		feed        func(m gateway.Meter)
	}{
		{"generateContent", generatePath, "", func(m gateway.Meter) { m.Document([]byte(blocked)) }},
		{"sse", streamPath, streamSSEQuery, func(m gateway.Meter) { feedSSE(t, m, []byte("data: "+blocked+"\r\n\r\n")) }},
		{"array", streamPath, "", func(m gateway.Meter) { metertest.FeedArray(t, m, []byte("["+blocked+"]")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, tc.path, tc.query)
			tc.feed(m)
			if got, state := m.Usage(); got != want || state != gateway.FinalUsage {
				t.Errorf("usage = %+v (%v), want %+v final", got, state, want)
			}
		})
	}
	t.Run("blockReason null is not a block", func(t *testing.T) {
		m := newMeter(t, streamPath, streamSSEQuery)
		m.Event(sse.Event{Data: []byte(`{"promptFeedback":{"blockReason":null},"usageMetadata":{"promptTokenCount":12}}`)})
		if _, state := m.Usage(); state != gateway.PartialUsage {
			t.Errorf("completeness = %v, want partial", state)
		}
	})
}

// TestMeterUncountedChars: a running total covers the text of its own chunk
// and every chunk before; only text after the last total is uncounted.
func TestMeterUncountedChars(t *testing.T) {
	withTotal := chunk("Hello", "", `{"promptTokenCount":8,"candidatesTokenCount":2}`)
	noTotal := `{"candidates":[{"content":{"parts":[{"text":"abcdefgh"}],"role":"model"},"index":0}]}`
	for _, tc := range []struct {
		name   string
		chunks []string
		want   int64
	}{
		{"every chunk with a total", []string{withTotal, withTotal}, 0},
		{"text after the last total", []string{withTotal, noTotal}, int64(len(`"abcdefgh"`))},
		{"a total after text without one covers it", []string{noTotal, withTotal}, 0},
		{"no total at all", []string{noTotal}, int64(len(`"abcdefgh"`))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, streamPath, streamSSEQuery)
			for _, c := range tc.chunks {
				m.Event(sse.Event{Data: []byte(c)})
			}
			rt, ok := m.(gateway.RunningTotaler)
			if !ok {
				t.Fatal("the Gemini meter does not report running totals")
			}
			if got := rt.UncountedChars(); got != tc.want {
				t.Errorf("UncountedChars = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestMeterStreamErrors: an error chunk after the 200 makes the request an
// error; the running total before it stands.
func TestMeterStreamErrors(t *testing.T) {
	first := chunk("Hello world partial", "", `{"promptTokenCount":50,"candidatesTokenCount":4,"totalTokenCount":54}`)
	last := chunk("!", "STOP", `{"promptTokenCount":50,"candidatesTokenCount":6,"totalTokenCount":56}`)
	unavailable := `{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}`
	for _, tc := range []struct {
		name   string
		chunks []string
		want   usage.Tokens
		state  gateway.Completeness
		failed bool
	}{
		{"error chunk midway", []string{first, unavailable}, usage.Tokens{Input: 50, Output: 4}, gateway.PartialUsage, true},
		{"error chunk first", []string{unavailable}, usage.Tokens{}, gateway.NoUsage, true},
		{"error null is no error", []string{first, `{"error":null}`}, usage.Tokens{Input: 50, Output: 4}, gateway.PartialUsage, false},
		{"a stream that ends well", []string{first, last}, usage.Tokens{Input: 50, Output: 6}, gateway.FinalUsage, false},
	} {
		t.Run("sse/"+tc.name, func(t *testing.T) {
			var stream string
			for _, c := range tc.chunks {
				stream += "data: " + c + "\r\n\r\n"
			}
			m := newMeter(t, streamPath, streamSSEQuery)
			feedSSE(t, m, []byte(stream))
			if got, state := m.Usage(); got != tc.want || state != tc.state {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
			if f := gateway.MeterFailed(m); f != tc.failed {
				t.Errorf("failed = %v, want %v", f, tc.failed)
			}
		})
		t.Run("array/"+tc.name, func(t *testing.T) {
			m := newMeter(t, streamPath, "")
			metertest.FeedArray(t, m, []byte("["+strings.Join(tc.chunks, ",")+"]"))
			if got, state := m.Usage(); got != tc.want || state != tc.state {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
			if f := gateway.MeterFailed(m); f != tc.failed {
				t.Errorf("failed = %v, want %v", f, tc.failed)
			}
		})
	}
}

func TestMeterRecordedStreams(t *testing.T) {
	t.Run("alt=sse with thoughts", func(t *testing.T) {
		m := newMeter(t, streamPath, streamSSEQuery)
		feedSSE(t, m, metertest.Testdata(t, "stream-reasoning.sse"))
		want := usage.Tokens{Input: 11, Output: 703 + 713, Reasoning: 713}
		if got, state := m.Usage(); got != want || state != gateway.FinalUsage {
			t.Errorf("usage = %+v (%v), want %+v final", got, state, want)
		}
	})
	t.Run("JSON array", func(t *testing.T) {
		m := newMeter(t, streamPath, "")
		metertest.FeedArray(t, m, metertest.Testdata(t, "stream-array.json"))
		want := usage.Tokens{Input: 11, Output: 2 + 291, Reasoning: 291}
		if got, state := m.Usage(); got != want || state != gateway.FinalUsage {
			t.Errorf("usage = %+v (%v), want %+v final", got, state, want)
		}
	})
}

// TestMeterNeverNegative: negative or overflowing counts from upstream must
// not reach the ledger as negative numbers (a credit).
func TestMeterNeverNegative(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"negative prompt", `{"usageMetadata":{"promptTokenCount":-5,"candidatesTokenCount":3}}`},
		{"negative candidates", `{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":-3}}`},
		{"negative thoughts", `{"usageMetadata":{"promptTokenCount":5,"thoughtsTokenCount":-3}}`},
		{"negative tool-use prompt", `{"usageMetadata":{"promptTokenCount":5,"toolUsePromptTokenCount":-9}}`},
		{"output sum overflows", `{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":9223372036854775807,"thoughtsTokenCount":1}}`},
		{"input sum overflows", `{"usageMetadata":{"promptTokenCount":9223372036854775807,"toolUsePromptTokenCount":1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, generatePath, "")
			m.Document([]byte(tc.doc))
			if got, _ := m.Usage(); metertest.Negative(got) {
				t.Errorf("usage = %+v has a negative kind", got)
			}
		})
	}
}
