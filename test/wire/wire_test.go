// Package wire sends the gateway the exact bytes of
// clients the SDK suites do not run: the official Python SDKs (openai,
// anthropic, google-genai, read from their source: header names and case,
// json.dumps spacing, paths, query parameters), curl commands from the
// providers' API references, and HTTP framings other stacks use (chunked
// bodies, Expect: 100-continue, HTTP/1.0). Each case checks what that client
// needs: the status, the provider's response shape or SSE framing as its
// parser reads it, errors in the provider's shape, and a usage record equal
// to the mock's ground truth. Every case runs through both front doors
// (harness.Doors): `tollgate dev --mock`, and envoysim in front of
// `tollgate serve` (ext_proc), and the two must agree.
package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// tokenVar stands for the gateway token in header lines and targets.
const tokenVar = "{TOKEN}"

// framing is how a request body goes on the wire.
//
// Through the Envoy door, the framing is read by envoysim's HTTP server,
// which is Go's, not Envoy's codec; the processor only sees what the codec
// hands on. These cases stay on both doors because the sidecar must answer
// them as the standalone proxy does, and envoysim reproduces the codec's
// part that decides it: a chunked body reaches ext_proc without
// transfer-encoding or content-length, Envoy answers Expect: 100-continue
// itself (proxy_100_continue unset), and HTTP/1.0 is refused with a 426
// unless the connection manager sets http_protocol_options.accept_http_10.
type framing int

const (
	contentLength framing = iota // Content-Length, body with the head (httpx, aiohttp, requests)
	chunked                      // Transfer-Encoding: chunked, in two chunks, one with an extension
	expect100                    // curl on a large body: head, wait for 100 Continue, then the body
	http10                       // an HTTP/1.0 request: Content-Length, the answer delimited by close
)

// Header lines as the Python SDKs send them, in their order and letter case
// (httpx keeps both). The Stainless SDKs add X-Stainless-* and a retry
// count; anthropic-sdk-python sends the key as X-Api-Key with API version
// 2023-06-01; google-genai sends x-goog-api-key and x-goog-api-client, and
// Content-Type on GETs too.
var (
	openaiPython = []string{
		"Accept: application/json", "Accept-Encoding: gzip, deflate", "Connection: keep-alive",
		"User-Agent: OpenAI/Python 2.8.1", "X-Stainless-Lang: python", "X-Stainless-Package-Version: 2.8.1",
		"X-Stainless-OS: Linux", "X-Stainless-Arch: x64", "X-Stainless-Runtime: CPython",
		"X-Stainless-Runtime-Version: 3.12.3", "Authorization: Bearer " + tokenVar, "X-Stainless-Async: false",
		"x-stainless-retry-count: 0", "x-stainless-read-timeout: 600", "Content-Type: application/json",
	}
	anthropicPython = []string{
		"Accept: application/json", "Accept-Encoding: gzip, deflate", "Connection: keep-alive",
		"User-Agent: Anthropic/Python 0.75.0", "X-Stainless-Lang: python", "X-Stainless-Package-Version: 0.75.0",
		"X-Stainless-OS: Linux", "X-Stainless-Arch: x64", "X-Stainless-Runtime: CPython",
		"X-Stainless-Runtime-Version: 3.12.3", "X-Api-Key: " + tokenVar, "X-Stainless-Async: false",
		"anthropic-version: 2023-06-01", "x-stainless-retry-count: 0", "x-stainless-timeout: 600",
		"Content-Type: application/json",
	}
	geminiPython = []string{
		"Accept: */*", "Accept-Encoding: gzip, deflate", "Connection: keep-alive",
		"Content-Type: application/json", "x-goog-api-key: " + tokenVar,
		"user-agent: google-genai-sdk/1.52.0 gl-python/3.12.3",
		"x-goog-api-client: google-genai-sdk/1.52.0 gl-python/3.12.3",
	}
	// curl -H lines from the API references; curl adds its own User-Agent
	// and Accept.
	curlBase = []string{"User-Agent: curl/8.5.0", "Accept: */*"}
)

