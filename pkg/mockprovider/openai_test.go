package mockprovider

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

const weatherToolChat = `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location","unit"]}}},{"type":"function","function":{"name":"second","parameters":{}}}]`

func chatBody(content string, extra string) string {
	b := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":` + string(marshal(content)) + `}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

// checkChatUsage verifies the OpenAI chat usage arithmetic and returns the
// gateway-terms reading of it.
func checkChatUsage(t *testing.T, u any) usage.Tokens {
	t.Helper()
	p, c, tot := num(get(u, "prompt_tokens")), num(get(u, "completion_tokens")), num(get(u, "total_tokens"))
	cached := num(get(u, "prompt_tokens_details", "cached_tokens"))
	reasoning := num(get(u, "completion_tokens_details", "reasoning_tokens"))
	if p < 0 || c < 0 || cached < 0 || reasoning < 0 {
		t.Fatalf("usage fields missing: %v", u)
	}
	if tot != p+c || cached > p || reasoning > c {
		t.Fatalf("inconsistent usage %v", u)
	}
	return usage.Tokens{Input: p - cached, CachedInput: cached, Output: c, Reasoning: reasoning}
}

func TestOpenAIChat(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name   string
		body   string
		check  func(t *testing.T, r resp, s Served)
		status int
	}{
		{"plain", chatBody("hello [[mock reply=Hello there, friend!]]", ""), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			if get(m, "object") != "chat.completion" || get(m, "choices", 0, "message", "content") != "Hello there, friend!" ||
				get(m, "choices", 0, "finish_reason") != "stop" {
				t.Fatalf("body %s", r.body)
			}
			got := checkChatUsage(t, get(m, "usage"))
			wantUsage(t, s.Usage, got)
			if got.Output != 3 || got.Input != estimate(len("user")+len("hello [[mock reply=Hello there, friend!]]"))+openaiOverhead {
				t.Fatalf("computed usage %+v", got)
			}
			if !reflect.DeepEqual(mustJSON(t, string(s.Native)), get(m, "usage")) {
				t.Fatalf("native %s", s.Native)
			}
		}, 200},
		{"usage directive", chatBody("hi [[mock usage input=100 cached=40 output=30 reasoning=10 cache_write=7]]", ""), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			u := get(m, "usage")
			if num(get(u, "prompt_tokens")) != 140 || num(get(u, "total_tokens")) != 170 {
				t.Fatalf("usage %v", u)
			}
			wantUsage(t, checkChatUsage(t, u), usage.Tokens{Input: 100, CachedInput: 40, Output: 30, Reasoning: 10})
			wantUsage(t, s.Usage, usage.Tokens{Input: 100, CachedInput: 40, Output: 30, Reasoning: 10})
		}, 200},
		{"tool", chatBody("weather? [[mock tool]]", weatherToolChat), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			tc := get(m, "choices", 0, "message", "tool_calls", 0)
			if get(m, "choices", 0, "finish_reason") != "tool_calls" || get(tc, "function", "name") != "get_weather" ||
				get(m, "choices", 0, "message", "content") != nil || !strings.HasPrefix(get(tc, "id").(string), "call_") {
				t.Fatalf("body %s", r.body)
			}
			args := mustJSON(t, get(tc, "function", "arguments").(string))
			if args["location"] != "example" || args["unit"] != "celsius" {
				t.Fatalf("args %v", args)
			}
			if !s.ToolCall {
				t.Fatal("ToolCall not recorded")
			}
			wantUsage(t, s.Usage, checkChatUsage(t, get(m, "usage")))
		}, 200},
		{"tool loop ends", `{"model":"m","messages":[{"role":"user","content":"[[mock tool]]"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}],` + weatherToolChat + `}`, func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			if get(m, "choices", 0, "finish_reason") != "stop" || s.ToolCall {
				t.Fatalf("body %s", r.body)
			}
		}, 200},
		{"no_usage", chatBody("[[mock no_usage]]", ""), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			if has(m, "usage") || !s.NoUsageOnWire || s.Usage.IsZero() || s.Native != nil {
				t.Fatalf("body %s served %+v", r.body, s)
			}
		}, 200},
		{"error 429", chatBody("[[mock error=429]]", ""), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			if get(m, "error", "code") != "rate_limit_exceeded" || get(m, "error", "type") != "requests" ||
				!has(get(m, "error"), "param") || r.header.Get("Retry-After") != "1" {
				t.Fatalf("body %s header %v", r.body, r.header)
			}
			if !s.Usage.IsZero() || s.Status != 429 {
				t.Fatalf("served %+v", s)
			}
		}, 429},
		{"error 500 no retry", chatBody("[[mock error=500 should_retry=false]]", ""), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			if get(m, "error", "type") != "server_error" || r.header.Get("X-Should-Retry") != "false" {
				t.Fatalf("body %s header %v", r.body, r.header)
			}
		}, 500},
		{"stream_options without stream", chatBody("hi", `"stream_options":{"include_usage":true}`), func(t *testing.T, r resp, s Served) {
			m := mustJSON(t, string(r.body))
			if get(m, "error", "param") != "stream_options" {
				t.Fatalf("body %s", r.body)
			}
		}, 400},
		{"bad json", `{"model":`, func(t *testing.T, r resp, s Served) {
			if get(mustJSON(t, string(r.body)), "error", "type") != "invalid_request_error" {
				t.Fatalf("body %s", r.body)
			}
		}, 400},
		{"missing model", `{"messages":[{"role":"user","content":"x"}]}`, func(t *testing.T, r resp, s Served) {}, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post("/openai/v1/chat/completions", tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content-type %q", ct)
			}
			s := e.last("/openai")
			if s.Endpoint != "chat.completions" || s.Status != tc.status || s.Path != "/v1/chat/completions" || s.Body == nil {
				t.Fatalf("served %+v", s)
			}
			tc.check(t, r, s)
		})
	}
}

