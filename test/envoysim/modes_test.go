package envoysim

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// allKinds names every message, with body sizes and end_of_stream for
// both directions.
func allKinds(msgs []*extprocv3.ProcessingRequest) []string {
	var out []string
	for _, m := range msgs {
		k := fmt.Sprintf("%T", m.GetRequest())
		k = k[strings.LastIndex(k, "_")+1:]
		if b := m.GetRequestBody(); b != nil {
			k += fmt.Sprintf("(%d,%v)", len(b.GetBody()), b.GetEndOfStream())
		}
		if b := m.GetResponseBody(); b != nil {
			k += fmt.Sprintf("(%d,%v)", len(b.GetBody()), b.GetEndOfStream())
		}
		out = append(out, k)
	}
	return out
}

func streamedPiece(d direction, body string, eos bool) *extprocv3.ProcessingResponse {
	c := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
		StreamedResponse: &extprocv3.StreamedBodyResponse{Body: []byte(body), EndOfStream: eos}}}}
	if d == dirRequest {
		return reqBody(c)
	}
	return respBody(c)
}

func trailersReply(d direction, hs ...*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	t := &extprocv3.TrailersResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: hs}}
	if d == dirRequest {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: t}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: t}}
}

// sseUpstream writes events one flush each (chunked), then the trailers
// given as name/value pairs.
func sseUpstream(events []string, trailers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i+1 < len(trailers); i += 2 {
			w.Header().Add("Trailer", trailers[i])
		}
		for _, ev := range events {
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
		for i := 0; i+1 < len(trailers); i += 2 {
			w.Header().Set(trailers[i], trailers[i+1])
		}
	}
}

// upstreamLog keeps what the upstream received, trailers included.
type upstreamLog struct {
	mu      sync.Mutex
	body    []byte
	trailer http.Header
	header  http.Header
}

func (u *upstreamLog) handler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.body, u.trailer, u.header = b, r.Trailer.Clone(), r.Header.Clone()
	u.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

// postWithTrailers sends a chunked request body with trailers.
func postWithTrailers(t *testing.T, e *env, body string, trailers http.Header) result {
	t.Helper()
	req, err := http.NewRequest("POST", e.proxy.URL()+"/openai/v1/x", io.MultiReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Trailer = trailers
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Trailer, body: b, err: err}
}

// 12. Observability mode: send and go, replies ignored, deferred close, no
// timers; BUFFERED bodies are not sent.
func TestObservabilityMode(t *testing.T) {
	clock := NewFakeClock()
	events := []string{"data: 1\n\n", "data: 2\n\n"}
	e := newEnv(t, envConfig{
		opts:     Options{Clock: clock},
		upstream: sseUpstream(events),
		extProc: func(c *extprocfilterv3.ExternalProcessor) {
			c.ObservabilityMode = true
			c.ProcessingMode.ResponseTrailerMode = extprocfilterv3.ProcessingMode_SEND
		},
		reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestHeaders() != nil {
				// Would end the request anywhere else: ignored here.
				return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode_Forbidden, "no", "x")}, nil
			}
			if req.GetResponseBody() != nil {
				return []*extprocv3.ProcessingResponse{respBody(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
					Mutation: &extprocv3.BodyMutation_Body{Body: []byte("rewritten")}}})}, nil
			}
			return []*extprocv3.ProcessingResponse{}, nil // never answered
		},
	})
	r := do(t, e, "POST", "/openai/v1/chat/completions", `{"a":1}`)
	if r.status != 200 || string(r.body) != strings.Join(events, "") {
		t.Fatalf("client got %d %q: replies must be ignored", r.status, r.body)
	}
	// The deferred close is the only timer: no message timer ran.
	clock.WaitTimers(1)
	if !clockArmed(clock, 5*time.Second) {
		t.Error("no deferred close timer of deferred_close_timeout's default 5 s")
	}
	select {
	case <-e.proc.done:
		t.Fatal("the stream closed at once: observability mode defers the close")
	default:
	}
	if n := e.proxy.Counter("message_timeouts"); n != 0 {
		t.Errorf("%d message timeouts", n)
	}
	// The server drains meanwhile: it gets every message before the close.
	waitFor(t, func() bool {
		e.proc.mu.Lock()
		defer e.proc.mu.Unlock()
		if len(e.proc.streams) == 0 {
			return false
		}
		m := e.proc.streams[0]
		return len(m) > 0 && m[len(m)-1].GetResponseBody().GetEndOfStream()
	})
	clock.Advance(5 * time.Second)
	e.proc.wait(t, 1)
	if got := e.proc.endedBy(0); got != "Canceled" && got != "EOF" {
		t.Errorf("stream ended by %s after the deferred close", got)
	}
	msgs := e.proc.messages(0)
	got := allKinds(msgs)
	if len(got) < 3 {
		t.Fatalf("messages %q", got)
	}
	// The BUFFERED request body is not sent; the streamed response is.
	if got[0] != "RequestHeaders" || got[1] != "ResponseHeaders" || slices.Contains(got, "RequestBody(7,true)") || !strings.HasSuffix(got[len(got)-1], ",true)") {
		t.Errorf("messages %q", got)
	}
	for i, m := range msgs {
		if !m.GetObservabilityMode() || m.GetProtocolConfig() != nil {
			t.Errorf("message %d: observability_mode %v, protocol_config %v", i, m.GetObservabilityMode(), m.GetProtocolConfig())
		}
	}
	noViolations(t, e)
}