func with(base []string, more ...string) []string {
	return append(append([]string(nil), base...), more...)
}

// A python json.dumps body: ", " and ": " separators.
const (
	pyChat        = `{"messages": [{"role": "user", "content": "Tell me a joke"}], "model": "gpt-4o-mini"}`
	pyChatStream  = `{"messages": [{"role": "user", "content": "Tell me a joke"}], "model": "gpt-4o-mini", "stream": true}`
	pyChatUsage   = `{"messages": [{"role": "user", "content": "Tell me a joke"}], "model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}}`
	pyResponses   = `{"input": "Tell me a joke", "model": "gpt-4o-mini"}`
	pyRespStream  = `{"input": "Tell me a joke", "model": "gpt-4o-mini", "stream": true}`
	pyMessages    = `{"max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, Claude"}], "model": "claude-sonnet-4-5"}`
	pyMsgStream   = `{"max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, Claude"}], "model": "claude-sonnet-4-5", "stream": true}`
	pyCountTokens = `{"messages": [{"role": "user", "content": "Hello, Claude"}], "model": "claude-sonnet-4-5"}`
	pyGenerate    = `{"contents": [{"parts": [{"text": "Why is the sky blue?"}], "role": "user"}]}`
	// google-genai converts GenerateContentConfig to the API's camelCase.
	pyThinking = `{"contents": [{"parts": [{"text": "Why is the sky blue?"}], "role": "user"}], "generationConfig": {"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 1024}}}`
	// Raw REST users write protobuf field names too, which Google accepts
	// beside the camelCase ones, each field on its own.
	restThinkingSnake = `{"contents": [{"parts": [{"text": "Why is the sky blue?"}]}], "generation_config": {"thinking_config": {"include_thoughts": true}}}`
	restNoThinking    = `{"contents": [{"parts": [{"text": "Why is the sky blue?"}]}], "generationConfig": {"thinking_config": {"thinking_budget": 0}}}`
	// The Anthropic API reference's curl body, as written there.
	curlMessages = "{\n    \"model\": \"claude-sonnet-4-5-20250929\",\n    \"max_tokens\": 1024,\n    \"messages\": [\n        {\"role\": \"user\", \"content\": \"Hello, world\"}\n    ]\n}"
	curlGemini   = "{\n    \"contents\": [\n      {\n        \"parts\": [\n          {\n            \"text\": \"Explain how AI works in a few words\"\n          }\n        ]\n      }\n    ]\n  }"
	curlChat     = `{"model": "gpt-4o-mini", "messages": [{"role": "developer", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]}`
)

// want is what a client needs from one response.
type want struct {
	status int
	ctype  string                          // content-type prefix
	check  func(t *testing.T, body []byte) // the shape its parser reads
	// Usage: the provider and operation of the record; billed when the
	// request reached the mock, whose ground truth the record must equal.
	provider, model, op string
	stream, billed      bool
	reject              string // the reason of a refused request
}

type wireCase struct {
	name    string
	method  string
	target  string // path and query under the gateway
	header  []string
	body    string
	framing framing
	want    want
}

// TestWire runs every case through each front door: `tollgate dev --mock`
// (the standalone proxy) and the Envoy sidecar path (envoysim from the
// sidecar bootstrap, ext_proc to `tollgate serve`). One table, two doors,
// one expected answer per case: the framing cases included (see framing).
// After both, what each client saw and what each mock received is compared
// across the doors.
func TestWire(t *testing.T) {
	var mu sync.Mutex
	got := map[string]map[string]outcome{}
	// A parent's cleanup runs once its parallel subtests are done.
	t.Cleanup(func() { compareDoors(t, got) })
	for _, door := range harness.Doors {
		t.Run(door, func(t *testing.T) {
			// The doors share nothing, so they run side by side.
			t.Parallel()
			o := wire(t, door)
			mu.Lock()
			got[door] = o
			mu.Unlock()
		})
	}
}

