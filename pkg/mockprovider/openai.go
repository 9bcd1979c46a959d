package mockprovider

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// NewOpenAI returns a mock of api.openai.com. Paths are native (with /v1):
// POST /v1/chat/completions, /v1/responses, /v1/responses/input_tokens,
// /v1/embeddings; GET /v1/models, /v1/models/{id}.
func NewOpenAI(opts Options) *Server { return newServer("openai", opts, openaiRoute) }

const openaiOverhead = 7

func openaiRoute(c *call) {
	if !c.authorized(bearer(c.r)) {
		c.openaiError(401, "invalid_request_error", "invalid_api_key",
			"Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.", nil, directives{})
		return
	}
	p := c.r.URL.Path
	switch {
	case p == "/v1/chat/completions" && c.r.Method == http.MethodPost:
		c.rec.Endpoint = "chat.completions"
		c.openaiChat()
	case p == "/v1/responses" && c.r.Method == http.MethodPost:
		c.rec.Endpoint = "responses"
		c.openaiResponses()
	case p == "/v1/responses/input_tokens" && c.r.Method == http.MethodPost:
		c.rec.Endpoint = "responses.input_tokens"
		c.openaiInputTokens()
	case p == "/v1/embeddings" && c.r.Method == http.MethodPost:
		c.rec.Endpoint = "embeddings"
		c.openaiEmbeddings()
	case p == "/v1/models" && c.r.Method == http.MethodGet:
		c.rec.Endpoint = "models"
		c.openaiModels("")
	case strings.HasPrefix(p, "/v1/models/") && c.r.Method == http.MethodGet:
		c.rec.Endpoint = "models"
		c.openaiModels(strings.TrimPrefix(p, "/v1/models/"))
	default:
		c.openaiError(404, "invalid_request_error", nil,
			fmt.Sprintf("Invalid URL (%s %s)", c.r.Method, p), nil, directives{})
	}
}

func (c *call) openaiHeaders() map[string]string {
	return map[string]string{
		"x-request-id":         "req_" + hexID(c.seedBytes(), "req", 32),
		"openai-version":       "2020-10-01",
		"openai-processing-ms": "42",
		"openai-organization":  "org-mock",
	}
}

type openaiErrBody struct {
	Error openaiErrObj `json:"error"`
}

type openaiErrObj struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   any    `json:"param"`
	Code    any    `json:"code"`
}

// openaiError writes {"error":{...}} with the given status.
func (c *call) openaiError(status int, typ string, code any, msg string, param any, d directives) {
	h := c.openaiHeaders()
	retryHeaders(h, status, d)
	c.send(status, "application/json; charset=utf-8",
		marshalIndent(openaiErrBody{openaiErrObj{msg, typ, param, code}}, false), h)
}

// retryHeaders adds retry-after / x-should-retry for a directive error.
func retryHeaders(h map[string]string, status int, d directives) {
	if status == 429 || status == 503 || status == 529 {
		ra := d.retryAfter
		if ra == "" {
			ra = "1"
		}
		h["retry-after"] = ra
	}
	if d.noRetry {
		h["x-should-retry"] = "false"
	}
}

// orgRateLimit is OpenAI's message for an organization's rate limit: it
// names the organization and its use.
func orgRateLimit(model string) string {
	return fmt.Sprintf("Rate limit reached for %s in organization org-mock on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.", model)
}

// openaiDirectiveError answers [[mock error=N]].
func (c *call) openaiDirectiveError(d directives, model string) {
	s := d.errStatus
	var typ, msg string
	var code any
	switch {
	case s == 401:
		typ, code, msg = "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-mock. You can find your API key at https://platform.openai.com/account/api-keys."
	case s == 403:
		typ, code, msg = "invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"
	case s == 404:
		typ, code, msg = "invalid_request_error", "model_not_found", fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model)
	case s == 429:
		typ, code, msg = "requests", "rate_limit_exceeded", fmt.Sprintf("Rate limit reached for %s in organization org-mock on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.", model)
	case s == 503:
		typ, code, msg = "server_error", nil, "The engine is currently overloaded, please try again later."
	case s >= 500:
		typ, code, msg = "server_error", nil, "The server had an error while processing your request. Sorry about that!"
	default:
		typ, code, msg = "invalid_request_error", nil, fmt.Sprintf("Invalid request (mock error %d).", s)
	}
	c.openaiError(s, typ, code, msg, nil, d)
}

