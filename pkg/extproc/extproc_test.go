package extproc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// checkUpstream asserts that the forwarded request carries the gateway's
// headers only: the real key, no client credential or SDK header.
func checkUpstream(t *testing.T, res result, token string) {
	t.Helper()
	for _, h := range res.upHeader {
		if strings.Contains(h.value, token) {
			t.Errorf("upstream header %s carries the gateway token", h.name)
		}
		if slices.Contains(clientHeaders, h) && h.name != "content-type" {
			t.Errorf("client header %s: %s reached upstream", h.name, h.value)
		}
	}
	if p, _ := res.upHeader.get(":path"); strings.Contains(p, token) || strings.HasPrefix(p, "/openai") ||
		strings.HasPrefix(p, "/anthropic") || strings.HasPrefix(p, "/gemini") {
		t.Errorf("upstream :path %q", p)
	}
	for name, want := range map[string]string{"accept-encoding": "identity", "user-agent": "tollgate/1", ":authority": "127.0.0.1:15080"} {
		if got := res.upHeader.values(name); len(got) != 1 || got[0] != want {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}
	if v, ok := res.upHeader.get("x-envoy-internal"); ok {
		t.Errorf("x-envoy-internal = %q reached upstream: a client's x-envoy-* headers are removed like any other", v)
	}
}

func served(e *env, provider string) []mockprovider.Served {
	switch provider {
	case "openai":
		return e.mock.OpenAI.Served()
	case "anthropic":
		return e.mock.Anthropic.Served()
	}
	return e.mock.Gemini.Served()
}

func onlyServed(t *testing.T, e *env, provider string) mockprovider.Served {
	t.Helper()
	log := served(e, provider)
	if len(log) != 1 {
		t.Fatalf("%s mock served %d requests, want 1", provider, len(log))
	}
	return log[0]
}

// TestForward: plain and streamed requests of each provider reach the mock
// with the real key, the client gets the mock's answer, and the record
// holds the mock's ground-truth usage.
func TestForward(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, f := range fixtures {
		for _, stream := range []bool{false, true} {
			name := f.provider
			if stream {
				name += "/stream"
			}
			t.Run(name, func(t *testing.T) {
				e.t = t
				e.mock.Reset()
				x := f.request(e.stack.Token, "Tell me a joke.", stream)
				x.chunk = 7 // splits every SSE event across chunks
				res := e.run(x)
				if res.immediate != nil {
					t.Fatalf("immediate response %d: %s", res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
				}
				if res.status != 200 {
					t.Fatalf("status %d: %s", res.status, res.body)
				}
				checkUpstream(t, res, e.stack.Token)
				srv := onlyServed(t, e, f.provider)
				if srv.Stream != stream {
					t.Errorf("mock streamed %t, want %t", srv.Stream, stream)
				}
				if stream {
					if res.override == nil {
						t.Error("no mode_override for a streamed response")
					}
					if res.chunkReplies < 10 {
						t.Errorf("%d chunk replies for a stream cut into 7-byte chunks", res.chunkReplies)
					}
					if res.mutated != 0 {
						t.Errorf("%d chunks rewritten; the client asked for everything the provider sent", res.mutated)
					}
				} else {
					if res.override != nil {
						t.Errorf("mode_override %v for a whole JSON response", res.override)
					}
					if !json.Valid(res.body) {
						t.Errorf("body is not JSON: %.200s", res.body)
					}
				}
				e.streams.wait(t)
				rec := e.stack.Recorder.Wait(t, res.id)
				if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != srv.Usage {
					t.Errorf("record %+v, want ok with %+v", rec, srv.Usage)
				}
				if n := e.stack.Recorder.Counts()[res.id]; n != 1 {
					t.Errorf("%d records for %s", n, res.id)
				}
				if rec.Account != "acct-1" || rec.Provider != f.provider || rec.Stream != stream {
					t.Errorf("record %+v", rec)
				}
			})
		}
	}
}

// TestUpstreamPath: the processor leaves :path alone when the route's
// prefix_rewrite gives the upstream path, and otherwise edits it keeping
// the prefix; either way the mock gets the prefix-less upstream path.
func TestUpstreamPath(t *testing.T) {
	e := newEnv(t, envOptions{})
	gemini := fixtures[2]
	for _, tc := range []struct {
		name      string
		x         exchange
		wantSet   string // "": no :path mutation
		wantPath  string
		wantQuery string
	}{
		{"openai", fixtures[0].request(e.stack.Token, "hi", false), "", "/v1/chat/completions", ""},
		{"gemini header key", gemini.request(e.stack.Token, "hi", true), "",
			"/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse"},
		{"gemini query key", exchange{
			path:   "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=" + e.stack.Token,
			header: headerList{{"content-type", "application/json"}},
			body:   gemini.body("hi", true),
		}, "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			"/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse"},
		// Google reads $key as the API key too: it goes like key.
		{"gemini query $key", exchange{
			path:   "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&%24key=" + e.stack.Token,
			header: headerList{{"content-type", "application/json"}, {"x-goog-api-key", e.stack.Token}},
			body:   gemini.body("hi", true),
		}, "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			"/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			e.mock.Reset()
			res := e.run(tc.x)
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			if res.setPath != tc.wantSet {
				t.Errorf("the processor set :path %q, want %q", res.setPath, tc.wantSet)
			}
			provider, _, _ := strings.Cut(tc.x.path[1:], "/")
			if srv := onlyServed(t, e, provider); srv.Path != tc.wantPath || srv.RawQuery != tc.wantQuery {
				t.Errorf("the mock got %s?%s, want %s?%s", srv.Path, srv.RawQuery, tc.wantPath, tc.wantQuery)
			}
		})
	}
}

// TestResponseHeaders: what the provider says about the operator's shared
// account stays behind, the gateway's request id is added.
func TestResponseHeaders(t *testing.T) {
	e := newEnv(t, envOptions{})
	res := e.run(fixtures[0].request(e.stack.Token, "hi", false))
	if res.status != 200 {
		t.Fatalf("status %d", res.status)
	}
	if v, ok := res.header.get("openai-organization"); ok {
		t.Errorf("openai-organization %q reached the client", v)
	}
	if v, _ := res.header.get("openai-processing-ms"); v != "42" {
		t.Errorf("openai-processing-ms = %q, want the provider's", v)
	}
	if got := res.header.values("x-tollgate-request-id"); len(got) != 1 || !strings.HasPrefix(got[0], "tg-") {
		t.Errorf("x-tollgate-request-id = %q", got)
	}
	if v, _ := res.header.get(":status"); v != "200" {
		t.Errorf(":status = %q", v)
	}
}

// TestHiddenUsage: an OpenAI stream that did not ask for usage is asked for
// it upstream; the usage chunk and the usage fields it causes never reach
// the client, whatever the chunking, and the client's bytes do not depend
// on the chunking.
func TestHiddenUsage(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[mock reply=one two three four five six seven]]"}]}`)
	var first []byte
	for _, size := range []int{1, 5, 64, 1 << 16} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			e.t = t
			e.mock.Reset()
			x := fixtures[0].request(e.stack.Token, "", true)
			x.body, x.chunk = body, size
			res := e.run(x)
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			srv := onlyServed(t, e, "openai")
			if !strings.Contains(string(srv.Body), `"include_usage":true`) {
				t.Errorf("upstream body %s does not ask for usage", srv.Body)
			}
			if bytes.Contains(res.body, []byte(`"usage"`)) {
				t.Errorf("the client sees usage it did not ask for:\n%s", res.body)
			}
			if !bytes.HasSuffix(res.body, []byte("data: [DONE]\n\n")) || res.mutated == 0 {
				t.Errorf("%d chunks rewritten; body ends %q", res.mutated, res.body[max(0, len(res.body)-40):])
			}
			if first == nil {
				first = res.body
			} else if !bytes.Equal(first, res.body) {
				t.Errorf("the client's bytes depend on the chunking:\n%s\nvs\n%s", first, res.body)
			}
			e.streams.wait(t)
			rec := e.stack.Recorder.Wait(t, res.id)
			if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != srv.Usage {
				t.Errorf("record %+v, want ok with %+v", rec, srv.Usage)
			}
		})
	}
}

