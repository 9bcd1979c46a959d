package extproc

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/envoyhdr"
)

type phase int

const (
	phaseStart    phase = iota // no request headers yet
	phaseNeedBody              // request headers accepted, body awaited
	phaseUpstream              // the request went upstream
	phaseResponse              // response headers handled
	phaseDone                  // answered by the gateway, or response complete
)

// stream is one HTTP request as Envoy reports it on one gRPC stream. Its
// methods run on the stream's goroutine only.
type stream struct {
	gw  *gateway.Gateway
	ctx context.Context
	ids *gateway.RequestIDs
	x   *gateway.Exchange

	phase phase
	// Body modes from the first message's protocol_config. Without one
	// (older Envoy) the documented config is assumed: both BUFFERED.
	reqMode, respMode extprocfilterv3.ProcessingMode_BodySendMode
	configured        bool
	// respChunks is set once response bodies arrive chunk by chunk.
	respChunks bool
	// client is the request's headers as Envoy sent them (pseudo-headers
	// left out); path is its :path.
	client gateway.Headers
	path   string
	// ended is how the exchange ends if the response never completes.
	ended gateway.End
	// published: the request id has gone out as dynamic metadata.
	published bool
	// lent is the metadata of the answer being sent, back to its pool once
	// sent (see sent).
	lent *requestMetadata
	// immediate is the gateway's own answer to the request, once it gave
	// one.
	immediate *extprocv3.ImmediateResponse
	// releasing: the answer being sent lets the request go upstream.
	releasing bool
}

func newStream(gw *gateway.Gateway, ctx context.Context, ids *gateway.RequestIDs) *stream {
	return &stream{
		gw: gw, ctx: ctx, ids: ids, ended: gateway.ClientGone,
		reqMode: extprocfilterv3.ProcessingMode_BUFFERED, respMode: extprocfilterv3.ProcessingMode_BUFFERED,
	}
}

func (st *stream) id() string {
	if st.x == nil {
		return ""
	}
	return st.x.ID()
}

// closed records why the stream ended, unless the exchange already did.
func (st *stream) closed(how gateway.End) {
	if st.phase != phaseDone {
		st.ended = how
	}
}

// settle hands the exchange's usage record over, once. A stream that never
// carried request headers (a local reply of an earlier filter passing
// through) is not a request of ours and records nothing.
func (st *stream) settle() {
	if st.x == nil {
		return
	}
	how := st.ended
	if st.phase == phaseDone {
		how = gateway.Completed
	}
	st.x.Settle(how)
}

// handle answers one message; nil means no answer is expected. The first
// answer for a request of ours publishes its id (see requestMetadata).
func (st *stream) handle(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	if pc := req.GetProtocolConfig(); pc != nil && !st.configured {
		st.reqMode, st.respMode, st.configured = pc.GetRequestBodyMode(), pc.GetResponseBodyMode(), true
	}
	before := st.phase
	resp := st.answer(req)
	st.releasing = before < phaseUpstream && st.phase == phaseUpstream
	if resp != nil && st.x != nil && !st.published {
		m := metadataPool.Get().(*requestMetadata)
		m.id.StringValue = st.x.ID()
		resp.DynamicMetadata, st.lent = m.msg, m
		st.published = true
	}
	return resp
}

// unsent is told that handle's answer could not be sent: Envoy reset the
// stream meanwhile (its message timer fired on a slow answer, or the client
// left). An answer that would have released the request means the request
// never went upstream.
func (st *stream) unsent() {
	if st.releasing {
		st.x.Unsent()
	}
	st.closed(gateway.ClientGone)
}

// sent is told that handle's answer has been marshalled (sent or dropped),
// so the metadata it carried can serve the next request.
func (st *stream) sent() {
	if m := st.lent; m != nil {
		m.id.StringValue = ""
		metadataPool.Put(m)
		st.lent = nil
	}
}

// requestMetadata is the dynamic metadata Envoy keeps for a request, under
// MetadataNamespace: the gateway's request id, the key of its usage record,
// so that the sidecar's access log line joins the ledger (the client's
// x-request-id is not sent upstream, and the gateway makes its own ids
// anyway). Never a prompt, a completion, a token or a key. Only the id
// changes from one request to the next, so the messages and maps are
// pooled rather than built for each.
type requestMetadata struct {
	msg *structpb.Struct
	id  *structpb.Value_StringValue
}

