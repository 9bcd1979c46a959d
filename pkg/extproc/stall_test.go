package extproc_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The tests here drive streams that Envoy's peers cut, stall or garble
// part-way, message by message, and check that each request still yields
// exactly one record and that the processor's goroutines end.

// streamAt is how far streamTo takes a request.
type streamAt int

const (
	atRequestHeaders streamAt = iota // request headers answered, body awaited
	atUpstream                       // the request went upstream
	atResponse                       // response headers and one SSE chunk answered
	atResponseEnd                    // the response ended (end_of_stream)
)

// chunkText is the SSE chunk streamTo passes: text the meter estimates.
const chunkText = "data: {\"choices\":[{\"delta\":{\"content\":\"hello there, a few words\"}}]}\n\n"

// streamTo opens a stream on client and drives an OpenAI streamed request
// with token through it up to at. It returns the request headers, to send
// again, and the first reply that was an immediate_response, if any.
func streamTo(t *testing.T, e *env, client extprocv3.ExternalProcessorClient, ctx context.Context, token string, at streamAt) (extprocv3.ExternalProcessor_ProcessClient, *extprocv3.ProcessingRequest, *extprocv3.ImmediateResponse) {
	t.Helper()
	stream, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x := fixtures[0].request(token, "hi", true)
	h := append(headerList{{":method", "POST"}, {":path", x.path}}, x.header...)
	headers := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: h.headerMap()}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED},
	}
	rh := headerList{{":status", "200"}, {"content-type", "text/event-stream"}}
	steps := []*extprocv3.ProcessingRequest{
		headers,
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: x.body, EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: rh.headerMap()}}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(chunkText)}}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("data: [DONE]\n\n"), EndOfStream: true}}},
	}
	n := map[streamAt]int{atRequestHeaders: 1, atUpstream: 2, atResponse: 4, atResponseEnd: 5}[at]
	for _, m := range steps[:n] {
		if im := e.exchangeMsg(stream, m).GetImmediateResponse(); im != nil {
			return stream, headers, im
		}
	}
	return stream, headers, nil
}

// onlyRecord waits for every stream to end and returns the one record.
func onlyRecord(t *testing.T, e *env) usage.Record {
	t.Helper()
	e.streams.wait(t)
	recs := e.stack.Recorder.All()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1: %+v", len(recs), recs)
	}
	return recs[0]
}

// TestDuplicateRequestHeaders: request headers sent again (no Envoy
// behaviour) are refused with an immediate_response, and the record tells
// what happened to the request: once it went upstream the provider bills
// it, so it is not recorded as a refusal with nothing billed; a refusal
// already given keeps its reason.
func TestDuplicateRequestHeaders(t *testing.T) {
	cases := []struct {
		name   string
		at     streamAt
		bogus  bool
		status usage.Status
		reason string
		billed bool
	}{
		{"before the body", atRequestHeaders, false, usage.StatusRejected, "internal", false},
		{"before the response", atUpstream, false, usage.StatusError, "upstream_error", true},
		{"mid-response", atResponse, false, usage.StatusError, "upstream_error", true},
		{"after the response", atResponseEnd, false, usage.StatusOK, "", true},
		{"after a refusal", atUpstream, true, usage.StatusRejected, "invalid_token", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			tok := e.stack.Token
			if c.bogus {
				tok = "bogus"
			}
			stream, headers, _ := streamTo(t, e, e.client, ctx, tok, c.at)
			if im := e.exchangeMsg(stream, headers).GetImmediateResponse(); im == nil {
				t.Errorf("request headers again: no immediate_response")
			}
			_ = stream.CloseSend()
			_, _ = stream.Recv()
			rec := onlyRecord(t, e)
			if rec.Status != c.status || rec.Reason != c.reason {
				t.Errorf("record %s/%s, want %s/%s", rec.Status, rec.Reason, c.status, c.reason)
			}
			if billed := rec.Input > 0; billed != c.billed {
				t.Errorf("record %+v: billed %t, want %t", rec, billed, c.billed)
			}
		})
	}
}

// TestCutStreamsLeakNothing: however Envoy's side of a stream goes away
// (reset, half-close without a final message, or the gRPC connection
// dropping) and wherever in the request, the request is settled once as
// abandoned with usage so far, and no goroutine of the stream outlives it.
func TestCutStreamsLeakNothing(t *testing.T) {
	type cutFn func(stream extprocv3.ExternalProcessor_ProcessClient, cancel context.CancelFunc, conn *grpc.ClientConn)
	cuts := map[string]cutFn{
		"reset": func(_ extprocv3.ExternalProcessor_ProcessClient, cancel context.CancelFunc, _ *grpc.ClientConn) {
			cancel()
		},
		"half-close": func(s extprocv3.ExternalProcessor_ProcessClient, _ context.CancelFunc, _ *grpc.ClientConn) {
			_ = s.CloseSend()
			_, _ = s.Recv()
		},
		"connection drop": func(_ extprocv3.ExternalProcessor_ProcessClient, _ context.CancelFunc, conn *grpc.ClientConn) {
			_ = conn.Close()
		},
	}
	points := map[string]streamAt{"mid-request-body": atRequestHeaders, "before response headers": atUpstream, "mid-stream": atResponse}
	for cutName, cut := range cuts {
		for pointName, at := range points {
			t.Run(cutName+"/"+pointName, func(t *testing.T) {
				e := newEnv(t, envOptions{})
				base := runtime.NumGoroutine()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				conn, err := grpc.NewClient(e.target, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = conn.Close() }()
				stream, _, _ := streamTo(t, e, extprocv3.NewExternalProcessorClient(conn), ctx, e.stack.Token, at)
				cut(stream, cancel, conn)
				rec := onlyRecord(t, e)
				if rec.Status != usage.StatusAbandoned || rec.Reason != "client_gone" {
					t.Errorf("record %s/%s, want abandoned/client_gone", rec.Status, rec.Reason)
				}
				if billed := rec.Input > 0; billed != (at != atRequestHeaders) {
					t.Errorf("record %+v: billed %t after %s", rec, billed, pointName)
				}
				cancel()
				_ = conn.Close()
				settleGoroutines(t, base)
			})
		}
	}
}

// settleGoroutines fails t unless the goroutine count falls back to base
// within a few seconds (gRPC's transport goroutines end asynchronously).
func settleGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the stream:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
