package envoysim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// Proxy is the simulated sidecar: it listens where the bootstrap's ingress
// listener does and runs each request through the filters it configures.
type Proxy struct {
	cfg        *config
	opts       Options
	clock      Clock
	conns      []*grpc.ClientConn
	procClient extprocv3.ExternalProcessorClient
	authClient authv3.AuthorizationClient
	transport  *http.Transport
	srv        *http.Server
	ln         net.Listener

	mu         sync.Mutex
	counters   map[string]int64
	records    []*Record
	finished   int
	recorded   chan struct{} // closed and replaced when a request finishes
	violations []string
	closing    chan struct{}
}

// Start reads the bootstrap, dials the processor cluster and listens on the
// bootstrap's ingress address (or serves on opts.Listener).
func Start(b *bootstrapv3.Bootstrap, opts Options) (*Proxy, error) {
	p, err := start(b, opts)
	if err != nil && opts.Listener != nil {
		_ = opts.Listener.Close()
	}
	return p, err
}

func start(b *bootstrapv3.Bootstrap, opts Options) (*Proxy, error) {
	cfg, err := readConfig(b, opts)
	if err != nil {
		return nil, fmt.Errorf("envoysim: %w", err)
	}
	if opts.Listener != nil {
		if err := checkListener(opts.Listener, cfg.listen); err != nil {
			return nil, fmt.Errorf("envoysim: %w", err)
		}
	}
	p := &Proxy{cfg: cfg, opts: opts, clock: opts.Clock, counters: map[string]int64{}, recorded: make(chan struct{}), closing: make(chan struct{})}
	if p.clock == nil {
		p.clock = realClock{}
	}
	if p.opts.RequestChunks == nil {
		p.opts.RequestChunks = func() ChunkPlan { return Natural{} }
	}
	if p.opts.ResponseChunks == nil {
		p.opts.ResponseChunks = func() ChunkPlan { return Natural{} }
	}
	dial := func(target string) (*grpc.ClientConn, error) {
		// Envoy sends the cluster name as :authority and takes replies of
		// any size.
		c, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(sidecar.ProcessorCluster),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
		if err != nil {
			return nil, fmt.Errorf("envoysim: dial %s: %w", target, err)
		}
		p.conns = append(p.conns, c)
		return c, nil
	}
	if cfg.extProc != nil {
		c, err := dial(cfg.processor)
		if err != nil {
			return nil, err
		}
		p.procClient = extprocv3.NewExternalProcessorClient(c)
	}
	if cfg.extAuthz != nil {
		c, err := dial(cfg.authz)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.authClient = authv3.NewAuthorizationClient(c)
	}
	p.transport = &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.listen); err != nil {
			p.Close()
			return nil, fmt.Errorf("envoysim: listen %s: %w", cfg.listen, err)
		}
	}
	p.ln = ln
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is the listener's base URL.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops listening and drops the connections.
func (p *Proxy) Close() {
	select {
	case <-p.closing:
	default:
		close(p.closing)
	}
	if p.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.srv.Shutdown(ctx)
		cancel()
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
}

// CloseIdleConnections drops the pooled upstream connections (Envoy keeps
// such pools too; a leak check counts without them).
func (p *Proxy) CloseIdleConnections() { p.transport.CloseIdleConnections() }

// Counter is an Envoy-style stat (spurious_msgs_received,
// rejected_header_mutations, message_timeouts, clear_route_cache_ignored,
// failure_mode_allowed, streams_started, streams_closed, ...).
func (p *Proxy) Counter(name string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counters[name]
}

// Records are the finished requests, in completion order.
func (p *Proxy) Records() []*Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Record(nil), p.records...)
}

// Await returns the records once n requests have finished (a client can
// read a whole response before the proxy's handler has returned).
func (p *Proxy) Await(ctx context.Context, n int) ([]*Record, error) {
	for {
		p.mu.Lock()
		done, ch := p.finished, p.recorded
		recs := append([]*Record(nil), p.records...)
		p.mu.Unlock()
		if done >= n {
			return recs, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return recs, fmt.Errorf("envoysim: %d of %d requests finished: %w", done, n, ctx.Err())
		}
	}
}

