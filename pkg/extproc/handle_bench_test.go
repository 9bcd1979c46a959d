package extproc

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// BenchmarkHandle is the adapter and gateway work of one non-streamed
// request without the gRPC transport: the four messages handled and their
// replies marshalled, as the server does before writing them.
func BenchmarkHandle(b *testing.B) {
	st, err := gwtest.Build(gwtest.Options{Recorder: gateway.RecorderFunc(func(usage.Record) {})})
	if err != nil {
		b.Fatal(err)
	}
	msgs := benchRequest(st.Token)
	ids := gateway.NewRequestIDs()
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		s := newStream(st.Gateway, context.Background(), ids)
		for _, m := range msgs {
			r := s.handle(m)
			if r.GetImmediateResponse() != nil {
				b.Fatalf("refused: %s", r.GetImmediateResponse().GetBody())
			}
			if _, err := proto.Marshal(r); err != nil {
				b.Fatal(err)
			}
			s.sent()
		}
		s.settle()
	}
	reportCPU(b, cpu0, "cpu-µs/req")
}

// processCPU is the process's CPU time so far (user+system, getrusage):
// unlike wall time it does not count waiting for a busy machine's cores.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, since time.Duration, unit string) {
	b.ReportMetric(float64((processCPU(b)-since).Nanoseconds())/1e3/float64(b.N), unit)
}

// benchRequest is what Envoy sends for one non-streamed chat completion
// with the headers the official OpenAI Go SDK and Envoy add, answered by
// OpenAI's usual response headers and body.
func benchRequest(token string) []*extprocv3.ProcessingRequest {
	body := `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Tell me a joke about gateways, please, and keep it short."}],"temperature":0.7}`
	resp := `{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini-2024-07-18",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Why did the gateway cross the road? To meter the other side.","refusal":null},` +
		`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":14,"total_tokens":45,` +
		`"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,` +
		`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_0ba0d124f1"}`
	headers := func(eos bool, kv ...string) *extprocv3.HttpHeaders {
		m := &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return &extprocv3.HttpHeaders{Headers: m, EndOfStream: eos}
	}
	return []*extprocv3.ProcessingRequest{
		{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: headers(false,
				":authority", "127.0.0.1:15080", ":path", "/openai/v1/chat/completions", ":method", "POST", ":scheme", "http",
				"authorization", "Bearer "+token, "content-type", "application/json", "accept", "application/json",
				"user-agent", "OpenAI/Go 3.8.1", "x-stainless-lang", "go", "x-stainless-os", "Linux", "x-stainless-arch", "amd64",
				"x-stainless-runtime", "go", "x-stainless-runtime-version", "go1.26.0", "x-stainless-retry-count", "0",
				"x-forwarded-proto", "http", "x-request-id", "6c1f2a3e-8d9b-4c5a-9e7f-0a1b2c3d4e5f", "content-length", strconv.Itoa(len(body)))},
			ProtocolConfig: &extprocv3.ProtocolConfiguration{
				RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocfilterv3.ProcessingMode_BUFFERED},
		},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: headers(false,
			":status", "200", "content-type", "application/json", "content-length", strconv.Itoa(len(resp)),
			"date", "Thu, 01 Jan 2026 00:00:00 GMT", "openai-organization", "org-x", "openai-processing-ms", "412",
			"openai-version", "2020-10-01", "x-ratelimit-limit-requests", "10000", "x-ratelimit-remaining-tokens", "149999",
			"x-request-id", "req_0123456789abcdef", "strict-transport-security", "max-age=31536000", "cf-ray", "8f0e1d2c3b4a5968-AMS",
			"set-cookie", "__cf_bm=abc; path=/", "alt-svc", `h3=":443"`)}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(resp), EndOfStream: true}}},
	}
}

// BenchmarkHandleChunk is the adapter and gateway work of one streamed
// response chunk (one SSE event) without the gRPC transport.
func BenchmarkHandleChunk(b *testing.B) {
	st, err := gwtest.Build(gwtest.Options{Recorder: gateway.RecorderFunc(func(usage.Record) {})})
	if err != nil {
		b.Fatal(err)
	}
	msgs := benchRequest(st.Token)
	msgs[1] = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
		Body: []byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a story."}]}`), EndOfStream: true}}}
	msgs[2].GetResponseHeaders().Headers.Headers[1].RawValue = []byte("text/event-stream; charset=utf-8")
	s := newStream(st.Gateway, context.Background(), gateway.NewRequestIDs())
	for _, m := range msgs[:3] {
		if r := s.handle(m); r.GetImmediateResponse() != nil {
			b.Fatalf("refused: %s", r.GetImmediateResponse().GetBody())
		}
	}
	chunk := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body: []byte(`data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1767225600,` +
			`"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,` +
			`"delta":{"content":" gateway"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n")}}}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		if _, err := proto.Marshal(s.handle(chunk)); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu0, "cpu-µs/chunk")
}
