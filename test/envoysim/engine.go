package envoysim

import (
	"net/http"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// kinds of one direction's messages.
func headersKind(d direction) msgKind {
	return [...]msgKind{kindRequestHeaders, kindResponseHeaders}[d]
}
func bodyKind(d direction) msgKind { return [...]msgKind{kindRequestBody, kindResponseBody}[d] }
func trailersKind(d direction) msgKind {
	return [...]msgKind{kindRequestTrailers, kindResponseTrailers}[d]
}

// message builds the ProcessingRequest of one kind.
func message(k msgKind, h Headers, data []byte, eos bool) *extprocv3.ProcessingRequest {
	hh := &extprocv3.HttpHeaders{Headers: h.headerMap(), EndOfStream: eos}
	b := &extprocv3.HttpBody{Body: data, EndOfStream: eos}
	t := &extprocv3.HttpTrailers{Trailers: h.headerMap()}
	r := &extprocv3.ProcessingRequest{}
	switch k {
	case kindRequestHeaders:
		r.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hh}
	case kindResponseHeaders:
		r.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}
	case kindRequestBody:
		r.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: b}
	case kindResponseBody:
		r.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: b}
	case kindRequestTrailers:
		r.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: t}
	case kindResponseTrailers:
		r.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: t}
	}
	return r
}

// common is the CommonResponse of a headers, body or trailers reply.
func common(r *extprocv3.ProcessingResponse) *extprocv3.CommonResponse {
	switch x := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return x.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return x.ResponseHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		return x.RequestBody.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseBody:
		return x.ResponseBody.GetResponse()
	}
	return nil
}

// trailerMutation is the header mutation of a trailers reply.
func trailerMutation(r *extprocv3.ProcessingResponse) *extprocv3.HeaderMutation {
	if t := r.GetRequestTrailers(); t != nil {
		return t.GetHeaderMutation()
	}
	return r.GetResponseTrailers().GetHeaderMutation()
}

// run is one direction of the filter after its headers: the body engines
// of doc §3.2 and the trailers of §3.3, fed by the codec's chunks.
type run struct {
	rq  *request
	f   *filter
	d   direction
	h   *Headers
	src <-chan chunk // nil once the body has ended
	// release lets the headers go (downstream for a response); out takes
	// the processed body bytes in order.
	release func(Headers)
	out     func([]byte)

	released bool
	// held is what arrived while the headers were held.
	held     []byte
	ended    bool // the body's end, or its trailers, has arrived
	trailers Headers
	hasTrail bool
	// queue holds the STREAMED chunks awaiting their reply (copies kept).
	queue []chunk
	// sentEarly: body chunks went out before the headers reply.
	sentEarly    bool
	trailersSent bool
}

func (r *run) doRelease() {
	if !r.released {
		r.released = true
		r.release(*r.h)
	}
}

// next takes the codec's next chunk. ok is false once nothing more will
// come: the source closed, or the codec failed (lr then ends the stream).
// Trailers are kept, and a chunk that ends the body drops the source.
func (r *run) next() (c chunk, ok bool, lr *localReply) {
	c, ok = <-r.src
	switch {
	case !ok:
		r.src = nil
	case c.err != nil:
		return c, false, r.codecError()
	case c.eos || c.trailers != nil:
		if c.trailers != nil {
			r.trailers, r.hasTrail = c.trailers, true
		}
		r.src = nil
	}
	return c, ok, nil
}

// holdOver takes the codec's chunks into held until it holds more than
// limit bytes or the body has ended; a codec error ends the stream.
func (r *run) holdOver(limit int) *localReply {
	for r.src != nil && len(r.held) <= limit {
		c, ok, lr := r.next()
		if !ok {
			return lr
		}
		r.held = append(r.held, c.data...)
		if r.src == nil {
			r.ended = true
		}
	}
	return nil
}

