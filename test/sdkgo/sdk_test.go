// Package sdkgo_test drives the official Go SDKs of OpenAI, Anthropic and
// Gemini, unchanged and unconfigured, through `tollgate dev --mock`: the
// clients are built with no options at all and find the gateway only
// through the variables `tollgate env` prints. Every call that reaches the
// mock must be metered in the ledger exactly as the mock billed it; calls
// the gateway refuses must never reach the mock and must be recorded as
// rejected; neither the gateway's log nor the ledger may hold prompt text
// or keys.
package sdkgo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/sdkusage"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// marker is in every prompt; it must never show up in logs or the ledger.
const marker = "zebra-quokka-7731"

// Garbage keys for the bad-key calls; distinctive so a leak is found.
const (
	badOpenAIKey    = "sk-garbage-okapi-4417"
	badAnthropicKey = "sk-ant-garbage-okapi-4418"
	badGeminiKey    = "AIza-garbage-okapi-4419"
)

const requestIDHeader = "X-Tollgate-Request-Id"

func TestMain(m *testing.M) {
	harness.UnsetSDKEnv()
	os.Exit(m.Run())
}

// call is one SDK call and what the ledger must say about it.
type call struct {
	name     string
	provider string
	model    string
	op       string // usage.Record.Operation
	stream   bool
	reqID    string // x-tollgate-request-id, when the SDK exposes it
	// reject is the reason code of a call the gateway must refuse (and the
	// mock never see); status its HTTP status.
	reject string
	status int
	// estimated: the wire carries no usage (Gemini embeddings).
	estimated bool

	before map[string]int  // mock records per provider before the call
	served *harness.Served // what the mock received, for forwarded calls
	done   bool
}

type suite struct {
	dev   harness.FrontDoor
	calls []*call
}

func servedCounts(all []harness.Served) map[string]int {
	n := map[string]int{}
	for _, s := range all {
		n[s.Provider]++
	}
	return n
}

// begin registers a call and snapshots the mock's log.
func (s *suite) begin(t *testing.T, c call) *call {
	t.Helper()
	c.name = t.Name()
	c.before = servedCounts(s.dev.Served(t))
	cp := &c
	s.calls = append(s.calls, cp)
	return cp
}

// end checks what reached the mock during the call: exactly one request
// to the call's provider, or nothing at all for a rejected call.
func (s *suite) end(t *testing.T, c *call) {
	t.Helper()
	all := s.dev.Served(t)
	var fresh []harness.Served
	seen := map[string]int{}
	for _, sv := range all {
		seen[sv.Provider]++
		if seen[sv.Provider] > c.before[sv.Provider] {
			fresh = append(fresh, sv)
		}
	}
	if c.reject != "" {
		if len(fresh) != 0 {
			t.Errorf("a call the gateway must refuse reached the mock: %s %s%s", fresh[0].Method, fresh[0].Path, query(fresh[0].RawQuery))
		}
		c.done = true
		return
	}
	if len(fresh) != 1 {
		for _, f := range fresh {
			t.Logf("mock received: %s %s %s%s status %d", f.Provider, f.Method, f.Path, query(f.RawQuery), f.Status)
		}
		t.Fatalf("the mock received %d requests for this call, want exactly 1", len(fresh))
	}
	sv := fresh[0]
	if sv.Provider != c.provider || sv.Model != c.model || sv.Status != http.StatusOK || sv.Stream != c.stream {
		t.Fatalf("mock record: provider %q model %q status %d stream %v; want %s %s 200 stream %v",
			sv.Provider, sv.Model, sv.Status, sv.Stream, c.provider, c.model, c.stream)
	}
	if sv.Aborted || sv.MidstreamError {
		t.Fatalf("mock record aborted=%v midstream_error=%v", sv.Aborted, sv.MidstreamError)
	}
	c.served = &sv
	c.done = true
}

func query(q string) string {
	if q == "" {
		return ""
	}
	return "?" + q
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func prompt(s string) string { return s + " (" + marker + ")" }

func wantTokens(t *testing.T, what string, got, want usage.Tokens) {
	t.Helper()
	if got != want {
		t.Errorf("%s: %+v, want %+v", what, got, want)
	}
}

func mustID(t *testing.T, h http.Header) string {
	t.Helper()
	id := h.Get(requestIDHeader)
	if id == "" {
		t.Errorf("response has no %s header", requestIDHeader)
	}
	return id
}

// ---- the test ----

// TestOfficialGoSDKs runs the suite through each front door: `tollgate dev
// --mock` (the standalone proxy), and the Envoy sidecar path (envoysim from
// the sidecar bootstrap, ext_proc to `tollgate serve`). Both must give the
// same results.
func TestOfficialGoSDKs(t *testing.T) {
	for _, door := range harness.Doors {
		t.Run(door, func(t *testing.T) { officialGoSDKs(t, door) })
	}
}

func officialGoSDKs(t *testing.T, door string) {
	catalogFile := filepath.Join(harness.RepoRoot(), "test", "testdata", "catalog-embeddings.yaml")
	// Debug logging makes the privacy check below cover everything the
	// gateway can log.
	dev := harness.StartDoor(t, door, harness.DoorOptions{Catalog: catalogFile, LogLevel: "debug"})
	env := dev.Env(t)
	wantVars := []string{
		"OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
		"GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "AI_GATEWAY_KEY", "AI_GATEWAY_BASE_URL",
	}
	var got []string
	for k := range env {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(wantVars)
	if !slices.Equal(got, wantVars) {
		t.Fatalf("tollgate env --json sets %v, want %v", got, wantVars)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	if tok := dev.GatewayToken(); env["OPENAI_API_KEY"] != tok || env["ANTHROPIC_API_KEY"] != tok || env["GEMINI_API_KEY"] != tok {
		t.Fatal("the key variables are not the dev gateway token")
	}

	s := &suite{dev: dev}
	t.Run("openai", s.openAI)
	t.Run("anthropic", s.anthropic)
	t.Run("gemini", s.gemini)

	// Stop the gateway: it flushes every pending record on the way out, so
	// the ledger is complete and the log final without any waiting.
	dev.Stop(t)
	t.Run("ledger", s.ledger)
	t.Run("privacy", s.privacy)
}

// ---- OpenAI ----

var oaWeather = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name: "get_weather",
	Parameters: shared.FunctionParameters{
		"type":       "object",
		"properties": map[string]any{"location": map[string]any{"type": "string"}},
		"required":   []string{"location"},
	},
})

var oaTime = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name: "get_time",
	Parameters: shared.FunctionParameters{
		"type":       "object",
		"properties": map[string]any{"zone": map[string]any{"type": "string"}},
		"required":   []string{"zone"},
	},
})

