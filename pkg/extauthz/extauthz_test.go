package extauthz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/extauthz"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/sidecar"
)

type env struct {
	stack   *gwtest.Stack
	client  authv3.AuthorizationClient
	mock    *mockprovider.Servers
	mockURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := gwtest.New(t, gwtest.Options{})
	mock := mockprovider.NewServers(mockprovider.Options{APIKey: gwtest.Key})
	mockSrv := httptest.NewServer(mock)
	t.Cleanup(mockSrv.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	extauthz.New(st.Gateway, extauthz.Options{}).Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &env{stack: st, client: authv3.NewAuthorizationClient(conn), mock: mock, mockURL: mockSrv.URL}
}

// check sends a CheckRequest as Envoy builds it with encode_raw_headers
// (raw) or with the joined header map.
func (e *env) check(t *testing.T, method, path string, h [][2]string, raw bool) *authv3.CheckResponse {
	t.Helper()
	return e.checkWith(t, method, path, h, raw, nil)
}

// checkWith is check with the route's context extensions.
func (e *env) checkWith(t *testing.T, method, path string, h [][2]string, raw bool, ext map[string]string) *authv3.CheckResponse {
	t.Helper()
	hr := &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "127.0.0.1:15080", Scheme: "http", Protocol: "HTTP/1.1"}
	if raw {
		hr.HeaderMap = &corev3.HeaderMap{}
		for _, kv := range h {
			hr.HeaderMap.Headers = append(hr.HeaderMap.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
		}
	} else {
		hr.Headers = map[string]string{}
		for _, kv := range h {
			if v, ok := hr.Headers[kv[0]]; ok {
				hr.Headers[kv[0]] = v + "," + kv[1]
			} else {
				hr.Headers[kv[0]] = kv[1]
			}
		}
	}
	resp, err := e.client.Check(context.Background(), &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: hr}, ContextExtensions: ext}})
	if err != nil {
		t.Fatalf("Check: %v (a denial must be a CheckResponse, never a gRPC error)", err)
	}
	return resp
}

// forward applies an OK answer as Envoy does (removes, then sets, reading
// value; query parameters removed; the route's prefix_rewrite strips the
// provider prefix) and sends the request to the mock.
func (e *env) forward(t *testing.T, ok *authv3.OkHttpResponse, path string, h [][2]string, body []byte) (*http.Response, http.Header) {
	t.Helper()
	hdr := http.Header{}
	for _, kv := range h {
		if !slices.Contains(ok.GetHeadersToRemove(), kv[0]) {
			hdr.Add(kv[0], kv[1])
		}
	}
	for _, s := range ok.GetHeaders() {
		if len(s.GetHeader().GetRawValue()) > 0 {
			t.Errorf("ext_authz reads value; %s came in raw_value", s.GetHeader().GetKey())
		}
		//lint:ignore SA1019 the field older Envoy reads
		if s.GetAppend().GetValue() {
			hdr.Add(s.GetHeader().GetKey(), s.GetHeader().GetValue())
		} else {
			hdr.Set(s.GetHeader().GetKey(), s.GetHeader().GetValue())
		}
	}
	p, q, _ := strings.Cut(path, "?")
	query, _ := url.ParseQuery(q)
	for _, k := range ok.GetQueryParametersToRemove() {
		query.Del(k)
	}
	provider, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	u := e.mockURL + "/" + provider + "/" + rest
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, hdr
}

