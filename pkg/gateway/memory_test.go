package gateway_test

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
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

// TestHiddenUsageStreamEndlessLine: an OpenAI chat stream whose usage chunk
// the gateway hides is forwarded in whole events, but an event that never
// ends (a line without newline from a misbehaving upstream) must not be
// held whole: past a bound its bytes pass as they come, the heap stays
// bounded, and the stream after it is still filtered (the usage chunk the
// gateway asked for stays hidden).
func TestHiddenUsageStreamEndlessLine(t *testing.T) {
	env := newBenchEnv(t)
	counter, err := tokenize.NewCounter()
	if err != nil {
		t.Fatal(err)
	}
	g := gateway.New(gateway.Config{
		Providers: env.providers(), Upstreams: env.upstreams(), Catalog: env.catalog(t), Verifier: env.verifier,
		Recorder: gateway.RecorderFunc(func(usage.Record) {}), Counter: counter,
		MaxResponseDoc: 256 << 10, // the decoder's own bound on an event's data
	})
	x := g.NewExchange(context.Background(), "endless")
	if out := x.RequestHeaders(http.MethodPost, "/openai/v1/chat/completions", gateway.Headers{{Name: "Authorization", Value: "Bearer " + env.token}}); out.Action != gateway.NeedBody {
		t.Fatalf("request headers: %s", out.Response.Body)
	}
	if out := x.RequestBody([]byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)); out.Action != gateway.Forward {
		t.Fatalf("request body: %s", out.Response.Body)
	}
	x.ResponseHeaders(http.StatusOK, upstreamHeaders("text/event-stream"))

	const total = 16 << 20
	head := []byte(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"`)
	fill := bytes.Repeat([]byte("a"), 32<<10)
	var got bytes.Buffer
	feed := func(b []byte, end bool) { got.Write(x.ResponseBody(b, end)) }
	feed(head, false)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	passed := 0 // counted, not kept: the heap is the exchange's alone
	for n := 0; n < total; n += len(fill) {
		passed += len(x.ResponseBody(fill, false))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 2<<20 {
		t.Errorf("the exchange holds %d KiB of an unfinished %d MiB event, want at most 2 MiB", held>>10, total>>20)
	}
	if passed < total-(1<<20) {
		t.Errorf("%d KiB of a %d MiB unfinished event reached the client: it is being held", passed>>10, total>>20)
	}
	got.Reset()
	feed([]byte(`"},"finish_reason":null}],"usage":null}`+"\n\n"), false)
	feed([]byte(`data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`+"\n\n"), false)
	feed([]byte("data: [DONE]\n\n"), true)
	if want := `"},"finish_reason":null}],"usage":null}` + "\n\ndata: [DONE]\n\n"; got.String() != want {
		t.Errorf("after the long event the client got %.300q, want %q (the rest of it, then [DONE] without the hidden usage chunk)", got.String(), want)
	}
}

// TestStreamedArrayEndlessElement: an upstream Gemini array stream (no
// alt=sse) whose element never ends is forwarded as it comes and holds the
// exchange's memory within the response cap, as an SSE event's data is; the
// stream's later elements are still metered.
func TestStreamedArrayEndlessElement(t *testing.T) {
	env := newBenchEnv(t)
	g := gateway.New(gateway.Config{
		Providers: env.providers(), Upstreams: env.upstreams(), Catalog: env.catalog(t), Verifier: env.verifier,
		Recorder:       gateway.RecorderFunc(func(usage.Record) {}),
		MaxResponseDoc: 256 << 10,
	})
	x := g.NewExchange(context.Background(), "endless-array")
	if out := x.RequestHeaders(http.MethodPost, "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", gateway.Headers{{Name: "x-goog-api-key", Value: env.token}}); out.Action != gateway.NeedBody {
		t.Fatalf("request headers: %s", out.Response.Body)
	}
	if out := x.RequestBody([]byte(`{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`)); out.Action != gateway.Forward {
		t.Fatalf("request body: %s", out.Response.Body)
	}
	x.ResponseHeaders(http.StatusOK, upstreamHeaders("application/json; charset=UTF-8"))

	const total = 16 << 20
	fill := bytes.Repeat([]byte("a"), 32<<10)
	passed := len(x.ResponseBody([]byte(`[{"candidates":[{"content":{"parts":[{"text":"`), false))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for n := 0; n < total; n += len(fill) {
		passed += len(x.ResponseBody(fill, false))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 2<<20 {
		t.Errorf("the exchange holds %d KiB of an unfinished %d MiB element, want at most 2 MiB", held>>10, total>>20)
	}
	if passed < total {
		t.Errorf("%d KiB of a %d MiB unfinished element reached the client: it is being held", passed>>10, total>>20)
	}
	x.ResponseBody([]byte(`"}]}}]}`+"\n,\r\n"+`{"candidates":[],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3,"totalTokenCount":10}}`+"\n]"), true)
	rec := x.Settle(gateway.Completed)
	if rec.Tokens.Input != 7 || rec.Tokens.Output != 3 || rec.Estimated {
		t.Errorf("record tokens %+v estimated %v, want the last element's 7 in, 3 out", rec.Tokens, rec.Estimated)
	}
}