func (s *suite) openAI(t *testing.T) {
	client := openai.NewClient()

	t.Run("chat", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions"})
		var raw *http.Response
		r, err := client.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("hi [[mock usage input=11 cached=5 output=9 reasoning=4]]"))},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(r.Choices) != 1 || r.Choices[0].Message.Content != c.served.Reply || r.Choices[0].Message.Content == "" {
			t.Fatalf("reply %+v, mock sent %q", r.Choices, c.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIChat(r.Usage), c.served.Usage)
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{Input: 11, CachedInput: 5, Output: 9, Reasoning: 4})
		if r.Usage.PromptTokens != 16 || r.Usage.TotalTokens != 25 {
			t.Errorf("native usage %+v", r.Usage)
		}
	})

	t.Run("responses", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses"})
		var raw *http.Response
		r, err := client.Responses.New(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt("hi [[mock usage cached=3 reasoning=2]]"))},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if r.OutputText() != c.served.Reply || r.Status != "completed" {
			t.Fatalf("reply %q status %q, mock sent %q", r.OutputText(), r.Status, c.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIResponses(r.Usage), c.served.Usage)
		if c.served.Usage.CachedInput != 3 || c.served.Usage.Reasoning != 2 {
			t.Errorf("ground truth %+v", c.served.Usage)
		}
	})

	t.Run("chat stream without stream_options", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true})
		var raw *http.Response
		st := client.Chat.Completions.NewStreaming(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("tell me a joke [[mock usage cached=4 reasoning=1]]"))},
		}, ooption.WithResponseInto(&raw))
		acc := openai.ChatCompletionAccumulator{}
		n := 0
		for st.Next() {
			ch := st.Current()
			n++
			if len(ch.Choices) == 0 {
				t.Errorf("chunk %d has no choices (the gateway's injected usage chunk leaked): %s", n, ch.RawJSON())
			}
			if ch.JSON.Usage.Valid() || ch.Usage.TotalTokens != 0 {
				t.Errorf("chunk %d carries usage the client did not ask for: %s", n, ch.RawJSON())
			}
			acc.AddChunk(ch)
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if n == 0 || acc.Choices[0].Message.Content != c.served.Reply {
			t.Fatalf("%d chunks, text %q, mock sent %q", n, acc.Choices[0].Message.Content, c.served.Reply)
		}
		if acc.Usage.TotalTokens != 0 {
			t.Errorf("client saw usage %+v", acc.Usage)
		}
		// The gateway asked for usage upstream on the client's behalf.
		var body struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(c.served.Body, &body); err != nil || !body.StreamOptions.IncludeUsage {
			t.Errorf("upstream body lacks stream_options.include_usage=true: %s", c.served.Body)
		}
		if c.served.NoUsageOnWire || len(c.served.Native) == 0 {
			t.Errorf("mock sent no usage upstream (no_usage_on_wire=%v)", c.served.NoUsageOnWire)
		}
		if c.served.Usage.CachedInput != 4 || c.served.Usage.Reasoning != 1 {
			t.Errorf("ground truth %+v", c.served.Usage)
		}
	})

	t.Run("chat stream with include_usage", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true})
		var raw *http.Response
		st := client.Chat.Completions.NewStreaming(callCtx(t), openai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("another joke [[mock usage input=21 cached=8 output=6]]"))},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}, ooption.WithResponseInto(&raw))
		acc := openai.ChatCompletionAccumulator{}
		usageChunks := 0
		for st.Next() {
			ch := st.Current()
			if len(ch.Choices) == 0 && ch.JSON.Usage.Valid() {
				usageChunks++
			}
			acc.AddChunk(ch)
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if usageChunks != 1 {
			t.Errorf("client saw %d usage chunks, want 1", usageChunks)
		}
		if acc.Choices[0].Message.Content != c.served.Reply {
			t.Errorf("text %q, mock sent %q", acc.Choices[0].Message.Content, c.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIChat(acc.Usage), c.served.Usage)
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{Input: 21, CachedInput: 8, Output: 6})
	})

	t.Run("responses stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses", stream: true})
		var raw *http.Response
		st := client.Responses.NewStreaming(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt("a joke please [[mock usage input=30 cached=10 output=7 reasoning=3]]"))},
		}, ooption.WithResponseInto(&raw))
		text := ""
		var final responses.Response
		completed := 0
		for st.Next() {
			ev := st.Current()
			switch ev.Type {
			case "response.output_text.delta":
				text += ev.Delta
			case "response.completed":
				final = ev.Response
				completed++
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if completed != 1 || text != c.served.Reply || final.OutputText() != c.served.Reply {
			t.Fatalf("completed %d, text %q / %q, mock sent %q", completed, text, final.OutputText(), c.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIResponses(final.Usage), c.served.Usage)
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{Input: 30, CachedInput: 10, Output: 7, Reasoning: 3})
	})

	chatTool := func(stream bool) func(t *testing.T) {
		return func(t *testing.T) {
			c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: stream})
			var raw *http.Response
			p := openai.ChatCompletionNewParams{
				Model:    "gpt-4o-mini",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("weather in Oslo? [[mock tool]]"))},
				Tools:    []openai.ChatCompletionToolUnionParam{oaWeather},
			}
			var msg openai.ChatCompletionMessage
			var u openai.CompletionUsage
			if stream {
				st := client.Chat.Completions.NewStreaming(callCtx(t), p, ooption.WithResponseInto(&raw))
				acc := openai.ChatCompletionAccumulator{}
				var finished []openai.FinishedChatCompletionToolCall
				for st.Next() {
					ch := st.Current()
					if len(ch.Choices) == 0 || ch.JSON.Usage.Valid() {
						t.Errorf("client saw a usage chunk it did not ask for: %s", ch.RawJSON())
					}
					acc.AddChunk(ch)
					if tc, ok := acc.JustFinishedToolCall(); ok {
						finished = append(finished, tc)
					}
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				if len(finished) != 1 || finished[0].Name != "get_weather" {
					t.Errorf("accumulator finished tool calls: %+v", finished)
				}
				msg, u = acc.Choices[0].Message, acc.Usage
			} else {
				r, err := client.Chat.Completions.New(callCtx(t), p, ooption.WithResponseInto(&raw))
				if err != nil {
					t.Fatal(err)
				}
				if r.Choices[0].FinishReason != "tool_calls" {
					t.Errorf("finish reason %q", r.Choices[0].FinishReason)
				}
				msg, u = r.Choices[0].Message, r.Usage
			}
			c.reqID = mustID(t, raw.Header)
			s.end(t, c)
			if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Function.Name != "get_weather" || msg.ToolCalls[0].ID == "" {
				t.Fatalf("tool calls: %+v", msg.ToolCalls)
			}
			var args map[string]any
			if err := json.Unmarshal([]byte(msg.ToolCalls[0].Function.Arguments), &args); err != nil || args["location"] == nil {
				t.Errorf("arguments %q", msg.ToolCalls[0].Function.Arguments)
			}
			if !c.served.ToolCall {
				t.Error("mock did not answer with a tool call")
			}
			if stream {
				if u.TotalTokens != 0 {
					t.Errorf("client saw usage %+v", u)
				}
			} else {
				wantTokens(t, "SDK usage", sdkusage.OpenAIChat(u), c.served.Usage)
			}
		}
	}
	t.Run("chat tool", chatTool(false))
	t.Run("chat tool stream", chatTool(true))

	t.Run("responses tool", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses"})
		var raw *http.Response
		r, err := client.Responses.New(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt("weather in Lima? [[mock tool]]"))},
			Tools: []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{
				Name:       "get_weather",
				Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
				Strict:     openai.Bool(true),
			}}},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(r.Output) != 1 || r.Output[0].Type != "function_call" || r.Output[0].Name != "get_weather" {
			t.Fatalf("output %+v", r.Output)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIResponses(r.Usage), c.served.Usage)
	})

	// Structured outputs: an app unmarshals the model's content into its
	// own type (Node's parse helpers do it for it), so the mock must answer
	// JSON that fits the schema, not a joke.
	t.Run("chat structured output", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions"})
		var raw *http.Response
		r, err := client.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("extract the event"))},
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "event", Schema: eventSchema, Strict: openai.Bool(true)},
			}},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		content := r.Choices[0].Message.Content
		if content != c.served.Reply {
			t.Errorf("content %q, mock sent %q", content, c.served.Reply)
		}
		checkEvent(t, content)
		wantTokens(t, "SDK usage", sdkusage.OpenAIChat(r.Usage), c.served.Usage)
	})

	t.Run("chat structured output stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true})
		var raw *http.Response
		st := client.Chat.Completions.NewStreaming(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("extract the event [[mock chunks=4]]"))},
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "event", Schema: eventSchema, Strict: openai.Bool(true)},
			}},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}, ooption.WithResponseInto(&raw))
		acc := openai.ChatCompletionAccumulator{}
		n := 0
		for st.Next() {
			n++
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		checkEvent(t, acc.Choices[0].Message.Content)
		if n < 4 {
			t.Errorf("%d chunks, want the JSON streamed in pieces", n)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIChat(acc.Usage), c.served.Usage)
	})

	t.Run("chat json mode", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions"})
		var raw *http.Response
		r, err := client.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
			Model:          "gpt-4o-mini",
			Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("answer in JSON"))},
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		var v map[string]any
		if err := json.Unmarshal([]byte(r.Choices[0].Message.Content), &v); err != nil {
			t.Errorf("JSON mode content is not a JSON object: %q (%v)", r.Choices[0].Message.Content, err)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIChat(r.Usage), c.served.Usage)
	})

	t.Run("responses structured output", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses", stream: true})
		var raw *http.Response
		st := client.Responses.NewStreaming(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt("extract the event"))},
			Text: responses.ResponseTextConfigParam{Format: responses.ResponseFormatTextConfigUnionParam{
				OfJSONSchema: &responses.ResponseFormatTextJSONSchemaConfigParam{Name: "event", Schema: eventSchema, Strict: openai.Bool(true)},
			}},
		}, ooption.WithResponseInto(&raw))
		var final responses.Response
		for st.Next() {
			if ev := st.Current(); ev.Type == "response.completed" {
				final = ev.Response
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		checkEvent(t, final.OutputText())
		wantTokens(t, "SDK usage", sdkusage.OpenAIResponses(final.Usage), c.served.Usage)
	})

	t.Run("chat tool result", func(t *testing.T) {
		first := []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("weather in Oslo? [[mock tool]]"))}
		p := openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: first, Tools: []openai.ChatCompletionToolUnionParam{oaWeather}}
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions"})
		var raw *http.Response
		r, err := client.Chat.Completions.New(callCtx(t), p, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(r.Choices[0].Message.ToolCalls) != 1 {
			t.Fatalf("tool calls %+v", r.Choices[0].Message.ToolCalls)
		}
		p.Messages = append(first, r.Choices[0].Message.ToParam(),
			openai.ToolMessage("sunny, 21°C", r.Choices[0].Message.ToolCalls[0].ID))
		c2 := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions"})
		r2, err := client.Chat.Completions.New(callCtx(t), p, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c2.reqID = mustID(t, raw.Header)
		s.end(t, c2)
		if r2.Choices[0].FinishReason != "stop" || r2.Choices[0].Message.Content != c2.served.Reply || len(r2.Choices[0].Message.ToolCalls) != 0 {
			t.Fatalf("second turn %+v", r2.Choices[0])
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIChat(r2.Usage), c2.served.Usage)
	})

	// n > 1: an app that asks for several candidates reads each choice.
	chatN := func(stream, includeUsage bool) func(t *testing.T) {
		return func(t *testing.T) {
			c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: stream})
			var raw *http.Response
			p := openai.ChatCompletionNewParams{
				Model:    "gpt-4o-mini",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("three jokes"))},
				N:        openai.Int(3),
			}
			var choices []openai.ChatCompletionChoice
			var u openai.CompletionUsage
			if stream {
				if includeUsage {
					p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
				}
				st := client.Chat.Completions.NewStreaming(callCtx(t), p, ooption.WithResponseInto(&raw))
				acc := openai.ChatCompletionAccumulator{}
				for st.Next() {
					ch := st.Current()
					if !includeUsage && (len(ch.Choices) == 0 || ch.JSON.Usage.Valid()) {
						t.Errorf("client saw a usage chunk it did not ask for: %s", ch.RawJSON())
					}
					acc.AddChunk(ch)
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				choices, u = acc.Choices, acc.Usage
			} else {
				r, err := client.Chat.Completions.New(callCtx(t), p, ooption.WithResponseInto(&raw))
				if err != nil {
					t.Fatal(err)
				}
				choices, u = r.Choices, r.Usage
			}
			c.reqID = mustID(t, raw.Header)
			s.end(t, c)
			if len(choices) != 3 {
				t.Fatalf("%d choices, want 3", len(choices))
			}
			var out int64
			for i, ch := range choices {
				if ch.Index != int64(i) || ch.Message.Content == "" || ch.FinishReason != "stop" {
					t.Errorf("choice %d: %+v", i, ch)
				}
				out += int64(len(strings.Fields(ch.Message.Content)))
			}
			if stream && !includeUsage {
				if u.TotalTokens != 0 {
					t.Errorf("client saw usage %+v", u)
				}
			} else {
				wantTokens(t, "SDK usage", sdkusage.OpenAIChat(u), c.served.Usage)
			}
			if c.served.Usage.Output != out {
				t.Errorf("output billed %d, the choices hold %d words", c.served.Usage.Output, out)
			}
		}
	}
	t.Run("chat n", chatN(false, false))
	t.Run("chat n stream", chatN(true, true))
	t.Run("chat n stream without stream_options", chatN(true, false))

	// logprobs: apps read per-token log probabilities (confidence scores).
	chatLogprobs := func(stream bool) func(t *testing.T) {
		return func(t *testing.T) {
			c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: stream})
			var raw *http.Response
			p := openai.ChatCompletionNewParams{
				Model:       "gpt-4o-mini",
				Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("a joke"))},
				Logprobs:    openai.Bool(true),
				TopLogprobs: openai.Int(2),
			}
			var choice openai.ChatCompletionChoice
			var u openai.CompletionUsage
			if stream {
				p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
				st := client.Chat.Completions.NewStreaming(callCtx(t), p, ooption.WithResponseInto(&raw))
				acc := openai.ChatCompletionAccumulator{}
				for st.Next() {
					acc.AddChunk(st.Current())
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				choice, u = acc.Choices[0], acc.Usage
			} else {
				r, err := client.Chat.Completions.New(callCtx(t), p, ooption.WithResponseInto(&raw))
				if err != nil {
					t.Fatal(err)
				}
				choice, u = r.Choices[0], r.Usage
			}
			c.reqID = mustID(t, raw.Header)
			s.end(t, c)
			lp := choice.Logprobs.Content
			if len(lp) == 0 {
				t.Fatalf("no logprobs for %q", choice.Message.Content)
			}
			joined := ""
			for i, tok := range lp {
				joined += tok.Token
				if tok.Logprob > 0 || len(tok.TopLogprobs) != 2 || tok.TopLogprobs[0].Token != tok.Token || len(tok.Bytes) != len(tok.Token) {
					t.Errorf("token %d: %+v", i, tok)
				}
			}
			if joined != choice.Message.Content {
				t.Errorf("logprob tokens spell %q, content %q", joined, choice.Message.Content)
			}
			wantTokens(t, "SDK usage", sdkusage.OpenAIChat(u), c.served.Usage)
		}
	}
	t.Run("chat logprobs", chatLogprobs(false))
	t.Run("chat logprobs stream", chatLogprobs(true))

	// Parallel tool calls: [[mock parallel_tools]] calls every declared
	// tool; the accumulator must finish each and the app answers each.
	t.Run("chat parallel tools stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "chat.completions", stream: true})
		var raw *http.Response
		st := client.Chat.Completions.NewStreaming(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("weather and time in Oslo? [[mock parallel_tools]]"))},
			Tools:    []openai.ChatCompletionToolUnionParam{oaWeather, oaTime},
		}, ooption.WithResponseInto(&raw))
		acc := openai.ChatCompletionAccumulator{}
		var finished []string
		for st.Next() {
			acc.AddChunk(st.Current())
			if tc, ok := acc.JustFinishedToolCall(); ok {
				finished = append(finished, tc.Name)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		tcs := acc.Choices[0].Message.ToolCalls
		if len(tcs) != 2 || tcs[0].Function.Name != "get_weather" || tcs[1].Function.Name != "get_time" || tcs[0].ID == tcs[1].ID ||
			!slices.Equal(finished, []string{"get_weather", "get_time"}) {
			t.Fatalf("tool calls %+v, finished %v", tcs, finished)
		}
		for _, tc := range tcs {
			if !json.Valid([]byte(tc.Function.Arguments)) {
				t.Errorf("arguments %q", tc.Function.Arguments)
			}
		}
	})

	t.Run("responses parallel tools", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses", stream: true})
		var raw *http.Response
		fn := func(name, prop string) responses.ToolUnionParam {
			return responses.ToolUnionParam{OfFunction: &responses.FunctionToolParam{
				Name:       name,
				Parameters: map[string]any{"type": "object", "properties": map[string]any{prop: map[string]any{"type": "string"}}, "required": []string{prop}},
				Strict:     openai.Bool(true),
			}}
		}
		st := client.Responses.NewStreaming(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt("weather and time in Lima? [[mock parallel_tools]]"))},
			Tools: []responses.ToolUnionParam{fn("get_weather", "city"), fn("get_time", "zone")},
		}, ooption.WithResponseInto(&raw))
		args := map[int64]string{}
		var final responses.Response
		for st.Next() {
			switch ev := st.Current(); ev.Type {
			case "response.function_call_arguments.delta":
				args[ev.OutputIndex] += ev.Delta
			case "response.completed":
				final = ev.Response
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(final.Output) != 2 || final.Output[0].Name != "get_weather" || final.Output[1].Name != "get_time" ||
			args[0] != final.Output[0].Arguments.OfString || args[1] != final.Output[1].Arguments.OfString || final.Output[0].CallID == final.Output[1].CallID {
			t.Fatalf("output %+v, streamed arguments %v", final.Output, args)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIResponses(final.Usage), c.served.Usage)
	})

	t.Run("responses tool stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses", stream: true})
		var raw *http.Response
		st := client.Responses.NewStreaming(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt("weather in Lima? [[mock tool]]"))},
			Tools: []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{
				Name:       "get_weather",
				Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
				Strict:     openai.Bool(true),
			}}},
		}, ooption.WithResponseInto(&raw))
		args, done := "", ""
		var final responses.Response
		for st.Next() {
			switch ev := st.Current(); ev.Type {
			case "response.function_call_arguments.delta":
				args += ev.Delta
			case "response.function_call_arguments.done":
				done = ev.Arguments
			case "response.completed":
				final = ev.Response
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if args == "" || args != done || len(final.Output) != 1 || final.Output[0].Arguments.OfString != args {
			t.Fatalf("deltas %q, done %q, final %+v", args, done, final.Output)
		}
		// The tool result goes back in the next turn.
		c2 := s.begin(t, call{provider: "openai", model: "gpt-4o-mini", op: "responses"})
		r, err := client.Responses.New(callCtx(t), responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				responses.ResponseInputItemParamOfMessage(prompt("weather in Lima? [[mock tool]]"), responses.EasyInputMessageRoleUser),
				responses.ResponseInputItemParamOfFunctionCall(args, final.Output[0].CallID, "get_weather"),
				{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{
					CallID: openai.String(final.Output[0].CallID),
					Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: openai.String("sunny")},
				}},
			}},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c2.reqID = mustID(t, raw.Header)
		s.end(t, c2)
		if r.OutputText() != c2.served.Reply || c2.served.ToolCall {
			t.Fatalf("second turn %q, mock sent %q", r.OutputText(), c2.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.OpenAIResponses(r.Usage), c2.served.Usage)
	})

	t.Run("embeddings", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "text-embedding-3-small", op: "embeddings"})
		var raw *http.Response
		r, err := client.Embeddings.New(callCtx(t), openai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{prompt("hello world"), prompt("goodbye")}},
		}, ooption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(r.Data) != 2 || len(r.Data[0].Embedding) == 0 || r.Data[1].Index != 1 {
			t.Fatalf("embeddings: %d items", len(r.Data))
		}
		wantTokens(t, "SDK usage", usage.Tokens{Input: r.Usage.PromptTokens}, c.served.Usage)
		if r.Usage.TotalTokens != r.Usage.PromptTokens || c.served.Usage.Input == 0 {
			t.Errorf("usage %+v, ground truth %+v", r.Usage, c.served.Usage)
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		c := s.begin(t, call{provider: "openai", model: "gpt-9", op: "chat.completions", reject: "model_not_found", status: 404})
		_, err := client.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-9",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("hi"))},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("want *openai.Error, got %T %v", err, err)
		}
		if apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || apiErr.Type != "invalid_request_error" {
			t.Errorf("status %d code %q type %q: %s", apiErr.StatusCode, apiErr.Code, apiErr.Type, apiErr.RawJSON())
		}
		c.reqID = mustID(t, apiErr.Response.Header)
		s.end(t, c)
	})

	t.Run("bad key", func(t *testing.T) {
		t.Setenv("OPENAI_API_KEY", badOpenAIKey)
		bad := openai.NewClient()
		c := s.begin(t, call{provider: "openai", op: "chat.completions", reject: "invalid_token", status: 401})
		_, err := bad.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt("hi"))},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("want *openai.Error, got %T %v", err, err)
		}
		if apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
			t.Errorf("status %d code %q: %s", apiErr.StatusCode, apiErr.Code, apiErr.RawJSON())
		}
		if got := apiErr.Request.Header.Get("Authorization"); got != "Bearer "+badOpenAIKey {
			t.Errorf("SDK sent Authorization %q", got)
		}
		c.reqID = mustID(t, apiErr.Response.Header)
		s.end(t, c)
	})
}

