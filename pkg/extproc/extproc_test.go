package extproc_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

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
		if slices.Contains(clientHeaders, h) && h.name != "content-type" && !strings.HasPrefix(h.name, "x-envoy") {
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
	if v, _ := res.upHeader.get("x-envoy-internal"); v != "true" {
		t.Errorf("x-envoy-internal = %q: Envoy's own headers are not the processor's to remove", v)
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
