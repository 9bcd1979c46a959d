package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/sse"
)

// UserAgent identifies the gateway to providers.
const UserAgent = "tollgate/1"

// Action tells the adapter what to do next.
type Action int

const (
	// NeedBody: send the whole request body to RequestBody. Outcome.Upstream
	// holds the upstream request as far as the headers decide it (no body;
	// the path before any rewrite the body may cause).
	NeedBody Action = iota + 1
	// Forward: send Outcome.Upstream to the provider.
	Forward
	// Respond: answer the client with Outcome.Response; nothing goes upstream.
	Respond
)

// Outcome is the result of a request-side step.
type Outcome struct {
	Action   Action
	Upstream UpstreamRequest
	Response Response
}

// UpstreamRequest is the request to send to the provider.
type UpstreamRequest struct {
	Provider string
	Method   string
	// Path is the upstream path with its query, e.g.
	// "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse".
	Path   string
	Header Headers
	Body   []byte
}

// Response is an answer the gateway gives itself.
type Response struct {
	Status int
	Header Headers
	Body   []byte
}

// End says why an exchange ended.
type End int

const (
	// Completed: the response body ended normally.
	Completed End = iota + 1
	// ClientGone: the client went away before the response ended.
	ClientGone
	// UpstreamFailed: the upstream connection failed or reset.
	UpstreamFailed
)

type framing int

const (
	framingDoc framing = iota
	framingSSE
	framingArray
)

// Exchange is one request's state. Its methods are called in order, from one
// goroutine at a time, by one adapter.
type Exchange struct {
	g     *Gateway
	ctx   context.Context
	id    string
	start time.Time

	prov      Provider
	route     Route
	method    string
	claims    auth.Claims
	upHdr     Headers
	model     string
	stream    bool
	inputEst  int64
	forwarded bool
	failure   *Failure
	grant     Grant
	firstByte time.Time

	status   int
	framing  framing
	meter    Meter
	hide     bool
	dec      sse.Decoder
	arr      jsonscan.ArraySplitter
	doc      []byte
	docOver  bool
	hold     []byte
	holdBase int64
	// passing: the unfinished event outgrew the hold and passes as it
	// comes (filterEvents).
	passing   bool
	out       []byte
	completed bool
	settled   bool
	// replaced: the upstream status is about the operator's provider
	// account, not the request; the client gets this instead (Replacement).
	replaced      *Failure
	replacedRetry Headers // upstream retry headers Failure cannot carry
	// peek: an upstream error document is held whole (errDoc) before it
	// is forwarded, since it may be about the operator's account.
	peek   bool
	errDoc []byte
	// fed counts the stream's bytes so far; the bytes before sent have
	// gone to the client; lastEnd is where the last complete event ended.
	// errSeen: the stream's first error was judged (accountError), and
	// rep replaces it at [repStart, repEnd).
	fed, sent, lastEnd int64
	errSeen            bool
	failer             StreamFailer
	rep                []byte
	repStart, repEnd   int64
	chunk              []byte // the streamed array's chunk being split
	wholeEvents        bool   // WholeEvents
}

// ID returns the request id.
func (x *Exchange) ID() string { return x.id }

// Provider returns the provider name once known.
func (x *Exchange) Provider() string {
	if x.prov == nil {
		return ""
	}
	return x.prov.Name()
}