// Finished is how many requests have finished.
func (p *Proxy) Finished() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.finished
}

// Violations are what real Envoy accepts but that signals a processor
// bug (strict mode): tests fail on any.
func (p *Proxy) Violations() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.violations...)
}

func (p *Proxy) count(name string) { p.add(name, 1) }

func (p *Proxy) add(name string, n int) {
	if n == 0 {
		return
	}
	p.mu.Lock()
	p.counters[name] += int64(n)
	p.mu.Unlock()
}

// Record is what one request did.
type Record struct {
	RequestID string
	Route     string
	Cluster   string
	// Upstream is the request the upstream received; nil if none went.
	Upstream *UpstreamRequest
	// Status is what the client got (0 after a reset before headers).
	Status int
	// Details is the local reply's %RESPONSE_CODE_DETAILS%.
	Details string
	// Flags like Envoy's %RESPONSE_FLAGS% (NR, UF, UH, UR for a reset).
	Flags string
	// Reset: the client's stream was reset.
	Reset bool
	// Metadata is the request's dynamic metadata by namespace, what the
	// access log's %DYNAMIC_METADATA(ns:key)% reads.
	Metadata map[string]*structpb.Struct
	// Trace holds every message on the ext_proc stream, in order, when
	// Options.KeepTrace is set.
	Trace []TraceEntry

	mu sync.Mutex
}

// UpstreamRequest is the request as the router forwarded it.
type UpstreamRequest struct {
	Method, Path, Host string
	Header             Headers
	Body               []byte
	Trailer            Headers
}

// TraceEntry is one ext_proc message.
type TraceEntry struct {
	Sent bool // Envoy to processor
	Msg  proto.Message
}

// String is the trace entry as protojson, for golden files.
func (e TraceEntry) String() string {
	dir := "<"
	if e.Sent {
		dir = ">"
	}
	return dir + " " + protojson.MarshalOptions{UseProtoNames: true}.Format(e.Msg)
}

// setMetadata merges s into the namespace, as Envoy's setDynamicMetadata
// does (protobuf MergeFrom): a later reply adds fields and overwrites those
// it repeats, and keeps the rest.
func (r *Record) setMetadata(ns string, s *structpb.Struct) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Metadata == nil {
		r.Metadata = map[string]*structpb.Struct{}
	}
	if r.Metadata[ns] == nil {
		r.Metadata[ns] = &structpb.Struct{}
	}
	proto.Merge(r.Metadata[ns], s)
}

// request is one HTTP request through the simulated filter chain.
type request struct {
	p          *Proxy
	w          http.ResponseWriter
	r          *http.Request
	ctx        context.Context
	route      *route
	f          *filter
	reqHeaders Headers
	rec        *Record
	rematch    bool
	// replaced is the body a CONTINUE_AND_REPLACE headers reply set.
	replaced     []byte
	replacedBody bool
	// released[dir]: the headers of that direction have left Envoy.
	released [2]bool
	// headersOnly: the response ends with its headers (end_stream).
	headersOnly bool
	// encoding: a response is in the encoder filters; a local reply now
	// goes to the client directly.
	encoding bool
}

func (rq *request) headersSent(d direction) bool { return rq.released[d] }

func (rq *request) violation(v string) {
	rq.p.mu.Lock()
	rq.p.violations = append(rq.p.violations, rq.rec.RequestID+": "+v)
	rq.p.mu.Unlock()
}

func (rq *request) trace(sent bool, m proto.Message) {
	if !rq.p.opts.KeepTrace {
		return
	}
	rq.rec.mu.Lock()
	rq.rec.Trace = append(rq.rec.Trace, TraceEntry{Sent: sent, Msg: proto.Clone(m)})
	rq.rec.mu.Unlock()
}