// chatStream parses an OpenAI chat SSE body.
type chatStream struct {
	chunks      []map[string]any
	content     string
	toolName    string
	toolArgs    string
	toolID      string
	finish      string
	usage       any
	done        bool
	streamError any
}

func parseChatStream(t *testing.T, body []byte, includeUsage bool) chatStream {
	t.Helper()
	var cs chatStream
	evs := parseSSE(t, body, "\n\n")
	for i, ev := range evs {
		if ev.event != "" {
			t.Fatalf("OpenAI chat stream has an event line: %v", ev.lines)
		}
		if ev.data == "[DONE]" {
			if i != len(evs)-1 {
				t.Fatal("[DONE] is not last")
			}
			cs.done = true
			continue
		}
		m := mustJSON(t, ev.data)
		if has(m, "error") {
			cs.streamError = m["error"]
			if i != len(evs)-1 {
				t.Fatal("error is not last")
			}
			continue
		}
		cs.chunks = append(cs.chunks, m)
		if get(m, "object") != "chat.completion.chunk" {
			t.Fatalf("chunk %v", m)
		}
		if has(m, "usage") != includeUsage {
			t.Fatalf("usage key presence %v, include_usage %v: %s", has(m, "usage"), includeUsage, ev.data)
		}
		choices := get(m, "choices").([]any)
		if len(choices) == 0 {
			if cs.usage != nil || m["usage"] == nil {
				t.Fatalf("unexpected empty-choices chunk %s", ev.data)
			}
			cs.usage = m["usage"]
			continue
		}
		if includeUsage && m["usage"] != nil {
			t.Fatalf("usage before the final chunk: %s", ev.data)
		}
		d := get(choices[0], "delta")
		if s, ok := get(d, "content").(string); ok {
			cs.content += s
		}
		if tc := get(d, "tool_calls", 0); tc != nil {
			if num(get(tc, "index")) != 0 {
				t.Fatalf("tool call index %v", tc)
			}
			if id, ok := get(tc, "id").(string); ok {
				cs.toolID = id
				cs.toolName = get(tc, "function", "name").(string)
			}
			cs.toolArgs += get(tc, "function", "arguments").(string)
		}
		if f, ok := get(choices[0], "finish_reason").(string); ok {
			cs.finish = f
		}
	}
	return cs
}