// RequestHeaders handles the request line and headers. target is the path
// with its query as the client sent it, including the provider prefix.
func (x *Exchange) RequestHeaders(method, target string, h Headers) Outcome {
	x.method = method
	prefix, path, rawQuery := splitPrefix(target)
	p, ok := x.g.providers[prefix]
	if !ok {
		return x.reject(Fail(StatusNotFound, CodeNotFound,
			"Tollgate serves providers under /openai, /anthropic and /gemini; %q is not one of them.", "/"+prefix))
	}
	x.prov = p
	route, f := p.Match(method, path, rawQuery)
	if f != nil {
		return x.reject(f)
	}
	x.route = route
	model := route.Model
	if route.ModelID != "" {
		model = route.ModelID
	}
	x.model = recordedModel(model)
	if f := x.authenticate(h, rawQuery); f != nil {
		return x.reject(f)
	}
	if pol := x.g.cfg.Policy; pol != nil {
		if f := pol.Authorize(x.ctx, x.claims); f != nil {
			return x.reject(f)
		}
	}
	if route.Local {
		status, body, f := p.Local(route, x.g.listers[p.Name()])
		if f != nil {
			return x.reject(f)
		}
		x.status = status
		x.completed = true
		return Outcome{Action: Respond, Response: Response{Status: status, Header: x.jsonHeaders(), Body: body}}
	}
	allow := x.g.cfg.Upstreams[p.Name()].AllowHeaders
	auth := x.g.auth[p.Name()]
	hdr, f := p.UpstreamHeaders(make(Headers, 0, 5+len(auth)+len(allow)), h)
	if f != nil {
		return x.reject(f)
	}
	hdr = append(hdr, auth...)
	hdr = AppendAllowed(hdr, h, allow)
	// Upstream sees the gateway, not the client's SDK, as the caller.
	x.upHdr = append(hdr, Header{Name: "user-agent", Value: UserAgent})
	// What the headers decide of the upstream request comes along, for
	// header-only adapters (ext_authz) that never see the body.
	return Outcome{Action: NeedBody, Upstream: UpstreamRequest{
		Provider: p.Name(), Method: method, Path: x.upstreamPath(""), Header: x.upHdr,
	}}
}

// RequestBody handles the whole request body.
func (x *Exchange) RequestBody(body []byte) Outcome {
	if x.prov == nil || x.failure != nil || x.upHdr == nil {
		return x.reject(Fail(StatusInternalError, CodeInternal, "request body before request headers"))
	}
	if int64(len(body)) > x.g.cfg.MaxRequestBody {
		return x.reject(x.TooLarge())
	}
	// A refused body still names its model when it could be read: the
	// rejection's record is then counted under that model.
	in, f := x.prov.Inspect(x.route, body)
	model := in.Model
	if x.route.Model != "" {
		model = x.route.Model
	}
	x.model = recordedModel(model)
	x.stream = in.Stream || x.route.Stream
	if f != nil {
		return x.reject(f)
	}
	m, ok := x.g.cfg.Catalog.Lookup(catalog.Provider(x.prov.Name()), x.model)
	if !ok {
		return x.reject(Fail(StatusNotFound, CodeModelNotFound,
			"The model %q does not exist or is not served by this gateway.", x.model).WithParam("model"))
	}
	if f := x.checkContext(m, body); f != nil {
		return x.reject(f)
	}
	rw := Rewrite{CacheKey: x.g.cacheKey(x.claims.Account)}
	if m.Upstream != "" && m.Upstream != x.model {
		rw.UpstreamModel = m.Upstream
	}
	out, f := x.prov.Rewrite(x.route, body, in, rw)
	if f != nil {
		return x.reject(f)
	}
	x.inputEst = x.estimate(body, in)
	if pol := x.g.cfg.Policy; pol != nil && !x.route.Unbilled {
		g, f := pol.Admit(x.ctx, Admission{Claims: x.claims, Provider: x.prov.Name(), Model: m.Name, Input: x.inputEst, CacheMarked: in.CacheMarked})
		if f != nil {
			return x.reject(f)
		}
		x.grant = g
	}
	x.hide = out.HideUsage
	x.meter = x.prov.NewMeter(x.route, out)
	x.failer, _ = x.meter.(StreamFailer)
	x.forwarded = true
	return Outcome{Action: Forward, Upstream: UpstreamRequest{
		Provider: x.prov.Name(), Method: x.method, Path: x.upstreamPath(out.Path), Header: x.upHdr, Body: out.Body,
	}}
}

// maxModelName bounds the model name an exchange keeps (and a record, see
// recordName): the name comes from the client, and a refused one is
// recorded too.
const maxModelName = 256

// recordedModel is the client's model name as an exchange keeps it: cut to
// maxModelName bytes, on a rune boundary.
func recordedModel(name string) string {
	if len(name) <= maxModelName {
		return name
	}
	cut := maxModelName
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}

// OtherModel is how a usage record names a model the catalog does not
// serve when the client's name for it does not read as a model id.
const OtherModel = "_OTHER"

