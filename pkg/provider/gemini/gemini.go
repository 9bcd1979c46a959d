// Package gemini is the Gemini Developer API as the gateway serves it:
// generateContent (plain, SSE and streamed JSON array), countTokens,
// embeddings, model listings from the catalog, usage from every shape, and
// Google's own error shape. Streams are forwarded byte for byte: the Go SDK
// fails on any added line.
package gemini

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonedit"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
)

// Provider implements gateway.Provider for Gemini.
type Provider struct{}

// New returns the Gemini provider.
func New() *Provider { return &Provider{} }

// Name implements gateway.Provider.
func (*Provider) Name() string { return "gemini" }

const (
	opGenerate      = "generateContent"
	opStream        = "streamGenerateContent"
	opCountTokens   = "countTokens"
	opEmbed         = "embedContent"
	opBatchEmbed    = "batchEmbedContents"
	opModelsList    = "models.list"
	opModelsGet     = "models.get"
	modelCollection = "models/"
)

// Match implements gateway.Provider. Paths are
// /{version}/models/{model}:{method} with version v1beta (the SDK default),
// v1 or v1alpha.
func (*Provider) Match(method, path, rawQuery string) (gateway.Route, *gateway.Failure) {
	// Every credential the client may put in the query (an API key, an
	// OAuth token) is its own; upstream gets the operator's key. Google
	// takes each system parameter with a leading '$' too ($key is its
	// documented spelling): a $key left in would reach Google beside the
	// operator's key, and a bad one be blamed on it (API_KEY_INVALID).
	r := gateway.Route{UpstreamPath: path, UpstreamQuery: gateway.QueryWithout(rawQuery,
		"key", "$key", "access_token", "$access_token", "oauth_token", "$oauth_token")}
	version, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	switch version {
	case "v1beta", "v1", "v1alpha":
	default:
		return r, notFound(method, path)
	}
	want := http.MethodPost
	switch {
	case rest == "models":
		r.Operation, r.Local, want = opModelsList, true, http.MethodGet
	case strings.HasPrefix(rest, modelCollection):
		escaped, verb, hasVerb := cutVerb(rest[len(modelCollection):])
		model, ok := gateway.PathSegment(escaped)
		if !ok {
			return r, notFound(method, path)
		}
		if !hasVerb {
			r.Operation, r.Local, want = opModelsGet, true, http.MethodGet
			r.ModelID = model
			break
		}
		r.Model = model
		// Upstream gets the colon plain, however the client spelled it.
		r.UpstreamPath = "/" + version + "/" + modelCollection + escaped + ":" + verb
		switch verb {
		case opGenerate, opEmbed, opBatchEmbed:
			r.Operation = verb
		case opStream:
			r.Operation, r.Stream = verb, true
			r.SSE = gateway.QueryValue(rawQuery, "alt") == "sse"
		case opCountTokens:
			r.Operation, r.Unbilled = verb, true
		case "batchGenerateContent", "asyncBatchEmbedContent":
			return r, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
				"%s is batch inference, which this gateway does not support.", verb)
		default:
			return r, notFound(method, path)
		}
	case strings.HasPrefix(rest, "cachedContents"):
		return r, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			"Explicit context caching (cachedContents) is not supported by this gateway.")
	case strings.HasPrefix(rest, "batches"):
		return r, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			"Batch inference is not supported by this gateway.")
	default:
		return r, notFound(method, path)
	}
	if method != want {
		return r, gateway.Fail(http.StatusMethodNotAllowed, gateway.CodeMethod,
			"Method %s is not allowed for %s; use %s.", method, path, want)
	}
	if !r.Local {
		return r, checkQuery(rawQuery)
	}
	return r, nil
}

// checkQuery refuses Google's system parameters that change how a response
// is written, which the gateway must read usage from: a field mask
// (fields) can leave usageMetadata out, JSONP (callback) wraps the JSON,
// and alt other than json or sse picks another encoding (proto). Google
// also takes each with a leading '$'.
func checkQuery(rawQuery string) *gateway.Failure {
	for p := range gateway.QueryParams(rawQuery) {
		k, v := gateway.Unescaped(p.Key), gateway.Unescaped(p.Value)
		switch strings.TrimPrefix(k, "$") {
		case "fields", "callback":
		case "alt":
			// The deprecated google-generativeai REST transport sends
			// "json;enum-encoding=int": enums as numbers, which the
			// meter reads too.
			if base, params, _ := strings.Cut(v, ";"); (base == "json" || base == "sse") && (params == "" || params == "enum-encoding=int") {
				continue
			}
		default:
			continue
		}
		return gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			"The query parameter %s is not supported by this gateway: it changes the response the gateway reads usage from.", k).WithParam(k)
	}
	return nil
}

