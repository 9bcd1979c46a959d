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
	// top and usage hold Document's member values while it runs (here,
	// not on its stack, which they would escape from on every call).
	top   [len(topKeys)][]byte
	usage [len(usageKeys)][]byte
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
	// One pass over the chunk for every member read here, one over its
	// usageMetadata for every count: a chunk is read twice, not once a key.
	defer clear(m.top[:]) // they alias the chunk
	jsonscan.Members(doc, topKeys[:], m.top[:])
	errObj, cands, raw, feedback := m.top[0], m.top[1], m.top[2], m.top[3]
	// A chunk with an error object is how a stream fails after its 200
	// (SSE and streamed array alike); the running total before it stands.
	if errObj != nil && !jsonedit.IsNull(errObj) {
		m.failed = true
		return
	}
	var first []byte
	if cands != nil {
		first = jsonedit.FirstElement(cands)
		if parts, ok := jsonscan.Field(first, "content", "parts"); ok {
			if text, ok := jsonscan.Field(jsonedit.FirstElement(parts), "text"); ok {
				m.chars += int64(len(text))
			}
		}
	}
	if raw == nil || jsonedit.IsNull(raw) {
		return
	}
	defer clear(m.usage[:])
	jsonscan.Members(raw, usageKeys[:], m.usage[:])
	u := &m.usage
	if !counts(u[:uPromptDetails]) {
		// No count at all (Vertex's early chunks carry only trafficType):
		// not a running total, and no reason to bill zero.
		return
	}
	n := func(i int) int64 {
		c, _ := gateway.Count(u[i])
		return c
	}
	prompt, cached := n(uPrompt), n(uCached)
	cached = min(cached, prompt)
	thoughts, candidates := n(uThoughts), n(uCandidates)
	m.counted = m.chars
	m.u = usage.Tokens{
		Input:       prompt - cached + n(uToolUse),
		CachedInput: cached,
		Output:      candidates + thoughts,
		Reasoning:   thoughts,
	}
	// The parts billed above text: uncached audio (the prompt's audio less
	// the cached audio; cached audio stays at the cached rate, the price
	// table has no rate of its own for it) and generated images, each
	// clamped to the count it is a part of.
	audio := modality(u[uPromptDetails], "AUDIO") - modality(u[uCacheDetails], "AUDIO")
	m.u.AudioInput = min(max(audio, 0), m.u.Input)
	m.u.ImageOutput = min(modality(u[uCandidatesDetails], "IMAGE"), candidates)
	// A whole response is final; in a stream, the chunk that ends the
	// candidate carries the final total, and so does a blocked prompt's,
	// which ends the stream with no candidate at all.
	if !m.stream || present(first, "finishReason") || present(feedback, "blockReason") {
		m.state = gateway.FinalUsage
	} else if m.state != gateway.FinalUsage {
		m.state = gateway.PartialUsage
	}
}

// topKeys are the members of a response (or chunk) the meter reads.
var topKeys = [...]string{"error", "candidates", "usageMetadata", "promptFeedback"}

// usageKeys are the members of usageMetadata the meter reads, indexed by
// the u… constants: the token counters, then (from uPromptDetails) the
// modality arrays.
var usageKeys = [...]string{"promptTokenCount", "cachedContentTokenCount", "candidatesTokenCount",
	"thoughtsTokenCount", "toolUsePromptTokenCount", "promptTokensDetails", "cacheTokensDetails", "candidatesTokensDetails"}

const (
	uPrompt = iota
	uCached
	uCandidates
	uThoughts
	uToolUse
	uPromptDetails
	uCacheDetails
	uCandidatesDetails
)

// counts reports whether any of the token counters read is there and not
// null.
func counts(vals [][]byte) bool {
	for _, v := range vals {
		if v != nil && !jsonedit.IsNull(v) {
			return true
		}
	}
	return false
}

// present reports whether the member at path is there and not null.
func present(doc []byte, path ...string) bool {
	raw, ok := jsonscan.Field(doc, path...)
	return ok && !jsonedit.IsNull(raw)
}

// modalityCode is the number of a Modality enum value the meter prices
// apart (google.ai.generativelanguage Modality), "" for others.
func modalityCode(name string) string {
	switch name {
	case "IMAGE":
		return "2"
	case "AUDIO":
		return "4"
	}
	return ""
}

// modality sums the tokenCount of the entries of a *TokensDetails array
// whose modality is want ([{"modality":"AUDIO","tokenCount":N}, …]). An
// array that cannot be read counts as no tokens, which bills them at the
// text rate of their kind.
func modality(arr []byte, want string) int64 {
	var sum int64
	code := modalityCode(want)
	valid := jsonscan.Elements(arr, func(entry []byte) bool {
		if raw, ok := jsonscan.Field(entry, "modality"); ok {
			// A name, or its number when the client asked for
			// alt=json;enum-encoding=int.
			if s, _ := jsonscan.String(raw); s == want || code != "" && string(raw) == code {
				c, _ := gateway.Count(entry, "tokenCount")
				sum = usage.Clamp(sum + c) // each term ≤ MaxCount: no overflow
			}
		}
		return true
	})
	if !valid {
		return 0
	}
	return sum
}
