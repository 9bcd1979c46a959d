package mockprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// DefaultCreated is the fixed Unix timestamp used for every "created" /
// "created_at" field when Options.Created is zero (2026-01-01T00:00:00Z).
const DefaultCreated int64 = 1767225600

// Options configures a mock server. The zero value works.
type Options struct {
	// ChunkDelay is the pause between two streamed chunks (SSE events or JSON
	// array elements). Zero streams as fast as possible.
	ChunkDelay time.Duration
	// Latency is a pause before the response headers are written (every
	// endpoint, streaming or not). Cancelling the request ends it early.
	Latency time.Duration
	// Created is the Unix timestamp written in created/created_at fields.
	// Zero means DefaultCreated.
	Created int64
	// APIKey, when set, makes the mock check credentials like the real API:
	// OpenAI and Anthropic accept "Authorization: Bearer KEY" (Anthropic also
	// "x-api-key: KEY"), Gemini "x-goog-api-key: KEY" or "?key=KEY". A
	// missing or wrong key gets the provider's native 401/400 error. Empty
	// means any (or no) credential is accepted.
	APIKey string
	// AllowMissingAnthropicVersion turns off the real API's check that every
	// Anthropic request carries an anthropic-version header (400 otherwise).
	AllowMissingAnthropicVersion bool
}

func (o Options) created() int64 {
	if o.Created != 0 {
		return o.Created
	}
	return DefaultCreated
}

// Served is the ground-truth record of one request the mock answered.
type Served struct {
	Method, Path, RawQuery string
	// Header is the request header as received (a clone).
	Header http.Header
	// Body is the request body as received.
	Body []byte
	// Provider is "openai", "anthropic" or "gemini".
	Provider string
	// Endpoint names the operation, e.g. "chat.completions", "responses",
	// "embeddings", "models", "messages", "count_tokens",
	// "generateContent", "streamGenerateContent", "countTokens",
	// "embedContent", "batchEmbedContents", "responses.input_tokens".
	Endpoint string
	// Model is the model the request named (body field, or URL segment for
	// Gemini without the "models/" prefix). Empty for list endpoints.
	Model string
	// Stream reports a streamed response (SSE or Gemini JSON array).
	Stream bool
	// Status is the HTTP status sent.
	Status int
	// Usage is the ground truth in the gateway's disjoint terms: what the
	// provider bills for this request. It is set even when the wire carries
	// no usage (see NoUsageOnWire). Zero for errors, lists and token counts.
	Usage usage.Tokens
	// Native is the usage object exactly as sent on the wire (compacted),
	// the last one for streams. Nil when no usage object was sent.
	Native json.RawMessage
	// NoUsageOnWire reports that the response carried no usage although
	// Usage is non-zero: OpenAI chat streams without
	// stream_options.include_usage, [[mock no_usage]], mid-stream errors,
	// and Gemini embeddings (which never report usage).
	NoUsageOnWire bool
	// Aborted reports that the client went away before the response was
	// completely written.
	Aborted bool
	// MidstreamError reports that [[mock midstream_error]] cut the stream.
	MidstreamError bool
	// ToolCall reports that the answer was a tool/function call.
	ToolCall bool
	// Reply is the reply text sent (empty for tool calls and errors).
	Reply string
}

// Server is one mock provider. It is an http.Handler and safe for
// concurrent use.
type Server struct {
	provider string
	opts     Options
	route    func(c *call)

	mu     sync.Mutex
	served []*Served
}

func newServer(provider string, opts Options, route func(c *call)) *Server {
	return &Server{provider: provider, opts: opts, route: route}
}

// Provider returns "openai", "anthropic" or "gemini".
func (s *Server) Provider() string { return s.provider }

// Served returns a copy of the log of served requests, oldest first.
func (s *Server) Served() []Served {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Served, len(s.served))
	for i, r := range s.served {
		out[i] = *r
		out[i].Header = r.Header.Clone()
		out[i].Body = slices.Clone(r.Body)
		out[i].Native = slices.Clone(r.Native)
	}
	return out
}

// Last returns the most recent record and whether there is one.
func (s *Server) Last() (Served, bool) {
	all := s.Served()
	if len(all) == 0 {
		return Served{}, false
	}
	return all[len(all)-1], true
}

