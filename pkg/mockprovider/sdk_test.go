package mockprovider

// These tests drive the mocks with the official Go SDKs (the versions the
// gateway documents in providers.md). They prove that the wire format is
// right: the SDKs parse every response, stream, tool call, embedding and
// error, and the usage each SDK reports equals the mock's ground truth.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/tollgate-dev/tollgate/test/sdkusage"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"google.golang.org/genai"
)

type sdkEnv struct {
	all    *Servers
	url    string
	openai openai.Client
	anth   anthropic.Client
	gem    *genai.Client
}

func newSDKEnv(t *testing.T) *sdkEnv {
	t.Helper()
	for _, k := range []string{"OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY",
		"ANTHROPIC_AUTH_TOKEN", "GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL",
		"GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE", "OPENAI_CUSTOM_HEADERS", "ANTHROPIC_CUSTOM_HEADERS"} {
		t.Setenv(k, "")
	}
	all := NewServers(Options{APIKey: "test-key"})
	srv := httptest.NewServer(all)
	t.Cleanup(srv.Close)
	gem, err := genai.NewClient(context.Background(), &genai.ClientConfig{
		APIKey:      "test-key",
		Backend:     genai.BackendGeminiAPI,
		HTTPOptions: genai.HTTPOptions{BaseURL: srv.URL + "/gemini/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &sdkEnv{
		all: all,
		url: srv.URL,
		openai: openai.NewClient(ooption.WithBaseURL(srv.URL+"/openai/v1"), ooption.WithAPIKey("test-key"),
			ooption.WithMaxRetries(0)),
		anth: anthropic.NewClient(aoption.WithBaseURL(srv.URL+"/anthropic"), aoption.WithAPIKey("test-key"),
			aoption.WithMaxRetries(0)),
		gem: gem,
	}
}

func lastOf(t *testing.T, s *Server) Served {
	t.Helper()
	r, ok := s.Last()
	if !ok {
		t.Fatal("nothing served")
	}
	return r
}

var ctx = context.Background()

// ---- OpenAI ----

var oaWeather = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name: "get_weather",
	Parameters: shared.FunctionParameters{
		"type":       "object",
		"properties": map[string]any{"location": map[string]any{"type": "string"}},
		"required":   []string{"location"},
	},
})

