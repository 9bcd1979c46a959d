package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-dev/tollgate/pkg/internal/errtext"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// maxBody bounds a JSON request body; the largest real one is a few
// hundred bytes.
const maxBody = 1 << 20

// Handler serves the API on one address: gRPC (HTTP/2 requests with a
// content-type of application/grpc) and JSON over HTTP. For gRPC without
// TLS the server must allow unencrypted HTTP/2, as Serve's does. The JSON
// routes are in docs/admin.md.
func (s *Service) Handler() http.Handler {
	gs := s.GRPCServer()
	mux := s.jsonMux()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Serve serves Handler on ln, HTTP/1.1 and unencrypted HTTP/2 (for gRPC),
// until ctx is done.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: s.Handler(), Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Service) jsonMux() *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("POST /v1/accounts", endpoint(s, pb.AccountService_CreateAccount_FullMethodName,
		body[*pb.CreateAccountRequest], s.CreateAccount))
	m.Handle("GET /v1/accounts", endpoint(s, pb.AccountService_ListAccounts_FullMethodName,
		noQuery[*pb.ListAccountsRequest], s.ListAccounts))
	m.Handle("GET /v1/accounts/{id}", endpoint(s, pb.AccountService_GetAccount_FullMethodName,
		func(r *http.Request) (*pb.GetAccountRequest, error) {
			return &pb.GetAccountRequest{Id: r.PathValue("id")}, noParams(r)
		}, s.GetAccount))
	m.Handle("POST /v1/accounts/{target}", verbs(map[string]http.Handler{
		"setPlan": endpoint(s, pb.AccountService_SetPlan_FullMethodName,
			withID(body[*pb.SetPlanRequest], (*pb.SetPlanRequest).GetId, func(r *pb.SetPlanRequest, id string) { r.Id = id }), s.SetPlan),
		"enable": endpoint(s, pb.AccountService_SetEnabled_FullMethodName,
			func(r *http.Request) (*pb.SetEnabledRequest, error) {
				return &pb.SetEnabledRequest{Id: r.PathValue("id"), Enabled: true}, noParams(r)
			}, s.SetEnabled),
		"disable": endpoint(s, pb.AccountService_SetEnabled_FullMethodName,
			func(r *http.Request) (*pb.SetEnabledRequest, error) {
				return &pb.SetEnabledRequest{Id: r.PathValue("id"), Enabled: false}, noParams(r)
			}, s.SetEnabled),
		"credit": endpoint(s, pb.AccountService_Credit_FullMethodName,
			withID(body[*pb.CreditRequest], (*pb.CreditRequest).GetId, func(r *pb.CreditRequest, id string) { r.Id = id }), s.Credit),
		"setTpmOverride": endpoint(s, pb.AccountService_SetTPMOverride_FullMethodName,
			withID(body[*pb.SetTPMOverrideRequest], (*pb.SetTPMOverrideRequest).GetId, func(r *pb.SetTPMOverrideRequest, id string) { r.Id = id }), s.SetTPMOverride),
	}))

	m.Handle("POST /v1/projects", endpoint(s, pb.ProjectService_CreateProject_FullMethodName,
		body[*pb.CreateProjectRequest], s.CreateProject))
	m.Handle("GET /v1/projects", endpoint(s, pb.ProjectService_ListProjects_FullMethodName,
		func(r *http.Request) (*pb.ListProjectsRequest, error) {
			q, err := query(r, "account")
			return &pb.ListProjectsRequest{Account: q.Get("account")}, err
		}, s.ListProjects))
	m.Handle("GET /v1/projects/{id}", endpoint(s, pb.ProjectService_GetProject_FullMethodName,
		func(r *http.Request) (*pb.GetProjectRequest, error) {
			return &pb.GetProjectRequest{Id: r.PathValue("id")}, noParams(r)
		}, s.GetProject))
	m.Handle("POST /v1/projects/{target}", verbs(map[string]http.Handler{
		"activate": endpoint(s, pb.ProjectService_ActivateProject_FullMethodName,
			func(r *http.Request) (*pb.ActivateProjectRequest, error) {
				return &pb.ActivateProjectRequest{Id: r.PathValue("id")}, noParams(r)
			}, s.ActivateProject),
		"setLimits": endpoint(s, pb.ProjectService_SetProjectLimits_FullMethodName,
			withID(body[*pb.SetProjectLimitsRequest], (*pb.SetProjectLimitsRequest).GetId, func(r *pb.SetProjectLimitsRequest, id string) { r.Id = id }), s.SetProjectLimits),
	}))

	m.Handle("POST /v1/tokens", endpoint(s, pb.TokenService_MintToken_FullMethodName,
		body[*pb.MintTokenRequest], s.MintToken))
	m.Handle("POST /v1/tokens:revoke", endpoint(s, pb.TokenService_RevokeToken_FullMethodName,
		body[*pb.RevokeTokenRequest], s.RevokeToken))

	m.Handle("GET /v1/usage", endpoint(s, pb.UsageService_GetUsage_FullMethodName,
		func(r *http.Request) (*pb.GetUsageRequest, error) {
			q, err := query(r, usageParams...)
			if err != nil {
				return nil, err
			}
			return ParseUsageQuery(q, s.now())
		}, s.GetUsage))

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, status.Errorf(codes.NotFound, "no admin API route %s %s (docs/admin.md lists them)", r.Method, r.URL.Path))
	})
	return m
}