// Reset clears the log.
func (s *Server) Reset() {
	s.mu.Lock()
	s.served = nil
	s.mu.Unlock()
}

// ServeHTTP answers one request like the real API would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := &call{
		s:    s,
		w:    w,
		r:    r,
		ctx:  r.Context(),
		body: body,
		rec: &Served{
			Method:   r.Method,
			Path:     r.URL.Path,
			RawQuery: r.URL.RawQuery,
			Header:   r.Header.Clone(),
			Body:     body,
			Provider: s.provider,
		},
	}
	s.route(c)
	if !c.recorded {
		// Nothing was written (should not happen); make the log complete.
		c.commit()
	}
}

// call is the state of one request.
type call struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	body []byte
	rec  *Served

	recorded bool
	seed     []byte // hash input for ids
}

// commit appends the record to the server log. It is called before the last
// bytes of a response are written so that a client that has read the whole
// response always finds the record.
func (c *call) commit() {
	if c.recorded {
		return
	}
	c.recorded = true
	c.s.mu.Lock()
	c.s.served = append(c.s.served, c.rec)
	c.s.mu.Unlock()
}

// setAborted marks the committed record as cut short.
func (c *call) setAborted() {
	c.s.mu.Lock()
	c.rec.Aborted = true
	c.s.mu.Unlock()
	c.commit()
}

// wait sleeps d unless the request is cancelled first; it reports whether
// the request is still alive.
func (c *call) wait(d time.Duration) bool {
	if c.ctx.Err() != nil {
		return false
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// latency applies Options.Latency; false means the client went away.
func (c *call) latency() bool {
	if !c.wait(c.s.opts.Latency) {
		c.setAborted()
		return false
	}
	return true
}

// send writes a complete (non-streamed) response.
func (c *call) send(status int, contentType string, body []byte, hdr map[string]string) {
	c.rec.Status = status
	if !c.latency() {
		return
	}
	h := c.w.Header()
	for k, v := range hdr {
		h.Set(k, v)
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", itoa(len(body)))
	c.commit()
	c.w.WriteHeader(status)
	if _, err := c.w.Write(body); err != nil {
		c.setAborted()
	}
}

// stream writes chunks with ChunkDelay between them, flushing after each.
// The record is committed before the last chunk is written.
func (c *call) stream(contentType string, hdr map[string]string, chunks [][]byte) {
	c.rec.Status = http.StatusOK
	c.rec.Stream = true
	if !c.latency() {
		return
	}
	h := c.w.Header()
	for k, v := range hdr {
		h.Set(k, v)
	}
	h.Set("Content-Type", contentType)
	fl, _ := c.w.(http.Flusher)
	c.w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	for i, ch := range chunks {
		if i > 0 && !c.wait(c.s.opts.ChunkDelay) {
			c.setAborted()
			return
		}
		if i == len(chunks)-1 {
			c.commit()
		}
		if _, err := c.w.Write(ch); err != nil {
			c.setAborted()
			return
		}
		if fl != nil {
			fl.Flush()
		}
		if c.ctx.Err() != nil && i < len(chunks)-1 {
			c.setAborted()
			return
		}
	}
	c.commit()
}

// id derives a deterministic identifier of n characters from the request.
func (c *call) id(kind string, n int) string {
	if c.seed == nil {
		c.seed = append([]byte(c.s.provider+"\x00"+c.r.Method+"\x00"+c.r.URL.Path+"\x00"+c.r.URL.RawQuery+"\x00"), c.body...)
	}
	return hashID(c.seed, kind, n)
}

// authorized enforces Options.APIKey. It reports whether the request may go on.
func (c *call) authorized(keys ...string) bool {
	want := c.s.opts.APIKey
	if want == "" {
		return true
	}
	return slices.Contains(keys, want)
}

func bearer(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

// marshal encodes v compactly without HTML escaping and without a trailing
// newline (OpenAI, Anthropic style).
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("mockprovider: marshal: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// marshalIndent encodes v with two-space indentation and a trailing newline.
func marshalIndent(v any, escapeHTML bool) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic("mockprovider: marshal: " + err.Error())
	}
	return b.Bytes()
}
