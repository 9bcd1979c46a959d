package extproc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/pkg/extproc"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
)

// The tests drive the processor over real gRPC the way Envoy's ext_proc
// filter does with the documented config (request body BUFFERED, response
// body BUFFERED switched to STREAMED by mode_override), applying its
// replies the way Envoy applies them, and call the mock upstream with the
// request Envoy would forward. The full Envoy simulator lives in
// test/envoysim; this client checks the protocol facts the adapter owns.

type envOptions struct {
	maxBody int64
	// socket serves gRPC on a unix domain socket instead of loopback TCP.
	socket bool
	mock   mockprovider.Options
}

type env struct {
	t       testing.TB
	stack   *gwtest.Stack
	mock    *mockprovider.Servers
	mockURL string
	client  extprocv3.ExternalProcessorClient
	streams *tracker
	// target is the processor's gRPC address, for tests that need a
	// connection of their own.
	target string
}

// tracker counts Process handlers in flight, so tests know every stream
// has been settled before they count records.
type tracker struct {
	mu     sync.Mutex
	active int
	idle   chan struct{}
}

func (tr *tracker) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	tr.mu.Lock()
	tr.active++
	tr.mu.Unlock()
	defer func() {
		tr.mu.Lock()
		tr.active--
		if tr.active == 0 {
			close(tr.idle)
			tr.idle = make(chan struct{})
		}
		tr.mu.Unlock()
	}()
	return h(srv, ss)
}

// wait returns once no handler is running.
func (tr *tracker) wait(t testing.TB) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		tr.mu.Lock()
		n, ch := tr.active, tr.idle
		tr.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d ext_proc streams still open after 10s", n)
		}
	}
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	st := gwtest.New(t, gwtest.Options{MaxRequestBody: o.maxBody})
	if o.mock.APIKey == "" {
		o.mock.APIKey = gwtest.Key // the mock refuses anything but the real key
	}
	mock := mockprovider.NewServers(o.mock)
	mockSrv := httptest.NewServer(mock)
	t.Cleanup(mockSrv.Close)

	var lis net.Listener
	var target string
	var err error
	if o.socket {
		path := filepath.Join(t.TempDir(), "ext.sock")
		lis, err = net.Listen("unix", path)
		target = "unix://" + path
	} else {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		target = lis.Addr().String()
	}
	if err != nil {
		t.Fatal(err)
	}
	maxBody := o.maxBody
	if maxBody == 0 {
		maxBody = 32 << 20
	}
	tr := &tracker{idle: make(chan struct{})}
	gs := grpc.NewServer(append(extproc.ServerOptions(maxBody), grpc.StreamInterceptor(tr.intercept))...)
	extproc.New(st.Gateway, extproc.Options{}).Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &env{t: t, stack: st, mock: mock, mockURL: mockSrv.URL, client: extprocv3.NewExternalProcessorClient(conn), streams: tr, target: target}
}

// header is one header entry as Envoy holds it: lower-case name, one entry
// per value.
type header struct{ name, value string }

type headerList []header

func (h headerList) get(name string) (string, bool) {
	for _, f := range h {
		if f.name == name {
			return f.value, true
		}
	}
	return "", false
}

func (h headerList) values(name string) []string {
	var out []string
	for _, f := range h {
		if f.name == name {
			out = append(out, f.value)
		}
	}
	return out
}

func (h headerList) headerMap() *corev3.HeaderMap {
	m := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h))}
	for _, f := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: f.name, RawValue: []byte(f.value)})
	}
	return m
}

// cut ends the HTTP request early, as Envoy reports it to the processor.
type cut int

const (
	noCut cut = iota
	// resetCut: Envoy half-closes and resets (the default): the server's
	// stream is cancelled.
	resetCut
	// closeCut: Envoy half-closes and waits (graceful close flag): the
	// server reads io.EOF.
	closeCut
)

// cutAtEnd is exchange.cutAfter for a cut after every byte of the response
// and before its end_of_stream.
const cutAtEnd = math.MaxInt

