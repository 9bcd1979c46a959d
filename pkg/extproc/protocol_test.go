package extproc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Messages as Envoy sends them, for scripted streams.
func reqHeaders(h headerList, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: h.headerMap(), EndOfStream: eos}}}
}

func reqBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

func respHeaders(h headerList) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: h.headerMap()}}}
}

func respBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

func trailers(response bool) *extprocv3.ProcessingRequest {
	if response {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}
}

func withModes(m *extprocv3.ProcessingRequest, req, resp extprocfilterv3.ProcessingMode_BodySendMode) *extprocv3.ProcessingRequest {
	m.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: req, ResponseBodyMode: resp}
	return m
}

func observed(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
	m.ObservabilityMode = true
	return m
}

// kind names a reply's oneof ("" when none is expected).
func kind(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return fmt.Sprintf("immediate %d", r.GetImmediateResponse().GetStatus().GetCode())
	}
	return fmt.Sprintf("%v", r)
}

// TestProtocol: Envoy behaviours the processor must tolerate, each a
// scripted stream with the reply kind expected for every message ("" for
// none) and the record it must leave.
func TestProtocol(t *testing.T) {
	e := newEnv(t, envOptions{})
	auth := append(headerList{{":method", "POST"}, {":path", "/anthropic/v1/messages"}}, fixtures[1].auth(e.stack.Token)...)
	body := string(fixtures[1].body("hi", false))
	okHeaders := headerList{{":status", "200"}, {"content-type", "application/json"}}
	doc := `{"type":"message","usage":{"input_tokens":11,"output_tokens":5}}`
	const (
		buffered = extprocfilterv3.ProcessingMode_BUFFERED
		streamed = extprocfilterv3.ProcessingMode_STREAMED
		none     = extprocfilterv3.ProcessingMode_NONE
	)
	cases := []struct {
		name    string
		msgs    []*extprocv3.ProcessingRequest
		replies []string
		// record is the status of the one record written; "" for none.
		record usage.Status
	}{
		{"buffered with trailers on both sides",
			[]*extprocv3.ProcessingRequest{reqHeaders(auth, false), reqBody(body, false), trailers(false), respHeaders(okHeaders), respBody(doc, false), trailers(true)},
			[]string{"request_headers", "request_body", "request_trailers", "response_headers", "response_body", "response_trailers"}, usage.StatusOK},
		{"streamed response ending in an empty chunk",
			[]*extprocv3.ProcessingRequest{withModes(reqHeaders(auth, false), buffered, streamed), reqBody(body, true), respHeaders(okHeaders),
				respBody(doc[:9], false), respBody(doc[9:], false), respBody("", true)},
			[]string{"request_headers", "request_body", "response_headers", "response_body", "response_body", "response_body"}, usage.StatusOK},
		{"a local reply of an earlier filter passes through",
			[]*extprocv3.ProcessingRequest{respHeaders(headerList{{":status", "403"}}), respBody("denied", true)},
			[]string{"response_headers", "response_body"}, ""},
		{"request body mode NONE fails closed",
			[]*extprocv3.ProcessingRequest{withModes(reqHeaders(auth, false), none, buffered)},
			[]string{"immediate 500"}, usage.StatusRejected},
		{"request body mode STREAMED fails closed",
			[]*extprocv3.ProcessingRequest{withModes(reqHeaders(auth, false), streamed, buffered)},
			[]string{"immediate 500"}, usage.StatusRejected},
		{"BUFFERED_PARTIAL over Envoy's buffer is too large",
			[]*extprocv3.ProcessingRequest{withModes(reqHeaders(auth, false), extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL, buffered), reqBody(body[:10], false)},
			[]string{"request_headers", "immediate 413"}, usage.StatusRejected},
		{"a body without headers fails closed",
			[]*extprocv3.ProcessingRequest{reqBody(body, true)},
			[]string{"immediate 500"}, usage.StatusRejected},
		{"headers twice fail closed",
			[]*extprocv3.ProcessingRequest{reqHeaders(auth, false), reqHeaders(auth, false)},
			[]string{"request_headers", "immediate 500"}, usage.StatusRejected},
		{"a bodiless request is judged on its headers",
			[]*extprocv3.ProcessingRequest{reqHeaders(auth, true)},
			[]string{"immediate 400"}, usage.StatusRejected},
		{"flow-control messages want no reply",
			[]*extprocv3.ProcessingRequest{{FlowControlInit: &extprocv3.ProcessingRequest_FlowControlInit{}}, reqHeaders(auth, false), reqBody(body, true)},
			[]string{"", "request_headers", "request_body"}, usage.StatusAbandoned},
		{"observability mode: never a reply, still metered",
			[]*extprocv3.ProcessingRequest{observed(reqHeaders(auth, false)), observed(reqBody(body, true)), observed(respHeaders(okHeaders)), observed(respBody(doc, true))},
			[]string{"", "", "", ""}, usage.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(e.stack.Recorder.All())
			stream, err := e.client.Process(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range c.msgs {
				if err := stream.Send(m); err != nil {
					t.Fatal(err)
				}
				if c.replies[i] == "" {
					continue
				}
				r, err := stream.Recv()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if got := kind(r); got != c.replies[i] {
					t.Fatalf("message %d: reply %s, want %s", i, got, c.replies[i])
				}
			}
			_ = stream.CloseSend()
			if r, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the script: %v, %v; want the stream to end with no further reply", r, err)
			}
			e.streams.wait(t)
			recs := e.stack.Recorder.All()[before:]
			switch {
			case c.record == "" && len(recs) != 0:
				t.Errorf("records %+v for a request the processor never saw", recs)
			case c.record != "" && (len(recs) != 1 || recs[0].Status != c.record):
				t.Errorf("records %+v, want one %s", recs, c.record)
			}
		})
	}
}

