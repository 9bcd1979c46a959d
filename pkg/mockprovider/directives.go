package mockprovider

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// directives are the [[mock ...]] instructions found in a request's text.
type directives struct {
	errStatus     int    // 400-599, 0 = none
	retryAfter    string // for 429/503/529; default "1"
	noRetry       bool   // x-should-retry: false on the error
	errReason     string // Gemini: an ErrorInfo reason on the error
	tool          bool
	parallel      bool // call every declared tool
	reply         *string
	midstream     bool
	midstream429  bool // the mid-stream error is the account's rate limit
	noUsage       bool
	chunks        int
	input, cached *int64
	cacheWrite    *int64
	output        *int64
	reasoning     *int64
	toolPrompt    *int64
}

var directiveRE = regexp.MustCompile(`(?s)\[\[mock(\s.*?)?\]\]`)

// parseDirectives reads every [[mock ...]] token in text. Later tokens win.
func parseDirectives(text string) directives {
	var d directives
	for _, m := range directiveRE.FindAllStringSubmatch(text, -1) {
		rest := strings.TrimSpace(m[1])
		for rest != "" {
			var item string
			// reply= takes the rest of the directive, spaces included.
			if strings.HasPrefix(rest, "reply=") {
				v := strings.TrimSpace(strings.TrimPrefix(rest, "reply="))
				if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
					v = v[1 : len(v)-1]
				}
				d.reply = &v
				break
			}
			if i := strings.IndexAny(rest, " \t\r\n"); i >= 0 {
				item, rest = rest[:i], strings.TrimSpace(rest[i+1:])
			} else {
				item, rest = rest, ""
			}
			key, val, hasVal := strings.Cut(item, "=")
			n, numErr := strconv.ParseInt(val, 10, 64)
			num := func() *int64 {
				if !hasVal || numErr != nil || n < 0 {
					return nil
				}
				v := n
				return &v
			}
			switch strings.ToLower(key) {
			case "error":
				if num() != nil && n >= 400 && n <= 599 {
					d.errStatus = int(n)
				}
			case "retry_after":
				if num() != nil {
					d.retryAfter = val
				}
			case "should_retry":
				d.noRetry = val == "false"
			case "reason":
				d.errReason = val
			case "tool":
				d.tool = true
			case "parallel_tools":
				d.tool, d.parallel = true, true
			case "midstream_error":
				d.midstream = true
				d.midstream429 = val == "429"
			case "no_usage":
				d.noUsage = true
			case "chunks":
				if num() != nil && n > 0 {
					d.chunks = int(n)
				}
			case "input":
				d.input = or(num(), d.input)
			case "cached":
				d.cached = or(num(), d.cached)
			case "cache_write":
				d.cacheWrite = or(num(), d.cacheWrite)
			case "output":
				d.output = or(num(), d.output)
			case "reasoning":
				d.reasoning = or(num(), d.reasoning)
			case "tool_prompt":
				d.toolPrompt = or(num(), d.toolPrompt)
			}
			// "usage" and unknown words are ignored.
		}
	}
	return d
}

func or(a, b *int64) *int64 {
	if a != nil {
		return a
	}
	return b
}

// counts is the usage of one answer, before it is rendered natively.
// Input is the uncached input excluding Gemini's tool-use prompt.
type counts struct {
	input, cached, cacheWrite, output, reasoning, toolPrompt int64
}

// tokens is the ground truth in the gateway's disjoint terms.
func (k counts) tokens() usage.Tokens {
	return usage.Tokens{
		Input:       k.input + k.toolPrompt,
		CachedInput: k.cached,
		CacheWrite:  k.cacheWrite,
		Output:      k.output,
		Reasoning:   k.reasoning,
	}
}

// resolveCounts combines the computed defaults with the usage directive.
// provider decides which directive fields apply.
func resolveCounts(d directives, provider string, computedInput, computedOutput int64) counts {
	k := counts{input: computedInput, output: computedOutput}
	if d.input != nil {
		k.input = *d.input
	}
	if d.cached != nil {
		k.cached = *d.cached
	}
	if d.cacheWrite != nil && provider == "anthropic" {
		k.cacheWrite = *d.cacheWrite
	}
	if d.toolPrompt != nil && provider == "gemini" {
		k.toolPrompt = *d.toolPrompt
	}
	if d.reasoning != nil {
		k.reasoning = *d.reasoning
		if d.output == nil {
			k.output += k.reasoning
		}
	}
	if d.output != nil {
		k.output = *d.output
	}
	if k.output < k.reasoning {
		k.output = k.reasoning
	}
	return k
}

// textOf returns every JSON string value in body (object keys excluded, and
// the values of "model" keys excluded), joined by newlines, and its length
// in bytes.
func textOf(body []byte) (string, int) {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return string(body), len(body)
	}
	var parts []string
	n := 0
	var walk func(x any, key string)
	walk = func(x any, key string) {
		switch t := x.(type) {
		case string:
			if key != "model" {
				parts = append(parts, t)
				n += len(t)
			}
		case []any:
			for _, e := range t {
				walk(e, key)
			}
		case map[string]any:
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(t[k], k)
			}
		}
	}
	walk(v, "")
	return strings.Join(parts, "\n"), n
}

