package gateway

import "fmt"

// Code names why the gateway refused or failed a request. It is what usage
// records and metrics carry as a reason (never free text from the request),
// and what a provider maps onto its own error type.
type Code string

const (
	CodeBadToken       Code = "invalid_token"           // missing, garbled, forged, unknown key
	CodeExpiredToken   Code = "expired_token"           // token past its expiry
	CodeRevokedToken   Code = "revoked_token"           // token on the revocation list
	CodeForbidden      Code = "forbidden"               // account disabled, project not activated
	CodeNotFound       Code = "not_found"               // route the gateway does not serve
	CodeUnsupported    Code = "unsupported"             // endpoint or feature refused by policy
	CodeMethod         Code = "method_not_allowed"      // wrong HTTP method for a served route
	CodeInvalidRequest Code = "invalid_request"         // body not JSON, missing model, bad header
	CodeModelNotFound  Code = "model_not_found"         // model not in the catalog
	CodeTooLarge       Code = "body_too_large"          // request body over the configured cap
	CodeContextTooLong Code = "context_length_exceeded" // input over the context limit
	CodeRateLimited    Code = "rate_limited"            // TPM or per-project limit
	CodeQuota          Code = "insufficient_quota"      // no credits left
	CodeUpstream       Code = "upstream_error"          // upstream unreachable or failed midway
	CodeUpstreamKey    Code = "upstream_key_refused"    // the provider refused the operator's key
	CodeUpstreamDenied Code = "upstream_access_denied"  // the provider denied the operator's account (403)
	CodeUpstreamLimit  Code = "upstream_rate_limited"   // the provider's limit on the operator's account (429)
	CodeUpstreamQuota  Code = "upstream_quota_exceeded" // the operator's account is out of quota (429, no retry)
	CodeInternal       Code = "internal"                // a gateway fault
)

// Failure is a request the gateway answers itself. Providers render it as
// their own native error body so each official SDK raises its usual error.
type Failure struct {
	Status  int
	Code    Code
	Message string // safe for clients: never contains a key, token or prompt text
	Param   string // the offending request field, where the provider's shape has one
	// RetryAfter, when positive, is sent as retry-after (seconds).
	RetryAfter int
	// Tokens and Limit describe a context-length failure, for providers
	// whose native message states both.
	Tokens, Limit int64
	// Model is the model the request named, when known, for providers
	// whose native "not found" message names it.
	Model string
	// Operation is the route's operation when known, for providers whose
	// error fields depend on the endpoint.
	Operation string
	// NoRetry sends x-should-retry: false so Stainless SDKs do not retry.
	NoRetry bool
	// Limits, when set, is sent as the provider's rate-limit headers.
	Limits RateLimit
	// RequestLimit marks a rate limit on requests rather than tokens, for
	// providers whose error type tells the two apart.
	RequestLimit bool
}

func (f *Failure) Error() string { return fmt.Sprintf("%d %s: %s", f.Status, f.Code, f.Message) }

// Fail builds a Failure.
func Fail(status int, code Code, format string, args ...any) *Failure {
	return &Failure{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithParam sets the offending field and returns f.
func (f *Failure) WithParam(p string) *Failure { f.Param = p; return f }
