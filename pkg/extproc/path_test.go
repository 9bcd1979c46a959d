package extproc

import "testing"

// TestRoutedPath: whatever :path the processor leaves, Envoy's router,
// with the route matched on the client's path and its prefix_rewrite "/",
// forwards exactly the gateway's upstream path.
func TestRoutedPath(t *testing.T) {
	for _, tc := range []struct {
		client, route, upstream string
		want                    string // "": no :path mutation
	}{
		{"/openai/v1/chat/completions", "/openai/", "/v1/chat/completions", ""},
		{"/anthropic/v1/messages", "/anthropic/", "/v1/messages", ""},
		{"/openai/v1/models?limit=2", "/openai/", "/v1/models?limit=2", ""},
		{"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=AIza-k", "/gemini/",
			"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"},
		{"/gemini/v1beta/models/x:generateContent?key=AIza-k", "/gemini/", "/v1beta/models/x:generateContent",
			"/gemini/v1beta/models/x:generateContent"},
		{"/gemini/v1beta/models/alias:generateContent", "/gemini/", "/v1beta/models/upstream-name:generateContent",
			"/gemini/v1beta/models/upstream-name:generateContent"},
		{"/gemini/v1beta/models?key=a/b", "/gemini/", "/v1beta/models", "/gemini/v1beta/models"},
	} {
		got, ok := routedPath(tc.client, tc.upstream)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("routedPath(%q, %q) = %q, %v; want %q", tc.client, tc.upstream, got, ok, tc.want)
		}
		path := tc.client
		if ok {
			path = got
		}
		// Envoy's router: the matched prefix's length cut off, "/" put back.
		if fwd := "/" + path[len(tc.route):]; fwd != tc.upstream {
			t.Errorf("%s: Envoy forwards %q, want %q", tc.client, fwd, tc.upstream)
		}
	}
}
