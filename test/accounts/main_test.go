// Package accounts_test drives accounts, credits and tokens-per-minute
// limits end to end, the way an operator and a workload meet them: accounts
// and projects made with the tollgate CLI, tokens minted by it, the
// official SDKs calling the real binary (`tollgate dev` and `tollgate
// serve`, the latter as two processes sharing one Redis), and what
// `tollgate usage`, the metrics endpoint, the data dir and Redis hold
// afterwards. It also holds the privacy canary: a unique string sent in
// prompts and completions must end up nowhere the gateway writes.
package accounts_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/envvars"
	"github.com/tollgate-dev/tollgate/test/harness"
)

func TestMain(m *testing.M) {
	harness.UnsetSDKEnv()
	os.Exit(m.Run())
}

// workload is what the gateway gives one workload: the provider variables
// for its token (envvars.Plan, the rule `tollgate env` and the injector
// use). Several workloads, of different accounts, run in this one test
// process at once, so their clients cannot read the process environment;
// each client is built from exactly the variables its SDK would read, and
// from nothing else.
type workload map[string]string

func newWorkload(baseURL, token string) workload {
	w := workload{}
	for _, v := range envvars.Plan(envvars.Config{BaseURL: baseURL, Key: token}, func(string) bool { return false }) {
		w[v.Name] = v.Value
	}
	return w
}

func (w workload) anthropic(opts ...aoption.RequestOption) *anthropic.Client {
	c := anthropic.NewClient(append([]aoption.RequestOption{
		aoption.WithAPIKey(w[envvars.AnthropicAPIKey]), aoption.WithBaseURL(w[envvars.AnthropicBaseURL]),
	}, opts...)...)
	return &c
}

func (w workload) openai(opts ...ooption.RequestOption) *openai.Client {
	c := openai.NewClient(append([]ooption.RequestOption{
		ooption.WithAPIKey(w[envvars.OpenAIAPIKey]), ooption.WithBaseURL(w[envvars.OpenAIBaseURL]),
	}, opts...)...)
	return &c
}

func (w workload) gemini(t *testing.T) *genai.Client {
	t.Helper()
	c, err := genai.NewClient(context.Background(), &genai.ClientConfig{
		APIKey:      w[envvars.GeminiAPIKey],
		Backend:     genai.BackendGeminiAPI,
		HTTPOptions: genai.HTTPOptions{BaseURL: w[envvars.GoogleGeminiBaseURL]},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
