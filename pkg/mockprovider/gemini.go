package mockprovider

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// NewGemini returns a mock of the Gemini Developer API
// (generativelanguage.googleapis.com), under /v1beta, /v1 and /v1alpha:
// POST models/{m}:generateContent, :streamGenerateContent (?alt=sse or $alt=sse gives
// SSE, otherwise a streamed JSON array), :countTokens, :embedContent,
// :batchEmbedContents; GET models, models/{m}.
func NewGemini(opts Options) *Server { return newServer("gemini", opts, geminiRoute) }

const geminiOverhead = 1

func geminiRoute(c *call) {
	if !c.authorized(c.r.Header.Get("X-Goog-Api-Key"), c.r.URL.Query().Get("key")) {
		c.geminiErrorDetails(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT",
			[]any{obj{{"@type", "type.googleapis.com/google.rpc.ErrorInfo"}, {"reason", "API_KEY_INVALID"}, {"domain", "googleapis.com"}}},
			directives{})
		return
	}
	p := c.r.URL.Path
	var rest string
	for _, v := range []string{"/v1beta/", "/v1/", "/v1alpha/"} {
		if strings.HasPrefix(p, v) {
			rest = strings.TrimPrefix(p, v)
			break
		}
	}
	resource, method, hasMethod := strings.Cut(rest, ":")
	var model string
	switch {
	case strings.HasPrefix(resource, "models/"):
		model = strings.TrimPrefix(resource, "models/")
	case strings.HasPrefix(resource, "tunedModels/"):
		model = resource
	}
	switch {
	case resource == "models" && !hasMethod && c.r.Method == http.MethodGet:
		c.rec.Endpoint = "models"
		c.geminiModels("")
	case model != "" && !hasMethod && c.r.Method == http.MethodGet:
		c.rec.Endpoint = "models"
		c.geminiModels(model)
	case model != "" && hasMethod && c.r.Method == http.MethodPost:
		c.rec.Model = model
		c.rec.Endpoint = method
		switch method {
		case "generateContent":
			c.geminiGenerate(model, false)
		case "streamGenerateContent":
			c.geminiGenerate(model, true)
		case "countTokens":
			c.geminiCountTokens()
		case "embedContent":
			c.geminiEmbed(model, false)
		case "batchEmbedContents":
			c.geminiEmbed(model, true)
		default:
			c.geminiError(404, "Method not found.", "NOT_FOUND", directives{})
		}
	default:
		c.geminiError(404, "Method not found.", "NOT_FOUND", directives{})
	}
}

func (c *call) geminiHeaders() map[string]string {
	return map[string]string{
		"server":                 "scaffolding on HTTPServer2",
		"vary":                   "Origin, X-Origin, Referer",
		"x-content-type-options": "nosniff",
		"x-frame-options":        "SAMEORIGIN",
		"x-xss-protection":       "0",
	}
}

const geminiJSON = "application/json; charset=UTF-8"

func (c *call) geminiError(status int, msg, st string, d directives) {
	c.geminiErrorDetails(status, msg, st, nil, d)
}

func (c *call) geminiErrorDetails(status int, msg, st string, details []any, d directives) {
	e := obj{{"code", status}, {"message", msg}, {"status", st}}
	if details != nil {
		e = append(e, kv{"details", details})
	}
	h := c.geminiHeaders()
	retryHeaders(h, status, d)
	c.send(status, geminiJSON, marshalIndent(obj{{"error", e}}, true), h)
}

// geminiStatus maps an HTTP status to the google.rpc code name.
func geminiStatus(s int) string {
	switch s {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 501:
		return "NOT_IMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	if s >= 500 {
		return "INTERNAL"
	}
	return "FAILED_PRECONDITION"
}

