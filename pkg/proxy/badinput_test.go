package proxy_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// nativeError is a gateway error body parsed in its provider's own shape.
type nativeError struct {
	kind    string // OpenAI code (or type when code is null), Anthropic error.type, Gemini status
	message string
	param   string // OpenAI only
}

// parseNative checks that body is exactly the provider's native error JSON
// (providers.md §2.5, §3.5, §4.4, §7) and returns its parts.
func parseNative(t *testing.T, provider string, status int, body []byte) nativeError {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("error body is not a JSON object: %v: %s", err, body)
	}
	str := func(raw json.RawMessage, what string) string {
		t.Helper()
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s is not a string in %s", what, body)
		}
		return s
	}
	nullableStr := func(raw json.RawMessage, what string) string {
		t.Helper()
		if raw == nil {
			t.Fatalf("%s missing in %s", what, body)
		}
		if string(raw) == "null" {
			return ""
		}
		return str(raw, what)
	}
	var e map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &e); err != nil || e == nil {
		t.Fatalf("no error object in %s", body)
	}
	switch provider {
	case "openai":
		// {"error":{"message","type","param","code"}}, param and code nullable.
		if len(top) != 1 || len(e) != 4 {
			t.Errorf("OpenAI error must be exactly {error:{message,type,param,code}}: %s", body)
		}
		out := nativeError{message: str(e["message"], "error.message")}
		typ := str(e["type"], "error.type")
		out.param = nullableStr(e["param"], "error.param")
		out.kind = nullableStr(e["code"], "error.code")
		if out.kind == "" {
			out.kind = typ
		}
		return out
	case "anthropic":
		// {"type":"error","error":{"type","message"},"request_id":…}
		if str(top["type"], "type") != "error" {
			t.Errorf(`Anthropic error must have "type":"error": %s`, body)
		}
		if len(e) != 2 {
			t.Errorf("Anthropic error object must be {type,message}: %s", body)
		}
		return nativeError{kind: str(e["type"], "error.type"), message: str(e["message"], "error.message")}
	case "gemini":
		// {"error":{"code","message","status"[,"details"]}}
		var code int
		if err := json.Unmarshal(e["code"], &code); err != nil {
			t.Fatalf("Gemini error.code is not a number: %s", body)
		}
		if code != status {
			t.Errorf("Gemini error.code %d, HTTP status %d", code, status)
		}
		if len(top) != 1 {
			t.Errorf("Gemini error must be exactly {error:{…}}: %s", body)
		}
		for k := range e {
			switch k {
			case "code", "message", "status", "details":
			default:
				t.Errorf("unexpected key %q in Gemini error: %s", k, body)
			}
		}
		return nativeError{kind: str(e["status"], "error.status"), message: str(e["message"], "error.message")}
	}
	t.Fatalf("unknown provider %s", provider)
	return nativeError{}
}

// per gives a value per provider, in fixtures order (openai, anthropic,
// gemini).
type per[T any] [3]T

func (p per[T]) of(provider string) T {
	switch provider {
	case "openai":
		return p[0]
	case "anthropic":
		return p[1]
	}
	return p[2]
}

// badCase is one refused request. Fields given per provider hold the
// expectation for openai, anthropic, gemini.
type badCase struct {
	name      string
	providers []string // nil: all three
	small     bool     // run against the stack with a 1 KiB body limit
	// req builds the request; tok is a valid token for acct-1.
	req    func(s *stack, f providerFixture) (r request, secret string)
	status per[int]
	reason gateway.Code
	kind   per[string]
	param  string         // OpenAI param, when set
	msg    *regexp.Regexp // the message must match, when set
	// authed: the token was verified (valid, or well signed but expired or
	// revoked), so the record names its account. unauth: no trustworthy
	// token, so the record must name no account.
	authed, unauth bool
	// model, when set, is the model the record must name: a refused body
	// whose model could be read is counted under it.
	model string
}

func same[T any](v T) per[T] { return per[T]{v, v, v} }

var (
	tokenStatus = per[int]{401, 401, 400}
	tokenKind   = per[string]{"invalid_api_key", "authentication_error", "INVALID_ARGUMENT"}
	badReqKind  = per[string]{"invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"}
)

