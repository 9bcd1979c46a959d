//lint:file-ignore SA1019 the tests set append, the field ext_authz reads

package envoysim

import (
	"context"
	"net/http"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/sidecar"
)

type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	check func(*authv3.CheckRequest) (*authv3.CheckResponse, error)
	got   chan *authv3.CheckRequest
}

func (f *fakeAuthz) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.got <- r
	return f.check(r)
}

func valueHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: wrapperspb.Bool(false)}
}

// 14. ext_authz.
func TestExtAuthz(t *testing.T) {
	okResp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers:         []*corev3.HeaderValueOption{valueHeader("x-upstream-key", "real-key")},
		HeadersToRemove: []string{"authorization", ":path", "host"},
	}}}
	denied := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}, Body: `{"error":{"code":"invalid_api_key"}}`,
		Headers: []*corev3.HeaderValueOption{valueHeader("content-type", "application/json")},
	}}}
	for _, tc := range []struct {
		name       string
		resp       *authv3.CheckResponse
		err        error
		cfg        func(*extauthzv3.ExtAuthz)
		wantStatus int
		upstream   bool
		check      func(t *testing.T, e *env, r result)
	}{
		{name: "OK: headers from value set, removals applied but never of pseudo-headers", resp: okResp, wantStatus: 200, upstream: true,
			check: func(t *testing.T, e *env, r result) {
				up := records(t, e)[0].Upstream
				if v, _ := up.Header.Get("x-upstream-key"); v != "real-key" || up.Header.has("authorization") {
					t.Errorf("upstream headers %v", up.Header)
				}
				if up.Path != "/v1/x" { // :path kept, the route's prefix_rewrite applied
					t.Errorf("path %q", up.Path)
				}
				// ext_proc runs after ext_authz and sees its changes.
				e.proc.wait(t, 1)
				h := headerMap(e.proc.messages(0)[0].GetRequestHeaders().GetHeaders())
				if h.has("authorization") || !h.has("x-upstream-key") {
					t.Errorf("ext_proc saw %v", h)
				}
			}},
		// Envoy sends a local reply through every encoder filter from the
		// first (FilterManager::sendLocalReplyViaFilterChain); ext_proc's
		// encodeHeaders merges the route config again for exactly this
		// case. So the denial opens an ext_proc stream that starts with
		// response_headers, for a request ext_proc never saw.
		{name: "denied: the denial's status, headers and body, through ext_proc's response path", resp: denied, wantStatus: 401,
			check: func(t *testing.T, e *env, r result) {
				if string(r.body) != `{"error":{"code":"invalid_api_key"}}` || r.header.Get("Content-Type") != "application/json" {
					t.Errorf("%q %v", r.body, r.header)
				}
				e.proc.wait(t, 1)
				msgs := e.proc.messages(0)
				if got := allKinds(msgs); !slices.Equal(got, []string{"ResponseHeaders", "ResponseBody(36,true)"}) {
					t.Fatalf("ext_proc messages %q, want the denial's response headers and body", got)
				}
				h := headerMap(msgs[0].GetResponseHeaders().GetHeaders())
				if st, _ := h.Get(":status"); st != "401" || !slices.Equal(h.Values("content-length"), []string{"36"}) || msgs[0].GetProtocolConfig() == nil {
					t.Errorf("response_headers %v, protocol_config %v", h, msgs[0].GetProtocolConfig())
				}
			}},
		{name: "gRPC error: status_on_error, through ext_proc's response path", err: status.Error(codes.Unavailable, "down"), wantStatus: 503,
			check: func(t *testing.T, e *env, r result) {
				e.proc.wait(t, 1)
				if got := allKinds(e.proc.messages(0)); !slices.Equal(got, []string{"ResponseHeaders"}) {
					t.Errorf("ext_proc messages %q, want the error reply's headers (no body)", got)
				}
			}},
		{name: "gRPC error without status_on_error: 403", err: status.Error(codes.Internal, "x"), wantStatus: 403,
			cfg: func(c *extauthzv3.ExtAuthz) { c.StatusOnError = nil }},
		{name: "failure_mode_allow with the header", err: status.Error(codes.Internal, "x"), wantStatus: 200, upstream: true,
			cfg: func(c *extauthzv3.ExtAuthz) { c.FailureModeAllow, c.FailureModeAllowHeaderAdd = true, true },
			check: func(t *testing.T, e *env, r result) {
				if v, _ := records(t, e)[0].Upstream.Header.Get("x-envoy-auth-failure-mode-allowed"); v != "true" {
					t.Error("no x-envoy-auth-failure-mode-allowed")
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			az := &fakeAuthz{got: make(chan *authv3.CheckRequest, 1), check: func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return tc.resp, tc.err }}
			e := newEnv(t, envConfig{authz: az, extAuthz: tc.cfg})
			r := do(t, e, "POST", "/openai/v1/x", `{}`, "Authorization", "Bearer tok", "X-Dup", "a", "X-Dup", "b")
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d (%s)", r.status, tc.wantStatus, r.body)
			}
			req := <-az.got
			hr := req.GetAttributes().GetRequest().GetHttp()
			raw := headerMap(hr.GetHeaderMap())
			if hr.GetMethod() != "POST" || hr.GetPath() != "/openai/v1/x" || hr.GetId() == "" || len(raw.Values("x-dup")) != 2 {
				t.Errorf("check request %v", hr)
			}
			// The sidecar's route tells the processor that ext_proc follows.
			if ext := req.GetAttributes().GetContextExtensions(); ext[sidecar.ContextExtProc] != "true" {
				t.Errorf("context_extensions %v, want the route's", ext)
			}
			if got := records(t, e)[0].Upstream != nil; got != tc.upstream {
				t.Errorf("went upstream: %v", got)
			}
			if tc.check != nil {
				tc.check(t, e, r)
			}
			if tc.wantStatus == http.StatusOK {
				noViolations(t, e)
			}
		})
	}
}

