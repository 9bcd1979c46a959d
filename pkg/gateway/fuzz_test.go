package gateway_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// FuzzRequest drives the request side of every provider with arbitrary
// targets and bodies. Whatever comes in, the gateway never panics, answers
// refusals with JSON in a 4xx/5xx, and forwards only JSON bodies with no
// client credential anywhere in the upstream request.
func FuzzRequest(f *testing.F) {
	env := newBenchEnv(f)
	seeds := []struct{ target, body string }{
		{"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/openai/chat/completions?key=x", `{"model":"gpt-4o-mini","mod\u0065l":"gpt-5","stream_options":{"include_usage":false},"stream":true}`},
		{"/openai/v1/responses", `{"model":"gpt-4o-mini","input":"hi","previous_response_id":null,"service_tier":"auto"}`},
		{"/anthropic/v1/messages?beta=true", `{"model":"claude-haiku-4-5","max_tokens":5,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"5m"}}]}`},
		{"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=abc", `{"contents":[{"parts":[{"text":"hi"}]}]}`},
		{"/gemini/v1/models/gemini%2D2.5-flash:generateContent", `{"contents":[]}`},
		{"/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents", `{"requests":[{"content":{"parts":[{"text":"a"}]}}]}`},
		{"/openai/v1/models/gpt-4o", ``},
	}
	for _, s := range seeds {
		f.Add(s.target, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, target string, body []byte) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		for _, method := range []string{"POST", "GET"} {
			x := env.g.NewExchange(context.Background(), "fuzz")
			hdr := gateway.Headers{
				{Name: "Authorization", Value: "Bearer " + env.token},
				{Name: "Anthropic-Version", Value: "2023-06-01"},
				{Name: "X-Secret-Client", Value: "client-only"},
			}
			out := x.RequestHeaders(method, target, hdr)
			if out.Action == gateway.NeedBody {
				out = x.RequestBody(body)
			}
			switch out.Action {
			case gateway.Respond:
				r := out.Response
				if r.Status >= 200 && r.Status < 300 {
					if !json.Valid(r.Body) {
						t.Fatalf("local answer is not JSON: %q", r.Body)
					}
					break
				}
				if r.Status < 400 || !json.Valid(r.Body) {
					t.Fatalf("refusal %d with body %q", r.Status, r.Body)
				}
				if strings.Contains(string(r.Body), env.token) {
					t.Fatal("the token is echoed in an error")
				}
			case gateway.Forward:
				up := out.Upstream
				if !json.Valid(up.Body) {
					t.Fatalf("forwarded a body that is not JSON: %q", up.Body)
				}
				for _, h := range up.Header {
					if strings.Contains(h.Value, env.token) || strings.EqualFold(h.Name, "x-secret-client") {
						t.Fatalf("client header %s reached upstream", h.Name)
					}
				}
				_, query, _ := strings.Cut(up.Path, "?")
				if strings.Contains(up.Path, env.token) || gateway.QueryValue(query, "key") != "" {
					t.Fatalf("a credential in the upstream path %q", up.Path)
				}
			default:
				t.Fatalf("action %d", out.Action)
			}
			x.Settle(gateway.Completed)
		}
	})
}