// 4. FULL_DUPLEX_STREAMED: chunks go out at once with no copy kept, the
// processor's streamed_response pieces are the body, the end comes with
// end_of_stream or with the trailers reply, and no timer runs.
func TestFullDuplexStreamed(t *testing.T) {
	fdResponse := func(c *extprocfilterv3.ExternalProcessor) {
		c.ProcessingMode.ResponseBodyMode = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
		c.ProcessingMode.ResponseTrailerMode = extprocfilterv3.ProcessingMode_SEND
	}
	events := []string{"data: a\n\n", "data: b\n\n", "data: c\n\n"}
	upper := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		switch {
		case req.GetResponseHeaders() != nil:
			return []*extprocv3.ProcessingResponse{respHeaders(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-fd", "1")}}})}, nil
		case req.GetResponseBody() != nil:
			b := req.GetResponseBody()
			return []*extprocv3.ProcessingResponse{streamedPiece(dirResponse, strings.ToUpper(string(b.GetBody())), b.GetEndOfStream())}, nil
		case req.GetResponseTrailers() != nil:
			return []*extprocv3.ProcessingResponse{trailersReply(dirResponse, set("x-checked", "yes"))}, nil
		}
		return nil, nil
	}
	t.Run("pieces are the body; end_of_stream ends it", func(t *testing.T) {
		e := newEnv(t, envConfig{extProc: fdResponse, upstream: sseUpstream(events), reply: upper})
		resp, err := http.Post(e.proxy.URL()+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != strings.ToUpper(strings.Join(events, "")) || resp.Header.Get("X-Fd") != "1" || resp.ContentLength != -1 {
			t.Fatalf("client got %q %v, headers %v", b, err, resp.Header)
		}
		e.proc.wait(t, 1)
		msgs := e.proc.messages(0)
		if pc := msgs[0].GetProtocolConfig(); pc.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
			t.Errorf("protocol_config %v", pc)
		}
		if got := allKinds(msgs); got[len(got)-1] != "ResponseBody(0,true)" {
			t.Errorf("messages %q", got)
		}
		noViolations(t, e)
	})
	t.Run("trailers: sent at once, their reply ends the body", func(t *testing.T) {
		e := newEnv(t, envConfig{extProc: fdResponse, upstream: sseUpstream(events, "X-Usage", "42"), reply: upper})
		r := postWithTrailers(t, e, `{}`, nil)
		if r.err != nil || string(r.body) != strings.ToUpper(strings.Join(events, "")) {
			t.Fatalf("%+v %v", r, records(t, e)[0])
		}
		if r.header.Get("X-Usage") != "42" || r.header.Get("X-Checked") != "yes" {
			t.Errorf("client trailers %v", r.header)
		}
		e.proc.wait(t, 1)
		got := allKinds(e.proc.messages(0))
		if got[len(got)-1] != "ResponseTrailers" || slices.ContainsFunc(got, func(k string) bool { return strings.HasPrefix(k, "ResponseBody(") && strings.HasSuffix(k, ",true)") }) {
			t.Errorf("messages %q: trailers, not end_of_stream, end the body", got)
		}
		noViolations(t, e)
	})
	t.Run("no message timer", func(t *testing.T) {
		clock := NewFakeClock()
		sawEnd, release := make(chan struct{}), make(chan struct{})
		e := newEnv(t, envConfig{opts: Options{Clock: clock}, extProc: fdResponse, upstream: sseUpstream(events),
			reply: func(n int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				if b := req.GetResponseBody(); b != nil {
					if !b.GetEndOfStream() {
						return []*extprocv3.ProcessingResponse{}, nil // answer everything at the end
					}
					close(sawEnd)
					<-release
					return []*extprocv3.ProcessingResponse{streamedPiece(dirResponse, "all", true)}, nil
				}
				return nil, nil
			}})
		done := make(chan result)
		go func() { done <- do(t, e, "POST", "/openai/v1/x", `{}`) }()
		<-sawEnd
		clock.Advance(time.Hour)
		close(release)
		if r := <-done; r.status != 200 || string(r.body) != "all" {
			t.Errorf("%d %q", r.status, r.body)
		}
		if n := e.proxy.Counter("message_timeouts"); n != 0 {
			t.Errorf("%d message timeouts in FULL_DUPLEX_STREAMED", n)
		}
	})
	t.Run("body or clear_body is spurious; the client is reset", func(t *testing.T) {
		e := newEnv(t, envConfig{extProc: fdResponse, upstream: sseUpstream(events), reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetResponseBody() != nil {
				return []*extprocv3.ProcessingResponse{respBody(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("x")}}})}, nil
			}
			return nil, nil
		}})
		if r := do(t, e, "POST", "/openai/v1/x", `{}`); r.err == nil {
			t.Errorf("clean response %d %q", r.status, r.body)
		}
		if e.proxy.Counter("spurious_msgs_received") != 1 || !records(t, e)[0].Reset {
			t.Errorf("spurious %d, reset %v", e.proxy.Counter("spurious_msgs_received"), records(t, e)[0].Reset)
		}
	})
	t.Run("fail closed after a chunk even with failure_mode_allow per route", func(t *testing.T) {
		e := newEnv(t, envConfig{extProc: fdResponse, upstream: sseUpstream(events),
			hcm: perRoute(t, "openai", &extprocfilterv3.ExtProcPerRoute{Override: &extprocfilterv3.ExtProcPerRoute_Overrides{Overrides: &extprocfilterv3.ExtProcOverrides{FailureModeAllow: wrapperspb.Bool(true)}}}),
			reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				if req.GetResponseBody() != nil {
					return nil, status.Error(codes.Internal, "boom")
				}
				return nil, nil
			}})
		// The chunk may go out before the headers reply: a 503 local reply
		// while the headers are held, a reset after; never fail-open.
		if r := do(t, e, "POST", "/openai/v1/x", `{}`); r.err == nil && r.status != 503 {
			t.Errorf("clean response %d %q: the failure must fail closed", r.status, r.body)
		}
		if n := e.proxy.Counter("failure_mode_allowed"); n != 0 {
			t.Errorf("failure_mode_allowed %d", n)
		}
	})
	t.Run("request: chunks flow before the headers reply; the upstream gets the pieces", func(t *testing.T) {
		up := &upstreamLog{}
		var got []string
		e := newEnv(t, envConfig{upstream: up.handler, opts: Options{RequestChunks: func() ChunkPlan { return Fixed(4) }},
			extProc: func(c *extprocfilterv3.ExternalProcessor) {
				c.ProcessingMode.RequestBodyMode = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
				c.ProcessingMode.RequestTrailerMode = extprocfilterv3.ProcessingMode_SEND
			},
			reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				switch {
				case req.GetRequestHeaders() != nil:
					return []*extprocv3.ProcessingResponse{}, nil // held until the body has come
				case req.GetRequestBody() != nil:
					b := req.GetRequestBody()
					got = append(got, string(b.GetBody()))
					if !b.GetEndOfStream() {
						return []*extprocv3.ProcessingResponse{}, nil
					}
					return []*extprocv3.ProcessingResponse{reqHeaders(nil), streamedPiece(dirRequest, strings.ToUpper(strings.Join(got, "")), true)}, nil
				}
				return nil, nil
			}})
		if r := do(t, e, "POST", "/openai/v1/x", `{"abc":1}`); r.status != 200 {
			t.Fatalf("%+v %v %q", r, records(t, e)[0], e.proxy.Violations())
		}
		if !slices.Equal(got, []string{`{"ab`, `c":1`, `}`}) {
			t.Errorf("chunks %q", got)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if string(up.body) != `{"ABC":1}` || up.header.Get("Content-Length") != "" {
			t.Errorf("upstream got %q, content-length %q", up.body, up.header.Get("Content-Length"))
		}
		noViolations(t, e)
	})
	t.Run("config: trailers SEND required, failure_mode_allow refused", func(t *testing.T) {
		for _, bad := range []func(*extprocfilterv3.ExternalProcessor){
			func(c *extprocfilterv3.ExternalProcessor) {
				c.ProcessingMode.ResponseBodyMode = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
				c.ProcessingMode.ResponseTrailerMode = extprocfilterv3.ProcessingMode_SKIP
			},
			func(c *extprocfilterv3.ExternalProcessor) {
				fdResponse(c)
				c.FailureModeAllow = true
			},
		} {
			e := newEnv(t, envConfig{})
			a := e.boot.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
			editExtProc(t, a, bad)
			if _, err := readConfig(e.boot, Options{}); err == nil || !strings.Contains(err.Error(), "FULL_DUPLEX_STREAMED") {
				t.Errorf("config accepted: %v", err)
			}
		}
	})
}