// TestRejections: refusals are immediate responses in each provider's own
// error shape, with nothing sent upstream and one rejected record.
// TestRevokedAfterUse: a token revoked after the verifier cached it is
// refused from the next request on, in every place it is accepted, and
// nothing reaches the provider.
func TestRevokedAfterUse(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, c := range []struct {
		name string
		x    func(tok string) exchange
	}{
		{"bearer", func(tok string) exchange { return fixtures[0].request(tok, "hi", false) }},
		{"x-api-key", func(tok string) exchange { return fixtures[1].request(tok, "hi", false) }},
		{"x-goog-api-key", func(tok string) exchange { return fixtures[2].request(tok, "hi", false) }},
		{"key parameter", func(tok string) exchange {
			return exchange{path: fixtures[2].path + "?key=" + tok, header: headerList{{"content-type", "application/json"}}, body: fixtures[2].body("hi", false)}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			id := "revoked-" + strings.ReplaceAll(c.name, " ", "-")
			tok := e.stack.Mint(t, auth.Claims{Account: "acct-1", Project: "proj-1", TokenID: id})
			if res := e.run(c.x(tok)); res.status != 200 {
				t.Fatalf("before the revocation: status %d %s", res.status, res.body)
			}
			e.stack.Revoked.Add(id)
			e.mock.Reset()
			res := e.run(c.x(tok))
			if res.immediate == nil || res.upCalled {
				t.Fatalf("a revoked token went upstream (status %d)", res.status)
			}
			if body := string(res.immediate.GetBody()); !strings.Contains(body, "revoked") || strings.Contains(body, tok) {
				t.Errorf("refusal %s: want the revocation named, never the token", body)
			}
		})
	}
}