// exchange is one scripted HTTP request.
type exchange struct {
	method string
	path   string // with the provider prefix and query
	header headerList
	body   []byte
	// chunk is the size of the response body pieces Envoy hands over in
	// STREAMED mode (0: 4096).
	chunk int
	// cutAfter ends the HTTP stream with cutHow after that many response
	// body chunks (with cutHow set); -1 cuts before the response headers,
	// cutAtEnd after the last chunk with bytes, before the empty one that
	// carries end_of_stream.
	cutAfter int
	cutHow   cut
	// reqMode is the request body mode Envoy reports (default BUFFERED).
	reqMode extprocfilterv3.ProcessingMode_BodySendMode
}

// result is what the client and the upstream saw.
type result struct {
	immediate *extprocv3.ImmediateResponse
	// upstream request as Envoy would forward it
	upHeader headerList
	// setPath is the :path the processor set, if it set one.
	setPath  string
	upBody   []byte
	upCalled bool
	// client-facing response
	status int
	header headerList
	body   []byte
	// chunkReplies counts replies to response body chunks; mutated counts
	// those that replaced their chunk.
	chunkReplies, mutated int
	override              *extprocfilterv3.ProcessingMode
	id                    string
}

// run drives one exchange through the processor and the mock upstream.
func (e *env) run(x exchange) result {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := e.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var res result
	if x.method == "" {
		x.method = http.MethodPost
	}
	if x.reqMode == extprocfilterv3.ProcessingMode_NONE {
		x.reqMode = extprocfilterv3.ProcessingMode_BUFFERED
	}
	req := headerList{{":authority", "127.0.0.1:15080"}, {":path", x.path}, {":method", x.method}, {":scheme", "http"}}
	req = append(req, x.header...)
	req = append(req, header{"x-forwarded-proto", "http"}, header{"x-request-id", "3b5c0f7e-envoy"})
	if x.body != nil {
		req = append(req, header{"content-length", strconv.Itoa(len(x.body))})
	}
	finish := func() result {
		// Envoy half-closes once it needs no more replies; the server then
		// ends the stream.
		_ = stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after the last reply: %v, want the server to end the stream", err)
		}
		return res
	}
	first := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: req.headerMap(), EndOfStream: len(x.body) == 0}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: x.reqMode, ResponseBodyMode: extprocfilterv3.ProcessingMode_BUFFERED},
	}
	reply := e.exchangeMsg(stream, first)
	if im := reply.GetImmediateResponse(); im != nil {
		res.immediate = im
		res.id = immediateHeader(im, "x-tollgate-request-id")
		return finish()
	}
	hr, ok := reply.Response.(*extprocv3.ProcessingResponse_RequestHeaders)
	if !ok {
		t.Fatalf("reply to request_headers is %T", reply.Response)
	}
	up := e.apply(req, hr.RequestHeaders.GetResponse().GetHeaderMutation())
	upBody := x.body
	if len(x.body) > 0 {
		reply = e.exchangeMsg(stream, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: x.body, EndOfStream: true}}})
		if im := reply.GetImmediateResponse(); im != nil {
			res.immediate = im
			res.id = immediateHeader(im, "x-tollgate-request-id")
			return finish()
		}
		br, ok := reply.Response.(*extprocv3.ProcessingResponse_RequestBody)
		if !ok {
			t.Fatalf("reply to request_body is %T", reply.Response)
		}
		common := br.RequestBody.GetResponse()
		up = e.apply(up, common.GetHeaderMutation())
		if bm := common.GetBodyMutation(); bm != nil {
			switch m := bm.Mutation.(type) {
			case *extprocv3.BodyMutation_Body:
				upBody = m.Body
			case *extprocv3.BodyMutation_ClearBody:
				upBody = nil
			default:
				t.Errorf("request body mutation %T is spurious in BUFFERED mode", bm.Mutation)
			}
			// Envoy's check for a rewritten buffered body.
			if cl, ok := up.get("content-length"); ok && cl != strconv.Itoa(len(upBody)) {
				t.Errorf("content-length %s after the body became %d bytes: Envoy answers 500", cl, len(upBody))
			}
		}
	}
	if p, _ := up.get(":path"); p != x.path {
		res.setPath = p
	}
	up = routed(x.path, up)
	res.upHeader, res.upBody = up, upBody
	if x.cutAfter < 0 && x.cutHow != noCut {
		return e.cut(stream, cancel, x.cutHow, res)
	}

	resp := e.callUpstream(x.path, up, upBody)
	res.upCalled = true
	defer resp.Body.Close()
	rh := headerList{{":status", strconv.Itoa(resp.StatusCode)}}
	for k, vs := range resp.Header {
		for _, v := range vs {
			rh = append(rh, header{strings.ToLower(k), v})
		}
	}
	reply = e.exchangeMsg(stream, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: rh.headerMap()}}})
	rr, ok := reply.Response.(*extprocv3.ProcessingResponse_ResponseHeaders)
	if !ok {
		t.Fatalf("reply to response_headers is %T", reply.Response)
	}
	client := e.apply(rh, rr.ResponseHeaders.GetResponse().GetHeaderMutation())
	res.status = resp.StatusCode
	res.id, _ = client.get("x-tollgate-request-id")
	streamed := false
	if o := reply.GetModeOverride(); o != nil {
		res.override = o
		// The sidecar allows exactly this override; Envoy drops others.
		if !proto.Equal(o, extproc.StreamingOverride()) {
			t.Errorf("mode_override %v is not the allowed one", o)
		}
		streamed = o.GetResponseBodyMode() == extprocfilterv3.ProcessingMode_STREAMED
	}
	// Envoy decided to keep content-length by the BUFFERED mode, before the
	// override: only the processor's remove takes it away, and a length
	// kept must still be the length of what the client gets.
	keptLength, hasLength := client.get("content-length")
	res.header = client

	if !streamed {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		reply = e.exchangeMsg(stream, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
		out, cl, changed := e.bodyReply(reply, body, true)
		res.chunkReplies++
		if changed {
			res.mutated++
			if want := strconv.Itoa(len(out)); cl != want {
				if have, ok := client.get("content-length"); ok && have != want {
					t.Errorf("buffered response body rewritten to %d bytes with content-length %q", len(out), have)
				}
			}
		}
		res.body = out
		return finish()
	}
	size := x.chunk
	if size == 0 {
		size = 4096
	}
	buf := make([]byte, size)
	for {
		n, rerr := io.ReadFull(resp.Body, buf)
		if n > 0 {
			if x.cutHow != noCut && res.chunkReplies == x.cutAfter {
				return e.cut(stream, cancel, x.cutHow, res)
			}
			chunk := bytes.Clone(buf[:n])
			reply = e.exchangeMsg(stream, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: chunk}}})
			out, _, changed := e.bodyReply(reply, chunk, false)
			res.chunkReplies++
			if changed {
				res.mutated++
			}
			res.body = append(res.body, out...)
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
				t.Fatal(rerr)
			}
			break
		}
	}
	if x.cutHow != noCut && x.cutAfter == cutAtEnd {
		return e.cut(stream, cancel, x.cutHow, res)
	}
	// HTTP/1 chunked: the last message is commonly an empty body.
	reply = e.exchangeMsg(stream, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{EndOfStream: true}}})
	out, _, changed := e.bodyReply(reply, nil, false)
	res.chunkReplies++
	if changed {
		res.mutated++
	}
	res.body = append(res.body, out...)
	if hasLength && keptLength != strconv.Itoa(len(res.body)) {
		t.Errorf("content-length %s kept on a streamed response of %d bytes", keptLength, len(res.body))
	}
	return finish()
}