// 4. BUFFERED_PARTIAL: up to the buffer limit in one message; the rest
// follows unprocessed.
func TestBufferedPartial(t *testing.T) {
	partial := func(c *extprocfilterv3.ExternalProcessor) {
		c.ProcessingMode.RequestBodyMode = extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL
	}
	replace := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		if b := req.GetRequestBody(); b != nil {
			return []*extprocv3.ProcessingResponse{reqBody(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
				Mutation: &extprocv3.BodyMutation_Body{Body: bytes.Repeat([]byte("X"), len(b.GetBody()))}}})}, nil
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name, body, wantUp string
		wantMsg            string
	}{
		{"under the limit: the whole body", "0123456", "XXXXXXX", "RequestBody(7,true)"},
		{"over the limit: the first 8 bytes, the rest unprocessed", "0123456789abcdef", "XXXXXXXX89abcdef", "RequestBody(8,false)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &upstreamLog{}
			e := newEnv(t, envConfig{extProc: partial, upstream: up.handler, reply: replace})
			e.proxy.cfg.bufferLimit = 8
			if r := do(t, e, "POST", "/openai/v1/x", tc.body); r.status != 200 {
				t.Fatalf("%+v", r)
			}
			e.proc.wait(t, 1)
			if got := allKinds(e.proc.messages(0)); got[1] != tc.wantMsg {
				t.Errorf("messages %q", got)
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if string(up.body) != tc.wantUp || up.header.Get("Content-Length") == "7" {
				t.Errorf("upstream got %q (content-length %q)", up.body, up.header.Get("Content-Length"))
			}
			if h := headerMap(e.proc.messages(0)[0].GetRequestHeaders().GetHeaders()); !h.has("content-length") {
				t.Error("the headers message must still carry content-length")
			}
			noViolations(t, e)
		})
	}
}