// endpoint serves one method: authenticate, read the request, authorize
// it (GetUsage's rule needs the request), call, answer in protojson.
func endpoint[Req, Resp proto.Message](s *Service, method string, read func(*http.Request) (Req, error), call func(context.Context, Req) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(bearer(r.Header.Get("Authorization")))
		if err != nil {
			writeError(w, err)
			return
		}
		req, err := read(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if err := authorize(p, method, req); err != nil {
			writeError(w, err)
			return
		}
		resp, err := call(r.Context(), req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeMessage(w, resp)
	})
}

// verbs serves POST /v1/COLLECTION/{target} where target is ID:VERB, the
// custom-method form, handing the ID on as the "id" path value.
func verbs(byVerb map[string]http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, verb, ok := strings.Cut(r.PathValue("target"), ":")
		h := byVerb[verb]
		if !ok || id == "" || h == nil {
			var names []string
			for _, v := range slices.Sorted(maps.Keys(byVerb)) {
				names = append(names, ":"+v)
			}
			writeError(w, status.Errorf(codes.NotFound, "no admin API route POST %s: want …/ID followed by one of %s", r.URL.Path, strings.Join(names, ", ")))
			return
		}
		r.SetPathValue("id", id)
		h.ServeHTTP(w, r)
	})
}

// body reads a JSON request body into a new Req; an empty body is an
// empty request. Unknown fields are refused, so a misspelt one is not
// silently ignored.
func body[Req proto.Message](r *http.Request) (Req, error) {
	var req Req
	req = req.ProtoReflect().Type().New().Interface().(Req)
	if err := noParams(r); err != nil {
		return req, err
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return req, status.Errorf(codes.InvalidArgument, "reading the request body: %v", err)
	}
	if len(b) > maxBody {
		return req, status.Errorf(codes.InvalidArgument, "request body over %d bytes", maxBody)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return req, nil
	}
	if err := protojson.Unmarshal(b, req); err != nil {
		return req, status.Errorf(codes.InvalidArgument, "request body: %v", err)
	}
	return req, nil
}

// withID reads the body with read and sets the request's id from the
// path; a body naming another id is refused.
func withID[Req proto.Message](read func(*http.Request) (Req, error), get func(Req) string, set func(Req, string)) func(*http.Request) (Req, error) {
	return func(r *http.Request) (Req, error) {
		req, err := read(r)
		if err != nil {
			return req, err
		}
		id := r.PathValue("id")
		if got := get(req); got != "" && got != id {
			return req, status.Errorf(codes.InvalidArgument, "the body names id %s but the path %s", errtext.Quote(got), errtext.Quote(id))
		}
		set(req, id)
		return req, nil
	}
}

