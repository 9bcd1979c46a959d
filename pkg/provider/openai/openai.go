// Package openai is the OpenAI API as the gateway serves it: Chat
// Completions, Responses and Embeddings, model listings from the catalog,
// usage from JSON and SSE, and OpenAI's own error shape.
package openai

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonedit"
)

// Provider implements gateway.Provider for OpenAI.
type Provider struct{}

// New returns the OpenAI provider.
func New() *Provider { return &Provider{} }

// Name implements gateway.Provider.
func (*Provider) Name() string { return "openai" }

const (
	opChat       = "chat.completions"
	opResponses  = "responses"
	opEmbeddings = "embeddings"
	opModelsList = "models.list"
	opModelsGet  = "models.get"
)

// Match implements gateway.Provider. Both base URL forms users set work:
// ".../openai/v1" (the SDK default shape) and ".../openai" (paths then
// arrive without /v1, and /v1 is added upstream).
func (*Provider) Match(method, path, rawQuery string) (gateway.Route, *gateway.Failure) {
	if path != "/v1" && !strings.HasPrefix(path, "/v1/") {
		path = "/v1" + path
	}
	r := gateway.Route{UpstreamPath: path, UpstreamQuery: gateway.QueryWithout(rawQuery, "key")}
	want := http.MethodPost
	switch {
	case path == "/v1/chat/completions":
		r.Operation = opChat
	case path == "/v1/responses":
		r.Operation = opResponses
	case path == "/v1/embeddings":
		r.Operation = opEmbeddings
	case path == "/v1/models":
		r.Operation, r.Local, want = opModelsList, true, http.MethodGet
	case strings.HasPrefix(path, "/v1/models/") && len(path) > len("/v1/models/"):
		r.Operation, r.Local, want = opModelsGet, true, http.MethodGet
		id, ok := gateway.PathSegment(path[len("/v1/models/"):])
		if !ok {
			return r, gateway.Fail(http.StatusNotFound, gateway.CodeModelNotFound, "The model id in the path is not valid.")
		}
		r.ModelID = id
	default:
		return r, unsupported(method, path)
	}
	if method != want {
		return r, gateway.Fail(http.StatusMethodNotAllowed, gateway.CodeMethod,
			"Method %s is not allowed for %s; use %s.", method, path, want)
	}
	return r, nil
}

func unsupported(method, path string) *gateway.Failure {
	what := "this endpoint"
	switch {
	case strings.HasPrefix(path, "/v1/batches"):
		what = "batch inference"
	case strings.HasPrefix(path, "/v1/files"), strings.HasPrefix(path, "/v1/uploads"):
		what = "file storage"
	case strings.HasPrefix(path, "/v1/fine_tuning"):
		what = "fine-tuning"
	case path == "/v1/responses/input_tokens", path == "/v1/responses/compact":
		what = "this endpoint"
	case strings.HasPrefix(path, "/v1/responses/"), strings.HasPrefix(path, "/v1/chat/completions/"):
		what = "stored responses (requests are sent with store=false)"
	case strings.HasPrefix(path, "/v1/realtime"):
		what = "the Realtime API"
	}
	return gateway.Fail(http.StatusNotFound, gateway.CodeUnsupported,
		"Invalid URL (%s %s): the gateway does not support %s.", method, path, what)
}

// Inspect implements gateway.Provider.
func (*Provider) Inspect(r gateway.Route, body []byte) (gateway.Inspection, *gateway.Failure) {
	in, f := gateway.InspectJSONModel(body, "You must provide a model parameter.")
	if f != nil || r.Operation == opEmbeddings {
		return in, f
	}
	obj := in.Body
	// "fast" is priority under another name; "ultrafast" is a tier above
	// it, at a higher price still.
	switch tier, _ := gateway.StringField(obj, "service_tier"); tier {
	case "priority", "fast", "ultrafast":
		return in, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			"service_tier %q (priority processing) is not supported by this gateway.", tier).WithParam("service_tier")
	}
	if r.Operation == opResponses {
		// These pull context from objects stored upstream, which the shared
		// provider account would expose across tenants and the gateway cannot
		// see to meter or limit.
		for _, field := range [...]string{"previous_response_id", "conversation"} {
			if !jsonedit.IsNull(obj.Get(field)) {
				return in, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
					"%s is not supported by this gateway: responses are not stored. Send the full conversation as input.", field).WithParam(field)
			}
		}
		if string(obj.Get("background")) == "true" {
			return in, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
				"background responses are not supported by this gateway.").WithParam("background")
		}
	}
	return in, nil
}

