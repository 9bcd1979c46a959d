package mockprovider

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// NewAnthropic returns a mock of api.anthropic.com: POST /v1/messages,
// /v1/messages/count_tokens; GET /v1/models, /v1/models/{id}. A query
// string (older SDKs append ?beta=true) is accepted and ignored.
func NewAnthropic(opts Options) *Server { return newServer("anthropic", opts, anthropicRoute) }

const anthropicOverhead = 8

func anthropicRoute(c *call) {
	if !c.authorized(bearer(c.r), c.r.Header.Get("X-Api-Key")) {
		c.anthropicError(401, "authentication_error", "invalid x-api-key", directives{})
		return
	}
	if c.r.Header.Get("Anthropic-Version") == "" && !c.s.opts.AllowMissingAnthropicVersion {
		c.anthropicError(400, "invalid_request_error", "anthropic-version: header is required", directives{})
		return
	}
	p := c.r.URL.Path
	switch {
	case p == "/v1/messages" && c.r.Method == http.MethodPost:
		c.rec.Endpoint = "messages"
		c.anthropicMessages()
	case p == "/v1/messages/count_tokens" && c.r.Method == http.MethodPost:
		c.rec.Endpoint = "count_tokens"
		c.anthropicCountTokens()
	case p == "/v1/models" && c.r.Method == http.MethodGet:
		c.rec.Endpoint = "models"
		c.anthropicModels("")
	case strings.HasPrefix(p, "/v1/models/") && c.r.Method == http.MethodGet:
		c.rec.Endpoint = "models"
		c.anthropicModels(strings.TrimPrefix(p, "/v1/models/"))
	default:
		c.anthropicError(404, "not_found_error", "Not Found", directives{})
	}
}

func (c *call) anthropicRequestID() string { return "req_011C" + c.id("req", 20) }

func (c *call) anthropicHeaders() map[string]string {
	return map[string]string{
		"request-id":                c.anthropicRequestID(),
		"anthropic-organization-id": "00000000-0000-4000-8000-000000000000",
	}
}

func (c *call) anthropicError(status int, typ, msg string, d directives) {
	h := c.anthropicHeaders()
	retryHeaders(h, status, d)
	body := obj{{"type", "error"}, {"error", obj{{"type", typ}, {"message", msg}}}, {"request_id", c.anthropicRequestID()}}
	c.send(status, "application/json", marshal(body), h)
}

func (c *call) anthropicDirectiveError(d directives, model string) {
	s := d.errStatus
	typ, msg := "invalid_request_error", fmt.Sprintf("Invalid request (mock error %d).", s)
	switch {
	case s == 401:
		typ, msg = "authentication_error", "invalid x-api-key"
	case s == 402:
		typ, msg = "billing_error", "Your credit balance is too low to access the Anthropic API."
	case s == 403:
		typ, msg = "permission_error", "Your API key does not have permission to use the specified resource."
	case s == 404:
		typ, msg = "not_found_error", "model: "+model
	case s == 413:
		typ, msg = "request_too_large", "Request exceeds the maximum allowed number of bytes."
	case s == 429:
		typ, msg = "rate_limit_error", "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."
	case s == 504:
		typ, msg = "timeout_error", "Request timed out"
	case s == 529:
		typ, msg = "overloaded_error", "Overloaded"
	case s >= 500:
		typ, msg = "api_error", "Internal server error"
	}
	c.anthropicError(s, typ, msg, d)
}

type anthropicRequest struct {
	Model     string `json:"model"`
	MaxTokens *int64 `json:"max_tokens"`
	Messages  []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools []struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		InputSchema json.RawMessage `json:"input_schema"`
	} `json:"tools"`
	Stream   bool `json:"stream"`
	Thinking *struct {
		Type string `json:"type"`
	} `json:"thinking"`
}

// anthropicThinking is the thinking text of every answer to a request with
// extended thinking on.
const anthropicThinking = "The user wants a short answer; I will keep it brief."