// recordName is the model name a usage record (and so the ledger, its
// roll-ups and the request log) keeps: name when it reads as a model id
// (see modelID) or when the catalog serves it; otherwise OtherModel. The
// name is the client's, and a refused one is recorded too: free text there
// may be a prompt pasted into the field, and control characters would reach
// the operator's terminal through `tollgate usage`.
func (x *Exchange) recordName(name string) string {
	if modelID(name) {
		return name
	}
	if x.prov != nil && x.g.cfg.Catalog != nil {
		if _, ok := x.g.cfg.Catalog.Lookup(catalog.Provider(x.prov.Name()), name); ok {
			return name // an overlay may serve any name
		}
	}
	return OtherModel
}

// modelID reports whether name is empty or made of what every provider's
// model ids are made of: ASCII letters, digits and . _ - : / @
// ("ft:gpt-4o-mini:org::id", "claude-sonnet-4-5@20250929",
// "models/gemini-2.5-flash"). No space, no control character, no
// non-ASCII.
func modelID(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':' || c == '/' || c == '@') {
			return false
		}
	}
	return true
}

// upstreamPath is the upstream path with the credential-free query; path
// replaces the route's when not empty.
func (x *Exchange) upstreamPath(path string) string {
	if path == "" {
		path = x.route.UpstreamPath
	}
	if x.route.UpstreamQuery != "" {
		path += "?" + x.route.UpstreamQuery
	}
	return path
}

// TooLarge is the failure for a request body over the cap; adapters that
// stop reading early use it too.
func (x *Exchange) TooLarge() *Failure {
	return Fail(StatusTooLarge, CodeTooLarge,
		"Request body is larger than this gateway accepts (%d bytes).", x.g.cfg.MaxRequestBody)
}

// MaxRequestBody is the configured request body cap.
func (x *Exchange) MaxRequestBody() int64 { return x.g.cfg.MaxRequestBody }

// Reject answers the client with f in the provider's shape. Adapters use it
// for failures they detect themselves (body too large while reading).
func (x *Exchange) Reject(f *Failure) Response { return x.reject(f).Response }

// Unsent tells the exchange that the request it forwarded never left the
// adapter: Envoy gave up on the reply that would have released it (its
// per-message timeout), so no provider received it and the record carries
// no estimate of what one would bill.
func (x *Exchange) Unsent() { x.forwarded = false }

// UpstreamUnavailable answers the client when the provider could not be
// reached before any response header arrived.
func (x *Exchange) UpstreamUnavailable() Response {
	x.status = StatusBadGateway
	f := Fail(StatusBadGateway, CodeUpstream, "The gateway could not reach the %s API.", x.Provider())
	return x.errorResponse(f)
}

// StreamAborted returns an in-stream error event to send when the upstream
// fails after the response started, so SDKs raise an error instead of
// treating a cut stream as complete.
func (x *Exchange) StreamAborted() []byte {
	// A truncated JSON array already fails the client's parser; only an
	// SSE stream needs an error event to not look complete.
	if x.prov == nil || x.framing != framingSSE {
		return nil
	}
	tail := x.prov.StreamError(Fail(StatusBadGateway, CodeUpstream, "The upstream stream ended unexpectedly."), x.route)
	if x.meter == nil || x.hide && !x.passing {
		return tail // only whole events were forwarded
	}
	// The cut may fall inside an event: end its line and dispatch it, so
	// the error event is read as one of its own (appended to an unfinished
	// "event: content_block_de" line it would name an event SDKs skip).
	// Under WholeEvents that event's bytes were held: they go out first,
	// as they came.
	held := x.hold
	x.hold = nil
	return slices.Concat(held, x.dec.Finish(), tail)
}

func (x *Exchange) authenticate(h Headers, rawQuery string) *Failure {
	token := credential(h, rawQuery)
	if token == "" {
		return Fail(StatusUnauthorized, CodeBadToken, "No gateway key was provided. Pass the gateway token as the API key.")
	}
	c, err := x.g.cfg.Verifier.Verify(token, x.g.now())
	// A well-signed but expired or revoked token still names its account,
	// so its rejection is recorded against it.
	x.claims = c
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrExpired):
		return Fail(StatusUnauthorized, CodeExpiredToken, "The gateway key has expired.")
	case errors.Is(err, auth.ErrRevoked):
		return Fail(StatusUnauthorized, CodeRevokedToken, "The gateway key has been revoked.")
	default:
		return Fail(StatusUnauthorized, CodeBadToken, "Incorrect gateway key provided.")
	}
	return nil
}