// cutVerb splits an escaped "{model}:{method}" at its colon, which clients
// that escape every reserved character in a path segment send as %3A: Google
// decodes the path before it routes it, so both spellings name the method.
func cutVerb(s string) (model, verb string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == ':':
			return s[:i], s[i+1:], true
		case s[i] == '%' && i+2 < len(s) && s[i+1] == '3' && (s[i+2] == 'A' || s[i+2] == 'a'):
			return s[:i], s[i+3:], true
		}
	}
	return s, "", false
}

func notFound(method, path string) *gateway.Failure {
	return gateway.Fail(http.StatusNotFound, gateway.CodeUnsupported,
		"%s %s is not supported by this gateway.", method, path)
}

// Inspect implements gateway.Provider. The model comes from the path.
func (*Provider) Inspect(r gateway.Route, body []byte) (gateway.Inspection, *gateway.Failure) {
	in := gateway.Inspection{Model: r.Model, Stream: r.Stream}
	obj, f := gateway.ParseBody(body)
	if f != nil {
		return in, f
	}
	in.Body = obj
	// The API reads JSON with protobuf's rules, which accept a field's
	// snake_case name as well as its camelCase one.
	for _, field := range [...]string{"cachedContent", "cached_content"} {
		if !jsonedit.IsNull(obj.Get(field)) {
			return in, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
				"cachedContent (explicit context caching) is not supported by this gateway.").WithParam(field)
		}
	}
	// Priority processing is billed above the catalog's prices; protobuf
	// also accepts an enum's full name (SERVICE_TIER_PRIORITY).
	for _, field := range [...]string{"serviceTier", "service_tier"} {
		if tier, _ := gateway.StringField(obj, field); strings.Contains(strings.ToLower(tier), "priority") {
			return in, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
				"serviceTier %q (priority processing) is not supported by this gateway.", tier).WithParam(field)
		}
	}
	return in, checkBodyModels(r, obj)
}

// checkBodyModels refuses a body that names another model than the path
// (generateContent's and embedContent's model, each batchEmbedContents request's, countTokens'
// generateContentRequest.model): the gateway admits and bills the path's
// model. The SDKs always repeat it in embeddings; countTokens needs it in
// its generateContentRequest form, which raw REST users send to count a
// system instruction and tools too.
func checkBodyModels(r gateway.Route, obj *jsonedit.Object) *gateway.Failure {
	// names reports whether a body's model field, when present, is the path's.
	names := func(raw []byte) bool {
		if raw == nil || jsonedit.IsNull(raw) {
			return true
		}
		s, ok := jsonscan.String(raw)
		return ok && (s == r.Model || s == modelCollection+r.Model)
	}
	var bad string
	switch r.Operation {
	case opEmbed, opGenerate, opStream:
		// generateContent's request message has the path's model field
		// too: a body may set it, and which one Google then runs is not
		// documented.
		if !names(obj.Get("model")) {
			bad = "model"
		}
	case opCountTokens:
		for _, field := range countRequest {
			if raw, _ := jsonscan.Field(obj.Get(field), "model"); !names(raw) {
				bad = field + ".model"
				break
			}
		}
	case opBatchEmbed:
		i := 0
		jsonscan.Elements(obj.Get("requests"), func(req []byte) bool {
			if raw, _ := jsonscan.Field(req, "model"); !names(raw) {
				bad = fmt.Sprintf("requests[%d].model", i)
				return false
			}
			i++
			return true
		})
	}
	if bad != "" {
		return gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
			"%s must name the model in the path, %s%s.", bad, modelCollection, r.Model).WithParam(bad)
	}
	return nil
}

// countRequest is countTokens' member holding a whole generateContent
// request, model included, under its two names (see Inspect).
var countRequest = [...]string{"generateContentRequest", "generate_content_request"}

