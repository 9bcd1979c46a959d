// Package anthropic is the Anthropic Messages API as the gateway serves it:
// messages (plain and streamed), token counting, model listings from the
// catalog, usage from JSON and SSE, and Anthropic's own error shape.
package anthropic

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonedit"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
)

// DefaultVersions are the anthropic-version values accepted: 2023-06-01 is
// what curl examples and older SDKs send, 2026-10-21 what current SDKs send.
// The version changes validation and response shape, so it is forwarded as
// the client sent it, never pinned.
var DefaultVersions = []string{"2023-01-01", "2023-06-01", "2026-10-21"}

// Provider implements gateway.Provider for Anthropic.
type Provider struct {
	versions []string
}

// New returns the Anthropic provider accepting the given anthropic-version
// values (DefaultVersions when empty).
func New(versions ...string) *Provider {
	if len(versions) == 0 {
		versions = DefaultVersions
	}
	return &Provider{versions: versions}
}

// Name implements gateway.Provider.
func (*Provider) Name() string { return "anthropic" }

const (
	opMessages    = "messages"
	opCountTokens = "messages.count_tokens"
	opModelsList  = "models.list"
	opModelsGet   = "models.get"
)

// Match implements gateway.Provider. Older SDKs append ?beta=true; it is
// accepted and dropped, as betas are not passed through.
func (*Provider) Match(method, path, rawQuery string) (gateway.Route, *gateway.Failure) {
	r := gateway.Route{UpstreamPath: path, UpstreamQuery: gateway.QueryWithout(rawQuery, "key", "beta")}
	want := http.MethodPost
	switch {
	case path == "/v1/messages":
		r.Operation = opMessages
	case path == "/v1/messages/count_tokens":
		r.Operation, r.Unbilled = opCountTokens, true
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
		what := "this endpoint"
		switch {
		case strings.HasPrefix(path, "/v1/messages/batches"):
			what = "batch inference (Message Batches)"
		case strings.HasPrefix(path, "/v1/files"):
			what = "the Files API"
		}
		return r, gateway.Fail(http.StatusNotFound, gateway.CodeUnsupported,
			"%s %s: the gateway does not support %s.", method, path, what)
	}
	if method != want {
		return r, gateway.Fail(http.StatusMethodNotAllowed, gateway.CodeMethod,
			"Method %s is not allowed for %s; use %s.", method, path, want)
	}
	return r, nil
}

// Inspect implements gateway.Provider.
func (*Provider) Inspect(r gateway.Route, body []byte) (gateway.Inspection, *gateway.Failure) {
	in, f := gateway.InspectJSONModel(body, "model: Field required")
	if f != nil {
		return in, f
	}
	// Fast mode is billed at a premium the catalog does not price.
	if speed, _ := gateway.StringField(in.Body, "speed"); speed == "fast" {
		return in, gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			`speed "fast" (fast mode) is not supported by this gateway.`).WithParam("speed")
	}
	if f := checkOtherModels(in); f != nil {
		return in, f
	}
	// A cache_control anywhere (a block's, or the top-level automatic one)
	// may have part of the input read from the cache, which Anthropic's
	// rate limits do not count. Escaped spellings are not looked for: they
	// only make admission stricter.
	in.CacheMarked = bytes.Contains(body, []byte(`"cache_control"`))
	return in, checkCacheTTL(body)
}

// checkOtherModels refuses the features that make Anthropic run a model
// other than the request's (server-side fallbacks and the advisor tool):
// the gateway admits, rate-limits and prices a request by its one model.
func checkOtherModels(in gateway.Inspection) *gateway.Failure {
	if raw := in.Body.Get("fallbacks"); len(raw) > 0 && !jsonedit.IsNull(raw) && !jsonedit.IsEmptyArray(raw) {
		return gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			"fallbacks (server-side model fallback) is not supported by this gateway: it meters and bills each request under the one model it names.").WithParam("fallbacks")
	}
	var advisor bool
	jsonscan.Elements(in.Body.Get("tools"), func(tool []byte) bool {
		raw, _ := jsonscan.Field(tool, "type")
		typ, _ := jsonscan.String(raw)
		advisor = strings.HasPrefix(typ, "advisor_")
		return !advisor
	})
	if advisor {
		return gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			"The advisor tool is not supported by this gateway: it calls another model, which the gateway cannot meter under this request's model.").WithParam("tools")
	}
	return nil
}

// checkCacheTTL refuses a one-hour prompt cache anywhere in the request (top
// level, system, messages, tools, tool results) outside the client's own
// data (isClientData): the gateway serves only the default five-minute
// cache, which it prices as a 5m write. A cheap byte check skips the walk
// for the common request without any TTL: the key can only be spelled "ttl"
// or with \u escapes.
func checkCacheTTL(body []byte) *gateway.Failure {
	if !bytes.Contains(body, []byte(`"ttl"`)) && !bytes.Contains(body, []byte(`\u`)) {
		return nil
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil
	}
	if hasLongTTL(doc) {
		return gateway.Fail(http.StatusBadRequest, gateway.CodeUnsupported,
			`cache_control.ttl "1h" is not supported by this gateway; only the default 5-minute cache ("ttl": "5m" or no ttl) is available.`).WithParam("cache_control")
	}
	return nil
}

