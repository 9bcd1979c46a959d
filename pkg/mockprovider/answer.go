package mockprovider

import (
	"encoding/json"
	"strings"
)

// tool is a declared tool: its name and JSON schema.
type tool struct {
	name   string
	schema json.RawMessage
}

// toolCall is one call of a declared tool.
type toolCall struct {
	tool tool
	args string
}

// answer is what the mock replies to a generation request, decided before
// anything is written.
type answer struct {
	d      directives
	reply  string   // text reply (empty for tool calls)
	pieces []string // reply split into stream chunks
	isTool bool
	tool   tool
	args   string     // tool call arguments, compact JSON
	calls  []toolCall // every call: the first is tool/args
	k      counts     // full usage of the answer
}

// plan decides the answer. promptText is every string in the request,
// promptBytes its length; overhead is added to the input estimate. tools
// are the declared function tools in order; lastIsToolResult reports that
// the conversation ends with a tool result, which turns [[mock tool]] off
// so that tool loops terminate.
func (c *call) plan(promptText string, promptBytes int, overhead int64, tools []tool, lastIsToolResult bool) *answer {
	d := parseDirectives(promptText)
	a := &answer{d: d}
	if d.tool && !lastIsToolResult && len(tools) > 0 {
		a.isTool = true
		n := 1
		if d.parallel {
			n = len(tools)
		}
		for _, t := range tools[:n] {
			a.calls = append(a.calls, toolCall{t, argsFromSchema(t.schema)})
		}
		a.tool, a.args = a.calls[0].tool, a.calls[0].args
	}
	var out int64
	if a.isTool {
		for _, tc := range a.calls {
			out += toolCallOutput(tc.tool.name, tc.args)
		}
	} else {
		jsonOut, schema := c.outputFormat()
		switch {
		case d.reply != nil:
			a.reply = *d.reply
		case len(schema) > 0:
			a.reply = valueFromSchema(schema)
		case jsonOut:
			a.reply = string(marshal(map[string]string{"answer": defaultReply(c.seedBytes())}))
		default:
			a.reply = defaultReply(c.seedBytes())
		}
		chunks := d.chunks
		if jsonOut && chunks == 0 {
			// compact JSON has few spaces: stream it in pieces of
			// about 16 bytes rather than as one "word"
			chunks = (len(a.reply) + 15) / 16
		}
		a.pieces = splitText(a.reply, chunks)
		out = words(a.reply)
	}
	a.k = resolveCounts(d, c.s.provider, estimate(promptBytes)+overhead, out)
	c.rec.ToolCall = a.isTool
	c.rec.Reply = a.reply
	return a
}

func (c *call) seedBytes() []byte {
	c.id("", 0)
	return c.seed
}

// midstreamCut is how many reply pieces are sent before a mid-stream error:
// about half, at least one when there is any.
func (a *answer) midstreamCut() int {
	n := len(a.pieces)
	if n <= 1 {
		return n
	}
	return n / 2
}

// partialCounts is the ground truth of an answer cut after sent pieces:
// the input side and reasoning in full (thinking comes first), plus the
// words sent so far, capped at the full output.
func (a *answer) partialCounts(sent int) counts {
	k := a.k
	k.output = min(words(strings.Join(a.pieces[:sent], ""))+k.reasoning, a.k.output)
	return k
}

// outputFormat reports whether the request asks for a JSON answer
// (structured outputs or JSON mode) and the JSON schema it must fit, if
// any: OpenAI chat response_format, Responses text.format, Anthropic
// output_config.format (and the beta output_format), Gemini
// generationConfig.responseMimeType "application/json" with
// responseJsonSchema or responseSchema.
func (c *call) outputFormat() (jsonOut bool, schema json.RawMessage) {
	type format struct {
		Type       string          `json:"type"`
		Schema     json.RawMessage `json:"schema"`
		JSONSchema struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}
	var req struct {
		ResponseFormat *format `json:"response_format"`
		Text           struct {
			Format *format `json:"format"`
		} `json:"text"`
		OutputFormat *format `json:"output_format"`
		OutputConfig struct {
			Format *format `json:"format"`
		} `json:"output_config"`
		GenerationConfig  map[string]json.RawMessage `json:"generationConfig"`
		GenerationConfig2 map[string]json.RawMessage `json:"generation_config"`
	}
	if json.Unmarshal(c.body, &req) != nil {
		return false, nil
	}
	present := func(r json.RawMessage) bool { return len(r) > 0 && string(r) != "null" }
	switch c.s.provider {
	case "gemini":
		gc := req.GenerationConfig
		if gc == nil {
			gc = req.GenerationConfig2
		}
		var mime string
		for _, k := range []string{"responseMimeType", "response_mime_type"} {
			if mime == "" {
				_ = json.Unmarshal(gc[k], &mime)
			}
		}
		if mime != "application/json" {
			return false, nil
		}
		for _, k := range []string{"responseJsonSchema", "response_json_schema", "responseSchema", "response_schema"} {
			if present(gc[k]) {
				return true, gc[k]
			}
		}
		return true, nil
	default:
		var f *format
		for _, x := range []*format{req.ResponseFormat, req.Text.Format, req.OutputConfig.Format, req.OutputFormat} {
			if x != nil && f == nil {
				f = x
			}
		}
		if f == nil {
			return false, nil
		}
		switch f.Type {
		case "json_object":
			return true, nil
		case "json_schema":
			if present(f.JSONSchema.Schema) {
				return true, f.JSONSchema.Schema
			}
			if present(f.Schema) {
				return true, f.Schema
			}
			return true, nil
		}
	}
	return false, nil
}
