//lint:file-ignore SA1019 the tests set append, the field Envoy's ext_proc reads

package envoysim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/sidecar"
)

type result struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func do(t *testing.T, e *env, method, path, body string, hdr ...string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.proxy.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func set(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}, Append: wrapperspb.Bool(false)}
}

func reqHeaders(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

func reqBody(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: c}}}
}

func respHeaders(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

func respBody(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: c}}}
}

func immediate(code typev3.StatusCode, body, details string, hs ...*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status: &typev3.HttpStatus{Code: code}, Body: []byte(body), Details: details, Headers: &extprocv3.HeaderMutation{SetHeaders: hs}}}}
}

func headerMap(m *corev3.HeaderMap) Headers {
	var h Headers
	for _, x := range m.GetHeaders() {
		h = append(h, Header{x.GetKey(), string(x.GetRawValue())})
	}
	return h
}

func records(t *testing.T, e *env) []*Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := e.proxy.Await(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func noViolations(t *testing.T, e *env) {
	t.Helper()
	if v := e.proxy.Violations(); len(v) > 0 {
		t.Errorf("strict mode: %q", v)
	}
}

// 1. Header conversion.
func TestHeaderConversion(t *testing.T) {
	e := newEnv(t, envConfig{})
	r := do(t, e, "POST", "/openai/v1/chat/completions?a=1&b=2", `{}`, "X-Dup", "one", "X-Dup", "two", "Host", "example.test")
	if r.err != nil || r.status != 200 {
		t.Fatalf("%+v", r)
	}
	e.proc.wait(t, 1)
	m := e.proc.messages(0)[0]
	for _, hv := range m.GetRequestHeaders().GetHeaders().GetHeaders() {
		if hv.GetValue() != "" || (len(hv.GetRawValue()) == 0 && hv.GetKey() != "") {
			t.Errorf("header %q: value %q raw %q, want raw_value only", hv.GetKey(), hv.GetValue(), hv.GetRawValue())
		}
		if hv.GetKey() != strings.ToLower(hv.GetKey()) {
			t.Errorf("key %q not lower case", hv.GetKey())
		}
	}
	h := headerMap(m.GetRequestHeaders().GetHeaders())
	for k, want := range map[string]string{":path": "/openai/v1/chat/completions?a=1&b=2", ":method": "POST", ":scheme": "http",
		":authority": "example.test", "x-forwarded-proto": "http", "content-length": "2"} {
		if got, _ := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if h.has("host") {
		t.Error("HTTP/1 Host must become :authority")
	}
	if got := h.Values("x-dup"); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("x-dup %q: want one entry per value", got)
	}
	if id, _ := h.Get("x-request-id"); len(id) != 36 || strings.Count(id, "-") != 4 {
		t.Errorf("x-request-id %q is not a UUID", id)
	}

	t.Run("forward_rules", func(t *testing.T) {
		e := newEnv(t, envConfig{extProc: func(c *extprocfilterv3.ExternalProcessor) {
			c.ForwardRules = &extprocfilterv3.HeaderForwardingRules{
				AllowedHeaders:    &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "x-"}}, {MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ":path"}}}},
				DisallowedHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x-secret"}}}},
			}
		}})
		do(t, e, "POST", "/openai/x", `{}`, "X-Keep", "1", "X-Secret", "2", "Other", "3")
		e.proc.wait(t, 1)
		var keys []string
		for _, x := range headerMap(e.proc.messages(0)[0].GetRequestHeaders().GetHeaders()) {
			keys = append(keys, x.Key)
		}
		if want := []string{":path", "x-keep", "x-forwarded-proto", "x-request-id"}; !slices.Equal(keys, want) {
			t.Errorf("forwarded %q, want %q", keys, want)
		}
	})

	// What the connection manager does before any filter runs
	// (mutateRequestHeaders, cleanInternalHeaders; use_remote_address
	// false): the processor sees the result.
	for _, tc := range []struct {
		name        string
		head        string // request line and headers after Host, CRLF-terminated
		body        string
		want        map[string]string // "" = absent
		wantValues  map[string][]string
		internalOut []string // route internal_only_headers
	}{
		{name: "chunked body: neither transfer-encoding nor content-length", head: "Transfer-Encoding: chunked\r\n", body: "2\r\n{}\r\n0\r\n\r\n",
			want: map[string]string{"transfer-encoding": "", "content-length": ""}},
		{name: "a length: content-length kept", head: "Content-Length: 2\r\n", body: "{}",
			want: map[string]string{"content-length": "2"}},
		{name: "hop-by-hop headers removed", head: "Content-Length: 2\r\nConnection: keep-alive, x-foo\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Foo: kept\r\n", body: "{}",
			want: map[string]string{"connection": "", "keep-alive": "", "proxy-connection": "", "upgrade": "", "x-foo": "kept"}},
		{name: "an upgrade keeps connection and upgrade", head: "Content-Length: 2\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", body: "{}",
			want: map[string]string{"connection": "Upgrade", "upgrade": "websocket"}},
		{name: "te kept only as trailers", head: "Content-Length: 2\r\nTE: gzip, trailers\r\n", body: "{}", want: map[string]string{"te": "trailers"}},
		{name: "te without trailers removed", head: "Content-Length: 2\r\nTE: gzip\r\n", body: "{}", want: map[string]string{"te": ""}},
		{name: "the router's internal x-envoy-* headers removed, others kept", body: "{}",
			head: "Content-Length: 2\r\nX-Envoy-Retry-On: 5xx\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Envoy-Expected-Rq-Timeout-Ms: 1\r\nX-Envoy-Internal: true\r\nX-Envoy-Max-Retries: 9\r\nX-Envoy-Force-Trace: 1\r\nX-Envoy-Decorator-Operation: op\r\nX-Envoy-Client-Tag: t\r\n",
			want: map[string]string{"x-envoy-retry-on": "", "x-envoy-upstream-rq-timeout-ms": "", "x-envoy-expected-rq-timeout-ms": "", "x-envoy-internal": "",
				"x-envoy-max-retries": "", "x-envoy-force-trace": "", "x-envoy-decorator-operation": "op", "x-envoy-client-tag": "t"}},
		{name: "the route table's internal_only_headers removed", head: "Content-Length: 2\r\nX-Mesh-Only: 1\r\n", body: "{}",
			internalOut: []string{"X-Mesh-Only"}, want: map[string]string{"x-mesh-only": ""}},
		{name: "a client's x-forwarded-proto kept, :scheme from it", head: "Content-Length: 2\r\nX-Forwarded-Proto: https\r\n", body: "{}",
			want: map[string]string{"x-forwarded-proto": "https", ":scheme": "https"}},
		{name: "no x-forwarded-proto: http", head: "Content-Length: 2\r\n", body: "{}",
			want: map[string]string{"x-forwarded-proto": "http", ":scheme": "http"}},
		{name: "a client's x-request-id kept", head: "Content-Length: 2\r\nX-Request-Id: mine\r\n", body: "{}",
			wantValues: map[string][]string{"x-request-id": {"mine"}}},
		// proxy_100_continue unset: the connection manager answers the
		// expectation itself and removes the header.
		{name: "expect: 100-continue answered and removed", head: "Content-Length: 2\r\nExpect: 100-continue\r\n", body: "{}",
			want: map[string]string{"expect": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := envConfig{}
			if tc.internalOut != nil {
				c.hcm = func(h *hcmv3.HttpConnectionManager) { h.GetRouteConfig().InternalOnlyHeaders = tc.internalOut }
			}
			e := newEnv(t, c)
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL(), "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n%s\r\n%s", tc.head, tc.body)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			for err == nil && resp.StatusCode == http.StatusContinue {
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			e.proc.wait(t, 1)
			msgs := e.proc.messages(0)
			h := headerMap(msgs[0].GetRequestHeaders().GetHeaders())
			for k, want := range tc.want {
				if got := h.Values(k); want == "" && len(got) > 0 || want != "" && !slices.Equal(got, []string{want}) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			for k, want := range tc.wantValues {
				if got := h.Values(k); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if got := string(msgs[1].GetRequestBody().GetBody()); got != "{}" {
				t.Errorf("request body %q", got)
			}
		})
	}
}

// TestHTTP10: Envoy's HTTP/1 codec refuses HTTP/1.0 with a bodiless 426
// and closes the connection, before any filter, unless the connection
// manager sets http_protocol_options.accept_http_10; then the request is
// processed like any other.
func TestHTTP10(t *testing.T) {
	for _, accept := range []bool{false, true} {
		t.Run(fmt.Sprintf("accept_http_10=%v", accept), func(t *testing.T) {
			e := newEnv(t, envConfig{hcm: func(h *hcmv3.HttpConnectionManager) {
				h.HttpProtocolOptions = &corev3.Http1ProtocolOptions{AcceptHttp_10: accept}
			}})
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL(), "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /openai/v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if accept {
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				e.proc.wait(t, 1)
				return
			}
			if resp.StatusCode != http.StatusUpgradeRequired || len(b) != 0 || !resp.Close {
				t.Errorf("status %d, body %q, close %v: want 426, no body, the connection closed", resp.StatusCode, b, resp.Close)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("the connection stays open (%v)", err)
			}
			if n := e.proxy.Counter("streams_started"); n != 0 {
				t.Errorf("%d ext_proc streams for a request the codec refused", n)
			}
		})
	}
}

