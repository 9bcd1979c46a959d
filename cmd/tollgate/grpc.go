package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tollgate-dev/tollgate/pkg/extauthz"
	"github.com/tollgate-dev/tollgate/pkg/extproc"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// envoyServer serves the Envoy processor services (ext_proc, ext_authz) and
// gRPC health checking on TCP and/or a unix domain socket.
type envoyServer struct {
	srv    *grpc.Server
	health *health.Server
	lns    []net.Listener
	log    *slog.Logger
}

// newEnvoyServer listens on addr (TCP) and socket (a unix socket path);
// either may be empty.
func newEnvoyServer(gw *gateway.Gateway, addr, socket string, maxBody int64, log *slog.Logger) (*envoyServer, error) {
	e := &envoyServer{srv: grpc.NewServer(extproc.ServerOptions(maxBody)...), health: health.NewServer(), log: log}
	extproc.New(gw, extproc.Options{Logger: log}).Register(e.srv)
	extauthz.New(gw, extauthz.Options{Logger: log}).Register(e.srv)
	healthpb.RegisterHealthServer(e.srv, e.health)
	for _, svc := range []string{"", extprocv3.ExternalProcessor_ServiceDesc.ServiceName, authv3.Authorization_ServiceDesc.ServiceName} {
		e.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("grpc listen %s: %w", addr, err)
		}
		e.lns = append(e.lns, ln)
	}
	if socket != "" {
		ln, err := listenSocket(socket)
		if err != nil {
			e.closeListeners()
			return nil, err
		}
		e.lns = append(e.lns, ln)
	}
	return e, nil
}

// listenSocket listens on a unix socket, replacing a stale one a previous
// run left behind (but no other kind of file).
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("grpc socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("grpc socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("grpc socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("grpc socket %s: %w", path, err)
	}
	// The sidecar's Envoy runs as another user of the pod.
	if err := os.Chmod(path, 0o666); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("grpc socket %s: %w", path, err)
	}
	return ln, nil
}

// serve serves every listener; the first failure goes to errc.
func (e *envoyServer) serve(errc chan<- error) {
	for _, ln := range e.lns {
		e.log.Info("serving envoy processor", "network", ln.Addr().Network(), "addr", ln.Addr().String())
		go func() {
			if err := e.srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("grpc %s: %w", ln.Addr(), err)
			}
		}()
	}
}

// healthDrain is how long NOT_SERVING is reported before the listeners
// close, so health checkers (Envoy's, the kubelet's) can see it and stop
// sending new requests.
const healthDrain = time.Second

// stop lets open streams (requests in flight) finish until ctx ends (the
// grace), then cuts the rest; their usage is settled either way, before
// stop returns (GracefulStop waits for the handlers).
func (e *envoyServer) stop(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		e.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		e.srv.Stop()
		<-done
	}
}

func (e *envoyServer) closeListeners() {
	for _, ln := range e.lns {
		_ = ln.Close()
	}
}
