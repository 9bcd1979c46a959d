package envoysim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

type direction int

const (
	dirRequest direction = iota
	dirResponse
)

func (d direction) String() string { return [...]string{"request", "response"}[d] }

type msgKind int

const (
	kindRequestHeaders msgKind = iota + 1
	kindRequestBody
	kindRequestTrailers
	kindResponseHeaders
	kindResponseBody
	kindResponseTrailers
)

func (k msgKind) dir() direction {
	if k >= kindResponseHeaders {
		return dirResponse
	}
	return dirRequest
}

func (k msgKind) String() string {
	return [...]string{"", "request_headers", "request_body", "request_trailers", "response_headers", "response_body", "response_trailers"}[k]
}

// replyKind is the kind of message a reply answers, 0 for none (empty
// oneof), -1 for immediate_response.
func replyKind(r *extprocv3.ProcessingResponse) msgKind {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return kindRequestHeaders
	case *extprocv3.ProcessingResponse_RequestBody:
		return kindRequestBody
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return kindRequestTrailers
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return kindResponseHeaders
	case *extprocv3.ProcessingResponse_ResponseBody:
		return kindResponseBody
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return kindResponseTrailers
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return -1
	}
	return 0
}

// failure is an ext_proc error, before failure_mode_allow decides.
type failure struct {
	status  int // 0: status_on_error
	details string
	// openable: failure_mode_allow may let the request continue.
	openable   bool
	clientGone bool
}

// localReply is a response Envoy makes itself.
type localReply struct {
	status  int
	details string
	header  Headers
	body    []byte
}

type recv struct {
	resp *extprocv3.ProcessingResponse
	err  error
}

// filter is one HTTP request's ext_proc filter: its gRPC stream, the
// effective processing mode, the outstanding messages and the timers.
type filter struct {
	rq       *request
	cfg      *extprocfilterv3.ExternalProcessor
	mode     *extprocfilterv3.ProcessingMode
	failOpen bool
	timeout  time.Duration
	rules    *rules

	stream  extprocv3.ExternalProcessor_ProcessClient
	cancel  context.CancelFunc
	replies chan recv
	sent    bool
	attrs   [2]bool
	// done: the stream is over; the rest of the request passes unprocessed.
	done bool
	// skip[dir]: CONTINUE_AND_REPLACE ended this direction's processing.
	skip     [2]bool
	pending  []msgKind
	timer    [2]Timer
	overrode [2]bool
	// obs: observability mode, send and go (doc §4.10).
	obs bool
	// headersDone[dir]: the headers reply of that direction has arrived.
	headersDone [2]bool
	// fdChunk: a FULL_DUPLEX_STREAMED chunk went out; from then on the
	// filter fails closed whatever failure_mode_allow says (§4.9).
	fdChunk bool
	// deferClose: in observability mode, close the stream only after
	// deferred_close_timeout.
	deferClose bool
}

func newFilter(rq *request, cfg *extprocfilterv3.ExternalProcessor, per *extprocfilterv3.ExtProcPerRoute) (*filter, error) {
	if per.GetDisabled() {
		return nil, nil
	}
	f := &filter{rq: rq, cfg: cfg, mode: proto.Clone(cfg.GetProcessingMode()).(*extprocfilterv3.ProcessingMode),
		failOpen: cfg.GetFailureModeAllow(), timeout: 200 * time.Millisecond, obs: cfg.GetObservabilityMode(), deferClose: true}
	if f.mode == nil {
		f.mode = &extprocfilterv3.ProcessingMode{}
	}
	if o := per.GetOverrides(); o != nil {
		if o.GetProcessingMode() != nil {
			f.mode = proto.Clone(o.GetProcessingMode()).(*extprocfilterv3.ProcessingMode)
		}
		if o.GetFailureModeAllow() != nil {
			f.failOpen = o.GetFailureModeAllow().GetValue()
		}
	}
	// In the filter config DEFAULT means headers SEND, trailers SKIP.
	for _, m := range []*extprocfilterv3.ProcessingMode_HeaderSendMode{&f.mode.RequestHeaderMode, &f.mode.ResponseHeaderMode} {
		if *m == extprocfilterv3.ProcessingMode_DEFAULT {
			*m = extprocfilterv3.ProcessingMode_SEND
		}
	}
	for _, m := range []*extprocfilterv3.ProcessingMode_HeaderSendMode{&f.mode.RequestTrailerMode, &f.mode.ResponseTrailerMode} {
		if *m == extprocfilterv3.ProcessingMode_DEFAULT {
			*m = extprocfilterv3.ProcessingMode_SKIP
		}
	}
	if cfg.GetMessageTimeout() != nil {
		f.timeout = cfg.GetMessageTimeout().AsDuration()
	}
	var err error
	if f.rules, err = newRules(cfg.GetMutationRules()); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *filter) headerMode(d direction) extprocfilterv3.ProcessingMode_HeaderSendMode {
	if d == dirRequest {
		return f.mode.GetRequestHeaderMode()
	}
	return f.mode.GetResponseHeaderMode()
}

