package meter_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/account"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
)

// quotaFailure is the refusal docs/credits.md documents for an account
// without credits, for the account its examples use.
func quotaFailure() *gateway.Failure { return account.NoCredits("acme") }

// TestQuotaErrorsDocumented keeps the per-provider error shapes in
// docs/credits.md equal to what the providers render.
func TestQuotaErrorsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/credits.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name string
		prov interface {
			Error(*gateway.Failure) (int, []byte)
		}
	}{
		{"OpenAI", openai.New()},
		{"Anthropic", anthropic.New()},
		{"Gemini", gemini.New()},
	} {
		status, body := p.prov.Error(quotaFailure())
		want := fmt.Sprintf("%s: HTTP %d\n\n```json\n%s\n```", p.name, status, body)
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/credits.md does not show the %s refusal as rendered:\n%s", p.name, want)
		}
	}
}
