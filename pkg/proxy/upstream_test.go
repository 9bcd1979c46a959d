package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/proxy"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// upstreamCases are one streamed request per provider.
var upstreamCases = []struct {
	provider, path, body string
	header               http.Header
}{
	{"openai", "/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, nil},
	{"anthropic", "/anthropic/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":32,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		http.Header{"Anthropic-Version": {"2023-06-01"}}},
	{"gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", `{"contents":[{"parts":[{"text":"hi"}]}]}`, nil},
}

func (s *stack) authed(h http.Header) http.Header {
	out := http.Header{"Authorization": {"Bearer " + s.token}}
	for k, v := range h {
		out[k] = v
	}
	return out
}

// An upstream that cannot be reached: the client gets a 502 in its
// provider's own error shape, and the request is recorded as an upstream
// error with no tokens.
func TestUpstreamUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	s := newStack(t, stackOptions{upstream: closed})
	for _, c := range upstreamCases {
		t.Run(c.provider, func(t *testing.T) {
			res := s.do(request{path: c.path, body: []byte(c.body), header: s.authed(c.header)})
			if res.status != http.StatusBadGateway {
				t.Fatalf("status %d, want 502: %s", res.status, res.body)
			}
			var shape map[string]any
			if err := json.Unmarshal(res.body, &shape); err != nil {
				t.Fatalf("body not JSON: %s", res.body)
			}
			switch c.provider {
			case "anthropic":
				if shape["type"] != "error" {
					t.Errorf("not Anthropic's error shape: %s", res.body)
				}
			case "gemini":
				if e, _ := shape["error"].(map[string]any); e["status"] != "UNAVAILABLE" {
					t.Errorf("not Gemini's error shape: %s", res.body)
				}
			default:
				if e, _ := shape["error"].(map[string]any); e["type"] != "server_error" {
					t.Errorf("not OpenAI's error shape: %s", res.body)
				}
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusError || rec.Reason != "upstream_error" || !rec.Tokens.IsZero() || rec.HTTPStatus != http.StatusBadGateway {
				t.Errorf("record %+v, want an upstream error with no tokens", rec)
			}
		})
	}
}

// An upstream that dies in the middle of a stream: the client gets the
// provider's in-stream error event after what was already sent, so its SDK
// raises instead of taking a cut stream as complete, and the record is an
// error with a marked estimate.
func TestUpstreamDiesMidStream(t *testing.T) {
	head := map[string]string{
		"openai": "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once upon a time\"},\"finish_reason\":null}]}\n\n",
		"anthropic": "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n" +
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Once upon a time\"}}\n\n",
		"gemini": "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Once upon a time\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":4,\"totalTokenCount\":11}}\r\n\r\n",
	}
	upstream := cutUpstream("text/event-stream", func(r *http.Request) string {
		provider := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		return head[provider]
	})
	t.Cleanup(upstream.Close)
	s := newStack(t, stackOptions{upstream: upstream.URL})
	for _, c := range upstreamCases {
		t.Run(c.provider, func(t *testing.T) {
			res := s.do(request{path: c.path, body: []byte(c.body), header: s.authed(c.header)})
			if res.status != http.StatusOK {
				t.Fatalf("status %d, want the upstream's 200", res.status)
			}
			got := string(res.body)
			if !strings.HasPrefix(got, head[c.provider]) {
				t.Fatalf("the bytes sent before the failure were not forwarded as they were:\n%q", got)
			}
			tail := got[len(head[c.provider]):]
			switch c.provider {
			case "anthropic":
				if !strings.HasPrefix(tail, "event: error\ndata: {\"type\":\"error\"") {
					t.Errorf("no Anthropic error event after the cut: %q", tail)
				}
			case "gemini":
				if !strings.HasPrefix(tail, "data: {\"error\":{\"code\":502") || !strings.HasSuffix(tail, "\r\n\r\n") {
					t.Errorf("no Gemini error chunk after the cut: %q", tail)
				}
			default:
				if !strings.HasPrefix(tail, "data: {\"error\":") {
					t.Errorf("no OpenAI error chunk after the cut: %q", tail)
				}
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusError || rec.Reason != "upstream_error" || !rec.Estimated || rec.Output == 0 || rec.Input == 0 {
				t.Errorf("record %+v, want an upstream error with an estimate of input and output", rec)
			}
		})
	}
}

// An upstream that dies inside an event: the bytes already forwarded end
// mid-line or mid-event, and the error event that follows must still reach
// the SDK as an error event rather than merge into the broken one (an
// "event: content_block_deevent: error" line names an event the SDKs skip,
// and the cut stream would look complete). The rows model how the Anthropic
// SDKs read the stream: message and content block events must parse as
// JSON, an "error" event raises, anything else is skipped.
func TestUpstreamDiesMidEvent(t *testing.T) {
	const start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n"
	const delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Once upon a time\"}}\n\n"
	cases := []struct {
		name string
		head string
		// native: the SDK raises the gateway's own error event (an APIError
		// of its type); otherwise it raises on the broken event before it.
		native bool
	}{
		{"between events", start + delta, true},
		{"after the event line", start + "event: content_block_delta\n", true},
		{"inside the event name", start + "event: content_block_de", true},
		{"inside the data field name", start + "event: content_block_delta\nda", true},
		{"after a data line", start + delta[:len(delta)-1], true},
		{"after a data line, CRLF", start + strings.ReplaceAll(delta[:len(delta)-1], "\n", "\r\n"), true},
		{"inside a data line", start + delta[:len(delta)-20], false},
	}
	heads := make(chan string, 1)
	upstream := cutUpstream("text/event-stream", func(*http.Request) string { return <-heads })
	t.Cleanup(upstream.Close)
	s := newStack(t, stackOptions{upstream: upstream.URL})
	c := upstreamCases[1]
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			heads <- tc.head
			res := s.do(request{path: c.path, body: []byte(c.body), header: s.authed(c.header)})
			if !strings.HasPrefix(string(res.body), tc.head) {
				t.Fatalf("the bytes sent before the failure were not forwarded as they were:\n%q", res.body)
			}
			_, datas, names := sseNamedEvents(t, res.body)
			raised, native := "", false
			for i, name := range names {
				switch name {
				case "message_start", "message_delta", "message_stop", "content_block_start", "content_block_delta", "content_block_stop":
					if !json.Valid([]byte(datas[i])) {
						raised = "JSON error on " + name
					}
				case "error":
					var e struct{ Type string }
					native = json.Unmarshal([]byte(datas[i]), &e) == nil && e.Type == "error"
					raised = "error event " + datas[i]
				}
				if raised != "" {
					break
				}
			}
			if raised == "" {
				t.Fatalf("an SDK reading the client's stream raises nothing: the cut stream looks complete:\n%q", res.body)
			}
			if native != tc.native {
				t.Errorf("the SDK raises %s; want the gateway's error event whole: %v\n%q", raised, tc.native, res.body)
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusError || rec.Reason != "upstream_error" {
				t.Errorf("record %s/%s, want an upstream error", rec.Status, rec.Reason)
			}
		})
	}
}