func (f *filter) bodyMode(d direction) extprocfilterv3.ProcessingMode_BodySendMode {
	if d == dirRequest {
		return f.mode.GetRequestBodyMode()
	}
	return f.mode.GetResponseBodyMode()
}

func (f *filter) trailerMode(d direction) extprocfilterv3.ProcessingMode_HeaderSendMode {
	if d == dirRequest {
		return f.mode.GetRequestTrailerMode()
	}
	return f.mode.GetResponseTrailerMode()
}

func (f *filter) observing() bool { return f != nil && f.obs }

// early: body chunks go out while the headers reply is pending.
func (f *filter) early(d direction) bool {
	switch f.bodyMode(d) {
	case extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return true
	case extprocfilterv3.ProcessingMode_STREAMED:
		return f.cfg.GetSendBodyWithoutWaitingForHeaderResponse()
	}
	return false
}

// noTimer: no message timer runs in observability mode or in
// FULL_DUPLEX_STREAMED (doc §4.8).
func (f *filter) noTimer(d direction) bool {
	return f.obs || f.bodyMode(d) == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
}

// finishDirection: a FULL_DUPLEX_STREAMED direction has its whole body.
func (f *filter) finishDirection(d direction) { f.skip[d] = true }

// active: messages of this direction go to the processor.
func (f *filter) active(d direction) bool { return f != nil && !f.done && !f.skip[d] }

// stripsContentLength: the body mode makes Envoy drop content-length and
// skip it in mutations (doc §4.3).
func (f *filter) stripsContentLength(d direction) bool {
	if f == nil || f.cfg.GetAllowContentLengthHeader() {
		return false
	}
	switch f.bodyMode(d) {
	case extprocfilterv3.ProcessingMode_STREAMED, extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL, extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return true
	case extprocfilterv3.ProcessingMode_BUFFERED:
		return f.headerMode(d) == extprocfilterv3.ProcessingMode_SKIP
	}
	return false
}

// open starts the gRPC stream lazily, with the first message.
func (f *filter) open(ctx context.Context) *failure {
	if f.stream != nil {
		return nil
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st, err := f.rq.p.procClient.Process(sctx)
	if err != nil {
		cancel()
		return &failure{details: grpcDetails(err), openable: true}
	}
	f.rq.p.count("streams_started")
	f.stream, f.cancel = st, cancel
	if f.obs {
		// Envoy ignores every reply in observability mode.
		go func() {
			for {
				resp, err := st.Recv()
				if err != nil {
					return
				}
				f.rq.trace(false, resp)
			}
		}()
		return nil
	}
	f.replies = make(chan recv, 16)
	go func() {
		for {
			resp, err := st.Recv()
			f.replies <- recv{resp, err}
			if err != nil {
				return
			}
		}
	}()
	return nil
}

func grpcDetails(err error) string {
	s := status.Convert(err)
	return "ext_proc_error_gRPC_error_" + strconv.Itoa(int(s.Code())) + "{" + replaceAllEmptySpace(s.Message()) + "}"
}

// replaceAllEmptySpace is Envoy's StringUtil::replaceAllEmptySpace, which a
// local reply's details go through: each space, tab, form feed, vertical
// tab, newline or carriage return becomes "_", one for one.
func replaceAllEmptySpace(s string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune(" \t\f\v\n\r", r) {
			return '_'
		}
		return r
	}, s)
}