// 4. The body complete before the headers reply goes out as one message
// with buffered semantics, whatever the body mode; otherwise STREAMED
// chunks follow the plan, and a header mutation in their replies is
// ignored because the headers have gone.
func TestBodyCompleteBeforeHeadersReply(t *testing.T) {
	streamedReq := func(c *extprocfilterv3.ExternalProcessor) {
		c.ProcessingMode.RequestBodyMode = extprocfilterv3.ProcessingMode_STREAMED
	}
	addHeader := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		if req.GetRequestBody() != nil {
			return []*extprocv3.ProcessingResponse{reqBody(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-from-body", "1")}}})}, nil
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name       string
		early      bool
		wantMsgs   []string
		wantHeader string
		violation  bool
	}{
		{"complete: one buffered-style message", true, []string{"RequestHeaders", "RequestBody(7,true)"}, "1", false},
		{"taken after the reply: chunks as planned", false, []string{"RequestHeaders", "RequestBody(3,false)", "RequestBody(3,false)", "RequestBody(1,true)"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &upstreamLog{}
			e := newEnv(t, envConfig{extProc: streamedReq, upstream: up.handler, reply: addHeader,
				opts: Options{EarlyBody: tc.early, RequestChunks: func() ChunkPlan { return Fixed(3) }}})
			if r := do(t, e, "POST", "/openai/v1/x", `{"a":1}`); r.status != 200 {
				t.Fatalf("%+v", r)
			}
			e.proc.wait(t, 1)
			if got := allKinds(e.proc.messages(0)); !slices.Equal(got[:len(tc.wantMsgs)], tc.wantMsgs) {
				t.Errorf("messages %q, want %q first", got, tc.wantMsgs)
			}
			up.mu.Lock()
			if up.header.Get("X-From-Body") != tc.wantHeader || string(up.body) != `{"a":1}` {
				t.Errorf("upstream header %q body %q", up.header.Get("X-From-Body"), up.body)
			}
			up.mu.Unlock()
			if v := strings.Join(e.proxy.Violations(), "\n"); strings.Contains(v, "headers have gone") != tc.violation {
				t.Errorf("violations %q", v)
			}
		})
	}
	t.Run("response: a small stream becomes one message", func(t *testing.T) {
		e := newEnv(t, envConfig{upstream: sseUpstream([]string{"data: 1\n\n", "data: 2\n\n"}), opts: Options{EarlyBody: true}})
		if r := do(t, e, "POST", "/openai/v1/x", `{}`); r.status != 200 {
			t.Fatalf("%+v", r)
		}
		e.proc.wait(t, 1)
		if got := allKinds(e.proc.messages(0)); got[len(got)-1] != "ResponseBody(18,true)" {
			t.Errorf("messages %q", got)
		}
	})
}

// 4. send_body_without_waiting_for_header_response: STREAMED chunks go out
// before the headers reply; the replies still come headers first, and
// mode_override is ignored.
func TestSendBodyWithoutWaiting(t *testing.T) {
	up := &upstreamLog{}
	var seen []string
	e := newEnv(t, envConfig{upstream: up.handler, opts: Options{RequestChunks: func() ChunkPlan { return Fixed(4) }},
		extProc: func(c *extprocfilterv3.ExternalProcessor) {
			c.ProcessingMode.RequestBodyMode = extprocfilterv3.ProcessingMode_STREAMED
			c.SendBodyWithoutWaitingForHeaderResponse = true
			c.AllowModeOverride = true
		},
		reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			switch {
			case req.GetRequestHeaders() != nil:
				return []*extprocv3.ProcessingResponse{}, nil
			case req.GetRequestBody() != nil:
				seen = append(seen, string(req.GetRequestBody().GetBody()))
				if !req.GetRequestBody().GetEndOfStream() {
					return []*extprocv3.ProcessingResponse{}, nil
				}
				h := reqHeaders(nil)
				h.ModeOverride = &extprocfilterv3.ProcessingMode{RequestBodyMode: extprocfilterv3.ProcessingMode_NONE}
				out := []*extprocv3.ProcessingResponse{h}
				for i := range seen {
					out = append(out, reqBody(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(strings.ToUpper(seen[i]))}}}))
				}
				return out, nil
			}
			return nil, nil
		}})
	if r := do(t, e, "POST", "/openai/v1/x", "abcdefghij"); r.status != 200 {
		t.Fatalf("%+v", r)
	}
	e.proc.wait(t, 1)
	if pc := e.proc.messages(0)[0].GetProtocolConfig(); !pc.GetSendBodyWithoutWaitingForHeaderResponse() {
		t.Errorf("protocol_config %v", pc)
	}
	if !slices.Equal(seen, []string{"abcd", "efgh", "ij"}) {
		t.Errorf("chunks %q before the headers reply", seen)
	}
	up.mu.Lock()
	if string(up.body) != "ABCDEFGHIJ" {
		t.Errorf("upstream got %q", up.body)
	}
	up.mu.Unlock()
	if v := strings.Join(e.proxy.Violations(), "\n"); !strings.Contains(v, "mode_override ignored") {
		t.Errorf("violations %q: the override must be ignored", v)
	}
}