// Rewrite implements gateway.Provider: the body passes unchanged; a model
// served under another upstream name changes the path, and the model
// fields of the bodies checkBodyModels reads.
func (*Provider) Rewrite(r gateway.Route, body []byte, in gateway.Inspection, rw gateway.Rewrite) (gateway.Rewritten, *gateway.Failure) {
	out := gateway.Rewritten{Body: body}
	if rw.UpstreamModel == "" {
		return out, nil
	}
	// Replace the (escaped) model segment: /{version}/models/{model}:{verb}.
	start := strings.Index(r.UpstreamPath, "/"+modelCollection) + len(modelCollection) + 1
	end := start + strings.IndexByte(r.UpstreamPath[start:], ':')
	out.Path = r.UpstreamPath[:start] + url.PathEscape(rw.UpstreamModel) + r.UpstreamPath[end:]
	model := gateway.JSONString(modelCollection + rw.UpstreamModel)
	switch {
	case r.Operation == opEmbed && in.Body.Get("model") != nil:
		out.Body = in.Body.Apply(jsonedit.Edit{Key: "model", Value: model})
	case r.Operation == opBatchEmbed && in.Body.Get("requests") != nil:
		reqs := []byte{'['}
		jsonscan.Elements(in.Body.Get("requests"), func(req []byte) bool {
			if len(reqs) > 1 {
				reqs = append(reqs, ',')
			}
			if o, err := jsonedit.Parse(req); err == nil && o.Get("model") != nil {
				req = o.Apply(jsonedit.Edit{Key: "model", Value: model})
			}
			reqs = append(reqs, req...)
			return true
		})
		out.Body = in.Body.Apply(jsonedit.Edit{Key: "requests", Value: append(reqs, ']')})
	case r.Operation == opCountTokens:
		for _, field := range countRequest {
			if o, err := jsonedit.Parse(out.Body); err == nil && o.Get(field) != nil {
				if req, err := jsonedit.Parse(o.Get(field)); err == nil && req.Get("model") != nil {
					out.Body = o.Apply(jsonedit.Edit{Key: field, Value: req.Apply(jsonedit.Edit{Key: "model", Value: model})})
				}
			}
		}
	}
	return out, nil
}

// UpstreamHeaders implements gateway.Provider.
func (*Provider) UpstreamHeaders(dst, _ gateway.Headers) (gateway.Headers, *gateway.Failure) {
	return append(dst,
		gateway.Header{Name: "content-type", Value: "application/json"},
		gateway.Header{Name: "accept-encoding", Value: "identity"}), nil
}

// AuthHeaders implements gateway.Provider.
func (*Provider) AuthHeaders(key string) gateway.Headers {
	return gateway.Headers{{Name: "x-goog-api-key", Value: key}}
}

// Error implements gateway.Provider, in google.rpc.Status form.
func (*Provider) Error(f *gateway.Failure) (int, []byte) {
	status, msg, details := f.Status, f.Message, ""
	switch f.Code {
	case gateway.CodeBadToken, gateway.CodeExpiredToken, gateway.CodeRevokedToken:
		// What Google answers for a bad key; both SDKs parse it.
		status = http.StatusBadRequest
		details = `[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"tollgate"}]`
		msg = "API key not valid. " + f.Message
	case gateway.CodeModelNotFound:
		msg = fmt.Sprintf("models/%s is not found for this API version, or is not served by this gateway.", f.Model)
	case gateway.CodeContextTooLong:
		msg = fmt.Sprintf("The input token count (%d) exceeds the maximum number of tokens allowed (%d) by this gateway.", f.Tokens, f.Limit)
	case gateway.CodeRateLimited, gateway.CodeQuota, gateway.CodeUpstreamLimit:
		if f.RetryAfter > 0 {
			details = fmt.Sprintf(`[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"%ds"}]`, f.RetryAfter)
		}
	}
	return status, errorBody(status, rpcStatus(status), msg, details)
}

// rpcStatus is the google.rpc.Code name Google pairs with an HTTP status.
func rpcStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	default:
		return "INTERNAL"
	}
}

func errorBody(code int, status, msg, details string) []byte {
	b := make([]byte, 0, 96+len(msg)+len(details))
	b = fmt.Appendf(b, `{"error":{"code":%d,"message":`, code)
	b = append(b, gateway.JSONString(msg)...)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, '"')
	if details != "" {
		b = append(b, `,"details":`...)
		b = append(b, details...)
	}
	return append(b, "}}"...)
}

// StreamError implements gateway.Provider: an SSE data chunk holding an
// error object, which both SDKs raise. The event uses the CRLF framing
// Gemini itself uses.
func (*Provider) StreamError(f *gateway.Failure, _ gateway.Route) []byte {
	b := []byte("data: ")
	b = append(b, errorBody(f.Status, rpcStatus(f.Status), f.Message, "")...)
	return append(b, "\r\n\r\n"...)
}