// send sends one message that expects a reply and (re)starts its timer.
func (f *filter) send(ctx context.Context, kind msgKind, req *extprocv3.ProcessingRequest) *failure {
	if fl := f.open(ctx); fl != nil {
		return fl
	}
	if f.obs {
		req.ObservabilityMode = true
		f.sent = true // protocol_config is never sent in observability mode
	}
	if !f.sent {
		req.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:                         f.mode.GetRequestBodyMode(),
			ResponseBodyMode:                        f.mode.GetResponseBodyMode(),
			SendBodyWithoutWaitingForHeaderResponse: f.cfg.GetSendBodyWithoutWaitingForHeaderResponse(),
		}
		f.sent = true
	}
	req.MetadataContext = &corev3.Metadata{}
	d := kind.dir()
	if !f.attrs[d] {
		f.attrs[d] = true
		if a := f.attributes(d); a != nil {
			req.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": a}
		}
	}
	f.rq.trace(true, req)
	if err := f.stream.Send(req); err != nil {
		if f.obs {
			// Send and go: a broken stream loses data silently.
			f.finish()
			return nil
		}
		// The server is gone; its status comes with the next Recv.
		return f.drainError()
	}
	if f.obs || (kind == bodyKind(d) && f.bodyMode(d) == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED) {
		// Send and go; FULL_DUPLEX chunks have no reply of their own.
		return nil
	}
	f.pending = append(f.pending, kind)
	if !f.noTimer(d) {
		f.startTimer(d, f.timeout)
	}
	return nil
}

func (f *filter) drainError() *failure {
	for r := range f.replies {
		if r.err != nil {
			return &failure{details: grpcDetails(r.err), openable: true}
		}
	}
	return &failure{details: "ext_proc_error_gRPC_error_14{stream_closed}", openable: true}
}

func (f *filter) attributes(d direction) *structpb.Struct {
	names := f.cfg.GetRequestAttributes()
	if d == dirResponse {
		names = f.cfg.GetResponseAttributes()
	}
	if len(names) == 0 {
		return nil
	}
	h := f.rq.reqHeaders
	known := map[string]string{"xds.route_name": f.rq.route.name}
	for k, hk := range map[string]string{"request.id": "x-request-id", "request.path": ":path", "request.method": ":method", "request.host": ":authority"} {
		known[k], _ = h.Get(hk)
	}
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, n := range names {
		if v, ok := known[n]; ok {
			st.Fields[n] = structpb.NewStringValue(v)
		}
	}
	return st
}

func (f *filter) startTimer(d direction, after time.Duration) {
	if f.timer[d] != nil {
		f.timer[d].Stop()
	}
	f.timer[d] = f.rq.p.clock.NewTimer(after)
	f.overrode[d] = false
}

func (f *filter) stopTimer(d direction) {
	if f.timer[d] != nil {
		f.timer[d].Stop()
		f.timer[d] = nil
	}
}

func (f *filter) timerC(d direction) <-chan time.Time {
	if f.timer[d] == nil {
		return nil
	}
	return f.timer[d].C()
}

func (f *filter) outstandingKind(k msgKind) bool { return slices.Contains(f.pending, k) }

func (f *filter) outstanding(d direction) bool {
	for _, k := range f.pending {
		if k.dir() == d {
			return true
		}
	}
	return false
}

// event is what next returns: a matched reply, a failure, the end of
// processing (the server closed with OK), or a chunk from extra.
type event struct {
	resp   *extprocv3.ProcessingResponse
	kind   msgKind // what resp answers
	fail   *failure
	closed bool
	chunk  chunk
	gotEOF bool // extra was closed
}

type chunk struct {
	data []byte
	eos  bool
	err  error
	// trailers end the body in place of end_of_stream.
	trailers Headers
}