// ServeHTTP runs one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{p: p, w: w, r: r, ctx: r.Context(), rec: &Record{}}
	defer func() {
		rq.f.finish()
		p.mu.Lock()
		if !p.opts.NoRecords {
			p.records = append(p.records, rq.rec)
		}
		p.finished++
		close(p.recorded)
		p.recorded = make(chan struct{})
		p.mu.Unlock()
		if rq.rec.Reset {
			panic(http.ErrAbortHandler)
		}
	}()
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 && !p.cfg.acceptHTTP10 {
		// Envoy's HTTP/1 codec refuses HTTP/1.0 unless the connection
		// manager's http_protocol_options.accept_http_10 is set
		// (ServerConnectionImpl::checkProtocolVersion): a 426 without a
		// body, the connection closed, and no filter run, so no ext_proc
		// stream opens.
		rq.rec.Details = "low_version"
		rq.headersOnly = true
		rq.writeHeaders(Headers{{":status", strconv.Itoa(http.StatusUpgradeRequired)}, {"connection", "close"}})
		return
	}
	rq.serve()
}

// requestHeaders is the header map the connection manager hands the first
// filter: the HTTP/1 codec's map (pseudo-headers, HTTP/1 Host as
// :authority, :path with the query; transfer-encoding is never in it, so a
// chunked body arrives with neither transfer-encoding nor content-length),
// then ConnectionManagerUtility::mutateRequestHeaders with
// use_remote_address false, the sidecar's (and Envoy's default) setting.
func (c *config) requestHeaders(r *http.Request) Headers {
	h := Headers{{":authority", r.Host}, {":path", r.RequestURI}, {":method", r.Method}}
	h = append(h, fromHTTP(r.Header)...)
	h.del("transfer-encoding") // Go keeps it out of r.Header; so does Envoy's map
	if v, _ := h.Get("expect"); !c.proxy100Continue && strings.EqualFold(v, "100-continue") {
		// The connection manager answers 100 Continue itself and removes
		// the header before the filters run (proxy_100_continue unset). Go's
		// server has sent, or will send, the 100 when the body is read.
		h.del("expect")
	}
	mutateRequestHeaders(&h, c.internalOnly)
	return h
}

// envoyInternalRequestHeaders are the router's x-envoy-* request headers
// that cleanInternalHeaders removes from a request that is not internal
// (with use_remote_address false no request is internal). The edge-only
// ones (decorator operation, downstream service cluster and node) stay.
var envoyInternalRequestHeaders = []string{
	"x-envoy-retriable-status-codes", "x-envoy-retriable-header-names", "x-envoy-retry-on",
	"x-envoy-retry-grpc-on", "x-envoy-max-retries", "x-envoy-upstream-alt-stat-name",
	"x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms",
	"x-envoy-upstream-rq-timeout-alt-response", "x-envoy-expected-rq-timeout-ms",
	"x-envoy-force-trace", "x-envoy-ip-tags", "x-envoy-original-url", "x-envoy-hedge-on-per-try-timeout",
}

// mutateRequestHeaders is what Envoy's connection manager does to the
// request headers before any filter runs (conn_manager_utility.cc):
// connection and upgrade go unless the request is an upgrade, te is kept
// only as "trailers", keep-alive, proxy-connection, transfer-encoding and
// x-envoy-internal always go, the router's internal x-envoy-* headers and
// the route table's internal_only_headers go; x-forwarded-proto is set only
// if the client sent none (no remote address is used, so a client's value
// is trusted), :scheme follows it when it is a valid scheme, and
// x-request-id is generated only when absent.
func mutateRequestHeaders(h *Headers, internalOnly []string) {
	if !isUpgrade(*h) {
		h.del("connection")
		h.del("upgrade")
		keepTE := false
		for _, v := range h.Values("te") {
			for _, tok := range strings.Split(v, ",") {
				keepTE = keepTE || strings.EqualFold(strings.TrimSpace(tok), "trailers")
			}
		}
		h.del("te")
		if keepTE {
			*h = append(*h, Header{"te", "trailers"})
		}
	}
	for _, k := range []string{"x-envoy-internal", "keep-alive", "proxy-connection", "transfer-encoding"} {
		h.del(k)
	}
	for _, k := range envoyInternalRequestHeaders {
		h.del(k)
	}
	for _, k := range internalOnly {
		h.del(strings.ToLower(k))
	}
	if !h.has("x-forwarded-proto") {
		*h = append(*h, Header{"x-forwarded-proto", "http"})
	}
	scheme := "http"
	if xfp, _ := h.Get("x-forwarded-proto"); strings.EqualFold(xfp, "http") || strings.EqualFold(xfp, "https") {
		scheme = xfp
	}
	*h = append((*h)[:3:3], append(Headers{{":scheme", scheme}}, (*h)[3:]...)...)
	if !h.has("x-request-id") {
		*h = append(*h, Header{"x-request-id", uuid.NewString()})
	}
}