func TestOpenAIChatStream(t *testing.T) {
	e := newEnv(t, Options{})
	inc := `"stream":true,"stream_options":{"include_usage":true}`
	cases := []struct {
		name         string
		body         string
		includeUsage bool
		check        func(t *testing.T, cs chatStream, s Served)
	}{
		{"include_usage", chatBody("hello [[mock reply=one two three four]]", inc), true, func(t *testing.T, cs chatStream, s Served) {
			if cs.content != "one two three four" || cs.finish != "stop" || !cs.done || len(cs.chunks) != 1+4+2 {
				t.Fatalf("%+v", cs)
			}
			wantUsage(t, s.Usage, checkChatUsage(t, cs.usage))
			if s.NoUsageOnWire || s.Native == nil || !s.Stream {
				t.Fatalf("served %+v", s)
			}
		}},
		{"without include_usage", chatBody("hello [[mock reply=one two three]]", `"stream":true`), false, func(t *testing.T, cs chatStream, s Served) {
			if cs.content != "one two three" || cs.usage != nil || !cs.done {
				t.Fatalf("%+v", cs)
			}
			if !s.NoUsageOnWire || s.Usage.Output != 3 || s.Native != nil {
				t.Fatalf("served %+v", s)
			}
		}},
		{"chunks", chatBody("hello [[mock chunks=2]]", inc), true, func(t *testing.T, cs chatStream, s Served) {
			if len(cs.chunks) != 1+2+2 || cs.content != s.Reply || s.Reply == "" {
				t.Fatalf("%d chunks, content %q", len(cs.chunks), cs.content)
			}
		}},
		{"tool", chatBody("[[mock tool]]", inc+","+weatherToolChat), true, func(t *testing.T, cs chatStream, s Served) {
			if cs.toolName != "get_weather" || cs.finish != "tool_calls" || !strings.HasPrefix(cs.toolID, "call_") || cs.content != "" {
				t.Fatalf("%+v", cs)
			}
			if !json.Valid([]byte(cs.toolArgs)) || cs.toolArgs != `{"location":"example","unit":"celsius"}` {
				t.Fatalf("args %q", cs.toolArgs)
			}
			wantUsage(t, s.Usage, checkChatUsage(t, cs.usage))
		}},
		{"no_usage", chatBody("[[mock no_usage]]", inc), true, func(t *testing.T, cs chatStream, s Served) {
			if cs.usage != nil || !cs.done || !s.NoUsageOnWire || s.Usage.IsZero() {
				t.Fatalf("%+v %+v", cs, s)
			}
		}},
		{"usage directive", chatBody("[[mock usage input=5 cached=6 output=7 reasoning=2]]", inc), true, func(t *testing.T, cs chatStream, s Served) {
			want := usage.Tokens{Input: 5, CachedInput: 6, Output: 7, Reasoning: 2}
			wantUsage(t, checkChatUsage(t, cs.usage), want)
			wantUsage(t, s.Usage, want)
		}},
		{"midstream_error", chatBody("[[mock midstream_error]] [[mock reply=a b c d]]", inc), true, func(t *testing.T, cs chatStream, s Served) {
			if cs.done || cs.streamError == nil || cs.content != "a b" || cs.usage != nil {
				t.Fatalf("%+v", cs)
			}
			if get(cs.streamError, "type") != "server_error" || !s.MidstreamError || s.Usage.Output != 2 || !s.NoUsageOnWire {
				t.Fatalf("%+v %+v", cs.streamError, s)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post("/openai/v1/chat/completions", tc.body)
			if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
				t.Fatalf("status %d %v: %s", r.status, r.header, r.body)
			}
			tc.check(t, parseChatStream(t, r.body, tc.includeUsage), e.last("/openai"))
		})
	}
}

// checkRespUsage verifies Responses API usage arithmetic.
func checkRespUsage(t *testing.T, u any) usage.Tokens {
	t.Helper()
	in, out, tot := num(get(u, "input_tokens")), num(get(u, "output_tokens")), num(get(u, "total_tokens"))
	cached := num(get(u, "input_tokens_details", "cached_tokens"))
	reasoning := num(get(u, "output_tokens_details", "reasoning_tokens"))
	if in < 0 || out < 0 || cached < 0 || reasoning < 0 || tot != in+out || cached > in || reasoning > out {
		t.Fatalf("inconsistent usage %v", u)
	}
	return usage.Tokens{Input: in - cached, CachedInput: cached, Output: out, Reasoning: reasoning}
}

const respTool = `"tools":[{"type":"web_search"},{"type":"function","name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"},"n":{"type":"integer"}},"required":["q"]},"strict":true}]`

