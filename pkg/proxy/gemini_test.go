package proxy_test

import (
	"net/http"
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
