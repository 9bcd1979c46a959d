package anthropic_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
)

// TestInspectCacheMarked: a body that asks for prompt caching says so, for
// admission (Anthropic's rate limits leave cache reads out).
func TestInspectCacheMarked(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       bool
	}{
		{"no cache_control", `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"system block", `{"model":"claude-sonnet-4-5","max_tokens":10,"system":[{"type":"text","text":"long","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}`, true},
		{"top level (automatic caching)", `{"model":"claude-sonnet-4-5","max_tokens":10,"cache_control":{"type":"ephemeral"},"messages":[{"role":"user","content":"hi"}]}`, true},
		{"message block, 5m", `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral","ttl":"5m"}}]}]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := anthropic.New()
			r, f := p.Match(http.MethodPost, "/v1/messages", "")
			if f != nil {
				t.Fatal(f)
			}
			in, f := p.Inspect(r, []byte(tc.body))
			if f != nil {
				t.Fatalf("refused: %v", f)
			}
			if in.CacheMarked != tc.want {
				t.Errorf("CacheMarked = %v, want %v", in.CacheMarked, tc.want)
			}
		})
	}
}