// outcome is what must not depend on the front door: what the client got
// and what the provider received. Token counts may differ (the mock's
// answer depends on the project's prompt_cache_key); each door's are held
// to its mock's ground truth instead. Framing may differ where Envoy's
// differs from Go's net/http: a response body the sidecar streams has no
// Content-Length (docs/envoy.md).
type outcome struct {
	status   int
	ctype    string
	answer   string // the body the gateway made itself (no provider reached)
	upstream string // the request the mock received: method, target, headers
	record   string // the usage record, less ids, times and tokens
}

func compareDoors(t *testing.T, got map[string]map[string]outcome) {
	if t.Failed() || len(got) != len(harness.Doors) {
		return // a door failed: its own errors say why
	}
	first := harness.Doors[0]
	for _, door := range harness.Doors[1:] {
		for name, want := range got[first] {
			if o, ok := got[door][name]; !ok {
				t.Errorf("%s: ran through %s, not through %s", name, first, door)
			} else if o != want {
				t.Errorf("%s: %s and %s differ:\n%s: %+v\n%s: %+v", name, first, door, first, want, door, o)
			}
		}
	}
}

func wire(t *testing.T, door string) map[string]outcome {
	d := harness.StartDoor(t, door, harness.DoorOptions{})
	gw := gateway{addr: gatewayAddr(t, d), token: d.GatewayToken()}
	big := `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "` + strings.Repeat("knock knock ", 200) + `"}]}`
	cases := []wireCase{
		// ---- OpenAI ----
		{"openai-python chat", "POST", "/openai/v1/chat/completions", openaiPython, pyChat, contentLength,
			want{status: 200, ctype: "application/json", check: openaiChat, provider: "openai", model: "gpt-4o-mini", op: "chat.completions", billed: true}},
		{"openai-python chat stream", "POST", "/openai/v1/chat/completions", openaiPython, pyChatStream, contentLength,
			want{status: 200, ctype: "text/event-stream", check: openaiChatStream(false), provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true, billed: true}},
		{"openai-python chat stream include_usage", "POST", "/openai/v1/chat/completions", openaiPython, pyChatUsage, contentLength,
			want{status: 200, ctype: "text/event-stream", check: openaiChatStream(true), provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true, billed: true}},
		{"openai-python responses", "POST", "/openai/v1/responses", openaiPython, pyResponses, contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("object", "response"), provider: "openai", model: "gpt-4o-mini", op: "responses", billed: true}},
		{"openai-python responses stream", "POST", "/openai/v1/responses", openaiPython, pyRespStream, contentLength,
			want{status: 200, ctype: "text/event-stream", check: namedEvents("response.created", "response.completed"), provider: "openai", model: "gpt-4o-mini", op: "responses", stream: true, billed: true}},
		{"openai-python models.list", "GET", "/openai/v1/models", openaiPython, "", contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("object", "list"), provider: "openai", op: "models.list"}},
		{"openai-python bad key", "POST", "/openai/v1/chat/completions", with(openaiPython[:10], "Authorization: Bearer sk-proj-not-a-gateway-token", "Content-Type: application/json"), pyChat, contentLength,
			want{status: 401, ctype: "application/json", check: openaiError("invalid_api_key"), provider: "openai", op: "chat.completions", reject: "invalid_token"}},
		{"curl chat, chunked body", "POST", "/openai/v1/chat/completions", with(curlBase, "Content-Type: application/json", "Authorization: Bearer "+tokenVar), curlChat, chunked,
			want{status: 200, ctype: "application/json", check: openaiChat, provider: "openai", model: "gpt-4o-mini", op: "chat.completions", billed: true}},
		{"curl chat, Expect: 100-continue", "POST", "/openai/v1/chat/completions", with(curlBase, "Content-Type: application/json", "Authorization: Bearer "+tokenVar), big, expect100,
			want{status: 200, ctype: "application/json", check: openaiChat, provider: "openai", model: "gpt-4o-mini", op: "chat.completions", billed: true}},
		{"curl -0 chat stream (HTTP/1.0)", "POST", "/openai/v1/chat/completions", with(curlBase, "Content-Type: application/json", "Authorization: Bearer "+tokenVar), pyChatStream, http10,
			want{status: 200, ctype: "text/event-stream", check: openaiChatStream(false), provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true, billed: true}},
		{"body with leading whitespace", "POST", "/openai/v1/chat/completions", with(curlBase, "Content-Type: application/json; charset=utf-8", "Authorization: Bearer "+tokenVar), "\r\n  " + curlChat + "\n", contentLength,
			want{status: 200, ctype: "application/json", check: openaiChat, provider: "openai", model: "gpt-4o-mini", op: "chat.completions", billed: true}},
		// A UTF-8 BOM is not JSON (RFC 8259 §8.1: parsers may refuse it,
		// and the providers' do): a 400 in OpenAI's shape, never a call.
		{"body with a UTF-8 BOM", "POST", "/openai/v1/chat/completions", with(curlBase, "Content-Type: application/json", "Authorization: Bearer "+tokenVar), "\uFEFF" + curlChat, contentLength,
			want{status: 400, ctype: "application/json", check: openaiError(""), provider: "openai", op: "chat.completions", reject: "invalid_request"}},
		// A base URL written with a trailing slash: a path the gateway does
		// not serve, answered in OpenAI's shape as under serve, not with an
		// empty redirect.
		{"curl with a base URL's trailing slash (//)", "POST", "/openai/v1//chat/completions", with(curlBase, "Content-Type: application/json", "Authorization: Bearer "+tokenVar), curlChat, contentLength,
			want{status: 404, ctype: "application/json", check: openaiError(""), provider: "openai", reject: "unsupported"}},

		// ---- Anthropic ----
		{"anthropic-python messages", "POST", "/anthropic/v1/messages", anthropicPython, pyMessages, contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("type", "message"), provider: "anthropic", model: "claude-sonnet-4-5", op: "messages", billed: true}},
		{"anthropic-python messages.stream", "POST", "/anthropic/v1/messages", with(anthropicPython, "X-Stainless-Helper-Method: stream"), pyMsgStream, contentLength,
			want{status: 200, ctype: "text/event-stream", check: anthropicStream, provider: "anthropic", model: "claude-sonnet-4-5", op: "messages", stream: true, billed: true}},
		{"anthropic-python beta messages", "POST", "/anthropic/v1/messages?beta=true", anthropicPython, pyMessages, contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("type", "message"), provider: "anthropic", model: "claude-sonnet-4-5", op: "messages", billed: true}},
		{"anthropic-python count_tokens", "POST", "/anthropic/v1/messages/count_tokens", anthropicPython, pyCountTokens, contentLength,
			want{status: 200, ctype: "application/json", check: jsonNumber("input_tokens"), provider: "anthropic", model: "claude-sonnet-4-5", op: "messages.count_tokens", billed: true}},
		{"anthropic-python models.list", "GET", "/anthropic/v1/models?limit=20", anthropicPython, "", contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("has_more", false), provider: "anthropic", op: "models.list"}},
		{"curl messages (API reference)", "POST", "/anthropic/v1/messages", with(curlBase, "x-api-key: "+tokenVar, "anthropic-version: 2023-06-01", "content-type: application/json"), curlMessages, contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("type", "message"), provider: "anthropic", model: "claude-sonnet-4-5-20250929", op: "messages", billed: true}},
		{"anthropic-python bad key", "POST", "/anthropic/v1/messages", with(anthropicPython[:10], "X-Api-Key: sk-ant-not-a-gateway-token", "anthropic-version: 2023-06-01", "Content-Type: application/json"), pyMessages, contentLength,
			want{status: 401, ctype: "application/json", check: anthropicError("authentication_error"), provider: "anthropic", op: "messages", reject: "invalid_token"}},

		// ---- Gemini ----
		{"google-genai generate_content", "POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", geminiPython, pyGenerate, contentLength,
			want{status: 200, ctype: "application/json", check: geminiDoc(thoughtsAny), provider: "gemini", model: "gemini-2.5-flash", op: "generateContent", billed: true}},
		{"google-genai generate_content with thoughts", "POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", geminiPython, pyThinking, contentLength,
			want{status: 200, ctype: "application/json", check: geminiDoc(thoughtsShown), provider: "gemini", model: "gemini-2.5-flash", op: "generateContent", billed: true}},
		{"google-genai generate_content_stream", "POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", geminiPython, pyGenerate, contentLength,
			want{status: 200, ctype: "text/event-stream", check: geminiSSE, provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true, billed: true}},
		{"google-genai v1alpha", "POST", "/gemini/v1alpha/models/gemini-2.5-flash:generateContent", geminiPython, pyGenerate, contentLength,
			want{status: 200, ctype: "application/json", check: geminiDoc(thoughtsAny), provider: "gemini", model: "gemini-2.5-flash", op: "generateContent", billed: true}},
		{"google-genai count_tokens", "POST", "/gemini/v1beta/models/gemini-2.5-flash:countTokens", geminiPython, pyGenerate, contentLength,
			want{status: 200, ctype: "application/json", check: jsonNumber("totalTokens"), provider: "gemini", model: "gemini-2.5-flash", op: "countTokens", billed: true}},
		{"google-genai models.list", "GET", "/gemini/v1beta/models?pageSize=5", geminiPython, "", contentLength,
			want{status: 200, ctype: "application/json", check: jsonHas("nextPageToken", "tg-5"), provider: "gemini", op: "models.list"}},
		{"curl ?key= (API reference)", "POST", "/gemini/v1/models/gemini-2.5-flash:generateContent?key=" + tokenVar, with(curlBase, "Content-Type: application/json"), curlGemini, contentLength,
			want{status: 200, ctype: "application/json", check: geminiDoc(thoughtsAny), provider: "gemini", model: "gemini-2.5-flash", op: "generateContent", billed: true}},
		{"curl stream without alt: a JSON array", "POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", with(curlBase, "x-goog-api-key: "+tokenVar, "Content-Type: application/json"), curlGemini, contentLength,
			want{status: 200, ctype: "application/json", check: geminiArray, provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true, billed: true}},
		// $alt is Google's documented spelling of the alt system parameter
		// (sent as %24alt when escaped); the answer is SSE either way.
		{"curl stream with %24alt=sse", "POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?%24alt=sse", with(curlBase, "x-goog-api-key: "+tokenVar, "Content-Type: application/json"), curlGemini, contentLength,
			want{status: 200, ctype: "text/event-stream", check: geminiSSE, provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true, billed: true}},
		{"curl stream with $alt=sse and key=", "POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?$alt=sse&key=" + tokenVar, with(curlBase, "Content-Type: application/json"), curlGemini, contentLength,
			want{status: 200, ctype: "text/event-stream", check: geminiSSE, provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true, billed: true}},
		{"REST thinking config in snake_case", "POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", with(curlBase, "x-goog-api-key: "+tokenVar, "Content-Type: application/json"), restThinkingSnake, contentLength,
			want{status: 200, ctype: "application/json", check: geminiDoc(thoughtsShown), provider: "gemini", model: "gemini-2.5-flash", op: "generateContent", billed: true}},
		{"REST thinking_budget 0 in snake_case", "POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", with(curlBase, "x-goog-api-key: "+tokenVar, "Content-Type: application/json"), restNoThinking, contentLength,
			want{status: 200, ctype: "application/json", check: geminiDoc(thoughtsNone), provider: "gemini", model: "gemini-2.5-flash", op: "generateContent", billed: true}},
		{"google-genai bad key", "POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", with(geminiPython[:4], "x-goog-api-key: AIza-not-a-gateway-token"), pyGenerate, contentLength,
			want{status: 400, ctype: "application/json", check: geminiError("INVALID_ARGUMENT", "API_KEY_INVALID"), provider: "gemini", op: "generateContent", reject: "invalid_token"}},
	}

	type sent struct {
		c     wireCase
		id    string
		truth usage.Tokens
		out   outcome
	}
	var all []sent
	for _, c := range cases {
		ok := t.Run(c.name, func(t *testing.T) {
			before := len(d.Served(t))
			resp, body := send(t, gw, c)
			if resp.StatusCode != c.want.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.want.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, c.want.ctype) {
				t.Errorf("content-type %q, want %s…", ct, c.want.ctype)
			}
			c.want.check(t, body)
			id := resp.Header.Get("X-Tollgate-Request-Id")
			if id == "" {
				t.Fatal("no X-Tollgate-Request-Id")
			}
			fresh := d.Served(t)[before:]
			var truth usage.Tokens
			switch {
			case c.want.billed && len(fresh) != 1:
				t.Fatalf("the mock received %d requests, want 1", len(fresh))
			case c.want.billed:
				truth = fresh[0].Usage
			case len(fresh) != 0:
				t.Fatalf("the mock received %d requests, want none", len(fresh))
			}
			out := outcome{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type")}
			if len(fresh) == 0 {
				out.answer = string(body)
			} else {
				out.upstream = upstreamRequest(fresh[0])
			}
			all = append(all, sent{c, id, truth, out})
		})
		if !ok {
			all = append(all, sent{c: c}) // counted, not checked
		}
	}

	// Stopping the gateway flushes every record.
	d.Stop(t)
	outs := map[string]outcome{}
	recs := map[string]usage.Record{}
	for _, r := range d.Usage(t) {
		recs[r.RequestID] = r
	}
	for _, s := range all {
		if s.id == "" {
			continue
		}
		w := s.c.want
		r, ok := recs[s.id]
		if !ok {
			t.Errorf("%s: no usage record %s", s.c.name, s.id)
			continue
		}
		b, _ := json.Marshal(r)
		s.out.record = fmt.Sprintf("%s %s %s %s %d %s stream=%v estimated=%v", r.Provider, r.Model, r.Operation, r.Status, r.HTTPStatus, r.Reason, r.Stream, r.Estimated)
		outs[s.c.name] = s.out
		switch {
		case r.Provider != w.provider || r.Operation != w.op || r.Stream != w.stream:
			t.Errorf("%s: record %s, want provider %s operation %s stream %v", s.c.name, b, w.provider, w.op, w.stream)
		case w.reject != "":
			if r.Status != usage.StatusRejected || r.Reason != w.reject || r.HTTPStatus != w.status || !r.Tokens.IsZero() {
				t.Errorf("%s: record %s, want rejected %s %d, nothing billed", s.c.name, b, w.reject, w.status)
			}
		case r.Status != usage.StatusOK || r.HTTPStatus != 200 || r.Model != w.model || r.Estimated:
			t.Errorf("%s: record %s, want ok 200 model %q", s.c.name, b, w.model)
		case r.Tokens != s.truth:
			t.Errorf("%s: record tokens %+v, the mock billed %+v", s.c.name, r.Tokens, s.truth)
		}
	}
	return outs
}