// 5. Trailers with trailer mode SKIP and SEND, request and response; a
// stream with trailers ends with them, not with an end_of_stream chunk.
func TestTrailers(t *testing.T) {
	events := []string{"data: 1\n\n", "data: 2\n\n"}
	// sendTrailers sets both trailer modes (the sidecar's own config sends
	// response trailers).
	sendTrailers := func(req, resp bool) func(*extprocfilterv3.ExternalProcessor) {
		mode := func(send bool) extprocfilterv3.ProcessingMode_HeaderSendMode {
			if send {
				return extprocfilterv3.ProcessingMode_SEND
			}
			return extprocfilterv3.ProcessingMode_SKIP
		}
		return func(c *extprocfilterv3.ExternalProcessor) {
			c.ProcessingMode.RequestTrailerMode, c.ProcessingMode.ResponseTrailerMode = mode(req), mode(resp)
		}
	}
	mutate := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		switch {
		case req.GetRequestTrailers() != nil:
			return []*extprocv3.ProcessingResponse{trailersReply(dirRequest, set("x-req-added", "r"))}, nil
		case req.GetResponseTrailers() != nil:
			return []*extprocv3.ProcessingResponse{trailersReply(dirResponse, set("x-resp-added", "s"))}, nil
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name              string
		cfg               func(*extprocfilterv3.ExternalProcessor)
		reqTrailers       bool
		respTrailers      bool
		wantKinds         []string
		wantUp, wantDown  map[string]string
		upstreamEndsEmpty bool
	}{
		{name: "SKIP both: passed through, never an end_of_stream body", cfg: sendTrailers(false, false), reqTrailers: true, respTrailers: true,
			wantKinds: []string{"RequestHeaders", "RequestBody(7,false)", "ResponseHeaders", "ResponseBody(9,false)", "ResponseBody(9,false)"},
			wantUp:    map[string]string{"X-Req-T": "1"}, wantDown: map[string]string{"X-Resp-T": "2"}},
		{name: "SEND both: trailers messages, mutations applied", cfg: sendTrailers(true, true), reqTrailers: true, respTrailers: true,
			wantKinds: []string{"RequestHeaders", "RequestBody(7,false)", "RequestTrailers", "ResponseHeaders", "ResponseBody(9,false)", "ResponseBody(9,false)", "ResponseTrailers"},
			wantUp:    map[string]string{"X-Req-T": "1", "X-Req-Added": "r"}, wantDown: map[string]string{"X-Resp-T": "2", "X-Resp-Added": "s"}},
		{name: "SEND without trailers: no trailers message, empty end_of_stream chunk", cfg: sendTrailers(true, true),
			wantKinds: []string{"RequestHeaders", "RequestBody(7,true)", "ResponseHeaders", "ResponseBody(9,false)", "ResponseBody(9,false)", "ResponseBody(0,true)"},
			wantUp:    map[string]string{}, wantDown: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var upTrailer http.Header
			var mu sync.Mutex
			respTrailers := []string{}
			if tc.respTrailers {
				respTrailers = []string{"X-Resp-T", "2"}
			}
			sse := sseUpstream(events, respTrailers...)
			e := newEnv(t, envConfig{extProc: tc.cfg, reply: mutate, opts: Options{ResponseChunks: func() ChunkPlan { return Fixed(9) }}, upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				mu.Lock()
				upTrailer = r.Trailer.Clone()
				mu.Unlock()
				sse(w, r)
			}})
			var tr http.Header
			if tc.reqTrailers {
				tr = http.Header{"X-Req-T": {"1"}}
			}
			r := postWithTrailers(t, e, `{"a":1}`, tr)
			if r.err != nil || r.status != 200 || string(r.body) != strings.Join(events, "") {
				t.Fatalf("%+v", r)
			}
			e.proc.wait(t, 1)
			if got := allKinds(e.proc.messages(0)); !slices.Equal(got, tc.wantKinds) {
				t.Errorf("messages %q\nwant %q", got, tc.wantKinds)
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range tc.wantUp {
				if upTrailer.Get(k) != v {
					t.Errorf("upstream trailer %s = %q, want %q (all: %v)", k, upTrailer.Get(k), v, upTrailer)
				}
			}
			for k, v := range tc.wantDown {
				if r.header.Get(k) != v {
					t.Errorf("client trailer %s = %q, want %q (all: %v)", k, r.header.Get(k), v, r.header)
				}
			}
			if len(tc.wantUp) == 0 && len(upTrailer) > 0 || len(tc.wantDown) == 0 && len(r.header) > 0 {
				t.Errorf("trailers made up: upstream %v, client %v", upTrailer, r.header)
			}
			noViolations(t, e)
		})
	}
}