func hasLongTTL(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		if cc, ok := v["cache_control"].(map[string]any); ok {
			if ttl, _ := cc["ttl"].(string); ttl == "1h" {
				return true
			}
		}
		typ, _ := v["type"].(string)
		for k, e := range v {
			if isClientData(k, typ) {
				continue
			}
			if hasLongTTL(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasLongTTL(e) {
				return true
			}
		}
	}
	return false
}

// isClientData reports whether member key of an object of the given type
// holds the client's own JSON, which Anthropic hands to the model as it is
// and never reads a cache_control in: the input of a tool call (tool_use,
// server_tool_use, mcp_tool_use) and a tool's input_schema. A conversation
// whose tool once took a cache_control as an argument is no cache request.
func isClientData(key, typ string) bool {
	return key == "input_schema" || key == "input" && strings.HasSuffix(typ, "tool_use")
}

// Rewrite implements gateway.Provider: only a renamed model changes.
func (*Provider) Rewrite(r gateway.Route, body []byte, in gateway.Inspection, rw gateway.Rewrite) (gateway.Rewritten, *gateway.Failure) {
	if rw.UpstreamModel == "" {
		return gateway.Rewritten{Body: body}, nil
	}
	return gateway.Rewritten{Body: in.Body.Apply(jsonedit.Edit{Key: "model", Value: gateway.JSONString(rw.UpstreamModel)})}, nil
}

// UpstreamHeaders implements gateway.Provider. anthropic-version is the one
// client header the protocol needs; it must be one the gateway knows.
func (p *Provider) UpstreamHeaders(dst, client gateway.Headers) (gateway.Headers, *gateway.Failure) {
	v := strings.TrimSpace(client.Get("anthropic-version"))
	if v == "" {
		return nil, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest, "anthropic-version: header is required")
	}
	if !slices.Contains(p.versions, v) {
		return nil, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
			"anthropic-version: %q is not a supported version; this gateway accepts %s.", v, strings.Join(p.versions, ", "))
	}
	return append(dst,
		gateway.Header{Name: "content-type", Value: "application/json"},
		gateway.Header{Name: "accept-encoding", Value: "identity"},
		gateway.Header{Name: "anthropic-version", Value: v}), nil
}

// AuthHeaders implements gateway.Provider.
func (*Provider) AuthHeaders(key string) gateway.Headers {
	return gateway.Headers{{Name: "x-api-key", Value: key}}
}

// Error implements gateway.Provider.
func (*Provider) Error(f *gateway.Failure) (int, []byte) {
	status, typ, msg := f.Status, "invalid_request_error", f.Message
	switch f.Code {
	case gateway.CodeBadToken, gateway.CodeExpiredToken, gateway.CodeRevokedToken, gateway.CodeUpstreamKey:
		typ = "authentication_error"
	case gateway.CodeForbidden, gateway.CodeUpstreamDenied:
		typ = "permission_error"
	case gateway.CodeNotFound:
		typ = "not_found_error"
	case gateway.CodeModelNotFound:
		typ, msg = "not_found_error", "model: "+f.Model // the real API's wording
	case gateway.CodeUnsupported:
		if status == http.StatusNotFound {
			typ = "not_found_error"
		}
	case gateway.CodeTooLarge:
		typ = "request_too_large"
	case gateway.CodeContextTooLong:
		// The real API's wording, so code matching on it keeps working.
		msg = fmt.Sprintf("prompt is too long: %d tokens > %d maximum (gateway limit)", f.Tokens, f.Limit)
	case gateway.CodeRateLimited, gateway.CodeUpstreamLimit:
		typ = "rate_limit_error"
	case gateway.CodeUpstreamQuota:
		typ = "billing_error"
		if status == http.StatusTooManyRequests {
			typ = "rate_limit_error"
		}
	case gateway.CodeQuota:
		status, typ = http.StatusPaymentRequired, "billing_error"
	case gateway.CodeUpstream, gateway.CodeInternal:
		typ = "api_error"
	}
	return status, errorBody(typ, msg)
}

