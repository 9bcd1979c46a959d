package gateway_test

import (
	"context"
	"net/http"
	"runtime"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// streamMemoryCases are streams stopped halfway, in the state the gateway
// holds for every open stream.
var streamMemoryCases = []struct {
	name, target, body, provider, file, contentType string
	auth                                            gateway.Header
}{
	{name: "openai-chat-usage-hidden", target: "/openai/v1/chat/completions", provider: "openai", file: "chat-stream-usage.sse",
		body: `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, contentType: "text/event-stream"},
	{name: "openai-responses", target: "/openai/v1/responses", provider: "openai", file: "responses-stream.sse",
		body: `{"model":"gpt-4o-mini","stream":true,"input":"hi"}`, contentType: "text/event-stream"},
	{name: "anthropic", target: "/anthropic/v1/messages", provider: "anthropic", file: "messages-stream-opus46.sse",
		body: `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, contentType: "text/event-stream"},
	{name: "gemini-sse", target: "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", provider: "gemini", file: "stream-reasoning.sse",
		body: `{"contents":[{"parts":[{"text":"hi"}]}]}`, contentType: "text/event-stream"},
	{name: "gemini-array", target: "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", provider: "gemini", file: "stream-array.json",
		body: `{"contents":[{"parts":[{"text":"hi"}]}]}`, contentType: "application/json"},
}

// streamBytesPerExchange opens n exchanges, feeds each the first half of a
// recorded stream in 256-byte chunks and returns the heap they hold per
// stream. The chunks themselves (the data in flight) belong to the caller and
// are not counted.
func streamBytesPerExchange(tb testing.TB, env benchEnv, name string, n int) float64 {
	tb.Helper()
	for _, c := range streamMemoryCases {
		if c.name != name {
			continue
		}
		stream := providerTestdata(tb, c.provider, c.file)
		var chunks [][]byte
		for i := 0; i < len(stream)/2; i += 256 {
			chunks = append(chunks, stream[i:min(i+256, len(stream)/2)])
		}
		hdr := gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token}, {Name: "X-Goog-Api-Key", Value: env.token},
			{Name: "Anthropic-Version", Value: "2023-06-01"}}
		respHdrs := make([]gateway.Headers, n)
		for i := range respHdrs {
			respHdrs[i] = upstreamHeaders(c.contentType)
		}
		body := []byte(c.body)
		xs := make([]*gateway.Exchange, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range xs {
			x := env.g.NewExchange(context.Background(), "mem")
			if out := x.RequestHeaders(http.MethodPost, c.target, hdr); out.Action != gateway.NeedBody {
				tb.Fatalf("%s: request headers: %s", c.name, out.Response.Body)
			}
			if out := x.RequestBody(body); out.Action != gateway.Forward {
				tb.Fatalf("%s: request body: %s", c.name, out.Response.Body)
			}
			x.ResponseHeaders(http.StatusOK, respHdrs[i])
			for _, ch := range chunks {
				x.ResponseBody(ch, false)
			}
			xs[i] = x
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(xs)
		runtime.KeepAlive(respHdrs)
		return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	}
	tb.Fatalf("no case %s", name)
	return 0
}

// TestStreamMemoryBounded: an open stream costs the gateway at most 8 KiB
// beyond the chunk in flight, for every provider's stream shape.
func TestStreamMemoryBounded(t *testing.T) {
	env := newBenchEnv(t)
	for _, c := range streamMemoryCases {
		t.Run(c.name, func(t *testing.T) {
			if per := streamBytesPerExchange(t, env, c.name, 500); per > 8<<10 {
				t.Errorf("%.0f bytes per open stream, want at most 8 KiB", per)
			} else {
				t.Logf("%.0f bytes per open stream", per)
			}
		})
	}
}

// BenchmarkStreamMemory reports the heap one open stream holds (B/stream).
func BenchmarkStreamMemory(b *testing.B) {
	env := newBenchEnv(b)
	for _, c := range streamMemoryCases {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = streamBytesPerExchange(b, env, c.name, 200)
			}
			b.ReportMetric(per, "B/stream")
		})
	}
}