// editExtProc flips fields of the bootstrap's ext_proc filter.
func editExtProc(t *testing.T, a *anypb.Any, f func(*extprocfilterv3.ExternalProcessor)) {
	t.Helper()
	edit(t, a, &hcmv3.HttpConnectionManager{}, func(h *hcmv3.HttpConnectionManager) {
		for _, fl := range h.GetHttpFilters() {
			if fl.GetName() == sidecar.FilterExtProc {
				edit(t, fl.GetTypedConfig(), &extprocfilterv3.ExternalProcessor{}, f)
			}
		}
	})
}

// 10. Spurious replies the TestFailures table leaves out: an
// immediate_response with disable_immediate_response, a second reply to
// one message, and the standalone mode_override of newer Envoy (spurious
// in the Envoy simulated here).
func TestMoreSpuriousReplies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*extprocfilterv3.ExternalProcessor)
		reply func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error)
	}{
		{"immediate_response with disable_immediate_response", func(c *extprocfilterv3.ExternalProcessor) { c.DisableImmediateResponse = true },
			func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode_Forbidden, "no", "x")}, nil
			}},
		{"a second reply to one message", nil, func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestBody() != nil {
				return []*extprocv3.ProcessingResponse{reqBody(nil), reqBody(nil)}, nil
			}
			return nil, nil
		}},
		{"standalone mode_override", func(c *extprocfilterv3.ExternalProcessor) { c.AllowModeOverride = true },
			func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				if req.GetRequestHeaders() != nil {
					return []*extprocv3.ProcessingResponse{{ModeOverride: &extprocfilterv3.ProcessingMode{RequestBodyMode: extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED}}}, nil
				}
				return nil, nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{extProc: tc.cfg, reply: tc.reply})
			r := do(t, e, "POST", "/openai/v1/x", `{}`)
			if r.status != 503 || e.proxy.Counter("spurious_msgs_received") != 1 {
				t.Errorf("%d %q, spurious %d: want status_on_error", r.status, r.body, e.proxy.Counter("spurious_msgs_received"))
			}
			if tc.name != "a second reply to one message" && records(t, e)[0].Upstream != nil {
				t.Error("went upstream")
			}
		})
	}
}

