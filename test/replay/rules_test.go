package replay

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// This file is the harness's own reading of docs/gateway-rules.md: which
// recorded requests the gateway forwards, which it answers itself, and
// which it refuses, with what status and error. It is written from the
// document, not from pkg/, so that a recording the gateway handles against
// its documented rules fails the replay instead of redefining it. Every
// recorded interaction lands in exactly one handling; none is an error, so
// a cassette added later is replayed or checked as refused, never ignored
// and never fatal.

// handling is what the gateway does with a recorded request.
type handling int

const (
	// handleReplay: forwarded to the (replayed) provider.
	handleReplay handling = iota
	// handleRefuse: the gateway answers with its own error and calls no
	// provider.
	handleRefuse
	// handleLocal: the gateway answers from its catalog (model listings).
	handleLocal
	// handleSkip: not a request to an API the gateway fronts (another
	// host: Azure OpenAI, Vertex AI, other vendors); nothing to send.
	handleSkip
)

func (h handling) String() string {
	return [...]string{"replayed", "refused", "local", "skipped"}[h]
}

// replayCase is one recorded interaction with what the harness derives
// from it.
type replayCase struct {
	It       Interaction
	Handling handling
	// Skip says why a handleSkip case is not sent.
	Skip     string
	Provider string // openai, anthropic, gemini
	Op       string // the operation, as the gateway names it in records
	Target   string // path and query under the gateway, e.g. /openai/v1/chat/completions
	Model    string // the model the request names ("" when it names none)
	// Unbilled: a token-counting route; the provider does not bill it and
	// the gateway records no tokens.
	Unbilled bool
	// Refusal is the expected answer of a handleRefuse case.
	Refusal refusal
}

// refusal is a gateway refusal in the provider's error shape.
type refusal struct {
	Rule   string // which documented rule refuses
	Status int
	// Type is OpenAI's and Anthropic's error.type, Gemini's error.status.
	Type string
	// Code and Param are OpenAI's error.code and error.param; "" is null.
	Code, Param string
	// BodyRule: refused for its body, after the route matched; the record
	// then names the operation and the model.
	BodyRule bool
}

func (c replayCase) streamRequested() bool {
	if c.Provider == "gemini" {
		return c.Op == "streamGenerateContent"
	}
	var m struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(c.It.RequestBody, &m)
	return m.Stream
}

// providerHosts are the APIs the gateway fronts, by recorded host.
var providerHosts = map[string]string{
	"api.openai.com":                    "openai",
	"api.anthropic.com":                 "anthropic",
	"generativelanguage.googleapis.com": "gemini",
}

// foreignHost names a host the gateway does not front, by rule.
func foreignHost(host string) string {
	switch {
	case strings.HasSuffix(host, ".openai.azure.com"), strings.HasSuffix(host, ".cognitiveservices.azure.com"),
		strings.HasSuffix(host, ".services.ai.azure.com"):
		return "Azure OpenAI (" + host + "): deployments on Azure's host, not api.openai.com's API"
	case host == "aiplatform.googleapis.com", strings.HasSuffix(host, "-aiplatform.googleapis.com"):
		return "Vertex AI (" + host + "): projects/…/publishers/google/models on Google Cloud's host, not the Gemini Developer API"
	}
	return host + ": not one of the provider APIs the gateway fronts (api.openai.com, api.anthropic.com, generativelanguage.googleapis.com)"
}

