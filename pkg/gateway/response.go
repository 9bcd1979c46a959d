package gateway

import (
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/sse"
)

// ResponseHeaders handles the upstream status and headers and returns the
// headers to send to the client. Upstream headers pass through except
// hop-by-hop fields and those that describe the operator's shared provider
// account (organization ids, the upstream account's rate limits, cookies).
// It reuses h's storage.
func (x *Exchange) ResponseHeaders(status int, h Headers) Headers {
	x.status = status
	if x.prov != nil {
		x.replaced = x.accountRefusal(status, h)
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
		// The same cap on an element of Gemini's streamed array: one
		// that never ends must not grow the splitter without bound.
		x.arr.MaxElementSize = int(min(x.g.cfg.MaxResponseDoc, math.MaxInt32))
	default:
		x.framing = framingDoc
	}
	// Whether an error document is about the operator's account shows in
	// its body only: it is held until whole (peekBody), and may change.
	x.peek = x.prov != nil && x.replaced == nil && x.framing == framingDoc &&
		peekedStatus(status) && strings.Contains(ct, "json")
	// A field the upstream's Connection header names is hop-by-hop too
	// (RFC 9110 §7.6.1); HTTP/1.1 upstreams may send one.
	conn := h.Get("connection")
	// Filter in place: h is the adapter's own list, built for this call.
	out := h[:0]
	for _, f := range h {
		if dropResponseHeader(f.Name) || (x.hide || x.peek) && strings.EqualFold(f.Name, "content-length") ||
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
		"anthropic-workspace-id", "x-tollgate-request-id", "alt-svc",
	}
	// droppedResponsePrefixes are the families of the upstream account's
	// limits and their use across every tenant: OpenAI's and Anthropic's
	// rate limits, Anthropic's Priority Tier commitment
	// (anthropic-priority-{input,output}-tokens-*) and fast mode's limits
	// (anthropic-fast-*).
	droppedResponsePrefixes = [...]string{"x-ratelimit-", "anthropic-ratelimit-", "anthropic-priority-", "anthropic-fast-"}
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

// accountRefusal is the gateway's own answer for an upstream status that
// is about the operator's provider account rather than the request, or nil.
// The gateway checked the client's token itself, and every tenant of a
// provider shares the operator's account, so the bodies of these answers
// are the operator's business, not the tenant's: a 401 is about the key
// (OpenAI's names its first and last characters), a 403 too (Gemini's
// quotes the whole key), and a 429 states the account's organization id
// and its limit and use across every tenant. The client gets an error of
// the same status in the provider's shape, so its SDK raises the same
// error class and retries as it would have; retry-after headers are
// copied from upstream.
func (x *Exchange) accountRefusal(status int, h Headers) *Failure {
	var code Code
	switch status {
	case StatusUnauthorized:
		code = CodeUpstreamKey
	case StatusForbidden:
		code = CodeUpstreamDenied
	case StatusTooManyRequests:
		code = CodeUpstreamLimit
		if strings.EqualFold(h.Get("x-should-retry"), "false") {
			// How OpenAI marks an account out of quota: retrying cannot help.
			code = CodeUpstreamQuota
		}
	default:
		return nil
	}
	f := x.accountFailure(status, code)
	if code == CodeUpstreamLimit {
		ra := strings.TrimSpace(h.Get("retry-after"))
		if s, err := strconv.Atoi(ra); err == nil {
			f.RetryAfter = s
		} else if _, err := time.Parse(httpDate, ra); err == nil {
			x.replacedRetry.Add("retry-after", ra)
		}
		if ms := strings.TrimSpace(h.Get("retry-after-ms")); ms != "" {
			if _, err := strconv.ParseUint(ms, 10, 63); err == nil {
				x.replacedRetry.Add("retry-after-ms", ms)
			}
		}
	}
	return f
}

// accountFailure is the gateway's answer, with the upstream's status, for
// an upstream error about the operator's provider account. Every code but
// a rate limit means every tenant of the provider fails until the operator
// acts, so it logs an error; the log names no key and holds nothing of the
// upstream body (which may quote the key).
func (x *Exchange) accountFailure(status int, code Code) *Failure {
	name := x.prov.Name()
	f := Fail(status, code, accountMessages[code], name)
	f.Operation = x.route.Operation
	if code == CodeUpstreamLimit {
		return f
	}
	f.NoRetry = true
	x.g.log.LogAttrs(x.ctx, slog.LevelError, "the provider refused the gateway's key or account",
		slog.String("request_id", x.id),
		slog.String("provider", name),
		slog.Int("upstream_status", status),
		slog.String("reason", string(code)),
	)
	return f
}

// accountMessages are the gateway's messages for upstream errors about the
// operator's account, each given the provider's name.
var accountMessages = map[Code]string{
	CodeUpstreamKey:    "The %s API refused the gateway's own provider key. Your gateway key is fine; the gateway's operator must fix the provider key.",
	CodeUpstreamDenied: "The %s API denied the gateway's provider account this request. Your gateway key is fine; the gateway's operator must fix the provider account's access.",
	CodeUpstreamQuota:  "The gateway's %s provider account has run out of quota or credit. Your gateway key and credits are fine; the gateway's operator must fix the provider account.",
	CodeUpstreamLimit:  "The %s API's rate limit for the gateway's shared provider account was reached; this is not your own limit. Retry after a short wait.",
}

// httpDate is the HTTP date format (RFC 9110 §5.6.7) a retry-after may use.
const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// Replacement reports, after ResponseHeaders, whether the upstream response
// must not reach the client, and what to send instead (see accountRefusal).
func (x *Exchange) Replacement() (Response, bool) {
	if x.replaced == nil {
		return Response{}, false
	}
	r := x.errorResponse(x.replaced)
	r.Header = append(r.Header, x.replacedRetry...)
	return r, true
}

// WholeEvents asks, before ResponseHeaders, that an SSE stream be
// forwarded in whole events: ResponseBody holds the bytes of an event
// until it completes. An adapter that chooses its own chunks (the
// standalone proxy) loses nothing by it, since clients act on whole events
// only, and the gateway can then always replace an error event about the
// operator's account. Envoy's chunks are forwarded as they come instead,
// an error event replaced only when it lies whole in one.
func (x *Exchange) WholeEvents() { x.wholeEvents = true }

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
	if x.peek {
		return x.peekBody(chunk, end)
	}
	return x.responseBody(chunk, end)
}