// estimate is ceil(n/4).
func estimate(n int) int64 { return int64((n + 3) / 4) }

func words(s string) int64 { return int64(len(strings.Fields(s))) }

// toolCallOutput is the output token count of a tool call.
func toolCallOutput(name, args string) int64 { return estimate(len(name)+len(args)) + 5 }

var jokes = []string{
	"Why did the scarecrow win an award? Because he was outstanding in his field.",
	"I used to hate facial hair, but then it grew on me.",
	"Why don't skeletons fight each other? They don't have the guts.",
	"I'm reading a book about anti-gravity. It's impossible to put down.",
	"What do you call a fake noodle? An impasta.",
	"Why did the bicycle fall over? Because it was two tired.",
	"How does a penguin build its house? Igloos it together.",
	"I only know 25 letters of the alphabet. I don't know y.",
}

// defaultReply picks a dad joke from the request hash.
func defaultReply(seed []byte) string {
	h := sha256.Sum256(seed)
	return jokes[int(binary.BigEndian.Uint32(h[:4])%uint32(len(jokes)))]
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// hashID derives n base62 characters from seed and kind.
func hashID(seed []byte, kind string, n int) string {
	var out []byte
	for ctr := 0; len(out) < n; ctr++ {
		h := sha256.New()
		h.Write([]byte(kind))
		h.Write([]byte{0, byte(ctr)})
		h.Write(seed)
		for _, b := range h.Sum(nil) {
			if len(out) == n {
				break
			}
			out = append(out, idAlphabet[int(b)%len(idAlphabet)])
		}
	}
	return string(out)
}

// hexID derives n lowercase hex characters.
func hexID(seed []byte, kind string, n int) string {
	const hexd = "0123456789abcdef"
	var out []byte
	for ctr := 0; len(out) < n; ctr++ {
		h := sha256.Sum256(append([]byte(kind+"\x00"+strconv.Itoa(ctr)+"\x00"), seed...))
		for _, b := range h {
			if len(out) >= n {
				break
			}
			out = append(out, hexd[b>>4], hexd[b&15])
		}
	}
	return string(out[:n])
}

// splitText splits s into n pieces that concatenate back to s: at word
// boundaries when s has at least n words (each piece after the first starts
// with its separating space), else at rune boundaries. n is capped at the
// rune count. An empty s gives no pieces.
func splitText(s string, n int) []string {
	if s == "" {
		return nil
	}
	if n <= 0 {
		n = len(strings.Fields(s))
		if n == 0 {
			n = 1
		}
	}
	// word starts (byte offsets), each piece begins at a word start or 0
	var starts []int
	inWord := false
	for i, r := range s {
		sp := r == ' ' || r == '\n' || r == '\t' || r == '\r'
		if !sp && !inWord {
			starts = append(starts, i)
		}
		inWord = !sp
	}
	var cuts []int // byte offsets where pieces begin, excluding 0
	if len(starts) >= n {
		for j := 1; j < n; j++ {
			w := starts[j*len(starts)/n]
			// include the preceding whitespace in this piece
			for w > 0 && (s[w-1] == ' ' || s[w-1] == '\n' || s[w-1] == '\t' || s[w-1] == '\r') {
				w--
			}
			cuts = append(cuts, w)
		}
	} else {
		rc := utf8.RuneCountInString(s)
		if n > rc {
			n = rc
		}
		var offs []int
		for i := range s {
			offs = append(offs, i)
		}
		for j := 1; j < n; j++ {
			cuts = append(cuts, offs[j*rc/n])
		}
	}
	var out []string
	prev := 0
	for _, c := range cuts {
		if c <= prev {
			continue
		}
		out = append(out, s[prev:c])
		prev = c
	}
	return append(out, s[prev:])
}

// splitBytes splits s into pieces of about size bytes on rune boundaries.
func splitBytes(s string, size int) []string {
	var out []string
	for len(s) > size {
		i := size
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		if i == 0 {
			i = size
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// argsFromSchema builds plausible arguments (compact JSON, sorted keys) for
// a JSON schema: required properties (all properties when none are
// required) get a value of their type.
func argsFromSchema(schema json.RawMessage) string {
	var sc map[string]any
	if json.Unmarshal(schema, &sc) != nil || sc == nil {
		return "{}"
	}
	v := newSampler(sc).value(sc, 0)
	if _, ok := v.(map[string]any); !ok {
		return "{}"
	}
	return string(marshal(v))
}

// valueFromSchema is a value (compact JSON, sorted keys) that fits schema,
// whatever its root type; "{}" when schema is not a JSON object.
func valueFromSchema(schema json.RawMessage) string {
	var sc map[string]any
	if json.Unmarshal(schema, &sc) != nil || sc == nil {
		return "{}"
	}
	return string(marshal(newSampler(sc).value(sc, 0)))
}

// resolveRef follows a local "#/..." reference ($defs, definitions) from
// root; nil when it cannot.
func resolveRef(root map[string]any, ref string) map[string]any {
	if !strings.HasPrefix(ref, "#") {
		return nil
	}
	var cur any = root
	for _, seg := range strings.Split(strings.TrimPrefix(ref, "#"), "/") {
		if seg == "" {
			continue
		}
		seg = strings.NewReplacer("~1", "/", "~0", "~").Replace(seg)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[seg]
	}
	m, _ := cur.(map[string]any)
	return m
}

// sampler builds a value that fits a schema. left bounds the values it
// makes: a schema whose arrays and objects nest (through $ref, say) could
// otherwise ask for millions, and the mock would hang on a client's schema.
type sampler struct {
	root map[string]any
	left int
}

// maxSampleValues bounds the values one answer builds from a schema.
const maxSampleValues = 10_000

func newSampler(root map[string]any) *sampler { return &sampler{root: root, left: maxSampleValues} }

func (s *sampler) value(sc map[string]any, depth int) any {
	if s.left--; s.left < 0 {
		return nil
	}
	root := s.root
	if ref, ok := sc["$ref"].(string); ok && depth <= 8 {
		if m := resolveRef(root, ref); m != nil {
			return s.value(m, depth+1)
		}
	}
	if e, ok := sc["enum"].([]any); ok && len(e) > 0 {
		return e[0]
	}
	if c, ok := sc["const"]; ok {
		return c
	}
	typ, _ := sc["type"].(string)
	if ts, ok := sc["type"].([]any); ok {
		// the first type that is not "null": ["string","null"] is a string
		for _, x := range ts {
			if s, _ := x.(string); s != "" && (typ == "" || typ == "null") {
				typ = s
			}
		}
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf"} {
		if alts, ok := sc[k].([]any); ok && len(alts) > 0 && typ == "" {
			for _, alt := range alts {
				m, ok := alt.(map[string]any)
				if ok && m["type"] != "null" {
					return s.value(m, depth+1)
				}
			}
			return nil
		}
	}
	props, _ := sc["properties"].(map[string]any)
	if typ == "" && props != nil {
		typ = "object"
	}
	switch strings.ToLower(typ) {
	case "string":
		switch sc["format"] {
		case "date-time":
			return "2026-01-01T00:00:00Z"
		case "date":
			return "2026-01-01"
		case "time":
			return "00:00:00Z"
		case "email":
			return "user@example.com"
		case "uri", "url":
			return "https://example.com/"
		case "uuid":
			return "00000000-0000-4000-8000-000000000000"
		}
		return "example"
	case "integer", "number":
		n := 1.0
		if m, ok := numberOf(sc["minimum"]); ok && m > n {
			n = m
		}
		if m, ok := numberOf(sc["exclusiveMinimum"]); ok && m >= n {
			n = m + 1
		}
		if m, ok := numberOf(sc["maximum"]); ok && m < n {
			n = m
		}
		if strings.EqualFold(typ, "integer") {
			return int64(n)
		}
		return n
	case "boolean":
		return true
	case "array":
		out := []any{}
		minItems, _ := numberOf(sc["minItems"])
		items, _ := sc["items"].(map[string]any)
		if items == nil {
			items = map[string]any{"type": "string"}
		}
		for i := 0; i < int(minItems) && i < 8 && depth <= 8; i++ {
			out = append(out, s.value(items, depth+1))
		}
		return out
	case "null":
		return nil
	case "object":
		out := map[string]any{}
		if depth > 8 || props == nil {
			return out
		}
		var names []string
		if req, ok := sc["required"].([]any); ok && len(req) > 0 {
			for _, r := range req {
				if s, ok := r.(string); ok {
					names = append(names, s)
				}
			}
		} else {
			for k := range props {
				names = append(names, k)
			}
		}
		for _, n := range names {
			p, _ := props[n].(map[string]any)
			if p == nil {
				p = map[string]any{"type": "string"}
			}
			out[n] = s.value(p, depth+1)
		}
		return out
	}
	return "example"
}

// numberOf reads a JSON number (or a numeric string, as Gemini's Schema
// writes int64 fields).
func numberOf(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}

// embedding returns a deterministic unit vector of dims float32 for text.
func embedding(text string, dims int) []float32 {
	out := make([]float32, dims)
	var sum float64
	var block [32]byte
	for i := 0; i < dims; i++ {
		if i%8 == 0 {
			block = sha256.Sum256([]byte(strconv.Itoa(i/8) + "\x00" + text))
		}
		u := binary.LittleEndian.Uint32(block[(i%8)*4:])
		f := float64(u)/float64(math.MaxUint32)*2 - 1
		out[i] = float32(f)
		sum += f * f
	}
	norm := math.Sqrt(sum)
	if norm == 0 {
		norm = 1
	}
	for i := range out {
		out[i] = float32(float64(out[i]) / norm)
	}
	return out
}

// embeddingBase64 encodes v as little-endian float32s in standard base64.
func embeddingBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func itoa(n int) string { return strconv.Itoa(n) }
