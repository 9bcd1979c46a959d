package replay

import (
	"net"
	"net/http/httptest"
	"net/url"
	"testing"

	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/pkg/extproc"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/proxy"
	"github.com/tollgate-dev/tollgate/sidecar"
	"github.com/tollgate-dev/tollgate/test/envoysim"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// frontDoor puts a gateway in front of an upstream and returns the base
// URL clients call; stop returns once every request's record is in.
type frontDoor struct {
	name  string
	start func(t *testing.T, gw *gateway.Gateway, upstream *url.URL, chunks []int) (base string, stop func())
}

// frontDoors are the two ways the same core is reached: the standalone
// proxy, and Envoy (envoysim from the sidecar bootstrap) calling the
// ext_proc processor over gRPC. Every replay runs through both.
var frontDoors = []frontDoor{{"proxy", startProxy}, {"envoy", startEnvoy}}

func startProxy(t *testing.T, gw *gateway.Gateway, upstream *url.URL, _ []int) (string, func()) {
	px, err := proxy.New(proxy.Config{Gateway: gw, Upstreams: map[string]*url.URL{
		"openai": upstream, "anthropic": upstream, "gemini": upstream,
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(px)
	return srv.URL, srv.Close // Close waits for the handler
}

// startEnvoy serves the processor on loopback gRPC and puts envoysim in
// front of it. The chunk plan cuts the response body where Envoy's codec
// would, so these are exactly the chunk boundaries the processor sees.
func startEnvoy(t *testing.T, gw *gateway.Gateway, upstream *url.URL, chunks []int) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(extproc.ServerOptions(32 << 20)...)
	extproc.New(gw, extproc.Options{}).Register(g)
	go func() { _ = g.Serve(ln) }()
	// The sidecar's listener is bound here and handed to envoysim, so that
	// no parallel test can take its port in between.
	ingress, port := harness.Listen(t)
	b, err := sidecar.Bootstrap(sidecar.Options{ListenPort: port, Processor: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	plan := func() envoysim.ChunkPlan { return envoysim.Natural{} }
	switch {
	case len(chunks) == 1 && chunks[0] == 0:
		plan = func() envoysim.ChunkPlan { return envoysim.Whole{} }
	case len(chunks) > 0:
		plan = func() envoysim.ChunkPlan { return &envoysim.Sizes{List: chunks} }
	}
	host := upstream.Host
	px, err := envoysim.Start(b, envoysim.Options{
		Upstreams:      map[string]string{"openai": host, "anthropic": host, "gemini": host},
		ResponseChunks: plan,
		Listener:       ingress,
	})
	if err != nil {
		t.Fatal(err)
	}
	return px.URL(), func() {
		px.Close()
		g.GracefulStop() // every Process handler has returned: records are in
		if v := px.Violations(); len(v) > 0 {
			t.Errorf("envoysim strict mode: %q", v)
		}
	}
}