// upstreamRequest is the request a mock received, less its body: the body
// carries the project's prompt_cache_key, and the mock checks its JSON.
func upstreamRequest(s harness.Served) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s?%s", s.Method, s.Path, s.RawQuery)
	for _, k := range slices.Sorted(maps.Keys(s.Header)) {
		if k != "Content-Length" { // the body's length: the cache key's
			fmt.Fprintf(&b, " | %s: %s", k, strings.Join(s.Header[k], ", "))
		}
	}
	return b.String()
}

// gateway is where a front door listens, and the token its workload holds.
type gateway struct{ addr, token string }

// gatewayAddr is the host:port of the door's gateway root, as the
// workload's variables give it.
func gatewayAddr(t *testing.T, d harness.FrontDoor) string {
	t.Helper()
	base := d.Env(t)["AI_GATEWAY_BASE_URL"]
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		t.Fatalf("AI_GATEWAY_BASE_URL %q: %v", base, err)
	}
	return u.Host
}

// send writes c's request on a fresh connection, byte for byte as given,
// and reads the answer the way an HTTP/1.x client does.
func send(t *testing.T, gw gateway, c wireCase) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)

	proto := "HTTP/1.1"
	if c.framing == http10 {
		proto = "HTTP/1.0"
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s %s\r\nHost: %s\r\n", c.method, strings.ReplaceAll(c.target, tokenVar, gw.token), proto, gw.addr)
	for _, h := range c.header {
		fmt.Fprintf(&head, "%s\r\n", strings.ReplaceAll(h, tokenVar, gw.token))
	}
	body := []byte(c.body)
	switch {
	case c.framing == chunked:
		head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		half := len(body) / 2
		fmt.Fprintf(&head, "%x;part=1\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", half, body[:half], len(body)-half, body[half:])
		body = nil
	case c.body != "":
		fmt.Fprintf(&head, "Content-Length: %d\r\n", len(body))
		if c.framing == expect100 {
			head.WriteString("Expect: 100-continue\r\n")
		}
		head.WriteString("\r\n")
	default:
		head.WriteString("\r\n")
	}
	if _, err := conn.Write(head.Bytes()); err != nil {
		t.Fatal(err)
	}
	if c.framing == expect100 {
		// Like curl, wait for the interim answer before sending the body.
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusContinue {
			t.Fatalf("status %d before the body, want 100 Continue", resp.StatusCode)
		}
	}
	if len(body) > 0 && c.framing != chunked {
		if _, err := conn.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	req := &http.Request{Method: c.method}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v (got %q)", err, b)
	}
	if c.framing == http10 && resp.ProtoMinor != 0 && len(resp.TransferEncoding) > 0 {
		t.Errorf("an HTTP/1.0 client got a %v body", resp.TransferEncoding)
	}
	return resp, b
}

