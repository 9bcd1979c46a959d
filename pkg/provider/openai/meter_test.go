package openai_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/internal/metertest"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// route returns the route the provider makes of a real request line, so the
// meters are tested as the gateway builds them.
func route(t testing.TB, path string) gateway.Route {
	t.Helper()
	r, f := openai.New().Match(http.MethodPost, path, "")
	if f != nil {
		t.Fatalf("Match(%s): %v", path, f)
	}
	return r
}

func newMeter(t testing.TB, path string, hide bool) gateway.Meter {
	t.Helper()
	return openai.New().NewMeter(route(t, path), gateway.Rewritten{HideUsage: hide})
}

const (
	chatPath      = "/v1/chat/completions"
	responsesPath = "/v1/responses"
)

// feedSSE decodes stream and hands every event to m, returning the raw
// data of the events m dropped.

func TestMeterDocument(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		doc   string
		want  usage.Tokens
		state gateway.Completeness
	}{
		{
			name: "chat cached is a subset of prompt, reasoning a subset of completion",
			path: chatPath,
			doc: `{"id":"c","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
				"prompt_tokens_details":{"cached_tokens":30},"completion_tokens_details":{"reasoning_tokens":20}}}`,
			want:  usage.Tokens{Input: 70, CachedInput: 30, Output: 50, Reasoning: 20},
			state: gateway.FinalUsage,
		},
		{
			name: "responses input/output names and details",
			path: responsesPath,
			doc: `{"id":"resp","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":6},
				"output_tokens":87,"output_tokens_details":{"reasoning_tokens":7},"total_tokens":123}}`,
			want:  usage.Tokens{Input: 30, CachedInput: 6, Output: 87, Reasoning: 7},
			state: gateway.FinalUsage,
		},
		{
			name: "chat cache writes are a part of the prompt of their own",
			path: chatPath,
			doc: `{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":10,"total_tokens":1010,
				"prompt_tokens_details":{"cached_tokens":300,"cache_write_tokens":200},"completion_tokens_details":{"reasoning_tokens":0}}}`,
			want:  usage.Tokens{Input: 500, CachedInput: 300, CacheWrite: 200, Output: 10},
			state: gateway.FinalUsage,
		},
		{
			name: "responses cache writes, with their TTL breakdown",
			path: responsesPath,
			doc: `{"id":"resp","usage":{"input_tokens":1000,"input_tokens_details":{"cached_tokens":300,"cache_write_tokens":50,
				"cache_write_tokens_details":{"ttl_30m_tokens":50,"ttl_12h_tokens":0}},
				"output_tokens":200,"output_tokens_details":{"reasoning_tokens":120},"total_tokens":1200}}`,
			want:  usage.Tokens{Input: 650, CachedInput: 300, CacheWrite: 50, Output: 200, Reasoning: 120},
			state: gateway.FinalUsage,
		},
		{
			name:  "cache writes above the uncached prompt are clamped to it",
			path:  chatPath,
			doc:   `{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":25}}}`,
			want:  usage.Tokens{Input: 0, CachedInput: 4, CacheWrite: 6, Output: 1},
			state: gateway.FinalUsage,
		},
		{
			name:  "cached above prompt is clamped to the prompt",
			path:  chatPath,
			doc:   `{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":25}}}`,
			want:  usage.Tokens{Input: 0, CachedInput: 10, Output: 1},
			state: gateway.FinalUsage,
		},
		{
			// gpt-4o-audio / gpt-audio bill audio input above text: the
			// audio part of the uncached input is priced apart.
			name: "chat audio input is a part of the input",
			path: chatPath,
			doc: `{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":40,"total_tokens":160,
				"prompt_tokens_details":{"cached_tokens":20,"audio_tokens":70},"completion_tokens_details":{"audio_tokens":30}}}`,
			want:  usage.Tokens{Input: 100, CachedInput: 20, Output: 40, AudioInput: 70},
			state: gateway.FinalUsage,
		},
		{
			name:  "chat audio above the uncached input is clamped to it",
			path:  chatPath,
			doc:   `{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":9}}}`,
			want:  usage.Tokens{Input: 6, CachedInput: 4, Output: 1, AudioInput: 6},
			state: gateway.FinalUsage,
		},
		{
			name:  "details missing count as zero",
			path:  chatPath,
			doc:   `{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
			want:  usage.Tokens{Input: 5, Output: 2},
			state: gateway.FinalUsage,
		},
		{
			name:  "embeddings usage has prompt tokens only",
			path:  "/v1/embeddings",
			doc:   `{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`,
			want:  usage.Tokens{Input: 8},
			state: gateway.FinalUsage,
		},
		{
			name:  "usage null is no usage",
			path:  responsesPath,
			doc:   `{"id":"resp","usage":null}`,
			state: gateway.NoUsage,
		},
		{
			name:  "no usage key",
			path:  chatPath,
			doc:   `{"id":"c","choices":[]}`,
			state: gateway.NoUsage,
		},
		{
			name:  "usage object without any count",
			path:  chatPath,
			doc:   `{"usage":{"total_tokens":9}}`,
			state: gateway.NoUsage,
		},
		{
			name:  "usage nested deeper is not the response's usage",
			path:  chatPath,
			doc:   `{"choices":[{"message":{"content":"x","usage":{"prompt_tokens":99}}}]}`,
			state: gateway.NoUsage,
		},
		{
			name:  "truncated document is not read",
			path:  chatPath,
			doc:   `{"usage":{"prompt_tokens":10,"completion_tokens":5}`,
			state: gateway.NoUsage,
		},
		{
			name: "recorded chat (reasoning 320 of 377)", path: chatPath,
			doc:   "@chat-basic.json",
			want:  usage.Tokens{Input: 8, Output: 377, Reasoning: 320},
			state: gateway.FinalUsage,
		},
		{
			name: "recorded chat with a cache hit", path: chatPath,
			doc:   "@chat-cached.json",
			want:  usage.Tokens{Input: 1149 - 1024, CachedInput: 1024, Output: 353},
			state: gateway.FinalUsage,
		},
		{
			name: "recorded responses", path: responsesPath,
			doc:   "@responses-basic.json",
			want:  usage.Tokens{Input: 22, Output: 6},
			state: gateway.FinalUsage,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := []byte(tc.doc)
			if tc.doc[0] == '@' {
				doc = metertest.Testdata(t, tc.doc[1:])
			}
			m := newMeter(t, tc.path, false)
			m.Document(doc)
			got, state := m.Usage()
			if state != tc.state {
				t.Errorf("completeness = %v, want %v", state, tc.state)
			}
			if tc.state != gateway.NoUsage && got != tc.want {
				t.Errorf("usage = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMeterChatStream(t *testing.T) {
	const usageChunk = `{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}`
	stream := "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello!\"},\"finish_reason\":null}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
		"data: " + usageChunk + "\n\n" +
		"data: [DONE]\n\n"
	want := usage.Tokens{Input: 15, CachedInput: 4, Output: 2, Reasoning: 1}

	for _, tc := range []struct {
		name     string
		hide     bool
		wantDrop []string
	}{
		{"client asked for usage: nothing dropped", false, nil},
		{"gateway asked for usage: the usage chunk is dropped", true, []string{usageChunk}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, chatPath, tc.hide)
			dropped := metertest.FeedSSE(t, m, []byte(stream))
			if len(dropped) != len(tc.wantDrop) || len(dropped) == 1 && dropped[0] != tc.wantDrop[0] {
				t.Errorf("dropped %q, want %q", dropped, tc.wantDrop)
			}
			got, state := m.Usage()
			if state != gateway.FinalUsage || got != want {
				t.Errorf("usage = %+v (%v), want %+v final", got, state, want)
			}
			if c := m.OutputChars(); c == 0 {
				t.Errorf("OutputChars = 0, want the delta text counted")
			}
		})
	}

	t.Run("a usage chunk that still has choices is never dropped", func(t *testing.T) {
		m := newMeter(t, chatPath, true)
		ev := `{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`
		if m.Event(sse.Event{Data: []byte(ev)}) {
			t.Error("dropped a chunk carrying choices")
		}
		if got, _ := m.Usage(); got != (usage.Tokens{Input: 3, Output: 1}) {
			t.Errorf("usage = %+v", got)
		}
	})
}

func TestMeterRecordedStreams(t *testing.T) {
	for _, tc := range []struct {
		file  string
		path  string
		hide  bool
		want  usage.Tokens
		state gateway.Completeness
		drops int
	}{
		{"chat-stream-usage.sse", chatPath, false, usage.Tokens{Input: 12, Output: 100, Reasoning: 100}, gateway.FinalUsage, 0},
		{"chat-stream-usage.sse", chatPath, true, usage.Tokens{Input: 12, Output: 100, Reasoning: 100}, gateway.FinalUsage, 1},
		{"chat-stream-no-usage.sse", chatPath, false, usage.Tokens{}, gateway.NoUsage, 0},
		{"responses-stream.sse", responsesPath, false, usage.Tokens{Input: 22, Output: 6}, gateway.FinalUsage, 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			m := newMeter(t, tc.path, tc.hide)
			dropped := metertest.FeedSSE(t, m, metertest.Testdata(t, tc.file))
			if len(dropped) != tc.drops {
				t.Errorf("dropped %d events, want %d", len(dropped), tc.drops)
			}
			got, state := m.Usage()
			if state != tc.state || got != tc.want {
				t.Errorf("usage = %+v (%v), want %+v (%v)", got, state, tc.want, tc.state)
			}
			if m.OutputChars() == 0 {
				t.Error("OutputChars = 0: a stream without usage could not be estimated")
			}
		})
	}
}

func TestMeterResponsesEvents(t *testing.T) {
	const u = `"usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":10},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":3}}`
	want := usage.Tokens{Input: 30, CachedInput: 10, Output: 9, Reasoning: 3}
	for _, tc := range []struct {
		name  string
		ev    sse.Event
		state gateway.Completeness
	}{
		{"completed, named by the event line", sse.Event{Name: "response.completed", Data: []byte(`{"response":{` + u + `}}`)}, gateway.FinalUsage},
		{"completed, named only by type", sse.Event{Data: []byte(`{"type":"response.completed","response":{` + u + `}}`)}, gateway.FinalUsage},
		{"incomplete (max_output_tokens)", sse.Event{Name: "response.incomplete", Data: []byte(`{"type":"response.incomplete","response":{` + u + `}}`)}, gateway.FinalUsage},
		{"failed", sse.Event{Name: "response.failed", Data: []byte(`{"type":"response.failed","response":{` + u + `}}`)}, gateway.FinalUsage},
		{"created carries usage null", sse.Event{Name: "response.created", Data: []byte(`{"type":"response.created","response":{"usage":null}}`)}, gateway.NoUsage},
		{"usage on an unrelated event is ignored", sse.Event{Name: "response.in_progress", Data: []byte(`{"type":"response.in_progress","response":{` + u + `}}`)}, gateway.NoUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, responsesPath, false)
			if m.Event(tc.ev) {
				t.Error("a Responses event was dropped")
			}
			got, state := m.Usage()
			if state != tc.state {
				t.Fatalf("completeness = %v, want %v", state, tc.state)
			}
			if state == gateway.FinalUsage && got != want {
				t.Errorf("usage = %+v, want %+v", got, want)
			}
		})
	}
}

// TestMeterStreamErrors: an error reported inside a stream after the 200
// (a chat chunk with a top-level error, Responses' response.failed or
// error event) makes the request an error, keeping any usage it sent.
func TestMeterStreamErrors(t *testing.T) {
	const (
		chunk = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello world\"},\"finish_reason\":null}]}\n\n"
		u     = `"usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":10},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":3}}`
	)
	for _, tc := range []struct {
		name   string
		path   string
		stream string
		want   usage.Tokens
		state  gateway.Completeness
		failed bool
	}{
		{"chat error chunk midway", chatPath,
			chunk + "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
			usage.Tokens{}, gateway.NoUsage, true},
		{"chat error null is no error", chatPath,
			"data: {\"choices\":[],\"error\":null,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
			usage.Tokens{Input: 3, Output: 1}, gateway.FinalUsage, false},
		{"chat stream that ends well", chatPath, chunk + "data: [DONE]\n\n", usage.Tokens{}, gateway.NoUsage, false},
		{"responses failed, with its usage", responsesPath,
			"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\"," + u + "}}\n\n",
			usage.Tokens{Input: 30, CachedInput: 10, Output: 9, Reasoning: 3}, gateway.FinalUsage, true},
		{"responses failed, named only by type", responsesPath,
			"data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"usage\":null}}\n\n",
			usage.Tokens{}, gateway.NoUsage, true},
		{"responses error event", responsesPath,
			"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error\"}\n\n",
			usage.Tokens{}, gateway.NoUsage, true},
		{"responses incomplete is not a failure", responsesPath,
			"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\"," + u + "}}\n\n",
			usage.Tokens{Input: 30, CachedInput: 10, Output: 9, Reasoning: 3}, gateway.FinalUsage, false},
		{"responses completed", responsesPath, "@responses-stream.sse", usage.Tokens{Input: 22, Output: 6}, gateway.FinalUsage, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := []byte(tc.stream)
			if tc.stream[0] == '@' {
				stream = metertest.Testdata(t, tc.stream[1:])
			}
			m := newMeter(t, tc.path, false)
			metertest.FeedSSE(t, m, stream)
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

// TestMeterNeverNegative: whatever numbers upstream writes, the meter must
// not hand the ledger a negative count (a negative count is a credit).
func TestMeterNeverNegative(t *testing.T) {
	for _, tc := range []struct{ name, path, doc string }{
		{"negative prompt", chatPath, `{"usage":{"prompt_tokens":-5,"completion_tokens":3}}`},
		{"negative completion", chatPath, `{"usage":{"prompt_tokens":5,"completion_tokens":-3}}`},
		{"negative reasoning", chatPath, `{"usage":{"prompt_tokens":5,"completion_tokens":3,"completion_tokens_details":{"reasoning_tokens":-1}}}`},
		{"negative responses input", responsesPath, `{"usage":{"input_tokens":-1,"output_tokens":0}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter(t, tc.path, false)
			m.Document([]byte(tc.doc))
			got, _ := m.Usage()
			if metertest.Negative(got) {
				t.Errorf("usage = %+v has a negative kind", got)
			}
		})
	}
}
