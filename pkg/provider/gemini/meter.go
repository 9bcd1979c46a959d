package gemini

import (
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonedit"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// NewMeter implements gateway.Provider.
func (*Provider) NewMeter(r gateway.Route, _ gateway.Rewritten) gateway.Meter {
	return &meter{stream: r.Stream}
}

// meter reads usageMetadata. In a stream every chunk carries the running
// total for the request, so the last one wins; totals are never summed.
type meter struct {
	stream bool
	u      usage.Tokens
	state  gateway.Completeness
	chars  int64
	// counted is chars when the last running total arrived: the text up to
	// there is inside its counts.
	counted int64
	failed  bool
}

// UncountedChars implements gateway.RunningTotaler: each usageMetadata is a
// running total that covers the text of its own chunk and all before.
func (m *meter) UncountedChars() int64 { return m.chars - m.counted }

func (m *meter) Usage() (usage.Tokens, gateway.Completeness) { return m.u, m.state }
func (m *meter) OutputChars() int64                          { return m.chars }

// Failed implements gateway.StreamFailer.
func (m *meter) Failed() bool { return m.failed }

func (m *meter) Event(ev sse.Event) bool {
	m.Document(ev.Data)
	return false
}

func (m *meter) Document(doc []byte) {
	// A chunk with an error object is how a stream fails after its 200
	// (SSE and streamed array alike); the running total before it stands.
	if present(doc, "error") {
		m.failed = true
		return
	}
	var first []byte
	if cands, ok := jsonscan.Field(doc, "candidates"); ok {
		first = jsonedit.FirstElement(cands)
		if parts, ok := jsonscan.Field(first, "content", "parts"); ok {
			if text, ok := jsonscan.Field(jsonedit.FirstElement(parts), "text"); ok {
				m.chars += int64(len(text))
			}
		}
	}
	raw, ok := jsonscan.Field(doc, "usageMetadata")
	if !ok || jsonedit.IsNull(raw) {
		return
	}
	n := func(path string) int64 {
		c, _ := gateway.Count(raw, path)
		return c
	}
	prompt, cached := n("promptTokenCount"), n("cachedContentTokenCount")
	cached = min(cached, prompt)
	thoughts, candidates := n("thoughtsTokenCount"), n("candidatesTokenCount")
	m.counted = m.chars
	m.u = usage.Tokens{
		Input:       prompt - cached + n("toolUsePromptTokenCount"),
		CachedInput: cached,
		Output:      candidates + thoughts,
		Reasoning:   thoughts,
	}
	// The parts billed above text: uncached audio (the prompt's audio less
	// the cached audio; cached audio stays at the cached rate, the price
	// table has no rate of its own for it) and generated images, each
	// clamped to the count it is a part of.
	audio := modality(raw, "promptTokensDetails", "AUDIO") - modality(raw, "cacheTokensDetails", "AUDIO")
	m.u.AudioInput = min(max(audio, 0), m.u.Input)
	m.u.ImageOutput = min(modality(raw, "candidatesTokensDetails", "IMAGE"), candidates)
	// A whole response is final; in a stream, the chunk that ends the
	// candidate carries the final total, and so does a blocked prompt's,
	// which ends the stream with no candidate at all.
	if !m.stream || present(first, "finishReason") || present(doc, "promptFeedback", "blockReason") {
		m.state = gateway.FinalUsage
	} else if m.state != gateway.FinalUsage {
		m.state = gateway.PartialUsage
	}
}

// present reports whether the member at path is there and not null.
func present(doc []byte, path ...string) bool {
	raw, ok := jsonscan.Field(doc, path...)
	return ok && !jsonedit.IsNull(raw)
}

// modality sums the tokenCount of the entries of the *TokensDetails array
// key of a usageMetadata whose modality is want
// ([{"modality":"AUDIO","tokenCount":N}, …]). An array that cannot be read
// counts as no tokens, which bills them at the text rate of their kind.
func modality(usageMetadata []byte, key, want string) int64 {
	arr, ok := jsonscan.Field(usageMetadata, key)
	if !ok || len(arr) == 0 || arr[0] != '[' {
		return 0
	}
	var sum int64
	for i := 1; i < len(arr); {
		switch arr[i] {
		case ' ', '\t', '\n', '\r', ',':
			i++
			continue
		case ']':
			return sum
		}
		end, ok := jsonscan.ValueEnd(arr, i)
		if !ok {
			return 0
		}
		entry := arr[i:end]
		if raw, ok := jsonscan.Field(entry, "modality"); ok {
			if s, _ := jsonscan.String(raw); s == want {
				c, _ := gateway.Count(entry, "tokenCount")
				sum = usage.Clamp(sum + c) // each term ≤ MaxCount: no overflow
			}
		}
		i = end
	}
	return 0
}