// headers sends the headers message and waits for its reply. Body chunks
// go out meanwhile in FULL_DUPLEX_STREAMED and with
// send_body_without_waiting_for_header_response; otherwise the codec's data
// is taken after the reply (see Options.EarlyBody). It returns a local
// reply, or nil to go on.
func (r *run) headers(eos bool) *localReply {
	f, d := r.f, r.d
	if d == dirResponse {
		// encodeHeaders closes the stream when nothing of the response
		// goes to the processor (not behind the close-optimisation flag).
		defer f.closeIfNoResponseProcessing()
	}
	if !f.active(d) || f.headerMode(d) != extprocfilterv3.ProcessingMode_SEND {
		r.stripContentLength()
		return nil
	}
	if fl := f.send(r.rq.ctx, headersKind(d), message(headersKind(d), f.forwarded(*r.h), nil, eos)); fl != nil {
		return f.failed(fl)
	}
	if f.obs {
		return nil
	}
	r.stripContentLength()
	for f.active(d) {
		src := r.src
		if !f.early(d) {
			src = nil
		}
		ev := f.next(r.rq.ctx, d, src)
		switch {
		case ev.gotEOF:
			r.src = nil
		case ev.fail != nil:
			return r.fail(ev.fail)
		case ev.closed:
			return nil
		case ev.resp == nil:
			if ev.chunk.err != nil {
				return r.codecError()
			}
			if lr := r.sendChunk(ev.chunk); lr != nil {
				return lr
			}
		case ev.kind != headersKind(d):
			// A FULL_DUPLEX piece before the headers reply.
			return r.fail(f.spurious("body reply before the headers reply"))
		default:
			if ir := ev.resp.GetImmediateResponse(); ir != nil {
				f.metadata(ev.resp)
				return f.immediate(ir)
			}
			f.modeOverride(ev.resp, true)
			f.metadata(ev.resp)
			c := common(ev.resp)
			if c.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE && d == dirRequest {
				f.skip[d] = true
				if bm := c.GetBodyMutation(); bm != nil {
					r.rq.replaced, r.rq.replacedBody = bm.GetBody(), true
					r.h.del("content-length")
				}
			}
			if err := f.applyCommon(d, r.h, c, true, nil, false); err != nil {
				return r.rq.mutationFailed(err)
			}
			f.headersDone[d] = true
			f.closeIfLast(headersKind(d), eos, false)
			return nil
		}
	}
	return nil
}

// stripContentLength is the end of Envoy's decodeHeaders/encodeHeaders:
// unless processing is complete, the body mode of that moment decides
// whether the headers lose content-length (the headers message already
// sent keeps it). A mode_override in the headers reply comes later and
// does not change the decision: after an override from BUFFERED to
// STREAMED, content-length stays unless the reply removes it (a set of it
// is skipped then). Observability mode returns before this.
func (r *run) stripContentLength() {
	if r.f.active(r.d) && r.f.stripsContentLength(r.d) {
		r.h.del("content-length")
	}
}

// fail turns a failure into a local reply; nil when the direction goes on
// unprocessed.
func (r *run) fail(fl *failure) *localReply {
	lr := r.f.failed(fl)
	if lr == nil && fl.clientGone {
		return &localReply{details: "downstream_remote_disconnect"}
	}
	return lr
}

func (r *run) codecError() *localReply {
	r.f.finish()
	if r.d == dirRequest {
		return &localReply{details: "downstream_remote_disconnect"}
	}
	r.rq.rec.Flags = "UR"
	return &localReply{status: http.StatusServiceUnavailable, details: "upstream_reset_after_response_started"}
}

// sendChunk sends one streamed chunk: in STREAMED a copy waits in the queue
// for its reply; in FULL_DUPLEX_STREAMED Envoy keeps none.
func (r *run) sendChunk(c chunk) *localReply {
	f, d := r.f, r.d
	if c.trailers != nil {
		r.trailers, r.hasTrail, r.ended, r.src = c.trailers, true, true, nil
		return nil
	}
	if c.eos {
		r.ended, r.src = true, nil
	}
	if !f.headersDone[d] {
		r.sentEarly = true
	}
	if fl := f.send(r.rq.ctx, bodyKind(d), message(bodyKind(d), nil, c.data, c.eos)); fl != nil {
		if lr := f.failed(fl); lr != nil {
			return lr
		}
		r.out(c.data)
		return nil
	}
	switch {
	case f.obs:
		r.out(c.data)
	case f.bodyMode(d) == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		f.fdChunk = true
	default:
		r.queue = append(r.queue, c)
	}
	return nil
}

// body runs the body engine of the effective mode, then the trailers, and
// delivers the result through release and out.
func (r *run) body() *localReply {
	f, d := r.f, r.d
	mode := extprocfilterv3.ProcessingMode_NONE
	if f.active(d) {
		mode = f.bodyMode(d)
	}
	if f.observing() && mode != extprocfilterv3.ProcessingMode_STREAMED {
		mode = extprocfilterv3.ProcessingMode_NONE // observability sends STREAMED bodies only
	}
	if r.rq.p.opts.EarlyBody && !r.sentEarly && mode != extprocfilterv3.ProcessingMode_NONE && !f.observing() {
		// What the codec had by the headers reply, up to the buffer limit.
		if lr := r.holdOver(r.rq.limit(d)); lr != nil {
			return lr
		}
	}
	// Body complete before the headers reply: one message with buffered
	// semantics (processor_state.cc handleHeadersResponse).
	if r.ended && !r.sentEarly && !f.observing() && (mode == extprocfilterv3.ProcessingMode_STREAMED || mode == extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL) {
		mode = extprocfilterv3.ProcessingMode_BUFFERED
	}
	if r.src == nil && !r.ended {
		r.ended = true // no body at all
		mode = extprocfilterv3.ProcessingMode_NONE
	}
	switch mode {
	case extprocfilterv3.ProcessingMode_BUFFERED, extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL:
		if lr := r.buffered(mode == extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL); lr != nil {
			return lr
		}
	case extprocfilterv3.ProcessingMode_STREAMED, extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		if lr := r.streamed(); lr != nil {
			return lr
		}
	default:
		r.doRelease()
		r.out(r.held)
		r.held = nil
		if lr := r.passRest(); lr != nil {
			return lr
		}
	}
	return r.trailerPhase()
}