// TestOverrideContentLength: with responses BUFFERED, an SSE response is
// switched to STREAMED by mode_override. Envoy decided to keep
// content-length by the BUFFERED mode before reading the reply, so when the
// chunks will change (the hidden usage chunk) the processor removes it
// itself; a stale length would cut or stall the client's stream. Chunks
// that pass unchanged keep it.
func TestOverrideContentLength(t *testing.T) {
	e := newEnv(t, envOptions{})
	auth := append(headerList{{":method", "POST"}, {":path", "/openai/v1/chat/completions"}}, fixtures[0].auth(e.stack.Token)...)
	const buffered = extprocfilterv3.ProcessingMode_BUFFERED
	const hidden = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	const asked = `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	withLength := headerList{{":status", "200"}, {"content-type", "text/event-stream"}, {"content-length", "120"}}
	for _, c := range []struct {
		name        string
		body        string
		header      headerList
		wantRemoved bool
	}{
		{"usage chunk hidden, with content-length", hidden, withLength, true},
		{"usage chunk hidden, without", hidden, headerList{{":status", "200"}, {"content-type", "text/event-stream"}}, false},
		{"chunks unchanged", asked, withLength, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			stream, err := e.client.Process(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = stream.CloseSend() }()
			msgs := []*extprocv3.ProcessingRequest{withModes(reqHeaders(auth, false), buffered, buffered), reqBody(c.body, true), respHeaders(c.header)}
			var last *extprocv3.ProcessingResponse
			for i, m := range msgs {
				if err := stream.Send(m); err != nil {
					t.Fatal(err)
				}
				if last, err = stream.Recv(); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			if last.GetModeOverride().GetResponseBodyMode() != extprocfilterv3.ProcessingMode_STREAMED {
				t.Fatalf("reply %v: no override to STREAMED", last)
			}
			removed := last.GetResponseHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
			if got := slices.Contains(removed, "content-length"); got != c.wantRemoved {
				t.Errorf("removes %q: content-length removed %v, want %v", removed, got, c.wantRemoved)
			}
		})
	}
}