// cut ends the stream the way Envoy does when the HTTP stream dies.
func (e *env) cut(stream extprocv3.ExternalProcessor_ProcessClient, cancel context.CancelFunc, how cut, res result) result {
	switch how {
	case resetCut:
		cancel()
	case closeCut:
		_ = stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			e.t.Errorf("after a graceful close: %v, want the server to end the stream", err)
		}
	}
	return res
}

// exchangeMsg sends one message and reads its one reply.
func (e *env) exchangeMsg(stream extprocv3.ExternalProcessor_ProcessClient, m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	e.t.Helper()
	if err := stream.Send(m); err != nil {
		e.t.Fatalf("send: %v", err)
	}
	r, err := stream.Recv()
	if err != nil {
		e.t.Fatalf("recv: %v", err)
	}
	if r.Response == nil {
		e.t.Fatalf("reply with no response set is spurious: %v", r)
	}
	return r
}

// bodyReply applies a reply to a response body message. whole is set in
// BUFFERED mode, where a header mutation in the reply still applies; cl
// is the content-length it sets, if any.
func (e *env) bodyReply(r *extprocv3.ProcessingResponse, chunk []byte, whole bool) (out []byte, cl string, changed bool) {
	e.t.Helper()
	br, ok := r.Response.(*extprocv3.ProcessingResponse_ResponseBody)
	if !ok {
		e.t.Fatalf("reply to response_body is %T", r.Response)
	}
	common := br.ResponseBody.GetResponse()
	if hm := common.GetHeaderMutation(); hm != nil {
		if !whole {
			e.t.Errorf("header mutation in a STREAMED body reply: Envoy ignores it")
		}
		for _, s := range hm.SetHeaders {
			if s.GetHeader().GetKey() == "content-length" {
				cl = string(s.GetHeader().GetRawValue())
			}
		}
	}
	bm := common.GetBodyMutation()
	if bm == nil {
		return chunk, cl, false
	}
	switch m := bm.Mutation.(type) {
	case *extprocv3.BodyMutation_Body:
		return m.Body, cl, true
	case *extprocv3.BodyMutation_ClearBody:
		return nil, cl, true
	}
	e.t.Errorf("body mutation %T is spurious outside FULL_DUPLEX_STREAMED", bm.Mutation)
	return chunk, cl, false
}