func TestSDKOpenAIChat(t *testing.T) {
	e := newSDKEnv(t)
	t.Run("plain", func(t *testing.T) {
		c, err := e.openai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi [[mock usage input=11 cached=5 output=9 reasoning=4]]")},
		})
		if err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.OpenAI)
		if c.Choices[0].Message.Content != s.Reply || s.Reply == "" || c.Choices[0].FinishReason != "stop" {
			t.Fatalf("%+v", c.Choices[0])
		}
		wantUsage(t, sdkusage.OpenAIChat(c.Usage), s.Usage)
		wantUsage(t, s.Usage, usage.Tokens{Input: 11, CachedInput: 5, Output: 9, Reasoning: 4})
		if c.Usage.TotalTokens != 25 || s.Header.Get("Authorization") != "Bearer test-key" {
			t.Fatalf("%+v %v", c.Usage, s.Header)
		}
	})
	t.Run("stream", func(t *testing.T) {
		st := e.openai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me a joke")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		acc := openai.ChatCompletionAccumulator{}
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.OpenAI)
		if acc.Choices[0].Message.Content != s.Reply || !s.Stream {
			t.Fatalf("%q vs %q", acc.Choices[0].Message.Content, s.Reply)
		}
		wantUsage(t, sdkusage.OpenAIChat(acc.Usage), s.Usage)
		if s.Usage.Output == 0 {
			t.Fatal("no output counted")
		}
	})
	t.Run("stream without include_usage", func(t *testing.T) {
		st := e.openai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		acc := openai.ChatCompletionAccumulator{}
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.OpenAI)
		if acc.Usage.TotalTokens != 0 || !s.NoUsageOnWire || s.Usage.IsZero() || acc.Choices[0].Message.Content != s.Reply {
			t.Fatalf("%+v %+v", acc.Usage, s)
		}
	})
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("tool stream=%v", stream), func(t *testing.T) {
			p := openai.ChatCompletionNewParams{
				Model:         "gpt-4o-mini",
				Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather? [[mock tool]]")},
				Tools:         []openai.ChatCompletionToolUnionParam{oaWeather},
				StreamOptions: openai.ChatCompletionStreamOptionsParam{},
			}
			var msg openai.ChatCompletionMessage
			var u openai.CompletionUsage
			if stream {
				p.StreamOptions.IncludeUsage = openai.Bool(true)
				st := e.openai.Chat.Completions.NewStreaming(ctx, p)
				acc := openai.ChatCompletionAccumulator{}
				var finished bool
				for st.Next() {
					acc.AddChunk(st.Current())
					if _, ok := acc.JustFinishedToolCall(); ok {
						finished = true
					}
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				if !finished {
					t.Fatal("accumulator never saw a finished tool call")
				}
				msg, u = acc.Choices[0].Message, acc.Usage
			} else {
				c, err := e.openai.Chat.Completions.New(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				msg, u = c.Choices[0].Message, c.Usage
			}
			if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Function.Name != "get_weather" ||
				msg.ToolCalls[0].Function.Arguments != `{"location":"example"}` || msg.ToolCalls[0].ID == "" {
				t.Fatalf("%+v", msg)
			}
			s := lastOf(t, e.all.OpenAI)
			wantUsage(t, sdkusage.OpenAIChat(u), s.Usage)
			// Feed the result back: the loop terminates with text.
			c, err := e.openai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini",
				Messages: []openai.ChatCompletionMessageParamUnion{
					openai.UserMessage("weather? [[mock tool]]"),
					msg.ToParam(),
					openai.ToolMessage("sunny", msg.ToolCalls[0].ID),
				},
				Tools: []openai.ChatCompletionToolUnionParam{oaWeather},
			})
			if err != nil || c.Choices[0].FinishReason != "stop" {
				t.Fatalf("%v %+v", err, c)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		_, err := e.openai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("[[mock error=429]]")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" || apiErr.Type != "requests" {
			t.Fatalf("%v", err)
		}
		st := e.openai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("[[mock midstream_error]]")},
		})
		n := 0
		for st.Next() {
			n++
		}
		if st.Err() == nil || n == 0 {
			t.Fatalf("mid-stream error not surfaced (%d chunks)", n)
		}
	})
}

func TestSDKOpenAIResponses(t *testing.T) {
	e := newSDKEnv(t)
	weather := responses.ToolUnionParam{OfFunction: &responses.FunctionToolParam{
		Name:       "get_weather",
		Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
		Strict:     openai.Bool(true),
	}}
	t.Run("plain", func(t *testing.T) {
		r, err := e.openai.Responses.New(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi [[mock usage cached=3 reasoning=2]]")},
		})
		if err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.OpenAI)
		if r.OutputText() != s.Reply || r.Status != "completed" {
			t.Fatalf("%q %q", r.OutputText(), s.Reply)
		}
		wantUsage(t, sdkusage.OpenAIResponses(r.Usage), s.Usage)
		if s.Usage.CachedInput != 3 || s.Usage.Reasoning != 2 {
			t.Fatalf("%+v", s.Usage)
		}
	})
	t.Run("stream", func(t *testing.T) {
		st := e.openai.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
		})
		text, done := "", ""
		var final responses.Response
		for st.Next() {
			ev := st.Current()
			switch ev.Type {
			case "response.output_text.delta":
				text += ev.Delta
			case "response.output_text.done":
				done = ev.Text
			case "response.completed":
				final = ev.Response
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.OpenAI)
		if text != s.Reply || done != s.Reply || final.OutputText() != s.Reply {
			t.Fatalf("%q %q %q", text, done, s.Reply)
		}
		wantUsage(t, sdkusage.OpenAIResponses(final.Usage), s.Usage)
	})
	t.Run("tool stream", func(t *testing.T) {
		st := e.openai.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("[[mock tool]]")},
			Tools: []responses.ToolUnionParam{weather},
		})
		args := ""
		var final responses.Response
		for st.Next() {
			ev := st.Current()
			switch ev.Type {
			case "response.function_call_arguments.done":
				args = ev.Arguments
			case "response.completed":
				final = ev.Response
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		item := final.Output[0]
		if args != `{"city":"example"}` || item.Type != "function_call" || item.Name != "get_weather" || item.Arguments.OfString != args {
			t.Fatalf("%q %+v", args, item)
		}
		wantUsage(t, sdkusage.OpenAIResponses(final.Usage), lastOf(t, e.all.OpenAI).Usage)
	})
	t.Run("midstream error", func(t *testing.T) {
		st := e.openai.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("[[mock midstream_error]]")},
		})
		for st.Next() {
		}
		if st.Err() == nil {
			t.Fatal("mid-stream error not surfaced")
		}
	})
}