// ext_authz header mutations: the deprecated append, when present, wins
// (true joins the request's existing value with appendCopy; false
// overwrites); otherwise append_action applies, by name, its default
// APPEND_IF_EXISTS_OR_ADD adding a separate entry. A local reply's append
// true adds a separate entry too.
func TestExtAuthzHeaderActions(t *testing.T) {
	opt := func(k, v string, app *bool, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
		if app != nil {
			o.Append = wrapperspb.Bool(*app)
		}
		return o
	}
	yes, no := true, false
	const (
		appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		addIfAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
		overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		overwriteIf    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
	)
	for _, tc := range []struct {
		name   string
		header *corev3.HeaderValueOption
		key    string
		want   []string // the upstream's values of key, in order
	}{
		{"append true joins the first existing value", opt("x-dup", "c", &yes, 0), "x-dup", []string{"a,c", "b"}},
		{"append true on an absent header adds it", opt("x-new", "c", &yes, 0), "x-new", []string{"c"}},
		{"append true on cookie joins with a semicolon", opt("cookie", "d=2", &yes, 0), "cookie", []string{"c=1; d=2"}},
		{"append wins over append_action", opt("x-dup", "c", &yes, overwriteOrAdd), "x-dup", []string{"a,c", "b"}},
		{"append false overwrites every value", opt("x-dup", "c", &no, appendOrAdd), "x-dup", []string{"c"}},
		{"APPEND_IF_EXISTS_OR_ADD adds a separate entry", opt("x-dup", "c", nil, appendOrAdd), "x-dup", []string{"a", "b", "c"}},
		{"neither field: the default action adds a separate entry", &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-have", Value: "new"}}, "x-have", []string{"old", "new"}},
		{"ADD_IF_ABSENT leaves an existing header", opt("x-have", "new", nil, addIfAbsent), "x-have", []string{"old"}},
		{"ADD_IF_ABSENT adds a missing one", opt("x-new", "c", nil, addIfAbsent), "x-new", []string{"c"}},
		{"OVERWRITE_IF_EXISTS overwrites an existing header", opt("x-have", "new", nil, overwriteIf), "x-have", []string{"new"}},
		{"OVERWRITE_IF_EXISTS skips a missing one", opt("x-new", "c", nil, overwriteIf), "x-new", nil},
		{"OVERWRITE_IF_EXISTS_OR_ADD adds a missing one", opt("x-new", "c", nil, overwriteOrAdd), "x-new", []string{"c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{tc.header}}}}
			az := &fakeAuthz{got: make(chan *authv3.CheckRequest, 1), check: func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil }}
			e := newEnv(t, envConfig{authz: az})
			r := do(t, e, "POST", "/openai/v1/x", `{}`, "X-Dup", "a", "X-Dup", "b", "Cookie", "c=1", "X-Have", "old")
			if r.status != 200 {
				t.Fatalf("status %d (%s)", r.status, r.body)
			}
			if got := records(t, e)[0].Upstream.Header.Values(tc.key); !slices.Equal(got, tc.want) {
				t.Errorf("upstream %s %q, want %q", tc.key, got, tc.want)
			}
		})
	}
	t.Run("denied: append true adds a separate entry to the local reply", func(t *testing.T) {
		resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Body: "no", Headers: []*corev3.HeaderValueOption{opt("x-why", "1", &no, 0), opt("x-why", "2", &yes, 0), opt("x-why", "3", &yes, 0)}}}}
		az := &fakeAuthz{got: make(chan *authv3.CheckRequest, 1), check: func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil }}
		e := newEnv(t, envConfig{authz: az})
		r := do(t, e, "POST", "/openai/v1/x", `{}`)
		if r.status != 403 || !slices.Equal(r.header.Values("X-Why"), []string{"1", "2", "3"}) {
			t.Errorf("%d %v", r.status, r.header)
		}
	})
}