// credential finds the gateway token wherever an SDK or a raw REST user
// puts it: Authorization Bearer (OpenAI and current Anthropic SDKs),
// x-api-key (Anthropic REST), x-goog-api-key (Gemini SDKs), ?key= (Gemini
// REST). A client can send more than one, e.g. an Anthropic SDK given both
// the gateway token and a token of the user's own, so a value that looks
// like a gateway token wins; failing that, the first one found is checked
// (and refused).
func credential(h Headers, rawQuery string) string {
	var first string
	for _, v := range [...]string{bearer(h.Get("authorization")), h.Get("x-api-key"), h.Get("x-goog-api-key"), QueryValue(rawQuery, "key")} {
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, auth.Prefix+".") {
			return v
		}
		if first == "" {
			first = v
		}
	}
	return first
}

// bearer is the credential of an Authorization value in the Bearer scheme.
func bearer(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return v[7:]
	}
	return ""
}

func (x *Exchange) checkContext(m catalog.Model, body []byte) *Failure {
	// Token counting runs no model, and it is how a client learns that its
	// input no longer fits: the providers count any input, and so must it.
	if x.route.Unbilled {
		return nil
	}
	limit := m.ContextTokens // the catalog always sets one
	// A BPE token is at least one byte of text, so a smaller body cannot
	// exceed the limit and needs no counting.
	if int64(len(body)) <= limit || x.g.cfg.Counter == nil {
		return nil
	}
	n, err := x.g.cfg.Counter.InputTokens(body, limit)
	if err != nil {
		return Fail(StatusBadRequest, CodeInvalidRequest, "The request body could not be read as JSON.")
	}
	if n <= limit {
		return nil
	}
	return &Failure{
		Status: StatusBadRequest, Code: CodeContextTooLong, Param: "messages", Tokens: n, Limit: limit,
		Message: fmt.Sprintf("The input is %d tokens or more, over this gateway's limit of %d input tokens per request.", n, limit),
	}
}

func (x *Exchange) estimate(body []byte, in Inspection) int64 {
	if x.route.Unbilled {
		return 0
	}
	if x.g.cfg.Counter == nil {
		return int64(len(body)+3) / 4
	}
	if it, ok := x.prov.(InputTexter); ok {
		if texts, ok := it.InputTexts(x.route, in); ok {
			var n int64
			for _, t := range texts {
				n += x.g.cfg.Counter.CountText(t)
			}
			return n
		}
	}
	return x.g.cfg.Counter.Estimate(body)
}

func (x *Exchange) reject(f *Failure) Outcome {
	x.failure = f
	if f.Operation == "" {
		f.Operation = x.route.Operation
	}
	if f.Model == "" {
		f.Model = x.model
	}
	return Outcome{Action: Respond, Response: x.errorResponse(f)}
}

func (x *Exchange) errorResponse(f *Failure) Response {
	status, body := f.Status, []byte(nil)
	if x.prov != nil {
		status, body = x.prov.Error(f)
	} else {
		body = genericError(f)
	}
	x.status = status
	h := x.jsonHeaders()
	if f.RetryAfter > 0 {
		h.Add("retry-after", strconv.Itoa(f.RetryAfter))
	}
	if f.NoRetry {
		h.Add("x-should-retry", "false")
	}
	rl := f.Limits
	if rl.Limit == 0 && x.grant != nil {
		// An admitted request failing (the provider unreachable): its
		// budget as for any response.
		rl = x.grant.Limits()
	}
	if rl.Limit > 0 && x.prov != nil {
		h = x.prov.RateLimitHeaders(h, rl, x.g.now())
	}
	return Response{Status: status, Header: h, Body: body}
}

func (x *Exchange) jsonHeaders() Headers {
	return Headers{
		{Name: "content-type", Value: "application/json"},
		{Name: "x-tollgate-request-id", Value: x.id},
	}
}

func genericError(f *Failure) []byte {
	return fmt.Appendf(nil, `{"error":{"message":%s,"type":"invalid_request_error","param":null,"code":%s}}`,
		JSONString(f.Message), JSONString(string(f.Code)))
}
