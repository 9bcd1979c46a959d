package gemini

import (
	"net/http"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// TestInspectBodyModels: a generateContent, embedding or countTokens body
// that names another model than the path is refused (the gateway admits and
// prices the path's); the SDKs' own bodies, which repeat the path's model or
// name none, pass.
func TestInspectBodyModels(t *testing.T) {
	const batch = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
	const single = "/v1beta/models/gemini-embedding-001:embedContent"
	const count = "/v1beta/models/gemini-2.5-flash:countTokens"
	content := `"content":{"parts":[{"text":"hi"}]}`
	for _, tc := range []struct {
		name, path, body, param string
	}{
		{"batch, the SDKs' form", batch, `{"requests":[{"model":"models/gemini-embedding-001",` + content + `}]}`, ""},
		{"batch, bare name and none", batch, `{"requests":[{"model":"gemini-embedding-001",` + content + `},{` + content + `}]}`, ""},
		{"batch, another model", batch, `{"requests":[{"model":"models/gemini-embedding-001",` + content + `},{"model":"models/text-embedding-004",` + content + `}]}`, "requests[1].model"},
		{"batch, model not a string", batch, `{"requests":[{"model":5,` + content + `}]}`, "requests[0].model"},
		{"single, the path's model", single, `{"model":"models/gemini-embedding-001",` + content + `}`, ""},
		{"single, another model", single, `{"model":"models/gemini-embedding-002",` + content + `}`, "model"},
		{"countTokens, contents only", count, `{"contents":[]}`, ""},
		{"countTokens, generateContentRequest with the path's model", count, `{"generateContentRequest":{"model":"models/gemini-2.5-flash","contents":[]}}`, ""},
		{"countTokens, generateContentRequest with another model", count, `{"generateContentRequest":{"model":"models/gemini-2.5-pro","contents":[]}}`, "generateContentRequest.model"},
		{"countTokens, generate_content_request with the path's model", count, `{"generate_content_request":{"model":"models/gemini-2.5-flash","contents":[]}}`, ""},
		{"countTokens, generate_content_request with another model", count, `{"generate_content_request":{"model":"models/gemini-2.5-pro","contents":[]}}`, "generate_content_request.model"},
		{"generateContent, no model in the body (the SDKs' form)", "/v1beta/models/gemini-2.5-flash-lite:generateContent", `{"contents":[]}`, ""},
		{"generateContent, the path's model", "/v1beta/models/gemini-2.5-flash-lite:generateContent", `{"model":"models/gemini-2.5-flash-lite","contents":[]}`, ""},
		{"generateContent, another model", "/v1beta/models/gemini-2.5-flash-lite:generateContent", `{"model":"models/gemini-2.5-pro","contents":[]}`, "model"},
		{"streamGenerateContent, another model", "/v1beta/models/gemini-2.5-flash-lite:streamGenerateContent", `{"contents":[],"model":"gemini-2.5-pro"}`, "model"},
		{"generateContent, model not a string", "/v1beta/models/gemini-2.5-flash-lite:generateContent", `{"model":{"name":"gemini-2.5-pro"},"contents":[]}`, "model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New()
			r, f := p.Match(http.MethodPost, tc.path, "")
			if f != nil {
				t.Fatal(f)
			}
			_, f = p.Inspect(r, []byte(tc.body))
			switch {
			case tc.param == "" && f != nil:
				t.Errorf("refused: %v", f)
			case tc.param != "" && (f == nil || f.Status != http.StatusBadRequest || f.Code != gateway.CodeInvalidRequest || f.Param != tc.param):
				t.Errorf("got %+v, want a 400 on %s", f, tc.param)
			}
		})
	}
}