// ---- Anthropic ----

var anthWeather = anthropic.ToolUnionParam{OfTool: &anthropic.ToolParam{
	Name: "get_weather",
	InputSchema: anthropic.ToolInputSchemaParam{
		Properties: map[string]any{"city": map[string]any{"type": "string"}},
		Required:   []string{"city"},
	},
}}

// eventSchema is a structured-output schema in the shape generators
// (Pydantic, zod-to-json-schema) write: a nested definition by $ref, an
// enum, an array with minItems, a date-time string, a nullable field.
var eventSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"title":     map[string]any{"type": "string"},
		"attendees": map[string]any{"type": "integer", "minimum": 2},
		"kind":      map[string]any{"type": "string", "enum": []string{"meeting", "party"}},
		"starts":    map[string]any{"type": "string", "format": "date-time"},
		"online":    map[string]any{"type": "boolean"},
		"notes":     map[string]any{"type": []string{"string", "null"}},
		"place":     map[string]any{"$ref": "#/$defs/Place"},
		"tags":      map[string]any{"type": "array", "items": map[string]any{"type": "string"}, "minItems": 1},
	},
	"required":             []string{"title", "attendees", "kind", "starts", "online", "notes", "place", "tags"},
	"additionalProperties": false,
	"$defs": map[string]any{"Place": map[string]any{
		"type":                 "object",
		"properties":           map[string]any{"city": map[string]any{"type": "string"}},
		"required":             []string{"city"},
		"additionalProperties": false,
	}},
}

