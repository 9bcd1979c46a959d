package gateway

import (
	"log/slog"
	"math"
	"strings"

	"github.com/tollgate-dev/tollgate/pkg/sse"
)

// ResponseHeaders handles the upstream status and headers and returns the
// headers to send to the client. Upstream headers pass through except
// hop-by-hop fields and those that describe the operator's shared provider
// account (organization ids, the upstream account's rate limits, cookies).
// It reuses h's storage.
func (x *Exchange) ResponseHeaders(status int, h Headers) Headers {
	x.status = status
	if status == StatusUnauthorized && x.prov != nil {
		// The gateway authenticated the client itself, so a 401 from
		// upstream refuses the operator's provider key: every tenant of
		// that provider is failing, and only the operator can fix it. The
		// log names no key; the client gets Replacement.
		x.keyRefused = true
		x.g.log.LogAttrs(x.ctx, slog.LevelError, "the provider refused the gateway's key",
			slog.String("request_id", x.id),
			slog.String("provider", x.prov.Name()),
			slog.Int("upstream_status", status),
		)
	}
	ct := strings.ToLower(h.Get("content-type"))
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		x.framing = framingSSE
		// An event is read whole up to the cap a whole response has: a
		// Gemini chunk is a whole response, its usage after its content
		// (an image is MiBs of base64), and its SDKs take 256 MiB lines.
		x.dec.MaxEventSize = int(min(x.g.cfg.MaxResponseDoc, math.MaxInt32))
	case x.route.Stream && !x.route.SSE && status/100 == 2 && strings.Contains(ct, "json"):
		x.framing = framingArray
	default:
		x.framing = framingDoc
	}
	// A field the upstream's Connection header names is hop-by-hop too
	// (RFC 9110 §7.6.1); HTTP/1.1 upstreams may send one.
	conn := h.Get("connection")
	// Filter in place: h is the adapter's own list, built for this call.
	out := h[:0]
	for _, f := range h {
		if dropResponseHeader(f.Name) || x.hide && strings.EqualFold(f.Name, "content-length") ||
			conn != "" && namedIn(conn, f.Name) {
			continue
		}
		out = append(out, f)
	}
	if x.grant != nil {
		if rl := x.grant.Limits(); rl.Limit > 0 {
			out = x.prov.RateLimitHeaders(out, rl, x.g.now())
		}
	}
	return append(out, Header{Name: "x-tollgate-request-id", Value: x.id})
}

var (
	// droppedResponseHeaders are dropped besides the hop-by-hop ones.
	droppedResponseHeaders = [...]string{
		"set-cookie", "openai-organization", "openai-project", "anthropic-organization-id",
		"x-tollgate-request-id", "alt-svc",
	}
	droppedResponsePrefixes = [...]string{"x-ratelimit-", "anthropic-ratelimit-"}
)

// dropResponseHeader reports, in any letter case, whether a response header
// stays behind.
func dropResponseHeader(name string) bool {
	for _, list := range [...][]string{hopHeaders[:], droppedResponseHeaders[:]} {
		for _, d := range list {
			if strings.EqualFold(name, d) {
				return true
			}
		}
	}
	for _, p := range droppedResponsePrefixes {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			return true
		}
	}
	return false
}

// namedIn reports whether list, a comma-separated Connection value, names
// the field name, in any letter case.
func namedIn(list, name string) bool {
	for tok := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(tok), name) {
			return true
		}
	}
	return false
}

// Replacement reports, after ResponseHeaders, whether the upstream response
// must not reach the client, and what to send instead. A 401 from upstream
// refuses the operator's provider key, and its body is about that key
// (OpenAI's names its first and last characters), which no tenant may see:
// the client gets the gateway's own 401 in the provider's shape, so its SDK
// still raises its authentication error, saying whose key it is.
func (x *Exchange) Replacement() (Response, bool) {
	if !x.keyRefused {
		return Response{}, false
	}
	f := Fail(StatusUnauthorized, CodeUpstreamKey,
		"The %s API refused the gateway's own provider key. Your gateway key is fine; the gateway's operator must fix the provider key.", x.Provider())
	f.NoRetry = true
	return x.errorResponse(f), true
}

// Streaming reports whether the response is a stream (SSE or a streamed
// JSON array), known once the response headers were handled. Adapters flush
// every chunk of a stream at once; a whole JSON body may be written in one
// go.
func (x *Exchange) Streaming() bool { return x.framing != framingDoc }

// ResponseBody handles one chunk of the response body and returns the bytes
// to forward, which are the chunk itself unless the gateway must hide an
// event it caused. The returned slice is valid until the next call. end
// marks the last chunk (which may be empty).
func (x *Exchange) ResponseBody(chunk []byte, end bool) []byte {
	if x.firstByte.IsZero() && len(chunk) > 0 {
		x.firstByte = x.g.now()
	}
	if x.meter == nil {
		return chunk
	}
	var out []byte
	switch x.framing {
	case framingSSE:
		if x.hide {
			out = x.filterEvents(chunk, end)
		} else {
			_ = x.dec.Feed(chunk, x.onEvent)
			if end {
				_ = x.dec.Close(x.onEvent)
			}
			out = chunk
		}
	case framingArray:
		_ = x.arr.Feed(chunk, x.onElement)
		out = chunk
	default:
		if end && len(x.doc) == 0 && !x.docOver {
			// The whole document in one chunk: read it where it lies.
			x.meter.Document(chunk)
			out = chunk
			break
		}
		if !x.docOver {
			if int64(len(x.doc)+len(chunk)) > x.g.cfg.MaxResponseDoc {
				x.docOver, x.doc = true, nil
			} else {
				x.doc = append(x.doc, chunk...)
			}
		}
		if end && !x.docOver {
			x.meter.Document(x.doc)
			x.doc = nil
		}
		out = chunk
	}
	if end {
		x.completed = true
	}
	return out
}

func (x *Exchange) onEvent(ev sse.Event) error {
	x.meter.Event(ev)
	return nil
}

func (x *Exchange) onElement(elem []byte) error {
	x.meter.Document(elem)
	return nil
}

// filterEvents forwards whole events only, leaving out those the meter drops.
// The bytes of an event still arriving are held until it completes.
func (x *Exchange) filterEvents(chunk []byte, end bool) []byte {
	x.hold = append(x.hold, chunk...)
	x.out = x.out[:0]
	consumed := x.holdBase
	editor, _ := x.meter.(EventEditor)
	emit := func(ev sse.Event) error {
		drop := x.meter.Event(ev)
		if !drop {
			raw := x.hold[ev.Start-x.holdBase : ev.End-x.holdBase]
			if editor != nil {
				x.out = editor.AppendEvent(x.out, raw)
			} else {
				x.out = append(x.out, raw...)
			}
		}
		consumed = ev.End
		return nil
	}
	_ = x.dec.Feed(chunk, emit)
	if end {
		_ = x.dec.Close(emit)
		x.out = append(x.out, x.hold[consumed-x.holdBase:]...)
		consumed = x.holdBase + int64(len(x.hold))
	}
	n := copy(x.hold, x.hold[consumed-x.holdBase:])
	x.hold = x.hold[:n]
	x.holdBase = consumed
	return x.out
}