func (c *call) geminiDirectiveError(d directives, model string) {
	s := d.errStatus
	st := geminiStatus(s)
	msg := fmt.Sprintf("Mock error %d.", s)
	var details []any
	switch s {
	case 400:
		msg = "Request contains an invalid argument."
		if d.errReason == "API_KEY_INVALID" {
			msg = "API key not valid. Please pass a valid API key."
		}
	case 401:
		msg = "Request had invalid authentication credentials."
	case 403:
		// Google quotes the key it was called with (a suspended key).
		key := c.r.Header.Get("x-goog-api-key")
		if key == "" {
			key = c.r.URL.Query().Get("key")
		}
		msg = fmt.Sprintf("Permission denied: Consumer 'api_key:%s' has been suspended.", key)
		details = []any{obj{{"@type", "type.googleapis.com/google.rpc.ErrorInfo"}, {"reason", "CONSUMER_SUSPENDED"}, {"domain", "googleapis.com"},
			{"metadata", obj{{"service", "generativelanguage.googleapis.com"}, {"consumer", "projects/123456789012"}, {"containerInfo", "api_key:" + key}}}}}
	case 404:
		msg = fmt.Sprintf("models/%s is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.", model)
	case 429:
		msg = "You exceeded your current quota, please check your plan and billing details."
		ra := d.retryAfter
		if ra == "" {
			ra = "1"
		}
		details = []any{obj{{"@type", "type.googleapis.com/google.rpc.RetryInfo"}, {"retryDelay", ra + "s"}}}
	case 500:
		msg = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
	case 503:
		msg = "The model is overloaded. Please try again later."
	case 504:
		msg = "Deadline expired before operation could complete."
	}
	if d.errReason != "" {
		details = append(details, obj{{"@type", "type.googleapis.com/google.rpc.ErrorInfo"}, {"reason", d.errReason}, {"domain", "googleapis.com"},
			{"metadata", obj{{"service", "generativelanguage.googleapis.com"}}}})
	}
	c.geminiErrorDetails(s, msg, st, details, d)
}

type geminiContent struct {
	Role  string                       `json:"role"`
	Parts []map[string]json.RawMessage `json:"parts"`
}

type geminiFuncDecl struct {
	Name                 string          `json:"name"`
	Parameters           json.RawMessage `json:"parameters"`
	ParametersJSONSchema json.RawMessage `json:"parametersJsonSchema"`
}

// Google reads request JSON with protobuf's rules, which take every field
// under its snake_case name as well as its camelCase one, each on its own
// ("generationConfig": {"thinking_config": …} is valid): the fields the
// mock acts on are read under both (the ones ending in 2 are snake_case).
type geminiRequest struct {
	Contents []geminiContent `json:"contents"`
	Tools    []struct {
		FunctionDeclarations  []geminiFuncDecl `json:"functionDeclarations"`
		FunctionDeclarations2 []geminiFuncDecl `json:"function_declarations"`
	} `json:"tools"`
	GenerationConfig  *geminiGenerationConfig `json:"generationConfig"`
	GenerationConfig2 *geminiGenerationConfig `json:"generation_config"`
}

type geminiGenerationConfig struct {
	ThinkingConfig  *geminiThinkingConfig `json:"thinkingConfig"`
	ThinkingConfig2 *geminiThinkingConfig `json:"thinking_config"`
}

type geminiThinkingConfig struct {
	IncludeThoughts  *bool  `json:"includeThoughts"`
	IncludeThoughts2 *bool  `json:"include_thoughts"`
	ThinkingBudget   *int64 `json:"thinkingBudget"`
	ThinkingBudget2  *int64 `json:"thinking_budget"`
}

// thinking is the request's thinkingConfig under either spelling of each
// field: whether it has one, whether it asks for thoughts in the answer,
// and its budget (nil: the model's default).
func (r *geminiRequest) thinking() (set, include bool, budget *int64) {
	gc := cmp.Or(r.GenerationConfig, r.GenerationConfig2)
	if gc == nil {
		return false, false, nil
	}
	tc := cmp.Or(gc.ThinkingConfig, gc.ThinkingConfig2)
	if tc == nil {
		return false, false, nil
	}
	inc := cmp.Or(tc.IncludeThoughts, tc.IncludeThoughts2)
	return true, inc != nil && *inc, cmp.Or(tc.ThinkingBudget, tc.ThinkingBudget2)
}

// sseRequested reports whether the request asks for SSE: alt=sse, or the
// same system parameter as $alt (Google's documented spelling for every
// system parameter, sent percent-encoded as %24alt by careful clients).
func sseRequested(q url.Values) bool {
	return cmp.Or(q.Get("alt"), q.Get("$alt")) == "sse"
}

// geminiThought is the thought summary of every answer to a request with
// thinkingConfig.includeThoughts.
const geminiThought = "**Answering briefly**\n\nThe user wants a short answer; I will keep it brief."

