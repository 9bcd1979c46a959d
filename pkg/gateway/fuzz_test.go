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

// FuzzResponse drives the response side of every provider with arbitrary
// bodies, error statuses and chunkings, forwarding chunks as they come (as
// Envoy's) or in whole events (as the standalone proxy). The gateway never
// panics, and the client gets the upstream's bytes unchanged, unless the
// gateway answered an error about the operator's account itself: then the
// record names the reason and the client's bytes carry the gateway's own
// message.
func FuzzResponse(f *testing.F) {
	env := newBenchEnv(f)
	reqs := []struct{ target, body string }{
		{"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
		{"/openai/v1/responses", `{"model":"gpt-4o-mini","input":"hi","stream":true}`},
		{"/anthropic/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", `{"contents":[{"parts":[{"text":"hi"}]}]}`},
		{"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`}, // a JSON array
	}
	seeds := []string{
		"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"org-x\"}}}\n\n",
		"data: {\"error\":{\"message\":\"org-x\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}\n\n",
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"org\"}}\r\n\r\n",
		"data: {\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\n",
		`{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}`,
		`{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low"}}`,
		`{"error":{"message":"x","type":"invalid_request_error","code":"billing_hard_limit_reached"}}`,
		"{\"error\":{\"message\":\"Your organization must be verified to use the model `o3`.\",\"type\":\"invalid_request_error\",\"code\":\"model_not_found\"}}",
		"[{\"candidates\":[]}\n,\r\n{\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\"}}\n]",
	}
	for i, s := range seeds {
		f.Add(uint8(i), uint8(i), uint16(7*i), i%2 == 0, []byte(s))
	}
	f.Add(uint8(4), uint8(0), uint16(30), false, []byte(seeds[len(seeds)-1])) // the array on its route
	f.Fuzz(func(t *testing.T, which, kind uint8, size uint16, whole bool, body []byte) {
		req := reqs[int(which)%len(reqs)]
		status, ct := []int{200, 400, 402, 404}[int(kind)%4], "application/json"
		if status == 200 && !strings.HasSuffix(req.target, ":streamGenerateContent") {
			ct = "text/event-stream"
		}
		x := env.g.NewExchange(context.Background(), "fuzz")
		if out := x.RequestHeaders("POST", req.target, gateway.Headers{
			{Name: "Authorization", Value: "Bearer " + env.token}, {Name: "Anthropic-Version", Value: "2023-06-01"},
		}); out.Action != gateway.NeedBody {
			t.Fatalf("request headers: %s", out.Response.Body)
		}
		if out := x.RequestBody([]byte(req.body)); out.Action != gateway.Forward {
			t.Fatalf("request body: %s", out.Response.Body)
		}
		if whole {
			x.WholeEvents() // as the standalone proxy forwards
		}
		x.ResponseHeaders(status, gateway.Headers{{Name: "Content-Type", Value: ct}})
		// Chunks of size bytes (the last may be shorter or empty).
		n := max(int(size)%997, 1)
		var client []byte
		for rest := body; ; rest = rest[min(n, len(rest)):] {
			last := len(rest) <= n
			client = append(client, x.ResponseBody(rest[:min(n, len(rest))], last)...)
			if last {
				break
			}
		}
		rec := x.Settle(gateway.Completed)
		switch gateway.Code(rec.Reason) {
		case gateway.CodeUpstreamKey, gateway.CodeUpstreamDenied, gateway.CodeUpstreamLimit, gateway.CodeUpstreamQuota:
		default:
			if string(client) != string(body) {
				t.Fatalf("status %d reason %q: the client got %q, upstream sent %q", status, rec.Reason, client, body)
			}
			return
		}
		if !strings.Contains(string(client), "the gateway's") {
			t.Fatalf("replaced (%s) but the client got %q", rec.Reason, client)
		}
	})
}