func (c *call) openaiBadJSON() {
	c.openaiError(400, "invalid_request_error", nil,
		"We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)", nil, directives{})
}

func (c *call) openaiMissing(param string) {
	c.openaiError(400, "invalid_request_error", nil,
		fmt.Sprintf("Missing required parameter: '%s'.", param), param, directives{})
}

// ---- chat completions ----

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream        bool            `json:"stream"`
	StreamOptions json.RawMessage `json:"stream_options"`
	ServiceTier   string          `json:"service_tier"`
	N             *int            `json:"n"`
	Logprobs      bool            `json:"logprobs"`
	TopLogprobs   int             `json:"top_logprobs"`
	Store         bool            `json:"store"`
	Metadata      json.RawMessage `json:"metadata"`
	Tools         []struct {
		Type     string `json:"type"`
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
}

type chatUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
		AudioTokens  int64 `json:"audio_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens          int64 `json:"reasoning_tokens"`
		AudioTokens              int64 `json:"audio_tokens"`
		AcceptedPredictionTokens int64 `json:"accepted_prediction_tokens"`
		RejectedPredictionTokens int64 `json:"rejected_prediction_tokens"`
	} `json:"completion_tokens_details"`
}

// chatUsageOf renders counts natively: prompt = uncached + cached,
// completion = all output (reasoning included).
func chatUsageOf(k counts) chatUsage {
	var u chatUsage
	u.PromptTokens = k.input + k.cached
	u.CompletionTokens = k.output
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails.CachedTokens = k.cached
	u.CompletionTokensDetails.ReasoningTokens = k.reasoning
	return u
}

type chatToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatMessage struct {
	Role        string          `json:"role"`
	Content     json.RawMessage `json:"content"`
	ToolCalls   []chatToolCall  `json:"tool_calls,omitempty"`
	Refusal     json.RawMessage `json:"refusal"`
	Annotations []any           `json:"annotations"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatMessage     `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type chatCompletion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	Choices           []chatChoice    `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
	ServiceTier       string          `json:"service_tier"`
	SystemFingerprint string          `json:"system_fingerprint"`
}

type chatDelta struct {
	Role      string          `json:"role,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"`
	Refusal   json.RawMessage `json:"refusal,omitempty"`
	ToolCalls []chatToolCall  `json:"tool_calls,omitempty"`
}