var metadataPool = sync.Pool{New: func() any {
	id := &structpb.Value_StringValue{}
	return &requestMetadata{id: id, msg: &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"request_id": {Kind: id},
		}}),
	}}}
}}

// answer is the reply to one message.
func (st *stream) answer(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return st.requestHeaders(r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		return st.requestBody(r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return st.responseHeaders(r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		return st.responseBody(r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		// Trailers follow the last body chunk.
		if st.phase == phaseUpstream || st.phase == phaseResponse {
			st.x.ResponseBody(nil, true)
			st.phase = phaseDone
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	return nil // flow-control messages: not implemented by Envoy, nothing awaited
}

func (st *stream) requestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if st.x != nil {
		// One request per stream: a second set of headers is no Envoy
		// behaviour, and nothing may pass unprocessed.
		return st.duplicateHeaders()
	}
	st.x = st.gw.NewExchange(st.ctx, st.ids.Next())
	var method string
	hs := h.GetHeaders().GetHeaders()
	st.client = make(gateway.Headers, 0, len(hs))
	for _, hv := range hs {
		v := value(hv)
		switch {
		case hv.Key == ":method":
			method = v
		case hv.Key == ":path":
			st.path = v
		case strings.HasPrefix(hv.Key, ":"):
		default:
			st.client = append(st.client, gateway.Header{Name: hv.Key, Value: v})
		}
	}
	out := st.x.RequestHeaders(method, st.path, st.client)
	if out.Action == gateway.NeedBody {
		switch {
		case h.GetEndOfStream():
			out = st.x.RequestBody(nil)
		case st.reqMode != extprocfilterv3.ProcessingMode_BUFFERED &&
			st.reqMode != extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL:
			// The gateway reads the whole body before anything goes
			// upstream; any other mode would let the request pass unread.
			return st.fail("The gateway's Envoy filter must buffer request bodies (request_body_mode BUFFERED).")
		default:
			st.phase = phaseNeedBody
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
				RequestHeaders: &extprocv3.HeadersResponse{}}}
		}
	}
	if out.Action == gateway.Respond {
		return st.respond(out.Response)
	}
	// A bodiless request going upstream: the headers reply carries it all.
	common := &extprocv3.CommonResponse{HeaderMutation: st.upstreamHeaders(out.Upstream)}
	if len(out.Upstream.Body) > 0 {
		common.Status = extprocv3.CommonResponse_CONTINUE_AND_REPLACE
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out.Upstream.Body}}
	}
	st.phase = phaseUpstream
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: common}}}
}

func (st *stream) requestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	switch st.phase {
	case phaseNeedBody:
	case phaseStart:
		// Request headers SKIP: the request cannot be authenticated.
		st.x = st.gw.NewExchange(st.ctx, st.ids.Next())
		return st.fail("The gateway's Envoy filter must send request headers (request_header_mode SEND).")
	case phaseDone:
		if st.immediate != nil {
			// Envoy sends nothing after an immediate response, unless it
			// ignored it (a message in observability mode): a body now
			// belongs to a request the gateway answered, which must not
			// go on. (A new envelope: the first one's metadata went
			// back to its pool once sent.)
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
				ImmediateResponse: st.immediate}}
		}
		fallthrough
	default:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{}}}
	}
	if st.reqMode == extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL && !b.GetEndOfStream() {
		// Envoy's buffer filled up; the rest would pass unread.
		return st.respond(st.x.Reject(st.x.TooLarge()))
	}
	body := b.GetBody()
	out := st.x.RequestBody(body)
	if out.Action != gateway.Forward {
		return st.respond(out.Response)
	}
	hm := st.upstreamHeaders(out.Upstream)
	common := &extprocv3.CommonResponse{HeaderMutation: hm}
	if !bytes.Equal(out.Upstream.Body, body) {
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out.Upstream.Body}}
		// A buffered body keeps its content-length, which Envoy checks
		// against the new body; the other modes strip it.
		if st.reqMode == extprocfilterv3.ProcessingMode_BUFFERED {
			hm.SetHeaders = append(hm.SetHeaders, envoyhdr.Set("content-length", strconv.Itoa(len(out.Upstream.Body)), false))
		}
	}
	st.phase = phaseUpstream
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: common}}}
}

