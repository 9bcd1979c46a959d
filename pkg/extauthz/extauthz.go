// Package extauthz is the header-only Envoy adapter over pkg/gateway: an
// envoy.service.auth.v3.Authorization server for deployments that check
// the gateway token in a separate hop, alone or before ext_proc.
//
// Check runs the gateway's request-header step (route, token, account
// policy, upstream headers). An accepted request is answered OK with the
// upstream request's headers set, every other client header removed (the
// client's credentials with them) and the credential query parameters
// removed; the path prefix is left to the route's prefix_rewrite. Anything
// else is denied with the provider's own error (or, for the catalog routes
// the gateway answers itself, its answer). Such a hop cannot read bodies,
// so it neither meters usage nor enforces token limits: deployments that
// bill use ext_proc (pkg/extproc).
//
// When ext_proc follows on the same request, the route says so with the
// context extension ContextExtProc, and an accepted request is answered OK
// with no changes: ext_proc checks the token again, meters the request and
// swaps the key itself, so it must see the client's headers as they came.
package extauthz

import (
	"context"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/envoyhdr"
)

// ContextExtProc is the CheckRequest context extension (the route's
// ExtAuthzPerRoute check_settings) that says ext_proc follows; its value is
// "true". The sidecar sets it (sidecar.ContextExtProc, the same string).
const ContextExtProc = "tollgate-ext-proc"

// Options tune a Server.
type Options struct {
	Logger *slog.Logger
}

// Server is the ext_authz service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	gw  *gateway.Gateway
	ids *gateway.RequestIDs
	log *slog.Logger
}

// New returns a Server checking requests through gw.
func New(gw *gateway.Gateway, opts Options) *Server {
	s := &Server{gw: gw, ids: gateway.NewRequestIDs(), log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Check implements Authorization. A denial is a CheckResponse with a
// non-OK status, never a gRPC error: Envoy treats errors as authorization
// failures that failure_mode_allow may let through.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	client := headers(h)
	x := s.gw.NewExchange(ctx, s.ids.Next())
	out := x.RequestHeaders(h.GetMethod(), h.GetPath(), client)
	if out.Action != gateway.NeedBody {
		// A refusal, or a catalog route the gateway answers itself: either
		// way the request ends here and is recorded.
		x.Settle(gateway.Completed)
		return denied(out.Response), nil
	}
	if req.GetAttributes().GetContextExtensions()[ContextExtProc] == "true" {
		// ext_proc handles the request next and records it; nothing is
		// recorded here, and nothing changes.
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
		}, nil
	}
	return allowed(out.Upstream, client, h.GetPath()), nil
}

// headers reads the request headers from header_map (encode_raw_headers,
// one entry per value) or else from the joined map.
func headers(h *authv3.AttributeContext_HttpRequest) gateway.Headers {
	if raw := h.GetHeaderMap().GetHeaders(); len(raw) > 0 {
		out := make(gateway.Headers, 0, len(raw))
		for _, hv := range raw {
			if strings.HasPrefix(hv.Key, ":") {
				continue
			}
			v := string(hv.RawValue)
			if v == "" {
				v = hv.Value
			}
			out = append(out, gateway.Header{Name: hv.Key, Value: v})
		}
		return out
	}
	out := make(gateway.Headers, 0, len(h.GetHeaders()))
	for k, v := range h.GetHeaders() {
		if !strings.HasPrefix(k, ":") {
			out = append(out, gateway.Header{Name: k, Value: v})
		}
	}
	return out
}

func allowed(up gateway.UpstreamRequest, client gateway.Headers, target string) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{Headers: make([]*corev3.HeaderValueOption, 0, len(up.Header))}
	for i, f := range up.Header {
		name := strings.ToLower(f.Name)
		ok.Headers = append(ok.Headers, envoyhdr.SetValue(name, f.Value, envoyhdr.Has(up.Header[:i], name)))
	}
	for _, f := range client {
		name := strings.ToLower(f.Name)
		if envoyhdr.Kept(name) || envoyhdr.Has(up.Header, name) || slices.Contains(ok.HeadersToRemove, name) {
			continue
		}
		ok.HeadersToRemove = append(ok.HeadersToRemove, name)
	}
	ok.QueryParametersToRemove = droppedParams(target, up.Path)
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// droppedParams lists the query parameters of the client's target that the
// gateway left out of the upstream path (credentials).
func droppedParams(target, upstream string) []string {
	_, clientQuery, _ := strings.Cut(target, "?")
	_, upQuery, _ := strings.Cut(upstream, "?")
	if clientQuery == "" {
		return nil
	}
	have, _ := url.ParseQuery(clientQuery)
	keep, _ := url.ParseQuery(upQuery)
	var drop []string
	for k := range have {
		if _, ok := keep[k]; !ok {
			drop = append(drop, k)
		}
	}
	slices.Sort(drop)
	return drop
}

func denied(r gateway.Response) *authv3.CheckResponse {
	code := codes.PermissionDenied
	if r.Status == gateway.StatusUnauthorized {
		code = codes.Unauthenticated
	}
	d := &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: envoyhdr.Status(r.Status)},
		Headers: make([]*corev3.HeaderValueOption, 0, len(r.Header)),
		Body:    string(r.Body),
	}
	for i, f := range r.Header {
		name := strings.ToLower(f.Name)
		d.Headers = append(d.Headers, envoyhdr.SetValue(name, f.Value, envoyhdr.Has(r.Header[:i], name)))
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: d},
	}
}