// geminiUsage renders usageMetadata. candidates is the visible output so
// far; prompt = uncached + cached; total = prompt + candidates + tool-use
// prompt + thoughts.
func geminiUsage(k counts, candidates int64) obj {
	prompt := k.input + k.cached
	total := prompt + candidates + k.toolPrompt + k.reasoning
	o := obj{{"promptTokenCount", prompt}}
	if candidates > 0 {
		o = append(o, kv{"candidatesTokenCount", candidates})
	}
	o = append(o, kv{"totalTokenCount", total})
	if k.cached > 0 {
		o = append(o, kv{"cachedContentTokenCount", k.cached})
	}
	o = append(o, kv{"promptTokensDetails", []any{obj{{"modality", "TEXT"}, {"tokenCount", prompt}}}})
	if k.cached > 0 {
		o = append(o, kv{"cacheTokensDetails", []any{obj{{"modality", "TEXT"}, {"tokenCount", k.cached}}}})
	}
	if k.toolPrompt > 0 {
		o = append(o, kv{"toolUsePromptTokenCount", k.toolPrompt},
			kv{"toolUsePromptTokensDetails", []any{obj{{"modality", "TEXT"}, {"tokenCount", k.toolPrompt}}}})
	}
	if k.reasoning > 0 {
		o = append(o, kv{"thoughtsTokenCount", k.reasoning})
	}
	return append(o, kv{"serviceTier", "standard"})
}

// googleCompact re-spaces compact JSON the way Google's SSE payloads are
// written: a space after every key colon, none after commas.
func googleCompact(b []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
	for _, ch := range b {
		out.WriteByte(ch)
		switch {
		case esc:
			esc = false
		case inStr && ch == '\\':
			esc = true
		case ch == '"':
			inStr = !inStr
		case !inStr && ch == ':':
			out.WriteByte(' ')
		}
	}
	return out.Bytes()
}