// next waits for the next reply of direction d (or a chunk from extra).
func (f *filter) next(ctx context.Context, d direction, extra <-chan chunk) event {
	for {
		select {
		case r := <-f.replies:
			if r.err != nil {
				f.stopTimer(dirRequest)
				f.stopTimer(dirResponse)
				if errors.Is(r.err, io.EOF) {
					// Status OK: Envoy stops consulting the server.
					f.rq.p.count("streams_closed_ok")
					f.rq.violation("the processor ended the stream with OK while Envoy still expected replies: the rest passes unprocessed")
					f.finish()
					return event{closed: true}
				}
				return event{fail: &failure{details: grpcDetails(r.err), openable: true}}
			}
			f.rq.trace(false, r.resp)
			if ev, ok := f.match(r.resp); ok {
				return ev
			}
		case <-f.timerC(d):
			f.timer[d] = nil
			f.rq.p.count("message_timeouts")
			return event{fail: &failure{status: http.StatusGatewayTimeout, details: "ext_proc_error_per-message_timeout_exceeded", openable: true}}
		case c, ok := <-extra:
			if !ok {
				return event{gotEOF: true}
			}
			return event{chunk: c}
		case <-ctx.Done():
			return event{fail: &failure{clientGone: true}}
		}
	}
}

// match checks a reply against the oldest outstanding message. ok false:
// the reply was consumed (a timeout override) and the wait goes on.
func (f *filter) match(resp *extprocv3.ProcessingResponse) (event, bool) {
	if t := resp.GetOverrideMessageTimeout(); t != nil {
		d := dirRequest
		if len(f.pending) > 0 {
			d = f.pending[0].dir()
		}
		max := f.cfg.GetMaxMessageTimeout().AsDuration()
		if v := t.AsDuration(); v >= time.Millisecond && v <= max && f.timer[d] != nil && !f.overrode[d] {
			f.startTimer(d, v)
			f.overrode[d] = true
		} else {
			f.rq.p.count("override_message_timeout_ignored")
			f.rq.violation("override_message_timeout ignored (out of range, no timer running, or not the first)")
		}
		return event{}, false
	}
	k := replyKind(resp)
	if k == 0 && resp.GetModeOverride() != nil {
		// The standalone override of newer Envoy is not simulated: older
		// Envoy counts it spurious.
		k = 0
	}
	if (k == kindRequestBody || k == kindResponseBody) && f.bodyMode(k.dir()) == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED && f.active(k.dir()) {
		// Any number of streamed_response pieces; not matched to a chunk.
		return event{resp: resp, kind: k}, true
	}
	if len(f.pending) == 0 || k == 0 || (k > 0 && k != f.pending[0]) {
		return event{fail: f.spurious(fmt.Sprintf("reply %v while waiting for %v", k, f.pending))}, true
	}
	if k == -1 && f.cfg.GetDisableImmediateResponse() {
		return event{fail: f.spurious("immediate_response with disable_immediate_response")}, true
	}
	kind := f.pending[0]
	f.pending = f.pending[1:]
	d := kind.dir()
	if f.outstanding(d) && !f.noTimer(d) {
		f.startTimer(d, f.timeout)
	} else {
		f.stopTimer(d)
	}
	return event{resp: resp, kind: kind}, true
}

func (f *filter) spurious(what string) *failure {
	f.rq.p.count("spurious_msgs_received")
	f.rq.violation("spurious reply: " + what)
	if f.rq.p.opts.SpuriousFailOpen {
		return &failure{details: "ext_proc_spurious_ignored", openable: true, status: -1}
	}
	return &failure{details: "ext_proc_error_spurious_message", openable: true}
}

// failed turns a failure into a local reply, or nil when the request goes
// on unprocessed (failure_mode_allow, or a spurious reply with the
// fail-close flag off).
func (f *filter) failed(fl *failure) *localReply {
	f.finish()
	if fl.clientGone {
		return nil
	}
	if fl.status == -1 {
		// A spurious reply with the fail-close flag off is let through
		// like failure_mode_allow, and counted the same way.
		f.rq.p.count("failure_mode_allowed")
		return nil
	}
	if fl.openable && f.failOpen && !f.fdChunk {
		f.rq.p.count("failure_mode_allowed")
		return nil
	}
	st := fl.status
	if st == 0 {
		st = f.statusOnError()
	}
	return &localReply{status: st, details: fl.details}
}

