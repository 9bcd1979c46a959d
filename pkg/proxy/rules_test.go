package proxy_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

const decoy = "decoy-client-secret-9d1e"

// credForm is one way a client presents the gateway token, with decoy
// credentials in the lower-precedence places the gateway does not read.
type credForm struct {
	name  string
	apply func(h http.Header, q url.Values, token string)
}

var credForms = []credForm{
	{"authorization bearer", func(h http.Header, q url.Values, tok string) {
		h.Set("Authorization", "Bearer "+tok)
		h.Set("x-api-key", decoy)
		h.Set("x-goog-api-key", decoy)
		q.Set("key", decoy)
	}},
	{"x-api-key", func(h http.Header, q url.Values, tok string) {
		h.Set("x-api-key", tok)
		h.Set("x-goog-api-key", decoy)
		q.Set("key", decoy)
	}},
	{"x-goog-api-key", func(h http.Header, q url.Values, tok string) {
		h.Set("x-goog-api-key", tok)
		q.Set("key", decoy)
	}},
	{"key query parameter", func(_ http.Header, q url.Values, tok string) { q.Set("key", tok) }},
}

// authHeader is where each provider wants the real key.
var authHeader = map[string]struct{ name, prefix string }{
	"openai":    {"Authorization", "Bearer "},
	"anthropic": {"X-Api-Key", ""},
	"gemini":    {"X-Goog-Api-Key", ""},
}

func TestUpstreamHeadersBuiltFromScratch(t *testing.T) {
	const realKey = "sk-real-provider-key-42"
	keys := map[string]string{"openai": realKey, "anthropic": realKey, "gemini": realKey}
	allow := []string{"anthropic-beta", "x-random-test"}
	allowAll := map[string][]string{"openai": allow, "anthropic": allow, "gemini": allow}
	stacks := []struct {
		name    string
		opts    stackOptions
		key     string
		allowed []string
	}{
		{"with key", stackOptions{keys: keys}, realKey, nil},
		{"without key", stackOptions{}, "", nil},
		{"with key and allow-list", stackOptions{keys: keys, allow: allowAll}, realKey, allow},
	}
	for _, st := range stacks {
		s := newStack(t, st.opts)
		for _, f := range fixtures {
			for _, form := range credForms {
				t.Run(st.name+"/"+f.name+"/"+form.name, func(t *testing.T) {
					s.t = t
					s.mock.Reset()
					h, q := http.Header{}, url.Values{}
					form.apply(h, q, s.token)
					if f.name == "anthropic" {
						h.Set("anthropic-version", "2023-06-01")
					}
					h.Set("anthropic-beta", "context-1m-2025-08-07")
					h.Set("x-random-test", "1")
					h.Set("User-Agent", "client-ua/9.9")
					h.Set("OpenAI-Organization", "org-client")
					h.Set("X-Stainless-Lang", "js")
					h.Set("Cookie", "session="+decoy)
					h.Set("X-Forwarded-For", "203.0.113.9")
					p := f.path
					if len(q) > 0 {
						p += "?" + q.Encode()
					}
					res := s.do(request{path: p, body: f.body(f.model, "hello"), header: h})
					if res.status != http.StatusOK {
						t.Fatalf("status %d: %s", res.status, res.body)
					}
					up := s.onlyServed(f.name)

					want := map[string]string{"Content-Type": "application/json", "Accept-Encoding": "identity",
						"User-Agent": gateway.UserAgent}
					if f.name == "anthropic" {
						want["Anthropic-Version"] = "2023-06-01"
					}
					if st.key != "" {
						a := authHeader[f.name]
						want[a.name] = a.prefix + st.key
					}
					for _, name := range st.allowed {
						want[http.CanonicalHeaderKey(name)] = h.Get(name)
					}
					// Added by Go's transport, not by the client.
					transport := map[string]bool{"Content-Length": true}
					for name, vs := range up.Header {
						if transport[name] {
							continue
						}
						w, ok := want[name]
						if !ok {
							t.Errorf("upstream got header %s: %q, which the gateway must not send", name, vs)
							continue
						}
						if len(vs) != 1 || vs[0] != w {
							t.Errorf("upstream %s = %q, want exactly %q", name, vs, w)
						}
					}
					for name := range want {
						if up.Header.Get(name) == "" {
							t.Errorf("upstream lacks %s", name)
						}
					}
					for name, vs := range up.Header {
						for _, v := range vs {
							if strings.Contains(v, s.token) || strings.Contains(v, decoy) {
								t.Errorf("client credential reached upstream in %s", name)
							}
						}
					}
					for name := range res.header {
						n := strings.ToLower(name)
						if n == "openai-organization" || n == "anthropic-organization-id" || n == "set-cookie" ||
							strings.HasPrefix(n, "x-ratelimit-") || strings.HasPrefix(n, "anthropic-ratelimit-") {
							t.Errorf("client got the operator's %s header", name)
						}
					}
					if uq, _ := url.ParseQuery(up.RawQuery); uq.Has("key") {
						t.Errorf("upstream query still has key: %q", up.RawQuery)
					}
					if strings.Contains(up.RawQuery, s.token) || strings.Contains(up.RawQuery, decoy) {
						t.Errorf("client credential reached upstream in the query %q", up.RawQuery)
					}
				})
			}
		}
	}
}