// 2. Stream lifecycle.
func TestStreamLifecycle(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) {
			e := newEnv(t, envConfig{opts: Options{GracefulClose: graceful}, extProc: func(c *extprocfilterv3.ExternalProcessor) {
				c.RequestAttributes = []string{"request.id", "xds.route_name"}
				c.ResponseAttributes = []string{"request.method"}
			}})
			for range 2 {
				if r := do(t, e, "POST", "/anthropic/v1/messages", `{"x":1}`); r.status != 200 {
					t.Fatalf("%+v", r)
				}
			}
			e.proc.wait(t, 2)
			if n := e.proxy.Counter("streams_started"); n != 2 {
				t.Errorf("%d streams for 2 requests", n)
			}
			for i := range 2 {
				msgs := e.proc.messages(i)
				if len(msgs) != 4 {
					t.Fatalf("stream %d: %d messages, want headers, body, headers, body", i, len(msgs))
				}
				for j, m := range msgs {
					if (m.GetProtocolConfig() != nil) != (j == 0) {
						t.Errorf("message %d: protocol_config %v (first message only)", j, m.GetProtocolConfig())
					}
					if m.GetMetadataContext() == nil {
						t.Errorf("message %d: no metadata_context", j)
					}
					wantAttrs := j == 0 || j == 2
					if (len(m.GetAttributes()) > 0) != wantAttrs {
						t.Errorf("message %d: attributes %v (first message of each direction)", j, m.GetAttributes())
					}
				}
				attrs := msgs[0].GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
				if attrs["xds.route_name"].GetStringValue() != "anthropic" || attrs["request.id"].GetStringValue() == "" {
					t.Errorf("request attributes %v", attrs)
				}
				// Envoy half-closes, then (without the graceful flag) resets
				// at once: the server reads whichever reaches it first.
				want := []string{"EOF", "Canceled"}
				if graceful {
					want = []string{"EOF"}
				}
				if got := e.proc.endedBy(i); !slices.Contains(want, got) {
					t.Errorf("stream %d ended with %s, want one of %q", i, got, want)
				}
			}
			noViolations(t, e)
		})
	}
	t.Run("lazy open: no stream when the route disables ext_proc", func(t *testing.T) {
		e := newEnv(t, envConfig{hcm: perRoute(t, "openai", &extprocfilterv3.ExtProcPerRoute{Override: &extprocfilterv3.ExtProcPerRoute_Disabled{Disabled: true}})})
		if r := do(t, e, "POST", "/openai/v1/x", `{}`); r.status != 200 {
			t.Fatalf("%+v", r)
		}
		if n := e.proxy.Counter("streams_started"); n != 0 {
			t.Errorf("%d streams opened for a disabled route", n)
		}
	})
}

// Envoy closes the stream right after the reply to the last message it
// will send (closeGrpcStreamIfLastRespReceived, runtime flag
// ext_proc_stream_close_optimization, on since 1.37), and at encodeHeaders
// when the response goes unprocessed (no flag), not when the HTTP request
// ends. The upstream holds its body until the test has looked, so a close
// seen by then came before the request ended.
func TestStreamCloseAfterLastReply(t *testing.T) {
	mode := func(reqBody, respBody extprocfilterv3.ProcessingMode_BodySendMode, respHeaders, respTrailers extprocfilterv3.ProcessingMode_HeaderSendMode) func(*extprocfilterv3.ExternalProcessor) {
		return func(c *extprocfilterv3.ExternalProcessor) {
			m := c.ProcessingMode
			m.RequestBodyMode, m.RequestTrailerMode = reqBody, extprocfilterv3.ProcessingMode_SKIP
			m.ResponseHeaderMode, m.ResponseBodyMode, m.ResponseTrailerMode = respHeaders, respBody, respTrailers
		}
	}
	const (
		none     = extprocfilterv3.ProcessingMode_NONE
		buffered = extprocfilterv3.ProcessingMode_BUFFERED
		streamed = extprocfilterv3.ProcessingMode_STREAMED
		send     = extprocfilterv3.ProcessingMode_SEND
		skip     = extprocfilterv3.ProcessingMode_SKIP
	)
	for _, tc := range []struct {
		name   string
		cfg    func(*extprocfilterv3.ExternalProcessor)
		off    bool   // runtime flag ext_proc_stream_close_optimization off
		method string // GET: no request body
		// closed by the time the upstream is called, and by the time the
		// client has the response headers (the body still held).
		atUpstream, atHeaders bool
		want                  []string // the messages, in order
	}{
		{name: "bodiless request, response unprocessed: after the request_headers reply", method: "GET",
			cfg: mode(buffered, none, skip, skip), atUpstream: true, atHeaders: true, want: []string{"RequestHeaders"}},
		{name: "same, flag off: when the response headers pass (encodeHeaders)", method: "GET", off: true,
			cfg: mode(buffered, none, skip, skip), atHeaders: true, want: []string{"RequestHeaders"}},
		{name: "STREAMED request, response unprocessed: after the end_of_stream chunk's reply", method: "POST",
			cfg: mode(streamed, none, skip, skip), atUpstream: true, atHeaders: true, want: []string{"RequestHeaders", "RequestBody(2,true)"}},
		{name: "BUFFERED request, response unprocessed: when the response headers pass", method: "POST",
			cfg: mode(buffered, none, skip, skip), atHeaders: true, want: []string{"RequestHeaders", "RequestBody(2,true)"}},
		{name: "response body NONE: after the response_headers reply", method: "POST",
			cfg: mode(buffered, none, send, skip), atHeaders: true, want: []string{"RequestHeaders", "RequestBody(2,true)", "ResponseHeaders"}},
		{name: "same, flag off: open until the request ends", method: "POST", off: true,
			cfg: mode(buffered, none, send, skip), want: []string{"RequestHeaders", "RequestBody(2,true)", "ResponseHeaders"}},
		{name: "the sidecar's modes: open until the last body chunk's reply", method: "POST",
			want: []string{"RequestHeaders", "RequestBody(2,true)", "ResponseHeaders", "ResponseBody(9,false)", "ResponseBody(0,true)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var proxy atomic.Pointer[Proxy]
			atUpstream := make(chan int64, 1)
			release := make(chan struct{})
			var once sync.Once
			letGo := func() { once.Do(func() { close(release) }) }
			e := newEnv(t, envConfig{
				opts:    Options{NoStreamCloseOptimization: tc.off},
				extProc: tc.cfg,
				upstream: func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					atUpstream <- proxy.Load().Counter("streams_closed")
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(200)
					w.(http.Flusher).Flush()
					<-release
					_, _ = io.WriteString(w, "data: 1\n\n")
				},
			})
			proxy.Store(e.proxy)
			t.Cleanup(letGo) // runs before newEnv's: a failed test must not leave the upstream blocked
			var body io.Reader
			if tc.method == "POST" {
				body = strings.NewReader("{}")
			}
			req, err := http.NewRequest(tc.method, e.proxy.URL()+"/openai/v1/chat/completions", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := <-atUpstream; (got == 1) != tc.atUpstream {
				t.Errorf("streams closed when the upstream was called: %d, want closed %v", got, tc.atUpstream)
			}
			if got := e.proxy.Counter("streams_closed"); (got == 1) != tc.atHeaders {
				t.Errorf("streams closed when the client had the headers: %d, want closed %v", got, tc.atHeaders)
			}
			if tc.atHeaders {
				e.proc.wait(t, 1) // the processor sees the end while the request goes on
			}
			letGo()
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "data: 1\n\n" {
				t.Fatalf("client body %q %v", b, err)
			}
			if !tc.atHeaders {
				e.proc.wait(t, 1)
			}
			records(t, e)
			if got := e.proxy.Counter("streams_closed"); got != 1 {
				t.Errorf("streams_closed %d, want 1: a stream is closed once", got)
			}
			if got := allKinds(e.proc.messages(0)); !slices.Equal(got, tc.want) {
				t.Errorf("messages %q, want %q", got, tc.want)
			}
			noViolations(t, e)
		})
	}
}