// passRest forwards what is left of the body unprocessed.
func (r *run) passRest() *localReply {
	for r.src != nil {
		c, ok, lr := r.next()
		if lr != nil {
			return lr
		}
		if !ok {
			break
		}
		r.out(c.data)
	}
	r.ended = true
	return nil
}

// buffered is BUFFERED and BUFFERED_PARTIAL: the headers stay held until
// the body message's reply, which may mutate them (doc §3.2).
func (r *run) buffered(partial bool) *localReply {
	limit := r.rq.limit(r.d)
	if lr := r.holdOver(limit); lr != nil {
		return lr
	}
	buf, rest := r.held, []byte(nil)
	if len(buf) > limit {
		if !partial {
			if r.d == dirRequest {
				// The filter manager's 413 goes through the encoder filters:
				// ext_proc, not done, processes it as a response.
				return &localReply{status: http.StatusRequestEntityTooLarge, details: "request_payload_too_large",
					body: []byte("Payload Too Large")}
			}
			r.f.finish()
			return &localReply{status: http.StatusInternalServerError, details: "response_payload_too_large",
				body: []byte("Internal Server Error")}
		}
		buf, rest = buf[:limit], buf[limit:]
	}
	r.held = nil
	out, lr := r.rq.bodyRoundTrip(r.d, bodyKind(r.d), buf, r.ended && rest == nil && !r.hasTrail, r.h, !partial)
	if lr != nil {
		return lr
	}
	r.doRelease()
	r.out(out)
	r.out(rest)
	return r.passRest()
}

// streamed is STREAMED (FIFO replies, a chunk delivered only with its
// reply) and FULL_DUPLEX_STREAMED (the processor's streamed_response
// pieces are the body), and observability mode's send-and-go.
func (r *run) streamed() *localReply {
	f, d := r.f, r.d
	fd := f.bodyMode(d) == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	r.doRelease()
	if len(r.held) > 0 || (r.ended && !r.hasTrail && !r.sentEarly) {
		// What was buffered while the headers reply was pending goes out
		// as one chunk.
		c := chunk{data: r.held, eos: r.ended && !r.hasTrail}
		r.held = nil
		if lr := r.sendChunk(c); lr != nil {
			return lr
		}
	}
	for {
		if !f.active(d) {
			for _, q := range r.queue {
				r.out(q.data)
			}
			r.queue = nil
			return r.passRest()
		}
		if f.obs && r.src == nil {
			return nil
		}
		// FULL_DUPLEX: trailers go out at once and their reply ends the
		// body; STREAMED: once every chunk has its reply.
		if r.hasTrail && !r.trailersSent && f.trailerMode(d) == extprocfilterv3.ProcessingMode_SEND && (fd || len(r.queue) == 0) {
			if lr := r.sendTrailers(); lr != nil {
				return lr
			}
		}
		if !fd && r.src == nil && len(r.queue) == 0 && !f.outstandingKind(trailersKind(d)) {
			return nil
		}
		ev := f.next(r.rq.ctx, d, r.src)
		switch {
		case ev.gotEOF:
			r.src = nil
		case ev.fail != nil:
			// Failing open (clearAsyncState), the chunks still queued and
			// the rest of the body pass unprocessed: the loop's top.
			if lr := r.fail(ev.fail); lr != nil {
				return lr
			}
		case ev.closed:
		case ev.resp == nil:
			if ev.chunk.err != nil {
				return r.codecError()
			}
			if lr := r.sendChunk(ev.chunk); lr != nil {
				return lr
			}
		case ev.resp.GetImmediateResponse() != nil:
			f.metadata(ev.resp)
			lr := f.immediate(ev.resp.GetImmediateResponse())
			if r.rq.released[dirResponse] {
				lr.details = "ext_proc_immediate_response_after_headers"
			}
			return lr
		case ev.kind != bodyKind(d) && ev.kind != trailersKind(d):
			return r.fail(f.spurious("reply of the other direction"))
		case ev.kind == trailersKind(d):
			f.metadata(ev.resp)
			if lr := r.applyTrailers(ev.resp); lr != nil {
				return lr
			}
			if fd {
				f.finishDirection(d)
				return nil
			}
		default:
			if ev.resp.GetModeOverride() != nil {
				r.rq.violation("mode_override in a body reply is ignored")
			}
			f.metadata(ev.resp)
			if fd {
				done, lr := r.piece(ev.resp)
				if lr != nil || done {
					return lr
				}
				continue
			}
			if common(ev.resp).GetBodyMutation().GetStreamedResponse() != nil {
				// handleStreamedBodyCallback: streamed_response is for
				// FULL_DUPLEX_STREAMED only; the chunk stays queued.
				if lr := r.fail(f.spurious("streamed_response outside FULL_DUPLEX_STREAMED")); lr != nil {
					return lr
				}
				continue
			}
			q := r.queue[0]
			r.queue = r.queue[1:]
			out := q.data
			if err := f.applyCommon(d, nil, common(ev.resp), false, &out, false); err != nil {
				return r.rq.mutationFailed(err)
			}
			f.closeIfLast(bodyKind(d), false, q.eos)
			r.out(out)
		}
	}
}