// peekedStatus reports whether an upstream error of this status may be
// about the operator's account by what its body says: a 400 (Gemini's
// invalid key, Anthropic's credit balance, OpenAI's unverified organization
// or billing limit), a 402 (Anthropic's billing) or a 404 (OpenAI's model
// that an unverified organization may not use).
func peekedStatus(status int) bool {
	return status == StatusBadRequest || status == StatusPaymentRequired || status == StatusNotFound
}

// maxPeek bounds the error document held for peekBody: provider error
// documents are a few hundred bytes.
const maxPeek = 64 << 10

// peekBody holds an upstream error document (peekedStatus) until it is
// whole, then forwards it, or, when the provider reads it as about the
// operator's account (Gemini's invalid key, Anthropic's credit balance),
// the gateway's own error of that status instead (see accountRefusal for
// why). The content-length was dropped with the headers, since the body may
// change.
func (x *Exchange) peekBody(chunk []byte, end bool) []byte {
	x.errDoc = append(x.errDoc, chunk...)
	if !end && len(x.errDoc) <= maxPeek {
		return nil
	}
	held := x.errDoc
	x.errDoc, x.peek = nil, false
	if end && len(held) <= maxPeek {
		if code := x.prov.AccountError(x.status, held); code != "" {
			x.replaced = x.accountFailure(x.status, code)
			x.completed = true
			// The headers went out already: only the body changes.
			_, body := x.prov.Error(x.replaced)
			return body
		}
	}
	return x.responseBody(held, end)
}