func perRoute(t *testing.T, route string, pr *extprocfilterv3.ExtProcPerRoute) func(*hcmv3.HttpConnectionManager) {
	return func(h *hcmv3.HttpConnectionManager) {
		a, err := anypb.New(pr)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
			if r.GetName() == route {
				r.TypedPerFilterConfig = map[string]*anypb.Any{sidecar.FilterExtProc: a}
			}
		}
	}
}

func kinds(msgs []*extprocv3.ProcessingRequest) []string {
	var out []string
	for _, m := range msgs {
		k := fmt.Sprintf("%T", m.GetRequest())
		k = k[strings.LastIndex(k, "_")+1:]
		if b := m.GetResponseBody(); b != nil {
			k += fmt.Sprintf("(%d,%v)", len(b.GetBody()), b.GetEndOfStream())
		}
		out = append(out, k)
	}
	return out
}

// 3. Mode resolution.
func TestModeResolution(t *testing.T) {
	streamed := sidecar.ProcessingMode()
	override := &extprocfilterv3.ProcessingMode{ // the processor's SSE switch
		RequestHeaderMode: extprocfilterv3.ProcessingMode_SEND, RequestBodyMode: extprocfilterv3.ProcessingMode_NONE,
		RequestTrailerMode: extprocfilterv3.ProcessingMode_SKIP, ResponseHeaderMode: extprocfilterv3.ProcessingMode_SEND,
		ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED, ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
	}
	bufferedResp := func(c *extprocfilterv3.ExternalProcessor) {
		c.ProcessingMode.ResponseBodyMode = extprocfilterv3.ProcessingMode_BUFFERED
		c.AllowModeOverride = true
		c.AllowedOverrideModes = []*extprocfilterv3.ProcessingMode{override}
	}
	withOverride := func(m *extprocfilterv3.ProcessingMode) func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		return func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetResponseHeaders() != nil {
				r := respHeaders(nil)
				r.ModeOverride = m
				return []*extprocv3.ProcessingResponse{r}, nil
			}
			return nil, nil
		}
	}
	sse := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	}
	partial := proto.Clone(override).(*extprocfilterv3.ProcessingMode)
	partial.RequestBodyMode = extprocfilterv3.ProcessingMode_BUFFERED // not in the allow-list
	for _, tc := range []struct {
		name      string
		cfg       func(*extprocfilterv3.ExternalProcessor)
		hcm       func(*testing.T) func(*hcmv3.HttpConnectionManager)
		reply     func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error)
		wantKinds []string
		violation string
	}{
		{name: "filter config as is", wantKinds: []string{"RequestHeaders", "RequestBody", "ResponseHeaders", "ResponseBody(27,false)", "ResponseBody(0,true)"}},
		{name: "allowed override switches the buffered response to STREAMED", cfg: bufferedResp, reply: withOverride(override),
			wantKinds: []string{"RequestHeaders", "RequestBody", "ResponseHeaders", "ResponseBody(27,false)", "ResponseBody(0,true)"}},
		{name: "no override: the response is buffered whole", cfg: bufferedResp,
			wantKinds: []string{"RequestHeaders", "RequestBody", "ResponseHeaders", "ResponseBody(27,true)"}},
		{name: "override not in the allow-list is dropped", cfg: bufferedResp, reply: withOverride(partial),
			wantKinds: []string{"RequestHeaders", "RequestBody", "ResponseHeaders", "ResponseBody(27,true)"}, violation: "allowed_override_modes"},
		{name: "override without allow_mode_override is dropped", reply: withOverride(override), cfg: func(c *extprocfilterv3.ExternalProcessor) {
			c.ProcessingMode.ResponseBodyMode = extprocfilterv3.ProcessingMode_BUFFERED
		}, wantKinds: []string{"RequestHeaders", "RequestBody", "ResponseHeaders", "ResponseBody(27,true)"}, violation: "does not allow overrides"},
		{name: "per-route override replaces the mode", hcm: func(t *testing.T) func(*hcmv3.HttpConnectionManager) {
			m := proto.Clone(streamed).(*extprocfilterv3.ProcessingMode)
			m.RequestBodyMode, m.ResponseBodyMode = extprocfilterv3.ProcessingMode_NONE, extprocfilterv3.ProcessingMode_NONE
			return perRoute(t, "openai", &extprocfilterv3.ExtProcPerRoute{Override: &extprocfilterv3.ExtProcPerRoute_Overrides{Overrides: &extprocfilterv3.ExtProcOverrides{ProcessingMode: m}}})
		}, wantKinds: []string{"RequestHeaders", "ResponseHeaders"}},
		// Envoy merges per-route configs field by field: a route config
		// without processing_mode keeps the virtual host's.
		{name: "the virtual host's mode under a route config that sets none", hcm: func(t *testing.T) func(*hcmv3.HttpConnectionManager) {
			m := proto.Clone(streamed).(*extprocfilterv3.ProcessingMode)
			m.RequestBodyMode, m.ResponseBodyMode = extprocfilterv3.ProcessingMode_NONE, extprocfilterv3.ProcessingMode_NONE
			vh, err := anypb.New(&extprocfilterv3.ExtProcPerRoute{Override: &extprocfilterv3.ExtProcPerRoute_Overrides{Overrides: &extprocfilterv3.ExtProcOverrides{ProcessingMode: m}}})
			if err != nil {
				t.Fatal(err)
			}
			route := perRoute(t, "openai", &extprocfilterv3.ExtProcPerRoute{Override: &extprocfilterv3.ExtProcPerRoute_Overrides{Overrides: &extprocfilterv3.ExtProcOverrides{FailureModeAllow: wrapperspb.Bool(false)}}})
			return func(h *hcmv3.HttpConnectionManager) {
				route(h)
				h.GetRouteConfig().GetVirtualHosts()[0].TypedPerFilterConfig = map[string]*anypb.Any{sidecar.FilterExtProc: vh}
			}
		}, wantKinds: []string{"RequestHeaders", "ResponseHeaders"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := envConfig{extProc: tc.cfg, reply: tc.reply, upstream: sse, opts: Options{ResponseChunks: func() ChunkPlan { return Natural{} }}}
			if tc.hcm != nil {
				c.hcm = tc.hcm(t)
			}
			e := newEnv(t, c)
			r := do(t, e, "POST", "/openai/v1/chat/completions", `{}`)
			if r.status != 200 || string(r.body) != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
				t.Fatalf("%+v", r)
			}
			e.proc.wait(t, 1)
			got := kinds(e.proc.messages(0))
			// Natural chunking follows the upstream's flushes: compare the
			// shape, with the streamed chunks folded.
			if !sameShape(got, tc.wantKinds) {
				t.Errorf("messages %q, want %q", got, tc.wantKinds)
			}
			v := strings.Join(e.proxy.Violations(), "\n")
			if tc.violation == "" && v != "" || !strings.Contains(v, tc.violation) {
				t.Errorf("violations %q, want one about %q", v, tc.violation)
			}
		})
	}
}

