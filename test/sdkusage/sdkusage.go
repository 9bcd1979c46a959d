// Package sdkusage reads the usage the official Go SDKs parse into the
// gateway's disjoint token kinds, so tests can compare what an SDK saw with
// what the gateway metered and what a mock billed.
package sdkusage

import (
	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// OpenAIChat: cached tokens are part of the prompt, reasoning of the
// completion.
func OpenAIChat(u openai.CompletionUsage) usage.Tokens {
	return usage.Tokens{
		Input:       u.PromptTokens - u.PromptTokensDetails.CachedTokens,
		CachedInput: u.PromptTokensDetails.CachedTokens,
		Output:      u.CompletionTokens,
		Reasoning:   u.CompletionTokensDetails.ReasoningTokens,
	}
}

// OpenAIResponses: the same rules under the Responses API's names.
func OpenAIResponses(u responses.ResponseUsage) usage.Tokens {
	return usage.Tokens{
		Input:       u.InputTokens - u.InputTokensDetails.CachedTokens,
		CachedInput: u.InputTokensDetails.CachedTokens,
		Output:      u.OutputTokens,
		Reasoning:   u.OutputTokensDetails.ReasoningTokens,
	}
}

// Anthropic: the cache counters are added to input_tokens, not part of it.
func Anthropic(u anthropic.Usage) usage.Tokens {
	return usage.Tokens{
		Input:       u.InputTokens,
		CachedInput: u.CacheReadInputTokens,
		CacheWrite:  u.CacheCreationInputTokens,
		Output:      u.OutputTokens,
		Reasoning:   u.OutputTokensDetails.ThinkingTokens,
	}
}

// Gemini: cached content is part of the prompt; tool-use prompt and
// thoughts are counted beside it and the candidates. A nil usage is zero.
func Gemini(u *genai.GenerateContentResponseUsageMetadata) usage.Tokens {
	if u == nil {
		return usage.Tokens{}
	}
	return usage.Tokens{
		Input:       int64(u.PromptTokenCount - u.CachedContentTokenCount + u.ToolUsePromptTokenCount),
		CachedInput: int64(u.CachedContentTokenCount),
		Output:      int64(u.CandidatesTokenCount + u.ThoughtsTokenCount),
		Reasoning:   int64(u.ThoughtsTokenCount),
	}
}
