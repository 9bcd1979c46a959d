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

// answer is what the mock replies to a generation request, decided before
// anything is written.
type answer struct {
	d      directives
	reply  string   // text reply (empty for tool calls)
	pieces []string // reply split into stream chunks
	isTool bool
	tool   tool
	args   string // tool call arguments, compact JSON
	k      counts // full usage of the answer
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
		a.tool = tools[0]
		a.args = argsFromSchema(tools[0].schema)
	}
	var out int64
	if a.isTool {
		out = toolCallOutput(a.tool.name, a.args)
	} else {
		if d.reply != nil {
			a.reply = *d.reply
		} else {
			a.reply = defaultReply(c.seedBytes())
		}
		a.pieces = splitText(a.reply, d.chunks)
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
