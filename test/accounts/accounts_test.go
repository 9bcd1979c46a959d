package accounts_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/shared"
	"github.com/openai/openai-go/v3"
	"google.golang.org/genai"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/pkg/envvars"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
	"github.com/tollgate-dev/tollgate/test/harness"
)

const haiku = "claude-3-5-haiku-20241022"

// book is what the test saw happen to one account, to compare with what
// `tollgate usage` reports: every request the gateway handled, the mock's
// ground truth tokens of those it forwarded, their price from the CSV, and
// the refusals by reason.
type book struct {
	requests   int64
	tokens     usage.Tokens
	credits    int64
	rejections map[string]int64
}

func (b *book) served(t *testing.T, s harness.Served) {
	t.Helper()
	b.requests++
	b.tokens.Input += s.Usage.Input
	b.tokens.CachedInput += s.Usage.CachedInput
	b.tokens.CacheWrite += s.Usage.CacheWrite
	b.tokens.Output += s.Usage.Output
	b.tokens.Reasoning += s.Usage.Reasoning
	b.credits += microCreditsFromCSV(t, s.Model, s.Usage)
}

func (b *book) rejected(reason string) {
	b.requests++
	if b.rejections == nil {
		b.rejections = map[string]int64{}
	}
	b.rejections[reason]++
}

// env is one running dev gateway and its operator's CLI.
type env struct {
	dev *harness.Dev
	t   *testing.T
}

func (e env) cli(args ...string) string {
	e.t.Helper()
	return string(harness.Run(e.t, append(args, "--data-dir", e.dev.DataDir)...))
}

// account creates an account on plan with credits and an activated
// project, and returns the workload of a token minted for the project.
func (e env) account(name, plan, credits string) workload {
	e.t.Helper()
	e.cli("account", "create", name, "--plan", plan, "--credits", credits)
	e.cli("project", "create", name+"-app", "--account", name, "--activate")
	return newWorkload(e.dev.BaseURL, strings.TrimSpace(e.cli("token", "mint", "--project", name+"-app")))
}

// forwarded runs call and returns what the mock received for model
// meanwhile: the requests the gateway let through.
func (e env) forwarded(model string, call func()) []harness.Served {
	e.t.Helper()
	before := len(e.served(model))
	call()
	return e.served(model)[before:]
}

// served is what the mock received for model, in arrival order.
func (e env) served(model string) []harness.Served {
	e.t.Helper()
	var out []harness.Served
	for _, s := range e.dev.Served(e.t) {
		if s.Model == model {
			out = append(out, s)
		}
	}
	return out
}