// Envoy decides whether to strip content-length at the end of
// encodeHeaders, with the body mode before the reply: BUFFERED with header
// SEND keeps it. A mode_override to STREAMED in the headers reply does not
// strip it; it only makes Envoy skip sets of content-length (mutation_utils
// with the post-override shouldRemoveContentLength); a remove in the same
// reply still applies.
func TestContentLengthWithModeOverride(t *testing.T) {
	override := &extprocfilterv3.ProcessingMode{
		RequestHeaderMode: extprocfilterv3.ProcessingMode_SEND, RequestBodyMode: extprocfilterv3.ProcessingMode_NONE,
		RequestTrailerMode: extprocfilterv3.ProcessingMode_SKIP, ResponseHeaderMode: extprocfilterv3.ProcessingMode_SEND,
		ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED, ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
	}
	const body = "data: 0\n\ndata: 1\n\ndata: 2\n\n"
	for _, tc := range []struct {
		name      string
		respBody  extprocfilterv3.ProcessingMode_BodySendMode
		override  bool
		mutation  *extprocv3.HeaderMutation
		wantCL    string
		violation string
	}{
		{name: "BUFFERED overridden to STREAMED: content-length kept", respBody: extprocfilterv3.ProcessingMode_BUFFERED, override: true, wantCL: "27"},
		{name: "overridden, and removed in the same reply: gone", respBody: extprocfilterv3.ProcessingMode_BUFFERED, override: true,
			mutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}}},
		{name: "overridden, and set in the same reply: the set is skipped", respBody: extprocfilterv3.ProcessingMode_BUFFERED, override: true,
			mutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("content-length", "27")}}, wantCL: "27", violation: "content-length set where the body mode strips it"},
		{name: "BUFFERED with header SEND: kept", respBody: extprocfilterv3.ProcessingMode_BUFFERED, wantCL: "27"},
		{name: "STREAMED from the config: stripped with the headers", respBody: extprocfilterv3.ProcessingMode_STREAMED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				sawCL []string
			)
			e := newEnv(t, envConfig{
				extProc: func(c *extprocfilterv3.ExternalProcessor) {
					c.ProcessingMode.ResponseBodyMode, c.ProcessingMode.ResponseTrailerMode = tc.respBody, extprocfilterv3.ProcessingMode_SKIP
					c.AllowModeOverride = true
					c.AllowedOverrideModes = []*extprocfilterv3.ProcessingMode{override}
				},
				upstream: func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "text/event-stream")
					w.Header().Set("Content-Length", fmt.Sprint(len(body)))
					_, _ = io.WriteString(w, body)
				},
				reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
					if req.GetResponseHeaders() == nil {
						return nil, nil
					}
					mu.Lock()
					sawCL = headerMap(req.GetResponseHeaders().GetHeaders()).Values("content-length")
					mu.Unlock()
					r := respHeaders(&extprocv3.CommonResponse{HeaderMutation: tc.mutation})
					if tc.override {
						r.ModeOverride = override
					}
					return []*extprocv3.ProcessingResponse{r}, nil
				},
			})
			r := do(t, e, "POST", "/openai/v1/chat/completions", `{}`)
			if r.err != nil || r.status != 200 || string(r.body) != body {
				t.Fatalf("%+v", r)
			}
			mu.Lock()
			if !slices.Equal(sawCL, []string{"27"}) {
				t.Errorf("response_headers carried content-length %q, want the upstream's", sawCL)
			}
			mu.Unlock()
			if got := r.header.Get("Content-Length"); got != tc.wantCL {
				t.Errorf("client content-length %q, want %q", got, tc.wantCL)
			}
			v := strings.Join(e.proxy.Violations(), "\n")
			if tc.violation == "" && v != "" || !strings.Contains(v, tc.violation) {
				t.Errorf("violations %q, want one about %q", v, tc.violation)
			}
		})
	}
}

// sameShape compares message kinds, treating runs of streamed data chunks
// (ResponseBody(n,false)) as one.
func sameShape(got, want []string) bool {
	fold := func(l []string) []string {
		var out []string
		for _, k := range l {
			if strings.HasPrefix(k, "ResponseBody(") && strings.HasSuffix(k, ",false)") {
				k = "ResponseBody(chunk)"
				if len(out) > 0 && out[len(out)-1] == k {
					continue
				}
			}
			out = append(out, k)
		}
		return out
	}
	return slices.Equal(fold(got), fold(want))
}

// 4 and 5. Body engines and chunk plans.
func TestStreamedChunksPipelinedAndDeliveredOnReply(t *testing.T) {
	events := []string{"data: a\n\n", "data: b\n\n", "data: c\n\n"}
	var (
		mu       sync.Mutex
		received []byte // what the client has read so far
		atThird  []byte // ... when chunk 3 reached the processor
	)
	e := newEnv(t, envConfig{
		opts: Options{ResponseChunks: func() ChunkPlan { return Fixed(len(events[0])) }},
		upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Length", fmt.Sprint(3*len(events[0])))
			_, _ = io.WriteString(w, strings.Join(events, ""))
		},
		reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			switch string(req.GetResponseBody().GetBody()) {
			case events[1]:
				return []*extprocv3.ProcessingResponse{}, nil // withhold chunk 2's reply
			case events[2]:
				// Chunk 3 arrived with chunk 2 unanswered: several chunks
				// are outstanding. Now answer both, in order.
				mu.Lock()
				atThird = slices.Clone(received)
				mu.Unlock()
				return []*extprocv3.ProcessingResponse{respBody(nil), respBody(nil)}, nil
			}
			return nil, nil
		},
	})
	resp, err := http.Post(e.proxy.URL()+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	for {
		n, err := resp.Body.Read(buf)
		mu.Lock()
		received = append(received, buf[:n]...)
		mu.Unlock()
		if err != nil {
			break
		}
	}
	if string(received) != strings.Join(events, "") {
		t.Errorf("client got %q", received)
	}
	if !strings.HasPrefix(events[0], string(atThird)) {
		t.Errorf("the client had %q before chunk 2's reply: a chunk must wait for its reply", atThird)
	}
	if resp.Header.Get("Content-Length") != "" {
		t.Error("STREAMED must strip content-length")
	}
	e.proc.wait(t, 1)
	if got := kinds(e.proc.messages(0)); !slices.Equal(got, []string{"RequestHeaders", "RequestBody", "ResponseHeaders", "ResponseBody(9,false)", "ResponseBody(9,false)", "ResponseBody(9,true)"}) {
		t.Errorf("messages %q", got)
	}
	noViolations(t, e)
}

func TestChunkPlans(t *testing.T) {
	body := "data: {\"x\":\"é\"}\r\n\r\ndata: [DONE]\r\n\r\n"
	for _, tc := range []struct {
		name       string
		plan       func() ChunkPlan
		emptyFinal bool
		chunked    bool
		want       []int // body sizes sent, the last with end_of_stream
	}{
		{"1 byte", func() ChunkPlan { return Fixed(1) }, false, false, ones(len(body))},
		{"whole", func() ChunkPlan { return Whole{} }, false, false, []int{len(body)}},
		{"byte-exact: mid UTF-8, mid CRLF", func() ChunkPlan { return &Sizes{List: []int{13, 6, 100}} }, false, false, []int{13, 6, len(body) - 19}},
		{"empty final chunk", func() ChunkPlan { return Whole{} }, true, false, []int{len(body), 0}},
		{"chunked upstream ends with an empty chunk", func() ChunkPlan { return Whole{} }, false, true, []int{len(body), 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{
				opts: Options{ResponseChunks: tc.plan, EmptyFinalChunk: tc.emptyFinal},
				upstream: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					if !tc.chunked {
						w.Header().Set("Content-Length", fmt.Sprint(len(body)))
					}
					_, _ = io.WriteString(w, body)
					w.(http.Flusher).Flush() // no content-length: chunked
				},
			})
			r := do(t, e, "POST", "/openai/v1/chat/completions", `{}`)
			if string(r.body) != body {
				t.Fatalf("client got %q", r.body)
			}
			e.proc.wait(t, 1)
			var sizes []int
			var joined []byte
			msgs := e.proc.messages(0)
			for i, m := range msgs {
				if b := m.GetResponseBody(); b != nil {
					sizes = append(sizes, len(b.GetBody()))
					joined = append(joined, b.GetBody()...)
					if b.GetEndOfStream() != (i == len(msgs)-1) {
						t.Errorf("chunk %d: end_of_stream %v", i, b.GetEndOfStream())
					}
				}
			}
			if !slices.Equal(sizes, tc.want) || string(joined) != body {
				t.Errorf("chunks %v, want %v", sizes, tc.want)
			}
		})
	}
	t.Run("random plans cover the body", func(t *testing.T) {
		for seed := range uint64(5) {
			chunks := split([]byte(body), NewRandom(seed, 7))
			if string(bytes.Join(chunks, nil)) != body {
				t.Fatalf("seed %d: chunks do not add up", seed)
			}
			for _, c := range chunks {
				if len(c) < 1 || len(c) > 7 {
					t.Fatalf("seed %d: chunk of %d bytes", seed, len(c))
				}
			}
		}
	})
}