// withBody returns f's usual request with a different body.
func withBody(body []byte) func(s *stack, f providerFixture) (request, string) {
	return func(s *stack, f providerFixture) (request, string) {
		return request{path: f.path, body: body, header: f.header(s.token)}, ""
	}
}

// withToken returns f's usual request authenticated by the token tok makes.
func withToken(tok func(s *stack) string) func(s *stack, f providerFixture) (request, string) {
	return func(s *stack, f providerFixture) (request, string) {
		t := tok(s)
		return request{path: f.path, body: f.body(f.model, promptMarker+" hello"), header: f.header(t)}, t
	}
}

func path(method, p string, body string) func(s *stack, f providerFixture) (request, string) {
	return func(s *stack, f providerFixture) (request, string) {
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		return request{method: method, path: p, body: b, header: f.header(s.token)}, ""
	}
}

// manyWords is a prompt of n real words, one o200k token each.
func manyWords(n int) string {
	words := []string{" the", " cat", " sat", " on", " a", " mat", " and", " then", " it", " slept"}
	var b strings.Builder
	b.Grow(n * 6)
	b.WriteString(promptMarker)
	for i := range n {
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

func TestBadInputNeverReachesUpstream(t *testing.T) {
	other, err := auth.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	long := manyWords(250_000)
	cases := []badCase{
		{
			name: "missing token",
			req: func(s *stack, f providerFixture) (request, string) {
				h := f.header(s.token)
				h.Del("Authorization")
				h.Del("x-api-key")
				h.Del("x-goog-api-key")
				return request{path: f.path, body: f.body(f.model, promptMarker), header: h}, ""
			},
			status: tokenStatus, reason: gateway.CodeBadToken, kind: tokenKind, unauth: true,
		},
		{
			name:   "garbled token",
			req:    withToken(func(*stack) string { return "sk-garbled-0123456789abcdef" }),
			status: tokenStatus, reason: gateway.CodeBadToken, kind: tokenKind, unauth: true,
		},
		{
			name: "garbled token with the gateway prefix",
			req: withToken(func(s *stack) string {
				return s.token[:len(s.token)-10] + "AAAAAAAAAA"
			}),
			status: tokenStatus, reason: gateway.CodeBadToken, kind: tokenKind, unauth: true,
		},
		{
			name: "expired token",
			req: withToken(func(s *stack) string {
				return s.mint(auth.Claims{Account: "acct-1", Project: "proj-1",
					IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})
			}),
			status: tokenStatus, reason: gateway.CodeExpiredToken, kind: tokenKind, authed: true,
		},
		{
			name: "forged token: same key id, another key",
			req: withToken(func(s *stack) string {
				_, priv, err := ed25519.GenerateKey(nil)
				if err != nil {
					t.Fatal(err)
				}
				forger := auth.NewSigner(s.signer.KeyID(), priv)
				tok, err := forger.Mint(auth.Claims{Account: "acct-1", Project: "proj-1", ExpiresAt: time.Now().Add(time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}),
			status: tokenStatus, reason: gateway.CodeBadToken, kind: tokenKind, unauth: true,
		},
		{
			name: "forged token: unknown key",
			req: withToken(func(s *stack) string {
				tok, err := other.Mint(auth.Claims{Account: "acct-1", Project: "proj-1", ExpiresAt: time.Now().Add(time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}),
			status: tokenStatus, reason: gateway.CodeBadToken, kind: tokenKind, unauth: true,
		},
		{
			name: "revoked token",
			req: withToken(func(s *stack) string {
				id := fmt.Sprintf("revoked-%d", s.seq.Add(1))
				tok := s.mint(auth.Claims{Account: "acct-1", Project: "proj-1", TokenID: id})
				s.revoked.Add(id)
				return tok
			}),
			status: tokenStatus, reason: gateway.CodeRevokedToken, kind: tokenKind, authed: true,
		},
		{
			name:   "body not JSON",
			req:    withBody([]byte("this is " + promptMarker + " and not JSON")),
			status: same(400), reason: gateway.CodeInvalidRequest, kind: badReqKind, authed: true,
		},
		{
			name:   "body is a JSON array",
			req:    withBody([]byte(`["` + promptMarker + `"]`)),
			status: same(400), reason: gateway.CodeInvalidRequest, kind: badReqKind, authed: true,
		},
		{
			name:   "body too large",
			small:  true,
			req:    withBodyOf(func(f providerFixture) []byte { return f.body(f.model, promptMarker+strings.Repeat(" word", 400)) }),
			status: same(413), reason: gateway.CodeTooLarge,
			kind: per[string]{"body_too_large", "request_too_large", "INVALID_ARGUMENT"}, authed: true,
		},
		{
			name:  "body too large, sent chunked",
			small: true,
			req: func(s *stack, f providerFixture) (request, string) {
				r, _ := withBodyOf(func(f providerFixture) []byte {
					return f.body(f.model, promptMarker+strings.Repeat(" word", 400))
				})(s, f)
				r.chunked = true
				return r, ""
			},
			status: same(413), reason: gateway.CodeTooLarge,
			kind: per[string]{"body_too_large", "request_too_large", "INVALID_ARGUMENT"}, authed: true,
		},
		{
			name:      "missing model",
			providers: []string{"openai", "anthropic"},
			req:       withBody([]byte(`{"messages":[{"role":"user","content":"` + promptMarker + `"}],"max_tokens":5}`)),
			status:    same(400), reason: gateway.CodeInvalidRequest, kind: badReqKind, param: "model", authed: true,
		},
		{
			name:      "model is not a string",
			providers: []string{"openai", "anthropic"},
			req:       withBody([]byte(`{"model":42,"messages":[{"role":"user","content":"` + promptMarker + `"}],"max_tokens":5}`)),
			status:    same(400), reason: gateway.CodeInvalidRequest, kind: badReqKind, param: "model", authed: true,
		},
		{
			name:      "missing model in the path",
			providers: []string{"gemini"},
			req:       path(http.MethodPost, "/gemini/v1beta/models/:generateContent", `{"contents":[]}`),
			status:    same(404), reason: gateway.CodeUnsupported, kind: same("NOT_FOUND"),
		},
		{
			name: "unknown model",
			req: func(s *stack, f providerFixture) (request, string) {
				p := f.path
				if f.name == "gemini" {
					p = "/gemini/v1beta/models/gemini-9-ultra:generateContent"
				}
				return request{path: p, body: f.body("gemini-9-ultra", promptMarker), header: f.header(s.token)}, ""
			},
			status: same(404), reason: gateway.CodeModelNotFound,
			kind: per[string]{"model_not_found", "not_found_error", "NOT_FOUND"}, authed: true,
			msg: regexp.MustCompile(`gemini-9-ultra`),
		},
		{
			// A model id that cannot be one (a slash once decoded): the
			// message says so, instead of naming an empty model.
			name:      "OpenAI model retrieve with a slash in the id",
			providers: []string{"openai"},
			req:       path(http.MethodGet, "/openai/v1/models/gpt-4o-mini%2Fx", ""),
			status:    same(404), reason: gateway.CodeModelNotFound, kind: same("model_not_found"),
			msg: regexp.MustCompile("^[^`]*not valid"),
		},
		{
			name:      "OpenAI batches",
			providers: []string{"openai"},
			req:       path(http.MethodPost, "/openai/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}`),
			status:    same(404), reason: gateway.CodeUnsupported, kind: same("unsupported"), msg: notSupported,
		},
		{
			name:      "OpenAI files",
			providers: []string{"openai"},
			req:       path(http.MethodPost, "/openai/v1/files", `{}`),
			status:    same(404), reason: gateway.CodeUnsupported, kind: same("unsupported"), msg: notSupported,
		},
		{
			name:      "OpenAI stored response",
			providers: []string{"openai"},
			req:       path(http.MethodGet, "/openai/v1/responses/resp_67ccd2bed1ec8190", ""),
			status:    same(404), reason: gateway.CodeUnsupported, kind: same("unsupported"), msg: notSupported,
		},
		{
			name:      "Anthropic message batches",
			providers: []string{"anthropic"},
			req:       path(http.MethodPost, "/anthropic/v1/messages/batches", `{"requests":[]}`),
			status:    same(404), reason: gateway.CodeUnsupported, kind: same("not_found_error"), msg: notSupported,
		},
		{
			name:      "Gemini batchGenerateContent",
			providers: []string{"gemini"},
			req:       path(http.MethodPost, "/gemini/v1beta/models/gemini-2.5-flash:batchGenerateContent", `{"batch":{}}`),
			status:    same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported,
		},
		{
			name:      "Gemini cachedContents create",
			providers: []string{"gemini"},
			req:       path(http.MethodPost, "/gemini/v1beta/cachedContents", `{"model":"models/gemini-2.5-flash","contents":[]}`),
			status:    same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported,
		},
		{
			name:      "Gemini cachedContents get",
			providers: []string{"gemini"},
			req:       path(http.MethodGet, "/gemini/v1beta/cachedContents/abc123", ""),
			status:    same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported,
		},
		{
			name:      "Gemini body cachedContent",
			providers: []string{"gemini"},
			req: withBody([]byte(`{"cachedContent":"cachedContents/abc123","contents":[{"role":"user","parts":[{"text":"` +
				promptMarker + `"}]}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported, authed: true,
		},
		{
			name:      "Gemini body cached_content",
			providers: []string{"gemini"},
			req: withBody([]byte(`{"cached_content":"cachedContents/abc123","contents":[{"role":"user","parts":[{"text":"` +
				promptMarker + `"}]}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported, authed: true,
		},
		{
			name:      "Gemini serviceTier priority",
			providers: []string{"gemini"},
			req: withBody([]byte(`{"serviceTier":"priority","contents":[{"role":"user","parts":[{"text":"` +
				promptMarker + `"}]}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported, authed: true,
		},
		{
			name:      "Gemini service_tier SERVICE_TIER_PRIORITY",
			providers: []string{"gemini"},
			req: withBody([]byte(`{"service_tier":"SERVICE_TIER_PRIORITY","contents":[{"role":"user","parts":[{"text":"` +
				promptMarker + `"}]}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("INVALID_ARGUMENT"), msg: notSupported, authed: true,
		},
		{
			name:      "Anthropic fast mode",
			providers: []string{"anthropic"},
			req: withBody([]byte(`{"model":"claude-sonnet-4-5","max_tokens":5,"speed":"fast","messages":[{"role":"user","content":"` +
				promptMarker + `"}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("invalid_request_error"), msg: notSupported, authed: true,
			model: "claude-sonnet-4-5",
		},
		{
			name:      "Anthropic server-side fallbacks",
			providers: []string{"anthropic"},
			req: withBody([]byte(`{"model":"claude-sonnet-4-5","max_tokens":5,"fallbacks":[{"model":"claude-opus-4-5"}],"messages":[{"role":"user","content":"` +
				promptMarker + `"}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("invalid_request_error"), msg: notSupported, authed: true,
			model: "claude-sonnet-4-5",
		},
		{
			name:      "Anthropic advisor tool",
			providers: []string{"anthropic"},
			req: withBody([]byte(`{"model":"claude-sonnet-4-5","max_tokens":5,"tools":[{"type":"custom","name":"x","input_schema":{"type":"object"}},` +
				`{"max_tokens":1024,"model":"claude-opus-4-5","name":"advisor","type":"advisor_20260301"}],"messages":[{"role":"user","content":"` +
				promptMarker + `"}]}`)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("invalid_request_error"), msg: notSupported, authed: true,
			model: "claude-sonnet-4-5",
		},
		{
			name:   "over 200k tokens",
			req:    func(s *stack, f providerFixture) (request, string) { return withBody(f.body(f.model, long))(s, f) },
			status: same(400), reason: gateway.CodeContextTooLong,
			kind:      per[string]{"context_length_exceeded", "invalid_request_error", "INVALID_ARGUMENT"},
			authed:    true,
			msg:       nil, // per provider, checked in contextMessage
			providers: nil,
		},
		{
			// Numbers are tokens too: a tool result of 250,000 numbers.
			name:      "over 200k tokens of numbers",
			providers: []string{"gemini"},
			req: func(s *stack, f providerFixture) (request, string) {
				nums := strings.Repeat("7,", 250_000) + "7"
				return withBody([]byte(`{"contents":[{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"values":[`+nums+`]}}}]}]}`))(s, f)
			},
			status: same(400), reason: gateway.CodeContextTooLong, kind: same("INVALID_ARGUMENT"), authed: true,
		},
		{
			name:      "over 200k tokens, Responses API",
			providers: []string{"openai"},
			req: func(s *stack, f providerFixture) (request, string) {
				return request{path: "/openai/v1/responses", header: f.header(s.token),
					body: fmt.Appendf(nil, `{"model":"gpt-4o-mini","input":%q}`, long)}, ""
			},
			status: same(400), reason: gateway.CodeContextTooLong, kind: same("context_length_exceeded"),
			param: "input", authed: true,
		},
		{
			name: "wrong method",
			req: func(s *stack, f providerFixture) (request, string) {
				return request{method: http.MethodGet, path: f.path, header: f.header(s.token)}, ""
			},
			status: same(405), reason: gateway.CodeMethod,
			kind: per[string]{"method_not_allowed", "invalid_request_error", "INVALID_ARGUMENT"},
		},
		{
			name: "wrong method on the listing",
			req: func(s *stack, f providerFixture) (request, string) {
				p := map[string]string{"openai": "/openai/v1/models", "anthropic": "/anthropic/v1/models", "gemini": "/gemini/v1beta/models"}[f.name]
				return request{method: http.MethodPost, path: p, body: []byte(`{}`), header: f.header(s.token)}, ""
			},
			status: same(405), reason: gateway.CodeMethod,
			kind: per[string]{"method_not_allowed", "invalid_request_error", "INVALID_ARGUMENT"},
		},
	}
	// Listing pages the gateway cannot serve.
	for _, c := range []struct{ provider, path, param string }{
		{"anthropic", "/anthropic/v1/models?limit=0", "limit"},
		{"anthropic", "/anthropic/v1/models?limit=1001", "limit"},
		{"anthropic", "/anthropic/v1/models?after_id=claude-nope", "after_id"},
		{"gemini", "/gemini/v1beta/models?pageToken=abc", "pageToken"},
		{"gemini", "/gemini/v1beta/models?pageSize=-1", "pageSize"},
	} {
		cases = append(cases, badCase{
			name: "listing " + c.path, providers: []string{c.provider},
			req:    path(http.MethodGet, c.path, ""),
			status: same(400), reason: gateway.CodeInvalidRequest, kind: per[string]{"", "invalid_request_error", "INVALID_ARGUMENT"},
			param: c.param, authed: true,
		})
	}
	// OpenAI policy.
	for _, ep := range []string{"/openai/v1/chat/completions", "/openai/v1/responses"} {
		for _, tier := range []string{"priority", "fast", "ultrafast"} {
			cases = append(cases, badCase{
				name:      fmt.Sprintf("service_tier %s on %s", tier, ep),
				providers: []string{"openai"},
				req: path(http.MethodPost, ep, fmt.Sprintf(`{"model":"gpt-4o-mini","service_tier":%q,"messages":[{"role":"user","content":%q}],"input":%q}`,
					tier, promptMarker, promptMarker)),
				status: same(400), reason: gateway.CodeUnsupported, kind: same("unsupported"), param: "service_tier",
				msg: notSupported, authed: true, model: "gpt-4o-mini",
			})
		}
	}
	for _, field := range []struct{ name, json string }{
		{"previous_response_id", `"resp_abc"`}, {"conversation", `"conv_abc"`}, {"conversation", `{"id":"conv_abc"}`}, {"background", `true`},
	} {
		cases = append(cases, badCase{
			name:      "Responses " + field.name + " " + field.json,
			providers: []string{"openai"},
			req: path(http.MethodPost, "/openai/v1/responses",
				fmt.Sprintf(`{"model":"gpt-4o-mini","input":%q,%q:%s}`, promptMarker, field.name, field.json)),
			status: same(400), reason: gateway.CodeUnsupported, kind: same("unsupported"), param: field.name,
			msg: notSupported, authed: true, model: "gpt-4o-mini",
		})
	}
	// Anthropic policy.
	const ttl1h = `{"type":"ephemeral","ttl":"1h"}`
	for _, where := range []struct{ name, body string }{
		{"top level", `{"model":"claude-sonnet-4-5","max_tokens":5,"cache_control":` + ttl1h + `,"messages":[{"role":"user","content":"` + promptMarker + `"}]}`},
		{"system", `{"model":"claude-sonnet-4-5","max_tokens":5,"system":[{"type":"text","text":"` + promptMarker + `","cache_control":` + ttl1h + `}],"messages":[{"role":"user","content":"hi"}]}`},
		{"message content block", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"` + promptMarker + `","cache_control":` + ttl1h + `}]}]}`},
		{"tools", `{"model":"claude-sonnet-4-5","max_tokens":5,"tools":[{"name":"get_weather","input_schema":{"type":"object"},"cache_control":` + ttl1h + `}],"messages":[{"role":"user","content":"` + promptMarker + `"}]}`},
		{"tool_result block", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"` + promptMarker + `","cache_control":` + ttl1h + `}]}]}`},
	} {
		cases = append(cases, badCase{
			name:      "1h cache TTL in " + where.name,
			providers: []string{"anthropic"},
			req:       withBody([]byte(where.body)),
			status:    same(400), reason: gateway.CodeUnsupported, kind: same("invalid_request_error"),
			msg: regexp.MustCompile(`(?i)ttl.*not supported`), authed: true, model: "claude-sonnet-4-5",
		})
	}
	for _, v := range []struct{ name, value string }{{"missing", ""}, {"unknown", "2099-01-01"}} {
		cases = append(cases, badCase{
			name:      v.name + " anthropic-version",
			providers: []string{"anthropic"},
			req: func(s *stack, f providerFixture) (request, string) {
				h := f.header(s.token)
				h.Del("anthropic-version")
				if v.value != "" {
					h.Set("anthropic-version", v.value)
				}
				return request{path: f.path, body: f.body(f.model, promptMarker), header: h}, ""
			},
			status: same(400), reason: gateway.CodeInvalidRequest, kind: same("invalid_request_error"),
			msg: regexp.MustCompile(`anthropic-version`), authed: true,
		})
	}

	def := newStack(t, stackOptions{})
	small := newStack(t, stackOptions{maxBody: 1 << 10})
	for _, c := range cases {
		for _, f := range fixtures {
			if c.providers != nil && !contains(c.providers, f.name) {
				continue
			}
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				s := def
				if c.small {
					s = small
				}
				s.t = t
				before := s.servedAll()
				r, secret := c.req(s, f)
				res := s.do(r)

				want := c.status.of(f.name)
				if res.status != want {
					t.Errorf("status %d, want %d: %s", res.status, want, res.body)
				}
				if ct := res.header.Get("content-type"); ct != "application/json" {
					t.Errorf("content-type %q, want application/json", ct)
				}
				ne := parseNative(t, f.name, res.status, res.body)
				if k := c.kind.of(f.name); ne.kind != k {
					t.Errorf("native error kind %q, want %q: %s", ne.kind, k, res.body)
				}
				if c.param != "" && f.name == "openai" && ne.param != c.param {
					t.Errorf("param %q, want %q", ne.param, c.param)
				}
				if c.msg != nil && !c.msg.MatchString(ne.message) {
					t.Errorf("message %q does not match %v", ne.message, c.msg)
				}
				if c.reason == gateway.CodeContextTooLong {
					checkContextMessage(t, f.name, ne.message)
				}
				if c.reason == gateway.CodeBadToken || c.reason == gateway.CodeExpiredToken || c.reason == gateway.CodeRevokedToken {
					checkTokenError(t, f.name, res.body)
				}
				for _, leak := range []string{s.token, secret, promptMarker} {
					if leak != "" && bytes.Contains(res.body, []byte(leak)) {
						t.Errorf("error body leaks %q: %s", leak, res.body)
					}
				}
				if res.id == "" {
					t.Fatal("no x-tollgate-request-id on the error response")
				}

				rec := s.rec.wait(t, res.id)
				if rec.Status != usage.StatusRejected || rec.Reason != string(c.reason) {
					t.Errorf("record status %q reason %q, want rejected %q", rec.Status, rec.Reason, c.reason)
				}
				if rec.HTTPStatus != res.status || rec.Provider != f.name {
					t.Errorf("record http_status %d provider %q, want %d %q", rec.HTTPStatus, rec.Provider, res.status, f.name)
				}
				if !rec.Tokens.IsZero() || rec.Estimated {
					t.Errorf("a rejected request recorded usage: %+v estimated=%v", rec.Tokens, rec.Estimated)
				}
				if c.authed && (rec.Account != "acct-1" || rec.Project != "proj-1") {
					t.Errorf("record account %q project %q, want acct-1 proj-1 (the token was verified)", rec.Account, rec.Project)
				}
				if c.model != "" && rec.Model != c.model {
					t.Errorf("record model %q, want %q", rec.Model, c.model)
				}
				if c.unauth && (rec.Account != "" || rec.Project != "") {
					t.Errorf("record account %q project %q for an unverified token, want none", rec.Account, rec.Project)
				}
				if after := s.servedAll(); after != before {
					t.Errorf("upstream was called: served %d → %d", before, after)
				}
			})
		}
	}
}

var notSupported = regexp.MustCompile(`(?i)not support`)

func withBodyOf(body func(f providerFixture) []byte) func(s *stack, f providerFixture) (request, string) {
	return func(s *stack, f providerFixture) (request, string) {
		return request{path: f.path, body: body(f), header: f.header(s.token)}, ""
	}
}

// checkContextMessage checks the provider's native context-length wording,
// with a token count above the limit.
func checkContextMessage(t *testing.T, provider, msg string) {
	t.Helper()
	re := map[string]*regexp.Regexp{
		"openai":    regexp.MustCompile(`(\d+) tokens`),
		"anthropic": regexp.MustCompile(`^prompt is too long: (\d+) tokens > 200000 maximum`),
		"gemini":    regexp.MustCompile(`^The input token count \((\d+)\) exceeds the maximum number of tokens allowed \(200000\)`),
	}[provider]
	m := re.FindStringSubmatch(msg)
	if m == nil {
		t.Errorf("context message %q does not match %v", msg, re)
		return
	}
	if n, _ := strconv.Atoi(m[1]); n <= 200_000 {
		t.Errorf("context message states %d tokens, not above the limit", n)
	}
}

// checkTokenError checks the Gemini bad-key details SDKs look for.
func checkTokenError(t *testing.T, provider string, body []byte) {
	t.Helper()
	if provider != "gemini" {
		return
	}
	if !bytes.Contains(body, []byte(`"reason":"API_KEY_INVALID"`)) || !bytes.Contains(body, []byte("API key not valid")) {
		t.Errorf("Gemini bad-key error lacks API_KEY_INVALID / 'API key not valid': %s", body)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestLargeImageIsNotTooLong: about 1 MiB of base64 image data is media,
// not 300k tokens of text: it is forwarded, not refused.
func TestLargeImageIsNotTooLong(t *testing.T) {
	raw := make([]byte, 768<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	b64 := base64.StdEncoding.EncodeToString(raw) // 1 MiB
	bodies := map[string]string{
		"openai": `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},` +
			`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64 + `"}}]}]}`,
		"anthropic": `{"model":"claude-sonnet-4-5","max_tokens":32,"messages":[{"role":"user","content":[` +
			`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + b64 + `"}},{"type":"text","text":"What is this?"}]}]}`,
		"gemini": `{"contents":[{"role":"user","parts":[{"text":"What is this?"},{"inlineData":{"mimeType":"image/png","data":"` + b64 + `"}}]}]}`,
	}
	s := newStack(t, stackOptions{})
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: f.path, body: []byte(bodies[f.name]), header: f.header(s.token)})
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %.300s", res.status, res.body)
			}
			srv := s.onlyServed(f.name)
			if len(srv.Body) < 1<<20 {
				t.Errorf("upstream got %d bytes, want the whole image", len(srv.Body))
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusOK {
				t.Errorf("record status %q reason %q", rec.Status, rec.Reason)
			}
		})
	}
}