func TestRejections(t *testing.T) {
	e := newEnv(t, envOptions{})
	type shape func(t *testing.T, body []byte)
	openaiShape := func(code string) shape {
		return func(t *testing.T, body []byte) {
			var v struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(body, &v); err != nil || v.Error.Message == "" || v.Error.Code != code {
				t.Errorf("not OpenAI's error with code %q: %s", code, body)
			}
		}
	}
	anthropicShape := func(typ string) shape {
		return func(t *testing.T, body []byte) {
			var v struct {
				Type  string
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(body, &v); err != nil || v.Type != "error" || v.Error.Type != typ {
				t.Errorf("not Anthropic's %q error: %s", typ, body)
			}
		}
	}
	geminiShape := func(code int, status string) shape {
		return func(t *testing.T, body []byte) {
			var v struct {
				Error struct {
					Code    int
					Status  string
					Message string
				}
			}
			if err := json.Unmarshal(body, &v); err != nil || v.Error.Code != code || v.Error.Status != status {
				t.Errorf("not Gemini's %d %s error: %s", code, status, body)
			}
		}
	}
	cases := []struct {
		name   string
		x      exchange
		status int32
		shape  shape
	}{
		{"openai/no token", exchange{path: "/openai/v1/chat/completions", header: clientHeaders, body: fixtures[0].body("hi", false)},
			401, openaiShape("invalid_api_key")},
		{"anthropic/bad token", exchange{path: "/anthropic/v1/messages", header: fixtures[1].auth("not-a-token"), body: fixtures[1].body("hi", false)},
			401, anthropicShape("authentication_error")},
		{"gemini/bad token", exchange{path: "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=nope", body: fixtures[2].body("hi", false)},
			400, geminiShape(400, "INVALID_ARGUMENT")},
		{"openai/unknown model", exchange{path: "/openai/v1/chat/completions", header: fixtures[0].auth(e.stack.Token),
			body: []byte(`{"model":"gpt-0","messages":[]}`)}, 404, openaiShape("model_not_found")},
		{"anthropic/not json", exchange{path: "/anthropic/v1/messages", header: fixtures[1].auth(e.stack.Token), body: []byte(`{"model":`)},
			400, anthropicShape("invalid_request_error")},
		{"gemini/unknown model", exchange{path: "/gemini/v1beta/models/gemini-0:generateContent", header: fixtures[2].auth(e.stack.Token),
			body: fixtures[2].body("hi", false)}, 404, geminiShape(404, "NOT_FOUND")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.mock.Reset()
			res := e.run(c.x)
			im := res.immediate
			if im == nil {
				t.Fatalf("no immediate response; upstream called: %t", res.upCalled)
			}
			if got := int32(im.GetStatus().GetCode()); got != c.status {
				t.Errorf("status %d, want %d", got, c.status)
			}
			if ct := immediateHeader(im, "content-type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			c.shape(t, im.GetBody())
			if n := len(served(e, strings.Split(c.name, "/")[0])); n != 0 {
				t.Errorf("%d requests reached the provider", n)
			}
			e.streams.wait(t)
			rec := e.stack.Recorder.Wait(t, res.id)
			if rec.Status != usage.StatusRejected || rec.HTTPStatus != int(c.status) {
				t.Errorf("record %+v", rec)
			}
			if n := e.stack.Recorder.Counts()[res.id]; n != 1 {
				t.Errorf("%d records", n)
			}
		})
	}
}

// TestLocalRoute: the catalog routes are answered by the gateway itself.
func TestLocalRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	res := e.run(exchange{method: "GET", path: "/openai/v1/models", header: fixtures[0].auth(e.stack.Token)})
	if res.immediate == nil || res.immediate.GetStatus().GetCode() != 200 {
		t.Fatalf("immediate %v", res.immediate)
	}
	if !bytes.Contains(res.immediate.GetBody(), []byte(`"gpt-4o-mini"`)) || len(served(e, "openai")) != 0 {
		t.Errorf("model list %.200s", res.immediate.GetBody())
	}
}