// usage is `tollgate usage --account A --json` once it counts want
// requests (the ledger is written off the request path).
func (e env) usage(account string, want int64) *pb.GetUsageResponse {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var u pb.GetUsageResponse
		out := e.cli("usage", "--account", account, "--json")
		if err := protojson.Unmarshal([]byte(out), &u); err != nil {
			e.t.Fatalf("tollgate usage --account %s --json: %v\n%s", account, err, out)
		}
		if u.GetTotal().GetRequests() >= want || time.Now().After(deadline) {
			return &u
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkUsage compares `tollgate usage` for an account with the book.
func (e env) checkUsage(account string, b *book) {
	e.t.Helper()
	tot := e.usage(account, b.requests).GetTotal()
	got := usage.Tokens{
		Input: tot.GetTokens().GetInput(), CachedInput: tot.GetTokens().GetCachedInput(),
		CacheWrite: tot.GetTokens().GetCacheWrite(), Output: tot.GetTokens().GetOutput(),
		Reasoning: tot.GetTokens().GetReasoning(),
	}
	if tot.GetRequests() != b.requests || got != b.tokens || tot.GetCredits().GetMicro() != b.credits {
		e.t.Errorf("tollgate usage --account %s: %d requests, tokens %+v, %d micro-credits; the test made %d requests, tokens %+v, %d micro-credits",
			account, tot.GetRequests(), got, tot.GetCredits().GetMicro(), b.requests, b.tokens, b.credits)
	}
	rej := tot.GetRejections()
	if len(rej) != len(b.rejections) {
		e.t.Errorf("tollgate usage --account %s: rejections %v, want %v", account, rej, b.rejections)
	}
	for reason, n := range b.rejections {
		if rej[reason] != n {
			e.t.Errorf("tollgate usage --account %s: rejections %v, want %v", account, rej, b.rejections)
			break
		}
	}
}

// settled waits until the gateway has settled n requests for model: the
// metrics count a request once its grant has settled.
func (e env) settled(model string, n int) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := metricSum(httpGet(e.t, e.dev.BaseURL+"/_tollgate/metrics"),
			"gen_ai_client_operation_duration_seconds_count", `gen_ai_request_model="`+model+`"`)
		if got == float64(n) {
			return
		}
		if got > float64(n) || time.Now().After(deadline) {
			e.t.Fatalf("the gateway settled %v requests for %s, want %d", got, model, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually repeats call until the gateway lets it through: a change
// made with the CLI reaches a running gateway once its cached copy of the
// account expires (seconds). Each refusal on the way must have status and
// is booked under reason; the request that goes through is booked as the
// mock received it, and returned.
func (e env) eventually(b *book, model string, status int, reason string, call func() error) harness.Served {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		f := e.forwarded(model, func() { err = call() })
		if err == nil {
			if len(f) != 1 {
				e.t.Fatalf("%d requests reached the mock for one call", len(f))
			}
			b.served(e.t, f[0])
			return f[0]
		}
		if len(f) != 0 {
			e.t.Fatalf("a refused request reached the mock: %v", err)
		}
		if statusOf(err) != status || time.Now().After(deadline) {
			e.t.Fatalf("got %v, want success (or a %d until the change is seen)", err, status)
		}
		b.rejected(reason)
		time.Sleep(200 * time.Millisecond)
	}
}

// statusOf is the HTTP status of an SDK error.
func statusOf(err error) int {
	var aerr *anthropic.Error
	var oerr *openai.Error
	switch {
	case errors.As(err, &aerr):
		return aerr.StatusCode
	case errors.As(err, &oerr):
		return oerr.StatusCode
	}
	return 0
}

// metricSum adds the values of a Prometheus metric's samples whose labels
// contain every filter.
func metricSum(text []byte, name string, filters ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, f := range filters {
			ok = ok && strings.Contains(line, f)
		}
		if i := strings.LastIndexByte(line, ' '); ok && i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// untilNextWindow is the time left in the current one-minute limiter
// window (windows are aligned to the minute of the Unix clock).
func untilNextWindow(now time.Time) time.Duration {
	return now.Truncate(time.Minute).Add(time.Minute).Sub(now)
}

// TestAccounts runs the account policy end to end through `tollgate dev`
// with accounts, projects and tokens made by the CLI while it runs.
func TestAccounts(t *testing.T) {
	t.Parallel()
	e := env{dev: harness.StartDev(t, "--mock"), t: t}
	books := map[string]*book{}

	// First the Free plan's budget, whose last check waits for the next
	// window while the other accounts are tried.
	var patient func(t *testing.T)
	var freeToken string
	t.Run("free plan TPM", func(t *testing.T) {
		e := env{dev: e.dev, t: t}
		b := &book{}
		books["freeco"] = b
		w := e.account("freeco", "free", "100")
		freeToken = w[envvars.AnthropicAPIKey]
		patient = freeTPM(t, e, w, b)
	})
	if patient == nil {
		t.FailNow()
	}

	t.Run("disabled account", func(t *testing.T) {
		e := env{dev: e.dev, t: t}
		w := e.account("offco", "pro", "100")
		e.cli("account", "disable", "offco")
		b := &book{}
		books["offco"] = b
		var err error
		if f := e.forwarded("claude-sonnet-4-5", func() {
			_, err = w.anthropic().Messages.New(callCtx(t), anthropic.MessageNewParams{
				Model: "claude-sonnet-4-5", MaxTokens: 32,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))},
			})
		}); len(f) != 0 {
			t.Errorf("a disabled account's request reached the provider")
		}
		b.rejected("forbidden")
		wantAnthropicError(t, err, http.StatusForbidden, shared.ErrorTypePermissionError)

		// Enabled again, the same token works.
		e.cli("account", "enable", "offco")
		e.eventually(b, "claude-sonnet-4-5", http.StatusForbidden, "forbidden", func() error {
			_, err := w.anthropic().Messages.New(callCtx(t), anthropic.MessageNewParams{
				Model: "claude-sonnet-4-5", MaxTokens: 32,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello again"))},
			})
			return err
		})
	})

	t.Run("unactivated project", func(t *testing.T) {
		e := env{dev: e.dev, t: t}
		e.cli("account", "create", "newco", "--plan", "pro", "--credits", "100")
		e.cli("project", "create", "draft", "--account", "newco")
		w := newWorkload(e.dev.BaseURL, strings.TrimSpace(e.cli("token", "mint", "--project", "draft")))
		b := &book{}
		books["newco"] = b
		var err error
		if f := e.forwarded("gpt-4o-mini", func() {
			_, err = w.openai().Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
			})
		}); len(f) != 0 {
			t.Errorf("a request of an unactivated project reached the provider")
		}
		b.rejected("forbidden")
		var oerr *openai.Error
		if !errors.As(err, &oerr) || oerr.StatusCode != http.StatusForbidden || oerr.Type != "permission_error" {
			t.Fatalf("unactivated project: %v, want a 403 permission_error", err)
		}
		// Activated, the same token works.
		e.cli("project", "activate", "draft")
		e.eventually(b, "gpt-4o-mini", http.StatusForbidden, "forbidden", func() error {
			_, err := w.openai().Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello again")},
			})
			return err
		})
	})

	t.Run("out of credits", func(t *testing.T) {
		e := env{dev: e.dev, t: t}
		// 100 micro-credits: the first request is let through and costs
		// far more; the account is then below zero.
		w := e.account("brokeco", "pro", "0.0001")
		b := &book{}
		books["brokeco"] = b
		client := w.openai() // default retries: a refusal must not be retried
		ask := func() (*openai.ChatCompletion, []harness.Served, error) {
			var r *openai.ChatCompletion
			var err error
			f := e.forwarded("gpt-4o-mini", func() {
				r, err = client.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
					Model:    "gpt-4o-mini",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("spend [[mock input=1000 output=1000]]")},
				})
			})
			return r, f, err
		}
		_, f, err := ask()
		if err != nil || len(f) != 1 {
			t.Fatalf("first request with 100 micro-credits: %v (%d reached the mock)", err, len(f))
		}
		b.served(t, f[0])
		cost := microCreditsFromCSV(t, "gpt-4o-mini", f[0].Usage)
		if cost <= 100 {
			t.Fatalf("the request costs %d micro-credits; the test needs more than the balance", cost)
		}
		start := time.Now()
		_, f, err = ask()
		if len(f) != 0 {
			t.Errorf("a request of an account below zero reached the provider")
		}
		b.rejected("insufficient_quota")
		var oerr *openai.Error
		if !errors.As(err, &oerr) || oerr.StatusCode != http.StatusTooManyRequests || oerr.Type != "insufficient_quota" || oerr.Code != "insufficient_quota" {
			t.Fatalf("account below zero: %v, want a 429 insufficient_quota", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the refusal took %v: the SDK waited to retry it", d)
		}
		// The other SDKs get their providers' own billing errors.
		f = e.forwarded("claude-sonnet-4-5", func() {
			_, err = w.anthropic().Messages.New(callCtx(t), anthropic.MessageNewParams{
				Model: "claude-sonnet-4-5", MaxTokens: 32,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))},
			})
		})
		b.rejected("insufficient_quota")
		wantAnthropicError(t, err, http.StatusPaymentRequired, shared.ErrorTypeBillingError)
		f = append(f, e.forwarded("gemini-2.5-flash", func() {
			_, err = w.gemini(t).Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text("hello"), nil)
		})...)
		b.rejected("insufficient_quota")
		var gerr genai.APIError
		if !errors.As(err, &gerr) || gerr.Code != http.StatusTooManyRequests || gerr.Status != "RESOURCE_EXHAUSTED" {
			t.Errorf("gemini, account below zero: %v, want a 429 RESOURCE_EXHAUSTED", err)
		}
		if len(f) != 0 {
			t.Errorf("a request of an account below zero reached the provider")
		}
		// The debit reached the ledger: balance = opening - cost.
		deadline := time.Now().Add(20 * time.Second)
		for {
			var a pb.Account
			if err := protojson.Unmarshal([]byte(e.cli("account", "show", "brokeco", "--json")), &a); err != nil {
				t.Fatal(err)
			}
			if a.GetBalance().GetMicro() == 100-cost {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("brokeco's balance is %d micro-credits, want 100 - %d", a.GetBalance().GetMicro(), cost)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Credited, the account works again.
		e.cli("account", "credit", "brokeco", "1")
		e.eventually(b, "gpt-4o-mini", http.StatusTooManyRequests, "insufficient_quota", func() error {
			_, _, err := ask()
			return err
		})
	})

	t.Run("default SDK waits out a 429", patient)

	t.Run("plan change", func(t *testing.T) {
		// On the Personal plan the same model has the Personal figure.
		e := env{dev: e.dev, t: t}
		e.cli("account", "set-plan", "freeco", "personal")
		want := strconv.FormatInt(tpmFromCSV(t, haiku, "personal"), 10)
		w := newWorkload(e.dev.BaseURL, freeToken)
		deadline := time.Now().Add(10 * time.Second)
		for {
			var raw *http.Response
			e.eventually(books["freeco"], haiku, http.StatusTooManyRequests, "rate_limited", func() error {
				_, err := w.anthropic(aoption.WithMaxRetries(0)).Messages.New(callCtx(t), anthropic.MessageNewParams{
					Model: haiku, MaxTokens: 16,
					Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("upgraded [[mock input=10 output=10]]"))},
				}, aoption.WithResponseInto(&raw))
				return err
			})
			got := raw.Header.Get("anthropic-ratelimit-tokens-limit")
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after set-plan personal: anthropic-ratelimit-tokens-limit %s, want %s", got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	for account, b := range books {
		e.checkUsage(account, b)
	}
}

