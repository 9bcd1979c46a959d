package envoysim

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// errOK from a script ends the stream with status OK.
var errOK = errors.New("end the stream with OK")

func protojsonUnmarshal(s string, m proto.Message) error { return protojson.Unmarshal([]byte(s), m) }

// fakeProc is a scripted ext_proc server. By default it answers every
// message with an empty reply of the matching kind.
type fakeProc struct {
	extprocv3.UnimplementedExternalProcessorServer
	// reply returns the replies to one message; nil means the default.
	// Returning an error ends the stream with it.
	reply func(n int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error)

	mu      sync.Mutex
	streams [][]*extprocv3.ProcessingRequest
	ends    []error
	done    chan struct{} // one value per ended stream
}

func continueReply(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	return nil
}

func (f *fakeProc) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	f.mu.Lock()
	idx := len(f.streams)
	f.streams = append(f.streams, nil)
	f.mu.Unlock()
	end := func(err error) error {
		f.mu.Lock()
		f.ends = append(f.ends, err)
		f.mu.Unlock()
		f.done <- struct{}{}
		return err
	}
	for n := 0; ; n++ {
		req, err := srv.Recv()
		if err != nil {
			return end(err)
		}
		f.mu.Lock()
		f.streams[idx] = append(f.streams[idx], req)
		f.mu.Unlock()
		var out []*extprocv3.ProcessingResponse
		if f.reply != nil {
			if out, err = f.reply(n, req); err == errOK {
				end(io.EOF)
				return nil
			} else if err != nil {
				return end(err)
			}
		}
		if out == nil {
			out = []*extprocv3.ProcessingResponse{continueReply(req)}
		}
		for _, r := range out {
			if r == nil {
				continue
			}
			if err := srv.Send(r); err != nil {
				return end(err)
			}
		}
	}
}

// wait returns once n streams have ended (failing the test after 10 s).
func (f *fakeProc) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for i := range n {
		select {
		case <-f.done:
		case <-deadline:
			t.Fatalf("%d of %d ext_proc streams ended", i, n)
		}
	}
}

func (f *fakeProc) messages(i int) []*extprocv3.ProcessingRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams[i]
}

// env is envoysim between a fake processor and a test upstream.
type env struct {
	proc     *fakeProc
	procAddr string
	up       *httptest.Server
	proxy    *Proxy
	boot     *bootstrapv3.Bootstrap
}

type envConfig struct {
	opts     Options
	upstream http.HandlerFunc
	// extProc and extAuthz edit the filter configs before the proxy reads them.
	extProc  func(*extprocfilterv3.ExternalProcessor)
	extAuthz func(*extauthzv3.ExtAuthz)
	// hcm edits the connection manager (routes, filters).
	hcm func(*hcmv3.HttpConnectionManager)
	// boot edits the bootstrap last (listener, clusters).
	boot  func(*bootstrapv3.Bootstrap)
	reply func(n int, req *extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error)
	// noProcessor points the processor cluster at a closed port.
	noProcessor bool
	// authz, when set, adds the ext_authz filter served by this.
	authz authv3.AuthorizationServer
}

// ingress binds the proxy's listener on a free loopback port, to be built
// into the bootstrap and handed to Start (Options.Listener), so that no
// other test can take the port in between.
func ingress(t testing.TB) (net.Listener, uint32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() }) // if Start is never reached
	return ln, uint32(ln.Addr().(*net.TCPAddr).Port)
}

func newEnv(t *testing.T, c envConfig) *env {
	t.Helper()
	e := &env{proc: &fakeProc{reply: c.reply, done: make(chan struct{}, 1000)}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.procAddr = ln.Addr().String()
	g := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	extprocv3.RegisterExternalProcessorServer(g, e.proc)
	if c.authz != nil {
		authv3.RegisterAuthorizationServer(g, c.authz)
	}
	if c.noProcessor {
		ln.Close()
	} else {
		go func() { _ = g.Serve(ln) }()
		t.Cleanup(g.Stop)
	}
	handler := c.upstream
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"echo":` + quote(string(b)) + `}`))
		}
	}
	e.up = httptest.NewServer(handler)
	t.Cleanup(e.up.Close)
	ingressLn, port := ingress(t)
	b, err := sidecar.Bootstrap(sidecar.Options{ListenPort: port, Processor: e.procAddr, ExtAuthz: c.authz != nil})
	if err != nil {
		t.Fatal(err)
	}
	if c.extProc != nil || c.hcm != nil || c.extAuthz != nil {
		a := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
		edit(t, a, &hcmv3.HttpConnectionManager{}, func(h *hcmv3.HttpConnectionManager) {
			if c.hcm != nil {
				c.hcm(h)
			}
			for _, f := range h.GetHttpFilters() {
				if f.GetName() == sidecar.FilterExtProc && c.extProc != nil {
					edit(t, f.GetTypedConfig(), &extprocfilterv3.ExternalProcessor{}, c.extProc)
				}
				if f.GetName() == sidecar.FilterExtAuthz && c.extAuthz != nil {
					edit(t, f.GetTypedConfig(), &extauthzv3.ExtAuthz{}, c.extAuthz)
				}
			}
		})
	}
	if c.boot != nil {
		c.boot(b)
	}
	e.boot = b
	o := c.opts
	o.Upstreams = map[string]string{}
	addr := strings.TrimPrefix(e.up.URL, "http://")
	for _, p := range sidecar.DefaultProviders() {
		o.Upstreams[p.Name] = addr
	}
	o.KeepTrace = true
	o.Listener = ingressLn
	p, err := Start(b, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	e.proxy = p
	return e
}

func edit[M proto.Message](t *testing.T, a *anypb.Any, m M, f func(M)) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	f(m)
	n, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	a.Value = n.Value
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// endedBy says how the processor saw stream i end: "EOF" (half-close),
// "Canceled" (reset) or another gRPC code.
func (f *fakeProc) endedBy(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.ends[i]
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	return status.Code(err).String()
}