// apply applies a header mutation as Envoy does: removes, then sets, from
// raw_value only, refusing (strictly: failing the test) what the sidecar's
// mutation rules (Envoy's defaults plus allow_envoy) would drop.
func (e *env) apply(h headerList, m *extprocv3.HeaderMutation) headerList {
	e.t.Helper()
	out := append(headerList(nil), h...)
	for _, name := range m.GetRemoveHeaders() {
		if strings.HasPrefix(name, ":") || name == "host" {
			e.t.Errorf("remove %q: Envoy refuses it", name)
			continue
		}
		out = dropHeader(out, name)
	}
	for _, s := range m.GetSetHeaders() {
		hv := s.GetHeader()
		switch {
		case hv.GetValue() != "" && len(hv.GetRawValue()) > 0:
			e.t.Errorf("set %q with value and raw_value: Envoy fails the request", hv.GetKey())
		case hv.GetValue() != "":
			e.t.Errorf("set %q through value: Envoy sets an empty header", hv.GetKey())
		//lint:ignore SA1019 the field Envoy's ext_proc reads
		case s.GetAppend() == nil:
			e.t.Errorf("set %q without append: its meaning depends on the Envoy version", hv.GetKey())
		case hv.GetKey() != strings.ToLower(hv.GetKey()):
			e.t.Errorf("set %q: not lower case", hv.GetKey())
		}
		switch k := hv.GetKey(); {
		case k == "host" || k == ":authority" || k == ":method" || k == ":scheme":
			e.t.Errorf("set %q: Envoy drops it", k)
			continue
		case strings.HasPrefix(k, "x-envoy"):
			e.t.Errorf("set %q: Envoy's own header, never the processor's to set", k)
			continue
		}
		v := string(hv.GetRawValue())
		//lint:ignore SA1019 the field Envoy's ext_proc reads
		if s.GetAppend().GetValue() {
			out = append(out, header{hv.GetKey(), v})
			continue
		}
		replaced := false
		for i := range out {
			if out[i].name == hv.GetKey() {
				if !replaced {
					out[i].value = v
					replaced = true
				} else {
					out[i].name = "" // dropped below
				}
			}
		}
		if !replaced {
			out = append(out, header{hv.GetKey(), v})
		}
		out = dropHeader(out, "")
	}
	return out
}