func ones(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

func TestBufferLimits(t *testing.T) {
	t.Run("request over the listener buffer: Envoy's own 413", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		r := do(t, e, "POST", "/openai/v1/chat/completions", strings.Repeat("x", sidecar.DefaultRequestBufferBytes+1))
		if r.status != http.StatusRequestEntityTooLarge || string(r.body) != "Payload Too Large" {
			t.Errorf("%d %q", r.status, r.body)
		}
		if n := len(records(t, e)); n != 1 || records(t, e)[0].Upstream != nil {
			t.Error("an over-limit body reached the upstream")
		}
		// The filter manager's 413 is a local reply through every encoder
		// filter: ext_proc, whose processing is not complete, sends it as
		// the response.
		e.proc.wait(t, 1)
		msgs := e.proc.messages(0)
		if got := allKinds(msgs); !slices.Equal(got, []string{"RequestHeaders", "ResponseHeaders", "ResponseBody(17,true)"}) {
			t.Fatalf("ext_proc messages %q", got)
		}
		if st, _ := headerMap(msgs[1].GetResponseHeaders().GetHeaders()).Get(":status"); st != "413" {
			t.Errorf("response_headers :status %q", st)
		}
	})
	t.Run("10 MiB request reaches the processor whole", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		big := strings.Repeat("y", 10<<20)
		if r := do(t, e, "POST", "/openai/v1/chat/completions", big); r.status != 200 {
			t.Fatalf("%d", r.status)
		}
		e.proc.wait(t, 1)
		if b := e.proc.messages(0)[1].GetRequestBody(); len(b.GetBody()) != len(big) || !b.GetEndOfStream() {
			t.Errorf("body message of %d bytes, eos %v", len(b.GetBody()), b.GetEndOfStream())
		}
	})
	// Envoy's filter manager has one buffer limit per stream, the
	// downstream connection's (encoderBufferLimit returns the same
	// buffer_limit_ as decoderBufferLimit); a cluster's
	// per_connection_buffer_limit_bytes sizes only its upstream connections.
	for _, tc := range []struct {
		name                  string
		listener, cluster     uint32
		wantStatus            int
		wantDetails, wantBody string
	}{
		{name: "buffered response over the cluster buffer, within the listener's: passes",
			listener: 4 << 20, cluster: defaultBufferLimit, wantStatus: 200, wantDetails: "via_upstream"},
		{name: "buffered response over the listener buffer: 500, whatever the cluster's",
			listener: defaultBufferLimit, cluster: 64 << 20, wantStatus: 500, wantDetails: "response_payload_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			big := bytes.Repeat([]byte("z"), defaultBufferLimit+1)
			e := newEnv(t, envConfig{
				extProc: func(c *extprocfilterv3.ExternalProcessor) {
					c.ProcessingMode.ResponseBodyMode = extprocfilterv3.ProcessingMode_BUFFERED
				},
				upstream: func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) },
				boot: func(b *bootstrapv3.Bootstrap) {
					b.GetStaticResources().GetListeners()[0].PerConnectionBufferLimitBytes = wrapperspb.UInt32(tc.listener)
					for _, c := range b.GetStaticResources().GetClusters() {
						if c.GetName() == "openai" {
							c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(tc.cluster)
						}
					}
				},
			})
			r := do(t, e, "POST", "/openai/v1/x", `{}`)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d", r.status, tc.wantStatus)
			}
			if d := records(t, e)[0].Details; d != tc.wantDetails {
				t.Errorf("details %q, want %q", d, tc.wantDetails)
			}
			if tc.wantStatus == 200 && !bytes.Equal(r.body, big) {
				t.Errorf("client got %d bytes, want the %d the upstream sent", len(r.body), len(big))
			}
		})
	}
}

// GET: end_of_stream on the headers, no body message.
func TestBodylessRequest(t *testing.T) {
	e := newEnv(t, envConfig{})
	if r := do(t, e, "GET", "/openai/v1/models", ""); r.status != 200 {
		t.Fatalf("%+v", r)
	}
	e.proc.wait(t, 1)
	msgs := e.proc.messages(0)
	if !msgs[0].GetRequestHeaders().GetEndOfStream() || msgs[1].GetResponseHeaders() == nil {
		t.Errorf("messages %q", kinds(msgs))
	}
}

// 6. Mutation application, exactly as §4.2.
func TestMutationRules(t *testing.T) {
	base := Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", "1"}, {"x-envoy-x", "e"}, {"content-length", "5"}}
	raw := func(k, v string, app *bool) *corev3.HeaderValueOption {
		o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
		if app != nil {
			o.Append = wrapperspb.Bool(*app)
		}
		return o
	}
	yes, no := true, false
	for _, tc := range []struct {
		name      string
		rules     *extprocfilterv3.ExternalProcessor
		mu        mutation
		m         *extprocv3.HeaderMutation
		want      Headers // nil: an error
		rejected  int
		violation string
	}{
		{name: "removes run before sets", m: &extprocv3.HeaderMutation{RemoveHeaders: []string{"x-a"}, SetHeaders: []*corev3.HeaderValueOption{raw("x-a", "2", &no)}},
			want: Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-envoy-x", "e"}, {"content-length", "5"}, {"x-a", "2"}}},
		{name: "append defaults to false: overwrite", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("x-a", "2", nil)}},
			want: Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", "2"}, {"x-envoy-x", "e"}, {"content-length", "5"}}},
		{name: "append true adds a value", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("x-a", "2", &yes)}},
			want: append(slices.Clone(base), Header{"x-a", "2"})},
		{name: ":path may be set", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw(":path", "/v1", &no)}},
			want: Headers{{":authority", "a"}, {":path", "/v1"}, {":method", "POST"}, {"host", "h"}, {"x-a", "1"}, {"x-envoy-x", "e"}, {"content-length", "5"}}},
		{name: "host, :authority, :method, x-envoy are dropped silently", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			raw("host", "x", &no), raw(":authority", "x", &no), raw(":method", "GET", &no), raw("x-envoy-x", "y", &no)}},
			want: base, rejected: 4, violation: "dropped by the mutation rules"},
		{name: "removing a pseudo-header or host is refused", m: &extprocv3.HeaderMutation{RemoveHeaders: []string{":path", "host"}},
			want: base, rejected: 2, violation: "dropped"},
		{name: "disallow_is_error turns a refusal into an error", rules: &extprocfilterv3.ExternalProcessor{},
			m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("host", "x", &no)}}},
		{name: "allow_all_routing lets :authority change", mu: mutation{rules: mustRules(t, `{"allow_all_routing": true}`)},
			m:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw(":authority", "b", &no)}},
			want: Headers{{":authority", "b"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", "1"}, {"x-envoy-x", "e"}, {"content-length", "5"}}},
		{name: "disallow_expression beats allow_expression", mu: mutation{rules: mustRules(t, `{"allow_expression": {"regex": "x-.*"}, "disallow_expression": {"regex": "x-a"}}`)},
			m:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("x-a", "2", &no), raw("x-envoy-x", "z", &no)}},
			want: Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", "1"}, {"x-envoy-x", "z"}, {"content-length", "5"}}, rejected: 1, violation: "dropped"},
		{name: "disallow_all", mu: mutation{rules: mustRules(t, `{"disallow_all": true}`)},
			m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("x-b", "2", &no)}}, want: base, rejected: 1, violation: "dropped"},
		{name: "disallow_system refuses :path", mu: mutation{rules: mustRules(t, `{"disallow_system": true}`)},
			m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw(":path", "/x", &no)}}, want: base, rejected: 1, violation: "dropped"},
		{name: "allow_envoy", mu: mutation{rules: mustRules(t, `{"allow_envoy": true}`)},
			m:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("x-envoy-x", "y", &no)}},
			want: Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", "1"}, {"x-envoy-x", "y"}, {"content-length", "5"}}},
		{name: ":status below 200 is refused", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw(":status", "101", &no)}}, want: base, rejected: 1, violation: "dropped"},
		{name: "value instead of raw_value sets an empty header", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "2"}, Append: wrapperspb.Bool(false)}}},
			want: Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", ""}, {"x-envoy-x", "e"}, {"content-length", "5"}}, violation: "not raw_value"},
		{name: "value and raw_value both set is an error", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "2", RawValue: []byte("3")}}}}},
		{name: "append_action is ignored", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", RawValue: []byte("2")}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}}},
			want: Headers{{":authority", "a"}, {":path", "/p"}, {":method", "POST"}, {"host", "h"}, {"x-a", "2"}, {"x-envoy-x", "e"}, {"content-length", "5"}}, violation: "append_action"},
		{name: "append_action honoured behind the switch", mu: mutation{honourAppendAction: true},
			m:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", RawValue: []byte("2")}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}}},
			want: base, violation: "append_action"},
		{name: "CR in a value is an error", m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("x-a", "a\r\nb", &no)}}},
		{name: "bad name to remove is an error", m: &extprocv3.HeaderMutation{RemoveHeaders: []string{"x a"}}},
		{name: "more than 100 sets is an error", m: &extprocv3.HeaderMutation{SetHeaders: manySets(101)}},
		{name: "result over 100 headers is an error", m: &extprocv3.HeaderMutation{SetHeaders: manySets(95)}},
		{name: "content-length skipped where the mode strips it", mu: mutation{stripCL: true},
			m: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{raw("content-length", "9", &no)}}, want: base, violation: "content-length set where"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu := tc.mu
			if mu.rules == nil {
				mu.rules = mustRules(t, `{}`)
				if tc.rules != nil {
					mu.rules = mustRules(t, `{"disallow_is_error": true}`)
				}
			}
			h := slices.Clone(base)
			out, err := mu.apply(&h, tc.m)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("applied: %v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(h, tc.want) {
				t.Errorf("got  %v\nwant %v", h, tc.want)
			}
			if out.rejected != tc.rejected {
				t.Errorf("rejected %d, want %d", out.rejected, tc.rejected)
			}
			v := strings.Join(out.violations, "\n")
			if (tc.violation == "") != (v == "") || !strings.Contains(v, tc.violation) {
				t.Errorf("violations %q, want %q", v, tc.violation)
			}
		})
	}
}

