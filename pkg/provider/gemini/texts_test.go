package gemini

import (
	"slices"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

func TestInputTexts(t *testing.T) {
	p := New()
	tests := []struct {
		path, body string
		want       []string
		ok         bool
	}{
		{"/v1beta/models/gemini-embedding-001:batchEmbedContents",
			`{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"What is the meaning of life?"}]}},` +
				`{"model":"models/gemini-embedding-001","content":{"role":"user","parts":[{"text":"a"},{"text":"b"}]}}]}`,
			[]string{"What is the meaning of life?", "a", "b"}, true},
		{"/v1beta/models/gemini-embedding-001:embedContent",
			`{"content":{"parts":[{"text":"hello"}]},"taskType":"RETRIEVAL_QUERY"}`, []string{"hello"}, true},
		// Routes that report usage themselves are not estimated from text.
		{"/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`, nil, false},
	}
	for _, tt := range tests {
		r, f := p.Match("POST", tt.path, "")
		if f != nil {
			t.Fatal(f)
		}
		in, f := p.Inspect(r, []byte(tt.body))
		if f != nil {
			t.Fatal(f)
		}
		got, ok := p.InputTexts(r, in)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("%s: InputTexts = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
	var _ gateway.InputTexter = p
}
