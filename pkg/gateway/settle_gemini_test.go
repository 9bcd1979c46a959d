package gateway_test

import (
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// TestSettleGeminiArrayEnd: a streamed JSON array (Gemini's
// :streamGenerateContent without alt=sse) ends with its own closing
// bracket. Once that has passed, the client has the whole answer, and a
// close or reset before the transport's end does not make the request
// abandoned or failed, as after an SSE stream's final event; without the
// bracket the same close still does.
func TestSettleGeminiArrayEnd(t *testing.T) {
	const (
		target = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
		first  = `[{"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":1,"totalTokenCount":51}}`
		last   = "\r\n,\r\n" + `{"candidates":[{"content":{"parts":[{"text":" world"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":4,"totalTokenCount":54}}`
	)
	final := usage.Tokens{Input: 50, Output: 4}
	env := newBenchEnv(t)
	for _, c := range []streamCase{
		{name: "client gone after the closing bracket", response: first + last + "\r\n]", cut: gateway.ClientGone, status: usage.StatusOK, tokens: final},
		{name: "upstream reset after the closing bracket", response: first + last + "\r\n]", cut: gateway.UpstreamFailed, status: usage.StatusOK, tokens: final},
		{name: "client gone before the closing bracket", response: first + last, cut: gateway.ClientGone,
			status: usage.StatusAbandoned, reason: "client_gone", tokens: final},
		{name: "upstream reset before the closing bracket", response: first + last, cut: gateway.UpstreamFailed,
			status: usage.StatusError, reason: string(gateway.CodeUpstream), tokens: final},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.provider, c.target, c.body = "gemini", target, geminiBody
			pc := c.pipeline(t, env.token)
			rec := cutPipeline(t, env.g, &pc, upstreamHeaders("application/json; charset=UTF-8"), c.cut)
			if rec.Status != c.status || rec.Reason != c.reason || rec.Estimated || rec.Tokens != c.tokens {
				t.Errorf("record %s reason %q estimated %v %+v, want %s %q %+v",
					rec.Status, rec.Reason, rec.Estimated, rec.Tokens, c.status, c.reason, c.tokens)
			}
		})
	}
}

// TestSettleGeminiUsageWithoutCounts: a usageMetadata that holds no token
// count (Vertex-style early chunks carry only trafficType; the final chunk
// alone has the counts) is no running total: a stream abandoned before
// the counts came is estimated from its request and text, as with no
// usageMetadata at all, not billed as zero tokens.
func TestSettleGeminiUsageWithoutCounts(t *testing.T) {
	chunk := func(meta string) string {
		return `data: {"candidates":[{"content":{"parts":[{"text":"Once upon a time there was a cat"}],"role":"model"},"index":0}]` + meta + "}\r\n\r\n"
	}
	env := newBenchEnv(t)
	for _, tc := range []struct{ name, response string }{
		{"no usageMetadata", chunk("") + chunk("")},
		{"usageMetadata without counts", chunk(`,"usageMetadata":{"trafficType":"ON_DEMAND"}`) + chunk(`,"usageMetadata":{}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := streamCase{provider: "gemini", target: geminiSSE, body: geminiBody, response: tc.response}
			pc := c.pipeline(t, env.token)
			rec := cutPipeline(t, env.g, &pc, upstreamHeaders("text/event-stream"), gateway.ClientGone)
			if rec.Status != usage.StatusAbandoned || !rec.Estimated || rec.Input == 0 || rec.Output < 2*int64(len(`"Once upon a time there was a cat"`))/4 {
				t.Errorf("record %s estimated=%v %+v, want an abandoned estimate of the request's input and the text's output",
					rec.Status, rec.Estimated, rec.Tokens)
			}
		})
	}
}

// TestSettleGeminiCountsInRange: Gemini's uncached input is a sum
// (promptTokenCount − cached + toolUsePromptTokenCount) and its output
// another (candidates + thoughts), so counts each within usage.MaxCount can
// add up beyond it. The record holds every count within MaxCount, as the
// ledger requires: a record beyond it is refused and the request never
// billed.
func TestSettleGeminiCountsInRange(t *testing.T) {
	const huge = `{"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"finishReason":"STOP","index":0}],` +
		`"usageMetadata":{"promptTokenCount":1099511627776,"toolUsePromptTokenCount":5,"candidatesTokenCount":1099511627776,"thoughtsTokenCount":9}}`
	runStreamCases(t, []streamCase{{
		name: "sums beyond MaxCount", provider: "gemini", target: geminiSSE, body: geminiBody,
		response: "data: " + huge + "\r\n\r\n",
		status:   usage.StatusOK, tokens: usage.Tokens{Input: usage.MaxCount, Output: usage.MaxCount, Reasoning: 9},
	}})
}