func (f *filter) statusOnError() int {
	if c := f.cfg.GetStatusOnError().GetCode(); c != 0 {
		return int(c)
	}
	return http.StatusInternalServerError
}

// finish ends processing: nothing more is sent; the stream is closed.
func (f *filter) finish() {
	if f == nil || f.done {
		return
	}
	f.done = true
	f.pending = nil
	f.stopTimer(dirRequest)
	f.stopTimer(dirResponse)
	f.closeStream()
}

// noExternal is Envoy's noExternalProcess for a direction: neither its
// headers, nor its body, nor its trailers go to the processor.
func (f *filter) noExternal(d direction) bool {
	return f.skip[d] || f.headerMode(d) != extprocfilterv3.ProcessingMode_SEND &&
		f.bodyMode(d) == extprocfilterv3.ProcessingMode_NONE && f.trailerMode(d) != extprocfilterv3.ProcessingMode_SEND
}

// noBodyOrTrailers: after its headers, nothing of the direction goes to
// the processor (body NONE, trailers not SEND; CONTINUE_AND_REPLACE turns
// both off).
func (f *filter) noBodyOrTrailers(d direction) bool {
	return f.skip[d] || f.bodyMode(d) == extprocfilterv3.ProcessingMode_NONE && f.trailerMode(d) != extprocfilterv3.ProcessingMode_SEND
}

// closeIfLast is Envoy's closeGrpcStreamIfLastRespReceived (runtime flag
// ext_proc_stream_close_optimization, on by default since 1.37): after a
// reply is applied, the stream is closed if it answered the last message
// Envoy will send. That is the request headers reply when the request has
// no body (noBody) or sends no body or trailers, the reply to the request
// body's last chunk (lastBody: STREAMED end_of_stream, FULL_DUPLEX
// streamed_response end_of_stream; never BUFFERED), or the request trailers
// reply, each only if the response goes unprocessed; the response headers
// reply when the response has no body or sends no body or trailers; the
// reply to the response body's last chunk; the response trailers reply.
func (f *filter) closeIfLast(k msgKind, noBody, lastBody bool) {
	if f == nil || f.done || f.stream == nil || f.obs || f.rq.p.opts.NoStreamCloseOptimization {
		return
	}
	var last bool
	switch k {
	case kindRequestHeaders:
		last = (noBody || f.noBodyOrTrailers(dirRequest)) && f.noExternal(dirResponse)
	case kindRequestBody:
		last = lastBody && f.noExternal(dirResponse)
	case kindRequestTrailers:
		last = f.noExternal(dirResponse)
	case kindResponseHeaders:
		last = noBody || f.noBodyOrTrailers(dirResponse)
	case kindResponseBody:
		last = lastBody
	case kindResponseTrailers:
		last = true
	}
	if last {
		f.finish()
	}
}

// closeIfNoResponseProcessing is the end of Envoy's encodeHeaders: when
// nothing of the response goes to the processor, the stream is closed
// there (immediately, in observability mode too).
func (f *filter) closeIfNoResponseProcessing() {
	if f == nil || f.done || !f.noExternal(dirResponse) {
		return
	}
	f.deferClose = false
	f.finish()
}

// closeStream closes the stream as Envoy's closeStreamMaybeGraceful does.
// Without ext_proc_graceful_grpc_close (the default) it half-closes and
// resets at once (ExternalProcessorStreamImpl::close: closeStream, then
// resetStream), so the server sees EOF or CANCELLED, whichever it reads
// first. With it, it half-closes and lets the server end the stream, with a
// reset after the remote close timeout (1 s); the request does not wait.
func (f *filter) closeStream() {
	if f.stream == nil {
		return
	}
	st, cancel, p := f.stream, f.cancel, f.rq.p
	f.stream = nil
	if f.obs && f.deferClose {
		// Observability mode defers the close when the HTTP stream ends so
		// that the server can drain (deferred_close_timeout, default 5 s);
		// the timer then closes it (DeferredDeletableStream: close, reset).
		after := 5 * time.Second
		if d := f.cfg.GetDeferredCloseTimeout(); d != nil {
			after = d.AsDuration()
		}
		t := p.clock.NewTimer(after)
		go func() {
			defer t.Stop()
			select {
			case <-t.C():
			case <-p.closing:
			}
			_ = st.CloseSend()
			cancel()
			p.count("streams_closed")
		}()
		return
	}
	_ = st.CloseSend()
	p.count("streams_closed")
	if !p.opts.GracefulClose || f.replies == nil {
		cancel()
		return
	}
	replies := f.replies
	go func() {
		defer cancel()
		t := time.NewTimer(remoteCloseTimeout)
		defer t.Stop()
		for {
			select {
			case r := <-replies:
				if r.err != nil {
					return
				}
			case <-t.C:
				return
			case <-p.closing:
				return
			}
		}
	}()
}