func TestAnthropicVersionPassesThrough(t *testing.T) {
	s := newStack(t, stackOptions{})
	f := fixture("anthropic")
	for _, v := range []string{"2023-06-01", "2026-10-21"} {
		t.Run(v, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			h := f.header(s.token)
			h.Set("anthropic-version", v)
			res := s.do(request{path: f.path, body: f.body(f.model, "hi"), header: h})
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			if got := s.onlyServed("anthropic").Header.Values("Anthropic-Version"); len(got) != 1 || got[0] != v {
				t.Errorf("upstream anthropic-version %q, want %q", got, v)
			}
		})
	}
}

// fields decodes a JSON object body into its top-level fields.
func fields(t *testing.T, body []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("upstream body is not a JSON object: %v: %s", err, body)
	}
	return m
}

func TestOpenAIStoreAndPromptCacheKey(t *testing.T) {
	s := newStack(t, stackOptions{})
	tokA2 := s.mint(auth.Claims{Account: "acct-1", Project: "proj-other"})
	tokB := s.mint(auth.Claims{Account: "acct-2", Project: "proj-2"})
	f := fixture("openai")

	keyOf := func(t *testing.T, path, token, extra string) string {
		t.Helper()
		s.t = t
		s.mock.Reset()
		body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"input":"hi"` + extra + `}`
		if strings.HasSuffix(path, "/responses") {
			body = `{"model":"gpt-4o-mini","input":"hi"` + extra + `}`
		}
		res := s.do(request{path: path, body: []byte(body), header: f.header(token)})
		if res.status != http.StatusOK {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		up := fields(t, s.onlyServed("openai").Body)
		if got := string(up["store"]); got != "false" {
			t.Errorf("upstream store = %s, want false", got)
		}
		var key string
		if err := json.Unmarshal(up["prompt_cache_key"], &key); err != nil || key == "" {
			t.Fatalf("upstream prompt_cache_key = %s, want a string", up["prompt_cache_key"])
		}
		return key
	}

	for _, path := range []string{"/openai/v1/chat/completions", "/openai/v1/responses"} {
		ref := keyOf(t, path, s.token, "")
		for _, extra := range []string{
			"",
			`,"store":true`,
			`,"store":false`,
			`,"store":null`,
			`,"prompt_cache_key":"client-chosen"`,
			`,"store":true,"prompt_cache_key":"client-chosen","user":"u1"`,
		} {
			t.Run(path+"/"+strings.TrimPrefix(extra, ","), func(t *testing.T) {
				if got := keyOf(t, path, s.token, extra); got != ref {
					t.Errorf("prompt_cache_key %q, want the account's %q (client-sent value must be replaced)", got, ref)
				}
			})
		}
		t.Run(path+"/same account, other token", func(t *testing.T) {
			if got := keyOf(t, path, tokA2, ""); got != ref {
				t.Errorf("acct-1 via another token got %q, want %q", got, ref)
			}
		})
		t.Run(path+"/other account", func(t *testing.T) {
			got := keyOf(t, path, tokB, "")
			if got == ref {
				t.Errorf("acct-2 shares acct-1's prompt_cache_key %q", got)
			}
			if strings.Contains(got, "acct-2") || strings.Contains(ref, "acct-1") {
				t.Errorf("prompt_cache_key reveals the account id: %q / %q", ref, got)
			}
		})
	}

	// Chat Completions refuses metadata unless store is on ("The 'metadata'
	// parameter is only allowed when 'store' is enabled"): metadata only
	// labels a stored completion, and with store forced off there is none,
	// so a request that is valid as its client sent it must not fail for
	// the gateway's rewrite. Responses takes metadata with store off.
	for _, tc := range []struct{ path, extra string }{
		{"/openai/v1/chat/completions", `,"store":true,"metadata":{"team":"a"}`},
		{"/openai/v1/chat/completions", `,"metadat\u0061":{"team":"a"},"store":true`},
		{"/openai/v1/chat/completions", `,"metadata":null`},
		{"/openai/v1/responses", `,"store":true,"metadata":{"team":"a"}`},
	} {
		t.Run(tc.path+"/"+strings.TrimPrefix(tc.extra, ","), func(t *testing.T) {
			keyOf(t, tc.path, s.token, tc.extra)
			got, kept := fields(t, s.onlyServed("openai").Body)["metadata"]
			switch chat := strings.HasSuffix(tc.path, "/chat/completions"); {
			case chat && kept:
				t.Errorf("chat upstream got metadata %s with store false", got)
			case !chat && string(got) != `{"team":"a"}`:
				t.Errorf("responses upstream metadata = %s, want the client's", got)
			}
		})
	}

	t.Run("embeddings body is forwarded unchanged", func(t *testing.T) {
		// Embeddings take neither store nor prompt_cache_key.
		es := newStack(t, stackOptions{overlay: `
models:
  - provider: openai
    name: text-embedding-3-small
    kind: embedding
    price: {input: 0.02, output: 0}
    tpm: {free: 1000000, personal: 1000000, pro: 1000000}
`})
		body := []byte(`{"model":"text-embedding-3-small","input":"hello"}`)
		res := es.do(request{path: "/openai/v1/embeddings", body: body, header: f.header(es.token)})
		if res.status != http.StatusOK {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		if got := es.onlyServed("openai").Body; !bytes.Equal(got, body) {
			t.Errorf("embeddings body rewritten: %s", got)
		}
	})
}

// sseEvents splits an SSE body into its events (raw bytes and data).
func sseEvents(t *testing.T, body []byte) (raw [][]byte, data []string) {
	t.Helper()
	var d sse.Decoder
	emit := func(ev sse.Event) error {
		raw = append(raw, body[ev.Start:ev.End])
		data = append(data, string(ev.Data))
		return nil
	}
	if err := d.Feed(body, emit); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(emit); err != nil {
		t.Fatal(err)
	}
	return raw, data
}

// sseNamedEvents is sseEvents with the events' names.
func sseNamedEvents(t *testing.T, body []byte) (raw [][]byte, data, names []string) {
	t.Helper()
	var d sse.Decoder
	emit := func(ev sse.Event) error {
		raw = append(raw, body[ev.Start:ev.End])
		data = append(data, string(ev.Data))
		names = append(names, ev.Name)
		return nil
	}
	if err := d.Feed(body, emit); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(emit); err != nil {
		t.Fatal(err)
	}
	return raw, data, names
}

// direct sends a request straight to the mock, bypassing the gateway.
func (s *stack) direct(method, path string, body []byte, h http.Header) []byte {
	s.t.Helper()
	req, err := http.NewRequest(method, s.mockURL+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header = h.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		s.t.Fatalf("direct %s: %d %s", path, res.StatusCode, b)
	}
	return b
}

func TestOpenAIChatStreamUsage(t *testing.T) {
	s := newStack(t, stackOptions{})
	f := fixture("openai")
	const prompt = `hello [[mock reply=one two three four]] [[mock usage input=40 cached=8 output=12 reasoning=5]]`
	want := usage.Tokens{Input: 40, CachedInput: 8, Output: 12, Reasoning: 5}
	for _, tc := range []struct {
		name       string
		opts       string // client stream_options, "" for none
		upstream   string // stream_options upstream must get (compared as JSON)
		clientSees bool   // the client gets the usage chunk
	}{
		{"no stream_options", "", `{"include_usage":true}`, false},
		{"stream_options null", `null`, `{"include_usage":true}`, false},
		{"include_usage false", `{"include_usage":false}`, `{"include_usage":true}`, false},
		{"only include_obfuscation", `{"include_obfuscation":false}`, `{"include_obfuscation":false,"include_usage":true}`, false},
		{"client asked for usage", `{"include_usage":true,"include_obfuscation":false}`, `{"include_usage":true,"include_obfuscation":false}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":%q}]`, prompt)
			if tc.opts != "" {
				body += `,"stream_options":` + tc.opts
			}
			body += "}"
			res := s.do(request{path: f.path, body: []byte(body), header: f.header(s.token)})
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			up := s.onlyServed("openai")
			var gotOpts, wantOpts any
			_ = json.Unmarshal(fields(t, up.Body)["stream_options"], &gotOpts)
			_ = json.Unmarshal([]byte(tc.upstream), &wantOpts)
			if fmt.Sprint(gotOpts) != fmt.Sprint(wantOpts) {
				t.Errorf("upstream stream_options %v, want %v", gotOpts, wantOpts)
			}

			_, datas := sseEvents(t, res.body)
			usageChunks := 0
			for _, d := range datas {
				if d == "[DONE]" {
					continue
				}
				var ch struct {
					Choices json.RawMessage `json:"choices"`
					Usage   json.RawMessage `json:"usage"`
				}
				if err := json.Unmarshal([]byte(d), &ch); err != nil {
					t.Fatalf("client chunk is not JSON: %q", d)
				}
				if !tc.clientSees && ch.Usage != nil {
					t.Errorf("client that did not ask for usage got a usage member: %q", d)
				}
				hasUsage := len(ch.Usage) > 0 && string(ch.Usage) != "null"
				empty := strings.TrimSpace(string(ch.Choices)) == "[]"
				if hasUsage || empty {
					usageChunks++
					if !tc.clientSees {
						t.Errorf("client that did not ask for usage got %q", d)
					}
				}
			}
			if tc.clientSees && usageChunks != 1 {
				t.Errorf("client that asked for usage got %d usage chunks, want 1", usageChunks)
			}
			if len(datas) == 0 || datas[len(datas)-1] != "[DONE]" {
				t.Errorf("stream does not end with [DONE]: %q", datas)
			}

			// The client's bytes are the mock's bytes for the upstream body;
			// when the gateway asked for usage on its own, less the usage
			// event and less the "usage":null the request made upstream add
			// to every chunk.
			direct := s.direct(http.MethodPost, "/openai/v1/chat/completions", up.Body, http.Header{"Content-Type": {"application/json"}})
			draws, ddatas := sseEvents(t, direct)
			var expect []byte
			for i, r := range draws {
				if !tc.clientSees {
					if strings.Contains(ddatas[i], `"choices":[]`) {
						continue
					}
					r = bytes.Replace(r, []byte(`,"usage":null`), nil, 1)
				}
				expect = append(expect, r...)
			}
			if !bytes.Equal(res.body, expect) {
				t.Errorf("client stream differs from the upstream stream:\n got %q\nwant %q", res.body, expect)
			}

			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != want || up.Usage != want {
				t.Errorf("record %s estimated=%v tokens %+v; mock billed %+v; want %+v", rec.Status, rec.Estimated, rec.Tokens, up.Usage, want)
			}
		})
	}
}

