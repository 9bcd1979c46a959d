package extauthz_test

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tollgate-dev/tollgate/pkg/extauthz"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
)

// FuzzCheck sends arbitrary requests to Check. Whatever arrives, it must
// not panic or fail the call (Envoy would count a gRPC error against
// failure_mode_allow), it must answer OK or a denial with a body, and an
// OK, applied to the request as Envoy applies it, must leave no client
// credential in any header (the client's are all removed or replaced) or
// in the query's key parameter.
//
// The input's first line is "METHOD TARGET", the rest "name: value"
// header lines; TOKEN stands for a valid gateway token. A first line
// starting with "map " sends the headers in the joined map instead of
// header_map (Envoy without encode_raw_headers).
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"POST /openai/v1/chat/completions\nauthorization: Bearer TOKEN\ncontent-type: application/json",
		"POST /anthropic/v1/messages\nx-api-key: TOKEN\nanthropic-version: 2023-06-01\nanthropic-beta: tools",
		"POST /gemini/v1beta/models/gemini-2.5-flash:generateContent?key=TOKEN&alt=sse\nx-goog-api-key: TOKEN",
		"map GET /openai/v1/models\nauthorization: Bearer TOKEN",
		"POST /openai/v1/embeddings\nauthorization: Bearer tg1.forged\nx-api-key: TOKEN",
		"POST /gemini/v1beta/models/gemini-2.5-flash:countTokens?key=TOKEN&key=TOKEN\nx-custom: TOKEN",
		// The key parameter spelt other ways.
		"POST /gemini/v1beta/models/gemini-2.5-flash:generateContent?%6Bey=TOKEN",
		"POST /gemini/v1beta/models/gemini-2.5-flash:generateContent?k%65y=TOKEN&alt=sse",
		"POST /gemini/v1beta/models/gemini-2.5-flash:generateContent?key=TOKEN;alt=sse",
		"POST /gemini/v1beta/models/gemini-2.5-flash:generateContent?KEY=TOKEN",
	} {
		f.Add(s)
	}
	st := gwtest.New(f, gwtest.Options{})
	srv := extauthz.New(st.Gateway, extauthz.Options{})
	f.Fuzz(func(t *testing.T, script string) {
		script = strings.ReplaceAll(script, "TOKEN", st.Token)
		first, rest, _ := strings.Cut(script, "\n")
		joined := false
		if after, ok := strings.CutPrefix(first, "map "); ok {
			first, joined = after, true
		}
		method, target, _ := strings.Cut(first, " ")
		var client []*corev3.HeaderValue
		for _, line := range strings.Split(rest, "\n") {
			name, value, ok := strings.Cut(line, ":")
			if !ok || name == "" {
				continue
			}
			// Envoy's header names are lower case.
			client = append(client, &corev3.HeaderValue{Key: strings.ToLower(name), RawValue: []byte(strings.TrimSpace(value))})
		}
		httpReq := &authv3.AttributeContext_HttpRequest{Method: method, Path: target}
		if joined {
			httpReq.Headers = map[string]string{}
			for _, hv := range client {
				if v, ok := httpReq.Headers[hv.Key]; ok {
					httpReq.Headers[hv.Key] = v + "," + string(hv.RawValue)
				} else {
					httpReq.Headers[hv.Key] = string(hv.RawValue)
				}
			}
		} else {
			httpReq.HeaderMap = &corev3.HeaderMap{Headers: client}
		}
		resp, err := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: httpReq}}})
		if err != nil {
			t.Fatalf("Check failed the call: %v", err)
		}
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			if len(resp.GetDeniedResponse().GetBody()) == 0 {
				t.Fatalf("a denial without a body: %v", resp)
			}
			return
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("OK without an ok_response: %v", resp)
		}
		// The target as Envoy's header map has it: the key parameter is a
		// credential too.
		creds := gwtest.Credentials(append(slices.Clip(client), &corev3.HeaderValue{Key: ":path", RawValue: []byte(target)}))
		for _, hv := range applyOK(client, ok) {
			for _, c := range creds {
				if strings.Contains(hv.value, c) {
					t.Fatalf("a client credential goes upstream in %s", hv.name)
				}
			}
		}
		_, query, _ := strings.Cut(target, "?")
		q, _ := url.ParseQuery(query)
		for _, p := range ok.GetQueryParametersToRemove() {
			q.Del(p)
		}
		// Only key carries a credential in a query; other parameters are
		// the request's own and go upstream as the client wrote them.
		for _, v := range q["key"] {
			for _, c := range creds {
				if strings.Contains(v, c) {
					t.Fatalf("a client credential goes upstream in the query parameter key")
				}
			}
		}
	})
}

type header struct{ name, value string }

// applyOK applies an OK check response to the client's headers the way
// Envoy's ext_authz filter does: headers set (or appended), then headers
// removed; Envoy never removes pseudo-headers or host, and leaves the
// body's framing headers to itself.
func applyOK(client []*corev3.HeaderValue, ok *authv3.OkHttpResponse) []header {
	var out []header
	for _, hv := range client {
		out = append(out, header{hv.Key, string(hv.RawValue)})
	}
	for _, o := range ok.GetHeaders() {
		h := o.GetHeader()
		//lint:ignore SA1019 the field ext_authz reads
		if !o.GetAppend().GetValue() {
			kept := out[:0]
			for _, x := range out {
				if x.name != h.GetKey() {
					kept = append(kept, x)
				}
			}
			out = kept
		}
		out = append(out, header{h.GetKey(), h.GetValue()})
	}
	kept := out[:0]
	for _, x := range out {
		removed := false
		for _, r := range ok.GetHeadersToRemove() {
			if r == x.name && r != "host" && !strings.HasPrefix(r, ":") {
				removed = true
			}
		}
		if !removed && x.name != "host" && x.name != "content-length" && x.name != "transfer-encoding" {
			kept = append(kept, x)
		}
	}
	return kept
}
