package mockprovider

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

const gemTools = `"tools":[{"functionDeclarations":[{"name":"get_weather","parameters":{"type":"OBJECT","properties":{"city":{"type":"STRING"},"unit":{"type":"STRING","enum":["C","F"]}},"required":["city","unit"]}}]}]`

func gemBody(text, extra string) string {
	b := `{"contents":[{"role":"user","parts":[{"text":` + string(marshal(text)) + `}]}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

// gemUsage checks usageMetadata arithmetic and reads it in gateway terms.
func gemUsage(t *testing.T, u any) usage.Tokens {
	t.Helper()
	z := func(k string) int64 { return max(num(get(u, k)), 0) }
	prompt, cached, cand, tool, thoughts, total := z("promptTokenCount"), z("cachedContentTokenCount"), z("candidatesTokenCount"), z("toolUsePromptTokenCount"), z("thoughtsTokenCount"), z("totalTokenCount")
	if !has(u, "promptTokenCount") || total != prompt+cand+tool+thoughts || cached > prompt {
		t.Fatalf("inconsistent usageMetadata %v", u)
	}
	return usage.Tokens{Input: prompt - cached + tool, CachedInput: cached, Output: cand + thoughts, Reasoning: thoughts}
}

func TestGeminiGenerate(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name   string
		path   string
		body   string
		status int
		check  func(t *testing.T, m map[string]any, r resp, s Served)
	}{
		{"plain", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", gemBody("hi [[mock reply=Hello <b>Gemini</b>]]", ""), 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "candidates", 0, "content", "parts", 0, "text") != "Hello <b>Gemini</b>" || get(m, "candidates", 0, "finishReason") != "STOP" ||
				get(m, "candidates", 0, "content", "role") != "model" || get(m, "modelVersion") != "gemini-2.5-flash" {
				t.Fatalf("%s", r.body)
			}
			if !bytes.Contains(r.body, []byte(`\u003cb\u003e`)) || !bytes.HasPrefix(r.body, []byte("{\n  \"candidates\"")) {
				t.Fatalf("not Google-formatted: %s", r.body)
			}
			wantUsage(t, s.Usage, gemUsage(t, get(m, "usageMetadata")))
			if s.Model != "gemini-2.5-flash" || s.Endpoint != "generateContent" || s.Usage.Output != 2 ||
				!reflect.DeepEqual(mustJSON(t, string(s.Native)), get(m, "usageMetadata")) {
				t.Fatalf("%+v", s)
			}
		}},
		{"v1 path and usage directive", "/gemini/v1/models/gemini-2.5-pro:generateContent", gemBody("[[mock usage input=100 cached=60 output=30 reasoning=12 tool_prompt=9]]", ""), 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			u := get(m, "usageMetadata")
			if num(get(u, "promptTokenCount")) != 160 || num(get(u, "candidatesTokenCount")) != 18 || num(get(u, "thoughtsTokenCount")) != 12 ||
				num(get(u, "toolUsePromptTokenCount")) != 9 || num(get(u, "totalTokenCount")) != 199 {
				t.Fatalf("%v", u)
			}
			want := usage.Tokens{Input: 109, CachedInput: 60, Output: 30, Reasoning: 12}
			wantUsage(t, gemUsage(t, u), want)
			wantUsage(t, s.Usage, want)
		}},
		{"tool", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", gemBody("[[mock tool]]", gemTools), 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			fc := get(m, "candidates", 0, "content", "parts", 0, "functionCall")
			if get(fc, "name") != "get_weather" || get(fc, "args", "city") != "example" || get(fc, "args", "unit") != "C" {
				t.Fatalf("%s", r.body)
			}
		}},
		{"no_usage", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", gemBody("[[mock no_usage]]", ""), 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if has(m, "usageMetadata") || !s.NoUsageOnWire {
				t.Fatalf("%s", r.body)
			}
		}},
		{"429", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", gemBody("[[mock error=429]]", ""), 429, func(t *testing.T, m map[string]any, r resp, s Served) {
			if num(get(m, "error", "code")) != 429 || get(m, "error", "status") != "RESOURCE_EXHAUSTED" ||
				get(m, "error", "details", 0, "@type") != "type.googleapis.com/google.rpc.RetryInfo" {
				t.Fatalf("%s", r.body)
			}
		}},
		{"503", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", gemBody("[[mock error=503]]", ""), 503, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "error", "status") != "UNAVAILABLE" {
				t.Fatalf("%s", r.body)
			}
		}},
		{"count tokens", "/gemini/v1beta/models/gemini-2.5-flash:countTokens", gemBody("[[mock usage input=20 cached=4]]", ""), 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if num(get(m, "totalTokens")) != 24 || !s.Usage.IsZero() || s.Endpoint != "countTokens" {
				t.Fatalf("%s", r.body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(tc.path, tc.body)
			if r.status != tc.status || r.header.Get("Content-Type") != "application/json; charset=UTF-8" {
				t.Fatalf("%d %v %s", r.status, r.header, r.body)
			}
			tc.check(t, mustJSON(t, string(r.body)), r, e.last("/gemini"))
		})
	}
}

// gemChunks reads a Gemini stream, SSE or JSON array, into its elements.
func gemChunks(t *testing.T, r resp, sse bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	if sse {
		if r.header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("content-type %q", r.header.Get("Content-Type"))
		}
		if bytes.Contains(bytes.ReplaceAll(r.body, []byte("\r\n\r\n"), nil), []byte("\n")) {
			t.Fatalf("Gemini SSE must use \\r\\n\\r\\n separators only: %q", r.body)
		}
		for _, ev := range parseSSE(t, r.body, "\r\n\r\n") {
			if ev.event != "" || len(ev.lines) != 1 {
				t.Fatalf("Gemini SSE must be single data: lines: %v", ev.lines)
			}
			out = append(out, mustJSON(t, ev.data))
		}
		return out
	}
	if r.header.Get("Content-Type") != "application/json; charset=UTF-8" {
		t.Fatalf("content-type %q", r.header.Get("Content-Type"))
	}
	if !bytes.HasPrefix(r.body, []byte("[{\n")) || !bytes.HasSuffix(r.body, []byte("}\n]")) {
		t.Fatalf("array framing: %q", r.body)
	}
	d := json.NewDecoder(bytes.NewReader(r.body))
	d.UseNumber()
	if tok, err := d.Token(); err != nil || tok != json.Delim('[') {
		t.Fatalf("%v %v", tok, err)
	}
	for d.More() {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if tok, err := d.Token(); err != nil || tok != json.Delim(']') {
		t.Fatalf("%v %v", tok, err)
	}
	if _, err := d.Token(); err != io.EOF {
		t.Fatalf("trailing data: %v", err)
	}
	return out
}

func TestGeminiStream(t *testing.T) {
	e := newEnv(t, Options{})
	for _, sse := range []bool{true, false} {
		path := "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
		name := "array"
		if sse {
			path += "?alt=sse"
			name = "sse"
		}
		t.Run(name, func(t *testing.T) {
			t.Run("text", func(t *testing.T) {
				r := e.post(path, gemBody("[[mock reply=one two three four five]] [[mock chunks=3]] [[mock usage reasoning=4 cached=2]]", ""))
				chunks := gemChunks(t, r, sse)
				if len(chunks) != 3 {
					t.Fatalf("%d chunks", len(chunks))
				}
				text := ""
				var prev int64 = -1
				for i, ch := range chunks {
					text += get(ch, "candidates", 0, "content", "parts", 0, "text").(string)
					u := gemUsage(t, get(ch, "usageMetadata"))
					if u.Output < prev {
						t.Fatal("running total went down")
					}
					prev = u.Output
					if (get(ch, "candidates", 0, "finishReason") == "STOP") != (i == len(chunks)-1) {
						t.Fatalf("finishReason at %d", i)
					}
				}
				s := e.last("/gemini")
				final := gemUsage(t, get(chunks[len(chunks)-1], "usageMetadata"))
				wantUsage(t, s.Usage, final)
				if text != "one two three four five" || final.Output != 9 || final.Reasoning != 4 || final.CachedInput != 2 || !s.Stream {
					t.Fatalf("%q %+v", text, final)
				}
				if !reflect.DeepEqual(mustJSON(t, string(s.Native)), get(chunks[len(chunks)-1], "usageMetadata")) {
					t.Fatalf("native %s", s.Native)
				}
			})
			t.Run("tool", func(t *testing.T) {
				chunks := gemChunks(t, e.post(path, gemBody("[[mock tool]]", gemTools)), sse)
				fc := get(chunks[len(chunks)-1], "candidates", 0, "content", "parts", 0, "functionCall")
				if get(fc, "name") != "get_weather" {
					t.Fatalf("%v", chunks)
				}
				wantUsage(t, e.last("/gemini").Usage, gemUsage(t, get(chunks[len(chunks)-1], "usageMetadata")))
			})
			t.Run("no_usage", func(t *testing.T) {
				for _, ch := range gemChunks(t, e.post(path, gemBody("[[mock no_usage]]", "")), sse) {
					if has(ch, "usageMetadata") {
						t.Fatal("usageMetadata present")
					}
				}
				if s := e.last("/gemini"); !s.NoUsageOnWire || s.Usage.IsZero() {
					t.Fatalf("%+v", s)
				}
			})
			t.Run("midstream_error", func(t *testing.T) {
				chunks := gemChunks(t, e.post(path, gemBody("[[mock midstream_error]] [[mock reply=a b c d]]", "")), sse)
				last := chunks[len(chunks)-1]
				if num(get(last, "error", "code")) != 503 || get(last, "error", "status") != "UNAVAILABLE" || len(chunks) != 3 {
					t.Fatalf("%v", chunks)
				}
				s := e.last("/gemini")
				wantUsage(t, s.Usage, gemUsage(t, get(chunks[len(chunks)-2], "usageMetadata")))
				if !s.MidstreamError || s.Usage.Output != 2 {
					t.Fatalf("%+v", s)
				}
			})
		})
	}
}

func TestGeminiEmbedAndModels(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.post("/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents",
		`{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"Some text goes here"}]},"outputDimensionality":768},{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"x"}]}}]}`)
	m := mustJSON(t, string(r.body))
	if r.status != 200 || len(get(m, "embeddings", 0, "values").([]any)) != 768 || len(get(m, "embeddings", 1, "values").([]any)) != 3072 {
		t.Fatalf("%d", r.status)
	}
	s := e.last("/gemini")
	if !s.NoUsageOnWire || s.Usage.Input != estimate(len("Some text goes here"))+1 || s.Native != nil {
		t.Fatalf("%+v", s.Usage)
	}
	r = e.post("/gemini/v1beta/models/text-embedding-004:embedContent", `{"content":{"parts":[{"text":"hello"}]}}`)
	if len(get(mustJSON(t, string(r.body)), "embedding", "values").([]any)) != 768 {
		t.Fatalf("%s", r.body[:100])
	}
	r = e.do("GET", "/gemini/v1beta/models", "")
	if !strings.HasPrefix(get(mustJSON(t, string(r.body)), "models", 0, "name").(string), "models/") {
		t.Fatalf("%s", r.body)
	}
	r = e.do("GET", "/gemini/v1beta/models/gemini-2.5-flash", "")
	if get(mustJSON(t, string(r.body)), "name") != "models/gemini-2.5-flash" {
		t.Fatalf("%s", r.body)
	}
	if r := e.post("/gemini/v1beta/models/gemini-2.5-flash:batchGenerateContent", `{}`); r.status != 404 {
		t.Fatal(r.status)
	}
}
