package cli_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestServeGRPC runs `tollgate serve` with the Envoy services on TCP and a
// unix socket from one config file: health checking on both, ext_authz and
// ext_proc answering, and a SIGTERM that lets a request in flight finish.
func TestServeGRPC(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "run", "ext.sock")
	// A socket left behind by a killed run is replaced.
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	// Port 0: serve picks free ports and logs them (at info level), so no
	// other process can take them between picking and binding.
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:0\ngrpc_listen: 127.0.0.1:0\ngrpc_socket: %s\ndata_dir: %s\nlog_level: info\n",
		socket, filepath.Join(dir, "data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := harness.StartServeArgs(t, nil, "--config", cfg)
	tcp := srv.LoggedAddr(t, `msg="serving envoy processor" network=tcp`)

	dial := func(target string) *grpc.ClientConn {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	overTCP, overSocket := dial(tcp), dial("unix://"+socket)
	for name, conn := range map[string]*grpc.ClientConn{"tcp": overTCP, "socket": overSocket} {
		for _, svc := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor", "envoy.service.auth.v3.Authorization"} {
			st := waitServing(t, conn, svc, srv)
			if st != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("%s health %q: %v", name, svc, st)
			}
		}
	}

	// ext_authz over TCP: no token, denied in OpenAI's shape.
	resp, err := authv3.NewAuthorizationClient(overTCP).Check(context.Background(), &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/openai/v1/chat/completions", Headers: map[string]string{"content-type": "application/json"},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated || resp.GetDeniedResponse().GetStatus().GetCode() != 401 ||
		!strings.Contains(resp.GetDeniedResponse().GetBody(), `"invalid_api_key"`) {
		t.Errorf("check without a token: %v", resp)
	}

	// ext_proc over the socket: a request without a token is refused in
	// OpenAI's shape.
	pc := extprocv3.NewExternalProcessorClient(overSocket)
	refused, err := pc.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := refused.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(":method", "POST", ":path", "/openai/v1/chat/completions")}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := refused.Recv(); err != nil || r.GetImmediateResponse().GetStatus().GetCode() != 401 ||
		!strings.Contains(string(r.GetImmediateResponse().GetBody()), `"invalid_api_key"`) {
		t.Fatalf("reply to request headers without a token: %v, %v", r, err)
	}
	_ = refused.CloseSend()

	// A stream in flight when SIGTERM arrives is still served: here a local
	// reply of an earlier filter passing through the response path.
	stream, err := pc.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(":status", "403", "content-type", "text/plain")}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetResponseHeaders() == nil {
		t.Fatalf("reply to response headers: %v, %v", r, err)
	}
	if err := srv.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Health turns NOT_SERVING while the stream drains.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := healthpb.NewHealthClient(overTCP).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health after SIGTERM: %v, %v", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte("denied"), EndOfStream: true}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetResponseBody() == nil || r.GetResponseBody().GetResponse() != nil {
		t.Fatalf("reply to the body after SIGTERM: %v, %v", r, err)
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("stream end: %v", err)
	}
	switch exited, err := srv.Wait(20 * time.Second); {
	case !exited:
		t.Fatal("serve did not exit after SIGTERM and its last stream")
	case err != nil:
		t.Errorf("serve exited with %v: %s", err, srv.Stderr())
	}
}

func headerMap(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

// waitServing polls health until the server answers.
func waitServing(t *testing.T, conn *grpc.ClientConn, svc string, srv *harness.Process) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err == nil {
			return r.GetStatus()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no health answer: %v: %s", err, srv.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