func wantAnthropicError(t *testing.T, err error, status int, typ shared.ErrorType) *anthropic.Error {
	t.Helper()
	var aerr *anthropic.Error
	if !errors.As(err, &aerr) || aerr.StatusCode != status || aerr.Type() != typ {
		t.Fatalf("got %v, want a %d %s", err, status, typ)
	}
	return aerr
}

// freeTPM spends a Free account's tokens-per-minute budget on
// claude-3-5-haiku-20241022 with the Anthropic SDK, request by request,
// predicting each rate-limit header from the plan table, the gateway's
// input estimate and the mock's ground truth. It then starts one call with
// the SDK's default retries, which waits for the next window; the function
// it returns waits for that call and checks it.
func freeTPM(t *testing.T, e env, w workload, b *book) (patient func(t *testing.T)) {
	limit := tpmFromCSV(t, haiku, "free")
	counter, err := tokenize.NewCounter()
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	capture := aoption.WithMiddleware(func(r *http.Request, next aoption.MiddlewareNext) (*http.Response, error) {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		return next(r)
	})
	noRetry := w.anthropic(aoption.WithMaxRetries(0), capture)
	params := func(text string) anthropic.MessageNewParams {
		return anthropic.MessageNewParams{Model: haiku, MaxTokens: 256,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(text))}}
	}
	// The budget is spent within one window: start in a fresh one if
	// this one is nearly over.
	if left := untilNextWindow(time.Now()); left < 15*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	window := time.Now().Truncate(time.Minute)

	// Each request counts input + cache writes + output; the 300 cached
	// tokens do not count for Anthropic.
	var used int64 // tokens counted so far in this window
	settledN := 0
	for i := 0; ; i++ {
		var raw *http.Response
		var msg *anthropic.Message
		var sent, answered time.Time
		f := e.forwarded(haiku, func() {
			sent = time.Now()
			msg, err = noRetry.Messages.New(callCtx(t), params(fmt.Sprintf("request %d [[mock input=90 cached=300 cache_write=20 output=160]]", i)),
				aoption.WithResponseInto(&raw))
			answered = time.Now()
		})
		settledN++
		estimate := counter.Estimate(body)
		if used+estimate > limit {
			// The request does not fit: refused before any upstream call.
			b.rejected("rate_limited")
			aerr := wantAnthropicError(t, err, http.StatusTooManyRequests, shared.ErrorTypeRateLimitError)
			if len(f) != 0 {
				t.Fatal("a refused request reached the provider")
			}
			h := aerr.Response.Header
			// The gateway measured the time to the next window between
			// these two instants, and rounded it up to whole seconds.
			ra, convErr := strconv.Atoi(h.Get("retry-after"))
			lo, hi := untilNextWindow(answered), untilNextWindow(sent)+time.Second
			if d := time.Duration(ra) * time.Second; convErr != nil || d < lo || d > hi {
				t.Errorf("retry-after %q, want the time to the next window, between %v and %v", h.Get("retry-after"), lo, hi)
			}
			wantLimitHeaders(t, h, limit, used, window)
			if i < 2 {
				t.Fatalf("refused after %d requests", i)
			}
			break
		}
		if err != nil || len(f) != 1 {
			t.Fatalf("request %d (%d of %d tokens used, estimate %d): %v; %d reached the mock", i, used, limit, estimate, err, len(f))
		}
		if msg.Content[0].Text != f[0].Reply {
			t.Errorf("request %d: reply %q, the mock sent %q", i, msg.Content[0].Text, f[0].Reply)
		}
		b.served(t, f[0])
		// The headers show the budget after this request's reservation.
		wantLimitHeaders(t, raw.Header, limit, used+estimate, window)
		used += f[0].Usage.Input + f[0].Usage.CacheWrite + f[0].Usage.Output
		// The next request's headers assume this one has settled.
		e.settled(haiku, settledN)
	}
	if w := time.Now().Truncate(time.Minute); !w.Equal(window) {
		t.Fatalf("the requests took from window %v into %v; the expectations assume one window", window, w)
	}

	// A request larger than the whole budget: the default SDK, which
	// retries 429s, is told not to (waiting cannot help) and surfaces the
	// error at once.
	start := time.Now()
	_, err = w.anthropic().Messages.New(callCtx(t), params(strings.Repeat("too large ", int(limit))))
	b.rejected("rate_limited")
	settledN++
	aerr := wantAnthropicError(t, err, http.StatusTooManyRequests, shared.ErrorTypeRateLimitError)
	if aerr.Response.Header.Get("x-should-retry") != "false" || time.Since(start) > 5*time.Second {
		t.Errorf("a request over the whole limit: x-should-retry %q after %v, want false and no wait",
			aerr.Response.Header.Get("x-should-retry"), time.Since(start))
	}
	e.settled(haiku, settledN)

	// The default SDK on an ordinary 429: it waits what retry-after says,
	// until the next window, and its retry goes through. That takes the
	// rest of the minute: the caller does other work meanwhile.
	start = time.Now()
	left := untilNextWindow(start)
	before := len(e.served(haiku))
	var msg *anthropic.Message
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		msg, err = w.anthropic().Messages.New(ctx, params("patient [[mock input=90 output=10]]"))
	}()
	return func(t *testing.T) {
		<-done
		waited := time.Since(start)
		b.rejected("rate_limited")
		f := e.served(haiku)[before:]
		if err != nil || len(f) != 1 {
			t.Fatalf("the default SDK after a 429: %v; %d requests reached the mock", err, len(f))
		}
		b.served(t, f[0])
		if waited < left-time.Second {
			t.Errorf("the SDK got through after %v, before the window ended (%v)", waited, left)
		}
		if msg.Content[0].Text != f[0].Reply {
			t.Errorf("reply %q, the mock sent %q", msg.Content[0].Text, f[0].Reply)
		}
	}
}

