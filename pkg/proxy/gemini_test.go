package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// TestGeminiEncodedColon: clients that escape every reserved character of
// a path segment send the colon before the method as %3A, which Google
// decodes before routing. Such a request is the same call as with a plain
// colon: served, metered, and renamed like it, not taken for a GET of a
// model named "gemini-2.5-flash:generateContent".
func TestGeminiEncodedColon(t *testing.T) {
	s := newStack(t, stackOptions{overlay: "models: [{provider: gemini, name: house-gemini, like: gemini-2.5-flash, upstream: gemini-2.5-flash-preview-09-2025}]\n"})
	const body = `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	for _, tc := range []struct {
		name, path     string
		upPath, upVerb string
		model          string
	}{
		{"plain colon", "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
			"/v1beta/models/gemini-2.5-flash:generateContent", "generateContent", "gemini-2.5-flash"},
		{"%3A", "/gemini/v1beta/models/gemini-2.5-flash%3AgenerateContent",
			"/v1beta/models/gemini-2.5-flash:generateContent", "generateContent", "gemini-2.5-flash"},
		{"%3a, stream", "/gemini/v1beta/models/gemini-2.5-flash%3astreamGenerateContent?alt=sse",
			"/v1beta/models/gemini-2.5-flash:streamGenerateContent", "streamGenerateContent", "gemini-2.5-flash"},
		{"%3A, v1, JSON-array stream", "/gemini/v1/models/gemini-2.5-flash%3AstreamGenerateContent",
			"/v1/models/gemini-2.5-flash:streamGenerateContent", "streamGenerateContent", "gemini-2.5-flash"},
		{"%3A, model served under another name", "/gemini/v1beta/models/house-gemini%3AgenerateContent",
			"/v1beta/models/gemini-2.5-flash-preview-09-2025:generateContent", "generateContent", "house-gemini"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: tc.path, body: []byte(body), header: fixture("gemini").header(s.token)})
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			up := s.onlyServed("gemini")
			if up.Path != tc.upPath || up.Endpoint != tc.upVerb {
				t.Errorf("upstream %s (%s), want %s (%s)", up.Path, up.Endpoint, tc.upPath, tc.upVerb)
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusOK || rec.Model != tc.model || rec.Operation != tc.upVerb || rec.Estimated || rec.Tokens != up.Usage {
				t.Errorf("record %s model %q op %q estimated=%v tokens %+v; mock billed %+v",
					rec.Status, rec.Model, rec.Operation, rec.Estimated, rec.Tokens, up.Usage)
			}
		})
	}
}

// TestGeminiLargeStreamChunk: an image model streams its image inside a
// chunk (a 4K image is several MiB of base64), and that chunk's
// usageMetadata, after the image, can be the stream's final total. A chunk
// of the alt=sse stream is metered as whole as the same chunk in a
// streamed JSON array or a whole response, up to the gateway's response
// document cap, so the image's tokens are billed in every framing.
func TestGeminiLargeStreamChunk(t *testing.T) {
	const path = "/gemini/v1beta/models/gemini-2.5-flash-image:streamGenerateContent"
	first := `{"candidates":[{"content":{"parts":[{"text":"Here it is"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":17,"candidatesTokenCount":3,"totalTokenCount":20}}`
	image := `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + strings.Repeat("iVBO", 17<<18) +
		`"}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":17,"candidatesTokenCount":1293,"totalTokenCount":1310,` +
		`"candidatesTokensDetails":[{"modality":"TEXT","tokenCount":3},{"modality":"IMAGE","tokenCount":1290}]}}`
	want := usage.Tokens{Input: 17, Output: 1293, ImageOutput: 1290}
	for _, tc := range []struct {
		name, query, contentType, body string
	}{
		{"alt=sse", "?alt=sse", "text/event-stream", "data: " + first + "\r\n\r\ndata: " + image + "\r\n\r\n"},
		{"JSON array", "", "application/json; charset=UTF-8", "[" + first + "\r\n,\r\n" + image + "\r\n]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("content-type", tc.contentType)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer up.Close()
			s := newStack(t, stackOptions{upstream: up.URL})
			res := s.do(request{path: path + tc.query, body: []byte(`{"contents":[{"parts":[{"text":"draw"}]}]}`), header: s.authed(nil)})
			if res.status != http.StatusOK || string(res.body) != tc.body {
				t.Fatalf("status %d, %d bytes; want 200 and the %d bytes upstream sent", res.status, len(res.body), len(tc.body))
			}
			if rec := s.rec.wait(t, res.id); rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != want {
				t.Errorf("record %s estimated=%v %+v, want %+v", rec.Status, rec.Estimated, rec.Tokens, want)
			}
		})
	}
}

// TestGeminiArrayWholeBeforeUpstreamDies: a streamed JSON array whose
// closing bracket came through is whole, though the upstream connection
// then fails before the transport's end: the client's response ends
// cleanly (a cut one would fail a client that has every element), and the
// record is the provider's final count, not an upstream error. Cut before
// the bracket, it stays cut (TestUpstreamDiesMidBodyWithoutErrorEvent).
func TestGeminiArrayWholeBeforeUpstreamDies(t *testing.T) {
	const array = `[{"candidates":[{"content":{"parts":[{"text":"Once"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1}}` + "\r\n,\r\n" +
		`{"candidates":[{"content":{"parts":[{"text":" upon"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":2}}` + "\r\n]"
	upstream := cutUpstream("application/json; charset=UTF-8", func(*http.Request) string { return array })
	t.Cleanup(upstream.Close)
	s := newStack(t, stackOptions{upstream: upstream.URL})
	req := s.newRequest(context.Background(), request{path: "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
		body: []byte(`{"contents":[{"parts":[{"text":"hi"}]}]}`), header: s.authed(nil)})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil || string(got) != array {
		t.Errorf("client read %q, err %v; want the whole array and a clean end", got, err)
	}
	rec := s.rec.wait(t, res.Header.Get("x-tollgate-request-id"))
	if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != (usage.Tokens{Input: 7, Output: 2}) {
		t.Errorf("record %s %q estimated=%v %+v, want ok with the final count", rec.Status, rec.Reason, rec.Estimated, rec.Tokens)
	}
}

// TestGeminiCountTokensRequestModel: countTokens takes the request to count
// either as contents or, to count a system instruction and tools too, as a
// whole generateContentRequest, whose model field is required. A model the
// gateway serves under another upstream name is renamed there as in the
// path (Google would not know the served name), and a body that names
// another model than the path is refused, as for embeddings.
func TestGeminiCountTokensRequestModel(t *testing.T) {
	s := newStack(t, stackOptions{overlay: "models: [{provider: gemini, name: house-gemini, like: gemini-2.5-flash, upstream: gemini-2.5-flash-preview-09-2025}]\n"})
	const contents = `"contents":[{"role":"user","parts":[{"text":"hi"}]}]`
	for _, tc := range []struct {
		name, path, body string
		status           int
		upBody           string // "" when it must not reach upstream
	}{
		{"renamed model", "/gemini/v1beta/models/house-gemini:countTokens",
			`{"generateContentRequest":{"model":"models/house-gemini",` + contents + `,"systemInstruction":{"parts":[{"text":"be brief"}]}}}`, http.StatusOK,
			`{"generateContentRequest":{"model":"models/gemini-2.5-flash-preview-09-2025",` + contents + `,"systemInstruction":{"parts":[{"text":"be brief"}]}}}`},
		{"renamed model, contents only", "/gemini/v1beta/models/house-gemini:countTokens", `{` + contents + `}`, http.StatusOK, `{` + contents + `}`},
		{"served under its own name", "/gemini/v1beta/models/gemini-2.5-flash:countTokens",
			`{"generateContentRequest":{"model":"models/gemini-2.5-flash",` + contents + `}}`, http.StatusOK,
			`{"generateContentRequest":{"model":"models/gemini-2.5-flash",` + contents + `}}`},
		{"another model than the path", "/gemini/v1beta/models/house-gemini:countTokens",
			`{"generateContentRequest":{"model":"models/gemini-2.5-pro",` + contents + `}}`, http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: tc.path, body: []byte(tc.body), header: fixture("gemini").header(s.token)})
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			if tc.upBody == "" {
				if n := len(s.served("gemini")); n != 0 {
					t.Errorf("%d requests reached upstream, want none", n)
				}
				return
			}
			if up := s.onlyServed("gemini"); string(up.Body) != tc.upBody {
				t.Errorf("upstream body\n%s\nwant\n%s", up.Body, tc.upBody)
			}
		})
	}
}

// TestGeminiQueryParameters: Google's system parameters reach upstream
// only when the gateway can still read what comes back. Credentials (key,
// and the OAuth access_token and oauth_token) are the client's and are
// dropped; a field mask (fields), JSONP (callback) or another encoding
// (alt other than json or sse, e.g. proto; int enums are read), each also spelled
// with a leading '$', would hide or garble usageMetadata, so they are
// refused in Gemini's own error shape before any upstream call; the rest
// pass as the client wrote them.
func TestGeminiQueryParameters(t *testing.T) {
	s := newStack(t, stackOptions{})
	const (
		generate = "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
		stream   = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
		body     = `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	)
	for _, tc := range []struct {
		name, path string
		upQuery    string // what upstream gets; "-" when the request is refused
	}{
		{"credentials dropped, the rest kept", stream + "?alt=sse&key=" + decoy + "&access_token=" + decoy + "&prettyPrint=false&oauth_token=" + decoy + "&quotaUser=u1",
			"alt=sse&prettyPrint=false&quotaUser=u1"},
		// Google reads the API key as $key too (its system parameters
		// all take a leading '$'), escaped or not.
		{"$key dropped", stream + "?alt=sse&%24key=" + decoy + "&$key=" + decoy + "&prettyPrint=false", "alt=sse&prettyPrint=false"},
		{"alt=json", stream + "?alt=json", "alt=json"},
		{"fields", generate + "?fields=candidates", "-"},
		{"$fields", generate + "?%24fields=candidates.content", "-"},
		{"callback", generate + "?callback=f", "-"},
		{"alt=proto", generate + "?alt=proto", "-"},
		// The deprecated google-generativeai REST transport: the meter
		// reads numeric enums too.
		{"$alt with int enums", stream + "?%24alt=json%3Benum-encoding%3Dint", "%24alt=json%3Benum-encoding%3Dint"},
		{"alt with another parameter", generate + "?alt=json%3Bfoo%3Dbar", "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: tc.path, body: []byte(body), header: fixture("gemini").header(s.token)})
			if tc.upQuery == "-" {
				var e struct {
					Error struct {
						Code   int
						Status string
					}
				}
				if res.status != http.StatusBadRequest || json.Unmarshal(res.body, &e) != nil || e.Error.Code != 400 || e.Error.Status != "INVALID_ARGUMENT" {
					t.Errorf("status %d %s, want Gemini's 400 INVALID_ARGUMENT", res.status, res.body)
				}
				if n := len(s.served("gemini")); n != 0 {
					t.Errorf("%d requests reached upstream, want none", n)
				}
				return
			}
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			if up := s.onlyServed("gemini"); up.RawQuery != tc.upQuery {
				t.Errorf("upstream query %q, want %q", up.RawQuery, tc.upQuery)
			}
		})
	}
}