// thinkingSignature is a deterministic stand-in for the opaque base64
// signature of a thinking block.
func thinkingSignature(seed []byte) string {
	return base64.StdEncoding.EncodeToString([]byte(hexID(seed, "signature", 96)))
}

func (c *call) anthropicParse(needMaxTokens bool) (*anthropicRequest, bool) {
	var req anthropicRequest
	if err := json.Unmarshal(c.body, &req); err != nil {
		c.anthropicError(400, "invalid_request_error", "There was an issue with your request body: "+err.Error(), directives{})
		return nil, false
	}
	c.rec.Model = req.Model
	switch {
	case req.Model == "":
		c.anthropicError(400, "invalid_request_error", "model: Field required", directives{})
	case req.Messages == nil:
		c.anthropicError(400, "invalid_request_error", "messages: Field required", directives{})
	case needMaxTokens && req.MaxTokens == nil:
		c.anthropicError(400, "invalid_request_error", "max_tokens: Field required", directives{})
	default:
		return &req, true
	}
	return nil, false
}

func (c *call) anthropicCountTokens() {
	if _, ok := c.anthropicParse(false); !ok {
		return
	}
	text, n := textOf(c.body)
	d := parseDirectives(text)
	if d.errStatus != 0 {
		c.anthropicDirectiveError(d, c.rec.Model)
		return
	}
	k := resolveCounts(d, "anthropic", estimate(n)+anthropicOverhead, 0)
	c.send(200, "application/json", marshal(obj{{"input_tokens", k.input + k.cached + k.cacheWrite}}), c.anthropicHeaders())
}

// anthropicUsage renders counts: input_tokens excludes cache reads and
// writes, which are additive; all writes are 5-minute writes.
func anthropicUsage(k counts, outputTokens int64, final bool) obj {
	o := obj{
		{"input_tokens", k.input},
		{"cache_creation_input_tokens", k.cacheWrite},
		{"cache_read_input_tokens", k.cached},
		{"cache_creation", obj{{"ephemeral_5m_input_tokens", k.cacheWrite}, {"ephemeral_1h_input_tokens", 0}}},
		{"output_tokens", outputTokens},
	}
	if final {
		o = append(o, kv{"output_tokens_details", obj{{"thinking_tokens", k.reasoning}}})
	}
	return append(o, kv{"service_tier", "standard"}, kv{"inference_geo", "global"})
}

// anthropicDeltaUsage is the cumulative usage of message_delta.
func anthropicDeltaUsage(k counts) obj {
	return obj{
		{"input_tokens", k.input},
		{"cache_creation_input_tokens", k.cacheWrite},
		{"cache_read_input_tokens", k.cached},
		{"output_tokens", k.output},
		{"output_tokens_details", obj{{"thinking_tokens", k.reasoning}}},
	}
}