// TestAllowed: a valid token is swapped for the real key, every other
// client header the gateway does not send upstream is removed, and the
// credential query parameters go; the mock then accepts the request.
func TestAllowed(t *testing.T) {
	e := newEnv(t)
	tok := e.stack.Token
	junk := [][2]string{{"user-agent", "OpenAI/Go 3.8.1"}, {"x-stainless-os", "Linux"}, {"content-length", "80"}, {"content-type", "application/json"}}
	cases := []struct {
		provider, path string
		auth           [][2]string
		body           string
		dropParams     []string
		keyHeader      string
	}{
		{"openai", "/openai/v1/chat/completions", [][2]string{{"authorization", "Bearer " + tok}},
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, nil, "authorization"},
		{"anthropic", "/anthropic/v1/messages?beta=true", [][2]string{{"x-api-key", tok}, {"anthropic-version", "2023-06-01"}, {"authorization", "Bearer " + tok}},
			`{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, []string{"beta"}, "x-api-key"},
		{"gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=" + tok, nil,
			`{"contents":[{"parts":[{"text":"hi"}]}]}`, []string{"key"}, "x-goog-api-key"},
		// Google reads $key as the API key too: it goes with key.
		{"gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=" + tok + "&%24key=" + tok, nil,
			`{"contents":[{"parts":[{"text":"hi"}]}]}`, []string{"$key", "key"}, "x-goog-api-key"},
	}
	for _, raw := range []bool{true, false} {
		for _, c := range cases {
			name := c.provider
			if !raw {
				name += "/joined"
			}
			t.Run(name, func(t *testing.T) {
				h := append(slices.Clone(junk), c.auth...)
				resp := e.check(t, "POST", c.path, h, raw)
				if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
					t.Fatalf("denied: %v", resp)
				}
				ok := resp.GetOkResponse()
				if got := ok.GetQueryParametersToRemove(); !slices.Equal(got, c.dropParams) {
					t.Errorf("query parameters removed %q, want %q", got, c.dropParams)
				}
				for _, keep := range []string{"content-length", "content-type"} {
					if slices.Contains(ok.GetHeadersToRemove(), keep) {
						t.Errorf("%s removed: the body passes unchanged", keep)
					}
				}
				res, up := e.forward(t, ok, c.path, h, []byte(c.body))
				if res.StatusCode != 200 {
					t.Fatalf("mock answered %d: the key swap failed", res.StatusCode)
				}
				for name, vs := range up {
					for _, v := range vs {
						if strings.Contains(v, tok) {
							t.Errorf("upstream %s carries the gateway token", name)
						}
					}
				}
				if up.Get("x-stainless-os") != "" || up.Get("user-agent") != "tollgate/1" || !strings.Contains(up.Get(c.keyHeader), gwtest.Key) {
					t.Errorf("upstream headers %v", up)
				}
			})
		}
	}
	if n := len(e.stack.Recorder.All()); n != 0 {
		t.Errorf("%d records for allowed checks; the hop that meters writes them", n)
	}
}

// TestDenied: refusals are CheckResponses with a non-OK status carrying
// the provider's own error, recorded once; catalog routes are answered by
// the gateway the same way.
func TestDenied(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, method, path string
		h                  [][2]string
		code               codes.Code
		status             int32
		body               string // a fragment of the provider's error
		record             usage.Status
	}{
		{"openai/no token", "POST", "/openai/v1/chat/completions", nil, codes.Unauthenticated, 401, `"code":"invalid_api_key"`, usage.StatusRejected},
		{"anthropic/bad token", "POST", "/anthropic/v1/messages", [][2]string{{"x-api-key", "nope"}, {"anthropic-version", "2023-06-01"}},
			codes.Unauthenticated, 401, `"type":"authentication_error"`, usage.StatusRejected},
		{"gemini/bad key param", "POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=nope", nil,
			codes.PermissionDenied, 400, `"API_KEY_INVALID"`, usage.StatusRejected},
		{"anthropic/unsupported version", "POST", "/anthropic/v1/messages", [][2]string{{"x-api-key", e.stack.Token}, {"anthropic-version", "1999-01-01"}},
			codes.PermissionDenied, 400, `"type":"invalid_request_error"`, usage.StatusRejected},
		{"openai/models", "GET", "/openai/v1/models", [][2]string{{"authorization", "Bearer " + e.stack.Token}},
			codes.PermissionDenied, 200, `"gpt-4o-mini"`, usage.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(e.stack.Recorder.All())
			resp := e.check(t, c.method, c.path, c.h, true)
			d := resp.GetDeniedResponse()
			if codes.Code(resp.GetStatus().GetCode()) != c.code || d == nil {
				t.Fatalf("status %v, response %v", resp.GetStatus(), resp.GetHttpResponse())
			}
			if int32(d.GetStatus().GetCode()) != c.status || !strings.Contains(d.GetBody(), c.body) || !json.Valid([]byte(d.GetBody())) {
				t.Errorf("denied %d %s", d.GetStatus().GetCode(), d.GetBody())
			}
			ct := ""
			for _, s := range d.GetHeaders() {
				if s.GetHeader().GetKey() == "content-type" {
					ct = s.GetHeader().GetValue()
				}
			}
			if ct != "application/json" {
				t.Errorf("content-type %q (ext_authz reads value)", ct)
			}
			recs := e.stack.Recorder.All()[before:]
			if len(recs) != 1 || recs[0].Status != c.record {
				t.Errorf("records %+v, want one %s", recs, c.record)
			}
		})
	}
}

// TestRevokedAfterUse: a token revoked after the verifier cached it is
// denied from the next check on, in every place it is accepted.
func TestRevokedAfterUse(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, path string
		h          [][2]string
	}{
		{"bearer", "/openai/v1/chat/completions", [][2]string{{"authorization", "Bearer %s"}}},
		{"x-api-key", "/anthropic/v1/messages", [][2]string{{"x-api-key", "%s"}, {"anthropic-version", "2023-06-01"}}},
		{"x-goog-api-key", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", [][2]string{{"x-goog-api-key", "%s"}}},
		{"key parameter", "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=%s", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := "revoked-" + strings.ReplaceAll(c.name, " ", "-")
			tok := e.stack.Mint(t, auth.Claims{Account: "acct-1", Project: "proj-1", TokenID: id})
			h := make([][2]string, len(c.h))
			for i, kv := range c.h {
				h[i] = [2]string{kv[0], strings.ReplaceAll(kv[1], "%s", tok)}
			}
			path := strings.ReplaceAll(c.path, "%s", tok)
			if resp := e.check(t, "POST", path, h, true); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
				t.Fatalf("before the revocation: %v", resp.GetStatus())
			}
			e.stack.Revoked.Add(id)
			resp := e.check(t, "POST", path, h, true)
			if codes.Code(resp.GetStatus().GetCode()) == codes.OK || resp.GetDeniedResponse() == nil {
				t.Fatalf("a revoked token passed the check: %v", resp.GetStatus())
			}
			if body := resp.GetDeniedResponse().GetBody(); !strings.Contains(body, "revoked") || strings.Contains(body, tok) {
				t.Errorf("denial body %s: want the revocation named, never the token", body)
			}
		})
	}
}

// TestFollowedByExtProc: with the context extension the sidecar sets when
// ext_proc follows, an accepted request passes unchanged (ext_proc checks
// the token again and swaps the key, so it must still see the token) and
// is not recorded; a refusal is denied and recorded once, as alone. Any
// other value of the extension leaves the key swap here.
func TestFollowedByExtProc(t *testing.T) {
	if extauthz.ContextExtProc != sidecar.ContextExtProc {
		t.Fatalf("extauthz reads %q, the sidecar sets %q", extauthz.ContextExtProc, sidecar.ContextExtProc)
	}
	e := newEnv(t)
	tok := e.stack.Token
	followed := map[string]string{sidecar.ContextExtProc: "true"}
	cases := []struct {
		name, path string
		h          [][2]string
		ext        map[string]string
		code       codes.Code
		unchanged  bool
		records    int
	}{
		{"openai", "/openai/v1/chat/completions", [][2]string{{"authorization", "Bearer " + tok}, {"x-stainless-os", "Linux"}}, followed, codes.OK, true, 0},
		{"anthropic", "/anthropic/v1/messages", [][2]string{{"x-api-key", tok}, {"anthropic-version", "2023-06-01"}}, followed, codes.OK, true, 0},
		{"gemini key parameter", "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=" + tok, nil, followed, codes.OK, true, 0},
		{"bad token", "/openai/v1/chat/completions", [][2]string{{"authorization", "Bearer nope"}}, followed, codes.Unauthenticated, false, 1},
		{"other value: alone", "/openai/v1/chat/completions", [][2]string{{"authorization", "Bearer " + tok}}, map[string]string{sidecar.ContextExtProc: "false"}, codes.OK, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(e.stack.Recorder.All())
			resp := e.checkWith(t, "POST", c.path, c.h, true, c.ext)
			if got := codes.Code(resp.GetStatus().GetCode()); got != c.code {
				t.Fatalf("status %v, want %v: %v", got, c.code, resp.GetHttpResponse())
			}
			if ok := resp.GetOkResponse(); c.code == codes.OK {
				changes := len(ok.GetHeaders()) + len(ok.GetHeadersToRemove()) + len(ok.GetQueryParametersToRemove())
				if c.unchanged != (changes == 0) {
					t.Errorf("ok_response %v: want it unchanged %v", ok, c.unchanged)
				}
			}
			if n := len(e.stack.Recorder.All()) - before; n != c.records {
				t.Errorf("%d records, want %d", n, c.records)
			}
		})
	}
}