func dropHeader(h headerList, name string) headerList {
	out := h[:0]
	for _, f := range h {
		if f.name != name {
			out = append(out, f)
		}
	}
	return out
}

// routed applies the sidecar's provider route to the request as the
// processor left it: the route matched the client's path ("/openai/";
// the route cache is retained), and its prefix_rewrite "/" replaces that
// many leading bytes of :path, whatever :path is by then.
func routed(origPath string, h headerList) headerList {
	provider, _, _ := strings.Cut(strings.TrimPrefix(origPath, "/"), "/")
	n := len("/" + provider + "/")
	out := append(headerList(nil), h...)
	for i, f := range out {
		if f.name == ":path" {
			out[i].value = "/" + f.value[min(n, len(f.value)):]
		}
	}
	return out
}

// callUpstream sends the forwarded request to the mock behind the route
// the original path selected.
func (e *env) callUpstream(origPath string, h headerList, body []byte) *http.Response {
	e.t.Helper()
	provider, _, _ := strings.Cut(strings.TrimPrefix(origPath, "/"), "/")
	method, _ := h.get(":method")
	path, _ := h.get(":path")
	req, err := http.NewRequest(method, e.mockURL+"/"+provider+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range h {
		if strings.HasPrefix(f.name, ":") || f.name == "content-length" {
			continue
		}
		req.Header.Add(f.name, f.value)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func immediateHeader(im *extprocv3.ImmediateResponse, name string) string {
	for _, s := range im.GetHeaders().GetSetHeaders() {
		if s.GetHeader().GetKey() == name {
			return string(s.GetHeader().GetRawValue())
		}
	}
	return ""
}

// fixture is a plain request to one provider.
type fixture struct {
	provider string
	path     string
	auth     func(tok string) headerList
	body     func(text string, stream bool) []byte
	// streamPath, when set, is the path of the streamed variant.
	streamPath string
}

var fixtures = []fixture{
	{
		provider: "openai", path: "/openai/v1/chat/completions",
		auth: func(tok string) headerList { return headerList{{"authorization", "Bearer " + tok}} },
		body: func(text string, stream bool) []byte {
			if stream {
				return fmt.Appendf(nil, `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":%q}]}`, text)
			}
			return fmt.Appendf(nil, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]}`, text)
		},
	},
	{
		provider: "anthropic", path: "/anthropic/v1/messages",
		auth: func(tok string) headerList {
			return headerList{{"x-api-key", tok}, {"anthropic-version", "2023-06-01"}}
		},
		body: func(text string, stream bool) []byte {
			return fmt.Appendf(nil, `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":%t,"messages":[{"role":"user","content":%q}]}`, stream, text)
		},
	},
	{
		provider: "gemini", path: "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
		streamPath: "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
		auth:       func(tok string) headerList { return headerList{{"x-goog-api-key", tok}} },
		body: func(text string, _ bool) []byte {
			return fmt.Appendf(nil, `{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, text)
		},
	},
}

// clientHeaders are what an SDK adds besides its credential; none of them
// may reach the provider.
var clientHeaders = headerList{
	{"content-type", "application/json"},
	{"user-agent", "OpenAI/Go 3.8.1"},
	{"x-stainless-os", "Linux"},
	{"cookie", "session=abc"},
	{"accept-encoding", "gzip"},
	{"x-envoy-internal", "true"},
}

func (f fixture) request(tok, text string, stream bool) exchange {
	path := f.path
	if stream && f.streamPath != "" {
		path = f.streamPath
	}
	h := append(append(headerList(nil), clientHeaders...), f.auth(tok)...)
	return exchange{path: path, header: h, body: f.body(text, stream)}
}
