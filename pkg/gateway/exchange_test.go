package gateway

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCredential(t *testing.T) {
	const tok = "tg1.payload.signature"
	for _, c := range []struct {
		name  string
		h     Headers
		query string
		want  string
	}{
		{"bearer", Headers{{"Authorization", "Bearer " + tok}}, "", tok},
		{"bearer in any case, padded", Headers{{"authorization", "bearer  " + tok + " "}}, "", tok},
		{"x-api-key", Headers{{"X-Api-Key", tok}}, "", tok},
		{"x-goog-api-key", Headers{{"x-goog-api-key", tok}}, "", tok},
		{"key query parameter", nil, "alt=sse&key=" + tok, tok},
		{"none", Headers{{"content-type", "application/json"}}, "alt=sse", ""},
		{"not a bearer scheme", Headers{{"Authorization", "Basic " + tok}}, "", ""},
		// An SDK given the gateway token and a token of the user's own sends both.
		{"gateway token in x-api-key beside another bearer", Headers{{"Authorization", "Bearer sk-ant-own"}, {"x-api-key", tok}}, "", tok},
		{"gateway token in ?key= beside another header", Headers{{"x-goog-api-key", "AIza-own"}}, "key=" + tok, tok},
		{"no gateway token: the first is checked", Headers{{"x-api-key", "junk-1"}, {"x-goog-api-key", "junk-2"}}, "", "junk-1"},
		{"two gateway tokens: the first", Headers{{"Authorization", "Bearer tg1.a.b"}, {"x-api-key", tok}}, "", "tg1.a.b"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := credential(c.h, c.query); got != c.want {
				t.Errorf("credential = %q, want %q", got, c.want)
			}
		})
	}
}

func TestRecordedModel(t *testing.T) {
	long := strings.Repeat("m", maxModelName+10)
	runes := strings.Repeat("é", maxModelName) // two bytes each
	for _, c := range []struct{ in, want string }{
		{"gpt-4o-mini", "gpt-4o-mini"},
		{long, long[:maxModelName]},
		{runes, runes[:maxModelName]}, // an even cut is a rune boundary
		{"x" + runes, "x" + runes[:maxModelName-2]},
	} {
		got := recordedModel(c.in)
		if got != c.want || !utf8.ValidString(got) || len(got) > maxModelName {
			t.Errorf("recordedModel(%d bytes) = %d bytes %q…, want %d bytes", len(c.in), len(got), got[:min(len(got), 8)], len(c.want))
		}
	}
}

// TestDropResponseHeader: the headers that describe the operator's shared
// provider account (its ids, its limits and their use across every tenant)
// stay behind, in any letter case; the rest pass.
func TestDropResponseHeader(t *testing.T) {
	for _, c := range []struct {
		name string
		drop bool
	}{
		{"Openai-Organization", true},
		{"openai-project", true},
		{"x-ratelimit-remaining-project-tokens", true},
		{"Anthropic-Organization-Id", true},
		{"anthropic-workspace-id", true},
		{"anthropic-ratelimit-input-tokens-remaining", true},
		// Anthropic's Priority Tier commitment, on service_tier auto:
		// docs.anthropic.com/en/api/service-tiers
		{"anthropic-priority-input-tokens-limit", true},
		{"Anthropic-Priority-Output-Tokens-Remaining", true},
		{"anthropic-priority-output-tokens-reset", true},
		{"anthropic-fast-output-tokens-remaining", true},
		{"Set-Cookie", true},
		{"content-type", false},
		{"request-id", false},
		{"x-request-id", false},
		{"openai-processing-ms", false},
		{"retry-after", false},
		{"server-timing", false},
		{"anthropic-priority", false}, // not the family's prefix
	} {
		if got := dropResponseHeader(c.name); got != c.drop {
			t.Errorf("dropResponseHeader(%q) = %v, want %v", c.name, got, c.drop)
		}
	}
}

func TestResponseHeadersDropHopByHop(t *testing.T) {
	x := &Exchange{id: "req-1"}
	out := x.ResponseHeaders(200, Headers{
		{"Content-Type", "application/json"},
		{"Connection", "keep-alive, X-Hop ,x-other"},
		{"x-hop", "1"},
		{"X-Other", "2"},
		{"Keep-Alive", "timeout=5"},
		{"X-Kept", "3"},
		{"Openai-Organization", "org-operator"},
	})
	var got []string
	for _, h := range out {
		got = append(got, h.Name+"="+h.Value)
	}
	want := []string{"Content-Type=application/json", "X-Kept=3", "x-tollgate-request-id=req-1"}
	if !slices.Equal(got, want) {
		t.Errorf("headers to the client %q, want %q", got, want)
	}
}