// ---- what each client's parser reads ----

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	return m
}

func jsonHas(key string, v any) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		if got := decode(t, b)[key]; got != v {
			t.Errorf("%s = %v, want %v: %s", key, got, v, b)
		}
	}
}

func jsonNumber(key string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		if n, ok := decode(t, b)[key].(float64); !ok || n <= 0 {
			t.Errorf("%s is not a positive number: %s", key, b)
		}
	}
}

func openaiChat(t *testing.T, b []byte) {
	m := decode(t, b)
	if m["object"] != "chat.completion" || m["usage"] == nil {
		t.Errorf("not a chat completion with usage: %s", b)
	}
}

// sseEvent is one dispatched event, parsed as openai-python's and
// anthropic-sdk-python's SSEDecoder does (the WHATWG rules).
type sseEvent struct {
	event string
	data  []string
}

func sseEvents(b []byte) []sseEvent {
	var out []sseEvent
	var cur sseEvent
	text := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\r", "\n")
	for line := range strings.SplitSeq(text, "\n") {
		switch {
		case line == "":
			if cur.event != "" || cur.data != nil {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, ":"):
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "event":
				cur.event = v
			case "data":
				cur.data = append(cur.data, v)
			}
		}
	}
	return out
}

// openaiChatStream: openai-python json-decodes the data of every event
// but [DONE] (an event without data would raise), and raises on a
// top-level "error".
func openaiChatStream(usageChunk bool) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		evs := sseEvents(b)
		if len(evs) < 2 || strings.Join(evs[len(evs)-1].data, "\n") != "[DONE]" {
			t.Fatalf("the stream does not end with data: [DONE]: %s", b)
		}
		sawUsage := false
		for _, e := range evs[:len(evs)-1] {
			m := decode(t, []byte(strings.Join(e.data, "\n")))
			if m["object"] != "chat.completion.chunk" || m["error"] != nil {
				t.Errorf("not a chunk: %v", m)
			}
			if u, ok := m["usage"]; ok {
				switch {
				case u != nil:
					sawUsage = true
				case !usageChunk:
					t.Errorf("a chunk carries usage: null, which OpenAI sends only to clients that ask for usage")
				}
			}
		}
		if sawUsage != usageChunk {
			t.Errorf("usage chunk sent: %v, want %v", sawUsage, usageChunk)
		}
	}
}