// responseBody meters a chunk of the response body and returns the bytes
// to forward (see ResponseBody).
func (x *Exchange) responseBody(chunk []byte, end bool) []byte {
	if x.meter == nil {
		return chunk
	}
	var out []byte
	switch x.framing {
	case framingSSE:
		switch {
		case x.hide:
			out = x.filterEvents(chunk, end)
		case x.wholeEvents:
			out = x.forwardWholeEvents(chunk, end)
		default:
			out = x.meterEvents(chunk, end)
		}
	case framingArray:
		out = x.splitElements(chunk)
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

// meterEvents meters a chunk's events and forwards the chunk as it came,
// except for an error event about the operator's account (accountError)
// that lies whole in the chunk: it is replaced there. One that began in an
// earlier chunk, already forwarded, cannot be, and passes (holding every
// chunk's unfinished event back would edit the chunking of every stream).
func (x *Exchange) meterEvents(chunk []byte, end bool) []byte {
	x.sent = x.fed
	x.fed += int64(len(chunk))
	_ = x.dec.Feed(chunk, x.onEvent)
	if end {
		_ = x.dec.Close(x.onEvent)
	}
	return x.splice(chunk)
}

// splice returns chunk, which starts at x.sent, with the replacement of an
// account error (rep, at [repStart, repEnd) of the stream) in place, or
// chunk itself.
func (x *Exchange) splice(chunk []byte) []byte {
	if x.rep == nil {
		return chunk
	}
	from, to := x.repStart-x.sent, x.repEnd-x.sent
	x.out = append(append(append(x.out[:0], chunk[:from]...), x.rep...), chunk[to:]...)
	x.rep = nil
	return x.out
}

// maxHeldEvent bounds what forwardWholeEvents holds of an unfinished
// event: an error event is small, and a Gemini event with an image (MiBs)
// should not be held twice over, beside the decoder's copy.
const maxHeldEvent = 64 << 10

// forwardWholeEvents meters a chunk's events and forwards whole events
// (WholeEvents): what follows the chunk's last complete event is held
// (x.hold, from x.holdBase = x.sent) until its event completes, and an
// error event about the operator's account is replaced. A chunk that ends
// on an event boundary, with nothing held and nothing replaced, goes out as
// it is.
func (x *Exchange) forwardWholeEvents(chunk []byte, end bool) []byte {
	x.sent, x.fed = x.holdBase, x.fed+int64(len(chunk))
	_ = x.dec.Feed(chunk, x.onEvent)
	if end {
		_ = x.dec.Close(x.onEvent)
	}
	cut := max(x.lastEnd, x.holdBase) // forward up to here
	if end {
		cut = x.fed
	}
	if len(x.hold) == 0 && x.rep == nil && cut == x.fed {
		x.holdBase = cut
		return chunk
	}
	x.hold = append(x.hold, chunk...)
	held := func(from, to int64) []byte { return x.hold[from-x.holdBase : to-x.holdBase] }
	out := x.out[:0]
	if x.rep != nil {
		out = append(append(append(out, held(x.holdBase, x.repStart)...), x.rep...), held(x.repEnd, cut)...)
		x.rep = nil
	} else {
		out = append(out, held(x.holdBase, cut)...)
	}
	x.hold = x.hold[:copy(x.hold, held(cut, x.fed))]
	x.holdBase = cut
	if !end && len(x.hold) > maxHeldEvent {
		out = append(out, x.hold...)
		x.holdBase, x.hold = x.fed, x.hold[:0]
	}
	x.out = out
	return out
}

// onEvent meters an event of a stream forwarded by meterEvents or
// forwardWholeEvents and notes where it ends and whether it is an account
// error to replace.
func (x *Exchange) onEvent(ev sse.Event) error {
	x.meter.Event(ev)
	x.lastEnd = ev.End
	if f := x.accountError(ev.Data, ev.Start >= x.sent); f != nil {
		x.rep, x.repStart, x.repEnd = x.prov.StreamError(f, x.route), ev.Start, ev.End
	}
	return nil
}

// accountError judges a stream's first error (an SSE event's data or a
// streamed array's element), after the meter saw it, and returns the
// gateway's own failure to put in its place when the provider reads it as
// about the operator's account (a Responses stream failing on the
// organization's rate limit names the organization and its use across
// tenants; see accountRefusal), or nil. An error that can no longer be
// replaced (begun in bytes already forwarded) is judged all the same, and
// passes.
func (x *Exchange) accountError(data []byte, replaceable bool) *Failure {
	if x.errSeen || x.failer == nil || !x.failer.Failed() {
		return nil
	}
	x.errSeen = true
	if !replaceable {
		return nil
	}
	code := x.prov.AccountError(StatusOK, data)
	if code == "" {
		return nil
	}
	// The status the same news has outside a stream.
	status := StatusTooManyRequests
	switch code {
	case CodeUpstreamKey:
		status = StatusUnauthorized
	case CodeUpstreamDenied:
		status = StatusForbidden
	}
	x.replaced = x.accountFailure(status, code)
	return x.replaced
}

// splitElements meters the elements of a streamed JSON array (Gemini
// without alt=sse) and forwards the chunk as it came, except for an error
// element about the operator's account that lies whole in the chunk, which
// is replaced there by the gateway's error document (see meterEvents).
func (x *Exchange) splitElements(chunk []byte) []byte {
	x.sent = x.fed
	x.fed += int64(len(chunk))
	x.chunk = chunk
	_ = x.arr.Feed(chunk, x.onElement)
	x.chunk = nil
	return x.splice(chunk)
}

func (x *Exchange) onElement(elem []byte) error {
	x.meter.Document(elem)
	// An element whole in this chunk aliases it: its start is where the
	// chunk's and the element's capacities part.
	at := cap(x.chunk) - cap(elem)
	whole := len(elem) > 0 && at >= 0 && at < len(x.chunk) && &x.chunk[at] == &elem[0]
	if f := x.accountError(elem, whole); f != nil {
		_, body := x.prov.Error(f)
		x.rep, x.repStart, x.repEnd = body, x.sent+int64(at), x.sent+int64(at+len(elem))
	}
	return nil
}

// filterEvents forwards whole events only, leaving out those the meter
// drops and replacing an error event about the operator's account. The
// bytes of an event still arriving are held until it completes, up to
// maxHeldEvent: past that they pass as they come (x.passing), since the
// events the gateway drops or replaces are small, and an upstream sending
// a line without end must not grow the hold without bound.
func (x *Exchange) filterEvents(chunk []byte, end bool) []byte {
	x.hold = append(x.hold, chunk...)
	x.out = x.out[:0]
	consumed := x.holdBase
	editor, _ := x.meter.(EventEditor)
	emit := func(ev sse.Event) error {
		drop := x.meter.Event(ev)
		switch {
		case x.passing:
			// Its start has gone out already: the rest follows unedited.
			x.out = append(x.out, x.hold[:ev.End-x.holdBase]...)
			x.passing = false
		case !drop:
			raw := x.hold[ev.Start-x.holdBase : ev.End-x.holdBase]
			if f := x.accountError(ev.Data, true); f != nil {
				x.out = append(x.out, x.prov.StreamError(f, x.route)...)
			} else if editor != nil {
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
	}
	if rest := x.hold[consumed-x.holdBase:]; end || x.passing || len(rest) > maxHeldEvent {
		x.out = append(x.out, rest...)
		consumed = x.holdBase + int64(len(x.hold))
		x.passing = !end
	}
	n := copy(x.hold, x.hold[consumed-x.holdBase:])
	x.hold = x.hold[:n]
	x.holdBase = consumed
	return x.out
}