// checkEvent unmarshals a structured answer the way an app would and
// checks it fits eventSchema.
func checkEvent(t *testing.T, content string) {
	t.Helper()
	var ev struct {
		Title     *string   `json:"title"`
		Attendees *int      `json:"attendees"`
		Kind      string    `json:"kind"`
		Starts    time.Time `json:"starts"`
		Online    *bool     `json:"online"`
		Notes     *string   `json:"notes"`
		Place     *struct {
			City *string `json:"city"`
		} `json:"place"`
		Tags []string `json:"tags"`
	}
	dec := json.NewDecoder(strings.NewReader(content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("structured answer %q does not fit the schema: %v", content, err)
	}
	if ev.Title == nil || ev.Attendees == nil || *ev.Attendees < 2 || ev.Kind != "meeting" || ev.Starts.IsZero() ||
		ev.Online == nil || ev.Place == nil || ev.Place.City == nil || len(ev.Tags) < 1 {
		t.Errorf("structured answer %q does not fit the schema", content)
	}
}

func anthText(s string) []anthropic.MessageParam {
	return []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt(s)))}
}

func (s *suite) anthropic(t *testing.T) {
	client := anthropic.NewClient()

	t.Run("messages", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages"})
		var raw *http.Response
		m, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 100,
			Messages:  anthText("hi [[mock usage input=3 cached=100 cache_write=40 output=12 reasoning=2]]"),
		}, aoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(m.Content) != 1 || m.Content[0].Text != c.served.Reply || m.StopReason != "end_turn" {
			t.Fatalf("message %+v, mock sent %q", m, c.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.Anthropic(m.Usage), c.served.Usage)
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{Input: 3, CachedInput: 100, CacheWrite: 40, Output: 12, Reasoning: 2})
		if m.Usage.CacheCreation.Ephemeral5mInputTokens != 40 || m.Usage.CacheCreation.Ephemeral1hInputTokens != 0 {
			t.Errorf("cache creation %+v", m.Usage.CacheCreation)
		}
		if c.served.Header.Get("Anthropic-Version") == "" {
			t.Error("anthropic-version did not reach the provider")
		}
	})

	stream := func(tool bool) func(t *testing.T) {
		return func(t *testing.T) {
			c := s.begin(t, call{provider: "anthropic", model: "claude-haiku-4-5", op: "messages", stream: true})
			var raw *http.Response
			p := anthropic.MessageNewParams{
				Model:     "claude-haiku-4-5",
				MaxTokens: 200,
				Messages:  anthText("tell me a joke [[mock usage input=17 cached=7 cache_write=3 output=9]]"),
			}
			if tool {
				p.Messages = anthText("weather in Quito? [[mock tool]] [[mock usage cache_write=5]]")
				p.Tools = []anthropic.ToolUnionParam{anthWeather}
			}
			st := client.Messages.NewStreaming(callCtx(t), p, aoption.WithResponseInto(&raw))
			msg := anthropic.Message{}
			events := 0
			for st.Next() {
				events++
				if err := msg.Accumulate(st.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
			c.reqID = mustID(t, raw.Header)
			s.end(t, c)
			if events == 0 {
				t.Fatal("no stream events")
			}
			wantTokens(t, "SDK usage", sdkusage.Anthropic(msg.Usage), c.served.Usage)
			if tool {
				if len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" || msg.Content[0].Name != "get_weather" || msg.StopReason != "tool_use" {
					t.Fatalf("message %+v", msg)
				}
				var in map[string]any
				if err := json.Unmarshal(msg.Content[0].Input, &in); err != nil || in["city"] == nil {
					t.Errorf("tool input %s", msg.Content[0].Input)
				}
				if c.served.Usage.CacheWrite != 5 {
					t.Errorf("ground truth %+v", c.served.Usage)
				}
			} else {
				if len(msg.Content) != 1 || msg.Content[0].Text != c.served.Reply {
					t.Fatalf("message %+v, mock sent %q", msg, c.served.Reply)
				}
				wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{Input: 17, CachedInput: 7, CacheWrite: 3, Output: 9})
			}
		}
	}
	t.Run("stream", stream(false))
	t.Run("tool stream", stream(true))

	t.Run("parallel tools stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-haiku-4-5", op: "messages", stream: true})
		var raw *http.Response
		st := client.Messages.NewStreaming(callCtx(t), anthropic.MessageNewParams{
			Model: "claude-haiku-4-5", MaxTokens: 200,
			Messages: anthText("weather and time in Quito? [[mock parallel_tools]]"),
			Tools: []anthropic.ToolUnionParam{anthWeather, {OfTool: &anthropic.ToolParam{
				Name:        "get_time",
				InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"zone": map[string]any{"type": "string"}}, Required: []string{"zone"}},
			}}},
		}, aoption.WithResponseInto(&raw))
		msg := anthropic.Message{}
		for st.Next() {
			if err := msg.Accumulate(st.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(msg.Content) != 2 || msg.Content[0].Name != "get_weather" || msg.Content[1].Name != "get_time" || msg.Content[0].ID == msg.Content[1].ID {
			t.Fatalf("content %+v", msg.Content)
		}
		var in map[string]any
		if err := json.Unmarshal(msg.Content[1].Input, &in); err != nil || in["zone"] == nil {
			t.Errorf("second tool input %s", msg.Content[1].Input)
		}
		wantTokens(t, "SDK usage", sdkusage.Anthropic(msg.Usage), c.served.Usage)
	})

	t.Run("tool", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages"})
		var raw *http.Response
		m, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 100,
			Messages:  anthText("weather in Bern? [[mock tool]]"),
			Tools:     []anthropic.ToolUnionParam{anthWeather},
		}, aoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(m.Content) != 1 || m.Content[0].Type != "tool_use" || m.Content[0].Name != "get_weather" || m.StopReason != "tool_use" {
			t.Fatalf("message %+v", m)
		}
		if tu := m.Content[0].AsToolUse(); tu.Name != "get_weather" || tu.ID == "" {
			t.Errorf("tool use %+v", tu)
		}
		wantTokens(t, "SDK usage", sdkusage.Anthropic(m.Usage), c.served.Usage)
	})

	t.Run("structured output", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages"})
		var raw *http.Response
		m, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model:        "claude-sonnet-4-5",
			MaxTokens:    300,
			Messages:     anthText("extract the event"),
			OutputConfig: anthropic.OutputConfigParam{Format: anthropic.JSONOutputFormatParam{Schema: eventSchema}},
		}, aoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(m.Content) != 1 {
			t.Fatalf("content %+v", m.Content)
		}
		checkEvent(t, m.Content[0].Text)
		wantTokens(t, "SDK usage", sdkusage.Anthropic(m.Usage), c.served.Usage)
	})

	// Extended thinking: a thinking block with its signature comes first,
	// streamed as thinking_delta and signature_delta; the app sends it
	// back unchanged with the tool result on the next turn.
	t.Run("thinking tool loop", func(t *testing.T) {
		tools := []anthropic.ToolUnionParam{anthWeather}
		c := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages", stream: true})
		var raw *http.Response
		first := anthText("weather in Quito? [[mock tool]]")
		st := client.Messages.NewStreaming(callCtx(t), anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 2048, Messages: first, Tools: tools,
			Thinking: anthropic.ThinkingConfigParamOfEnabled(1024),
		}, aoption.WithResponseInto(&raw))
		msg := anthropic.Message{}
		deltas := map[string]int{}
		for st.Next() {
			ev := st.Current()
			if ev.Type == "content_block_delta" {
				deltas[ev.Delta.Type]++
			}
			if err := msg.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(msg.Content) != 2 || msg.Content[0].Type != "thinking" || msg.Content[0].Thinking == "" ||
			msg.Content[0].Signature == "" || msg.Content[1].Type != "tool_use" || msg.StopReason != "tool_use" {
			t.Fatalf("message content %+v stop %q", msg.Content, msg.StopReason)
		}
		if deltas["thinking_delta"] == 0 || deltas["signature_delta"] != 1 || deltas["input_json_delta"] == 0 {
			t.Errorf("delta kinds %v", deltas)
		}
		wantTokens(t, "SDK usage", sdkusage.Anthropic(msg.Usage), c.served.Usage)
		if c.served.Usage.Reasoning == 0 || c.served.Usage.Output <= c.served.Usage.Reasoning {
			t.Errorf("ground truth %+v: thinking must be billed as reasoning within output", c.served.Usage)
		}

		c2 := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages"})
		next := append(first, msg.ToParam(),
			anthropic.NewUserMessage(anthropic.NewToolResultBlock(msg.Content[1].ID, "sunny, 21°C", false)))
		m, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 2048, Messages: next, Tools: tools,
			Thinking: anthropic.ThinkingConfigParamOfEnabled(1024),
		}, aoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c2.reqID = mustID(t, raw.Header)
		s.end(t, c2)
		var sent struct {
			Messages []struct {
				Content []struct {
					Type      string `json:"type"`
					Signature string `json:"signature"`
				} `json:"content"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(c2.served.Body, &sent); err != nil || len(sent.Messages) != 3 ||
			len(sent.Messages[1].Content) != 2 || sent.Messages[1].Content[0].Signature != msg.Content[0].Signature {
			t.Errorf("the thinking block did not go back upstream unchanged: %s", c2.served.Body)
		}
		if m.StopReason != "end_turn" || len(m.Content) != 2 || m.Content[0].Type != "thinking" || m.Content[1].Text != c2.served.Reply {
			t.Fatalf("final message %+v, mock sent %q", m.Content, c2.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.Anthropic(m.Usage), c2.served.Usage)
	})

	t.Run("count tokens", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages.count_tokens"})
		var raw *http.Response
		r, err := client.Messages.CountTokens(callCtx(t), anthropic.MessageCountTokensParams{
			Model:    "claude-sonnet-4-5",
			Messages: anthText("how long is this? [[mock usage input=42]]"),
			System:   anthropic.MessageCountTokensParamsSystemUnion{OfString: anthropic.String("be brief")},
		}, aoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if r.InputTokens != 42 {
			t.Errorf("input tokens %d, want 42", r.InputTokens)
		}
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{})
	})

	// A cached system prompt (5-minute TTL, the only one the platform
	// allows) and stop sequences.
	t.Run("cached system and stop sequences", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-sonnet-4-5", op: "messages"})
		var raw *http.Response
		m, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 100,
			System: []anthropic.TextBlockParam{
				{Text: "You are terse."},
				{Text: prompt("a long reference document [[mock usage cache_write=1024 cached=0]]"),
					CacheControl: anthropic.CacheControlEphemeralParam{TTL: anthropic.CacheControlEphemeralTTLTTL5m}},
			},
			StopSequences: []string{"\n\nHuman:"},
			Messages:      anthText("hi"),
		}, aoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = mustID(t, raw.Header)
		s.end(t, c)
		if len(m.Content) != 1 || m.Content[0].Text != c.served.Reply || m.StopReason != "end_turn" {
			t.Fatalf("message %+v, mock sent %q", m, c.served.Reply)
		}
		var sent struct {
			System []struct {
				CacheControl *struct {
					TTL string `json:"ttl"`
				} `json:"cache_control"`
			} `json:"system"`
			StopSequences []string `json:"stop_sequences"`
		}
		if err := json.Unmarshal(c.served.Body, &sent); err != nil || len(sent.System) != 2 || sent.System[1].CacheControl == nil ||
			len(sent.StopSequences) != 1 {
			t.Errorf("upstream body lost the system blocks or stop sequences: %s", c.served.Body)
		}
		wantTokens(t, "SDK usage", sdkusage.Anthropic(m.Usage), c.served.Usage)
		if c.served.Usage.CacheWrite != 1024 {
			t.Errorf("ground truth %+v", c.served.Usage)
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		c := s.begin(t, call{provider: "anthropic", model: "claude-9", op: "messages", reject: "model_not_found", status: 404})
		_, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model: "claude-9", MaxTokens: 10, Messages: anthText("hi"),
		})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("want *anthropic.Error, got %T %v", err, err)
		}
		if apiErr.StatusCode != 404 || apiErr.Type() != "not_found_error" {
			t.Errorf("status %d type %q: %s", apiErr.StatusCode, apiErr.Type(), apiErr.RawJSON())
		}
		var body struct {
			Type  string `json:"type"`
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(apiErr.RawJSON()), &body); err != nil || body.Type != "error" || body.Error.Type != "not_found_error" {
			t.Errorf("error body %s", apiErr.RawJSON())
		}
		c.reqID = mustID(t, apiErr.Response.Header)
		s.end(t, c)
	})

	t.Run("bad key", func(t *testing.T) {
		t.Setenv("ANTHROPIC_API_KEY", badAnthropicKey)
		bad := anthropic.NewClient()
		c := s.begin(t, call{provider: "anthropic", op: "messages", reject: "invalid_token", status: 401})
		_, err := bad.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 10, Messages: anthText("hi"),
		})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("want *anthropic.Error, got %T %v", err, err)
		}
		if apiErr.StatusCode != 401 || apiErr.Type() != "authentication_error" {
			t.Errorf("status %d type %q: %s", apiErr.StatusCode, apiErr.Type(), apiErr.RawJSON())
		}
		if got := apiErr.Request.Header.Get("Authorization"); got != "Bearer "+badAnthropicKey {
			t.Errorf("SDK sent Authorization %q", got)
		}
		c.reqID = mustID(t, apiErr.Response.Header)
		s.end(t, c)
	})
}

// ---- Gemini ----

var gemWeather = &genai.GenerateContentConfig{Tools: []*genai.Tool{{FunctionDeclarations: []*genai.FunctionDeclaration{{
	Name: "get_weather",
	Parameters: &genai.Schema{Type: genai.TypeObject, Required: []string{"city"},
		Properties: map[string]*genai.Schema{"city": {Type: genai.TypeString}}},
}}}}}

func gemID(t *testing.T, h *genai.HTTPResponse) string {
	t.Helper()
	if h == nil {
		t.Errorf("response has no SDKHTTPResponse")
		return ""
	}
	return mustID(t, h.Headers)
}

func (s *suite) gemini(t *testing.T) {
	client, err := genai.NewClient(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cc := client.ClientConfig(); cc.Backend != genai.BackendGeminiAPI {
		t.Fatalf("backend %v, want the Gemini API", cc.Backend)
	}

	t.Run("generateContent", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r, err := client.Models.GenerateContent(callCtx(t), "gemini-2.5-flash",
			genai.Text(prompt("hi [[mock usage input=20 cached=10 output=8 reasoning=3 tool_prompt=4]]")), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		if r.Text() != c.served.Reply || c.served.Reply == "" {
			t.Fatalf("text %q, mock sent %q", r.Text(), c.served.Reply)
		}
		wantTokens(t, "SDK usage", sdkusage.Gemini(r.UsageMetadata), c.served.Usage)
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{Input: 24, CachedInput: 10, Output: 8, Reasoning: 3})
		if u := r.UsageMetadata; u.PromptTokenCount != 30 || u.TotalTokenCount != 30+5+4+3 {
			t.Errorf("native usage %+v", u)
		}
	})

	t.Run("stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true})
		text := ""
		chunks := 0
		var last *genai.GenerateContentResponse
		for ch, err := range client.Models.GenerateContentStream(callCtx(t), "gemini-2.5-flash",
			genai.Text(prompt("a joke [[mock chunks=3]] [[mock usage cached=6 reasoning=2]]")), nil) {
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			text += ch.Text()
			last = ch
		}
		if last == nil {
			t.Fatal("no chunks")
		}
		c.reqID = gemID(t, last.SDKHTTPResponse)
		s.end(t, c)
		if text != c.served.Reply || chunks < 3 || c.served.RawQuery != "alt=sse" {
			t.Fatalf("%d chunks, text %q, mock sent %q (query %q)", chunks, text, c.served.Reply, c.served.RawQuery)
		}
		wantTokens(t, "SDK usage (last chunk)", sdkusage.Gemini(last.UsageMetadata), c.served.Usage)
		if c.served.Usage.CachedInput != 6 || c.served.Usage.Reasoning != 2 {
			t.Errorf("ground truth %+v", c.served.Usage)
		}
	})

	t.Run("tool", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r, err := client.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("weather in Accra? [[mock tool]]")), gemWeather)
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		fc := r.FunctionCalls()
		if len(fc) != 1 || fc[0].Name != "get_weather" || fc[0].Args["city"] == nil {
			t.Fatalf("function calls %+v", fc)
		}
		wantTokens(t, "SDK usage", sdkusage.Gemini(r.UsageMetadata), c.served.Usage)
	})

	t.Run("json schema", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r, err := client.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("extract the event")),
			&genai.GenerateContentConfig{ResponseMIMEType: "application/json", ResponseSchema: &genai.Schema{
				Type: genai.TypeObject,
				Properties: map[string]*genai.Schema{
					"title":     {Type: genai.TypeString},
					"attendees": {Type: genai.TypeInteger, Minimum: genai.Ptr(2.0)},
					"kind":      {Type: genai.TypeString, Enum: []string{"meeting", "party"}},
					"starts":    {Type: genai.TypeString, Format: "date-time"},
					"online":    {Type: genai.TypeBoolean},
					"notes":     {Type: genai.TypeString, Nullable: genai.Ptr(true)},
					"place":     {Type: genai.TypeObject, Properties: map[string]*genai.Schema{"city": {Type: genai.TypeString}}, Required: []string{"city"}},
					"tags":      {Type: genai.TypeArray, Items: &genai.Schema{Type: genai.TypeString}, MinItems: genai.Ptr[int64](1)},
				},
				Required:         []string{"title", "attendees", "kind", "starts", "online", "notes", "place", "tags"},
				PropertyOrdering: []string{"title", "attendees", "kind", "starts", "online", "notes", "place", "tags"},
			}})
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		checkEvent(t, r.Text())
		wantTokens(t, "SDK usage", sdkusage.Gemini(r.UsageMetadata), c.served.Usage)
	})

	t.Run("json schema stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true})
		text := ""
		var last *genai.GenerateContentResponse
		for ch, err := range client.Models.GenerateContentStream(callCtx(t), "gemini-2.5-flash",
			genai.Text(prompt("extract the event [[mock chunks=3]]")),
			&genai.GenerateContentConfig{ResponseMIMEType: "application/json", ResponseJsonSchema: eventSchema}) {
			if err != nil {
				t.Fatal(err)
			}
			text += ch.Text()
			last = ch
		}
		if last == nil {
			t.Fatal("no chunks")
		}
		c.reqID = gemID(t, last.SDKHTTPResponse)
		s.end(t, c)
		checkEvent(t, text)
		wantTokens(t, "SDK usage (last chunk)", sdkusage.Gemini(last.UsageMetadata), c.served.Usage)
	})

	t.Run("json mode", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r, err := client.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("answer in JSON")),
			&genai.GenerateContentConfig{ResponseMIMEType: "application/json"})
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		var v any
		if err := json.Unmarshal([]byte(r.Text()), &v); err != nil {
			t.Errorf("application/json answer is not JSON: %q (%v)", r.Text(), err)
		}
		wantTokens(t, "SDK usage", sdkusage.Gemini(r.UsageMetadata), c.served.Usage)
	})

	// A multi-turn chat: the function call, then the app's function
	// response, then the model's answer.
	t.Run("chat tool loop", func(t *testing.T) {
		chat, err := client.Chats.Create(callCtx(t), "gemini-2.5-flash", gemWeather, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r, err := chat.SendMessage(callCtx(t), genai.Part{Text: prompt("weather in Accra? [[mock tool]]")})
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		fc := r.FunctionCalls()
		if len(fc) != 1 {
			t.Fatalf("function calls %+v", fc)
		}
		c2 := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r2, err := chat.SendMessage(callCtx(t), *genai.NewPartFromFunctionResponse(fc[0].Name, map[string]any{"forecast": "sunny"}))
		if err != nil {
			t.Fatal(err)
		}
		c2.reqID = gemID(t, r2.SDKHTTPResponse)
		s.end(t, c2)
		if len(r2.FunctionCalls()) != 0 || r2.Text() != c2.served.Reply || len(chat.History(false)) != 4 {
			t.Fatalf("second turn %q (mock sent %q), history %d", r2.Text(), c2.served.Reply, len(chat.History(false)))
		}
		wantTokens(t, "SDK usage", sdkusage.Gemini(r2.UsageMetadata), c2.served.Usage)
	})

	t.Run("tool stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true})
		var calls []*genai.FunctionCall
		var last *genai.GenerateContentResponse
		for ch, err := range client.Models.GenerateContentStream(callCtx(t), "gemini-2.5-flash",
			genai.Text(prompt("weather in Accra? [[mock tool]]")), gemWeather) {
			if err != nil {
				t.Fatal(err)
			}
			calls = append(calls, ch.FunctionCalls()...)
			last = ch
		}
		if last == nil {
			t.Fatal("no chunks")
		}
		c.reqID = gemID(t, last.SDKHTTPResponse)
		s.end(t, c)
		if len(calls) != 1 || calls[0].Name != "get_weather" || calls[0].Args["city"] == nil {
			t.Fatalf("function calls %+v", calls)
		}
		wantTokens(t, "SDK usage (last chunk)", sdkusage.Gemini(last.UsageMetadata), c.served.Usage)
	})

	// Thinking: with includeThoughts the thought summary comes as a part
	// marked thought (Text() leaves it out) and thoughtsTokenCount counts
	// it within the billed output.
	t.Run("thinking", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		r, err := client.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("think first")),
			&genai.GenerateContentConfig{ThinkingConfig: &genai.ThinkingConfig{IncludeThoughts: true, ThinkingBudget: genai.Ptr[int32](512)}})
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		parts := r.Candidates[0].Content.Parts
		if len(parts) != 2 || !parts[0].Thought || parts[0].Text == "" || parts[1].Thought || r.Text() != c.served.Reply {
			t.Fatalf("parts %+v, text %q, mock sent %q", parts, r.Text(), c.served.Reply)
		}
		if r.UsageMetadata.ThoughtsTokenCount == 0 {
			t.Errorf("no thoughtsTokenCount: %+v", r.UsageMetadata)
		}
		wantTokens(t, "SDK usage", sdkusage.Gemini(r.UsageMetadata), c.served.Usage)
	})

	t.Run("thinking stream", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "streamGenerateContent", stream: true})
		thoughts, text := "", ""
		var last *genai.GenerateContentResponse
		for ch, err := range client.Models.GenerateContentStream(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("think first")),
			&genai.GenerateContentConfig{ThinkingConfig: &genai.ThinkingConfig{IncludeThoughts: true}}) {
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ch.Candidates[0].Content.Parts {
				if p.Thought {
					thoughts += p.Text
				}
			}
			text += ch.Text()
			last = ch
		}
		if last == nil {
			t.Fatal("no chunks")
		}
		c.reqID = gemID(t, last.SDKHTTPResponse)
		s.end(t, c)
		if thoughts == "" || text != c.served.Reply {
			t.Fatalf("thoughts %q, text %q, mock sent %q", thoughts, text, c.served.Reply)
		}
		wantTokens(t, "SDK usage (last chunk)", sdkusage.Gemini(last.UsageMetadata), c.served.Usage)
	})

	t.Run("parallel tools", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "generateContent"})
		cfg := &genai.GenerateContentConfig{Tools: []*genai.Tool{{FunctionDeclarations: []*genai.FunctionDeclaration{
			gemWeather.Tools[0].FunctionDeclarations[0],
			{Name: "get_time", Parameters: &genai.Schema{Type: genai.TypeObject, Required: []string{"zone"},
				Properties: map[string]*genai.Schema{"zone": {Type: genai.TypeString}}}},
		}}}}
		r, err := client.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("weather and time in Accra? [[mock parallel_tools]]")), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		fc := r.FunctionCalls()
		if len(fc) != 2 || fc[0].Name != "get_weather" || fc[1].Name != "get_time" || fc[1].Args["zone"] == nil {
			t.Fatalf("function calls %+v", fc)
		}
		wantTokens(t, "SDK usage", sdkusage.Gemini(r.UsageMetadata), c.served.Usage)
	})

	t.Run("countTokens", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-2.5-flash", op: "countTokens"})
		r, err := client.Models.CountTokens(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("how long is this? [[mock usage input=37]]")), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		if r.TotalTokens != 37 {
			t.Errorf("total tokens %d, want 37", r.TotalTokens)
		}
		wantTokens(t, "ground truth", c.served.Usage, usage.Tokens{})
	})

	t.Run("embeddings", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-embedding-001", op: "batchEmbedContents", estimated: true})
		r, err := client.Models.EmbedContent(callCtx(t), "gemini-embedding-001",
			[]*genai.Content{genai.NewContentFromText(prompt("hello"), genai.RoleUser), genai.NewContentFromText(prompt("world"), genai.RoleUser)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.reqID = gemID(t, r.SDKHTTPResponse)
		s.end(t, c)
		if len(r.Embeddings) != 2 || len(r.Embeddings[1].Values) == 0 {
			t.Fatalf("embeddings %+v", r.Embeddings)
		}
		if c.served.Endpoint != "batchEmbedContents" || !c.served.NoUsageOnWire || c.served.Usage.Input == 0 {
			t.Errorf("mock record: endpoint %q no_usage_on_wire %v usage %+v", c.served.Endpoint, c.served.NoUsageOnWire, c.served.Usage)
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		c := s.begin(t, call{provider: "gemini", model: "gemini-9", op: "generateContent", reject: "model_not_found", status: 404})
		_, err := client.Models.GenerateContent(callCtx(t), "gemini-9", genai.Text(prompt("hi")), nil)
		var apiErr genai.APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("want genai.APIError, got %T %v", err, err)
		}
		if apiErr.Code != 404 || apiErr.Status != "NOT_FOUND" {
			t.Errorf("code %d status %q message %q", apiErr.Code, apiErr.Status, apiErr.Message)
		}
		s.end(t, c)
	})

	t.Run("bad key", func(t *testing.T) {
		t.Setenv("GEMINI_API_KEY", badGeminiKey)
		bad, err := genai.NewClient(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		c := s.begin(t, call{provider: "gemini", op: "generateContent", reject: "invalid_token", status: 400})
		_, err = bad.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt("hi")), nil)
		var apiErr genai.APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("want genai.APIError, got %T %v", err, err)
		}
		reason := ""
		for _, d := range apiErr.Details {
			if r, ok := d["reason"].(string); ok {
				reason = r
			}
		}
		if apiErr.Code != 400 || apiErr.Status != "INVALID_ARGUMENT" || reason != "API_KEY_INVALID" {
			t.Errorf("code %d status %q reason %q details %v", apiErr.Code, apiErr.Status, reason, apiErr.Details)
		}
		s.end(t, c)
	})
}

// ---- after the calls ----

func (s *suite) ledger(t *testing.T) {
	recs := s.dev.Usage(t)
	used := make([]bool, len(recs))
	allDone := true
	for _, c := range s.calls {
		if !c.done {
			allDone = false
			continue
		}
		idx := -1
		if c.reqID != "" {
			for i, r := range recs {
				if r.RequestID == c.reqID {
					if idx >= 0 {
						t.Errorf("%s: two ledger records with request id %s", c.name, c.reqID)
					}
					idx = i
				}
			}
		} else {
			// Gemini errors expose no headers: the one unused rejected
			// record of that provider with that reason and model.
			var cands []int
			for i, r := range recs {
				if !used[i] && r.Provider == c.provider && r.Status == usage.StatusRejected && r.Reason == c.reject &&
					(c.model == "" || r.Model == c.model) {
					cands = append(cands, i)
				}
			}
			if len(cands) == 1 {
				idx = cands[0]
			} else {
				t.Errorf("%s: %d candidate ledger records, want 1", c.name, len(cands))
				continue
			}
		}
		if idx < 0 {
			t.Errorf("%s: no ledger record for request id %q", c.name, c.reqID)
			continue
		}
		if used[idx] {
			t.Errorf("%s: ledger record %s matched twice", c.name, recs[idx].RequestID)
		}
		used[idx] = true
		checkRecord(t, c, recs[idx])
	}
	for i, r := range recs {
		if !used[i] {
			b, _ := json.Marshal(r)
			t.Errorf("ledger record matches no call: %s", b)
		}
	}
	if allDone && len(recs) != len(s.calls) {
		t.Errorf("ledger has %d records for %d calls", len(recs), len(s.calls))
	}
}

func checkRecord(t *testing.T, c *call, r usage.Record) {
	t.Helper()
	b, _ := json.Marshal(r)
	fail := func(format string, args ...any) {
		t.Errorf("%s: %s\n\trecord %s", c.name, fmt.Sprintf(format, args...), b)
	}
	if r.Provider != c.provider || r.Operation != c.op {
		fail("provider/operation %s/%s, want %s/%s", r.Provider, r.Operation, c.provider, c.op)
	}
	if c.reject != "" {
		if r.Status != usage.StatusRejected || r.Reason != c.reject || r.HTTPStatus != c.status {
			fail("status %s reason %q http %d, want rejected %q %d", r.Status, r.Reason, r.HTTPStatus, c.reject, c.status)
		}
		if !r.Tokens.IsZero() || r.Estimated {
			fail("a rejected request is billed: %+v estimated=%v", r.Tokens, r.Estimated)
		}
		if c.reject == "model_not_found" {
			if r.Model != c.model || r.Account != "dev" || r.Project != "dev" {
				fail("model %q account %q project %q, want %s dev dev", r.Model, r.Account, r.Project, c.model)
			}
		} else if r.Account != "" {
			// An unauthenticated request belongs to nobody.
			fail("a request with a bad key is attributed to account %q", r.Account)
		}
		return
	}
	if r.Status != usage.StatusOK || r.HTTPStatus != 200 || r.Reason != "" {
		fail("status %s http %d reason %q, want ok 200", r.Status, r.HTTPStatus, r.Reason)
	}
	if r.Model != c.model || r.Account != "dev" || r.Project != "dev" || r.Stream != c.stream {
		fail("model %q account %q project %q stream %v, want %s dev dev %v", r.Model, r.Account, r.Project, r.Stream, c.model, c.stream)
	}
	if c.estimated {
		// Gemini embeddings carry no usage on the wire: a marked estimate.
		if !r.Estimated || r.Input <= 0 || r.Output != 0 || r.CachedInput != 0 || r.CacheWrite != 0 || r.Reasoning != 0 {
			fail("want an estimate with input > 0 only (ground truth %+v)", c.served.Usage)
		}
		t.Logf("%s: estimated input %d tokens; the mock's ground truth is %d", c.name, r.Input, c.served.Usage.Input)
		return
	}
	if r.Estimated {
		fail("estimated, but the provider reported usage (ground truth %+v)", c.served.Usage)
	}
	if r.Tokens != c.served.Usage {
		fail("tokens %+v, mock billed %+v", r.Tokens, c.served.Usage)
	}
}

func (s *suite) privacy(t *testing.T) {
	secrets := map[string]string{
		"prompt text":       marker,
		"gateway token":     s.dev.GatewayToken(),
		"bad OpenAI key":    badOpenAIKey,
		"bad Anthropic key": badAnthropicKey,
		"bad Gemini key":    badGeminiKey,
	}
	stderr := s.dev.Stderr()
	if !strings.Contains(stderr, "request_id=") {
		t.Errorf("gateway log has no request lines; is the privacy check looking at the right output?\n%s", stderr)
	}
	out := harness.Run(t, "usage", "--records", "--json", "--data-dir", s.dev.LedgerDir())
	files, err := filepath.Glob(filepath.Join(s.dev.LedgerDir(), "usage.db*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ledger files in %s (%v)", s.dev.LedgerDir(), err)
	}
	sources := map[string][]byte{"gateway stderr": []byte(stderr), "tollgate usage --records --json": out}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources[filepath.Base(f)] = b
	}
	for src, b := range sources {
		for what, secret := range secrets {
			if secret != "" && bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains the %s", src, what)
			}
		}
	}
	// The mock providers stand for the real ones: the gateway token must
	// not reach them either.
	for _, c := range s.calls {
		if c.served == nil {
			continue
		}
		for name, vs := range c.served.Header {
			for _, v := range vs {
				if strings.Contains(v, s.dev.GatewayToken()) {
					t.Errorf("%s: the gateway token reached the provider in header %s", c.name, name)
				}
			}
		}
	}
}