// namedEvents: every event has a name and JSON data whose type is that
// name; first and last are the given ones.
func namedEvents(first, last string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		evs := sseEvents(b)
		if len(evs) < 2 {
			t.Fatalf("%d events: %s", len(evs), b)
		}
		for _, e := range evs {
			m := decode(t, []byte(strings.Join(e.data, "\n")))
			if e.event == "" || m["type"] != e.event {
				t.Errorf("event %q with type %v", e.event, m["type"])
			}
		}
		if evs[0].event != first || evs[len(evs)-1].event != last {
			t.Errorf("events %s … %s, want %s … %s", evs[0].event, evs[len(evs)-1].event, first, last)
		}
	}
}

// anthropicStream: anthropic-sdk-python dispatches on the event name only.
func anthropicStream(t *testing.T, b []byte) { namedEvents("message_start", "message_stop")(t, b) }

// Gemini: google-genai (Python) yields the rest of each line starting with
// "data: " as one JSON document; other non-empty lines are buffered until
// their braces balance, so an event: line or a comment breaks it.
func geminiSSE(t *testing.T, b []byte) {
	n := 0
	for line := range strings.SplitSeq(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q is not a data: line: %s", line, b)
		}
		if m := decode(t, []byte(data)); m["candidates"] == nil || m["error"] != nil {
			t.Errorf("not a GenerateContentResponse: %s", data)
		}
		n++
	}
	if n == 0 {
		t.Fatalf("no chunks: %s", b)
	}
}