func TestSDKOpenAIEmbeddingsAndModels(t *testing.T) {
	e := newSDKEnv(t)
	var got [2][]float64
	for i, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		r, err := e.openai.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:          "text-embedding-3-small",
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello world", "bye"}},
			Dimensions:     openai.Int(16),
			EncodingFormat: format,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) != 2 || len(r.Data[1].Embedding) != 16 || r.Data[1].Index != 1 {
			t.Fatalf("%+v", r.Data)
		}
		s := lastOf(t, e.all.OpenAI)
		wantUsage(t, usage.Tokens{Input: r.Usage.PromptTokens}, s.Usage)
		if r.Usage.TotalTokens != r.Usage.PromptTokens {
			t.Fatal("total")
		}
		got[i] = r.Data[0].Embedding
	}
	for i := range got[0] {
		if float32(got[0][i]) != float32(got[1][i]) {
			t.Fatalf("float and base64 embeddings differ at %d", i)
		}
	}
	page, err := e.openai.Models.List(ctx)
	if err != nil || len(page.Data) == 0 || page.Data[0].ID == "" {
		t.Fatalf("%v %+v", err, page)
	}
}

// ---- Anthropic ----

var anthWeather = anthropic.ToolUnionParam{OfTool: &anthropic.ToolParam{
	Name: "get_weather",
	InputSchema: anthropic.ToolInputSchemaParam{
		Properties: map[string]any{"city": map[string]any{"type": "string"}},
		Required:   []string{"city"},
	},
}}