// Rewrite implements gateway.Provider: store is forced off (and chat's
// metadata, which only labels a stored completion, dropped), the prompt
// cache key is the account's, and a chat stream always asks for usage.
func (*Provider) Rewrite(r gateway.Route, body []byte, in gateway.Inspection, rw gateway.Rewrite) (gateway.Rewritten, *gateway.Failure) {
	obj := in.Body
	edits := make([]jsonedit.Edit, 0, 4)
	if rw.UpstreamModel != "" {
		edits = append(edits, jsonedit.Edit{Key: "model", Value: gateway.JSONString(rw.UpstreamModel)})
	}
	var out gateway.Rewritten
	if r.Operation != opEmbeddings {
		edits = append(edits,
			jsonedit.Edit{Key: "store", Value: []byte("false")},
			jsonedit.Edit{Key: "prompt_cache_key", Value: rw.CacheKey})
	}
	if r.Operation == opChat {
		// Chat Completions takes metadata only to label a stored completion
		// and refuses it with store off ("The 'metadata' parameter is only
		// allowed when 'store' is enabled"); with nothing stored it labels
		// nothing, so it goes. Responses takes it either way.
		edits = append(edits, jsonedit.Edit{Key: "metadata"})
	}
	if r.Operation == opResponses && string(obj.Get("store")) != "false" && returnsReasoning(cmp.Or(rw.UpstreamModel, in.Model)) {
		include, f := withEncryptedReasoning(obj.Get("include"))
		if f != nil {
			return out, f
		}
		if include != nil {
			edits = append(edits, jsonedit.Edit{Key: "include", Value: include})
		}
	}
	if r.Operation == opChat && in.Stream {
		opts := obj.Get("stream_options")
		if !jsonedit.IsNull(opts) {
			so, err := jsonedit.Parse(opts)
			if err != nil {
				return out, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
					"stream_options must be an object.").WithParam("stream_options")
			}
			if string(so.Get("include_usage")) != "true" {
				out.HideUsage = true
				edits = append(edits, jsonedit.Edit{Key: "stream_options", Value: so.Apply(jsonedit.Edit{Key: "include_usage", Value: []byte("true")})})
			}
		} else {
			out.HideUsage = true
			edits = append(edits, jsonedit.Edit{Key: "stream_options", Value: []byte(`{"include_usage":true}`)})
		}
	}
	if len(edits) == 0 {
		out.Body = body
		return out, nil
	}
	out.Body = obj.Apply(edits...)
	return out, nil
}

// encryptedReasoning is the include entry that returns a reasoning item's
// content, encrypted, in the response.
const encryptedReasoning = "reasoning.encrypted_content"

// returnsReasoning reports whether an OpenAI model emits reasoning items:
// the o-series, the gpt-5 family and codex. Only these accept the
// encryptedReasoning include; the others refuse it with a 400.
func returnsReasoning(model string) bool {
	oSeries := len(model) > 1 && model[0] == 'o' && '1' <= model[1] && model[1] <= '9'
	return (oSeries || strings.HasPrefix(model, "gpt-5") || strings.HasPrefix(model, "codex-")) &&
		!strings.Contains(model, "-chat") // gpt-5-chat-latest has none
}

// withEncryptedReasoning returns the include array with encryptedReasoning
// added, or nil when it is there already. A client that left store on
// expects to send a response's output back as the next input; with store
// forced off, the reasoning items in it are found only through their
// encrypted content (otherwise: "Item with id 'rs_…' not found").
func withEncryptedReasoning(include []byte) ([]byte, *gateway.Failure) {
	if jsonedit.IsNull(include) {
		return []byte(`["` + encryptedReasoning + `"]`), nil
	}
	var entries []string
	if err := json.Unmarshal(include, &entries); err != nil {
		return nil, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
			"include must be an array of strings.").WithParam("include")
	}
	if slices.Contains(entries, encryptedReasoning) {
		return nil, nil
	}
	out, _ := json.Marshal(append(entries, encryptedReasoning))
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
	return gateway.Headers{{Name: "authorization", Value: "Bearer " + key}}
}

// Error implements gateway.Provider.
func (*Provider) Error(f *gateway.Failure) (int, []byte) {
	return f.Status, errorBody(f)
}

// errorBody is OpenAI's error document for f.
func errorBody(f *gateway.Failure) []byte {
	typ, code, param, msg := "invalid_request_error", string(f.Code), f.Param, f.Message
	switch f.Code {
	case gateway.CodeBadToken, gateway.CodeExpiredToken, gateway.CodeRevokedToken:
		code = "invalid_api_key"
	case gateway.CodeRateLimited:
		typ, code = "tokens", "rate_limit_exceeded"
		if f.RequestLimit {
			typ = "requests"
		}
	case gateway.CodeQuota:
		typ = "insufficient_quota"
	case gateway.CodeUpstreamLimit:
		// The codes client code matches on, as OpenAI sends them.
		typ, code = "rate_limit_exceeded", "rate_limit_exceeded"
	case gateway.CodeUpstreamQuota:
		typ, code = "insufficient_quota", "insufficient_quota"
	case gateway.CodeModelNotFound:
		if f.Model == "" {
			break // no model could be read (an id in the path that is none): f's own message
		}
		msg = fmt.Sprintf("The model `%s` does not exist or you do not have access to it through this gateway.", f.Model)
	case gateway.CodeInvalidRequest:
		code = ""
	case gateway.CodeContextTooLong:
		if f.Operation != opChat {
			param = "input" // Responses and Embeddings take "input", not "messages"
		}
	case gateway.CodeUpstream, gateway.CodeInternal:
		typ, code = "server_error", ""
	case gateway.CodeForbidden, gateway.CodeUpstreamDenied:
		typ = "permission_error"
	}
	b := make([]byte, 0, 128+len(msg))
	b = append(b, `{"error":{"message":`...)
	b = append(b, gateway.JSONString(msg)...)
	b = append(b, `,"type":`...)
	b = append(b, gateway.JSONString(typ)...)
	b = append(b, `,"param":`...)
	b = appendNullable(b, param)
	b = append(b, `,"code":`...)
	b = appendNullable(b, code)
	return append(b, "}}"...)
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return append(b, gateway.JSONString(s)...)
}