func manySets(n int) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for i := range n {
		out = append(out, set(fmt.Sprintf("x-h%d", i), "v"))
	}
	return out
}

func mustRules(t *testing.T, js string) *rules {
	t.Helper()
	c := &extprocfilterv3.ExternalProcessor{}
	if err := protojsonUnmarshal(`{"mutation_rules": `+js+`}`, c); err != nil {
		t.Fatal(err)
	}
	r, err := newRules(c.GetMutationRules())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// allow_envoy decides, in both directions, whether the processor may set
// or remove x-envoy-* headers (mutation_rules.cc isAllowed: the last rule,
// after the routing and system-header rules). Refused, a mutation is
// dropped, or fails the request with disallow_is_error (the sidecar's).
func TestAllowEnvoy(t *testing.T) {
	reply := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		m := func(remove, add string) *extprocv3.CommonResponse {
			return &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{remove}, SetHeaders: []*corev3.HeaderValueOption{set(add, "1")}}}
		}
		switch {
		case req.GetRequestHeaders() != nil:
			return []*extprocv3.ProcessingResponse{reqHeaders(m("x-envoy-client-tag", "x-envoy-to-upstream"))}, nil
		case req.GetResponseHeaders() != nil:
			return []*extprocv3.ProcessingResponse{respHeaders(m("x-envoy-from-upstream", "x-envoy-to-client"))}, nil
		}
		return nil, nil
	}
	upstream := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Envoy-From-Upstream", "1")
		_, _ = io.WriteString(w, "{}")
	}
	for _, tc := range []struct {
		name                string
		allowEnvoy, isError *wrapperspb.BoolValue
		wantStatus          int
		// applied: the removes and sets took effect on both paths.
		applied  bool
		rejected int64
	}{
		{name: "allow_envoy: set and remove both ways", allowEnvoy: wrapperspb.Bool(true), isError: wrapperspb.Bool(true), wantStatus: 200, applied: true},
		{name: "allow_envoy false: dropped both ways", allowEnvoy: wrapperspb.Bool(false), isError: wrapperspb.Bool(false), wantStatus: 200, rejected: 4},
		{name: "unset, as false: dropped", isError: wrapperspb.Bool(false), wantStatus: 200, rejected: 4},
		{name: "unset, with disallow_is_error: the request fails", isError: wrapperspb.Bool(true), wantStatus: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{reply: reply, upstream: upstream, extProc: func(c *extprocfilterv3.ExternalProcessor) {
				if c.MutationRules == nil {
					c.MutationRules = &mutationrulesv3.HeaderMutationRules{}
				}
				c.MutationRules.AllowEnvoy, c.MutationRules.DisallowIsError = tc.allowEnvoy, tc.isError
			}})
			r := do(t, e, "POST", "/openai/v1/x", `{}`, "X-Envoy-Client-Tag", "c")
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d (%s)", r.status, tc.wantStatus, r.body)
			}
			if got := e.proxy.Counter("rejected_header_mutations"); got != tc.rejected {
				t.Errorf("rejected_header_mutations %d, want %d", got, tc.rejected)
			}
			if tc.wantStatus != 200 {
				if records(t, e)[0].Upstream != nil {
					t.Error("a refused mutation with disallow_is_error still went upstream")
				}
				return
			}
			up := records(t, e)[0].Upstream.Header
			if up.has("x-envoy-client-tag") == tc.applied || up.has("x-envoy-to-upstream") != tc.applied {
				t.Errorf("upstream headers %v (mutations applied: %v)", up, tc.applied)
			}
			if (r.header.Get("X-Envoy-From-Upstream") != "") == tc.applied || (r.header.Get("X-Envoy-To-Client") != "") != tc.applied {
				t.Errorf("client headers %v (mutations applied: %v)", r.header, tc.applied)
			}
		})
	}
}

// The BUFFERED content-length check and mutation errors, through the proxy.
func TestBufferedBodyMutation(t *testing.T) {
	newBody := `{"rewritten":true}`
	for _, tc := range []struct {
		name       string
		withCL     bool
		wantStatus int
	}{
		{"content-length set with the new body", true, 200},
		{"content-length left stale: status_on_error", false, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				if req.GetRequestBody() == nil {
					return nil, nil
				}
				c := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(newBody)}}}
				if tc.withCL {
					c.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("content-length", fmt.Sprint(len(newBody)))}}
				}
				return []*extprocv3.ProcessingResponse{reqBody(c)}, nil
			}})
			r := do(t, e, "POST", "/openai/v1/x", `{"original":1}`)
			if r.status != tc.wantStatus {
				t.Fatalf("%d %s", r.status, r.body)
			}
			rec := records(t, e)[0]
			if tc.withCL && string(rec.Upstream.Body) != newBody {
				t.Errorf("upstream body %q", rec.Upstream.Body)
			}
			if !tc.withCL && rec.Upstream != nil {
				t.Error("a failed mutation still went upstream")
			}
		})
	}
}