func TestSDKAnthropic(t *testing.T) {
	e := newSDKEnv(t)
	t.Run("plain", func(t *testing.T) {
		m, err := e.anth.Messages.New(ctx, anthropic.MessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 100,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi [[mock usage input=3 cached=100 cache_write=40 output=12 reasoning=2]]"))},
		})
		if err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.Anthropic)
		if m.Content[0].Text != s.Reply || m.StopReason != "end_turn" || m.Usage.CacheCreation.Ephemeral5mInputTokens != 40 {
			t.Fatalf("%+v", m)
		}
		wantUsage(t, sdkusage.Anthropic(m.Usage), s.Usage)
		wantUsage(t, s.Usage, usage.Tokens{Input: 3, CachedInput: 100, CacheWrite: 40, Output: 12, Reasoning: 2})
		if s.Header.Get("Anthropic-Version") == "" {
			t.Fatal("SDK sent no anthropic-version")
		}
	})
	for _, tool := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream tool=%v", tool), func(t *testing.T) {
			p := anthropic.MessageNewParams{
				Model:     "claude-sonnet-4-5",
				MaxTokens: 100,
				Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi [[mock usage cached=7 cache_write=3]]"))},
			}
			if tool {
				p.Messages[0] = anthropic.NewUserMessage(anthropic.NewTextBlock("hi [[mock tool]]"))
				p.Tools = []anthropic.ToolUnionParam{anthWeather}
			}
			st := e.anth.Messages.NewStreaming(ctx, p)
			msg := anthropic.Message{}
			for st.Next() {
				if err := msg.Accumulate(st.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
			s := lastOf(t, e.all.Anthropic)
			wantUsage(t, sdkusage.Anthropic(msg.Usage), s.Usage)
			if tool {
				b := msg.Content[0]
				if b.Type != "tool_use" || b.Name != "get_weather" || string(b.Input) != `{"city":"example"}` || msg.StopReason != "tool_use" {
					t.Fatalf("%+v", msg)
				}
				// Tool loop: a tool_result ends it.
				m2, err := e.anth.Messages.New(ctx, anthropic.MessageNewParams{
					Model:     "claude-sonnet-4-5",
					MaxTokens: 100,
					Messages: []anthropic.MessageParam{p.Messages[0], msg.ToParam(),
						anthropic.NewUserMessage(anthropic.NewToolResultBlock(b.ID, "sunny", false))},
					Tools: p.Tools,
				})
				if err != nil || m2.StopReason != "end_turn" {
					t.Fatalf("%v %+v", err, m2)
				}
			} else if msg.Content[0].Text != s.Reply || s.Usage.CachedInput != 7 || s.Usage.CacheWrite != 3 {
				t.Fatalf("%+v %+v", msg, s)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		_, err := e.anth.Messages.New(ctx, anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 10,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("[[mock error=529]]"))},
		})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 || apiErr.RequestID == "" {
			t.Fatalf("%v", err)
		}
		st := e.anth.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 10,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("[[mock midstream_error]]"))},
		})
		n := 0
		for st.Next() {
			n++
		}
		if st.Err() == nil || n == 0 {
			t.Fatalf("mid-stream error not surfaced (%d events)", n)
		}
	})
	t.Run("count tokens and models", func(t *testing.T) {
		c, err := e.anth.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    "claude-sonnet-4-5",
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("[[mock usage input=30]]"))},
		})
		if err != nil || c.InputTokens != 30 {
			t.Fatalf("%v %+v", err, c)
		}
		if !lastOf(t, e.all.Anthropic).Usage.IsZero() {
			t.Fatal("count_tokens billed")
		}
		page, err := e.anth.Models.List(ctx, anthropic.ModelListParams{})
		if err != nil || len(page.Data) == 0 || page.Data[0].DisplayName == "" || page.Data[0].CreatedAt.IsZero() {
			t.Fatalf("%v %+v", err, page)
		}
	})
}

// ---- Gemini ----

var gemWeather = &genai.GenerateContentConfig{Tools: []*genai.Tool{{FunctionDeclarations: []*genai.FunctionDeclaration{{
	Name: "get_weather",
	Parameters: &genai.Schema{Type: genai.TypeObject, Required: []string{"city"},
		Properties: map[string]*genai.Schema{"city": {Type: genai.TypeString}}},
}}}}}