// piece applies one FULL_DUPLEX_STREAMED body reply: only
// streamed_response is valid; end_of_stream ends the body.
func (r *run) piece(resp *extprocv3.ProcessingResponse) (bool, *localReply) {
	c := common(resp)
	sr := c.GetBodyMutation().GetStreamedResponse()
	if c.GetBodyMutation() != nil && sr == nil {
		return false, r.fail(r.f.spurious("body or clear_body in FULL_DUPLEX_STREAMED: only streamed_response is valid"))
	}
	if hm := c.GetHeaderMutation(); len(hm.GetSetHeaders())+len(hm.GetRemoveHeaders()) > 0 {
		r.rq.violation("header mutation in a streamed body reply: the headers have gone, Envoy ignores it")
	}
	r.out(sr.GetBody())
	if sr.GetEndOfStream() {
		if r.hasTrail || r.src != nil {
			r.rq.violation("streamed_response end_of_stream before Envoy's end_of_stream: the rest of the body is lost")
		}
		r.f.finishDirection(r.d)
		r.f.closeIfLast(bodyKind(r.d), false, true)
		return true, nil
	}
	return false, nil
}

func (r *run) sendTrailers() *localReply {
	f, d := r.f, r.d
	r.trailersSent = true
	if fl := f.send(r.rq.ctx, trailersKind(d), message(trailersKind(d), r.trailers, nil, false)); fl != nil {
		return f.failed(fl)
	}
	return nil
}

func (r *run) applyTrailers(resp *extprocv3.ProcessingResponse) *localReply {
	if hm := trailerMutation(resp); hm != nil {
		mu := mutation{rules: r.f.rules, honourAppendAction: r.rq.p.opts.HonourAppendAction}
		out, err := mu.apply(&r.trailers, hm)
		r.rq.p.add("rejected_header_mutations", out.rejected)
		for _, v := range out.violations {
			r.rq.violation(v)
		}
		if err != nil {
			return r.rq.mutationFailed(err)
		}
	}
	r.f.closeIfLast(trailersKind(r.d), false, false)
	return nil
}

// trailerPhase sends the trailers (trailer mode SEND) once every earlier
// message of the direction has its reply, and applies the reply.
func (r *run) trailerPhase() *localReply {
	f, d := r.f, r.d
	if !r.hasTrail || !f.active(d) || f.trailerMode(d) != extprocfilterv3.ProcessingMode_SEND {
		return nil
	}
	if !r.trailersSent {
		if lr := r.sendTrailers(); lr != nil || f.obs {
			return lr
		}
	}
	for f.active(d) && f.outstandingKind(trailersKind(d)) {
		ev := f.next(r.rq.ctx, d, nil)
		switch {
		case ev.fail != nil:
			return r.fail(ev.fail)
		case ev.closed:
			return nil
		case ev.resp.GetImmediateResponse() != nil:
			f.metadata(ev.resp)
			return f.immediate(ev.resp.GetImmediateResponse())
		case ev.kind == trailersKind(d):
			f.metadata(ev.resp)
			return r.applyTrailers(ev.resp)
		}
	}
	return nil
}

// limit is the buffer limit of a direction. Envoy's filter manager has one
// buffer limit per stream, taken from the downstream connection (the
// listener's per_connection_buffer_limit_bytes): decoderBufferLimit and
// encoderBufferLimit both return it, so a BUFFERED response is capped by the
// listener too, not by the upstream cluster.
func (rq *request) limit(direction) int {
	return rq.p.cfg.bufferLimit
}