// 7. Route cache.
func TestRouteCache(t *testing.T) {
	// setPath replies to the request headers with :path set (none when
	// path is empty) and the clear_route_cache bit.
	setPath := func(clear bool, path string) func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		return func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestHeaders() == nil {
				return nil, nil
			}
			c := &extprocv3.CommonResponse{ClearRouteCache: clear}
			if path != "" {
				c.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set(":path", path)}}
			}
			return []*extprocv3.ProcessingResponse{reqHeaders(c)}, nil
		}
	}
	defaultAction := func(c *extprocfilterv3.ExternalProcessor) {
		c.RouteCacheAction = extprocfilterv3.ExternalProcessor_DEFAULT
	}
	// The client's path; the shipped route /openai/ has prefix_rewrite "/".
	const client = "/openai/v1/chat/completions?key=k"
	for _, tc := range []struct {
		name        string
		cfg         func(*extprocfilterv3.ExternalProcessor)
		reply       func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error)
		wantStatus  int
		wantFlags   string
		wantIgnored int64
		wantPath    string // upstream path, for a 200
	}{
		{"shipped: no :path mutation, the route strips the prefix", nil, setPath(false, ""), 200, "", 0, "/v1/chat/completions?key=k"},
		{"shipped: the processor edits :path keeping the prefix, the route strips it; RETAIN ignores the clear",
			nil, setPath(true, "/openai/v1/chat/completions"), 200, "", 0, "/v1/chat/completions"},
		{"trap: the processor strips the prefix too, the route cuts the prefix's length again",
			nil, setPath(false, "/v1/chat/completions"), 200, "", 0, "//completions"},
		{"DEFAULT re-matches the kept prefix: the same route", defaultAction, setPath(true, "/openai/v1/chat/completions"), 200, "", 0, "/v1/chat/completions"},
		{"DEFAULT re-matches a stripped path: 404 NR", defaultAction, setPath(true, "/v1/chat/completions"), 404, "NR", 0, ""},
		{"clear without a header mutation is ignored", defaultAction, setPath(true, ""), 200, "", 1, "/v1/chat/completions?key=k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{extProc: tc.cfg, reply: tc.reply})
			r := do(t, e, "POST", client, `{}`)
			if r.status != tc.wantStatus {
				t.Fatalf("%d", r.status)
			}
			rec := records(t, e)[0]
			if rec.Flags != tc.wantFlags {
				t.Errorf("flags %q", rec.Flags)
			}
			if tc.wantStatus == 200 {
				if rec.Upstream.Host != "api.openai.com" || rec.Cluster != "openai" {
					t.Errorf("upstream %+v cluster %q", rec.Upstream, rec.Cluster)
				}
				if rec.Upstream.Path != tc.wantPath {
					t.Errorf("upstream path %q, want %q", rec.Upstream.Path, tc.wantPath)
				}
			}
			if got := e.proxy.Counter("clear_route_cache_ignored"); got != tc.wantIgnored {
				t.Errorf("clear_route_cache_ignored %d", got)
			}
		})
	}
}

// 8. Immediate responses.
func TestImmediateResponse(t *testing.T) {
	t.Run("status clamp, text/plain, headers through the rules, details", func(t *testing.T) {
		// Envoy's default rules, without the sidecar's allow_envoy, drop x-envoy-*.
		e := newEnv(t, envConfig{extProc: func(c *extprocfilterv3.ExternalProcessor) { c.MutationRules.AllowEnvoy = nil }, reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode(100), "nope", "over the limit", set("retry-after", "3"), set("x-envoy-no", "1"))}, nil
		}})
		r := do(t, e, "POST", "/openai/v1/x", `{}`)
		if r.status != 200 || string(r.body) != "nope" || r.header.Get("Content-Type") != "text/plain" || r.header.Get("Retry-After") != "3" || r.header.Get("X-Envoy-No") != "" {
			t.Errorf("%d %q %v", r.status, r.body, r.header)
		}
		if d := records(t, e)[0].Details; d != "over_the_limit" {
			t.Errorf("details %q", d)
		}
		if records(t, e)[0].Upstream != nil {
			t.Error("went upstream")
		}
	})
	t.Run("details: every whitespace character becomes _, none collapsed or trimmed", func(t *testing.T) {
		e := newEnv(t, envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode_Forbidden, "no", " over  the\tlimit\n")}, nil
		}})
		do(t, e, "POST", "/openai/v1/x", `{}`)
		if d := records(t, e)[0].Details; d != "_over__the_limit_" {
			t.Errorf("details %q, want StringUtil::replaceAllEmptySpace's %q", d, "_over__the_limit_")
		}
	})
	t.Run("content-type from the processor wins", func(t *testing.T) {
		e := newEnv(t, envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestBody() == nil {
				return nil, nil
			}
			return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode_TooManyRequests, `{"error":{}}`, "x", set("content-type", "application/json"))}, nil
		}})
		r := do(t, e, "POST", "/openai/v1/x", `{}`)
		if r.status != 429 || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%d %v", r.status, r.header)
		}
		noViolations(t, e)
	})
	// Envoy's local reply (Utility::prepareLocalReply) sets content-length
	// and, if absent, a text/plain content-type when the body is not empty,
	// and removes both when it is, whatever the processor's headers set.
	for _, tc := range []struct {
		name, body, wantType, wantLength string
		headers                          []*corev3.HeaderValueOption
	}{
		{name: "empty body: no content-type, even the processor's", headers: []*corev3.HeaderValueOption{set("content-type", "application/json"), set("content-length", "7")},
			wantLength: "0"},
		{name: "empty body, no headers: no content-type", wantLength: "0"},
		{name: "a body: text/plain and its length", body: "denied", wantType: "text/plain", wantLength: "6"},
		{name: "a body: the processor's content-type, Envoy's length", body: "{}", headers: []*corev3.HeaderValueOption{set("content-type", "application/json"), set("content-length", "7")},
			wantType: "application/json", wantLength: "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
				return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode_Forbidden, tc.body, "x", tc.headers...)}, nil
			}})
			r := do(t, e, "POST", "/openai/v1/x", `{}`)
			if r.err != nil || r.status != 403 || string(r.body) != tc.body {
				t.Fatalf("%+v", r)
			}
			if got := r.header.Get("Content-Type"); got != tc.wantType {
				t.Errorf("content-type %q, want %q", got, tc.wantType)
			}
			if got := r.header.Get("Content-Length"); got != tc.wantLength {
				t.Errorf("content-length %q, want %q", got, tc.wantLength)
			}
		})
	}
	t.Run("after the response headers went: reset", func(t *testing.T) {
		e := newEnv(t, envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetResponseBody() == nil {
				return nil, nil
			}
			return []*extprocv3.ProcessingResponse{immediate(typev3.StatusCode_InternalServerError, "late", "x")}, nil
		}})
		r := do(t, e, "POST", "/openai/v1/x", `{}`)
		if r.err == nil {
			t.Errorf("client read the response whole: %d %q", r.status, r.body)
		}
		if !records(t, e)[0].Reset {
			t.Error("no reset recorded")
		}
	})
}

// 9. Timers, on an injected clock.
func TestMessageTimeout(t *testing.T) {
	hold := func(kindIs func(*extprocv3.ProcessingRequest) bool, release <-chan struct{}) func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		return func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if kindIs(req) {
				<-release
			}
			return nil, nil
		}
	}
	isHeaders := func(r *extprocv3.ProcessingRequest) bool { return r.GetRequestHeaders() != nil }
	t.Run("504 when the reply is late; fail closed", func(t *testing.T) {
		clock := NewFakeClock()
		release := make(chan struct{})
		defer close(release)
		e := newEnv(t, envConfig{opts: Options{Clock: clock}, reply: hold(isHeaders, release)})
		done := make(chan result)
		go func() { done <- do(t, e, "POST", "/openai/v1/x", `{}`) }()
		clock.WaitTimers(1)
		clock.Advance(sidecar.DefaultMessageTimeout - time.Millisecond)
		select {
		case r := <-done:
			t.Fatalf("answered before the timeout: %d", r.status)
		default:
		}
		clock.Advance(time.Millisecond)
		r := <-done
		if r.status != 504 || e.proxy.Counter("message_timeouts") != 1 || records(t, e)[0].Upstream != nil {
			t.Errorf("%d, timeouts %d", r.status, e.proxy.Counter("message_timeouts"))
		}
		if d := records(t, e)[0].Details; d != "ext_proc_error_per-message_timeout_exceeded" {
			t.Errorf("details %q", d)
		}
	})
	t.Run("failure_mode_allow: the request goes on unprocessed", func(t *testing.T) {
		clock := NewFakeClock()
		release := make(chan struct{})
		defer close(release)
		e := newEnv(t, envConfig{opts: Options{Clock: clock}, reply: hold(isHeaders, release),
			extProc: func(c *extprocfilterv3.ExternalProcessor) { c.FailureModeAllow = true }})
		done := make(chan result)
		go func() { done <- do(t, e, "POST", "/openai/v1/x", `{"k":1}`) }()
		clock.WaitTimers(1)
		clock.Advance(sidecar.DefaultMessageTimeout)
		r := <-done
		if r.status != 200 || e.proxy.Counter("failure_mode_allowed") != 1 || string(records(t, e)[0].Upstream.Body) != `{"k":1}` {
			t.Errorf("%d allowed=%d", r.status, e.proxy.Counter("failure_mode_allowed"))
		}
	})
	t.Run("override_message_timeout buys time once, up to the max", func(t *testing.T) {
		clock := NewFakeClock()
		e := newEnv(t, envConfig{opts: Options{Clock: clock}, reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestHeaders() == nil {
				return nil, nil
			}
			over := func(d time.Duration) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(d)}
			}
			// Too long (ignored), fine (accepted), a second one (ignored).
			return []*extprocv3.ProcessingResponse{over(time.Hour), over(5 * time.Second), over(9 * time.Second), continueReply(req)}, nil
		}})
		// The fake sends the overrides and then the default reply; the
		// request completes, and the two refused overrides are counted.
		if r := do(t, e, "POST", "/openai/v1/x", `{}`); r.status != 200 {
			t.Fatalf("%d", r.status)
		}
		if n := e.proxy.Counter("override_message_timeout_ignored"); n != 2 {
			t.Errorf("override_message_timeout_ignored %d, want 2", n)
		}
	})
	t.Run("the accepted override extends the wait", func(t *testing.T) {
		clock := NewFakeClock()
		e := newEnv(t, envConfig{opts: Options{Clock: clock}, reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestHeaders() == nil {
				return nil, nil
			}
			return []*extprocv3.ProcessingResponse{{OverrideMessageTimeout: durationpb.New(8 * time.Second)}}, nil
		}})
		done := make(chan result)
		go func() { done <- do(t, e, "POST", "/openai/v1/x", `{}`) }()
		// The fake answered with the override only; wait for the restarted
		// timer (the second one armed), then pass the old deadline.
		waitFor(t, func() bool { return clockArmed(clock, 8*time.Second) })
		clock.Advance(3 * time.Second)
		if !clockArmed(clock, 5*time.Second) {
			t.Fatal("the timer fired at the old deadline")
		}
		clock.Advance(5 * time.Second)
		if r := <-done; r.status != 504 {
			t.Errorf("%d", r.status)
		}
	})
}

