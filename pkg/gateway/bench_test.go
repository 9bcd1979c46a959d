package gateway_test

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The whole request pipeline without network: what one request costs the
// gateway itself. Targets: ≤ 20 µs and ≤ 30 allocations per non-streamed
// request.

type benchEnv struct {
	g        *gateway.Gateway
	token    string
	verifier *auth.Verifier
}

func (benchEnv) providers() []gateway.Provider {
	return []gateway.Provider{openai.New(), anthropic.New(), gemini.New()}
}

func (benchEnv) upstreams() map[string]gateway.Upstream {
	return map[string]gateway.Upstream{
		"openai": {Key: "sk-real"}, "anthropic": {Key: "sk-ant-real"}, "gemini": {Key: "AIza-real"},
	}
}

func (benchEnv) catalog(tb testing.TB) *catalog.Catalog {
	cat, err := catalog.Default()
	if err != nil {
		tb.Fatal(err)
	}
	return cat
}

func newBenchEnv(tb testing.TB) benchEnv {
	tb.Helper()
	signer, err := auth.GenerateKey("")
	if err != nil {
		tb.Fatal(err)
	}
	token, err := signer.Mint(auth.Claims{Account: "acct-bench", Project: "proj-bench", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	cat, err := catalog.Default()
	if err != nil {
		tb.Fatal(err)
	}
	counter, err := tokenize.NewCounter()
	if err != nil {
		tb.Fatal(err)
	}
	verifier := auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()}, auth.NewRevocationSet())
	if _, err := verifier.Verify(token, time.Now()); err != nil { // the cache holds it from now on
		tb.Fatal(err)
	}
	env := benchEnv{token: token, verifier: verifier}
	env.g = gateway.New(gateway.Config{
		Providers: env.providers(),
		Upstreams: env.upstreams(),
		Catalog:   cat,
		Verifier:  verifier,
		Recorder:  gateway.RecorderFunc(func(usage.Record) {}),
		Counter:   counter,
	})
	return env
}

func providerTestdata(tb testing.TB, provider, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "provider", provider, "testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// upstreamHeaders is a realistic response header set (what the proxy
// adapter hands over): most of it passes, some is dropped.
func upstreamHeaders(contentType string) gateway.Headers {
	return gateway.Headers{
		{Name: "Content-Type", Value: contentType},
		{Name: "Date", Value: "Thu, 26 Nov 2026 10:00:00 GMT"},
		{Name: "X-Request-Id", Value: "req_0123456789abcdef"},
		{Name: "Openai-Organization", Value: "org-operator"},
		{Name: "Openai-Processing-Ms", Value: "412"},
		{Name: "X-Ratelimit-Limit-Tokens", Value: "30000000"},
		{Name: "X-Ratelimit-Remaining-Tokens", Value: "29999000"},
		{Name: "Cf-Ray", Value: "8f0e1d2c3b4a5968-AMS"},
	}
}

type pipelineCase struct {
	name, target string
	header       gateway.Headers
	body         []byte
	response     []byte
	want         usage.Tokens
}

func pipelineCases(tb testing.TB, token string) []pipelineCase {
	sdk := func(extra ...gateway.Header) gateway.Headers {
		h := gateway.Headers{
			{Name: "Accept", Value: "application/json"},
			{Name: "Content-Type", Value: "application/json"},
			{Name: "User-Agent", Value: "OpenAI/JS 6.49.0"},
			{Name: "X-Stainless-Lang", Value: "js"},
			{Name: "X-Stainless-Retry-Count", Value: "0"},
		}
		return append(h, extra...)
	}
	return []pipelineCase{
		{
			name:   "openai",
			target: "/openai/v1/chat/completions",
			header: sdk(gateway.Header{Name: "Authorization", Value: "Bearer " + token}),
			body: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
				`{"role":"user","content":"Write one sentence about the sea."}],"temperature":0.2}`),
			response: providerTestdata(tb, "openai", "chat-basic.json"),
			want:     usage.Tokens{Input: 8, Output: 377, Reasoning: 320},
		},
		{
			name:   "anthropic",
			target: "/anthropic/v1/messages",
			header: sdk(gateway.Header{Name: "Authorization", Value: "Bearer " + token},
				gateway.Header{Name: "Anthropic-Version", Value: "2026-10-21"}),
			body: []byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are a helpful assistant.",` +
				`"messages":[{"role":"user","content":"Write one sentence about the sea."}]}`),
			response: providerTestdata(tb, "anthropic", "messages-basic.json"),
			want:     usage.Tokens{Input: 13, Output: 5},
		},
		{
			name:   "gemini",
			target: "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
			header: sdk(gateway.Header{Name: "X-Goog-Api-Key", Value: token}),
			body: []byte(`{"contents":[{"role":"user","parts":[{"text":"Write one sentence about the sea."}]}],` +
				`"systemInstruction":{"parts":[{"text":"You are a helpful assistant."}]}}`),
			response: providerTestdata(tb, "gemini", "generate-basic.json"),
			want:     usage.Tokens{Input: 45, Output: 23},
		},
	}
}