func errorBody(typ, msg string) []byte {
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"type":"error","error":{"type":`...)
	b = append(b, gateway.JSONString(typ)...)
	b = append(b, `,"message":`...)
	b = append(b, gateway.JSONString(msg)...)
	return append(b, `},"request_id":null}`...)
}

// StreamError implements gateway.Provider: an `error` event, which both
// SDKs raise as an API error mid-stream.
func (*Provider) StreamError(f *gateway.Failure, _ gateway.Route) []byte {
	b := []byte("event: error\ndata: ")
	b = append(b, errorBody("api_error", f.Message)...)
	return append(b, "\n\n"...)
}

// Local implements gateway.Provider.
func (*Provider) Local(r gateway.Route, models gateway.ModelLister) (int, []byte, *gateway.Failure) {
	type model struct {
		Type           string `json:"type"`
		ID             string `json:"id"`
		DisplayName    string `json:"display_name"`
		CreatedAt      string `json:"created_at"`
		MaxInputTokens int64  `json:"max_input_tokens,omitempty"`
	}
	conv := func(m catalog.Model) model {
		display := cmp.Or(m.DisplayName, m.Name)
		return model{Type: "model", ID: m.Name, DisplayName: display, CreatedAt: m.Created.UTC().Format(time.RFC3339),
			MaxInputTokens: m.ContextTokens}
	}
	if r.Operation == opModelsGet {
		m, ok := models.Get(r.ModelID)
		if !ok {
			return 0, nil, gateway.Fail(http.StatusNotFound, gateway.CodeModelNotFound, "model: %s", r.ModelID)
		}
		b, _ := json.Marshal(conv(m))
		return http.StatusOK, b, nil
	}
	all := models.List()
	// Newest first, as Anthropic lists them.
	slices.SortStableFunc(all, func(a, b catalog.Model) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(a.Name, b.Name))
	})
	page, more, f := modelPage(all, r.UpstreamQuery)
	if f != nil {
		return 0, nil, f
	}
	list := struct {
		Data    []model `json:"data"`
		HasMore bool    `json:"has_more"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
	}{Data: make([]model, 0, len(page)), HasMore: more}
	for _, m := range page {
		list.Data = append(list.Data, conv(m))
	}
	if n := len(list.Data); n > 0 {
		list.FirstID, list.LastID = &list.Data[0].ID, &list.Data[n-1].ID
	}
	b, _ := json.Marshal(list)
	return http.StatusOK, b, nil
}

// modelPage cuts one page out of the listing by the query's limit (1 to
// 1,000, default 20) and its after_id or before_id cursor, and reports
// whether more models lie beyond it in the direction of travel.
func modelPage(all []catalog.Model, rawQuery string) (page []catalog.Model, more bool, f *gateway.Failure) {
	limit := 20
	if v := gateway.QueryValue(rawQuery, "limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, false, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
				"limit: Input should be an integer from 1 to 1000, got %q.", v).WithParam("limit")
		}
		limit = n
	}
	index := func(param string) (int, *gateway.Failure) {
		id := gateway.QueryValue(rawQuery, param)
		if id == "" {
			return -1, nil
		}
		i := slices.IndexFunc(all, func(m catalog.Model) bool { return m.Name == id })
		if i < 0 {
			return 0, gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest,
				"%s: %q is not a model this gateway lists.", param, id).WithParam(param)
		}
		return i, nil
	}
	after, f := index("after_id")
	if f != nil {
		return nil, false, f
	}
	before, f := index("before_id")
	if f != nil {
		return nil, false, f
	}
	if before >= 0 && after < 0 {
		start := max(before-limit, 0)
		return all[start:before], start > 0, nil
	}
	start, end := after+1, len(all)
	if before >= 0 {
		end = max(before, start)
	}
	stop := min(start+limit, end)
	return all[start:stop], stop < end, nil
}

// RateLimitHeaders implements gateway.Provider: Anthropic's
// anthropic-ratelimit-tokens-* headers, the reset as an RFC 3339 time.
func (*Provider) RateLimitHeaders(dst gateway.Headers, rl gateway.RateLimit, now time.Time) gateway.Headers {
	return append(dst,
		gateway.Header{Name: "anthropic-ratelimit-tokens-limit", Value: strconv.FormatInt(rl.Limit, 10)},
		gateway.Header{Name: "anthropic-ratelimit-tokens-remaining", Value: strconv.FormatInt(max(rl.Remaining, 0), 10)},
		gateway.Header{Name: "anthropic-ratelimit-tokens-reset", Value: now.Add(rl.Reset).UTC().Format(time.RFC3339)},
	)
}

// AccountError implements gateway.Provider: Anthropic answers an account
// out of credit with a billing_error (402), or with a 400 that says so. An
// error event inside a stream (status 200) has no status of its own, so its
// type tells: a rate limit there names the organization, as a 429 does.
func (*Provider) AccountError(status int, body []byte) gateway.Code {
	var e struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	switch {
	case e.Error.Type == "billing_error" || strings.HasPrefix(e.Error.Message, "Your credit balance is too low"):
		return gateway.CodeUpstreamQuota
	case status != gateway.StatusOK:
		return ""
	}
	return map[string]gateway.Code{
		"rate_limit_error":     gateway.CodeUpstreamLimit,
		"authentication_error": gateway.CodeUpstreamKey,
		"permission_error":     gateway.CodeUpstreamDenied,
	}[e.Error.Type]
}
