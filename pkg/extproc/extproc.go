// Package extproc is the Envoy adapter over pkg/gateway: an
// envoy.service.ext_proc.v3.ExternalProcessor server. Envoy opens one gRPC
// stream per HTTP request; the stream's goroutine drives that request's
// gateway.Exchange through request headers, the buffered request body,
// response headers and the response body, and settles its usage when the
// stream ends, however it ends.
//
// The sidecar's filter configuration (sidecar.ProcessingMode): request
// headers SEND, request body BUFFERED, response headers SEND, response body
// STREAMED, request trailers SKIP, response trailers SEND. A response body
// BUFFERED with allow_mode_override and StreamingOverride in
// allowed_override_modes works too: streamed responses are then switched to
// STREAMED in the response headers reply.
//
// A response body that ends with trailers never carries end_of_stream; the
// response_trailers message ends it. Without it (response trailers SKIP) a
// completed response and a client reset look the same on the gRPC stream,
// and the exchange is settled as abandoned.
//
// The sidecar's provider routes strip the provider prefix (prefix_rewrite
// "/"), so the processor keeps it in :path and sets :path only when the
// upstream path differs from what the route makes of the client's.
package extproc

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"runtime"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// MetadataNamespace is the dynamic-metadata namespace the processor writes
// (the request id, for the sidecar's access log). Envoy keeps it only if
// the filter's metadata_options.receiving_namespaces lists it, as the
// sidecar's does (sidecar.MetadataNamespace, the same string).
const MetadataNamespace = "tollgate"

// Options tune a Server.
type Options struct {
	Logger *slog.Logger
}

// Server is the ext_proc service. It is safe for concurrent use: all state
// of a request lives on its stream's goroutine.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	gw  *gateway.Gateway
	ids *gateway.RequestIDs
	log *slog.Logger
}

// New returns a Server driving gw.
func New(gw *gateway.Gateway, opts Options) *Server {
	s := &Server{gw: gw, ids: gateway.NewRequestIDs(), log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { extprocv3.RegisterExternalProcessorServer(g, s) }

// StreamingOverride is the mode_override sent in the response headers reply
// of a streamed response (SSE or a streamed JSON array). Envoy applies it
// only when it equals an entry of the filter's allowed_override_modes
// exactly, so the sidecar config lists this very value. Every field is
// explicit: body modes in an override are copied verbatim. Response
// trailers stay SEND, so that a stream ending with trailers completes.
func StreamingOverride() *extprocfilterv3.ProcessingMode {
	return &extprocfilterv3.ProcessingMode{
		RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocfilterv3.ProcessingMode_NONE,
		RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
		ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
		ResponseBodyMode:    extprocfilterv3.ProcessingMode_STREAMED,
		ResponseTrailerMode: extprocfilterv3.ProcessingMode_SEND,
	}
}

// Process serves one HTTP request's stream.
func (s *Server) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	st := newStream(s.gw, srv.Context(), s.ids)
	defer st.settle()
	for {
		req, err := srv.Recv()
		if err != nil {
			// Envoy ends the stream when the HTTP request is over, the client
			// left or the upstream reset: a half-close (io.EOF) with its
			// graceful-close flag, a reset (Canceled) without.
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				st.closed(gateway.ClientGone)
				return nil
			}
			st.closed(gateway.UpstreamFailed)
			s.log.LogAttrs(srv.Context(), slog.LevelWarn, "ext_proc stream failed",
				slog.String("request_id", st.id()), slog.String("error", err.Error()))
			return err
		}
		resp := st.handle(req)
		if resp == nil || req.GetObservabilityMode() {
			st.sent()
			continue
		}
		err = srv.Send(resp) // marshals resp before it returns
		st.sent()
		if err != nil {
			st.unsent()
			return err
		}
	}
}

// headroom is what a buffered body message carries besides the body:
// headers (Envoy's default cap is 60 KiB) and protobuf framing.
const headroom = 1 << 20

// Flow-control windows: a stream may have 4 MiB in flight, a connection
// (Envoy multiplexes many requests on one) 16 MiB.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// sidecarBuffer is the largest body the sidecar's Envoy may buffer and send
// in one message: its request buffer, which is also each provider cluster's
// response buffer (sidecar.DefaultRequestBufferBytes; the gateway binary
// does not import sidecar and Envoy's config protos with it, so
// TestBodyAtSidecarBuffer keeps the two in step). A body of that size must
// reach the processor, which answers it with the provider's 413 instead of
// Envoy's 500 for a failed stream.
const sidecarBuffer = 33 << 20

// ServerOptions are the gRPC server settings Envoy needs: messages as large
// as a whole buffered body (a request up to maxRequestBody, or whatever the
// sidecar buffers) plus headroom, else Recv fails and Envoy answers 500;
// and a keepalive policy that tolerates Envoy's HTTP/2 pings, which
// grpc-go's default (5 min, none without streams) answers with GOAWAY
// too_many_pings.
func ServerOptions(maxRequestBody int64) []grpc.ServerOption {
	size := max(maxRequestBody, sidecarBuffer) + headroom
	if size > math.MaxInt32 {
		size = math.MaxInt32
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(size)),
		grpc.MaxSendMsgSize(int(size)),
		// Static flow-control windows, large enough for a buffered body to
		// arrive without waiting for window updates; they also turn off
		// grpc-go's bandwidth probing, a PING round trip per burst of data.
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		// Streams (one per HTTP request) run on a pool of goroutines.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		// Envoy's connection_keepalive interval is the operator's choice:
		// accept pings every second, with or without streams.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	}
}
