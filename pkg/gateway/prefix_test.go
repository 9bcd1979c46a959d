package gateway

import "testing"

func TestSplitPrefix(t *testing.T) {
	for _, tc := range []struct {
		target, route, prefix, path, query string
	}{
		{"/openai/v1/chat/completions", "/openai", "openai", "/v1/chat/completions", ""},
		{"/gemini/v1beta/models/x:streamGenerateContent?alt=sse&key=k", "/gemini", "gemini", "/v1beta/models/x:streamGenerateContent", "alt=sse&key=k"},
		{"/gemini/v1beta/models?key=a/b", "/gemini", "gemini", "/v1beta/models", "key=a/b"},
		{"/openai", "/openai", "openai", "/", ""},
		{"/openai?x=1", "/openai", "openai", "/", "x=1"},
		{"//x", "/", "", "/x", ""},
		{"openai/v1", "openai", "openai", "/v1", ""},
		{"", "", "", "/", ""},
	} {
		prefix, path, query := splitPrefix(tc.target)
		if prefix != tc.prefix || path != tc.path || query != tc.query {
			t.Errorf("splitPrefix(%q) = %q, %q, %q; want %q, %q, %q", tc.target, prefix, path, query, tc.prefix, tc.path, tc.query)
		}
		if got := RoutePrefix(tc.target); got != tc.route {
			t.Errorf("RoutePrefix(%q) = %q, want %q", tc.target, got, tc.route)
		}
	}
}
