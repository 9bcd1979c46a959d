package extproc_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/pkg/extauthz"
	"github.com/tollgate-dev/tollgate/pkg/extproc"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/sidecar"
	"github.com/tollgate-dev/tollgate/test/envoysim"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// These tests run the shipped sidecar config: envoysim built from
// sidecar.Bootstrap and validated, in front of the real ext_proc and
// ext_authz services on one gRPC server (as `tollgate serve` wires them),
// with the mock providers as the provider clusters.

type sidecarEnv struct {
	stack   *gwtest.Stack
	proxy   *envoysim.Proxy
	streams *tracker
}

// startSidecar starts the stack; upstreams replaces a provider's mock.
func startSidecar(t *testing.T, so sidecar.Options, eo envoysim.Options, upstreams map[string]http.Handler) *sidecarEnv {
	t.Helper()
	st := gwtest.New(t, gwtest.Options{MaxRequestBody: 32 << 20})
	mocks := mockprovider.NewServers(mockprovider.Options{APIKey: gwtest.Key})
	hs := map[string]http.Handler{"openai": mocks.OpenAI, "anthropic": mocks.Anthropic, "gemini": mocks.Gemini}
	for name, h := range upstreams {
		hs[name] = h
	}
	eo.Upstreams = map[string]string{}
	for name, h := range hs {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		eo.Upstreams[name] = strings.TrimPrefix(s.URL, "http://")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &tracker{idle: make(chan struct{})}
	gs := grpc.NewServer(append(extproc.ServerOptions(32<<20), grpc.StreamInterceptor(tr.intercept))...)
	extproc.New(st.Gateway, extproc.Options{}).Register(gs)
	extauthz.New(st.Gateway, extauthz.Options{}).Register(gs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	so.Processor = ln.Addr().String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	so.ListenPort = uint32(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	b, err := sidecar.Bootstrap(so)
	if err != nil {
		t.Fatal(err)
	}
	if err := sidecar.Validate(b); err != nil {
		t.Fatal(err)
	}
	p, err := envoysim.Start(b, eo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &sidecarEnv{stack: st, proxy: p, streams: tr}
}

func (e *sidecarEnv) post(t *testing.T, path, body string, hdr ...string) (int, string) {
	t.Helper()
	code, b := harness.PostJSON(t, e.proxy.URL()+path, body, hdr...)
	return code, string(b)
}

// settled returns the usage records once n requests have left the proxy
// and every ext_proc stream has ended (and settled).
func (e *sidecarEnv) settled(t *testing.T, n int) []usage.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := e.proxy.Await(ctx, n); err != nil {
		t.Fatal(err)
	}
	e.streams.wait(t)
	return e.stack.Recorder.All()
}

// sidecarCases are one chat request per provider, with the token where each
// official SDK puts it.
func sidecarCases(token string) []struct {
	provider, path, body string
	hdr                  []string
} {
	return []struct {
		provider, path, body string
		hdr                  []string
	}{
		{"openai", "/openai/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
			[]string{"Authorization", "Bearer " + token}},
		{"anthropic", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`,
			[]string{"X-Api-Key", token, "Anthropic-Version", "2023-06-01"}},
		{"gemini", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`,
			[]string{"X-Goog-Api-Key", token}},
	}
}

// TestExtAuthzThenExtProc: with --ext-authz, ext_authz checks the token
// first and ext_proc still swaps the key and meters: each provider answers
// 200 (the mock accepts only the real key) and the request is recorded
// once, with the provider's usage. A bad token is refused by ext_authz,
// also recorded once.
func TestExtAuthzThenExtProc(t *testing.T) {
	e := startSidecar(t, sidecar.Options{ExtAuthz: true}, envoysim.Options{}, nil)
	cases := sidecarCases(e.stack.Token)
	for i, c := range cases {
		t.Run(c.provider, func(t *testing.T) {
			code, body := e.post(t, c.path, c.body, c.hdr...)
			if code != http.StatusOK {
				t.Fatalf("status %d %s, want 200", code, body)
			}
			recs := e.settled(t, i+1)
			if len(recs) != i+1 {
				t.Fatalf("%d records after %d requests, want one each", len(recs), i+1)
			}
			if r := recs[i]; r.Provider != c.provider || r.Status != usage.StatusOK || r.Estimated || r.Input == 0 || r.Output == 0 {
				t.Errorf("record %+v, want ok with the provider's usage", r)
			}
		})
	}
	t.Run("bad token", func(t *testing.T) {
		code, body := e.post(t, cases[0].path, cases[0].body, "Authorization", "Bearer nope")
		if code != http.StatusUnauthorized || !strings.Contains(body, "invalid_api_key") {
			t.Fatalf("status %d %s, want OpenAI's 401", code, body)
		}
		recs := e.settled(t, len(cases)+1)
		if len(recs) != len(cases)+1 || recs[len(cases)].Status != usage.StatusRejected {
			t.Errorf("records %+v, want one more, rejected", recs)
		}
	})
	if v := e.proxy.Violations(); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}

// TestResponseEndingWithTrailers: a response whose body ends with HTTP
// trailers never carries end_of_stream; the sidecar sends the response
// trailers, and the processor settles the response complete, with the
// provider's usage, instead of abandoned with an estimate. The client gets
// the trailers.
func TestResponseEndingWithTrailers(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body, request string
	}{
		{"json", "application/json",
			`{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}`,
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`},
		{"sse", "text/event-stream",
			"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"},\"finish_reason\":\"stop\"}]}\n\n" +
				"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3,\"total_tokens\":14}}\n\n" +
				"data: [DONE]\n\n",
			`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Trailer", "X-Upstream-Done")
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, tc.body)
				w.Header().Set("X-Upstream-Done", "1")
			})
			e := startSidecar(t, sidecar.Options{}, envoysim.Options{}, map[string]http.Handler{"openai": up})
			req, err := http.NewRequest(http.MethodPost, e.proxy.URL()+"/openai/v1/chat/completions", strings.NewReader(tc.request))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.stack.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "hello") {
				t.Fatalf("status %d %q %v", resp.StatusCode, b, err)
			}
			if got := resp.Trailer.Get("X-Upstream-Done"); got != "1" {
				t.Errorf("client trailer %q, want the upstream's", got)
			}
			recs := e.settled(t, 1)
			if len(recs) != 1 {
				t.Fatalf("%d records", len(recs))
			}
			if r := recs[0]; r.Status != usage.StatusOK || r.Estimated || r.Input != 11 || r.Output != 3 {
				t.Errorf("record %s/%s %+v estimated=%v, want ok with the provider's usage {11, 3}", r.Status, r.Reason, r.Tokens, r.Estimated)
			}
		})
	}
}

