package mockprovider

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

const anthTools = `"tools":[{"type":"web_search_20250305","name":"web_search"},{"name":"get_weather","description":"d","input_schema":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}}]`

func anthBody(content, extra string) string {
	b := `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":` + string(marshal(content)) + `}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

// anthUsage reads an Anthropic usage object in gateway terms and checks the
// cache_creation breakdown when present.
func anthUsage(t *testing.T, u any) usage.Tokens {
	t.Helper()
	in, cw, cr, out := num(get(u, "input_tokens")), num(get(u, "cache_creation_input_tokens")), num(get(u, "cache_read_input_tokens")), num(get(u, "output_tokens"))
	if in < 0 || cw < 0 || cr < 0 || out < 0 {
		t.Fatalf("usage fields missing: %v", u)
	}
	if cc := get(u, "cache_creation"); cc != nil {
		if num(get(cc, "ephemeral_5m_input_tokens")) != cw || num(get(cc, "ephemeral_1h_input_tokens")) != 0 {
			t.Fatalf("cache_creation %v", cc)
		}
	}
	return usage.Tokens{Input: in, CachedInput: cr, CacheWrite: cw, Output: out,
		Reasoning: max(num(get(u, "output_tokens_details", "thinking_tokens")), 0)}
}

func TestAnthropicMessages(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name   string
		body   string
		hdr    []string
		status int
		check  func(t *testing.T, m map[string]any, r resp, s Served)
	}{
		{"plain", anthBody("hi [[mock reply=Hello from Claude]]", ""), nil, 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "type") != "message" || get(m, "content", 0, "text") != "Hello from Claude" || get(m, "stop_reason") != "end_turn" ||
				!strings.HasPrefix(get(m, "id").(string), "msg_01") || has(m, "stop_details") {
				t.Fatalf("%s", r.body)
			}
			wantUsage(t, s.Usage, anthUsage(t, get(m, "usage")))
			if s.Usage.Output != 3 || !reflect.DeepEqual(mustJSON(t, string(s.Native)), get(m, "usage")) {
				t.Fatalf("%+v", s)
			}
			if r.header.Get("Request-Id") == "" {
				t.Fatal("no request-id")
			}
		}},
		{"new api version adds stop_details", anthBody("hi", ""), []string{"Anthropic-Version", "2026-10-21"}, 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if !has(m, "stop_details") {
				t.Fatalf("%s", r.body)
			}
		}},
		{"cache usage", anthBody("hi [[mock usage input=10 cached=200 cache_write=50 output=20 reasoning=5]]", ""), nil, 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			want := usage.Tokens{Input: 10, CachedInput: 200, CacheWrite: 50, Output: 20, Reasoning: 5}
			wantUsage(t, anthUsage(t, get(m, "usage")), want)
			wantUsage(t, s.Usage, want)
			if s.Usage.PromptTotal() != 260 {
				t.Fatal(s.Usage.PromptTotal())
			}
		}},
		{"tool", anthBody("[[mock tool]]", anthTools), nil, 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			b := get(m, "content", 0)
			if get(m, "stop_reason") != "tool_use" || get(b, "type") != "tool_use" || get(b, "name") != "get_weather" ||
				get(b, "input", "city") != "example" || !strings.HasPrefix(get(b, "id").(string), "toolu_01") {
				t.Fatalf("%s", r.body)
			}
		}},
		{"tool result ends loop", `{"model":"c","max_tokens":10,"messages":[{"role":"user","content":"[[mock tool]]"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"}]}],` + anthTools + `}`, nil, 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "stop_reason") != "end_turn" {
				t.Fatalf("%s", r.body)
			}
		}},
		{"no_usage", anthBody("[[mock no_usage]]", ""), nil, 200, func(t *testing.T, m map[string]any, r resp, s Served) {
			if has(m, "usage") || !s.NoUsageOnWire || s.Usage.IsZero() {
				t.Fatalf("%s", r.body)
			}
		}},
		{"529", anthBody("[[mock error=529]]", ""), nil, 529, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "type") != "error" || get(m, "error", "type") != "overloaded_error" || get(m, "error", "message") != "Overloaded" ||
				r.header.Get("Retry-After") != "1" || !has(m, "request_id") {
				t.Fatalf("%s", r.body)
			}
		}},
		{"429 retry_after", anthBody("[[mock error=429 retry_after=0]]", ""), nil, 429, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "error", "type") != "rate_limit_error" || r.header.Get("Retry-After") != "0" {
				t.Fatalf("%s %v", r.body, r.header)
			}
		}},
		{"missing version", anthBody("hi", ""), []string{"Anthropic-Version", ""}, 400, func(t *testing.T, m map[string]any, r resp, s Served) {
			if !strings.Contains(get(m, "error", "message").(string), "anthropic-version") {
				t.Fatalf("%s", r.body)
			}
		}},
		{"missing max_tokens", `{"model":"c","messages":[]}`, nil, 400, func(t *testing.T, m map[string]any, r resp, s Served) {
			if get(m, "error", "type") != "invalid_request_error" {
				t.Fatalf("%s", r.body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post("/anthropic/v1/messages", tc.body, tc.hdr...)
			if r.status != tc.status || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d %v: %s", r.status, r.header, r.body)
			}
			tc.check(t, mustJSON(t, string(r.body)), r, e.last("/anthropic"))
		})
	}
}