// upstreamHeaders rewrites the client's headers into the upstream request's:
// the gateway's headers set, every other client header removed (Envoy
// refuses to remove pseudo-headers, host and x-envoy-*; it manages
// content-length and transfer-encoding itself), and :path set when the
// route's prefix rewrite alone would not give the upstream path.
func (st *stream) upstreamHeaders(up gateway.UpstreamRequest) *extprocv3.HeaderMutation {
	m := &extprocv3.HeaderMutation{
		SetHeaders:    make([]*corev3.HeaderValueOption, 0, len(up.Header)+2),
		RemoveHeaders: make([]string, 0, len(st.client)),
	}
	for i, h := range up.Header {
		name := strings.ToLower(h.Name)
		m.SetHeaders = append(m.SetHeaders, envoyhdr.Set(name, h.Value, envoyhdr.Has(up.Header[:i], name)))
	}
	if p, ok := routedPath(st.path, up.Path); ok {
		m.SetHeaders = append(m.SetHeaders, envoyhdr.Set(":path", p, false))
	}
	for _, h := range st.client {
		name := strings.ToLower(h.Name)
		if envoyhdr.Kept(name) || envoyhdr.Has(up.Header, name) || slices.Contains(m.RemoveHeaders, name) {
			continue
		}
		m.RemoveHeaders = append(m.RemoveHeaders, name)
	}
	return m
}

// routedPath returns the :path from which the route's rewrite gives
// upstream (the gateway's prefix-less upstream path), and ok false when the
// client's :path already does. The sidecar's provider route matched the
// client's first segment ("/gemini/") and strips it with prefix_rewrite
// "/"; the route cache is retained, and the router cuts that many bytes off
// whatever :path is by then. So the processor never strips the prefix
// itself: it keeps it and changes only what follows (a dropped key
// parameter, a renamed model).
func routedPath(client, upstream string) (path string, ok bool) {
	prefix := gateway.RoutePrefix(client)
	if client[len(prefix):] == upstream {
		return "", false
	}
	return prefix + upstream, true
}

func (st *stream) responseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if st.phase != phaseUpstream {
		// Not a response to a request we sent upstream (a local reply of
		// an earlier filter): it passes unchanged.
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{}}}
	}
	hs := h.GetHeaders().GetHeaders()
	in := make(gateway.Headers, 0, len(hs))
	code := 0
	for _, hv := range hs {
		v := value(hv)
		switch {
		case hv.Key == ":status":
			code, _ = strconv.Atoi(v)
		case strings.HasPrefix(hv.Key, ":"):
		default:
			in = append(in, gateway.Header{Name: hv.Key, Value: v})
		}
	}
	// ResponseHeaders filters its argument in place; keep the original.
	out := st.x.ResponseHeaders(code, append(make(gateway.Headers, 0, len(in)+4), in...))
	if r, ok := st.x.Replacement(); ok {
		// The headers are still held: the gateway's answer replaces the
		// upstream response (§4.10 of Envoy's ext_proc behaviour).
		return st.respond(r)
	}
	hr := &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: headerDiff(in, out)}}
	resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
	st.phase = phaseResponse
	switch {
	case h.GetEndOfStream():
		st.x.ResponseBody(nil, true)
		st.phase = phaseDone
	case st.x.Streaming() && st.respMode != extprocfilterv3.ProcessingMode_STREAMED:
		// A stream must reach the client chunk by chunk.
		resp.ModeOverride = StreamingOverride()
		st.respChunks = true
	default:
		st.respChunks = st.respMode != extprocfilterv3.ProcessingMode_BUFFERED
	}
	return resp
}

// headerDiff is the mutation that turns in into out: names that are gone
// removed, names whose values changed set (repeated values appended).
func headerDiff(in, out gateway.Headers) *extprocv3.HeaderMutation {
	m := &extprocv3.HeaderMutation{}
	for _, h := range in {
		name := strings.ToLower(h.Name)
		if !envoyhdr.Has(out, name) && !slices.Contains(m.RemoveHeaders, name) {
			m.RemoveHeaders = append(m.RemoveHeaders, name)
		}
	}
	for i, h := range out {
		if envoyhdr.Has(out[:i], h.Name) || sameValues(in, out, h.Name) {
			continue
		}
		name := strings.ToLower(h.Name)
		first := true
		for _, o := range out[i:] {
			if strings.EqualFold(o.Name, name) {
				m.SetHeaders = append(m.SetHeaders, envoyhdr.Set(name, o.Value, !first))
				first = false
			}
		}
	}
	return m
}