// classify places a recorded interaction.
func classify(it Interaction) replayCase {
	c := replayCase{It: it}
	host := strings.ToLower(it.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	p, ok := providerHosts[host]
	if !ok {
		c.Handling, c.Skip = handleSkip, foreignHost(host)
		return c
	}
	c.Provider = p
	c.Target = "/" + p + it.Path
	if it.RawQuery != "" {
		c.Target += "?" + it.RawQuery
	}
	var post bool // a served route; its method must be POST
	switch p {
	case "openai":
		post = c.openAIRoute()
	case "anthropic":
		post = c.anthropicRoute()
	case "gemini":
		post = c.geminiRoute()
	}
	switch {
	case c.Handling != handleReplay:
		return c
	case !post:
		return c
	case it.Method != http.MethodPost:
		return c.refuse(refusal{Rule: "method not allowed", Status: http.StatusMethodNotAllowed, Code: "method_not_allowed"})
	}
	return c.bodyRules()
}

func (c replayCase) refuse(r refusal) replayCase {
	c.Handling = handleRefuse
	if r.Type == "" {
		r.Type = errorType(c.Provider, r.Status)
	}
	c.Refusal = r
	return c
}

// errorType is the error type (OpenAI, Anthropic) or status (Gemini) the
// gateway pairs with an HTTP status, per the table "Gateway errors in each
// provider's shape".
func errorType(provider string, status int) string {
	switch provider {
	case "anthropic":
		if status == http.StatusNotFound {
			return "not_found_error"
		}
		return "invalid_request_error"
	case "gemini":
		switch status {
		case http.StatusNotFound:
			return "NOT_FOUND"
		default:
			return "INVALID_ARGUMENT"
		}
	}
	return "invalid_request_error"
}

// unservedPath is a route refusal: the gateway does not serve the path.
func (c replayCase) unservedPath() replayCase {
	return c.refuse(refusal{Rule: "path not served", Status: http.StatusNotFound, Code: "unsupported"})
}

// openAIRoute: chat, Responses and embeddings are served, model listings
// answered locally, everything else is a 404. A path without /v1 gets it.
func (c *replayCase) openAIRoute() bool {
	path := c.It.Path
	if path != "/v1" && !strings.HasPrefix(path, "/v1/") {
		path = "/v1" + path
	}
	switch {
	case path == "/v1/chat/completions":
		c.Op = "chat.completions"
	case path == "/v1/responses":
		c.Op = "responses"
	case path == "/v1/embeddings":
		c.Op = "embeddings"
	case path == "/v1/models" || strings.HasPrefix(path, "/v1/models/") && len(path) > len("/v1/models/"):
		*c = c.local(strings.TrimPrefix(strings.TrimPrefix(path, "/v1/models"), "/"))
		return false
	default:
		*c = c.unservedPath()
		return false
	}
	return true
}

// anthropicRoute: messages and token counting are served; ?beta=true is
// accepted (and dropped upstream).
func (c *replayCase) anthropicRoute() bool {
	switch path := c.It.Path; {
	case path == "/v1/messages":
		c.Op = "messages"
	case path == "/v1/messages/count_tokens":
		c.Op, c.Unbilled = "messages.count_tokens", true
	case path == "/v1/models" || strings.HasPrefix(path, "/v1/models/") && len(path) > len("/v1/models/"):
		*c = c.local(strings.TrimPrefix(strings.TrimPrefix(path, "/v1/models"), "/"))
		return false
	default:
		*c = c.unservedPath()
		return false
	}
	return true
}

// geminiRoute: /{v1beta,v1,v1alpha}/models/{m}:{verb} for the five served
// verbs; batch and cachedContents are 400 INVALID_ARGUMENT, the rest 404.
func (c *replayCase) geminiRoute() bool {
	version, rest, _ := strings.Cut(strings.TrimPrefix(c.It.Path, "/"), "/")
	switch version {
	case "v1beta", "v1", "v1alpha":
	default:
		*c = c.unservedPath()
		return false
	}
	switch {
	case rest == "models":
		*c = c.local("")
		return false
	case strings.HasPrefix(rest, "models/") && !strings.Contains(rest, ":"):
		*c = c.local(strings.TrimPrefix(rest, "models/"))
		return false
	case strings.HasPrefix(rest, "models/"):
		model, verb, _ := strings.Cut(strings.TrimPrefix(rest, "models/"), ":")
		c.Model = model
		switch verb {
		case "generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents":
			c.Op = verb
		case "countTokens":
			c.Op, c.Unbilled = verb, true
		case "batchGenerateContent", "asyncBatchEmbedContent":
			*c = c.refuse(refusal{Rule: "batch inference", Status: http.StatusBadRequest})
			return false
		default:
			*c = c.unservedPath()
			return false
		}
		return true
	case strings.HasPrefix(rest, "cachedContents"):
		*c = c.refuse(refusal{Rule: "cachedContents", Status: http.StatusBadRequest})
	case strings.HasPrefix(rest, "batches"):
		*c = c.refuse(refusal{Rule: "batch inference", Status: http.StatusBadRequest})
	default:
		*c = c.unservedPath()
	}
	return false
}

// local is a model listing the gateway answers from its catalog; model is
// the id asked for, "" for the list.
func (c replayCase) local(model string) replayCase {
	c.Handling, c.Model = handleLocal, model
	c.Op = "models.list"
	if model != "" {
		c.Op = "models.get"
	}
	return c
}

// bodyRules applies the documented body rules to a served POST.
func (c replayCase) bodyRules() replayCase {
	var doc map[string]any
	dec := json.NewDecoder(strings.NewReader(string(c.It.RequestBody)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return c.refuse(refusal{Rule: "body not a JSON object", Status: http.StatusBadRequest, BodyRule: true})
	}
	if c.Provider != "gemini" {
		m, _ := doc["model"].(string)
		if m == "" {
			return c.refuse(refusal{Rule: "no model", Status: http.StatusBadRequest, Param: "model", BodyRule: true})
		}
		c.Model = m
	}
	unsupported := func(rule, param string) replayCase {
		return c.refuse(refusal{Rule: rule, Status: http.StatusBadRequest, Code: "unsupported", Param: param, BodyRule: true})
	}
	switch c.Provider {
	case "openai":
		if c.Op == "embeddings" {
			break
		}
		if tier, _ := doc["service_tier"].(string); tier == "priority" || tier == "fast" {
			return unsupported(`service_tier "`+tier+`"`, "service_tier")
		}
		if c.Op == "responses" {
			for _, f := range []string{"previous_response_id", "conversation"} {
				if v, ok := doc[f]; ok && v != nil {
					return unsupported(f, f)
				}
			}
			if doc["background"] == true {
				return unsupported("background", "background")
			}
		}
	case "anthropic":
		if doc["speed"] == "fast" {
			return unsupported(`speed "fast"`, "")
		}
		if hasLongCacheTTL(doc) {
			return unsupported(`cache_control.ttl "1h"`, "")
		}
		// Server-side fallbacks and the advisor tool bill other models
		// than the one requested, under usage the top level leaves out.
		if fb, ok := doc["fallbacks"].([]any); ok && len(fb) > 0 {
			return unsupported("fallbacks", "")
		}
		tools, _ := doc["tools"].([]any)
		for _, t := range tools {
			tool, _ := t.(map[string]any)
			if typ, _ := tool["type"].(string); strings.HasPrefix(typ, "advisor_") {
				return unsupported("advisor tool "+typ, "")
			}
		}
	case "gemini":
		for _, f := range []string{"cachedContent", "cached_content"} {
			if v, ok := doc[f]; ok && v != nil {
				return unsupported(f, "")
			}
		}
		for _, f := range []string{"serviceTier", "service_tier"} {
			if tier, _ := doc[f].(string); strings.Contains(strings.ToLower(tier), "priority") {
				return unsupported(f+` "`+tier+`"`, "")
			}
		}
	}
	return c
}

// hasLongCacheTTL reports a cache_control with ttl "1h" anywhere in v: the
// harness's own reading of the rule, independent of the provider's code it checks.
func hasLongCacheTTL(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		if cc, ok := v["cache_control"].(map[string]any); ok && cc["ttl"] == "1h" {
			return true
		}
		for _, e := range v {
			if hasLongCacheTTL(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasLongCacheTTL(e) {
				return true
			}
		}
	}
	return false
}

// modelNotFound is the refusal of a model the catalog does not serve.
func (c replayCase) modelNotFound() replayCase {
	return c.refuse(refusal{Rule: "model not in the catalog", Status: http.StatusNotFound,
		Code: "model_not_found", Param: "model", BodyRule: true})
}

// wantUpstreamQuery is the query the gateway forwards: the recorded one
// without the gateway token's ?key= and, for Anthropic, without ?beta=true
// (docs/gateway-rules.md, Routes), the rest byte for byte and in order.
func (c replayCase) wantUpstreamQuery() string {
	drop := map[string]bool{"key": true}
	if c.Provider == "anthropic" {
		drop["beta"] = true
	}
	var keep []string
	for _, pair := range strings.Split(c.It.RawQuery, "&") {
		if pair == "" {
			continue
		}
		k, _, _ := strings.Cut(pair, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if !drop[k] {
			keep = append(keep, pair)
		}
	}
	return strings.Join(keep, "&")
}

// checkErrorShape checks that body is the provider's error document for r.
func checkErrorShape(provider string, status int, r refusal, body []byte) error {
	switch provider {
	case "openai":
		var e struct {
			Error *struct {
				Message *string `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == nil {
			return fmt.Errorf("not an OpenAI error document: %.300s", body)
		}
		deref := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		if e.Error.Type != r.Type || deref(e.Error.Code) != r.Code || deref(e.Error.Param) != r.Param {
			return fmt.Errorf("OpenAI error type %q code %q param %q, want %q %q %q: %.300s",
				e.Error.Type, deref(e.Error.Code), deref(e.Error.Param), r.Type, r.Code, r.Param, body)
		}
	case "anthropic":
		var e struct {
			Type  string `json:"type"`
			Error *struct {
				Type    string  `json:"type"`
				Message *string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" || e.Error == nil || e.Error.Message == nil {
			return fmt.Errorf("not an Anthropic error document: %.300s", body)
		}
		if e.Error.Type != r.Type {
			return fmt.Errorf("Anthropic error type %q, want %q: %.300s", e.Error.Type, r.Type, body)
		}
	case "gemini":
		var e struct {
			Error *struct {
				Code    int     `json:"code"`
				Message *string `json:"message"`
				Status  string  `json:"status"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == nil {
			return fmt.Errorf("not a Gemini error document: %.300s", body)
		}
		if e.Error.Code != status || e.Error.Status != r.Type {
			return fmt.Errorf("Gemini error code %d status %q, want %d %q: %.300s", e.Error.Code, e.Error.Status, status, r.Type, body)
		}
	}
	return nil
}