func geminiArray(t *testing.T, b []byte) {
	var elems []map[string]any
	if err := json.Unmarshal(b, &elems); err != nil || len(elems) == 0 {
		t.Fatalf("not a JSON array of responses (%v): %s", err, b)
	}
	if elems[len(elems)-1]["usageMetadata"] == nil {
		t.Errorf("the last element has no usageMetadata: %s", b)
	}
}

type thoughts int

const (
	thoughtsAny   thoughts = iota
	thoughtsShown          // a part marked thought, and thoughtsTokenCount
	thoughtsNone           // no thinking billed
)

func geminiDoc(th thoughts) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		var r struct {
			Candidates []struct {
				Content struct {
					Parts []struct {
						Text    string
						Thought bool
					}
				}
			}
			UsageMetadata *struct {
				PromptTokenCount, ThoughtsTokenCount int64
			}
		}
		if err := json.Unmarshal(b, &r); err != nil || len(r.Candidates) == 0 || r.UsageMetadata == nil || r.UsageMetadata.PromptTokenCount == 0 {
			t.Fatalf("not a GenerateContentResponse with usage (%v): %s", err, b)
		}
		shown := false
		for _, p := range r.Candidates[0].Content.Parts {
			shown = shown || p.Thought
		}
		switch {
		case th == thoughtsShown && (!shown || r.UsageMetadata.ThoughtsTokenCount == 0):
			t.Errorf("includeThoughts: thought part %v, thoughtsTokenCount %d; want both: %s", shown, r.UsageMetadata.ThoughtsTokenCount, b)
		case th == thoughtsNone && (shown || r.UsageMetadata.ThoughtsTokenCount != 0):
			t.Errorf("thinking budget 0: thought part %v, thoughtsTokenCount %d; want none: %s", shown, r.UsageMetadata.ThoughtsTokenCount, b)
		}
	}
}

func openaiError(code string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		var e struct {
			Error *struct {
				Message, Type string
				Code          *string
			}
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("not OpenAI's error shape: %s", b)
		}
		if code != "" && (e.Error.Code == nil || *e.Error.Code != code) {
			t.Errorf("code %v, want %s: %s", e.Error.Code, code, b)
		}
	}
}

func anthropicError(typ string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		var e struct {
			Type  string
			Error *struct{ Type, Message string }
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Type != "error" || e.Error == nil || e.Error.Type != typ || e.Error.Message == "" {
			t.Fatalf("not Anthropic's %s shape: %s", typ, b)
		}
	}
}

func geminiError(status, reason string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		var e struct {
			Error *struct {
				Code    int
				Message string
				Status  string
				Details []struct{ Reason string }
			}
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || e.Error.Code < 400 || e.Error.Status != status || e.Error.Message == "" {
			t.Fatalf("not Google's %s error shape: %s", status, b)
		}
		if len(e.Error.Details) == 0 || e.Error.Details[0].Reason != reason {
			t.Errorf("details %+v, want reason %s", e.Error.Details, reason)
		}
	}
}