// An OK answer's mutations in Envoy's order (ext_authz.cc onComplete):
// headers set, added and appended first, then headers_to_remove, then the
// query parameters, which rebuild :path from the parsed query (a sorted
// map: keys in order, each as key=value, no "?" once none is left).
func TestExtAuthzOkMutations(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ok       *authv3.OkHttpResponse
		path     string
		wantPath string // upstream, after the route's prefix_rewrite
		absent   string // a header the upstream must not get
	}{
		{name: "a header both set and removed: the remove runs last", path: "/openai/v1/x",
			ok:       &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{valueHeader("x-a", "1")}, HeadersToRemove: []string{"x-a"}},
			wantPath: "/v1/x", absent: "x-a"},
		{name: "query_parameters_to_remove: the rest in key order", path: "/gemini/v1/x?key=tok&b=2&a=1",
			ok:       &authv3.OkHttpResponse{QueryParametersToRemove: []string{"key"}},
			wantPath: "/v1/x?a=1&b=2"},
		{name: "the last parameter removed: no query left", path: "/gemini/v1/x?key=tok",
			ok:       &authv3.OkHttpResponse{QueryParametersToRemove: []string{"key"}},
			wantPath: "/v1/x"},
		{name: "query_parameters_to_set overwrites every value", path: "/gemini/v1/x?b=1&b=2&alt=sse",
			ok:       &authv3.OkHttpResponse{QueryParametersToSet: []*corev3.QueryParameter{{Key: "b", Value: "3"}}},
			wantPath: "/v1/x?alt=sse&b=3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: tc.ok}}
			az := &fakeAuthz{got: make(chan *authv3.CheckRequest, 1), check: func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil }}
			e := newEnv(t, envConfig{authz: az})
			r := do(t, e, "POST", tc.path, `{}`, "X-A", "client")
			if r.status != 200 {
				t.Fatalf("status %d (%s)", r.status, r.body)
			}
			up := records(t, e)[0].Upstream
			if up.Path != tc.wantPath {
				t.Errorf("upstream path %q, want %q", up.Path, tc.wantPath)
			}
			if tc.absent != "" && up.Header.has(tc.absent) {
				t.Errorf("upstream has %s: %v", tc.absent, up.Header)
			}
		})
	}
}