func TestSDKGemini(t *testing.T) {
	e := newSDKEnv(t)
	t.Run("plain", func(t *testing.T) {
		r, err := e.gem.Models.GenerateContent(ctx, "gemini-2.5-flash",
			genai.Text("hi [[mock usage input=20 cached=10 output=8 reasoning=3 tool_prompt=4]]"), nil)
		if err != nil {
			t.Fatal(err)
		}
		s := lastOf(t, e.all.Gemini)
		if r.Text() != s.Reply || s.Model != "gemini-2.5-flash" || s.Header.Get("X-Goog-Api-Key") != "test-key" {
			t.Fatalf("%q %+v", r.Text(), s)
		}
		wantUsage(t, sdkusage.Gemini(r.UsageMetadata), s.Usage)
		wantUsage(t, s.Usage, usage.Tokens{Input: 24, CachedInput: 10, Output: 8, Reasoning: 3})
		if r.UsageMetadata.TotalTokenCount != 30+5+4+3 {
			t.Fatalf("%+v", r.UsageMetadata)
		}
	})
	t.Run("stream", func(t *testing.T) {
		text := ""
		var last *genai.GenerateContentResponse
		for ch, err := range e.gem.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text("hi [[mock chunks=3]]"), nil) {
			if err != nil {
				t.Fatal(err)
			}
			text += ch.Text()
			last = ch
		}
		s := lastOf(t, e.all.Gemini)
		if text != s.Reply || s.RawQuery != "alt=sse" {
			t.Fatalf("%q %+v", text, s)
		}
		wantUsage(t, sdkusage.Gemini(last.UsageMetadata), s.Usage)
	})
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("tool stream=%v", stream), func(t *testing.T) {
			var r *genai.GenerateContentResponse
			var err error
			if stream {
				for ch, e2 := range e.gem.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text("[[mock tool]]"), gemWeather) {
					r, err = ch, e2
				}
			} else {
				r, err = e.gem.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text("[[mock tool]]"), gemWeather)
			}
			if err != nil {
				t.Fatal(err)
			}
			fc := r.FunctionCalls()
			if len(fc) != 1 || fc[0].Name != "get_weather" || fc[0].Args["city"] != "example" {
				t.Fatalf("%+v", fc)
			}
			wantUsage(t, sdkusage.Gemini(r.UsageMetadata), lastOf(t, e.all.Gemini).Usage)
			// Feed the result back: the loop terminates.
			r2, err := e.gem.Models.GenerateContent(ctx, "gemini-2.5-flash", []*genai.Content{
				genai.NewContentFromText("[[mock tool]]", genai.RoleUser),
				r.Candidates[0].Content,
				genai.NewContentFromFunctionResponse("get_weather", map[string]any{"out": "sunny"}, genai.RoleUser),
			}, gemWeather)
			if err != nil || len(r2.FunctionCalls()) != 0 || r2.Text() == "" {
				t.Fatalf("%v %+v", err, r2)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		_, err := e.gem.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text("[[mock error=429]]"), nil)
		var apiErr genai.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != 429 || apiErr.Status != "RESOURCE_EXHAUSTED" || len(apiErr.Details) != 1 {
			t.Fatalf("%v", err)
		}
		var streamErr error
		n := 0
		for ch, err := range e.gem.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text("[[mock midstream_error]]"), nil) {
			if err != nil {
				streamErr = err
				break
			}
			if ch != nil {
				n++
			}
		}
		if !errors.As(streamErr, &apiErr) || apiErr.Code != 503 || n == 0 {
			t.Fatalf("%v after %d chunks", streamErr, n)
		}
	})
	t.Run("embeddings count models", func(t *testing.T) {
		r, err := e.gem.Models.EmbedContent(ctx, "gemini-embedding-001",
			[]*genai.Content{genai.NewContentFromText("hello", genai.RoleUser), genai.NewContentFromText("world", genai.RoleUser)},
			&genai.EmbedContentConfig{OutputDimensionality: genai.Ptr[int32](12)})
		if err != nil || len(r.Embeddings) != 2 || len(r.Embeddings[1].Values) != 12 {
			t.Fatalf("%v %+v", err, r)
		}
		s := lastOf(t, e.all.Gemini)
		if s.Endpoint != "batchEmbedContents" || !s.NoUsageOnWire || s.Usage.Input != 4 {
			t.Fatalf("%+v", s)
		}
		c, err := e.gem.Models.CountTokens(ctx, "gemini-2.5-flash", genai.Text("[[mock usage input=17]]"), nil)
		if err != nil || c.TotalTokens != 17 {
			t.Fatalf("%v %+v", err, c)
		}
		page, err := e.gem.Models.List(ctx, nil)
		if err != nil || len(page.Items) == 0 || page.Items[0].Name == "" {
			t.Fatalf("%v %+v", err, page)
		}
		b, _ := json.Marshal(page.Items[0])
		if len(b) < 10 {
			t.Fatal(string(b))
		}
	})
}
