package mockprovider

import (
	"bytes"
	"encoding/json"
)

// obj is a JSON object that keeps its key order.
type obj []kv

type kv struct {
	k string
	v any
}

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(marshal(e.k))
		b.WriteByte(':')
		b.Write(marshal(e.v))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       json.RawMessage `json:"instructions"`
	Stream             bool            `json:"stream"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	MaxOutputTokens    json.RawMessage `json:"max_output_tokens"`
	MaxToolCalls       json.RawMessage `json:"max_tool_calls"`
	PreviousResponseID json.RawMessage `json:"previous_response_id"`
	PromptCacheKey     json.RawMessage `json:"prompt_cache_key"`
	Temperature        json.RawMessage `json:"temperature"`
	TopP               json.RawMessage `json:"top_p"`
	ParallelToolCalls  json.RawMessage `json:"parallel_tool_calls"`
	Store              json.RawMessage `json:"store"`
	Metadata           json.RawMessage `json:"metadata"`
	Reasoning          json.RawMessage `json:"reasoning"`
	Text               json.RawMessage `json:"text"`
	User               json.RawMessage `json:"user"`
	SafetyIdentifier   json.RawMessage `json:"safety_identifier"`
	Background         bool            `json:"background"`
	ServiceTier        string          `json:"service_tier"`
}

func orRaw(raw json.RawMessage, def string) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage(def)
	}
	return raw
}

// serviceTierOut is the tier a response reports for the requested one.
func serviceTierOut(req string) string {
	if req == "" || req == "auto" {
		return "default"
	}
	if req == "fast" || req == "ultrafast" {
		return "priority"
	}
	return req
}

type respUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

func respUsageOf(k counts) respUsage {
	var u respUsage
	u.InputTokens = k.input + k.cached
	u.InputTokensDetails.CachedTokens = k.cached
	u.OutputTokens = k.output
	u.OutputTokensDetails.ReasoningTokens = k.reasoning
	u.TotalTokens = u.InputTokens + u.OutputTokens
	return u
}

func (c *call) responsesParse() (*responsesRequest, []tool, bool, bool) {
	var req responsesRequest
	if json.Unmarshal(c.body, &req) != nil {
		c.openaiBadJSON()
		return nil, nil, false, false
	}
	c.rec.Model = req.Model
	if req.Model == "" {
		c.openaiMissing("model")
		return nil, nil, false, false
	}
	var tools []tool
	var decl []struct {
		Type       string          `json:"type"`
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	}
	_ = json.Unmarshal(req.Tools, &decl)
	for _, t := range decl {
		if t.Type == "function" && t.Name != "" {
			tools = append(tools, tool{t.Name, t.Parameters})
		}
	}
	var items []struct {
		Type string `json:"type"`
	}
	lastIsToolResult := false
	if json.Unmarshal(req.Input, &items) == nil && len(items) > 0 {
		lastIsToolResult = items[len(items)-1].Type == "function_call_output"
	}
	return &req, tools, lastIsToolResult, true
}

func (c *call) openaiInputTokens() {
	req, _, _, ok := c.responsesParse()
	if !ok {
		return
	}
	_ = req
	text, n := textOf(c.body)
	d := parseDirectives(text)
	if d.errStatus != 0 {
		c.openaiDirectiveError(d, c.rec.Model)
		return
	}
	k := resolveCounts(d, "openai", estimate(n)+openaiOverhead, 0)
	c.send(200, "application/json", marshalIndent(obj{
		{"object", "response.input_tokens"},
		{"input_tokens", k.input + k.cached},
	}, false), c.openaiHeaders())
}

func (c *call) openaiResponses() {
	req, tools, lastIsToolResult, ok := c.responsesParse()
	if !ok {
		return
	}
	text, n := textOf(c.body)
	a := c.plan(text, n, openaiOverhead, tools, lastIsToolResult)
	if a.d.errStatus != 0 {
		c.openaiDirectiveError(a.d, req.Model)
		return
	}
	created := c.s.opts.created()
	respID := "resp_" + hexID(c.seedBytes(), "resp", 50)
	msgID := "msg_" + hexID(c.seedBytes(), "msg", 50)
	// ids of the j-th function call
	fcID := func(j int) string {
		if j == 0 {
			return "fc_" + hexID(c.seedBytes(), "fc", 50)
		}
		return "fc_" + hexID(c.seedBytes(), "fc"+itoa(j), 50)
	}
	callID := func(j int) string {
		if j == 0 {
			return "call_" + c.id("call", 24)
		}
		return "call_" + c.id("call"+itoa(j), 24)
	}
	usageRaw := marshal(respUsageOf(a.k))
	c.rec.Usage = a.k.tokens()

	textPart := func(t string) obj {
		return obj{{"type", "output_text"}, {"annotations", []any{}}, {"logprobs", []any{}}, {"text", t}}
	}
	// item is output item j (the message, or function call j)
	item := func(j int, status string, done bool) obj {
		if a.isTool {
			args := ""
			if done {
				args = a.calls[j].args
			}
			return obj{{"id", fcID(j)}, {"type", "function_call"}, {"status", status},
				{"arguments", args}, {"call_id", callID(j)}, {"name", a.calls[j].tool.name}}
		}
		content := []any{}
		if done {
			content = []any{textPart(a.reply)}
		}
		return obj{{"id", msgID}, {"type", "message"}, {"status", status}, {"content", content}, {"role", "assistant"}}
	}
	items := func() []any {
		out := []any{item(0, "completed", true)}
		for j := 1; j < len(a.calls); j++ {
			out = append(out, item(j, "completed", true))
		}
		return out
	}
	response := func(status string, output []any, usage json.RawMessage, billing bool) obj {
		o := obj{
			{"id", respID}, {"object", "response"}, {"created_at", created}, {"status", status},
			{"background", req.Background},
		}
		if billing {
			o = append(o, kv{"billing", obj{{"payer", "developer"}}})
		}
		completedAt := json.RawMessage("null")
		if status == "completed" {
			completedAt = marshal(created + 1)
		}
		tools := orRaw(req.Tools, "[]")
		return append(o,
			kv{"completed_at", completedAt},
			kv{"error", null},
			kv{"frequency_penalty", json.RawMessage("0.0")},
			kv{"incomplete_details", null},
			kv{"instructions", orRaw(req.Instructions, "null")},
			kv{"max_output_tokens", orRaw(req.MaxOutputTokens, "null")},
			kv{"max_tool_calls", orRaw(req.MaxToolCalls, "null")},
			kv{"model", req.Model},
			kv{"output", output},
			kv{"parallel_tool_calls", orRaw(req.ParallelToolCalls, "true")},
			kv{"presence_penalty", json.RawMessage("0.0")},
			kv{"previous_response_id", orRaw(req.PreviousResponseID, "null")},
			kv{"prompt_cache_key", orRaw(req.PromptCacheKey, "null")},
			kv{"prompt_cache_retention", "in_memory"},
			kv{"reasoning", orRaw(req.Reasoning, `{"effort":null,"summary":null}`)},
			kv{"safety_identifier", orRaw(req.SafetyIdentifier, "null")},
			kv{"service_tier", serviceTierOut(req.ServiceTier)},
			kv{"store", orRaw(req.Store, "true")},
			kv{"temperature", orRaw(req.Temperature, "1.0")},
			kv{"text", orRaw(req.Text, `{"format":{"type":"text"},"verbosity":"medium"}`)},
			kv{"tool_choice", orRaw(req.ToolChoice, `"auto"`)},
			kv{"tools", tools},
			kv{"top_logprobs", 0},
			kv{"top_p", orRaw(req.TopP, "1.0")},
			kv{"truncation", "disabled"},
			kv{"usage", usage},
			kv{"user", orRaw(req.User, "null")},
			kv{"metadata", orRaw(req.Metadata, "{}")},
		)
	}
	finalUsage := json.RawMessage(usageRaw)
	if a.d.noUsage {
		finalUsage = null
		c.rec.NoUsageOnWire = true
	} else {
		c.rec.Native = usageRaw
	}

	if !req.Stream {
		c.send(200, "application/json",
			marshalIndent(response("completed", items(), finalUsage, true), false),
			c.openaiHeaders())
		return
	}

	var out [][]byte
	seq := 0
	ev := func(typ string, fields ...kv) {
		o := append(obj{{"type", typ}}, fields...)
		o = append(o, kv{"sequence_number", seq})
		seq++
		out = append(out, sseEvent(typ, marshal(o)))
	}
	ev("response.created", kv{"response", response("in_progress", []any{}, null, false)})
	ev("response.in_progress", kv{"response", response("in_progress", []any{}, null, false)})
	ev("response.output_item.added", kv{"item", item(0, "in_progress", false)}, kv{"output_index", 0})
	midstream := func(sent int) {
		c.rec.MidstreamError = true
		c.rec.NoUsageOnWire = true
		c.rec.Native = nil
		c.rec.Usage = a.partialCounts(sent).tokens()
		e := obj{{"type", "server_error"}, {"code", "server_error"},
			{"message", "The server had an error while processing your request. Sorry about that!"}, {"param", nil}}
		if a.d.midstream429 {
			e = obj{{"type", "tokens"}, {"code", "rate_limit_exceeded"}, {"message", orgRateLimit(req.Model)}, {"param", nil}}
		}
		ev("error", kv{"error", e})
		c.stream("text/event-stream; charset=utf-8", c.openaiHeaders(), out)
	}
	if a.isTool {
		if a.d.midstream {
			midstream(0)
			return
		}
		for j, call := range a.calls {
			if j > 0 {
				ev("response.output_item.done", kv{"item", item(j-1, "completed", true)}, kv{"output_index", j - 1})
				ev("response.output_item.added", kv{"item", item(j, "in_progress", false)}, kv{"output_index", j})
			}
			for _, piece := range splitBytes(call.args, 5) {
				ev("response.function_call_arguments.delta", kv{"delta", piece}, kv{"item_id", fcID(j)}, kv{"output_index", j})
			}
			ev("response.function_call_arguments.done", kv{"arguments", call.args}, kv{"item_id", fcID(j)},
				kv{"name", call.tool.name}, kv{"output_index", j})
		}
	} else {
		ev("response.content_part.added", kv{"content_index", 0}, kv{"item_id", msgID}, kv{"output_index", 0},
			kv{"part", textPart("")})
		pieces := a.pieces
		if a.d.midstream {
			pieces = pieces[:a.midstreamCut()]
		}
		for _, p := range pieces {
			ev("response.output_text.delta", kv{"content_index", 0}, kv{"delta", p}, kv{"item_id", msgID},
				kv{"logprobs", []any{}}, kv{"output_index", 0})
		}
		if a.d.midstream {
			midstream(len(pieces))
			return
		}
		ev("response.output_text.done", kv{"content_index", 0}, kv{"item_id", msgID}, kv{"logprobs", []any{}},
			kv{"output_index", 0}, kv{"text", a.reply})
		ev("response.content_part.done", kv{"content_index", 0}, kv{"item_id", msgID}, kv{"output_index", 0},
			kv{"part", textPart(a.reply)})
	}
	last := max(len(a.calls)-1, 0)
	ev("response.output_item.done", kv{"item", item(last, "completed", true)}, kv{"output_index", last})
	ev("response.completed", kv{"response", response("completed", items(), finalUsage, false)})
	c.stream("text/event-stream; charset=utf-8", c.openaiHeaders(), out)
}
