package replay

import (
	"strings"
	"testing"
)

// TestParseVariants reads one small cassette of every shape the source
// repositories write (see the package comment), so that a new recording in
// any of them loads instead of failing the whole corpus.
func TestParseVariants(t *testing.T) {
	type want struct {
		format  Format
		method  string
		path    string
		query   string
		status  int
		reqBody string
		body    string
	}
	cases := []struct {
		name, yaml string
		want       []want
	}{{
		name: "vcrpy: string request, body.string response, status mapping",
		yaml: `interactions:
- request:
    body: '{"model":"gpt-4o"}'
    headers: {Content-Type: [application/json]}
    method: POST
    uri: https://api.openai.com/v1/chat/completions
  response:
    body: {string: '{"id":"x"}'}
    headers: {Content-Type: [application/json]}
    status: {code: 200, message: OK}
version: 1
`,
		want: []want{{FormatVCRPy, "POST", "/v1/chat/completions", "", 200, `{"model":"gpt-4o"}`, `{"id":"x"}`}},
	}, {
		name: "vcrpy: null request body, !!binary response, aiohttp mapping request body",
		yaml: `interactions:
- request:
    body: null
    method: GET
    uri: https://api.openai.com/v1/models
  response:
    body: {string: !!binary "eyJkYXRhIjpbXX0="}
    status: {code: 200, message: OK}
- request:
    body: {model: gpt-4o, stream: false}
    method: POST
    uri: https://api.openai.com/v1/chat/completions
  response:
    body: {string: ''}
    status: {code: 500, message: Internal Server Error}
version: 1
`,
		want: []want{
			{FormatVCRPy, "GET", "/v1/models", "", 200, "", `{"data":[]}`},
			{FormatVCRPy, "POST", "/v1/chat/completions", "", 500, `{"model":"gpt-4o","stream":false}`, ""},
		},
	}, {
		name: "pydantic-ai serializer: parsed_body both ways",
		yaml: `interactions:
- request:
    method: POST
    parsed_body: {model: claude-sonnet-4-5, max_tokens: 10}
    uri: https://api.anthropic.com/v1/messages?beta=true
  response:
    parsed_body: {usage: {input_tokens: 3}}
    status: {code: 200, message: OK}
version: 1
`,
		want: []want{{FormatPydantic, "POST", "/v1/messages", "beta=true", 200,
			`{"max_tokens":10,"model":"claude-sonnet-4-5"}`, `{"usage":{"input_tokens":3}}`}},
	}, {
		name: "cassetter: typed json/text/binary/none bodies, integer status, no version",
		yaml: `interactions:
- request:
    method: POST
    uri: https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse
    body:
      type: json
      content:
        contents: [{parts: [{text: hi}]}]
  response:
    status: 200
    headers: {content-type: [text/event-stream]}
    body:
      type: text
      content: |+
        data: {"a":1}

  recorded_at: 2026-03-06T19:26:02.829948+00:00
- request:
    method: POST
    uri: https://api.openai.com/v1/embeddings
    body: {type: json, content: "a JSON string"}
  response:
    status: 404
    body: {type: binary, content: 7b7d}
- request:
    method: GET
    uri: https://api.anthropic.com/v1/models
    body: {type: none}
  response:
    status: 200
    body: {type: json, content: [1, 2.5, true, null]}
`,
		want: []want{
			{FormatCassetter, "POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse", 200,
				`{"contents":[{"parts":[{"text":"hi"}]}]}`, "data: {\"a\":1}\n\n"},
			{FormatCassetter, "POST", "/v1/embeddings", "", 404, `"a JSON string"`, `{}`},
			{FormatCassetter, "GET", "/v1/models", "", 200, "", `[1,2.5,true,null]`},
		},
	}, {
		name: "go-vcr v2 and a v1-style status line",
		yaml: `version: 2
interactions:
- request:
    body: '{"model":"gpt-5-nano"}'
    url: https://api.openai.com/v1/chat/completions
    method: POST
  response:
    body: '{"ok":true}'
    code: 200
    duration: 1ms
- request:
    body: ""
    url: https://api.openai.com/v1/models/gpt-4o
    method: GET
  response:
    body: '{}'
    status: 404 Not Found
`,
		want: []want{
			{FormatGoVCR, "POST", "/v1/chat/completions", "", 200, `{"model":"gpt-5-nano"}`, `{"ok":true}`},
			{FormatGoVCR, "GET", "/v1/models/gpt-4o", "", 404, "", `{}`},
		},
	}, {
		// pydantic-ai's Google recordings may store the method lower case;
		// on the wire it was upper case.
		name: "lower-case methods, vcrpy and go-vcr",
		yaml: `interactions:
- request:
    method: post
    uri: https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:countTokens
    body: {type: json, content: {contents: []}}
  response:
    status: 200
    body: {type: json, content: {totalTokens: 1}}
- request:
    body: '{"model":"gpt-5-nano"}'
    url: https://api.openai.com/v1/chat/completions
    method: Post
  response:
    body: '{}'
    code: 200
`,
		want: []want{
			{FormatCassetter, "POST", "/v1beta/models/gemini-2.5-flash:countTokens", "", 200, `{"contents":[]}`, `{"totalTokens":1}`},
			{FormatGoVCR, "POST", "/v1/chat/completions", "", 200, `{"model":"gpt-5-nano"}`, `{}`},
		},
	}, {
		name: "cassetter gRPC-only file: no HTTP interaction",
		yaml: `version: 1
grpc_interactions:
- request: {method: /xai_api.Chat/GetCompletion, body: {type: binary, content: "00"}}
  response: {status_code: 0, body: {type: binary, content: "00"}}
`,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			its, err := Parse("x.yaml", []byte(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if len(its) != len(c.want) {
				t.Fatalf("%d interactions, want %d", len(its), len(c.want))
			}
			for i, w := range c.want {
				it := its[i]
				got := want{it.Format, it.Method, it.Path, it.RawQuery, it.Status, string(it.RequestBody), string(it.Body)}
				if got != w {
					t.Errorf("interaction %d:\n got %+v\nwant %+v", i, got, w)
				}
			}
		})
	}
}

// TestParseRejects keeps real corruption an error: a file that is not a
// cassette must not load as an empty one.
func TestParseRejects(t *testing.T) {
	for _, y := range []string{
		"version: 1\n",                   // no interactions at all
		"version: 3\ninteractions: []\n", // a format not known
		"interactions:\n- request: {method: POST}\n  response: {status: 200}\n", // no URL
		"interactions:\n- request: {method: POST, uri: 'https://api.openai.com/v1/x'}\n  response: {status: OK}\n",
	} {
		if _, err := Parse("x.yaml", []byte(y)); err == nil {
			t.Errorf("%q: loaded without error", strings.TrimSpace(y))
		}
	}
}