func (c *call) anthropicMessages() {
	req, ok := c.anthropicParse(true)
	if !ok {
		return
	}
	var tools []tool
	for _, t := range req.Tools {
		if (t.Type == "" || t.Type == "custom") && t.Name != "" {
			tools = append(tools, tool{t.Name, t.InputSchema})
		}
	}
	lastIsToolResult := false
	if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == "user" {
		var blocks []struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(req.Messages[n-1].Content, &blocks) == nil {
			for _, b := range blocks {
				if b.Type == "tool_result" {
					lastIsToolResult = true
				}
			}
		}
	}
	text, n := textOf(c.body)
	a := c.plan(text, n, anthropicOverhead, tools, lastIsToolResult)
	if a.d.errStatus != 0 {
		c.anthropicDirectiveError(a.d, req.Model)
		return
	}
	msgID := "msg_01" + c.id("msg", 22)
	toolID := func(j int) string {
		if j == 0 {
			return "toolu_01" + c.id("toolu", 22)
		}
		return "toolu_01" + c.id("toolu"+itoa(j), 22)
	}
	newAPI := c.r.Header.Get("Anthropic-Version") >= "2026-10-21"
	// Extended thinking: a thinking block comes first; its words are
	// reasoning, billed within the output unless the usage directive says.
	thinking := req.Thinking != nil && (req.Thinking.Type == "enabled" || req.Thinking.Type == "adaptive")
	var signature string
	if thinking {
		signature = thinkingSignature(c.seedBytes())
		if a.d.reasoning == nil {
			r := words(anthropicThinking)
			if a.d.output == nil {
				a.k.output += r
			}
			a.k.reasoning = min(r, a.k.output)
		}
	}
	c.rec.Usage = a.k.tokens()
	stop := "end_turn"
	if a.isTool {
		stop = "tool_use"
	}
	message := func(content []any, stopReason json.RawMessage, usage any) obj {
		o := obj{{"model", req.Model}, {"id", msgID}, {"type", "message"}, {"role", "assistant"},
			{"content", content}, {"stop_reason", stopReason}, {"stop_sequence", nil}}
		if newAPI {
			o = append(o, kv{"stop_details", nil})
		}
		if usage != nil {
			o = append(o, kv{"usage", usage})
		}
		return o
	}

	if !req.Stream {
		var content []any
		if thinking {
			content = append(content, obj{{"type", "thinking"}, {"thinking", anthropicThinking}, {"signature", signature}})
		}
		if a.isTool {
			for j, call := range a.calls {
				content = append(content, obj{{"type", "tool_use"}, {"id", toolID(j)}, {"name", call.tool.name}, {"input", json.RawMessage(call.args)}})
			}
		} else {
			content = append(content, obj{{"type", "text"}, {"text", a.reply}})
		}
		var usage any
		if a.d.noUsage {
			c.rec.NoUsageOnWire = true
		} else {
			u := anthropicUsage(a.k, a.k.output, true)
			usage = u
			c.rec.Native = marshal(u)
		}
		c.send(200, "application/json", marshal(message(content, jsonString(stop), usage)), c.anthropicHeaders())
		return
	}

	var out [][]byte
	ev := func(name string, v any) { out = append(out, sseEvent(name, marshal(v))) }
	var startUsage any
	if !a.d.noUsage {
		startUsage = anthropicUsage(a.k, 1, false)
	}
	ev("message_start", obj{{"type", "message_start"}, {"message", message([]any{}, null, startUsage)}})
	idx := 0 // index of the answer's block, after any thinking block
	midstream := func(sent int) {
		c.rec.MidstreamError = true
		c.rec.Usage = a.partialCounts(sent).tokens()
		if startUsage != nil {
			c.rec.Native = marshal(startUsage)
		} else {
			c.rec.NoUsageOnWire = true
		}
		e := obj{{"type", "overloaded_error"}, {"message", "Overloaded"}}
		if a.d.midstream429 {
			e = obj{{"type", "rate_limit_error"}, {"message", "This request would exceed the rate limit for your organization (org-mock) of 400,000 input tokens per minute."}}
		}
		ev("error", obj{{"type", "error"}, {"error", e}})
		h := c.anthropicHeaders()
		h["cache-control"] = "no-cache"
		c.stream("text/event-stream; charset=utf-8", h, out)
	}
	ping := func() {
		if idx == 0 {
			out = append(out, []byte("event: ping\ndata: {\"type\": \"ping\"}\n\n"))
		}
	}
	if thinking {
		ev("content_block_start", obj{{"type", "content_block_start"}, {"index", 0},
			{"content_block", obj{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}}})
		ping()
		for _, p := range splitText(anthropicThinking, 3) {
			ev("content_block_delta", obj{{"type", "content_block_delta"}, {"index", 0},
				{"delta", obj{{"type", "thinking_delta"}, {"thinking", p}}}})
		}
		ev("content_block_delta", obj{{"type", "content_block_delta"}, {"index", 0},
			{"delta", obj{{"type", "signature_delta"}, {"signature", signature}}}})
		ev("content_block_stop", obj{{"type", "content_block_stop"}, {"index", 0}})
		idx = 1
	}
	if a.isTool {
		for j, call := range a.calls {
			if j > 0 {
				ev("content_block_stop", obj{{"type", "content_block_stop"}, {"index", idx}})
				idx++
			}
			ev("content_block_start", obj{{"type", "content_block_start"}, {"index", idx},
				{"content_block", obj{{"type", "tool_use"}, {"id", toolID(j)}, {"name", call.tool.name}, {"input", obj{}}}}})
			ping()
			if a.d.midstream {
				midstream(0)
				return
			}
			for _, piece := range append([]string{""}, splitBytes(call.args, 6)...) {
				ev("content_block_delta", obj{{"type", "content_block_delta"}, {"index", idx},
					{"delta", obj{{"type", "input_json_delta"}, {"partial_json", piece}}}})
			}
		}
	} else {
		ev("content_block_start", obj{{"type", "content_block_start"}, {"index", idx},
			{"content_block", obj{{"type", "text"}, {"text", ""}}}})
		ping()
		pieces := a.pieces
		if a.d.midstream {
			pieces = pieces[:a.midstreamCut()]
		}
		for _, p := range pieces {
			ev("content_block_delta", obj{{"type", "content_block_delta"}, {"index", idx},
				{"delta", obj{{"type", "text_delta"}, {"text", p}}}})
		}
		if a.d.midstream {
			midstream(len(pieces))
			return
		}
	}
	ev("content_block_stop", obj{{"type", "content_block_stop"}, {"index", idx}})
	delta := obj{{"stop_reason", stop}, {"stop_sequence", nil}}
	if newAPI {
		delta = append(delta, kv{"stop_details", nil})
	}
	md := obj{{"type", "message_delta"}, {"delta", delta}}
	if a.d.noUsage {
		c.rec.NoUsageOnWire = true
	} else {
		u := anthropicDeltaUsage(a.k)
		md = append(md, kv{"usage", u})
		c.rec.Native = marshal(u)
	}
	ev("message_delta", md)
	ev("message_stop", obj{{"type", "message_stop"}})
	h := c.anthropicHeaders()
	h["cache-control"] = "no-cache"
	c.stream("text/event-stream; charset=utf-8", h, out)
}