func geminiMarshalCompact(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	if err := enc.Encode(v); err != nil {
		panic("mockprovider: marshal: " + err.Error())
	}
	return googleCompact(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

func (c *call) geminiGenerate(model string, stream bool) {
	var req geminiRequest
	if err := json.Unmarshal(c.body, &req); err != nil {
		c.geminiError(400, "Invalid JSON payload received. "+err.Error(), "INVALID_ARGUMENT", directives{})
		return
	}
	if len(req.Contents) == 0 {
		c.geminiError(400, "* GenerateContentRequest.contents: contents is not specified\n", "INVALID_ARGUMENT", directives{})
		return
	}
	var tools []tool
	for _, t := range req.Tools {
		for _, f := range append(t.FunctionDeclarations, t.FunctionDeclarations2...) {
			if f.Name == "" {
				continue
			}
			schema := f.Parameters
			if len(schema) == 0 {
				schema = f.ParametersJSONSchema
			}
			tools = append(tools, tool{f.Name, schema})
		}
	}
	lastIsToolResult := false
	for _, part := range req.Contents[len(req.Contents)-1].Parts {
		if part["functionResponse"] != nil || part["function_response"] != nil {
			lastIsToolResult = true
		}
	}
	text, n := textOf(c.body)
	a := c.plan(text, n, geminiOverhead, tools, lastIsToolResult)
	if a.d.errStatus != 0 {
		c.geminiDirectiveError(a.d, model)
		return
	}
	// thinkingConfig with a budget other than 0: the thoughts are billed as
	// reasoning (thoughtsTokenCount) unless the usage directive says;
	// includeThoughts sends them as a part marked thought.
	var thoughtPart obj
	if set, include, budget := req.thinking(); set && (budget == nil || *budget != 0) {
		if a.d.reasoning == nil {
			r := words(geminiThought)
			if a.d.output == nil {
				a.k.output += r
			}
			a.k.reasoning = min(r, a.k.output)
		}
		if include {
			thoughtPart = obj{{"text", geminiThought}, {"thought", true}}
		}
	}
	c.rec.Usage = a.k.tokens()
	respID := c.id("responseId", 23)
	finalCandidates := a.k.output - a.k.reasoning

	chunk := func(parts []any, finish bool, usage obj) obj {
		cand := obj{{"content", obj{{"parts", parts}, {"role", "model"}}}}
		if finish {
			cand = append(cand, kv{"finishReason", "STOP"})
		}
		cand = append(cand, kv{"index", 0})
		o := obj{{"candidates", []any{cand}}}
		if usage != nil {
			o = append(o, kv{"usageMetadata", usage})
		}
		return append(o, kv{"modelVersion", model}, kv{"responseId", respID})
	}
	var callParts []any
	for _, call := range a.calls {
		callParts = append(callParts, obj{{"functionCall", obj{{"name", call.tool.name}, {"args", json.RawMessage(call.args)}}}})
	}

	if !stream {
		var usage obj
		if a.d.noUsage {
			c.rec.NoUsageOnWire = true
		} else {
			usage = geminiUsage(a.k, finalCandidates)
			c.rec.Native = marshal(usage)
		}
		parts := callParts
		if !a.isTool {
			parts = []any{obj{{"text", a.reply}}}
		}
		if thoughtPart != nil {
			parts = append([]any{thoughtPart}, parts...)
		}
		c.send(200, geminiJSON, marshalIndent(chunk(parts, true, usage), true), c.geminiHeaders())
		return
	}

	// The elements of the stream, then framed as SSE or a JSON array.
	var elems []obj
	var lastUsage obj
	usageAt := func(cands int64) obj {
		if a.d.noUsage {
			return nil
		}
		lastUsage = geminiUsage(a.k, cands)
		return lastUsage
	}
	pieces := a.pieces
	cut := len(pieces)
	if a.d.midstream && !a.isTool {
		cut = a.midstreamCut()
	}
	if thoughtPart != nil {
		elems = append(elems, chunk([]any{thoughtPart}, false, usageAt(0)))
	}
	switch {
	case a.isTool:
		if !a.d.midstream {
			elems = append(elems, chunk(callParts, true, usageAt(finalCandidates)))
		}
	case len(pieces) == 0:
		elems = append(elems, chunk([]any{obj{{"text", ""}}}, true, usageAt(finalCandidates)))
	default:
		for i := 0; i < cut; i++ {
			last := i == len(pieces)-1
			cands := min(words(strings.Join(pieces[:i+1], "")), finalCandidates)
			if last {
				cands = finalCandidates
			}
			elems = append(elems, chunk([]any{obj{{"text", pieces[i]}}}, last, usageAt(cands)))
		}
	}
	if lastUsage != nil {
		c.rec.Native = marshal(lastUsage)
	} else {
		c.rec.NoUsageOnWire = true
	}
	var errElem obj
	if a.d.midstream {
		c.rec.MidstreamError = true
		sent := cut
		if a.isTool {
			sent = 0
		}
		c.rec.Usage = a.partialCounts(sent).tokens()
		errElem = obj{{"error", obj{{"code", 503}, {"message", "The model is overloaded. Please try again later."}, {"status", "UNAVAILABLE"}}}}
		if a.d.midstream429 {
			errElem = obj{{"error", obj{{"code", 429}, {"message", "Quota exceeded for quota metric 'Generate Content input tokens' of service 'generativelanguage.googleapis.com' for consumer 'project_number:123456789012'."}, {"status", "RESOURCE_EXHAUSTED"}}}}
		}
	}

	var out [][]byte
	if sseRequested(c.r.URL.Query()) {
		for _, e := range elems {
			out = append(out, append(append([]byte("data: "), geminiMarshalCompact(e)...), "\r\n\r\n"...))
		}
		if errElem != nil {
			out = append(out, append(append([]byte("data: "), geminiMarshalCompact(errElem)...), "\r\n\r\n"...))
		}
		c.stream("text/event-stream", c.geminiHeaders(), out)
		return
	}
	all := elems
	if errElem != nil {
		all = append(all, errElem)
	}
	for i, e := range all {
		b := bytes.TrimSuffix(marshalIndent(e, true), []byte("\n"))
		var ch []byte
		if i == 0 {
			ch = append([]byte("["), b...)
		} else {
			ch = append([]byte("\n,\r\n"), b...)
		}
		if i == len(all)-1 {
			ch = append(ch, "\n]"...)
		}
		out = append(out, ch)
	}
	if len(out) == 0 {
		out = [][]byte{[]byte("[]")}
	}
	c.stream(geminiJSON, c.geminiHeaders(), out)
}

func (c *call) geminiCountTokens() {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(c.body, &req); err != nil {
		c.geminiError(400, "Invalid JSON payload received. "+err.Error(), "INVALID_ARGUMENT", directives{})
		return
	}
	text, n := textOf(c.body)
	d := parseDirectives(text)
	if d.errStatus != 0 {
		c.geminiDirectiveError(d, c.rec.Model)
		return
	}
	k := resolveCounts(d, "gemini", estimate(n)+geminiOverhead, 0)
	total := k.input + k.cached
	o := obj{{"totalTokens", total}}
	if k.cached > 0 {
		o = append(o, kv{"cachedContentTokenCount", k.cached})
	}
	o = append(o, kv{"promptTokensDetails", []any{obj{{"modality", "TEXT"}, {"tokenCount", total}}}})
	c.send(200, geminiJSON, marshalIndent(o, true), c.geminiHeaders())
}

type geminiEmbedRequest struct {
	Model   string `json:"model"`
	Content struct {
		Parts []struct {
			Text string `json:"text"`
		} `json:"parts"`
	} `json:"content"`
	OutputDimensionality *int `json:"outputDimensionality"`
}

func (c *call) geminiEmbed(model string, batch bool) {
	var reqs []geminiEmbedRequest
	if batch {
		var b struct {
			Requests []geminiEmbedRequest `json:"requests"`
		}
		if err := json.Unmarshal(c.body, &b); err != nil {
			c.geminiError(400, "Invalid JSON payload received. "+err.Error(), "INVALID_ARGUMENT", directives{})
			return
		}
		reqs = b.Requests
	} else {
		var r geminiEmbedRequest
		if err := json.Unmarshal(c.body, &r); err != nil {
			c.geminiError(400, "Invalid JSON payload received. "+err.Error(), "INVALID_ARGUMENT", directives{})
			return
		}
		reqs = []geminiEmbedRequest{r}
	}
	if len(reqs) == 0 {
		c.geminiError(400, "* BatchEmbedContentsRequest.requests: requests is not specified\n", "INVALID_ARGUMENT", directives{})
		return
	}
	maxDims := 3072
	if strings.Contains(model, "text-embedding") || model == "embedding-001" {
		maxDims = 768
	}
	var texts []string
	var tokens int64
	var vals []any
	for _, r := range reqs {
		var parts []string
		for _, p := range r.Content.Parts {
			parts = append(parts, p.Text)
		}
		t := strings.Join(parts, "\n")
		texts = append(texts, t)
		tokens += max(estimate(len(t)), 1)
		dims := maxDims
		if r.OutputDimensionality != nil {
			if *r.OutputDimensionality < 1 || *r.OutputDimensionality > maxDims {
				c.geminiError(400, fmt.Sprintf("* EmbedContentRequest.output_dimensionality: must be between 1 and %d\n", maxDims), "INVALID_ARGUMENT", directives{})
				return
			}
			dims = *r.OutputDimensionality
		}
		vals = append(vals, obj{{"values", embedding(model+"\x00"+t, dims)}})
	}
	d := parseDirectives(strings.Join(texts, "\n"))
	if d.errStatus != 0 {
		c.geminiDirectiveError(d, model)
		return
	}
	if d.input != nil {
		tokens = *d.input
	}
	c.rec.Usage.Input = tokens
	c.rec.NoUsageOnWire = true
	var body obj
	if batch {
		body = obj{{"embeddings", vals}}
	} else {
		body = obj{{"embedding", vals[0]}}
	}
	c.send(200, geminiJSON, marshalIndent(body, true), c.geminiHeaders())
}

var geminiModelList = []struct {
	id, name string
	in, out  int
	methods  []string
}{
	{"gemini-2.5-pro", "Gemini 2.5 Pro", 1048576, 65536, []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"}},
	{"gemini-2.5-flash", "Gemini 2.5 Flash", 1048576, 65536, []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"}},
	{"gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1048576, 65536, []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"}},
	{"gemini-2.0-flash", "Gemini 2.0 Flash", 1048576, 8192, []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"}},
	{"gemini-embedding-001", "Gemini Embedding 001", 2048, 1, []string{"embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"}},
}

func (c *call) geminiModels(id string) {
	model := func(id, name string, in, out int, methods []string) obj {
		return obj{{"name", "models/" + id}, {"version", "001"}, {"displayName", name},
			{"description", name + " (mock)"}, {"inputTokenLimit", in}, {"outputTokenLimit", out},
			{"supportedGenerationMethods", methods}}
	}
	if id != "" {
		c.rec.Model = id
		for _, m := range geminiModelList {
			if m.id == id {
				c.send(200, geminiJSON, marshalIndent(model(m.id, m.name, m.in, m.out, m.methods), true), c.geminiHeaders())
				return
			}
		}
		c.send(200, geminiJSON, marshalIndent(model(id, id, 1048576, 65536, []string{"generateContent", "countTokens"}), true), c.geminiHeaders())
		return
	}
	var list []any
	for _, m := range geminiModelList {
		list = append(list, model(m.id, m.name, m.in, m.out, m.methods))
	}
	c.send(200, geminiJSON, marshalIndent(obj{{"models", list}}, true), c.geminiHeaders())
}