type chunkChoice struct {
	Index        int             `json:"index"`
	Delta        chatDelta       `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason json.RawMessage `json:"finish_reason"`
}

type chatChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	ServiceTier       string          `json:"service_tier"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

var null = json.RawMessage("null")

func jsonString(s string) json.RawMessage { return marshal(s) }

func (c *call) openaiChat() {
	var req chatRequest
	if json.Unmarshal(c.body, &req) != nil {
		c.openaiBadJSON()
		return
	}
	c.rec.Model = req.Model
	if req.Model == "" {
		c.openaiMissing("model")
		return
	}
	if len(req.Messages) == 0 {
		c.openaiMissing("messages")
		return
	}
	hasStreamOptions := len(req.StreamOptions) > 0 && string(req.StreamOptions) != "null"
	if hasStreamOptions && !req.Stream {
		c.openaiError(400, "invalid_request_error", nil,
			"The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", directives{})
		return
	}
	// Chat Completions takes metadata only to label a stored completion.
	if len(req.Metadata) > 0 && string(req.Metadata) != "null" && !req.Store {
		c.openaiError(400, "invalid_request_error", nil,
			"The 'metadata' parameter is only allowed when 'store' is enabled.", nil, directives{})
		return
	}
	var tools []tool
	for _, t := range req.Tools {
		if t.Function.Name != "" {
			tools = append(tools, tool{t.Function.Name, t.Function.Parameters})
		}
	}
	last := req.Messages[len(req.Messages)-1].Role
	text, size := textOf(c.body)
	a := c.plan(text, size, openaiOverhead, tools, last == "tool" || last == "function")
	if a.d.errStatus != 0 {
		c.openaiDirectiveError(a.d, req.Model)
		return
	}
	// n choices all carry the same answer; each is billed.
	n := 1
	if req.N != nil && *req.N > 1 {
		n = min(*req.N, 8)
		if a.d.output == nil {
			a.k.output = (a.k.output-a.k.reasoning)*int64(n) + a.k.reasoning
		}
	}
	id := "chatcmpl-" + c.id("chatcmpl", 29)
	fp := "fp_" + hexID(c.seedBytes(), "fp", 10)
	// callIDOf is the id of choice i's call j
	callIDOf := func(i, j int) string {
		if i == 0 && j == 0 {
			return "call_" + c.id("call", 24)
		}
		return "call_" + c.id("call"+itoa(i)+"."+itoa(j), 24)
	}
	usageRaw := marshal(chatUsageOf(a.k))
	c.rec.Usage = a.k.tokens()

	if !req.Stream {
		resp := chatCompletion{
			ID: id, Object: "chat.completion", Created: c.s.opts.created(), Model: req.Model,
			ServiceTier: serviceTierOut(req.ServiceTier), SystemFingerprint: fp,
		}
		for i := 0; i < n; i++ {
			msg := chatMessage{Role: "assistant", Content: null, Refusal: null, Annotations: []any{}}
			finish := "stop"
			if a.isTool {
				for j, call := range a.calls {
					tc := chatToolCall{ID: callIDOf(i, j), Type: "function"}
					tc.Function.Name, tc.Function.Arguments = call.tool.name, call.args
					msg.ToolCalls = append(msg.ToolCalls, tc)
				}
				finish = "tool_calls"
			} else {
				msg.Content = jsonString(a.reply)
			}
			lp := null
			if req.Logprobs && !a.isTool {
				lp = chatLogprobs(splitText(a.reply, 0), req.TopLogprobs, 0)
			}
			resp.Choices = append(resp.Choices, chatChoice{Index: i, Message: msg, Logprobs: lp, FinishReason: finish})
		}
		if a.d.noUsage {
			c.rec.NoUsageOnWire = true
		} else {
			resp.Usage = usageRaw
			c.rec.Native = usageRaw
		}
		c.send(200, "application/json", marshalIndent(resp, false), c.openaiHeaders())
		return
	}

	includeUsage := false
	if hasStreamOptions {
		var so struct {
			IncludeUsage bool `json:"include_usage"`
		}
		_ = json.Unmarshal(req.StreamOptions, &so)
		includeUsage = so.IncludeUsage
	}
	var usageField json.RawMessage
	if includeUsage {
		usageField = null
	}
	choice := 0
	var chunkLogprobs json.RawMessage // of the next content chunk
	chunk := func(delta chatDelta, finish string) []byte {
		lp := null
		if chunkLogprobs != nil {
			lp, chunkLogprobs = chunkLogprobs, nil
		}
		fr := null
		if finish != "" {
			fr = jsonString(finish)
		}
		ch := chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: c.s.opts.created(), Model: req.Model,
			ServiceTier: serviceTierOut(req.ServiceTier), SystemFingerprint: fp,
			Choices: []chunkChoice{{Index: choice, Delta: delta, Logprobs: lp, FinishReason: fr}},
			Usage:   usageField,
		}
		return sseData(marshal(ch))
	}
	var out [][]byte
	finish := "stop"
	if a.d.midstream {
		n = 1
	}
	// the choices one after the other; a mid-stream error cuts the first
	for ; choice < n; choice++ {
		if a.isTool {
			out = append(out, chunk(chatDelta{Role: "assistant", Content: null}, ""))
			for j, call := range a.calls {
				head := chatToolCall{Index: &j, ID: callIDOf(choice, j), Type: "function"}
				head.Function.Name = call.tool.name
				out = append(out, chunk(chatDelta{ToolCalls: []chatToolCall{head}}, ""))
				for _, piece := range splitBytes(call.args, 5) {
					tc := chatToolCall{Index: &j}
					tc.Function.Arguments = piece
					out = append(out, chunk(chatDelta{ToolCalls: []chatToolCall{tc}}, ""))
				}
			}
			finish = "tool_calls"
		} else {
			out = append(out, chunk(chatDelta{Role: "assistant", Content: jsonString(""), Refusal: null}, ""))
			pieces := a.pieces
			if a.d.midstream {
				pieces = pieces[:a.midstreamCut()]
			}
			for i, p := range pieces {
				if req.Logprobs {
					chunkLogprobs = chatLogprobs([]string{p}, req.TopLogprobs, i)
				}
				out = append(out, chunk(chatDelta{Content: jsonString(p)}, ""))
			}
		}
		if choice < n-1 {
			out = append(out, chunk(chatDelta{}, finish))
		}
	}
	choice = n - 1
	if a.d.midstream {
		c.rec.MidstreamError = true
		c.rec.NoUsageOnWire = true
		if a.isTool {
			c.rec.Usage = a.partialCounts(0).tokens()
		} else {
			c.rec.Usage = a.partialCounts(a.midstreamCut()).tokens()
		}
		e := openaiErrObj{"The server had an error while processing your request. Sorry about that!", "server_error", nil, nil}
		if a.d.midstream429 {
			e = openaiErrObj{orgRateLimit(req.Model), "tokens", nil, "rate_limit_exceeded"}
		}
		out = append(out, sseData(marshal(openaiErrBody{e})))
		c.stream("text/event-stream; charset=utf-8", c.openaiHeaders(), out)
		return
	}
	out = append(out, chunk(chatDelta{}, finish))
	if includeUsage && !a.d.noUsage {
		ch := chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: c.s.opts.created(), Model: req.Model,
			ServiceTier: serviceTierOut(req.ServiceTier), SystemFingerprint: fp,
			Choices: []chunkChoice{}, Usage: usageRaw,
		}
		out = append(out, sseData(marshal(ch)))
		c.rec.Native = usageRaw
	} else {
		c.rec.NoUsageOnWire = true
	}
	out = append(out, []byte("data: [DONE]\n\n"))
	c.stream("text/event-stream; charset=utf-8", c.openaiHeaders(), out)
}

