package sdkgo_test

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// The operator's provider keys behind the Envoy door; distinctive so a
// leak is found.
const (
	operatorOpenAIKey = "sk-operator-pangolin-5521"
	operatorGeminiKey = "AIzaSy-operator-pangolin-5523"
)

// TestUpstreamAccountErrorsInSDKs: the provider's 401, 403 and 429, and
// some 400 and 402 by their bodies, are about the operator's shared
// account, and their bodies say so (Gemini's 403 quotes the operator's key,
// OpenAI's 429 names its organization, Anthropic's 402 and Gemini's
// API_KEY_INVALID 400 blame the caller's credit or key). Each
// official Go SDK gets the gateway's own error of the same status instead,
// raises the same error class, and retries exactly as it would have (the
// retry-after headers are upstream's); the mock sees the retries, and the
// ledger records the reason. Through both front doors; behind the Envoy
// door the processor sends real-looking operator keys.
func TestUpstreamAccountErrorsInSDKs(t *testing.T) {
	for _, door := range harness.Doors {
		t.Run(door, func(t *testing.T) {
			d := harness.StartDoor(t, door, harness.DoorOptions{ServeEnv: []string{
				"TOLLGATE_OPENAI_API_KEY=" + operatorOpenAIKey, "TOLLGATE_GEMINI_API_KEY=" + operatorGeminiKey,
			}})
			for k, v := range d.Env(t) {
				t.Setenv(k, v)
			}
			ctx := context.Background()
			oai, ant := openai.NewClient(), anthropic.NewClient()
			gem, err := genai.NewClient(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			// call makes one call with the provider's SDK and returns the
			// SDK's own error: its status, its kind (OpenAI's code,
			// Anthropic's type, Gemini's status) and the error body it read.
			call := map[string]func(ctx context.Context, prompt string) (status int, kind, raw string, err error){
				"openai": func(ctx context.Context, p string) (int, string, string, error) {
					_, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
						Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(p)}})
					var e *openai.Error
					if !errors.As(err, &e) {
						return 0, "", "", err
					}
					return e.StatusCode, e.Code, e.RawJSON(), err
				},
				"anthropic": func(ctx context.Context, p string) (int, string, string, error) {
					_, err := ant.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude-sonnet-4-5", MaxTokens: 10, Messages: anthText(p)})
					var e *anthropic.Error
					if !errors.As(err, &e) {
						return 0, "", "", err
					}
					return e.StatusCode, string(e.Type()), e.RawJSON(), err
				},
				"gemini": func(ctx context.Context, p string) (int, string, string, error) {
					_, err := gem.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text(p), nil)
					var e genai.APIError
					if !errors.As(err, &e) {
						return 0, "", "", err
					}
					// Details hold what Google adds (API_KEY_INVALID,
					// ErrorInfo); the client's raw view is all of it.
					b, _ := json.Marshal(e)
					return e.Code, e.Status, string(b), err
				},
			}
			cases := []struct {
				name, provider, directive string
				attempts                  int // what the SDK sends: its retries
				status                    int
				kind                      string // the SDK error's code, type or status
				reason                    gateway.Code
			}{
				{"openai rate limit", "openai", "[[mock error=429 retry_after=1]]", 3, 429, "rate_limit_exceeded", gateway.CodeUpstreamLimit},
				{"openai quota", "openai", "[[mock error=429 should_retry=false]]", 1, 429, "insufficient_quota", gateway.CodeUpstreamQuota},
				{"openai key refused", "openai", "[[mock error=401]]", 1, 401, "upstream_key_refused", gateway.CodeUpstreamKey},
				{"anthropic rate limit", "anthropic", "[[mock error=429 retry_after=1]]", 3, 429, "rate_limit_error", gateway.CodeUpstreamLimit},
				{"anthropic permission", "anthropic", "[[mock error=403]]", 1, 403, "permission_error", gateway.CodeUpstreamDenied},
				{"anthropic out of credit", "anthropic", "[[mock error=402]]", 1, 402, "billing_error", gateway.CodeUpstreamQuota},
				{"gemini suspended key", "gemini", "[[mock error=403]]", 1, 403, "PERMISSION_DENIED", gateway.CodeUpstreamDenied},
				{"gemini bad key", "gemini", "[[mock error=400 reason=API_KEY_INVALID]]", 1, 400, "INVALID_ARGUMENT", gateway.CodeUpstreamKey},
				{"gemini rate limit", "gemini", "[[mock error=429]]", 1, 429, "RESOURCE_EXHAUSTED", gateway.CodeUpstreamLimit},
			}
			var records int
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := servedCounts(d.Served(t))
					status, kind, raw, err := call[tc.provider](callCtx(t), prompt(tc.name+" "+tc.directive))
					if status != tc.status || kind != tc.kind {
						t.Errorf("the SDK raised %d %q (%v), want its own API error %d %q", status, kind, err, tc.status, tc.kind)
					}
					if !strings.Contains(raw, "the gateway's") {
						t.Errorf("the SDK's error is not the gateway's own: %s", raw)
					}
					for _, s := range []string{"org-mock", "organization", "Consumer", "api_key:", "API_KEY_INVALID", "credit balance", "API key not valid", operatorOpenAIKey, operatorGeminiKey, marker} {
						if strings.Contains(raw, s) {
							t.Errorf("the client's error holds %q: %s", s, raw)
						}
					}
					served := servedSince(t, d, before)
					if len(served) != tc.attempts {
						t.Errorf("the mock received %d requests, want %d (the SDK's attempts)", len(served), tc.attempts)
					}
					for _, sv := range served {
						if sv.Provider != tc.provider || sv.Status != tc.status {
							t.Errorf("mock record %s status %d, want %s %d", sv.Provider, sv.Status, tc.provider, tc.status)
						}
					}
					// Each case's provider, reason and status are its own.
					records += len(served)
					n := 0
					for _, rec := range d.WaitUsage(t, records) {
						if rec.Provider == tc.provider && rec.Reason == string(tc.reason) && rec.HTTPStatus == tc.status {
							n++
							if rec.Status != usage.StatusError || !rec.Tokens.IsZero() || rec.Estimated {
								t.Errorf("record %s tokens %+v estimated %v; want error, no tokens", rec.Status, rec.Tokens, rec.Estimated)
							}
						}
					}
					if n != len(served) {
						t.Errorf("%d records of %s %s %d, want %d", n, tc.provider, tc.reason, tc.status, len(served))
					}
				})
			}
			// Inside a 2xx stream the account's rate limit is an error
			// event (a Responses stream fails with rate_limit_exceeded
			// naming the organization): the SDK raises the gateway's own.
			streams := []struct {
				name, provider, op string
				stream             func(ctx context.Context, prompt string) (events int, err error)
			}{
				{"openai chat stream", "openai", "chat.completions", func(ctx context.Context, p string) (int, error) {
					st := oai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
						Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(p)}})
					return countEvents(st)
				}},
				{"openai responses stream", "openai", "responses", func(ctx context.Context, p string) (int, error) {
					st := oai.Responses.NewStreaming(ctx, responses.ResponseNewParams{
						Model: "gpt-4o-mini", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(p)}})
					return countEvents(st)
				}},
				{"anthropic stream", "anthropic", "messages", func(ctx context.Context, p string) (int, error) {
					st := ant.Messages.NewStreaming(ctx, anthropic.MessageNewParams{Model: "claude-sonnet-4-5", MaxTokens: 1024, Messages: anthText(p)})
					return countEvents(st)
				}},
				{"gemini stream", "gemini", "streamGenerateContent", func(ctx context.Context, p string) (int, error) {
					return countGemini(gem.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text(p), nil))
				}},
			}
			for _, tc := range streams {
				t.Run(tc.name, func(t *testing.T) {
					before := servedCounts(d.Served(t))
					events, err := tc.stream(callCtx(t), prompt(tc.name+" [[mock midstream_error=429]]"))
					if err == nil || events == 0 {
						t.Fatalf("the stream gave %d events and error %v; want events, then the SDK's error", events, err)
					}
					msg := err.Error()
					if !strings.Contains(msg, "gateway's shared provider account") {
						t.Errorf("the SDK's error is not the gateway's own: %s", msg)
					}
					for _, s := range []string{"org-mock", "organization", "project_number", marker} {
						if strings.Contains(msg, s) {
							t.Errorf("the client's error holds %q: %s", s, msg)
						}
					}
					served := servedSince(t, d, before)
					if len(served) != 1 || !served[0].MidstreamError {
						t.Fatalf("the mock served %+v, want one stream cut by its error", served)
					}
					records++
					n := 0
					for _, rec := range d.WaitUsage(t, records) {
						if rec.Provider == tc.provider && rec.Operation == tc.op && rec.Stream && rec.HTTPStatus == 200 {
							n++
							if rec.Status != usage.StatusError || rec.Reason != string(gateway.CodeUpstreamLimit) {
								t.Errorf("record %s %q; want error %s", rec.Status, rec.Reason, gateway.CodeUpstreamLimit)
							}
						}
					}
					if n != 1 {
						t.Errorf("%d records of %s %s streams, want 1", n, tc.provider, tc.op)
					}
				})
			}
			logs := d.Stderr()
			for _, s := range []string{operatorOpenAIKey, operatorGeminiKey, marker, "org-mock"} {
				if strings.Contains(logs, s) {
					t.Errorf("the gateway's log holds %q", s)
				}
			}
		})
	}
}

// countEvents reads an SDK stream (OpenAI's, Anthropic's) to its end and
// returns how many events it gave and the error that ended it.
func countEvents(st interface {
	Next() bool
	Err() error
}) (int, error) {
	n := 0
	for st.Next() {
		n++
	}
	return n, st.Err()
}

// countGemini does the same for a Gemini stream.
func countGemini(seq iter.Seq2[*genai.GenerateContentResponse, error]) (int, error) {
	n := 0
	for _, err := range seq {
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// servedSince is what the mock received since it had received before
// (per provider; see servedCounts).
func servedSince(t *testing.T, d harness.FrontDoor, before map[string]int) []harness.Served {
	var served []harness.Served
	for _, sv := range d.Served(t) {
		if before[sv.Provider]--; before[sv.Provider] < 0 {
			served = append(served, sv)
		}
	}
	return served
}