// TestStreamsByteForByte: streams the gateway has no reason to touch reach
// the client exactly as the provider sent them.
func TestStreamsByteForByte(t *testing.T) {
	s := newStack(t, stackOptions{})
	const prompt = `tell me [[mock reply=alpha beta gamma delta epsilon]] [[mock usage input=21 cached=3 output=9 reasoning=4 tool_prompt=2]]`
	for _, tc := range []struct {
		name, provider, path string
		body                 string
		header               http.Header
	}{
		{
			name: "gemini alt=sse", provider: "gemini",
			path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			body: fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, prompt),
		},
		{
			name: "gemini JSON array", provider: "gemini",
			path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
			body: fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, prompt),
		},
		{
			name: "gemini v1 alt=sse", provider: "gemini",
			path: "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			body: fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, prompt),
		},
		{
			name: "anthropic", provider: "anthropic",
			path:   "/v1/messages",
			body:   fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":%q}]}`, prompt),
			header: http.Header{"Anthropic-Version": {"2023-06-01"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			f := fixture(tc.provider)
			h := f.header(s.token)
			for k, v := range tc.header {
				h[k] = v
			}
			res := s.do(request{path: "/" + tc.provider + tc.path, body: []byte(tc.body), header: h})
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			up := s.onlyServed(tc.provider)
			if !bytes.Equal(up.Body, []byte(tc.body)) {
				t.Errorf("upstream body changed:\n got %s\nwant %s", up.Body, tc.body)
			}
			dh := http.Header{"Content-Type": {"application/json"}}
			for k, v := range tc.header {
				dh[k] = v
			}
			direct := s.direct(http.MethodPost, "/"+tc.provider+tc.path, []byte(tc.body), dh)
			if !bytes.Equal(res.body, direct) {
				t.Errorf("client stream differs from a direct request:\n got %q\nwant %q", res.body, direct)
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != up.Usage {
				t.Errorf("record %s estimated=%v tokens %+v, mock billed %+v", rec.Status, rec.Estimated, rec.Tokens, up.Usage)
			}
		})
	}
}