// Failures on a STREAMED response body chunk (the sidecar's response mode),
// after the response headers went downstream. Envoy's handling
// (processor_state.cc handleStreamedBodyCallback, ext_proc.cc
// onReceiveMessage, onGrpcError, clearAsyncState):
//   - streamed_response outside FULL_DUPLEX_STREAMED is a spurious reply:
//     fail-closed it resets the stream; with failure_mode_allow (or the
//     fail-close flag off) the chunk still queued, and the rest of the
//     body, pass unprocessed;
//   - a gRPC error with failure_mode_allow lets the queued chunk and the
//     rest of the body through.
func TestStreamedBodyFailures(t *testing.T) {
	const want = `{"echo":"{\"k\":1}"}`
	streamedOnBody := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		if req.GetResponseBody() != nil {
			return []*extprocv3.ProcessingResponse{streamedPiece(dirResponse, "x", true)}, nil
		}
		return nil, nil
	}
	errorOnBody := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		if req.GetResponseBody() != nil {
			return nil, status.Error(codes.Unavailable, "down")
		}
		return nil, nil
	}
	failOpen := func(c *extprocfilterv3.ExternalProcessor) { c.FailureModeAllow = true }
	for _, tc := range []struct {
		name     string
		reply    func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error)
		cfg      func(*extprocfilterv3.ExternalProcessor)
		opts     Options
		reset    bool // the client's stream is reset; else it gets want
		spurious int64
		allowed  int64
	}{
		{name: "streamed_response in STREAMED: spurious, the stream is reset", reply: streamedOnBody, reset: true, spurious: 1},
		{name: "same with failure_mode_allow: the body passes unprocessed", reply: streamedOnBody, cfg: failOpen, spurious: 1, allowed: 1},
		{name: "same with the fail-close flag off: the body passes unprocessed", reply: streamedOnBody, opts: Options{SpuriousFailOpen: true}, spurious: 1, allowed: 1},
		{name: "gRPC error with failure_mode_allow: the body passes unprocessed", reply: errorOnBody, cfg: failOpen, allowed: 1},
		{name: "gRPC error fail-closed: the stream is reset", reply: errorOnBody, reset: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{reply: tc.reply, extProc: tc.cfg, opts: tc.opts})
			r := do(t, e, "POST", "/openai/v1/x", `{"k":1}`)
			switch {
			case tc.reset && r.err == nil:
				t.Errorf("%d %q: want the stream reset", r.status, r.body)
			case !tc.reset && (r.err != nil || r.status != 200 || string(r.body) != want):
				t.Errorf("%d %q %v: want 200 %s", r.status, r.body, r.err, want)
			}
			if got := e.proxy.Counter("spurious_msgs_received"); got != tc.spurious {
				t.Errorf("spurious_msgs_received %d, want %d", got, tc.spurious)
			}
			if got := e.proxy.Counter("failure_mode_allowed"); got != tc.allowed {
				t.Errorf("failure_mode_allowed %d, want %d", got, tc.allowed)
			}
		})
	}
}

