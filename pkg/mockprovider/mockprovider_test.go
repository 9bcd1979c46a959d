package mockprovider

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDeterminism(t *testing.T) {
	reqs := []struct{ path, body string }{
		{"/openai/v1/chat/completions", chatBody("hello", "")},
		{"/openai/v1/chat/completions", chatBody("hello [[mock tool]]", `"stream":true,"stream_options":{"include_usage":true},`+weatherToolChat)},
		{"/openai/v1/responses", `{"model":"gpt-4o-mini","input":"hello","stream":true}`},
		{"/openai/v1/embeddings", `{"model":"text-embedding-3-small","input":"hello","encoding_format":"base64"}`},
		{"/anthropic/v1/messages", anthBody("hello", `"stream":true`)},
		{"/anthropic/v1/messages", anthBody("hello", "")},
		{"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", gemBody("hello", "")},
		{"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", gemBody("hello", "")},
		{"/gemini/v1beta/models/gemini-2.5-flash:generateContent", gemBody("hello", "")},
	}
	a, b := newEnv(t, Options{}), newEnv(t, Options{}) // two independent servers
	for _, rq := range reqs {
		r1 := a.post(rq.path, rq.body)
		r2 := a.post(rq.path, rq.body)
		r3 := b.post(rq.path, rq.body)
		if r1.status != 200 || !bytes.Equal(r1.body, r2.body) || !bytes.Equal(r1.body, r3.body) {
			t.Fatalf("%s: responses differ\n%s\n---\n%s", rq.path, r1.body, r3.body)
		}
		for _, h := range []string{"X-Request-Id", "Request-Id"} {
			if r1.header.Get(h) != r3.header.Get(h) {
				t.Fatalf("%s header differs", h)
			}
		}
	}
	// A different request gives different ids.
	x := a.post("/openai/v1/chat/completions", chatBody("hello!", ""))
	y := a.post("/openai/v1/chat/completions", chatBody("hello", ""))
	if get(mustJSON(t, string(x.body)), "id") == get(mustJSON(t, string(y.body)), "id") {
		t.Fatal("different requests share an id")
	}
	// Created is configurable.
	c := newEnv(t, Options{Created: 42})
	if num(get(mustJSON(t, string(c.post("/openai/v1/chat/completions", chatBody("x", "")).body)), "created")) != 42 {
		t.Fatal("Options.Created ignored")
	}
}

// TestCancellation: a client that goes away mid-stream stops the handler
// promptly and the record says Aborted.
func TestCancellation(t *testing.T) {
	for _, tc := range []struct{ name, path, body string }{
		{"openai", "/openai/v1/chat/completions", chatBody("[[mock chunks=50]]", `"stream":true`)},
		{"responses", "/openai/v1/responses", `{"model":"m","stream":true,"input":"[[mock chunks=50]]"}`},
		{"anthropic", "/anthropic/v1/messages", anthBody("[[mock chunks=50]]", `"stream":true`)},
		{"gemini-sse", "/gemini/v1beta/models/g:streamGenerateContent?alt=sse", gemBody("[[mock chunks=50]]", "")},
		{"gemini-array", "/gemini/v1beta/models/g:streamGenerateContent", gemBody("[[mock chunks=50]]", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := NewServers(Options{ChunkDelay: 200 * time.Millisecond})
			done := make(chan struct{}, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				all.ServeHTTP(w, r)
				done <- struct{}{}
			}))
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Anthropic-Version", "2023-06-01")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			// Read the first bytes: the stream has started.
			if _, err := bufio.NewReader(res.Body).ReadByte(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			cancel()
			res.Body.Close()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("handler still running 2s after the client went away")
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("handler took %v to stop", d)
			}
			var s Served
			var ok bool
			for _, srv := range []*Server{all.OpenAI, all.Anthropic, all.Gemini} {
				if r, found := srv.Last(); found {
					s, ok = r, true
				}
			}
			if !ok || !s.Aborted || !s.Stream {
				t.Fatalf("record %+v", s)
			}
		})
	}
}

func TestChunkDelayAndFlush(t *testing.T) {
	all := NewServers(Options{ChunkDelay: 30 * time.Millisecond})
	srv := httptest.NewServer(all)
	defer srv.Close()
	res, err := http.Post(srv.URL+"/openai/v1/chat/completions", "application/json",
		strings.NewReader(chatBody("[[mock chunks=4]]", `"stream":true`)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	// Events arrive one by one, spaced by the delay.
	sc := bufio.NewScanner(res.Body)
	var times []time.Time
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			times = append(times, time.Now())
		}
	}
	if len(times) != 1+4+1+1 {
		t.Fatalf("%d events", len(times))
	}
	if total := times[len(times)-1].Sub(times[0]); total < 5*30*time.Millisecond {
		t.Fatalf("events not spaced: %v", total)
	}
	if s, _ := all.OpenAI.Last(); s.Aborted {
		t.Fatal("complete stream marked aborted")
	}
}

