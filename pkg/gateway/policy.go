package gateway

import (
	"context"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Policy is the account layer: whether a token's account may call at all,
// and whether one request fits its budgets. The gateway asks it at two
// points so that nothing reaches a provider unadmitted, and hands every
// admitted request's record back to it at settlement.
type Policy interface {
	// Authorize runs once the token is verified, before the body is read:
	// account enabled, project activated, credits left.
	Authorize(ctx context.Context, c auth.Claims) *Failure
	// Admit runs right before the upstream call of a billable request, once
	// its model and an input estimate are known; it reserves the estimate
	// against the account's limits.
	Admit(ctx context.Context, a Admission) (Grant, *Failure)
}

// Admission describes a request asking to go upstream.
type Admission struct {
	Claims   auth.Claims
	Provider string
	// Model is the catalog's name of the model the request names.
	Model string
	// Input is the estimated input tokens.
	Input int64
	// CacheMarked: the request asks for prompt caching, so the input the
	// provider's budget counts may be far below Input (Inspection).
	CacheMarked bool
}

// Grant is an admitted request's hold on its account's budgets.
type Grant interface {
	// Limits is the budget as admission left it, for the rate-limit headers
	// of the response.
	Limits() RateLimit
	// Settle replaces the reservation with the request's actual usage and
	// prices the record (rec.Credits). It is called exactly once, with a
	// context that outlives the client.
	Settle(ctx context.Context, rec *usage.Record)
}

// RateLimit is a token budget as the client sees it in rate-limit headers.
// A zero Limit means no limit applies.
type RateLimit struct {
	Limit     int64
	Remaining int64
	// Reset is how long until the budget is whole again.
	Reset time.Duration
}

// AppendXRateLimit appends rl as OpenAI's x-ratelimit-*-tokens headers,
// with the reset as a Go-style duration ("6m0s", "850ms") as OpenAI sends
// it.
func AppendXRateLimit(dst Headers, rl RateLimit) Headers {
	return append(dst,
		Header{Name: "x-ratelimit-limit-tokens", Value: strconv.FormatInt(rl.Limit, 10)},
		Header{Name: "x-ratelimit-remaining-tokens", Value: strconv.FormatInt(max(rl.Remaining, 0), 10)},
		Header{Name: "x-ratelimit-reset-tokens", Value: rl.Reset.Round(time.Millisecond).String()},
	)
}