// runPipeline drives one exchange through every step, as the proxy does.
func runPipeline(g *gateway.Gateway, c *pipelineCase, respHdr gateway.Headers) (usage.Record, string) {
	x := g.NewExchange(context.Background(), "bench-request")
	if out := x.RequestHeaders(http.MethodPost, c.target, c.header); out.Action != gateway.NeedBody {
		return usage.Record{}, "request headers: " + string(out.Response.Body)
	}
	if out := x.RequestBody(c.body); out.Action != gateway.Forward {
		return usage.Record{}, "request body: " + string(out.Response.Body)
	}
	_ = x.ResponseHeaders(http.StatusOK, respHdr)
	_ = x.ResponseBody(c.response, true)
	return x.Settle(gateway.Completed), ""
}

// TestPipelineBenchmarked checks that the benchmarked path is the real,
// successful one and meters the response: a benchmark of an early
// rejection would be fast and worthless.
func TestPipelineBenchmarked(t *testing.T) {
	env := newBenchEnv(t)
	hdr := upstreamHeaders("application/json")
	for _, c := range pipelineCases(t, env.token) {
		t.Run(c.name, func(t *testing.T) {
			rec, fail := runPipeline(env.g, &c, hdr)
			if fail != "" {
				t.Fatal(fail)
			}
			if rec.Status != usage.StatusOK || rec.Tokens != c.want || rec.Estimated || rec.Account != "acct-bench" {
				t.Errorf("record %s tokens %+v estimated=%v account %q, want ok %+v", rec.Status, rec.Tokens, rec.Estimated, rec.Account, c.want)
			}
		})
	}
}

func BenchmarkExchangeNonStreaming(b *testing.B) {
	env := newBenchEnv(b)
	hdr := upstreamHeaders("application/json")
	for _, c := range pipelineCases(b, env.token) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body) + len(c.response)))
			for b.Loop() {
				if _, fail := runPipeline(env.g, &c, hdr); fail != "" {
					b.Fatal(fail)
				}
			}
		})
	}
}

// streamChunks splits a recorded stream into its events, each one chunk as
// the network would deliver it.
func streamChunks(tb testing.TB, stream []byte) [][]byte {
	tb.Helper()
	var d sse.Decoder
	var chunks [][]byte
	emit := func(ev sse.Event) error {
		chunks = append(chunks, stream[ev.Start:ev.End])
		return nil
	}
	if err := d.Feed(stream, emit); err != nil {
		tb.Fatal(err)
	}
	if err := d.Close(emit); err != nil {
		tb.Fatal(err)
	}
	return chunks
}

// BenchmarkStreamChunk is the gateway's cost per SSE chunk of a recorded
// stream, forwarded and metered (the chunks of the stream are fed over and
// over to one exchange).
func BenchmarkStreamChunk(b *testing.B) {
	env := newBenchEnv(b)
	for _, c := range []struct {
		name, target, body, provider, file string
		header                             gateway.Headers
	}{
		{
			name: "openai-chat", target: "/openai/v1/chat/completions", provider: "openai", file: "chat-stream-usage.sse",
			body:   `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			header: gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token}},
		},
		{
			// The client did not ask for usage: the gateway did, and holds
			// back every event to drop the usage chunk.
			name: "openai-chat-usage-hidden", target: "/openai/v1/chat/completions", provider: "openai", file: "chat-stream-usage.sse",
			body:   `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			header: gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token}},
		},
		{
			name: "openai-chat-long", target: "/openai/v1/chat/completions", provider: "openai", file: "chat-stream-no-usage.sse",
			body:   `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			header: gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token}},
		},
		{
			name: "anthropic", target: "/anthropic/v1/messages", provider: "anthropic", file: "messages-stream-opus46.sse",
			body: `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			header: gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token},
				{Name: "Anthropic-Version", Value: "2023-06-01"}},
		},
		{
			name: "anthropic-cache-read", target: "/anthropic/v1/messages", provider: "anthropic", file: "messages-stream-cache-read.sse",
			body: `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			header: gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token},
				{Name: "Anthropic-Version", Value: "2023-06-01"}},
		},
	} {
		b.Run(c.name, func(b *testing.B) {
			stream := providerTestdata(b, c.provider, c.file)
			chunks := streamChunks(b, stream)
			x := env.g.NewExchange(context.Background(), "bench-stream")
			if out := x.RequestHeaders(http.MethodPost, c.target, c.header); out.Action != gateway.NeedBody {
				b.Fatalf("request headers: %s", out.Response.Body)
			}
			if out := x.RequestBody([]byte(c.body)); out.Action != gateway.Forward {
				b.Fatalf("request body: %s", out.Response.Body)
			}
			_ = x.ResponseHeaders(http.StatusOK, upstreamHeaders("text/event-stream; charset=utf-8"))
			b.ReportAllocs()
			b.SetBytes(int64(len(stream) / len(chunks)))
			i := 0
			for b.Loop() {
				_ = x.ResponseBody(chunks[i], false)
				if i++; i == len(chunks) {
					i = 0
				}
			}
			b.StopTimer()
			_ = x.ResponseBody(nil, true)
			if rec := x.Settle(gateway.Completed); rec.Status != usage.StatusOK || rec.Tokens.IsZero() {
				b.Errorf("the benchmarked stream was not metered: %s %+v", rec.Status, rec.Tokens)
			}
		})
	}
}
