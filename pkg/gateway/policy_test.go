package gateway_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// scriptedPolicy refuses or admits as a test tells it and remembers what the
// gateway asked.
type scriptedPolicy struct {
	authorize *gateway.Failure
	admit     *gateway.Failure
	limits    gateway.RateLimit
	credits   int64

	mu         sync.Mutex
	authorized []auth.Claims
	admitted   []gateway.Admission
	settled    []usage.Record
}

func (p *scriptedPolicy) Authorize(_ context.Context, c auth.Claims) *gateway.Failure {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.authorized = append(p.authorized, c)
	return p.authorize
}

func (p *scriptedPolicy) Admit(_ context.Context, a gateway.Admission) (gateway.Grant, *gateway.Failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.admitted = append(p.admitted, a)
	if p.admit != nil {
		return nil, p.admit
	}
	return scriptedGrant{p}, nil
}

type scriptedGrant struct{ p *scriptedPolicy }

func (g scriptedGrant) Limits() gateway.RateLimit { return g.p.limits }
func (g scriptedGrant) Settle(ctx context.Context, rec *usage.Record) {
	if ctx.Err() != nil {
		panic("settle got a cancelled context")
	}
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	rec.Credits = g.p.credits
	g.p.settled = append(g.p.settled, *rec)
}

func TestPolicy(t *testing.T) {
	env := newBenchEnv(t)
	chat := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}`)
	msg := []byte(`{"model":"claude-3-5-haiku-20241022","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	limits := gateway.RateLimit{Limit: 1200, Remaining: 700, Reset: 30 * time.Second}
	tests := []struct {
		name       string
		provider   string
		path       string
		body       []byte
		authHeader string
		policy     *scriptedPolicy
		wantStatus int
		wantError  string // the provider's error type or code
		wantHeader map[string]string
		wantAdmit  bool
	}{
		{
			name: "account disabled", provider: "openai", path: "/openai/v1/chat/completions", body: chat,
			authHeader: "authorization",
			policy:     &scriptedPolicy{authorize: gateway.Fail(403, gateway.CodeForbidden, "AI features are disabled for this account.")},
			wantStatus: 403, wantError: "permission_error",
		},
		{
			name: "over TPM, openai", provider: "openai", path: "/openai/v1/chat/completions", body: chat,
			authHeader: "authorization",
			policy: &scriptedPolicy{admit: &gateway.Failure{Status: 429, Code: gateway.CodeRateLimited,
				Message: "Rate limit reached.", RetryAfter: 12, Limits: gateway.RateLimit{Limit: 1200, Remaining: 0, Reset: 12 * time.Second}}},
			wantStatus: 429, wantError: "rate_limit_exceeded", wantAdmit: true,
			wantHeader: map[string]string{"retry-after": "12", "x-ratelimit-limit-tokens": "1200", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "12s"},
		},
		{
			name: "over TPM, anthropic", provider: "anthropic", path: "/anthropic/v1/messages", body: msg,
			authHeader: "x-api-key",
			policy: &scriptedPolicy{admit: &gateway.Failure{Status: 429, Code: gateway.CodeRateLimited,
				Message: "Rate limit reached.", RetryAfter: 5, Limits: gateway.RateLimit{Limit: 1200, Remaining: 0, Reset: 5 * time.Second}}},
			wantStatus: 429, wantError: "rate_limit_error", wantAdmit: true,
			wantHeader: map[string]string{"retry-after": "5", "anthropic-ratelimit-tokens-limit": "1200", "anthropic-ratelimit-tokens-remaining": "0"},
		},
		{
			name: "admitted, openai", provider: "openai", path: "/openai/v1/chat/completions", body: chat,
			authHeader: "authorization",
			policy:     &scriptedPolicy{limits: limits, credits: 4242},
			wantStatus: 200, wantAdmit: true,
			wantHeader: map[string]string{"x-ratelimit-limit-tokens": "1200", "x-ratelimit-remaining-tokens": "700", "x-ratelimit-reset-tokens": "30s"},
		},
		{
			name: "admitted, anthropic", provider: "anthropic", path: "/anthropic/v1/messages", body: msg,
			authHeader: "x-api-key",
			policy:     &scriptedPolicy{limits: limits, credits: 7},
			wantStatus: 200, wantAdmit: true,
			wantHeader: map[string]string{"anthropic-ratelimit-tokens-limit": "1200", "anthropic-ratelimit-tokens-remaining": "700"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var recorded []usage.Record
			g := gateway.New(gateway.Config{
				Providers: env.providers(), Upstreams: env.upstreams(), Catalog: env.catalog(t),
				Verifier: env.verifier, Policy: tt.policy,
				Recorder: gateway.RecorderFunc(func(r usage.Record) { recorded = append(recorded, r) }),
			})
			x := g.NewExchange(context.Background(), "req-1")
			h := requestHeaders(tt.authHeader, env.token)
			out := x.RequestHeaders("POST", tt.path, h)
			if out.Action == gateway.NeedBody {
				out = x.RequestBody(tt.body)
			}
			var status int
			var hdr gateway.Headers
			switch out.Action {
			case gateway.Respond:
				status, hdr = out.Response.Status, out.Response.Header
				var e struct {
					Error struct{ Type, Code string }
				}
				if err := json.Unmarshal(out.Response.Body, &e); err != nil {
					t.Fatalf("error body %s: %v", out.Response.Body, err)
				}
				if tt.wantError != "" && e.Error.Type != tt.wantError && e.Error.Code != tt.wantError {
					t.Errorf("error %s, want type or code %q", out.Response.Body, tt.wantError)
				}
			case gateway.Forward:
				status = 200
				hdr = x.ResponseHeaders(200, gateway.Headers{{Name: "content-type", Value: "application/json"}})
				x.ResponseBody([]byte(`{}`), true)
			default:
				t.Fatalf("action %v", out.Action)
			}
			rec := x.Settle(gateway.Completed)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d", status, tt.wantStatus)
			}
			for k, v := range tt.wantHeader {
				if got := hdr.Get(k); got != v {
					t.Errorf("header %s = %q, want %q (all: %v)", k, got, v, hdr)
				}
			}
			if len(tt.policy.authorized) != 1 || tt.policy.authorized[0].Account != "acct-bench" {
				t.Errorf("authorized %v, want the token's claims once", tt.policy.authorized)
			}
			if got := len(tt.policy.admitted) == 1; got != tt.wantAdmit {
				t.Errorf("admitted %v, want admission %v", tt.policy.admitted, tt.wantAdmit)
			}
			if tt.wantAdmit {
				a := tt.policy.admitted[0]
				if a.Provider != tt.provider || a.Model == "" || a.Input <= 0 {
					t.Errorf("admission %+v: want provider %s, a model and an input estimate", a, tt.provider)
				}
			}
			admitted := tt.wantAdmit && tt.policy.admit == nil
			if got := len(tt.policy.settled); got != map[bool]int{true: 1, false: 0}[admitted] {
				t.Fatalf("settled %d times", got)
			}
			if len(recorded) != 1 {
				t.Fatalf("recorded %d records", len(recorded))
			}
			if admitted && (rec.Credits != tt.policy.credits || recorded[0].Credits != tt.policy.credits) {
				t.Errorf("credits %d / recorded %d, want the grant's %d", rec.Credits, recorded[0].Credits, tt.policy.credits)
			}
			if !admitted && rec.Credits != 0 {
				t.Errorf("a refused request cost %d credits", rec.Credits)
			}
		})
	}
}

