package limit

import (
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Counted is what a request's usage costs against a tokens-per-minute
// budget: input and output tokens, cache writes included. Cached input
// counts for OpenAI and Gemini but not for Anthropic, whose limits exclude
// cache reads.
func Counted(provider string, t usage.Tokens) int64 {
	if CacheReadsExcluded(provider) {
		return t.Input + t.CacheWrite + t.Output
	}
	return t.Total()
}

// CacheReadsExcluded reports whether provider's tokens-per-minute budgets
// leave cached input out (see Counted).
func CacheReadsExcluded(provider string) bool { return provider == string(catalog.Anthropic) }