// chatLogprobs is a choice's logprobs for text tokens (the mock's tokens
// are the pieces it sends), numbered from first: each token has a small
// negative logprob, its UTF-8 bytes and top alternatives led by itself.
func chatLogprobs(tokens []string, top, first int) json.RawMessage {
	entry := func(tok string, lp float64) obj {
		b := make([]int, len(tok))
		for i := range len(tok) {
			b[i] = int(tok[i])
		}
		return obj{{"token", tok}, {"logprob", lp}, {"bytes", b}}
	}
	content := []any{}
	for i, tok := range tokens {
		lp := -float64((first+i)%5+1) / 100
		alts := []any{}
		for j := 0; j < min(top, 20); j++ {
			if j == 0 {
				alts = append(alts, entry(tok, lp))
			} else {
				alts = append(alts, entry(" option"+itoa(j), lp-float64(2*j)))
			}
		}
		content = append(content, append(entry(tok, lp), kv{"top_logprobs", alts}))
	}
	return marshal(obj{{"content", content}, {"refusal", nil}})
}

func sseData(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

func sseEvent(name string, b []byte) []byte {
	out := make([]byte, 0, len(b)+len(name)+16)
	out = append(out, "event: "...)
	out = append(out, name...)
	out = append(out, "\ndata: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

// ---- embeddings ----

func (c *call) openaiEmbeddings() {
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
		Dimensions     *int            `json:"dimensions"`
	}
	if json.Unmarshal(c.body, &req) != nil {
		c.openaiBadJSON()
		return
	}
	c.rec.Model = req.Model
	if req.Model == "" {
		c.openaiMissing("model")
		return
	}
	if len(req.Input) == 0 || string(req.Input) == "null" {
		c.openaiMissing("input")
		return
	}
	// input: string | []string | []int | [][]int
	var inputs []string
	var tokens int64
	var one string
	var many []string
	var ids []int64
	var idss [][]int64
	switch {
	case json.Unmarshal(req.Input, &one) == nil:
		inputs = []string{one}
	case json.Unmarshal(req.Input, &many) == nil:
		inputs = many
	case json.Unmarshal(req.Input, &ids) == nil:
		inputs = []string{fmt.Sprint(ids)}
		tokens = int64(len(ids))
	case json.Unmarshal(req.Input, &idss) == nil:
		for _, x := range idss {
			inputs = append(inputs, fmt.Sprint(x))
			tokens += int64(len(x))
		}
	default:
		c.openaiError(400, "invalid_request_error", nil, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", nil, directives{})
		return
	}
	if len(inputs) == 0 {
		c.openaiError(400, "invalid_request_error", nil, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", nil, directives{})
		return
	}
	if tokens == 0 {
		for _, s := range inputs {
			t := estimate(len(s))
			if t == 0 {
				t = 1
			}
			tokens += t
		}
	}
	d := parseDirectives(strings.Join(inputs, "\n"))
	if d.errStatus != 0 {
		c.openaiDirectiveError(d, req.Model)
		return
	}
	if d.input != nil {
		tokens = *d.input
	}
	dims := 1536
	if strings.Contains(req.Model, "large") {
		dims = 3072
	}
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > dims {
			c.openaiError(400, "invalid_request_error", nil,
				fmt.Sprintf("This model does not support specifying dimensions larger than %d.", dims), "dimensions", directives{})
			return
		}
		dims = *req.Dimensions
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	type usageT struct {
		PromptTokens int64 `json:"prompt_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	}
	resp := struct {
		Object string `json:"object"`
		Data   []item `json:"data"`
		Model  string `json:"model"`
		Usage  usageT `json:"usage"`
	}{Object: "list", Model: req.Model, Usage: usageT{tokens, tokens}}
	for i, s := range inputs {
		v := embedding(req.Model+"\x00"+s, dims)
		var e any = v
		if req.EncodingFormat == "base64" {
			e = embeddingBase64(v)
		}
		resp.Data = append(resp.Data, item{"embedding", i, e})
	}
	c.rec.Usage.Input = tokens
	c.rec.Native = marshal(resp.Usage)
	h := c.openaiHeaders()
	h["openai-model"] = req.Model
	c.send(200, "application/json", marshalIndent(resp, false), h)
}

// ---- models ----

var openaiModelIDs = []string{
	"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
	"gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini",
	"text-embedding-3-small", "text-embedding-3-large",
}

type openaiModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (c *call) openaiModels(id string) {
	if id != "" {
		c.rec.Model = id
		c.send(200, "application/json", marshalIndent(openaiModel{id, "model", c.s.opts.created(), "system"}, false), c.openaiHeaders())
		return
	}
	list := struct {
		Object string        `json:"object"`
		Data   []openaiModel `json:"data"`
	}{Object: "list"}
	for _, m := range openaiModelIDs {
		list.Data = append(list.Data, openaiModel{m, "model", c.s.opts.created(), "system"})
	}
	c.send(200, "application/json", marshalIndent(list, false), c.openaiHeaders())
}
