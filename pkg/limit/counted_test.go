package limit

import (
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

func TestCounted(t *testing.T) {
	all := usage.Tokens{Input: 1000, CachedInput: 200, CacheWrite: 30, Output: 4, Reasoning: 2}
	for _, tc := range []struct {
		provider string
		t        usage.Tokens
		want     int64
	}{
		// Anthropic: cache reads are free of the limit, cache writes count.
		{"anthropic", all, 1000 + 30 + 4},
		{"anthropic", usage.Tokens{CachedInput: 5000}, 0},
		{"anthropic", usage.Tokens{CacheWrite: 7}, 7},
		// OpenAI and Gemini: every input token counts, cached or not.
		{"openai", all, 1000 + 200 + 30 + 4},
		{"openai", usage.Tokens{CachedInput: 5000}, 5000},
		{"gemini", all, 1000 + 200 + 30 + 4},
		{"gemini", usage.Tokens{Output: 9}, 9},
		// Reasoning is part of Output, never counted twice.
		{"openai", usage.Tokens{Output: 10, Reasoning: 8}, 10},
		{"anthropic", usage.Tokens{Output: 10, Reasoning: 8}, 10},
		{"openai", usage.Tokens{}, 0},
	} {
		if got := Counted(tc.provider, tc.t); got != tc.want {
			t.Errorf("Counted(%s, %+v) = %d, want %d", tc.provider, tc.t, got, tc.want)
		}
	}
}