// StreamError implements gateway.Provider: a data payload with a top-level
// error key makes every SDK raise (chat). Responses streams get the
// documented error event, and the same error object nested under "error":
// the JS, Go and Python SDKs raise only for that key and otherwise hand the
// event over as data, so a cut stream would look complete.
func (*Provider) StreamError(f *gateway.Failure, r gateway.Route) []byte {
	body := errorBody(f)
	if r.Operation == opResponses {
		b := fmt.Appendf(nil, "event: error\ndata: {\"type\":\"error\",\"code\":%s,\"message\":%s,\"param\":null,",
			gateway.JSONString(string(f.Code)), gateway.JSONString(f.Message))
		b = append(b, body[1:]...) // "error":{…}}
		return append(b, "\n\n"...)
	}
	return fmt.Appendf(nil, "data: %s\n\n", body)
}

// Local implements gateway.Provider: model listings come from the catalog.
func (*Provider) Local(r gateway.Route, models gateway.ModelLister) (int, []byte, *gateway.Failure) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	if r.Operation == opModelsGet {
		m, ok := models.Get(r.ModelID)
		if !ok {
			return 0, nil, gateway.Fail(http.StatusNotFound, gateway.CodeModelNotFound,
				"The model %q does not exist or is not served by this gateway.", r.ModelID).WithParam("model")
		}
		b, _ := json.Marshal(model{ID: m.Name, Object: "model", Created: m.Created.Unix(), OwnedBy: "openai"})
		return http.StatusOK, b, nil
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range models.List() {
		list.Data = append(list.Data, model{ID: m.Name, Object: "model", Created: m.Created.Unix(), OwnedBy: "openai"})
	}
	b, _ := json.Marshal(list)
	return http.StatusOK, b, nil
}

// RateLimitHeaders implements gateway.Provider: OpenAI's x-ratelimit-*-tokens.
func (*Provider) RateLimitHeaders(dst gateway.Headers, rl gateway.RateLimit, _ time.Time) gateway.Headers {
	return gateway.AppendXRateLimit(dst, rl)
}

// accountErrorCodes are the error codes OpenAI answers when the operator's
// account, not the request, cannot be served: billing.
var accountErrorCodes = [...]string{"billing_hard_limit_reached", "billing_not_active", "insufficient_quota"}

// streamAccountCodes are the further codes of the operator's account that
// an error event in a stream carries where a response would have had its
// status: a Responses stream fails with response.failed and
// rate_limit_exceeded ("Rate limit reached for … in organization org-… on
// tokens per min (TPM): Limit …, Used …"), as openai/codex's tests record.
var streamAccountCodes = map[string]gateway.Code{
	"rate_limit_exceeded":                  gateway.CodeUpstreamLimit,
	"invalid_api_key":                      gateway.CodeUpstreamKey,
	"account_deactivated":                  gateway.CodeUpstreamKey,
	"unsupported_country_region_territory": gateway.CodeUpstreamDenied,
}

// unverifiedOrganization begins the message of OpenAI's 400 for a stream
// ("… must be verified to stream this model", param "stream") and 404 for
// a model ("… must be verified to use the model `o3`") that the operator's
// organization may not use until it is verified, which no tenant can do.
const unverifiedOrganization = "Your organization must be verified"

// AccountError implements gateway.Provider. An error event in a stream
// holds the error object at the top level (Responses' error event), under
// "error" (chat) or under "response" (response.failed).
func (*Provider) AccountError(status int, body []byte) gateway.Code {
	type errObj struct {
		Code    any    `json:"code"`
		Message string `json:"message"`
	}
	var e struct {
		errObj
		Error    errObj `json:"error"`
		Response struct {
			Error errObj `json:"error"`
		} `json:"response"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	if status != gateway.StatusOK && strings.HasPrefix(e.Error.Message, unverifiedOrganization) {
		return gateway.CodeUpstreamDenied
	}
	codes := []any{e.Error.Code}
	if status == gateway.StatusOK {
		codes = append(codes, e.Code, e.Response.Error.Code)
	}
	for _, c := range codes {
		code, _ := c.(string)
		switch {
		case slices.Contains(accountErrorCodes[:], code):
			return gateway.CodeUpstreamQuota
		case status == gateway.StatusOK && streamAccountCodes[code] != "":
			return streamAccountCodes[code]
		}
	}
	return ""
}
