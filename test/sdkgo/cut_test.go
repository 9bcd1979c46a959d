package sdkgo_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// cutHeads are the first event of each stream shape; the upstream below
// sends one and then drops the connection.
var cutHeads = map[string]string{
	"/v1/chat/completions": `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"delta":{"role":"assistant","content":"Once"},"finish_reason":null}]}` + "\n\n",
	"/v1/responses": "event: response.created\n" + `data: {"type":"response.created","sequence_number":0,` +
		`"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4o-mini","output":[]}}` + "\n\n",
	"/v1/messages": "event: message_start\n" + `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",` +
		`"model":"claude-3-5-haiku-20241022","content":[],"stop_reason":null,"usage":{"input_tokens":7,"output_tokens":1}}}` + "\n\n",
	"/v1beta/models/gemini-2.5-flash:streamGenerateContent": `data: {"candidates":[{"content":{"parts":[{"text":"Once"}],"role":"model"}}],` +
		`"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1,"totalTokenCount":8}}` + "\r\n\r\n",
}

// TestUpstreamCutRaisesInSDKs: when the provider's connection drops in the
// middle of a stream, the gateway ends the client's stream with the
// provider's in-stream error, and every official Go SDK reports it as an
// error: a cut answer must never look complete.
func TestUpstreamCutRaisesInSDKs(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head, ok := cutHeads[r.URL.Path]
		if !ok {
			http.Error(w, "unexpected path "+r.URL.Path, http.StatusNotFound)
			return
		}
		w.Header().Set("content-type", "text/event-stream")
		_, _ = w.Write([]byte(head))
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(upstream.Close)
	dev := harness.StartDev(t, "--upstream", "openai="+upstream.URL, "--upstream", "anthropic="+upstream.URL,
		"--upstream", "gemini="+upstream.URL)
	for k, v := range dev.Env(t) {
		t.Setenv(k, v)
	}
	ctx := context.Background()

	cases := []struct {
		name string
		run  func(t *testing.T) (events int, err error)
	}{
		{"openai chat", func(t *testing.T) (int, error) {
			client := openai.NewClient()
			st := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			})
			return countEvents(st)
		}},
		{"openai responses", func(t *testing.T) (int, error) {
			client := openai.NewClient()
			st := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
				Model: "gpt-4o-mini", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
			})
			return countEvents(st)
		}},
		{"anthropic messages", func(t *testing.T) (int, error) {
			client := anthropic.NewClient()
			st := client.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
				Model: "claude-3-5-haiku-20241022", MaxTokens: 100,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
			})
			return countEvents(st)
		}},
		{"gemini stream", func(t *testing.T) (int, error) {
			client, err := genai.NewClient(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			return countGemini(client.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text("hi"), nil))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := c.run(t)
			if n != 1 {
				t.Errorf("the SDK saw %d events before the cut, want the 1 the provider sent", n)
			}
			if err == nil {
				t.Fatal("the stream ended without an error: the SDK takes the cut answer as complete")
			}
			if errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "upstream stream ended unexpectedly") {
				t.Errorf("error %q, want the gateway's upstream error", err)
			}
		})
	}

	dev.Stop(t)
	recs := harness.UsageIn(t, dev.DataDir)
	if len(recs) != len(cases) {
		t.Fatalf("%d usage records, want %d", len(recs), len(cases))
	}
	for _, r := range recs {
		if r.Status != usage.StatusError || r.Reason != "upstream_error" {
			t.Errorf("%s %s: record status %q reason %q, want an upstream error", r.Provider, r.Operation, r.Status, r.Reason)
		}
	}
}
