package admin

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// GRPCServer returns a gRPC server with the four services registered, each
// call checked against the bearer token in its "authorization" metadata.
func (s *Service) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	gs := grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(s.unaryGuard))...)
	pb.RegisterAccountServiceServer(gs, s)
	pb.RegisterProjectServiceServer(gs, s)
	pb.RegisterTokenServiceServer(gs, s)
	pb.RegisterUsageServiceServer(gs, s)
	return gs
}

// unaryGuard runs guard before every call. Every method is unary, so no
// stream interceptor is needed.
func (s *Service) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var token string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			token = bearer(v[0])
		}
	}
	if err := s.guard(token, info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}