func TestAnthropicStream(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name  string
		body  string
		check func(t *testing.T, evs []sseEv, s Served)
	}{
		{"text", anthBody("hi [[mock reply=a b c]] [[mock usage cached=30 cache_write=5]]", `"stream":true`), func(t *testing.T, evs []sseEv, s Served) {
			var names []string
			text := ""
			var start, delta map[string]any
			for _, ev := range evs {
				names = append(names, ev.event)
				m := mustJSON(t, ev.data)
				switch ev.event {
				case "message_start":
					start = m
				case "content_block_delta":
					text += get(m, "delta", "text").(string)
				case "message_delta":
					delta = m
				}
			}
			want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
			if strings.Join(names, " ") != want || text != "a b c" {
				t.Fatalf("%v %q", names, text)
			}
			su := anthUsage(t, get(start, "message", "usage"))
			if su.Output != 1 || su.CachedInput != 30 || su.CacheWrite != 5 {
				t.Fatalf("message_start usage %+v", su)
			}
			du := anthUsage(t, get(delta, "usage"))
			if get(delta, "delta", "stop_reason") != "end_turn" {
				t.Fatalf("%v", delta)
			}
			wantUsage(t, s.Usage, du)
			if s.Usage.Output != 3 || !reflect.DeepEqual(mustJSON(t, string(s.Native)), get(delta, "usage")) {
				t.Fatalf("%+v", s)
			}
		}},
		{"tool", anthBody("[[mock tool]]", `"stream":true,`+anthTools), func(t *testing.T, evs []sseEv, s Served) {
			partial := ""
			var blockStart, delta map[string]any
			for _, ev := range evs {
				m := mustJSON(t, ev.data)
				switch ev.event {
				case "content_block_start":
					blockStart = m
				case "content_block_delta":
					if get(m, "delta", "type") != "input_json_delta" {
						t.Fatalf("%v", m)
					}
					partial += get(m, "delta", "partial_json").(string)
				case "message_delta":
					delta = m
				}
			}
			cb := get(blockStart, "content_block")
			if get(cb, "type") != "tool_use" || get(cb, "name") != "get_weather" || len(get(cb, "input").(map[string]any)) != 0 {
				t.Fatalf("%v", blockStart)
			}
			if partial != `{"city":"example"}` || get(delta, "delta", "stop_reason") != "tool_use" {
				t.Fatalf("%q %v", partial, delta)
			}
			wantUsage(t, s.Usage, anthUsage(t, get(delta, "usage")))
		}},
		{"no_usage", anthBody("[[mock no_usage]]", `"stream":true`), func(t *testing.T, evs []sseEv, s Served) {
			for _, ev := range evs {
				m := mustJSON(t, ev.data)
				if has(m, "usage") || has(get(m, "message"), "usage") {
					t.Fatalf("usage in %s", ev.data)
				}
			}
			if !s.NoUsageOnWire || s.Usage.IsZero() {
				t.Fatalf("%+v", s)
			}
		}},
		{"midstream_error", anthBody("[[mock midstream_error]] [[mock reply=a b c d]]", `"stream":true`), func(t *testing.T, evs []sseEv, s Served) {
			last := evs[len(evs)-1]
			m := mustJSON(t, last.data)
			if last.event != "error" || get(m, "error", "type") != "overloaded_error" {
				t.Fatalf("%v", last)
			}
			if !s.MidstreamError || s.Usage.Output != 2 || s.NoUsageOnWire {
				t.Fatalf("%+v", s)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post("/anthropic/v1/messages", tc.body)
			if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
				t.Fatalf("%d %s", r.status, r.body)
			}
			evs := parseSSE(t, r.body, "\n\n")
			for _, ev := range evs {
				if ev.event == "" {
					t.Fatalf("event without event: line: %v", ev.lines)
				}
				if ev.data == "[DONE]" {
					t.Fatal("[DONE] in an Anthropic stream")
				}
				if typ := get(mustJSON(t, ev.data), "type"); typ != ev.event {
					t.Fatalf("event %q has type %v", ev.event, typ)
				}
			}
			tc.check(t, evs, e.last("/anthropic"))
		})
	}
}

func TestAnthropicCountTokensAndModels(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.post("/anthropic/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"[[mock usage input=7 cached=3 cache_write=2]]"}]}`)
	var ct map[string]int64
	if err := json.Unmarshal(r.body, &ct); err != nil || r.status != 200 || ct["input_tokens"] != 12 || len(ct) != 1 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if s := e.last("/anthropic"); !s.Usage.IsZero() || s.Endpoint != "count_tokens" {
		t.Fatalf("%+v", s)
	}
	r = e.do("GET", "/anthropic/v1/models", "")
	m := mustJSON(t, string(r.body))
	if get(m, "data", 0, "type") != "model" || get(m, "has_more") != false || get(m, "first_id") != get(m, "data", 0, "id") {
		t.Fatalf("%s", r.body)
	}
	r = e.do("GET", "/anthropic/v1/models/claude-sonnet-4-5-20250929", "")
	if get(mustJSON(t, string(r.body)), "display_name") != "Claude Sonnet 4.5" {
		t.Fatalf("%s", r.body)
	}
}