// sameValues reports whether a and b hold the same values of name, in order.
func sameValues(a, b gateway.Headers, name string) bool {
	i, j := 0, 0
	for {
		for i < len(a) && !strings.EqualFold(a[i].Name, name) {
			i++
		}
		for j < len(b) && !strings.EqualFold(b[j].Name, name) {
			j++
		}
		if i == len(a) || j == len(b) {
			return i == len(a) && j == len(b)
		}
		if a[i].Value != b[j].Value {
			return false
		}
		i++
		j++
	}
}

func (st *stream) responseBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	resp := &extprocv3.BodyResponse{}
	wrap := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: resp}}
	if st.phase != phaseResponse && st.phase != phaseUpstream {
		return wrap
	}
	chunk := b.GetBody()
	out := st.x.ResponseBody(chunk, b.GetEndOfStream())
	if b.GetEndOfStream() {
		st.phase = phaseDone
	}
	if sameBytes(out, chunk) {
		return wrap
	}
	// The gateway hid an event of its own making (the usage chunk the
	// client did not ask for): this reply replaces the chunk.
	common := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{}}
	if len(out) == 0 {
		common.BodyMutation.Mutation = &extprocv3.BodyMutation_ClearBody{ClearBody: true}
	} else {
		common.BodyMutation.Mutation = &extprocv3.BodyMutation_Body{Body: out}
	}
	if !st.respChunks && st.respMode == extprocfilterv3.ProcessingMode_BUFFERED {
		// A whole buffered body with its headers still held: Envoy checks
		// content-length against the new body.
		common.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			envoyhdr.Set("content-length", strconv.Itoa(len(out)), false)}}
	}
	resp.Response = common
	return wrap
}

func sameBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0] || bytes.Equal(a, b)
}

// duplicateHeaders answers request headers sent a second time. Before the
// request went upstream it is refused; after, the provider has it and may
// have answered, so its usage so far is settled first (a failure, or
// completed if the response ended): rejecting the exchange then would
// record a refusal with nothing billed. An answer already given is
// repeated, keeping its record's reason.
func (st *stream) duplicateHeaders() *extprocv3.ProcessingResponse {
	const msg = "The gateway's Envoy filter sent request headers twice."
	switch {
	case st.immediate != nil:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: st.immediate}}
	case st.phase == phaseNeedBody:
		return st.fail(msg)
	case st.phase == phaseDone:
		st.x.Settle(gateway.Completed)
	default:
		st.x.Settle(gateway.UpstreamFailed)
	}
	// The record is written; the answer only ends the HTTP stream (Envoy
	// resets it once the response headers have gone).
	return st.fail(msg)
}

// fail refuses a request Envoy presented in a way the gateway cannot
// process safely.
func (st *stream) fail(msg string) *extprocv3.ProcessingResponse {
	return st.respond(st.x.Reject(gateway.Fail(gateway.StatusInternalError, gateway.CodeInternal, "%s", msg)))
}

// respond answers the client in the gateway's stead; Envoy closes the
// stream after it.
func (st *stream) respond(r gateway.Response) *extprocv3.ProcessingResponse {
	st.phase = phaseDone
	hs := make([]*corev3.HeaderValueOption, 0, len(r.Header))
	for i, h := range r.Header {
		name := strings.ToLower(h.Name)
		hs = append(hs, envoyhdr.Set(name, h.Value, envoyhdr.Has(r.Header[:i], name)))
	}
	st.immediate = &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: envoyhdr.Status(r.Status)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: hs},
		Body:    r.Body,
		Details: "tollgate_gateway_response",
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: st.immediate}}
}

// value reads a header value from raw_value, where Envoy puts it, or from
// value for senders that use the older field.
func value(hv *corev3.HeaderValue) string {
	if len(hv.RawValue) > 0 {
		return string(hv.RawValue)
	}
	return hv.Value
}