// An upstream that resets after the stream's own final event (Anthropic's
// message_stop) has sent the whole answer: the client
// gets exactly the upstream's bytes and a clean end, never an error event
// after the end (the Anthropic SDKs raise one even after message_stop, and
// the caller would retry a request that succeeded), and the record is ok
// with the provider's exact usage.
func TestUpstreamDiesAfterFinalEvent(t *testing.T) {
	full := map[string]string{
		"anthropic": "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n" +
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Once upon a time\"}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
	want := usage.Tokens{Input: 12, Output: 5}
	upstream := cutUpstream("text/event-stream", func(r *http.Request) string {
		provider := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		return full[provider]
	})
	t.Cleanup(upstream.Close)
	s := newStack(t, stackOptions{upstream: upstream.URL})
	for _, c := range upstreamCases {
		if full[c.provider] == "" {
			continue
		}
		t.Run(c.provider, func(t *testing.T) {
			req := s.newRequest(context.Background(), request{path: c.path, body: []byte(c.body), header: s.authed(c.header)})
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			got, err := io.ReadAll(res.Body)
			if err != nil {
				t.Errorf("reading a stream that reached its final event: %v, want a clean end", err)
			}
			if string(got) != full[c.provider] {
				t.Errorf("client stream differs from the upstream's:\n got %q\nwant %q", got, full[c.provider])
			}
			rec := s.rec.wait(t, res.Header.Get("x-tollgate-request-id"))
			if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != want {
				t.Errorf("record %s/%s estimated=%v tokens %+v, want ok with the exact %+v", rec.Status, rec.Reason, rec.Estimated, rec.Tokens, want)
			}
		})
	}
}

// An upstream that dies midway through a body whose framing has no error
// event (a streamed JSON array, a JSON document sent chunked): the client's
// response is cut short too, never ended cleanly, so no client takes the
// truncated body as whole; the record is an upstream error. A stream has
// sent its headers already; a document may not have sent anything, and then
// the client sees its connection fail, which SDKs retry.
func TestUpstreamDiesMidBodyWithoutErrorEvent(t *testing.T) {
	cases := []struct {
		name, path, body, head string
		streamed               bool
	}{
		{"gemini JSON array", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`,
			"[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Once\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":1}}\n,", true},
		{"openai JSON document", "/openai/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
			"{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Once", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			upstream := cutUpstream("application/json", func(*http.Request) string { return c.head })
			t.Cleanup(upstream.Close)
			s := newStack(t, stackOptions{upstream: upstream.URL})
			req := s.newRequest(context.Background(), request{path: c.path, body: []byte(c.body), header: s.authed(nil)})
			res, err := http.DefaultClient.Do(req)
			switch {
			case err != nil && c.streamed:
				t.Fatalf("%v: a stream's headers were not sent before the cut", err)
			case err == nil:
				defer res.Body.Close()
				got, err := io.ReadAll(res.Body)
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("reading the cut body: err %v, want an unexpected EOF (the response must not end cleanly)", err)
				}
				if !strings.HasPrefix(c.head, string(got)) || c.streamed && string(got) != c.head {
					t.Errorf("the bytes sent before the failure were not forwarded as they were:\n%q", got)
				}
			}
			rec := s.rec.only(t)
			if rec.Status != usage.StatusError || rec.Reason != "upstream_error" {
				t.Errorf("record %+v, want an upstream error", rec)
			}
		})
	}
}

// A path with escapes reaches upstream exactly as the client wrote it.
func TestEscapedPathForwardedOnce(t *testing.T) {
	got := make(chan string, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.EscapedPath()
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"candidates":[],"usageMetadata":{"promptTokenCount":1,"totalTokenCount":1}}`))
	}))
	t.Cleanup(upstream.Close)
	s := newStack(t, stackOptions{upstream: upstream.URL, overlay: "models: [{provider: gemini, name: \"my model\", like: gemini-2.5-flash}]\n"})
	res := s.do(request{path: "/gemini/v1beta/models/my%20model:generateContent", body: []byte(`{"contents":[{"parts":[{"text":"hi"}]}]}`),
		header: s.authed(nil)})
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	if p := <-got; p != "/gemini/v1beta/models/my%20model:generateContent" {
		t.Errorf("upstream path %q, want the client's escaped path once", p)
	}
	if rec := s.rec.wait(t, res.id); rec.Model != "my model" {
		t.Errorf("record model %q, want the decoded name", rec.Model)
	}
}