// streamed_response in reply to a BUFFERED body (the sidecar's request
// mode): Envoy's buffered callback checks content-length against
// body_mutation.body(), which is empty, and then applies nothing
// (handleBufferedBodyCallback, applyBodyMutations). With a content-length
// the request fails; without one the body goes on unchanged.
func TestStreamedResponseOnBufferedBody(t *testing.T) {
	reply := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		if req.GetRequestBody() != nil {
			return []*extprocv3.ProcessingResponse{streamedPiece(dirRequest, "x", true)}, nil
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name     string
		chunked  bool
		status   int
		upstream string // the body upstream received; "" for none
	}{
		{name: "with content-length: the length check fails", status: 503},
		{name: "chunked: ignored, the body goes on unchanged", chunked: true, status: 200, upstream: `{"k":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &upstreamLog{}
			e := newEnv(t, envConfig{reply: reply, upstream: log.handler})
			var r result
			if tc.chunked {
				r = postWithTrailers(t, e, `{"k":1}`, nil)
			} else {
				r = do(t, e, "POST", "/openai/v1/x", `{"k":1}`)
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (%s)", r.status, tc.status, r.body)
			}
			if up := records(t, e)[0].Upstream; (up != nil) != (tc.upstream != "") || up != nil && string(up.Body) != tc.upstream {
				t.Errorf("upstream %+v, want body %q", up, tc.upstream)
			}
			if e.proxy.Counter("spurious_msgs_received") != 0 {
				t.Error("counted spurious: the buffered callback does not")
			}
			if v := strings.Join(e.proxy.Violations(), "\n"); !strings.Contains(v, "streamed_response") {
				t.Errorf("violations %q: strict mode must flag the reply", v)
			}
		})
	}
}
