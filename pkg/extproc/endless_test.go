package extproc

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
)

// TestEndlessEventBounded: an upstream SSE event that never ends (no blank
// line), passed chunk by chunk in STREAMED mode, holds the gateway's cap on
// an event's data (the response cap, 64 MiB) at most: the adapter itself
// keeps nothing of a chunk once it is answered. With usage the client did
// not ask for (hidden) and with usage asked for.
func TestEndlessEventBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 96 MiB")
	}
	st := gwtest.New(t, gwtest.Options{})
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	for name, reqBody := range map[string]string{
		"hidden usage": `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"usage asked":  `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := newStream(st.Gateway, context.Background(), gateway.NewRequestIDs())
			msgs := []*extprocv3.ProcessingRequest{
				{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					hv(":method", "POST"), hv(":path", "/openai/v1/chat/completions"), hv("authorization", "Bearer "+st.Token)}}}},
					ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED}},
				{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(reqBody), EndOfStream: true}}},
				{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					hv(":status", "200"), hv("content-type", "text/event-stream")}}}}},
			}
			for _, m := range msgs {
				if s.handle(m).GetImmediateResponse() != nil {
					t.Fatal("refused")
				}
				s.sent()
			}
			heap := func() uint64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			base := heap()
			chunk := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
				Body: append([]byte("data: "), bytes.Repeat([]byte("x"), 64<<10)...)}}}
			for range 96 << 4 { // 96 MiB
				s.handle(chunk)
				s.sent()
				chunk.GetResponseBody().Body = chunk.GetResponseBody().Body[:64<<10] // later chunks: the same line goes on
			}
			if grown := int64(heap()) - int64(base); grown > 80<<20 {
				t.Errorf("heap grew %d MiB over a 96 MiB unfinished event, want at most the 64 MiB cap and slack", grown>>20)
			}
			s.settle()
		})
	}
}