// remoteCloseTimeout is Envoy's runtime
// envoy.filters.http.ext_proc.remote_close_timeout_milliseconds default:
// how long a graceful close waits for the server to end the stream.
const remoteCloseTimeout = time.Second

// applyCommon applies a headers or body reply's CommonResponse to the
// direction's headers (and, for a body reply, its body unit), and returns
// a mutation error. checkCL: a body mutation must match the content-length
// the headers still carry (Envoy's validateContentLength, which the
// buffered body callback runs whatever the body mode).
func (f *filter) applyCommon(d direction, h *Headers, common *extprocv3.CommonResponse, headersReply bool, body *[]byte, checkCL bool) error {
	if common == nil {
		return nil
	}
	mu := mutation{rules: f.rules, stripCL: f.stripsContentLength(d), honourAppendAction: f.rq.p.opts.HonourAppendAction,
		routingAllowed: common.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE}
	hm := common.GetHeaderMutation()
	if !headersReply && hm != nil && f.bodyMode(d) == extprocfilterv3.ProcessingMode_STREAMED && f.rq.headersSent(d) {
		if len(hm.GetSetHeaders())+len(hm.GetRemoveHeaders()) > 0 {
			f.rq.violation("header mutation in a streamed body reply: the headers have gone, Envoy ignores it")
		}
		hm = nil
	}
	if h == nil {
		hm = nil
	}
	if hm != nil {
		out, err := mu.apply(h, hm)
		f.rq.p.add("rejected_header_mutations", out.rejected)
		for _, v := range out.violations {
			f.rq.violation(v)
		}
		if err != nil {
			return err
		}
	}
	if common.GetClearRouteCache() {
		f.clearRouteCache(d, hm != nil)
	}
	bm := common.GetBodyMutation()
	if bm == nil || body == nil {
		if bm != nil && headersReply && common.GetStatus() != extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
			f.rq.violation("body_mutation in a headers reply without CONTINUE_AND_REPLACE is ignored")
		}
		return nil
	}
	// Envoy's validateContentLength compares with body_mutation.body(),
	// empty for clear_body and for streamed_response.
	var mutated []byte
	switch m := bm.GetMutation().(type) {
	case *extprocv3.BodyMutation_Body:
		mutated = m.Body
	case *extprocv3.BodyMutation_ClearBody:
		if !m.ClearBody {
			return nil
		}
	case *extprocv3.BodyMutation_StreamedResponse:
		// A buffered body callback checks the length, then applies
		// nothing: applyBodyMutations has no case for it. (The STREAMED
		// callback calls it spurious: see run.streamed.)
		f.rq.violation("streamed_response outside FULL_DUPLEX_STREAMED: Envoy ignores it")
	default:
		return nil
	}
	// Headers held: the content-length, if they still have one, must match
	// the new body.
	if h != nil && checkCL {
		if cl, ok := h.Get("content-length"); ok && !f.rq.headersSent(d) && cl != strconv.Itoa(len(mutated)) {
			return fmt.Errorf("content-length %s does not match the mutated body of %d bytes", cl, len(mutated))
		}
	}
	if bm.GetStreamedResponse() == nil {
		*body = mutated
	}
	return nil
}