// TestResponsesKeepReasoning: with store forced off, a Responses request to
// a reasoning model asks for its reasoning items' encrypted content, so a
// client that sends a response's output back as the next input (the loop
// OpenAI documents, which relies on store) still works. Models without
// reasoning refuse that include, and a client that turned store off itself
// chose its own include.
func TestResponsesKeepReasoning(t *testing.T) {
	s := newStack(t, stackOptions{overlay: "models: [{provider: openai, name: house-reasoner, like: gpt-4o-mini, upstream: o4-mini}]\n"})
	f := fixture("openai")
	for _, tc := range []struct {
		name, body string
		want       []string // the upstream include; nil for none
		status     int
	}{
		{"reasoning model", `{"model":"gpt-5-mini","input":"hi"}`, []string{"reasoning.encrypted_content"}, 200},
		{"store true", `{"model":"o4-mini","store":true,"input":"hi"}`, []string{"reasoning.encrypted_content"}, 200},
		{"include kept and extended", `{"model":"gpt-5","include":["file_search_call.results"],"input":"hi"}`,
			[]string{"file_search_call.results", "reasoning.encrypted_content"}, 200},
		{"already asked for", `{"model":"o3","include":["reasoning.encrypted_content"],"input":"hi"}`, []string{"reasoning.encrypted_content"}, 200},
		{"renamed to a reasoning model", `{"model":"house-reasoner","input":"hi"}`, []string{"reasoning.encrypted_content"}, 200},
		{"model without reasoning", `{"model":"gpt-4o-mini","input":"hi"}`, nil, 200},
		{"store off by the client", `{"model":"gpt-5-mini","store":false,"input":"hi"}`, nil, 200},
		{"include not an array", `{"model":"gpt-5-mini","include":"x","input":"hi"}`, nil, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: "/openai/v1/responses", body: []byte(tc.body), header: f.header(s.token)})
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			if tc.status != 200 {
				return
			}
			var got []string
			if raw, ok := fields(t, s.onlyServed("openai").Body)["include"]; ok {
				if err := json.Unmarshal(raw, &got); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("upstream include %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUpstreamModelRename(t *testing.T) {
	const overlay = `
models:
  - {provider: openai, name: house-gpt, like: gpt-4o-mini, upstream: gpt-4o-mini-2024-07-18}
  - {provider: anthropic, name: house-claude, like: claude-sonnet-4-5, upstream: claude-sonnet-4-5-20250929}
  - {provider: gemini, name: house-gemini, like: gemini-2.5-flash, upstream: gemini-2.5-flash-preview-09-2025}
  - {provider: gemini, name: house-embed, kind: embedding, upstream: gemini-embedding-001, price: {input: 0.15, output: 0}, tpm: {free: 100000, personal: 100000, pro: 100000}}
`
	s := newStack(t, stackOptions{overlay: overlay})
	for _, tc := range []struct {
		name, provider, path, body string
		upModel, upPath            string
		// upBody, when set, is the Gemini body upstream must get.
		upBody string
	}{
		{"openai chat", "openai", "/openai/v1/chat/completions",
			`{"model":"house-gpt","messages":[{"role":"user","content":"hi"}]}`, "gpt-4o-mini-2024-07-18", "/v1/chat/completions", ""},
		{"openai chat stream", "openai", "/openai/v1/chat/completions",
			`{"model":"house-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "gpt-4o-mini-2024-07-18", "/v1/chat/completions", ""},
		{"openai responses", "openai", "/openai/v1/responses",
			`{"model":"house-gpt","input":"hi"}`, "gpt-4o-mini-2024-07-18", "/v1/responses", ""},
		{"anthropic", "anthropic", "/anthropic/v1/messages",
			`{"model":"house-claude","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}`, "claude-sonnet-4-5-20250929", "/v1/messages", ""},
		{"gemini", "gemini", "/gemini/v1beta/models/house-gemini:generateContent",
			`{"contents":[{"parts":[{"text":"hi"}]}]}`, "", "/v1beta/models/gemini-2.5-flash-preview-09-2025:generateContent", ""},
		{"gemini stream", "gemini", "/gemini/v1beta/models/house-gemini:streamGenerateContent?alt=sse",
			`{"contents":[{"parts":[{"text":"hi"}]}]}`, "", "/v1beta/models/gemini-2.5-flash-preview-09-2025:streamGenerateContent", ""},
		// The SDKs repeat the model in every embedding request of the body.
		{"gemini batch embeddings", "gemini", "/gemini/v1beta/models/house-embed:batchEmbedContents",
			`{"requests":[{"model":"models/house-embed","content":{"parts":[{"text":"hi"}]}},{"content":{"parts":[{"text":"yo"}]}}]}`, "",
			"/v1beta/models/gemini-embedding-001:batchEmbedContents",
			`{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"hi"}]}},{"content":{"parts":[{"text":"yo"}]}}]}`},
		{"gemini embedding", "gemini", "/gemini/v1beta/models/house-embed:embedContent",
			`{"model":"models/house-embed","content":{"parts":[{"text":"hi"}]}}`, "",
			"/v1beta/models/gemini-embedding-001:embedContent", `{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"hi"}]}}`},
		// countTokens' whole generateContent request, under either of its
		// names, carries the model too.
		{"gemini countTokens", "gemini", "/gemini/v1beta/models/house-gemini:countTokens",
			`{"generateContentRequest":{"model":"models/house-gemini","contents":[{"parts":[{"text":"hi"}]}]}}`, "",
			"/v1beta/models/gemini-2.5-flash-preview-09-2025:countTokens",
			`{"generateContentRequest":{"model":"models/gemini-2.5-flash-preview-09-2025","contents":[{"parts":[{"text":"hi"}]}]}}`},
		{"gemini countTokens, snake_case", "gemini", "/gemini/v1beta/models/house-gemini:countTokens",
			`{"generate_content_request":{"model":"models/house-gemini","contents":[{"parts":[{"text":"hi"}]}]}}`, "",
			"/v1beta/models/gemini-2.5-flash-preview-09-2025:countTokens",
			`{"generate_content_request":{"model":"models/gemini-2.5-flash-preview-09-2025","contents":[{"parts":[{"text":"hi"}]}]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: tc.path, body: []byte(tc.body), header: fixture(tc.provider).header(s.token)})
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			up := s.onlyServed(tc.provider)
			if up.Path != tc.upPath {
				t.Errorf("upstream path %q, want %q", up.Path, tc.upPath)
			}
			if tc.upModel != "" {
				var m string
				_ = json.Unmarshal(fields(t, up.Body)["model"], &m)
				if m != tc.upModel {
					t.Errorf("upstream model %q, want %q", m, tc.upModel)
				}
			} else if want := cmp.Or(tc.upBody, tc.body); string(up.Body) != want {
				t.Errorf("Gemini body upstream:\n%s\nwant\n%s", up.Body, want)
			}
			rec := s.rec.wait(t, res.id)
			if rec.Provider != tc.provider {
				t.Errorf("record provider %q, want %q", rec.Provider, tc.provider)
			}
			if !strings.HasPrefix(rec.Model, "house-") {
				t.Errorf("record model %q, want the served name", rec.Model)
			}
		})
	}
}

// TestAbandonedStream: a client that goes away mid-stream yields one
// record, "abandoned", with usage marked estimated: the provider's partial
// count where it sent one (Anthropic message_start, Gemini running total),
// otherwise the gateway's estimate.
func TestAbandonedStream(t *testing.T) {
	s := newStack(t, stackOptions{mock: mockprovider.Options{ChunkDelay: 20 * time.Millisecond}})
	words := make([]string, 60)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	prompt := "go on [[mock reply=" + strings.Join(words, " ") + "]]"
	for _, tc := range []struct {
		name, provider, path, body string
		partial                    bool // the provider sent a partial count: Input is exact
	}{
		{"openai chat", "openai", "/openai/v1/chat/completions",
			fmt.Sprintf(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":%q}]}`, prompt), false},
		{"openai chat with include_usage", "openai", "/openai/v1/chat/completions",
			fmt.Sprintf(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":%q}]}`, prompt), false},
		{"openai responses", "openai", "/openai/v1/responses",
			fmt.Sprintf(`{"model":"gpt-4o-mini","stream":true,"input":%q}`, prompt), false},
		{"anthropic", "anthropic", "/anthropic/v1/messages",
			fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":500,"stream":true,"messages":[{"role":"user","content":%q}]}`, prompt), true},
		{"gemini sse", "gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, prompt), true},
		{"gemini array", "gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
			fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, prompt), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req := s.newRequest(ctx, request{path: tc.path, body: []byte(tc.body), header: fixture(tc.provider).header(s.token)})
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(res.Body)
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			// Read a few chunks' worth (past the first content), then leave.
			br := bufio.NewReader(res.Body)
			var seen []byte
			for bytes.Count(seen, []byte("w2")) == 0 {
				line, err := br.ReadBytes('\n')
				seen = append(seen, line...)
				if err != nil {
					t.Fatalf("stream ended before the client left: %v: %q", err, seen)
				}
			}
			cancel()
			res.Body.Close()

			rec := s.rec.wait(t, res.Header.Get("x-tollgate-request-id"))
			if rec.Status != usage.StatusAbandoned || !rec.Estimated {
				t.Errorf("record status %q reason %q estimated=%v, want abandoned and estimated", rec.Status, rec.Reason, rec.Estimated)
			}
			if rec.Input <= 0 || rec.Output <= 0 {
				t.Errorf("abandoned stream billed %+v: the provider bills input and the output it generated", rec.Tokens)
			}
			up := waitAborted(t, s, tc.provider)
			if tc.partial && rec.Input != up.Usage.Input {
				t.Errorf("record input %d, want the provider's partial count %d", rec.Input, up.Usage.Input)
			}
			if rec.Output > up.Usage.Output {
				t.Errorf("record output %d is above the full reply's %d", rec.Output, up.Usage.Output)
			}
		})
	}
}

// waitAborted returns the mock's record once it has noticed the client left.
func waitAborted(t *testing.T, s *stack, provider string) mockprovider.Served {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		log := s.served(provider)
		if len(log) == 1 && log[0].Aborted {
			return log[0]
		}
		if time.Now().After(deadline) {
			if len(log) != 1 {
				t.Fatalf("%s mock served %d requests, want 1", provider, len(log))
			}
			t.Errorf("the mock never saw the request aborted: the gateway kept reading upstream after the client left")
			return log[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// effective decodes an upstream body the way the provider's JSON parser
// does: escapes in keys decoded, the last of repeated keys wins.
func effective(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("upstream body is not a JSON object: %v: %s", err, body)
	}
	return m
}

// hasLongTTL reports whether a decoded body asks for the 1h cache anywhere.
func hasLongTTL(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		if cc, ok := v["cache_control"].(map[string]any); ok && cc["ttl"] == "1h" {
			return true
		}
		for _, e := range v {
			if hasLongTTL(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasLongTTL(e) {
				return true
			}
		}
	}
	return false
}

// TestPolicyHoldsForWhatUpstreamParses: the gateway's checks, rewrites and
// billing must apply to the request the provider will act on. A JSON key
// may be spelled with escapes ("mod\u0065l" is "model" to every JSON
// parser) or repeated (the provider takes the last); either way the
// request must be refused, or what upstream decodes must obey the rules
// and match the record.
func TestPolicyHoldsForWhatUpstreamParses(t *testing.T) {
	s := newStack(t, stackOptions{})
	// The account's prompt cache key, from a plain request.
	oa := fixture("openai")
	res := s.do(request{path: oa.path, body: oa.body(oa.model, "hi"), header: oa.header(s.token)})
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	accountKey := effective(t, s.onlyServed("openai").Body)["prompt_cache_key"]

	type check func(t *testing.T, up map[string]any, rec usage.Record)
	modelBilled := func(t *testing.T, up map[string]any, rec usage.Record) {
		if up["model"] != rec.Model {
			t.Errorf("upstream runs model %v but the request is recorded (priced, limited) as %q", up["model"], rec.Model)
		}
	}
	storeOff := func(t *testing.T, up map[string]any, _ usage.Record) {
		if up["store"] != false {
			t.Errorf("upstream store = %v, want false", up["store"])
		}
	}
	cacheKey := func(t *testing.T, up map[string]any, _ usage.Record) {
		if up["prompt_cache_key"] != accountKey {
			t.Errorf("upstream prompt_cache_key = %v, want the account's %v", up["prompt_cache_key"], accountKey)
		}
	}
	notPriority := func(t *testing.T, up map[string]any, _ usage.Record) {
		if tier := up["service_tier"]; tier == "priority" || tier == "fast" || tier == "ultrafast" {
			t.Errorf("upstream service_tier = %v: priority processing reached the provider", tier)
		}
	}
	absent := func(field string) check {
		return func(t *testing.T, up map[string]any, _ usage.Record) {
			if v, ok := up[field]; ok && v != nil && v != false {
				t.Errorf("upstream got %s = %v, which the gateway refuses", field, v)
			}
		}
	}
	noLongTTL := func(t *testing.T, up map[string]any, _ usage.Record) {
		if hasLongTTL(up) {
			t.Error(`upstream got a cache_control with "ttl":"1h", which the gateway refuses`)
		}
	}

	meteredExactly := func(t *testing.T, _ map[string]any, rec usage.Record) {
		if billed := s.onlyServed("openai").Usage; rec.Estimated || rec.Tokens != billed {
			t.Errorf("record %+v estimated=%v, want the provider's exact %+v", rec.Tokens, rec.Estimated, billed)
		}
	}
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name, provider, path, body string
		checks                     []check
	}{
		{"openai model, escaped key", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","mod\u0065l":"gpt-5-pro",` + msgs + `}`, []check{modelBilled}},
		{"openai model, repeated key", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","model":"gpt-5-pro",` + msgs + `}`, []check{modelBilled}},
		{"openai store, escaped key after store false", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","store":false,"stor\u0065":true,` + msgs + `}`, []check{storeOff}},
		{"openai responses store, escaped key", "openai", "/openai/v1/responses",
			`{"model":"gpt-4o-mini","store":false,"stor\u0065":true,"input":"hi"}`, []check{storeOff}},
		{"openai prompt_cache_key, escaped key", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","prompt_cache_key":"x","prompt_cache_ke\u0079":"tg-someone-else",` + msgs + `}`, []check{cacheKey}},
		{"openai stream, escaped key: usage still metered exactly", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","strea\u006d":true,` + msgs + `}`, []check{meteredExactly}},
		{"openai service_tier, escaped key", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","service_tie\u0072":"priority",` + msgs + `}`, []check{notPriority}},
		{"openai service_tier, escaped value", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","service_tier":"priorit\u0079",` + msgs + `}`, []check{notPriority}},
		{"openai previous_response_id, escaped key", "openai", "/openai/v1/responses",
			`{"model":"gpt-4o-mini","previous_response_i\u0064":"resp_abc","input":"hi"}`, []check{absent("previous_response_id")}},
		{"openai background, escaped key", "openai", "/openai/v1/responses",
			`{"model":"gpt-4o-mini","backgroun\u0064":true,"input":"hi"}`, []check{absent("background")}},
		{"anthropic model, escaped key", "anthropic", "/anthropic/v1/messages",
			`{"model":"claude-haiku-4-5","mod\u0065l":"claude-opus-4-5","max_tokens":9,` + msgs + `}`, []check{modelBilled}},
		{"anthropic 1h ttl, escaped key", "anthropic", "/anthropic/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":9,"cache_control":{"type":"ephemeral","tt\u006c":"1h"},` + msgs + `}`, []check{noLongTTL}},
		{"anthropic 1h ttl, escaped value", "anthropic", "/anthropic/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":9,"cache_control":{"type":"ephemeral","ttl":"1\u0068"},` + msgs + `}`, []check{noLongTTL}},
		{"gemini cachedContent, escaped key", "gemini", "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
			`{"cachedConten\u0074":"cachedContents/abc","contents":[{"parts":[{"text":"hi"}]}]}`, []check{absent("cachedContent")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: tc.path, body: []byte(tc.body), header: fixture(tc.provider).header(s.token)})
			rec := s.rec.wait(t, res.id)
			if res.status/100 == 4 {
				if n := len(s.served(tc.provider)); n != 0 || rec.Status != usage.StatusRejected {
					t.Errorf("refused with %d but upstream served %d, record %s", res.status, n, rec.Status)
				}
				return // refused: fine
			}
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			up := effective(t, s.onlyServed(tc.provider).Body)
			for _, c := range tc.checks {
				c(t, up, rec)
			}
		})
	}
}

// TestRequestIDsAreTheGateways: the request id keys the usage record, and
// the ledger keeps the first record of an id ("a retried write never bills
// twice"). A client that picks its x-request-id must not be able to make
// two requests share one record, its own (billed once for many requests)
// or another tenant's (whose record would then be lost).
func TestRequestIDsAreTheGateways(t *testing.T) {
	s := newStack(t, stackOptions{})
	other := s.mint(auth.Claims{Account: "acct-2", Project: "proj-2"})
	f := fixture("openai")
	const chosen = "client-chosen-id-1"
	before := s.rec.ids()
	for _, tok := range []string{s.token, s.token, other} {
		res := s.do(request{path: f.path, body: f.body(f.model, "hi"), header: f.header(tok), requestID: chosen})
		if res.status != http.StatusOK {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
	}
	if n := len(s.served("openai")); n != 3 {
		t.Fatalf("upstream served %d requests, want 3", n)
	}
	// Wait until all three requests are settled, then look at their keys.
	deadline := time.Now().Add(10 * time.Second)
	for {
		total := 0
		for id, n := range s.rec.ids() {
			total += n - before[id]
		}
		if total >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d records after 10s", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for id, n := range s.rec.ids() {
		if n-before[id] > 1 {
			t.Errorf("%d requests share the usage record key %q (client sent x-request-id %q): the ledger keeps one of them", n-before[id], id, chosen)
		}
	}
}

// TestTokenCountingOverTheLimit: the token-count endpoints are how a client
// learns that its input no longer fits (Anthropic's count_tokens answers
// 281k for a 281k prompt), so they count any input; only a request that
// would run the model is refused over the 200k limit.
func TestTokenCountingOverTheLimit(t *testing.T) {
	s := newStack(t, stackOptions{})
	long := manyWords(250_000)
	for _, tc := range []struct {
		name, provider, path, body string
		status                     int
	}{
		{"anthropic count_tokens", "anthropic", "/anthropic/v1/messages/count_tokens",
			fmt.Sprintf(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":%q}]}`, long), http.StatusOK},
		{"anthropic count_tokens, older SDK", "anthropic", "/anthropic/v1/messages/count_tokens?beta=true",
			fmt.Sprintf(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":%q}]}`, long), http.StatusOK},
		{"gemini countTokens", "gemini", "/gemini/v1beta/models/gemini-2.5-flash:countTokens",
			fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, long), http.StatusOK},
		{"anthropic messages", "anthropic", "/anthropic/v1/messages",
			fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":9,"messages":[{"role":"user","content":%q}]}`, long), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: tc.path, body: []byte(tc.body), header: fixture(tc.provider).header(s.token)})
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %.300s", res.status, tc.status, res.body)
			}
			rec := s.rec.wait(t, res.id)
			if tc.status != http.StatusOK {
				if n := len(s.served(tc.provider)); n != 0 || rec.Reason != string(gateway.CodeContextTooLong) {
					t.Errorf("upstream served %d, record %s/%s; want the request refused over the limit", n, rec.Status, rec.Reason)
				}
				return
			}
			if up := s.onlyServed(tc.provider); !bytes.Equal(up.Body, []byte(tc.body)) {
				t.Errorf("upstream body changed")
			}
			if rec.Status != usage.StatusOK || !rec.Tokens.IsZero() {
				t.Errorf("record %s tokens %+v, want ok and nothing billed", rec.Status, rec.Tokens)
			}
		})
	}
}

// TestAnthropicCacheControl: a cache_control is a cache directive wherever
// Anthropic reads one (top level, system, tools, message content blocks,
// the blocks inside a tool_result); there the default and the 5-minute TTL
// pass untouched and "1h" is refused. Inside a tool call's input or a
// tool's input_schema it is the client's own data, which the model reads
// as it is, and a conversation carrying it must not be refused.
func TestAnthropicCacheControl(t *testing.T) {
	s := newStack(t, stackOptions{})
	f := fixture("anthropic")
	const (
		cc5m  = `{"type":"ephemeral","ttl":"5m"}`
		cc    = `{"type":"ephemeral"}`
		cc1h  = `{"type":"ephemeral","ttl":"1h"}`
		user  = `{"role":"user","content":"hi"}`
		start = `{"model":"claude-sonnet-4-5","max_tokens":9,`
	)
	// A tool call whose input holds a cache_control, and the result of it.
	toolTurn := func(input, blockCC string) string {
		call := `{"type":"tool_use","id":"toolu_1","name":"http_request","input":` + input
		if blockCC != "" {
			call += `,"cache_control":` + blockCC
		}
		return `{"role":"assistant","content":[` + call + `}]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"200 OK"}]}`
	}
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"5m top level", start + `"cache_control":` + cc5m + `,"messages":[` + user + `]}`, 200},
		{"default top level", start + `"cache_control":` + cc + `,"messages":[` + user + `]}`, 200},
		{"5m system", start + `"system":[{"type":"text","text":"s","cache_control":` + cc5m + `}],"messages":[` + user + `]}`, 200},
		{"5m tool", start + `"tools":[{"name":"t","input_schema":{"type":"object"},"cache_control":` + cc5m + `}],"messages":[` + user + `]}`, 200},
		{"5m nested in tool_result", start + `"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[{"type":"text","text":"r","cache_control":` + cc5m + `}]}]}]}`, 200},
		{"5m on a tool_use block", start + `"messages":[` + user + `,` + toolTurn(`{"url":"https://example.com"}`, cc5m) + `]}`, 200},
		{"thinking", start + `"thinking":{"type":"enabled","budget_tokens":1024},"cache_control":` + cc + `,"messages":[` + user + `]}`, 200},
		{"1h in a tool call's input", start + `"messages":[` + user + `,` + toolTurn(`{"url":"https://api.example.com/v1/messages","body":{"cache_control":`+cc1h+`}}`, "") + `]}`, 200},
		{"1h in a server tool call's input", start + `"messages":[` + user + `,{"role":"assistant","content":[{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"cache_control":` + cc1h + `}}]}]}`, 200},
		{"1h in a tool's input_schema", start + `"tools":[{"name":"t","input_schema":{"type":"object","examples":[{"cache_control":` + cc1h + `}]}}],"messages":[` + user + `]}`, 200},
		{"1h nested in tool_result", start + `"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[{"type":"text","text":"r","cache_control":` + cc1h + `}]}]}]}`, 400},
		{"1h on a tool_use block", start + `"messages":[` + user + `,` + toolTurn(`{"url":"https://example.com"}`, cc1h) + `]}`, 400},
		{"1h beside input on a text block", start + `"messages":[{"role":"user","content":[{"type":"text","text":"t","input":{},"cache_control":` + cc1h + `}]}]}`, 400},
		{"1h in input of a block that is not a tool call", start + `"messages":[{"role":"user","content":[{"type":"text","text":"t","input":{"cache_control":` + cc1h + `}}]}]}`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			s.mock.Reset()
			res := s.do(request{path: f.path, body: []byte(tc.body), header: f.header(s.token)})
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			if tc.status != http.StatusOK {
				if n := len(s.served("anthropic")); n != 0 {
					t.Errorf("refused, but upstream served %d requests", n)
				}
				return
			}
			if up := s.onlyServed("anthropic"); !bytes.Equal(up.Body, []byte(tc.body)) {
				t.Errorf("upstream body changed:\n got %s\nwant %s", up.Body, tc.body)
			}
		})
	}
}