// TestBodyAtSidecarBuffer: a request body as large as the sidecar's Envoy
// buffers (its default listener limit), sent in one message with its
// headers' framing, fits the processor's gRPC receive limit, and is
// answered with the provider's 413 rather than failing the stream (which
// Envoy turns into its own 503).
func TestBodyAtSidecarBuffer(t *testing.T) {
	limit := sidecar.Options{}.WithDefaults().RequestBufferBytes
	for _, maxBody := range []int64{32 << 20, 1 << 20} {
		t.Run(fmt.Sprintf("max body %d", maxBody), func(t *testing.T) {
			e := newEnv(t, envOptions{maxBody: maxBody})
			stream, err := e.client.Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			x := fixtures[0].request(e.stack.Token, "hi", false)
			h := append(headerList{{":authority", "127.0.0.1:15080"}, {":path", x.path}, {":method", "POST"}, {":scheme", "http"}}, x.header...)
			if err := stream.Send(&extprocv3.ProcessingRequest{
				Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: h.headerMap()}},
				ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED},
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: make([]byte, limit), EndOfStream: true}}}); err != nil {
				t.Fatal(err)
			}
			r, err := stream.Recv()
			if err != nil {
				t.Fatalf("a %d-byte body (the sidecar's buffer) failed the stream: %v", limit, err)
			}
			if got := r.GetImmediateResponse().GetStatus().GetCode(); got != typev3.StatusCode_PayloadTooLarge {
				t.Errorf("reply %v, want the provider's 413", r)
			}
		})
	}
}

// TestAccessLogRequestID: the processor publishes the gateway's request id
// as dynamic metadata in the namespace the sidecar's access log reads, so
// the log line of every request it handled, answered upstream or refused,
// joins that request's usage record; the metadata holds nothing else (no
// prompt, completion, token or key).
func TestAccessLogRequestID(t *testing.T) {
	if extproc.MetadataNamespace != sidecar.MetadataNamespace {
		t.Fatalf("the processor writes %q, the sidecar receives %q", extproc.MetadataNamespace, sidecar.MetadataNamespace)
	}
	e := startSidecar(t, sidecar.Options{}, envoysim.Options{}, nil)
	c := sidecarCases(e.stack.Token)[0]
	for i, tc := range []struct {
		name   string
		token  string
		status int
		record usage.Status
	}{
		{"answered", e.stack.Token, http.StatusOK, usage.StatusOK},
		{"refused", "nope", http.StatusUnauthorized, usage.StatusRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := e.post(t, c.path, c.body, "Authorization", "Bearer "+tc.token); code != tc.status {
				t.Fatalf("status %d %s, want %d", code, body, tc.status)
			}
			rec := e.settled(t, i+1)[i]
			if rec.Status != tc.record {
				t.Fatalf("record %+v, want %s", rec, tc.record)
			}
			md := e.proxy.Records()[i].Metadata[sidecar.MetadataNamespace]
			if got := md.GetFields()["request_id"].GetStringValue(); got == "" || got != rec.RequestID {
				t.Errorf("access log request_id %q, want the usage record's %q", got, rec.RequestID)
			}
			if len(md.GetFields()) != 1 {
				t.Errorf("metadata %v: want the request id only", md)
			}
		})
	}
}