// isUpgrade is Envoy's Utility::isUpgrade: an upgrade header, and a
// connection header carrying the upgrade token.
func isUpgrade(h Headers) bool {
	if !h.has("upgrade") {
		return false
	}
	for _, v := range h.Values("connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// forwarded applies forward_rules to the headers sent to the processor.
func (f *filter) forwarded(h Headers) Headers {
	fr := f.cfg.GetForwardRules()
	if fr == nil {
		return h
	}
	var out Headers
	for _, x := range h {
		if fr.GetAllowedHeaders() != nil && !matchAny(fr.GetAllowedHeaders(), x.Key) {
			continue
		}
		if matchAny(fr.GetDisallowedHeaders(), x.Key) {
			continue
		}
		out = append(out, x)
	}
	return out
}

func (rq *request) serve() {
	p := rq.p
	rq.reqHeaders = p.cfg.requestHeaders(rq.r)
	rq.rec.RequestID, _ = rq.reqHeaders.Get("x-request-id")
	path, _ := rq.reqHeaders.Get(":path")
	rq.route = p.cfg.match(path)
	if rq.route != nil {
		rq.rec.Route, rq.rec.Cluster = rq.route.name, rq.route.cluster
	}
	// Every filter of the chain exists before the first runs: a local
	// reply from ext_authz still passes ext_proc's encoder side.
	if p.cfg.extProc != nil {
		var per *extprocfilterv3.ExtProcPerRoute
		if rq.route != nil {
			per = rq.route.extProc
		}
		f, err := newFilter(rq, p.cfg.extProc, per)
		if err != nil {
			rq.writeLocal(&localReply{status: http.StatusInternalServerError, details: "envoysim_config_" + err.Error()})
			return
		}
		rq.f = f
	}
	if p.cfg.extAuthz != nil && (rq.route == nil || !rq.route.extAuthz.GetDisabled()) {
		if lr := rq.authorize(); lr != nil {
			rq.writeLocal(lr)
			return
		}
	}
	body, trailers, lr := rq.decode()
	if lr != nil {
		rq.writeLocal(lr)
		return
	}
	rq.forward(body, trailers)
}

// decode runs the request path of ext_proc and returns the body to send
// upstream (nil reader for none) and its trailers. The body is taken whole
// before it goes upstream (Envoy would start forwarding sooner).
func (rq *request) decode() (io.Reader, Headers, *localReply) {
	h := &rq.reqHeaders
	bodyless := rq.r.Body == nil || rq.r.Body == http.NoBody
	var parts [][]byte
	r := &run{rq: rq, f: rq.f, d: dirRequest, h: h, release: func(Headers) { rq.released[dirRequest] = true },
		out: func(b []byte) {
			if len(b) > 0 {
				parts = append(parts, b)
			}
		}}
	if !bodyless {
		ch, stop := make(chan chunk), make(chan struct{})
		defer close(stop)
		go readChunks(rq.r.Body, rq.r.ContentLength, rq.p.opts.RequestChunks(), false, ch, stop,
			func() Headers { return fromHTTP(rq.r.Trailer) })
		r.src = ch
	}
	if lr := r.headers(bodyless); lr != nil {
		return nil, nil, lr
	}
	if rq.rematch {
		p, _ := h.Get(":path")
		rq.route = rq.p.cfg.match(p)
		if rq.route != nil {
			rq.rec.Route, rq.rec.Cluster = rq.route.name, rq.route.cluster
		} else {
			rq.rec.Route, rq.rec.Cluster = "", ""
		}
	}
	if rq.replacedBody {
		// The original body is drained as it arrives.
		return bytes.NewReader(rq.replaced), nil, nil
	}
	if lr := r.body(); lr != nil {
		return nil, nil, lr
	}
	if bodyless {
		return nil, nil, nil
	}
	return bytes.NewReader(bytes.Join(parts, nil)), r.trailers, nil
}

func orGone(lr *localReply) *localReply {
	if lr == nil {
		return &localReply{details: "downstream_remote_disconnect"}
	}
	return lr
}

// split cuts a whole body by a plan (Natural and Whole: one chunk).
func split(b []byte, plan ChunkPlan) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := plan.Next()
		if n <= 0 || n > len(b) {
			n = len(b)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	if len(out) == 0 {
		out = append(out, nil)
	}
	return out
}

// bodyRoundTrip sends one body message with the headers still held and
// applies its reply with buffered semantics; checkCL: a body mutation must
// match the content-length the headers still carry (Envoy's
// BufferedBodyCallback, not BUFFERED_PARTIAL's).
func (rq *request) bodyRoundTrip(d direction, kind msgKind, data []byte, eos bool, h *Headers, checkCL bool) ([]byte, *localReply) {
	f := rq.f
	msg := &extprocv3.HttpBody{Body: data, EndOfStream: eos}
	req := &extprocv3.ProcessingRequest{}
	if d == dirRequest {
		req.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: msg}
	} else {
		req.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: msg}
	}
	if fl := f.send(rq.ctx, kind, req); fl != nil {
		if lr := f.failed(fl); lr != nil {
			return nil, lr
		}
		return data, nil
	}
	ev := f.next(rq.ctx, d, nil)
	switch {
	case ev.fail != nil:
		if lr := f.failed(ev.fail); lr != nil || ev.fail.clientGone {
			return nil, orGone(lr)
		}
		return data, nil
	case ev.closed:
		return data, nil
	}
	if ir := ev.resp.GetImmediateResponse(); ir != nil {
		f.metadata(ev.resp)
		return nil, f.immediate(ir)
	}
	if ev.resp.GetModeOverride() != nil {
		rq.violation("mode_override in a body reply is ignored")
	}
	f.metadata(ev.resp)
	common := ev.resp.GetRequestBody().GetResponse()
	if d == dirResponse {
		common = ev.resp.GetResponseBody().GetResponse()
	}
	out := data
	if err := f.applyCommon(d, h, common, false, &out, checkCL); err != nil {
		return nil, rq.mutationFailed(err)
	}
	return out, nil
}