// TestBodySizes: a 10 MiB request (a base64 image) goes through in one
// buffered message; one over the configured cap gets the provider's 413.
func TestBodySizes(t *testing.T) {
	const limit = 12 << 20
	e := newEnv(t, envOptions{maxBody: limit})
	image := func(n int) []byte {
		raw := make([]byte, n*3/4)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		return fmt.Appendf(nil, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},`+
			`{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}}]}]}`, base64.StdEncoding.EncodeToString(raw))
	}
	x := fixtures[0].request(e.stack.Token, "", false)
	x.body = image(10 << 20)
	res := e.run(x)
	if res.status != 200 {
		t.Fatalf("10 MiB: status %d, immediate %v", res.status, res.immediate.GetStatus())
	}
	if srv := onlyServed(t, e, "openai"); len(srv.Body) < 10<<20 {
		t.Errorf("upstream got %d bytes", len(srv.Body))
	}
	e.mock.Reset()
	x.body = image(limit + 1024)
	res = e.run(x)
	if res.immediate.GetStatus().GetCode() != 413 || !bytes.Contains(res.immediate.GetBody(), []byte(`"body_too_large"`)) {
		t.Errorf("over the cap: %v %s", res.immediate.GetStatus(), res.immediate.GetBody())
	}
	if len(served(e, "openai")) != 0 {
		t.Error("an oversized request reached the provider")
	}
}

// TestSettle: the one usage record is written however the stream ends:
// response end, Envoy's reset or graceful close mid-stream (client gone or
// upstream reset: Envoy reports both alike), before the response began,
// after a refusal, and when the stream fails.
func TestSettle(t *testing.T) {
	long := `[[mock reply=` + strings.Repeat("word ", 200) + `]]`
	cases := []struct {
		name     string
		cutAfter int
		cutHow   cut
		stream   bool
		token    bool
		status   usage.Status
		reason   string
		tokens   bool // the record carries an estimate or the provider's count
	}{
		{"completed", 0, noCut, true, true, usage.StatusOK, "", true},
		{"reset mid-stream", 3, resetCut, true, true, usage.StatusAbandoned, "client_gone", true},
		{"closed mid-stream", 3, closeCut, true, true, usage.StatusAbandoned, "client_gone", true},
		{"reset before the response", -1, resetCut, false, true, usage.StatusAbandoned, "client_gone", true},
		{"closed before the response", -1, closeCut, false, true, usage.StatusAbandoned, "client_gone", true},
		{"refused, then reset", -1, resetCut, false, false, usage.StatusRejected, "invalid_token", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			tok := e.stack.Token
			if !c.token {
				tok = "bogus"
			}
			x := fixtures[0].request(tok, long, c.stream)
			x.cutAfter, x.cutHow, x.chunk = c.cutAfter, c.cutHow, 16
			e.run(x)
			e.streams.wait(t)
			recs := e.stack.Recorder.All()
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1: %+v", len(recs), recs)
			}
			rec := recs[0]
			if rec.Status != c.status || rec.Reason != c.reason {
				t.Errorf("record %s/%s, want %s/%s", rec.Status, rec.Reason, c.status, c.reason)
			}
			if billed := rec.Input > 0; billed != c.tokens {
				t.Errorf("record %+v: billed %t, want %t", rec, billed, c.tokens)
			}
		})
	}
	t.Run("stream failed", func(t *testing.T) {
		// A message over the gRPC limit fails the stream (Envoy answers
		// 500): the request is settled as failed.
		e := newEnv(t, envOptions{maxBody: 1 << 20})
		stream, err := e.client.Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		h := append(headerList{{":method", "POST"}, {":path", "/openai/v1/chat/completions"}}, fixtures[0].auth(e.stack.Token)...)
		e.exchangeMsg(stream, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: h.headerMap()}}})
		huge := make([]byte, 34<<20)
		_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: huge, EndOfStream: true}}})
		if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("recv after an oversized message: %v", err)
		}
		e.streams.wait(t)
		recs := e.stack.Recorder.All()
		if len(recs) != 1 || recs[0].Status != usage.StatusError {
			t.Errorf("records %+v, want one error", recs)
		}
	})
}

// TestSettleAfterFinalEvent: the SDKs stop reading a stream at its own
// final event and close, and Envoy then reports the client gone before the
// empty end_of_stream chunk reaches the processor. A stream whose final
// event (OpenAI [DONE], Anthropic message_stop) has passed is complete;
// Gemini's streams have no such event, and the same close leaves them
// abandoned.
func TestSettleAfterFinalEvent(t *testing.T) {
	want := map[string]usage.Status{"openai": usage.StatusOK, "anthropic": usage.StatusOK, "gemini": usage.StatusAbandoned}
	for _, f := range fixtures {
		for name, how := range map[string]cut{"reset": resetCut, "closed": closeCut} {
			t.Run(f.provider+"/"+name, func(t *testing.T) {
				e := newEnv(t, envOptions{})
				x := f.request(e.stack.Token, "a joke", true)
				x.cutAfter, x.cutHow, x.chunk = cutAtEnd, how, 16
				res := e.run(x)
				e.streams.wait(t)
				recs := e.stack.Recorder.All()
				if len(recs) != 1 {
					t.Fatalf("%d records, want 1: %+v", len(recs), recs)
				}
				if rec := recs[0]; rec.Status != want[f.provider] || rec.Input == 0 {
					t.Errorf("record %+v after %d chunks, want %s with usage", rec, res.chunkReplies, want[f.provider])
				}
			})
		}
	}
}

// TestUnixSocket: the processor serves Envoy's unix-socket cluster too.
func TestUnixSocket(t *testing.T) {
	e := newEnv(t, envOptions{socket: true})
	for _, f := range fixtures {
		res := e.run(f.request(e.stack.Token, "hi", true))
		if res.status != 200 || res.chunkReplies == 0 {
			t.Errorf("%s over a unix socket: status %d, %d chunks", f.provider, res.status, res.chunkReplies)
		}
		checkUpstream(t, res, e.stack.Token)
	}
}