// clearRouteCache follows doc §4.6.
func (f *filter) clearRouteCache(d direction, withMutation bool) {
	switch {
	case d == dirResponse || !withMutation:
		f.rq.p.count("clear_route_cache_ignored")
		f.rq.violation("clear_route_cache ignored (response path, or no header mutation in the same reply)")
		return
	case f.cfg.GetDisableClearRouteCache() || f.cfg.GetRouteCacheAction() == extprocfilterv3.ExternalProcessor_RETAIN:
		f.rq.p.count("clear_route_cache_disabled")
		return
	}
	f.rq.rematch = true
}

// modeOverride applies a mode_override riding on a headers reply (§4.7).
func (f *filter) modeOverride(resp *extprocv3.ProcessingResponse, headersReply bool) {
	o := resp.GetModeOverride()
	if o == nil {
		return
	}
	base := f.cfg.GetProcessingMode()
	if !headersReply || !f.cfg.GetAllowModeOverride() || f.cfg.GetSendBodyWithoutWaitingForHeaderResponse() ||
		base.GetRequestBodyMode() == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		base.GetResponseBodyMode() == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		f.rq.violation("mode_override ignored: not in a headers reply, or the filter does not allow overrides")
		return
	}
	eff := proto.Clone(base).(*extprocfilterv3.ProcessingMode)
	for _, p := range []struct {
		dst *extprocfilterv3.ProcessingMode_HeaderSendMode
		src extprocfilterv3.ProcessingMode_HeaderSendMode
	}{
		{&eff.RequestHeaderMode, o.GetRequestHeaderMode()}, {&eff.ResponseHeaderMode, o.GetResponseHeaderMode()},
		{&eff.RequestTrailerMode, o.GetRequestTrailerMode()}, {&eff.ResponseTrailerMode, o.GetResponseTrailerMode()},
	} {
		if p.src != extprocfilterv3.ProcessingMode_DEFAULT {
			*p.dst = p.src
		}
	}
	eff.RequestBodyMode, eff.ResponseBodyMode = o.GetRequestBodyMode(), o.GetResponseBodyMode()
	if allowed := f.cfg.GetAllowedOverrideModes(); len(allowed) > 0 {
		ok := false
		for _, a := range allowed {
			if a.GetRequestBodyMode() == eff.GetRequestBodyMode() && a.GetRequestTrailerMode() == eff.GetRequestTrailerMode() &&
				a.GetResponseHeaderMode() == eff.GetResponseHeaderMode() && a.GetResponseBodyMode() == eff.GetResponseBodyMode() &&
				a.GetResponseTrailerMode() == eff.GetResponseTrailerMode() {
				ok = true
			}
		}
		if !ok {
			f.rq.violation("mode_override ignored: the effective mode is not in allowed_override_modes")
			return
		}
	}
	f.mode = eff
}

// metadata keeps the namespaces the filter may receive (§4.5).
func (f *filter) metadata(resp *extprocv3.ProcessingResponse) {
	allowed := map[string]bool{}
	for _, ns := range f.cfg.GetMetadataOptions().GetReceivingNamespaces().GetUntyped() {
		allowed[ns] = true
	}
	for ns, v := range resp.GetDynamicMetadata().GetFields() {
		if !allowed[ns] || v.GetStructValue() == nil {
			f.rq.p.count("dynamic_metadata_dropped")
			continue
		}
		f.rq.rec.setMetadata(ns, v.GetStructValue())
	}
}

// immediate builds the local reply of an immediate_response (§4.10).
func (f *filter) immediate(ir *extprocv3.ImmediateResponse) *localReply {
	f.finish()
	st := int(ir.GetStatus().GetCode())
	if st < 200 {
		st = 200
	}
	// The headers are Envoy's modify_headers callback of sendLocalReply:
	// they start from :status alone; the local reply adds content-type and
	// content-length afterwards (localReplyHeaders).
	lr := &localReply{status: st, details: replaceAllEmptySpace(ir.GetDetails()), body: ir.GetBody()}
	mu := mutation{rules: f.rules}
	out, err := mu.apply(&lr.header, ir.GetHeaders())
	f.rq.p.add("rejected_header_mutations", out.rejected)
	for _, v := range out.violations {
		f.rq.violation(v)
	}
	if err != nil {
		// Logged by Envoy; the reply still goes out.
		f.rq.violation("immediate_response headers: " + err.Error())
	}
	return lr
}