func (rq *request) mutationFailed(err error) *localReply {
	rq.violation("mutation error: " + err.Error())
	st := rq.f.statusOnError()
	rq.f.finish()
	return &localReply{status: st, details: "ext_proc_error_mutation_failed"}
}

// hopByHop are the headers Envoy's codec does not forward.
var hopByHop = map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true, "te": true}

// forward is the router: it sends the request to the route's cluster and
// runs the response through the response path.
func (rq *request) forward(body io.Reader, trailers Headers) {
	p, h := rq.p, rq.reqHeaders
	rq.released[dirRequest] = true
	if rq.route == nil {
		rq.rec.Flags = "NR"
		rq.writeLocal(&localReply{status: http.StatusNotFound, details: "route_not_found"})
		return
	}
	if d := rq.route.direct; d != nil {
		rq.writeLocal(&localReply{status: int(d.GetStatus()), body: []byte(d.GetBody().GetInlineString()), details: "direct_response"})
		return
	}
	addr, ok := p.cfg.upstreams[rq.route.cluster]
	if !ok {
		rq.rec.Flags = "UH"
		rq.writeLocal(&localReply{status: http.StatusServiceUnavailable, body: []byte("no healthy upstream"), details: "no_healthy_upstream"})
		return
	}
	method, _ := h.Get(":method")
	path, _ := h.Get(":path")
	path = rq.route.rewritePath(path)
	host, _ := h.Get(":authority")
	if rq.route.hostRewrite != "" {
		host = rq.route.hostRewrite
	}
	var captured bytes.Buffer
	if body != nil {
		body = io.TeeReader(body, &captured)
	}
	ctx := rq.ctx
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		rq.writeLocal(&localReply{status: http.StatusBadRequest, details: "envoysim_bad_request"})
		return
	}
	req.Host = host
	req.Header = http.Header{"User-Agent": nil} // no Go default user agent
	for _, x := range h {
		if strings.HasPrefix(x.Key, ":") || hopByHop[x.Key] || x.Key == "content-length" {
			continue
		}
		k := http.CanonicalHeaderKey(x.Key)
		req.Header[k] = append(req.Header[k], x.Value)
	}
	if !p.cfg.suppressEnvoy && rq.route.timeout > 0 {
		req.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", strconv.FormatInt(rq.route.timeout.Milliseconds(), 10))
	}
	if cl, ok := h.Get("content-length"); ok {
		req.ContentLength, _ = strconv.ParseInt(cl, 10, 64)
	} else if r, ok := body.(interface{ Len() int }); ok {
		req.ContentLength = int64(r.Len())
	} else if body != nil {
		req.ContentLength = -1
	}
	if body == nil {
		req.Body = nil
		req.ContentLength = 0
	}
	if len(trailers) > 0 {
		// HTTP/1.1 trailers need chunked encoding.
		req.Trailer = http.Header{}
		trailers.toHTTP(req.Trailer)
		req.ContentLength = -1
	}
	if rq.route.timeout > 0 {
		c, cancel := context.WithTimeout(ctx, rq.route.timeout)
		defer cancel()
		req = req.WithContext(c)
	}
	up := &UpstreamRequest{Method: method, Path: path, Host: host, Trailer: trailers}
	for _, x := range h {
		if !strings.HasPrefix(x.Key, ":") {
			up.Header = append(up.Header, x)
		}
	}
	resp, err := p.transport.RoundTrip(req)
	up.Body = captured.Bytes()
	rq.rec.Upstream = up
	if err != nil {
		if rq.ctx.Err() != nil {
			rq.rec.Details = "downstream_remote_disconnect"
			return
		}
		rq.rec.Flags = "UF"
		rq.writeLocal(&localReply{status: http.StatusServiceUnavailable, body: []byte("upstream connect error or disconnect/reset before headers"),
			details: "upstream_reset_before_response_started"})
		return
	}
	defer resp.Body.Close()
	rq.encode(resp, "via_upstream")
}