func TestLatencyAndAPIKey(t *testing.T) {
	e := newEnv(t, Options{APIKey: "k", Latency: 20 * time.Millisecond})
	start := time.Now()
	if r := e.post("/openai/v1/chat/completions", chatBody("x", ""), "Authorization", "Bearer k"); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("latency ignored")
	}
	if r := e.post("/openai/v1/chat/completions", chatBody("x", ""), "Authorization", "Bearer nope"); r.status != 401 ||
		get(mustJSON(t, string(r.body)), "error", "code") != "invalid_api_key" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.post("/anthropic/v1/messages", anthBody("x", ""), "X-Api-Key", "k"); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.post("/anthropic/v1/messages", anthBody("x", "")); r.status != 401 ||
		get(mustJSON(t, string(r.body)), "error", "type") != "authentication_error" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.post("/gemini/v1beta/models/g:generateContent?key=k", gemBody("x", "")); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.post("/gemini/v1beta/models/g:generateContent", gemBody("x", ""), "X-Goog-Api-Key", "bad"); r.status != 400 ||
		get(mustJSON(t, string(r.body)), "error", "details", 0, "reason") != "API_KEY_INVALID" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestMuxAndLog(t *testing.T) {
	e := newEnv(t, Options{})
	e.post("/openai/v1/chat/completions", chatBody("x", ""), "X-Custom", "yes")
	s := e.last("/openai")
	if s.Path != "/v1/chat/completions" || s.Header.Get("X-Custom") != "yes" || s.Provider != "openai" {
		t.Fatalf("%+v", s)
	}
	if r := e.post("/other/v1/chat/completions", "{}"); r.status != 404 {
		t.Fatal(r.status)
	}
	// Concurrent use is safe (run with -race).
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.post("/anthropic/v1/messages", anthBody(strings.Repeat("y", i), `"stream":true`))
			_ = e.all.Anthropic.Served()
		}()
	}
	wg.Wait()
	if n := len(e.all.Anthropic.Served()); n != 20 {
		t.Fatalf("%d records", n)
	}
	e.all.Reset()
	if len(e.all.Anthropic.Served()) != 0 || len(e.all.OpenAI.Served()) != 0 {
		t.Fatal("Reset")
	}
}

func TestParseDirectives(t *testing.T) {
	d := parseDirectives(`a [[mock error=429 retry_after=3]] b [[mock usage input=1 cached=2 cache_write=3 output=4 reasoning=5 tool_prompt=6]] [[mock tool]] [[mock chunks=7]] [[mock no_usage]] [[mock midstream_error]] [[mock reply=Hello [x], "world"!]]`)
	if d.errStatus != 429 || d.retryAfter != "3" || !d.tool || d.chunks != 7 || !d.noUsage || !d.midstream {
		t.Fatalf("%+v", d)
	}
	if *d.input != 1 || *d.cached != 2 || *d.cacheWrite != 3 || *d.output != 4 || *d.reasoning != 5 || *d.toolPrompt != 6 {
		t.Fatalf("%+v", d)
	}
	if *d.reply != `Hello [x], "world"!` {
		t.Fatalf("reply %q", *d.reply)
	}
	if d := parseDirectives(`[[mock error=200]] [[mock reply="quoted"]] [[mocked]]`); d.errStatus != 0 || *d.reply != "quoted" {
		t.Fatalf("%+v", d)
	}
	if d := parseDirectives(`[[mock reply=]]`); d.reply == nil || *d.reply != "" {
		t.Fatal("empty reply")
	}
	k := resolveCounts(parseDirectives("[[mock reasoning=5]]"), "openai", 10, 3)
	if k.output != 8 || k.reasoning != 5 || k.input != 10 {
		t.Fatalf("%+v", k)
	}
}

func TestSplitText(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want int
	}{
		{"a b c d e", 0, 5}, {"a b c d e", 2, 2}, {"a b c d e", 5, 5}, {"ab", 5, 2}, {"", 3, 0}, {"héllo wörld", 8, 8},
	} {
		got := splitText(tc.s, tc.n)
		if len(got) != tc.want || strings.Join(got, "") != tc.s {
			t.Fatalf("splitText(%q,%d) = %q", tc.s, tc.n, got)
		}
	}
}

func TestEmptyReplyStreams(t *testing.T) {
	e := newEnv(t, Options{})
	cs := parseChatStream(t, e.post("/openai/v1/chat/completions", chatBody("[[mock reply=]]", `"stream":true,"stream_options":{"include_usage":true}`)).body, true)
	if cs.content != "" || !cs.done || num(get(cs.usage, "completion_tokens")) != 0 {
		t.Fatalf("%+v", cs)
	}
	chunks := gemChunks(t, e.post("/gemini/v1beta/models/g:streamGenerateContent?alt=sse", gemBody("[[mock reply=]]", "")), true)
	if len(chunks) != 1 || get(chunks[0], "candidates", 0, "finishReason") != "STOP" {
		t.Fatalf("%v", chunks)
	}
}

func TestValueFromSchema(t *testing.T) {
	for _, tc := range []struct{ schema, want string }{
		{`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer","minimum":3}},"required":["a","b"]}`, `{"a":"example","b":3}`},
		{`{"type":"object","properties":{"p":{"$ref":"#/$defs/P"}},"required":["p"],"$defs":{"P":{"type":"object","properties":{"c":{"type":"string","format":"date"}},"required":["c"]}}}`, `{"p":{"c":"2026-01-01"}}`},
		{`{"type":"object","properties":{"n":{"type":["null","number"],"exclusiveMinimum":1},"t":{"type":"array","items":{"enum":["x","y"]},"minItems":2}},"required":["n","t"]}`, `{"n":2,"t":["x","x"]}`},
		{`{"type":"OBJECT","properties":{"k":{"anyOf":[{"type":"null"},{"type":"boolean"}]},"m":{"type":"INTEGER","minimum":"4"}},"required":["k","m"]}`, `{"k":true,"m":4}`},
		{`{"type":"array","items":{"type":"string"},"minItems":1}`, `["example"]`},
		{`not json`, `{}`},
	} {
		if got := valueFromSchema(json.RawMessage(tc.schema)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.schema, got, tc.want)
		}
	}
}