// Local implements gateway.Provider.
func (*Provider) Local(r gateway.Route, models gateway.ModelLister) (int, []byte, *gateway.Failure) {
	type model struct {
		Name                       string   `json:"name"`
		BaseModelID                string   `json:"baseModelId"`
		Version                    string   `json:"version"`
		DisplayName                string   `json:"displayName"`
		InputTokenLimit            int64    `json:"inputTokenLimit"`
		SupportedGenerationMethods []string `json:"supportedGenerationMethods"`
	}
	conv := func(name, display, kind string, ctx int64) model {
		if display == "" {
			display = name
		}
		methods := []string{opGenerate, opCountTokens}
		if kind == "embedding" {
			methods = []string{opEmbed, opBatchEmbed, opCountTokens}
		}
		return model{Name: modelCollection + name, BaseModelID: name, Version: "001", DisplayName: display,
			InputTokenLimit: ctx, SupportedGenerationMethods: methods}
	}
	if r.Operation == opModelsGet {
		m, ok := models.Get(r.ModelID)
		if !ok {
			return 0, nil, gateway.Fail(http.StatusNotFound, gateway.CodeModelNotFound,
				"models/%s is not found for this gateway.", r.ModelID)
		}
		b, _ := json.Marshal(conv(m.Name, m.DisplayName, m.Kind, m.ContextTokens))
		return http.StatusOK, b, nil
	}
	all := models.List()
	// pageSize: default 50, at most 1,000 (larger asks get 1,000);
	// pageToken: where the previous page stopped.
	size, start := 50, 0
	if v := gateway.QueryValue(r.UpstreamQuery, "pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
				"Invalid value at 'page_size' (TYPE_INT32), %q.", v).WithParam("pageSize")
		}
		if n > 0 {
			size = min(n, 1000)
		}
	}
	if v := gateway.QueryValue(r.UpstreamQuery, "pageToken"); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, pageTokenPrefix))
		if !strings.HasPrefix(v, pageTokenPrefix) || err != nil || n < 0 || n > len(all) {
			return 0, nil, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
				"Invalid page token %q.", v).WithParam("pageToken")
		}
		start = n
	}
	end := min(start+size, len(all))
	list := struct {
		Models        []model `json:"models"`
		NextPageToken string  `json:"nextPageToken,omitempty"`
	}{Models: make([]model, 0, end-start)}
	for _, m := range all[start:end] {
		list.Models = append(list.Models, conv(m.Name, m.DisplayName, m.Kind, m.ContextTokens))
	}
	if end < len(all) {
		list.NextPageToken = pageTokenPrefix + strconv.Itoa(end)
	}
	b, _ := json.Marshal(list)
	return http.StatusOK, b, nil
}

// pageTokenPrefix marks the gateway's model-listing page tokens: an offset
// into the catalog's list, which is fixed for the life of the process.
const pageTokenPrefix = "tg-"

// RateLimitHeaders implements gateway.Provider. Gemini's API sends no
// rate-limit headers of its own; the gateway uses OpenAI's names, which
// Google's SDKs ignore and raw REST users can read.
func (*Provider) RateLimitHeaders(dst gateway.Headers, rl gateway.RateLimit, _ time.Time) gateway.Headers {
	return gateway.AppendXRateLimit(dst, rl)
}

// AccountError implements gateway.Provider: Google answers a bad or
// expired key with a 400 whose ErrorInfo says API_KEY_INVALID, and a
// project it will not serve where the gateway runs with a 400
// FAILED_PRECONDITION. An error element inside a stream (status 200)
// carries its HTTP code: 401, 403 and 429 are the account's, as their
// statuses are.
func (*Provider) AccountError(status int, body []byte) gateway.Code {
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Reason string `json:"reason"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	for _, d := range e.Error.Details {
		if d.Reason == "API_KEY_INVALID" {
			return gateway.CodeUpstreamKey
		}
	}
	switch {
	case e.Error.Status == "FAILED_PRECONDITION" &&
		(strings.Contains(e.Error.Message, "location is not supported") || strings.Contains(e.Error.Message, "not available in your country")):
		return gateway.CodeUpstreamDenied
	case status != gateway.StatusOK:
		return ""
	}
	return map[int]gateway.Code{
		http.StatusUnauthorized:    gateway.CodeUpstreamKey,
		http.StatusForbidden:       gateway.CodeUpstreamDenied,
		http.StatusTooManyRequests: gateway.CodeUpstreamLimit,
	}[e.Error.Code]
}