// encode runs the upstream's response through the response path.
func (rq *request) encode(resp *http.Response, details string) {
	h := append(Headers{{":status", strconv.Itoa(resp.StatusCode)}}, fromHTTP(resp.Header)...)
	eos := resp.ContentLength == 0 || resp.Body == nil || resp.Body == http.NoBody
	var body io.Reader
	if !eos {
		body = resp.Body
	}
	rq.encodeResponse(h, body, resp.ContentLength, func() Headers { return fromHTTP(resp.Trailer) }, details)
}

// encodeResponse runs response headers and a body (nil: none) through the
// encoder filters, ext_proc's response path, and writes them downstream.
func (rq *request) encodeResponse(h Headers, body io.Reader, length int64, trailers func() Headers, details string) {
	rq.rec.Details = details
	rq.encoding = true
	eos := body == nil
	rq.headersOnly = eos
	r := &run{rq: rq, f: rq.f, d: dirResponse, h: &h, release: rq.writeHeaders, out: rq.write}
	if !eos {
		ch, stop := make(chan chunk), make(chan struct{})
		defer close(stop)
		go readChunks(body, length, rq.p.opts.ResponseChunks(), rq.p.opts.EmptyFinalChunk, ch, stop, trailers)
		r.src = ch
	}
	if lr := r.headers(eos); lr != nil {
		rq.writeLocal(lr)
		return
	}
	if lr := r.body(); lr != nil {
		rq.writeLocal(lr)
		return
	}
	r.doRelease()
	for _, x := range r.trailers {
		rq.w.Header().Add(http.TrailerPrefix+x.Key, x.Value)
	}
}

