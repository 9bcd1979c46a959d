package extproc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// lateStream is Envoy's side of a stream whose per-message timer fired
// while the processor was working on a message: Envoy answered the client
// 504 and reset the stream, so the late reply cannot be sent and the next
// Recv reports the reset.
type lateStream struct {
	grpc.ServerStream
	msgs  []*extprocv3.ProcessingRequest
	late  int // the reply to msgs[late] finds the stream reset
	sends int
}

func (s *lateStream) Context() context.Context { return context.Background() }

func (s *lateStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if s.sends > s.late || len(s.msgs) == 0 {
		return nil, status.Error(codes.Canceled, "context canceled")
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func (s *lateStream) Send(*extprocv3.ProcessingResponse) error {
	s.sends++
	if s.sends > s.late {
		return errors.New("transport: the stream is done")
	}
	return nil
}

// TestLateReplyReleasingTheRequest: when the reply that would release the
// request upstream cannot be sent (Envoy gave up waiting for it, e.g. a
// large body processed past message_timeout), no provider received the
// request: it is settled once as abandoned, without the input estimate a
// request the provider got is billed. A late reply to a later message
// leaves the request billed.
func TestLateReplyReleasingTheRequest(t *testing.T) {
	st := gwtest.New(t, gwtest.Options{})
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			hv(":method", "POST"), hv(":path", "/openai/v1/chat/completions"), hv("authorization", "Bearer "+st.Token)}}}}}
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
		Body: []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a question of some length"}]}`), EndOfStream: true}}}
	respHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{hv(":status", "200"), hv("content-type", "application/json")}}}}}
	for _, c := range []struct {
		late   int
		billed bool
	}{{late: 1, billed: false}, {late: 2, billed: true}} {
		t.Run(fmt.Sprintf("late reply %d", c.late), func(t *testing.T) {
			before := len(st.Recorder.All())
			srv := New(st.Gateway, Options{})
			_ = srv.Process(&lateStream{msgs: []*extprocv3.ProcessingRequest{headers, body, respHeaders}, late: c.late})
			recs := st.Recorder.All()[before:]
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1: %+v", len(recs), recs)
			}
			rec := recs[0]
			if rec.Status != usage.StatusAbandoned {
				t.Errorf("record %s/%s, want abandoned", rec.Status, rec.Reason)
			}
			if billed := rec.Input > 0; billed != c.billed {
				t.Errorf("record %+v: billed %t, want %t", rec, billed, c.billed)
			}
		})
	}
}
