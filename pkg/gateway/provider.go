package gateway

import (
	"encoding/json"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/jsonedit"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Route is what a provider made of a request line.
type Route struct {
	// Operation names the endpoint in records and metrics, e.g.
	// "chat.completions", "messages", "generateContent".
	Operation string
	// Model is the model named by the path (Gemini), "" when it is in the body.
	Model string
	// Stream is set when the path alone asks for a stream (Gemini).
	Stream bool
	// SSE is set when a path-selected stream is framed as SSE (Gemini alt=sse);
	// otherwise a path-selected stream is a streamed JSON array.
	SSE bool
	// Local routes are answered by the gateway from the catalog.
	Local bool
	// ModelID is the model a local "get one model" route asks for.
	ModelID string
	// Unbilled routes (token counting) carry no billable usage and run no
	// model, so the context limit does not apply to them.
	Unbilled bool
	// UpstreamPath and UpstreamQuery are what the gateway calls upstream; the
	// query has every credential removed.
	UpstreamPath  string
	UpstreamQuery string
}

// Inspection is what a provider read from a request body.
type Inspection struct {
	Model  string
	Stream bool
	// CacheMarked: the body asks for prompt caching (Anthropic's
	// cache_control), so part of its input may be read from the cache,
	// which some providers' rate limits do not count.
	CacheMarked bool
	// Body is the parsed request body, handed on to Rewrite so the body is
	// scanned once.
	Body *jsonedit.Object
}

// Rewrite carries what a provider needs to prepare the upstream body.
type Rewrite struct {
	// UpstreamModel replaces the client's model name when the catalog serves
	// it under another upstream name.
	UpstreamModel string
	// CacheKey is the per-account prompt cache key (OpenAI), as a JSON
	// string literal.
	CacheKey []byte
}

// Rewritten is the upstream body and what the response side must know.
type Rewritten struct {
	Body []byte
	// Path, when not empty, replaces Route.UpstreamPath (a renamed model in
	// the path).
	Path string
	// HideUsage is set when the gateway asked upstream for stream usage the
	// client did not ask for: the meter drops that usage chunk.
	HideUsage bool
}

// Provider is one upstream API's wire format. Adding a provider is one new
// implementation of this interface.
type Provider interface {
	// Name is the provider's catalog name and path prefix ("openai").
	Name() string
	// Match classifies a request; path is relative to the provider prefix and
	// rawQuery is the query without '?'.
	Match(method, path, rawQuery string) (Route, *Failure)
	// Inspect validates a request body and reads its model and stream flag.
	// It enforces the provider's rules (unsupported fields and features).
	Inspect(r Route, body []byte) (Inspection, *Failure)
	// Rewrite produces the upstream body.
	Rewrite(r Route, body []byte, in Inspection, rw Rewrite) (Rewritten, *Failure)
	// UpstreamHeaders appends to dst the protocol headers the upstream
	// request needs, built from scratch (the gateway adds the key and the
	// operator's allow-listed headers). It may refuse the request, e.g. an
	// unknown protocol version.
	UpstreamHeaders(dst, client Headers) (Headers, *Failure)
	// AuthHeaders are the headers that carry the real key upstream.
	AuthHeaders(key string) Headers
	// Error renders a failure as the provider's own error: the status the
	// provider would use for it (usually f.Status) and the JSON body.
	Error(f *Failure) (status int, body []byte)
	// StreamError renders a failure as an event in an already started stream.
	StreamError(f *Failure, r Route) []byte
	// AccountError reads an upstream error document of a status the
	// gateway cannot judge by the status alone (400, 402, 404), or with status
	// 200 the data of an error event inside a stream, and returns
	// CodeUpstreamKey, CodeUpstreamDenied, CodeUpstreamLimit or
	// CodeUpstreamQuota when it is about the operator's provider account
	// (Gemini's invalid key, Anthropic's credit balance, a Responses stream
	// failing on the organization's rate limit), or "" when it is about
	// the request.
	AccountError(status int, body []byte) Code
	// Local answers a catalog route (model listings).
	Local(r Route, models ModelLister) (status int, body []byte, f *Failure)
	// NewMeter returns a usage reader for one response.
	NewMeter(r Route, rw Rewritten) Meter
	// RateLimitHeaders appends the account's token budget in the provider's
	// own rate-limit header style.
	RateLimitHeaders(dst Headers, rl RateLimit, now time.Time) Headers
}

// Meter reads usage from one response as it streams by.
type Meter interface {
	// Event sees one SSE event; drop asks the gateway not to forward it.
	Event(ev sse.Event) (drop bool)
	// Document sees a whole JSON response body or one element of a streamed
	// JSON array.
	Document(doc []byte)
	// Usage returns the usage read so far and how complete it is.
	Usage() (usage.Tokens, Completeness)
	// OutputChars counts generated text seen so far, for estimating the
	// output of a stream that ended without usage.
	OutputChars() int64
}

// Completeness says how far usage read from a response can be trusted.
type Completeness int

const (
	// NoUsage: the provider sent no usage.
	NoUsage Completeness = iota
	// PartialUsage: the provider sent a running or input-side count but the
	// response ended before the final one (an abandoned stream).
	PartialUsage
	// FinalUsage: the provider's final count.
	FinalUsage
)

// EventEditor is implemented by meters that must also edit the events they
// keep while the gateway filters a stream (Rewritten.HideUsage): the
// provider then sends fields the client did not ask for in every event.
// AppendEvent appends the bytes of one whole raw event, edited, to dst.
type EventEditor interface {
	AppendEvent(dst, raw []byte) []byte
}

// ParseBody parses a request body that must be a JSON object, with the
// failure every provider answers when it is not.
func ParseBody(body []byte) (*jsonedit.Object, *Failure) {
	obj, err := jsonedit.Parse(body)
	if err == nil {
		return obj, nil
	}
	if !json.Valid(body) {
		return nil, Fail(StatusBadRequest, CodeInvalidRequest, "The request body is not valid JSON.")
	}
	return nil, Fail(StatusBadRequest, CodeInvalidRequest, "The request body must be a JSON object.")
}

// InspectJSONModel reads a body that names its model and stream flag in
// top-level "model" and "stream" members, as OpenAI and Anthropic requests
// do; missing is the provider's own message for a request without a model.
func InspectJSONModel(body []byte, missing string) (Inspection, *Failure) {
	var in Inspection
	obj, f := ParseBody(body)
	if f != nil {
		return in, f
	}
	in.Body = obj
	model, ok := StringField(obj, "model")
	if !ok {
		return in, Fail(StatusBadRequest, CodeInvalidRequest, "%s", missing).WithParam("model")
	}
	in.Model = model
	in.Stream = string(obj.Get("stream")) == "true"
	return in, nil
}

// StringField returns a top-level string member, decoded; ok is false when
// it is absent, not a string or empty.
func StringField(obj *jsonedit.Object, key string) (string, bool) {
	raw := obj.Get(key)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	s, ok := jsonscan.String(raw)
	return s, ok && s != ""
}

// InputTexter is implemented by providers with endpoints whose responses
// never report usage (Gemini embeddings): the gateway then bills an estimate,
// and the texts the model reads make a far better one than the whole body
// with its keys and model names. InputTexts returns them, ok false when the
// route reports usage itself.
type InputTexter interface {
	InputTexts(r Route, in Inspection) (texts []string, ok bool)
}

// Count reads the token counter at path in a usage object, clamped with
// usage.Clamp so no body can bill negative or overflowing tokens; ok is
// false when it is absent or not an integer.
func Count(raw []byte, path ...string) (int64, bool) {
	v, ok := jsonscan.Field(raw, path...)
	if !ok {
		return 0, false
	}
	n, ok := jsonscan.Int(v)
	return usage.Clamp(n), ok
}

// EventType is an SSE event's type: its event name, or the "type" member of
// its data when the stream sends none (both Anthropic and OpenAI Responses
// repeat the name there).
func EventType(ev sse.Event) string {
	if ev.Name != "" {
		return ev.Name
	}
	raw, _ := jsonscan.Field(ev.Data, "type")
	s, _ := jsonscan.String(raw)
	return s
}