func TestOpenAIResponses(t *testing.T) {
	e := newEnv(t, Options{})
	t.Run("plain", func(t *testing.T) {
		r := e.post("/openai/v1/responses", `{"model":"gpt-4o-mini","input":"Say hi [[mock reply=Hi!]]","instructions":"Be brief."}`)
		m := mustJSON(t, string(r.body))
		if r.status != 200 || get(m, "object") != "response" || get(m, "status") != "completed" ||
			get(m, "output", 0, "content", 0, "text") != "Hi!" || get(m, "instructions") != "Be brief." ||
			!strings.HasPrefix(get(m, "id").(string), "resp_") {
			t.Fatalf("%s", r.body)
		}
		s := e.last("/openai")
		wantUsage(t, s.Usage, checkRespUsage(t, get(m, "usage")))
		if s.Endpoint != "responses" || s.Model != "gpt-4o-mini" {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("tool", func(t *testing.T) {
		r := e.post("/openai/v1/responses", `{"model":"gpt-4o-mini","input":"[[mock tool]]",`+respTool+`}`)
		m := mustJSON(t, string(r.body))
		item := get(m, "output", 0)
		if get(item, "type") != "function_call" || get(item, "name") != "lookup" || get(item, "arguments") != `{"q":"example"}` ||
			!strings.HasPrefix(get(item, "call_id").(string), "call_") {
			t.Fatalf("%s", r.body)
		}
	})
	t.Run("tool result ends loop", func(t *testing.T) {
		r := e.post("/openai/v1/responses", `{"model":"gpt-4o-mini","input":[{"role":"user","content":"[[mock tool]]"},{"type":"function_call","call_id":"c","name":"lookup","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"42"}],`+respTool+`}`)
		if get(mustJSON(t, string(r.body)), "output", 0, "type") != "message" {
			t.Fatalf("%s", r.body)
		}
	})
	type streamCase struct {
		name  string
		body  string
		check func(t *testing.T, evs []sseEv, s Served)
	}
	for _, tc := range []streamCase{
		{"stream", `{"model":"gpt-4o-mini","stream":true,"input":"[[mock reply=x y z]] [[mock usage input=9 cached=1 output=4 reasoning=1]]"}`, func(t *testing.T, evs []sseEv, s Served) {
			var names []string
			text := ""
			for _, ev := range evs {
				names = append(names, ev.event)
				if ev.event == "response.output_text.delta" {
					text += get(mustJSON(t, ev.data), "delta").(string)
				}
			}
			want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed"
			if strings.Join(names, " ") != want || text != "x y z" {
				t.Fatalf("events %v text %q", names, text)
			}
			first := mustJSON(t, evs[0].data)
			if get(first, "response", "usage") != nil || !has(get(first, "response"), "usage") {
				t.Fatal("response.created must carry usage:null")
			}
			last := mustJSON(t, evs[len(evs)-1].data)
			got := checkRespUsage(t, get(last, "response", "usage"))
			wantUsage(t, got, usage.Tokens{Input: 9, CachedInput: 1, Output: 4, Reasoning: 1})
			wantUsage(t, s.Usage, got)
		}},
		{"stream tool", `{"model":"gpt-4o-mini","stream":true,"input":"[[mock tool]]",` + respTool + `}`, func(t *testing.T, evs []sseEv, s Served) {
			args := ""
			var done map[string]any
			for _, ev := range evs {
				switch ev.event {
				case "response.function_call_arguments.delta":
					args += get(mustJSON(t, ev.data), "delta").(string)
				case "response.output_item.done":
					done = mustJSON(t, ev.data)
				}
			}
			if args != `{"q":"example"}` || get(done, "item", "arguments") != args || get(done, "item", "name") != "lookup" {
				t.Fatalf("args %q done %v", args, done)
			}
			wantUsage(t, s.Usage, checkRespUsage(t, get(mustJSON(t, evs[len(evs)-1].data), "response", "usage")))
		}},
		{"no_usage", `{"model":"gpt-4o-mini","stream":true,"input":"[[mock no_usage]]"}`, func(t *testing.T, evs []sseEv, s Served) {
			last := mustJSON(t, evs[len(evs)-1].data)
			if get(last, "type") != "response.completed" || get(last, "response", "usage") != nil || !s.NoUsageOnWire {
				t.Fatalf("%v", last)
			}
		}},
		{"midstream_error", `{"model":"gpt-4o-mini","stream":true,"input":"[[mock midstream_error]] [[mock reply=a b c d]]"}`, func(t *testing.T, evs []sseEv, s Served) {
			last := mustJSON(t, evs[len(evs)-1].data)
			if evs[len(evs)-1].event != "error" || get(last, "type") != "error" || get(last, "error", "code") != "server_error" {
				t.Fatalf("%v", last)
			}
			if !s.MidstreamError || s.Usage.Output != 2 {
				t.Fatalf("%+v", s)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post("/openai/v1/responses", tc.body)
			if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("%d %s", r.status, r.body)
			}
			evs := parseSSE(t, r.body, "\n\n")
			for i, ev := range evs {
				m := mustJSON(t, ev.data)
				if ev.event == "" || get(m, "type") != ev.event {
					t.Fatalf("event line %q vs type %v", ev.event, get(m, "type"))
				}
				if num(get(m, "sequence_number")) != int64(i) {
					t.Fatalf("sequence_number %v at %d", get(m, "sequence_number"), i)
				}
			}
			tc.check(t, evs, e.last("/openai"))
		})
	}
	t.Run("input_tokens", func(t *testing.T) {
		r := e.post("/openai/v1/responses/input_tokens", `{"model":"gpt-4o-mini","input":"[[mock usage input=12 cached=3]]"}`)
		m := mustJSON(t, string(r.body))
		if get(m, "object") != "response.input_tokens" || num(get(m, "input_tokens")) != 15 {
			t.Fatalf("%s", r.body)
		}
		if s := e.last("/openai"); !s.Usage.IsZero() {
			t.Fatalf("%+v", s)
		}
	})
}

func TestOpenAIEmbeddings(t *testing.T) {
	e := newEnv(t, Options{})
	floatRes := e.post("/openai/v1/embeddings", `{"model":"text-embedding-3-small","input":["hello world","second input here"],"dimensions":8}`)
	m := mustJSON(t, string(floatRes.body))
	if floatRes.status != 200 || get(m, "object") != "list" || get(m, "data", 1, "index") == nil || get(m, "model") != "text-embedding-3-small" {
		t.Fatalf("%s", floatRes.body)
	}
	vec := get(m, "data", 0, "embedding").([]any)
	if len(vec) != 8 {
		t.Fatalf("dims %d", len(vec))
	}
	want := int64(estimate(len("hello world")) + estimate(len("second input here")))
	if num(get(m, "usage", "prompt_tokens")) != want || num(get(m, "usage", "total_tokens")) != want {
		t.Fatalf("usage %v", get(m, "usage"))
	}
	wantUsage(t, e.last("/openai").Usage, usage.Tokens{Input: want})

	b64 := e.post("/openai/v1/embeddings", `{"model":"text-embedding-3-small","input":["hello world","second input here"],"dimensions":8,"encoding_format":"base64"}`)
	mb := mustJSON(t, string(b64.body))
	raw, err := base64.StdEncoding.DecodeString(get(mb, "data", 0, "embedding").(string))
	if err != nil || len(raw) != 32 {
		t.Fatalf("base64: %v %d", err, len(raw))
	}
	var sq float64
	for i := range 8 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		fv, _ := vec[i].(json.Number).Float64()
		if float32(fv) != f {
			t.Fatalf("base64 and float differ at %d: %v vs %v", i, f, fv)
		}
		sq += float64(f) * float64(f)
	}
	if math.Abs(sq-1) > 1e-4 {
		t.Fatalf("not a unit vector: %v", sq)
	}

	def := mustJSON(t, string(e.post("/openai/v1/embeddings", `{"model":"text-embedding-3-large","input":"x"}`).body))
	if len(get(def, "data", 0, "embedding").([]any)) != 3072 {
		t.Fatal("default large dims")
	}
	if r := e.post("/openai/v1/embeddings", `{"model":"text-embedding-3-small","input":"x [[mock error=503]]"}`); r.status != 503 {
		t.Fatalf("%d", r.status)
	}
}

func TestOpenAIModels(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.do("GET", "/openai/v1/models", "")
	m := mustJSON(t, string(r.body))
	if r.status != 200 || get(m, "object") != "list" || get(m, "data", 0, "object") != "model" {
		t.Fatalf("%s", r.body)
	}
	r = e.do("GET", "/openai/v1/models/gpt-4o", "")
	if get(mustJSON(t, string(r.body)), "id") != "gpt-4o" {
		t.Fatalf("%s", r.body)
	}
	if r := e.do("GET", "/openai/v1/nope", ""); r.status != 404 {
		t.Fatal(r.status)
	}
}