// Unbilled routes (token counting) are authorized but never reserve budget.
func TestPolicyUnbilledRouteNotAdmitted(t *testing.T) {
	env := newBenchEnv(t)
	p := &scriptedPolicy{}
	g := gateway.New(gateway.Config{Providers: env.providers(), Upstreams: env.upstreams(), Catalog: env.catalog(t), Verifier: env.verifier, Policy: p})
	x := g.NewExchange(context.Background(), "req-2")
	out := x.RequestHeaders("POST", "/anthropic/v1/messages/count_tokens", gateway.Headers{
		{Name: "x-api-key", Value: env.token}, {Name: "anthropic-version", Value: "2023-06-01"}})
	if out.Action != gateway.NeedBody {
		t.Fatalf("action %v: %s", out.Action, out.Response.Body)
	}
	out = x.RequestBody([]byte(`{"model":"claude-3-5-haiku-20241022","messages":[{"role":"user","content":"hi"}]}`))
	if out.Action != gateway.Forward {
		t.Fatalf("action %v: %s", out.Action, out.Response.Body)
	}
	if len(p.authorized) != 1 || len(p.admitted) != 0 {
		t.Errorf("authorized %d, admitted %d; want 1 and 0", len(p.authorized), len(p.admitted))
	}
}

// Rate-limit headers go on every response of an admitted request, in the
// provider's style, including the gateway's own 502 when the provider could
// not be reached.
func TestRateLimitHeadersOnUpstreamUnavailable(t *testing.T) {
	env := newBenchEnv(t)
	limits := gateway.RateLimit{Limit: 1200, Remaining: 700, Reset: 30 * time.Second}
	for _, tt := range []struct {
		provider, path, auth string
		body                 []byte
		header               string
	}{
		{"openai", "/openai/v1/chat/completions", "authorization",
			[]byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}`), "x-ratelimit-remaining-tokens"},
		{"anthropic", "/anthropic/v1/messages", "x-api-key",
			[]byte(`{"model":"claude-3-5-haiku-20241022","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`), "anthropic-ratelimit-tokens-remaining"},
	} {
		t.Run(tt.provider, func(t *testing.T) {
			p := &scriptedPolicy{limits: limits}
			g := gateway.New(gateway.Config{Providers: env.providers(), Upstreams: env.upstreams(), Catalog: env.catalog(t), Verifier: env.verifier, Policy: p})
			x := g.NewExchange(context.Background(), "req-3")
			h := requestHeaders(tt.auth, env.token)
			if out := x.RequestHeaders("POST", tt.path, h); out.Action != gateway.NeedBody {
				t.Fatalf("action %v: %s", out.Action, out.Response.Body)
			}
			if out := x.RequestBody(tt.body); out.Action != gateway.Forward {
				t.Fatalf("action %v: %s", out.Action, out.Response.Body)
			}
			resp := x.UpstreamUnavailable()
			x.Settle(gateway.UpstreamFailed)
			if resp.Status != 502 {
				t.Fatalf("status %d, want 502", resp.Status)
			}
			if got := resp.Header.Get(tt.header); got != "700" {
				t.Errorf("%s = %q, want 700 (all: %v)", tt.header, got, resp.Header)
			}
		})
	}
}

// requestHeaders are a client's JSON request headers with the token in
// the named header (a Bearer token in authorization).
func requestHeaders(authHeader, token string) gateway.Headers {
	h := gateway.Headers{{Name: "content-type", Value: "application/json"}, {Name: "anthropic-version", Value: "2023-06-01"}}
	if authHeader == "authorization" {
		token = "Bearer " + token
	}
	return append(h, gateway.Header{Name: authHeader, Value: token})
}