// readChunks reads the upstream body and cuts it by plan. As in Envoy, a
// body of known length ends with end_of_stream on its last bytes; a chunked
// one (or any, with emptyFinal) ends with an empty chunk carrying it.
//
// When the body ends with trailers, the codec hands them over instead of an
// empty end_of_stream chunk, and no chunk carries end_of_stream.
func readChunks(body io.Reader, length int64, plan ChunkPlan, emptyFinal bool, out chan<- chunk, stop <-chan struct{}, trailers func() Headers) {
	defer close(out)
	emit := func(c chunk) bool {
		select {
		case out <- c:
			return true
		case <-stop:
			return false
		}
	}
	buf := make([]byte, 32<<10)
	var pending []byte
	var total int64
	want := 0 // size of the chunk being filled; 0: ask the plan
	for {
		n, err := body.Read(buf)
		pending = append(pending, buf[:n]...)
		total += int64(n)
		if err != nil && !errors.Is(err, io.EOF) {
			emit(chunk{err: err})
			return
		}
		atEnd := err != nil || (length >= 0 && total >= length)
		for len(pending) > 0 {
			if want == 0 {
				if want = plan.Next(); want == 0 {
					want = len(pending)
				}
			}
			if want < 0 || want > len(pending) {
				if !atEnd {
					break // wait for the bytes that fill this chunk
				}
				want = len(pending)
			}
			last := atEnd && want == len(pending) && !emptyFinal && length >= 0
			if !emit(chunk{data: append([]byte(nil), pending[:want]...), eos: last}) || last {
				return
			}
			pending, want = pending[want:], 0
		}
		if atEnd {
			if t := trailers(); len(t) > 0 {
				emit(chunk{trailers: t})
				return
			}
			emit(chunk{eos: true})
			return
		}
	}
}

func (rq *request) writeHeaders(h Headers) {
	st, _ := h.Get(":status")
	code, _ := strconv.Atoi(st)
	hh := rq.w.Header()
	h.toHTTP(hh)
	if _, ok := hh["Content-Type"]; !ok {
		hh["Content-Type"] = nil // no sniffing: Envoy adds none
	}
	if _, ok := hh["Content-Length"]; !ok && rq.headersOnly && code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified {
		// Envoy's HTTP/1 codec writes an explicit content-length: 0 for a
		// headers-only response (the header map has none); Go would go
		// chunked once the headers are flushed.
		hh["Content-Length"] = []string{"0"}
	}
	rq.w.WriteHeader(code)
	rq.rec.Status = code
	rq.released[dirResponse] = true
	if fl, ok := rq.w.(http.Flusher); ok {
		fl.Flush()
	}
}

func (rq *request) write(b []byte) {
	if len(b) == 0 {
		return
	}
	_, _ = rq.w.Write(b)
	if fl, ok := rq.w.(http.Flusher); ok {
		fl.Flush()
	}
}

// writeLocal sends a local reply, or resets the stream if the response
// headers have already gone.
func (rq *request) writeLocal(lr *localReply) {
	rq.rec.Details = lr.details
	if lr.status == 0 {
		// The client went away: nothing to write.
		return
	}
	if rq.released[dirResponse] {
		rq.rec.Reset = true
		return
	}
	h := localReplyHeaders(lr)
	if rq.encoding {
		// Envoy's sendDirectLocalReply: the response is already in the
		// encoder filters, so the reply bypasses them.
		rq.headersOnly = len(lr.body) == 0
		rq.writeHeaders(h)
		rq.write(lr.body)
		return
	}
	// sendLocalReplyViaFilterChain: the reply starts at the first encoder
	// filter, so it takes ext_proc's response path like an upstream
	// response, even when an earlier filter (ext_authz) made it and
	// ext_proc never saw the request. ext_proc skips it only once its
	// processing is complete (an immediate_response, an error).
	var body io.Reader
	if len(lr.body) > 0 {
		body = bytes.NewReader(lr.body)
	}
	rq.encodeResponse(h, body, int64(len(lr.body)), func() Headers { return nil }, lr.details)
}

// localReplyHeaders are the headers of a local reply as Envoy's
// Utility::prepareLocalReply makes them: :status, then the filter's own
// headers (its modify_headers callback), then, with a body, content-length
// and a text/plain content-type unless one is set; without a body,
// content-length and content-type are removed, including any the filter set.
func localReplyHeaders(lr *localReply) Headers {
	h := append(Headers{{":status", strconv.Itoa(lr.status)}}, lr.header...)
	if len(lr.body) == 0 {
		h.del("content-length")
		h.del("content-type")
		return h
	}
	h.set("content-length", strconv.Itoa(len(lr.body)))
	if !h.has("content-type") {
		h = append(h, Header{"content-type", "text/plain"})
	}
	return h
}