// clockArmed: a timer is due in exactly left.
func clockArmed(c *FakeClock, left time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for tm := range c.timers {
		if tm.deadline.Sub(c.now) == left {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached")
		case <-time.After(time.Millisecond):
		}
	}
}

// 10. Failures per the §4.9 table.
func TestFailures(t *testing.T) {
	wrongKind := func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		if req.GetRequestHeaders() != nil {
			return []*extprocv3.ProcessingResponse{respHeaders(nil)}, nil
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name      string
		c         envConfig
		status    int
		upstream  bool
		counter   string
		violation string
	}{
		{name: "processor unreachable", c: envConfig{noProcessor: true}, status: 503},
		{name: "processor returns an error status", c: envConfig{reply: func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			return nil, status.Error(codes.Internal, "boom")
		}}, status: 503},
		{name: "reply of the wrong kind", c: envConfig{reply: wrongKind}, status: 503, counter: "spurious_msgs_received", violation: "spurious"},
		{name: "empty reply", c: envConfig{reply: func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			return []*extprocv3.ProcessingResponse{{}}, nil
		}}, status: 503, counter: "spurious_msgs_received", violation: "spurious"},
		{name: "streamed_response outside FULL_DUPLEX", c: envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			if req.GetRequestBody() == nil {
				return nil, nil
			}
			return []*extprocv3.ProcessingResponse{reqBody(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{}}}})}, nil
		}}, status: 503, violation: "streamed_response"},
		{name: "spurious with the fail-close flag off: continue unprocessed", c: envConfig{reply: wrongKind, opts: Options{SpuriousFailOpen: true}},
			status: 200, upstream: true, counter: "spurious_msgs_received", violation: "spurious"},
		{name: "failure_mode_allow lets a gRPC error through", c: envConfig{reply: func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			return nil, status.Error(codes.Unavailable, "x")
		}, extProc: func(c *extprocfilterv3.ExternalProcessor) { c.FailureModeAllow = true }}, status: 200, upstream: true, counter: "failure_mode_allowed"},
		{name: "server ends with OK: Envoy stops consulting it", c: envConfig{reply: func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
			return nil, io.EOF
		}}, status: 200, upstream: true, counter: "streams_closed_ok", violation: "ended the stream with OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.c.reply != nil {
				inner := tc.c.reply
				tc.c.reply = func(n int, r *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
					out, err := inner(n, r)
					return out, err
				}
				if tc.counter == "streams_closed_ok" {
					tc.c.reply = func(int, *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) { return nil, errOK }
				}
			}
			e := newEnv(t, tc.c)
			r := do(t, e, "POST", "/openai/v1/x", `{}`)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (%s)", r.status, tc.status, r.body)
			}
			if got := records(t, e)[0].Upstream != nil; got != tc.upstream {
				t.Errorf("went upstream: %v", got)
			}
			if tc.counter != "" && e.proxy.Counter(tc.counter) == 0 {
				t.Errorf("counter %s not raised", tc.counter)
			}
			v := strings.Join(e.proxy.Violations(), "\n")
			if !strings.Contains(v, tc.violation) || (tc.violation == "" && v != "") {
				t.Errorf("violations %q, want %q", v, tc.violation)
			}
		})
	}
}

// 11. Dynamic metadata.
func TestDynamicMetadata(t *testing.T) {
	e := newEnv(t, envConfig{reply: func(_ int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
		var r *extprocv3.ProcessingResponse
		var md *structpb.Struct
		switch {
		case req.GetRequestHeaders() != nil:
			r = continueReply(req)
			md, _ = structpb.NewStruct(map[string]any{"tollgate": map[string]any{"request_id": "r1", "model": "first"}})
		case req.GetRequestBody() != nil:
			r = reqBody(nil)
			md, _ = structpb.NewStruct(map[string]any{"tollgate": map[string]any{"model": "gpt-4o"}, "other": map[string]any{"x": 1}})
		default:
			return nil, nil
		}
		r.DynamicMetadata = md
		return []*extprocv3.ProcessingResponse{r}, nil
	}})
	do(t, e, "POST", "/openai/v1/x", `{}`)
	md := records(t, e)[0].Metadata
	// A later reply merges into the namespace: it overwrites the fields it
	// repeats and keeps the others.
	f := md["tollgate"].GetFields()
	if f["model"].GetStringValue() != "gpt-4o" || f["request_id"].GetStringValue() != "r1" || md["other"] != nil {
		t.Errorf("metadata %v", md)
	}
	if e.proxy.Counter("dynamic_metadata_dropped") != 1 {
		t.Error("the foreign namespace was not dropped")
	}
}

// 15. Faults: the client disconnects, or the upstream resets, mid-SSE.
func TestMidStreamFaults(t *testing.T) {
	for _, tc := range []string{"client disconnects", "upstream resets"} {
		t.Run(tc, func(t *testing.T) {
			gone := make(chan struct{})
			e := newEnv(t, envConfig{upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, "data: 1\n\n")
				w.(http.Flusher).Flush()
				if tc == "upstream resets" {
					panic(http.ErrAbortHandler)
				}
				select {
				case <-r.Context().Done():
					close(gone)
				case <-time.After(10 * time.Second):
				}
			}})
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL(), "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc == "client disconnects" {
				first := make([]byte, 9)
				if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: 1\n\n" {
					t.Fatalf("first event %q %v", first, err)
				}
				conn.Close()
				<-gone // the upstream request was cancelled
			} else {
				// Chunks still waiting for their reply are lost with the
				// reset, as in Envoy; the client must not see a clean end.
				if b, err := io.ReadAll(resp.Body); err == nil {
					t.Errorf("the client saw a clean end after an upstream reset: %q", b)
				}
				conn.Close()
			}
			e.proc.wait(t, 1)
			// The stream is closed (half-close and reset) with no
			// end_of_stream: the processor sees the end without one.
			if got := e.proc.endedBy(0); got != "Canceled" && got != "EOF" {
				t.Errorf("processor saw %s, want the stream closed", got)
			}
			for _, m := range e.proc.messages(0) {
				if m.GetResponseBody().GetEndOfStream() {
					t.Error("end_of_stream sent for a broken stream")
				}
			}
		})
	}
}