// TestParseUpstreams: an upstream is an http(s) API root. A base URL in
// the SDKs' own form, ending in the API version (OPENAI_BASE_URL's
// http://localhost:11434/v1), names the same root: the client's path
// already starts with its version, so keeping it would call /v1/v1/….
// What the proxy could not honour (another scheme, a query, a fragment)
// is refused instead of dropped.
func TestParseUpstreams(t *testing.T) {
	for _, c := range []struct {
		provider, url, want string // want "" : refused
	}{
		{"openai", "http://127.0.0.1:9000", "http://127.0.0.1:9000"},
		{"openai", "http://127.0.0.1:9000/", "http://127.0.0.1:9000"},
		{"openai", "http://127.0.0.1:9000/openai", "http://127.0.0.1:9000/openai"},
		{"openai", "http://localhost:11434/v1", "http://localhost:11434"},
		{"openai", "https://proxy.example/team/v1/", "https://proxy.example/team"},
		{"anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com"},
		{"gemini", "https://generativelanguage.googleapis.com/v1beta", "https://generativelanguage.googleapis.com"},
		{"gemini", "http://127.0.0.1:9000/gemini", "http://127.0.0.1:9000/gemini"},
		{"openai", "ftp://127.0.0.1/x", ""},
		{"openai", "127.0.0.1:9000", ""},
		{"openai", "http://127.0.0.1:9000/v1?api-version=1", ""},
		{"openai", "http://127.0.0.1:9000/#x", ""},
	} {
		ups, err := proxy.ParseUpstreams(map[string]string{c.provider: c.url})
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%s=%s: accepted as %v, want an error", c.provider, c.url, ups[c.provider])
		case c.want == "" && !strings.Contains(err.Error(), c.url):
			t.Errorf("%s=%s: error %q does not name the URL", c.provider, c.url, err)
		case c.want != "" && err != nil:
			t.Errorf("%s=%s: %v", c.provider, c.url, err)
		case c.want != "" && ups[c.provider].String() != c.want:
			t.Errorf("%s=%s: root %s, want %s", c.provider, c.url, ups[c.provider], c.want)
		}
	}
}

// cutUpstream is an upstream that answers every request with a 200 of the
// given content type and body, then closes the connection without ending
// the body, so the gateway's next read fails. The caller closes it.
func cutUpstream(contentType string, body func(*http.Request) string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", contentType)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, body(r))
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // no terminating chunk: the client sees an unexpected EOF
		}
	}))
}