var anthropicModelList = []struct{ id, name, created string }{
	{"claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-01T00:00:00Z"},
	{"claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"},
	{"claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"},
	{"claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"},
	{"claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-14T00:00:00Z"},
}

func (c *call) anthropicModels(id string) {
	model := func(id, name, created string) obj {
		line := any(nil)
		for _, l := range []string{"opus", "sonnet", "haiku"} {
			if strings.Contains(id, l) {
				line = l
			}
		}
		return obj{{"type", "model"}, {"id", id}, {"display_name", name}, {"created_at", created},
			{"lifecycle", "active"}, {"line", line}, {"max_input_tokens", 200000}, {"max_tokens", 64000},
			{"deprecated_at", nil}, {"retires_at", nil}}
	}
	if id != "" {
		c.rec.Model = id
		for _, m := range anthropicModelList {
			if m.id == id {
				c.send(200, "application/json", marshal(model(m.id, m.name, m.created)), c.anthropicHeaders())
				return
			}
		}
		c.send(200, "application/json", marshal(model(id, id, "2025-01-01T00:00:00Z")), c.anthropicHeaders())
		return
	}
	var data []any
	for _, m := range anthropicModelList {
		data = append(data, model(m.id, m.name, m.created))
	}
	c.send(200, "application/json", marshal(obj{{"data", data}, {"has_more", false},
		{"first_id", anthropicModelList[0].id}, {"last_id", anthropicModelList[len(anthropicModelList)-1].id}}),
		c.anthropicHeaders())
}