func noQuery[Req proto.Message](r *http.Request) (Req, error) {
	var req Req
	return req.ProtoReflect().Type().New().Interface().(Req), noParams(r)
}

func noParams(r *http.Request) error {
	_, err := query(r)
	return err
}

// query parses the query string, refusing parameters other than allowed
// and repeated ones: a typo must not widen a query unnoticed.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "query string: %v", err)
	}
	return q, checkParams(q, allowed)
}

func checkParams(q url.Values, allowed []string) error {
	for k, v := range q {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		switch {
		case !known && len(allowed) == 0:
			return status.Errorf(codes.InvalidArgument, "query parameter %s: this route takes none", errtext.Quote(k))
		case !known:
			return status.Errorf(codes.InvalidArgument, "query parameter %s: want one of %s", errtext.Quote(k), strings.Join(allowed, ", "))
		case len(v) > 1:
			return status.Errorf(codes.InvalidArgument, "query parameter %s given %d times", errtext.Quote(k), len(v))
		}
	}
	return nil
}

var usageParams = []string{"account", "project", "model", "since", "until", "by"}

// ParseUsageQuery reads GET /v1/usage's parameters: account, project,
// model, since and until (a duration before now such as 24h, or an RFC
// 3339 time) and by (hour, day or model).
func ParseUsageQuery(q url.Values, now time.Time) (*pb.GetUsageRequest, error) {
	if err := checkParams(q, usageParams); err != nil {
		return nil, err
	}
	req := &pb.GetUsageRequest{Account: q.Get("account"), Project: q.Get("project"), Model: q.Get("model")}
	for _, b := range []struct {
		name string
		dst  **timestamppb.Timestamp
	}{{"since", &req.Since}, {"until", &req.Until}} {
		v := q.Get(b.name)
		if v == "" {
			continue
		}
		t, err := ParseTimeBound(v, now)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", b.name, err)
		}
		*b.dst = timestamppb.New(t)
	}
	by, err := ParseGroupBy(q.Get("by"))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	req.By = by
	return req, nil
}

// ParseTimeBound reads a usage query bound: a duration before now ("24h",
// "90m") or an RFC 3339 time.
func ParseTimeBound(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%s: want a positive duration before now, such as 24h", errtext.Quote(v))
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: want a duration before now (24h, 90m) or an RFC 3339 time (2026-01-02T15:04:05Z)", errtext.Quote(v))
	}
	if timestamppb.New(t).CheckValid() != nil {
		return time.Time{}, fmt.Errorf("%q: out of range", v)
	}
	return t, nil
}

// ParseGroupBy reads hour, day or model ("" is no grouping).
func ParseGroupBy(v string) (pb.GroupBy, error) {
	for g, name := range groupBy {
		if name == v {
			return g, nil
		}
	}
	return 0, fmt.Errorf("group by %s: want hour, day or model", errtext.Quote(v))
}

var marshal = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// MarshalJSON renders m as the JSON API answers: the .proto field names,
// every field present, 64-bit integers as strings.
func MarshalJSON(m proto.Message) ([]byte, error) { return marshal.Marshal(m) }

func writeMessage(w http.ResponseWriter, m proto.Message) {
	b, err := marshal.Marshal(m)
	if err != nil {
		writeError(w, status.Errorf(codes.Internal, "encoding the response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// httpStatus maps gRPC codes the way the gRPC-HTTP transcoding
// conventions do.
var httpStatus = map[codes.Code]int{
	codes.OK:                 http.StatusOK,
	codes.Canceled:           499,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unauthenticated:    http.StatusUnauthorized,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.Aborted:            http.StatusConflict,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
}

// HTTPStatus is the HTTP status the JSON API answers a gRPC code with.
func HTTPStatus(c codes.Code) int {
	if s, ok := httpStatus[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// writeError answers {"error": {"code": HTTP status, "status": gRPC code
// name, "message": ...}}.
func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := HTTPStatus(st.Code())
	if st.Code() == codes.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate-admin"`)
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code": code, "status": rpccode.Code_name[int32(st.Code())], "message": st.Message(),
	}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