// wantLimitHeaders checks Anthropic's rate-limit headers for a budget of
// limit tokens with charged tokens counted in the window starting at
// window: the limit, what remains, and when the budget is whole again (the
// window's end, or later while an overspend is paid off).
func wantLimitHeaders(t *testing.T, h http.Header, limit, charged int64, window time.Time) {
	t.Helper()
	if got := h.Get("anthropic-ratelimit-tokens-limit"); got != strconv.FormatInt(limit, 10) {
		t.Errorf("anthropic-ratelimit-tokens-limit %q, want %d", got, limit)
	}
	if got := h.Get("anthropic-ratelimit-tokens-remaining"); got != strconv.FormatInt(max(0, limit-charged), 10) {
		t.Errorf("anthropic-ratelimit-tokens-remaining %q, want %d (limit %d, %d charged)", got, max(0, limit-charged), limit, charged)
	}
	whole := window.Add(time.Duration((charged+limit-1)/limit) * time.Minute)
	reset, err := time.Parse(time.RFC3339, h.Get("anthropic-ratelimit-tokens-reset"))
	if err != nil || reset.Before(whole.Add(-time.Second)) || reset.After(whole) {
		t.Errorf("anthropic-ratelimit-tokens-reset %q, want %v (%d of %d charged in the window from %v)",
			h.Get("anthropic-ratelimit-tokens-reset"), whole.UTC().Format(time.RFC3339), charged, limit, window)
	}
}
