package admin_test

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

func adminCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
}

// TestAccountsOverBothTransports drives one account through its life,
// alternating the generated gRPC client and the JSON API, each reading
// what the other wrote.
func TestAccountsOverBothTransports(t *testing.T) {
	e := newEnv(t)
	accounts := pb.NewAccountServiceClient(e.conn)
	ctx := adminCtx(t)

	var created pb.CreateAccountResponse
	e.http(t, adminToken, "POST", "/v1/accounts", `{"id":"acme","plan":"personal","credits":"12.5"}`).into(t, &created)
	if a := created.GetAccount(); a.GetId() != "acme" || a.GetPlan() != "personal" || !a.GetEnabled() ||
		a.GetBalance().GetMicro() != 12_500_000 || a.GetBalance().GetDecimal() != "12.50" {
		t.Fatalf("created %v", a)
	}
	got, err := accounts.GetAccount(ctx, &pb.GetAccountRequest{Id: "acme"})
	if err != nil || got.GetAccount().GetBalance().GetMicro() != 12_500_000 {
		t.Fatalf("gRPC get: %v %v", got, err)
	}

	cr, err := accounts.Credit(ctx, &pb.CreditRequest{Id: "acme", Amount: "-2.000001", Note: "correction"})
	if err != nil || cr.GetAccount().GetBalance().GetMicro() != 10_499_999 || cr.GetAccount().GetBalance().GetDecimal() != "10.499999" {
		t.Fatalf("gRPC credit -2.000001 from 12.5: %v %v", cr, err)
	}
	var credited pb.CreditResponse
	e.http(t, adminToken, "POST", "/v1/accounts/acme:credit", `{"amount":"0.000001"}`).into(t, &credited)
	if credited.GetAccount().GetBalance().GetMicro() != 10_500_000 {
		t.Fatalf("HTTP credit: %v", credited.GetAccount())
	}
	entries, err := e.store.CreditEntries(ctx, "acme")
	if err != nil || len(entries) != 3 || entries[1].Reason != "correction" || entries[2].Amount != 1 {
		t.Fatalf("credit entries %+v, %v: want the opening balance, the correction and the credit", entries, err)
	}

	var planned pb.SetPlanResponse
	e.http(t, adminToken, "POST", "/v1/accounts/acme:setPlan", `{"plan":"enterprise"}`).into(t, &planned)
	if planned.GetAccount().GetPlan() != "enterprise" {
		t.Fatalf("setPlan: %v", planned.GetAccount())
	}
	var disabled pb.SetEnabledResponse
	e.http(t, adminToken, "POST", "/v1/accounts/acme:disable", "").into(t, &disabled)
	if disabled.GetAccount().GetEnabled() {
		t.Fatal("disable left the account enabled")
	}
	if a, err := e.store.GetAccount(ctx, "acme"); err != nil || a.Enabled {
		t.Fatalf("store after disable: %+v %v", a, err)
	}
	en, err := accounts.SetEnabled(ctx, &pb.SetEnabledRequest{Id: "acme", Enabled: true})
	if err != nil || !en.GetAccount().GetEnabled() {
		t.Fatalf("enable: %v %v", en, err)
	}

	var over pb.SetTPMOverrideResponse
	e.http(t, adminToken, "POST", "/v1/accounts/acme:setTpmOverride", `{"model":"claude-3-5-haiku-20241022","tokens_per_minute":"50000"}`).into(t, &over)
	if over.GetAccount().GetTpmOverrides()["claude-3-5-haiku-20241022"] != 50000 {
		t.Fatalf("override: %v", over.GetAccount())
	}
	if _, err := accounts.SetTPMOverride(ctx, &pb.SetTPMOverrideRequest{Id: "acme", Model: "claude-3-5-haiku-20241022"}); err != nil {
		t.Fatal(err)
	}
	if a, _ := e.store.GetAccount(ctx, "acme"); len(a.TPMOverrides) != 0 {
		t.Fatalf("tpm 0 left the override: %v", a.TPMOverrides)
	}

	if _, err := accounts.CreateAccount(ctx, &pb.CreateAccountRequest{Id: "beta", Plan: "free"}); err != nil {
		t.Fatal(err)
	}
	var list pb.ListAccountsResponse
	e.http(t, adminToken, "GET", "/v1/accounts", "").into(t, &list)
	if len(list.GetAccounts()) != 2 || list.GetAccounts()[0].GetId() != "acme" || list.GetAccounts()[1].GetId() != "beta" ||
		list.GetAccounts()[1].GetBalance().GetDecimal() != "0.00" {
		t.Fatalf("list: %v", list.GetAccounts())
	}
}

// TestProjectsAndTokens covers projects and minting: a minted token names
// the project's account from the store and verifies; revoking it makes
// the verifier refuse it.
func TestProjectsAndTokens(t *testing.T) {
	e := newEnv(t)
	ctx := adminCtx(t)
	projects := pb.NewProjectServiceClient(e.conn)
	tokens := pb.NewTokenServiceClient(e.conn)
	if _, err := pb.NewAccountServiceClient(e.conn).CreateAccount(ctx, &pb.CreateAccountRequest{Id: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}

	var p pb.CreateProjectResponse
	e.http(t, adminToken, "POST", "/v1/projects", `{"id":"web","account":"acme"}`).into(t, &p)
	if p.GetProject().GetActivated() || p.GetProject().GetAccount() != "acme" {
		t.Fatalf("created %v", p.GetProject())
	}
	act, err := projects.ActivateProject(ctx, &pb.ActivateProjectRequest{Id: "web"})
	if err != nil || !act.GetProject().GetActivated() {
		t.Fatalf("activate: %v %v", act, err)
	}
	var lim pb.SetProjectLimitsResponse
	e.http(t, adminToken, "POST", "/v1/projects/web:setLimits", `{"requests_per_minute":"60","tokens_per_minute":"10000"}`).into(t, &lim)
	if lim.GetProject().GetRequestsPerMinute() != 60 || lim.GetProject().GetTokensPerMinute() != 10000 {
		t.Fatalf("limits: %v", lim.GetProject())
	}
	if _, err := projects.CreateProject(ctx, &pb.CreateProjectRequest{Id: "batch", Account: "acme", Activate: true}); err != nil {
		t.Fatal(err)
	}
	var list pb.ListProjectsResponse
	e.http(t, adminToken, "GET", "/v1/projects?account=acme", "").into(t, &list)
	if len(list.GetProjects()) != 2 || list.GetProjects()[0].GetId() != "batch" || !list.GetProjects()[0].GetActivated() {
		t.Fatalf("list: %v", list.GetProjects())
	}
	var got pb.GetProjectResponse
	e.http(t, adminToken, "GET", "/v1/projects/web", "").into(t, &got)
	if got.GetProject().GetTokensPerMinute() != 10000 {
		t.Fatalf("get: %v", got.GetProject())
	}

	var minted pb.MintTokenResponse
	e.http(t, adminToken, "POST", "/v1/tokens", `{"project":"web","ttl":"3600s"}`).into(t, &minted)
	verifier := auth.NewVerifier(map[string]ed25519.PublicKey{e.signer.KeyID(): e.signer.PublicKey()}, nil)
	c, err := verifier.Verify(minted.GetToken(), time.Now())
	if err != nil || c.Account != "acme" || c.Project != "web" || c.TokenID != minted.GetTokenId() {
		t.Fatalf("minted token verifies as %+v, %v; response %v", c, err, &minted)
	}
	if d := time.Until(c.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("token expires in %v, want the 1h asked for", d)
	}
	if minted.GetExpireTime().AsTime().Unix() != c.ExpiresAt.Unix() {
		t.Errorf("expire_time %v, token says %v", minted.GetExpireTime().AsTime(), c.ExpiresAt)
	}

	// The token reads its account's usage until it is revoked.
	if st := e.grpcCall(t, minted.GetToken(), pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, &pb.GetUsageResponse{}); st.Code() != codes.OK {
		t.Fatalf("usage with a fresh token: %v", st)
	}
	rv, err := tokens.RevokeToken(ctx, &pb.RevokeTokenRequest{Token: minted.GetToken()})
	if err != nil || rv.GetTokenId() != minted.GetTokenId() {
		t.Fatalf("revoke: %v %v", rv, err)
	}
	// The ledger's list is polled every millisecond: refused within a
	// few polls.
	st := e.grpcCall(t, minted.GetToken(), pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, &pb.GetUsageResponse{})
	for deadline := time.Now().Add(5 * time.Second); st.Code() == codes.OK && time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		st = e.grpcCall(t, minted.GetToken(), pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, &pb.GetUsageResponse{})
	}
	if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "revoked") {
		t.Fatalf("usage with a revoked token: %v", st)
	}

	// A second token, revoked by id over HTTP.
	m2, err := tokens.MintToken(ctx, &pb.MintTokenRequest{Project: "batch", Ttl: durationpb.New(2 * time.Hour)})
	if err != nil || m2.GetAccount() != "acme" || m2.GetProject() != "batch" {
		t.Fatalf("mint: %v %v", m2, err)
	}
	var r2 pb.RevokeTokenResponse
	e.http(t, adminToken, "POST", "/v1/tokens:revoke", `{"token_id":"`+m2.GetTokenId()+`"}`).into(t, &r2)
	st = e.grpcCall(t, m2.GetToken(), pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, &pb.GetUsageResponse{})
	for deadline := time.Now().Add(5 * time.Second); st.Code() == codes.OK && time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		st = e.grpcCall(t, m2.GetToken(), pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, &pb.GetUsageResponse{})
	}
	if st.Code() != codes.Unauthenticated {
		t.Fatalf("usage with a token revoked by id: %v", st)
	}

	// The ledger keeps each revocation until its token would expire: the
	// token's own expiry when the token was given, MaxTokenTTL from now
	// (no minted token lives longer) when only its id was.
	rs, err := e.store.Revocations(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].TokenID != minted.GetTokenId() || !rs[0].ExpiresAt.Equal(c.ExpiresAt) ||
		rs[1].TokenID != m2.GetTokenId() || time.Until(rs[1].ExpiresAt) < admin.MaxTokenTTL-time.Minute || time.Until(rs[1].ExpiresAt) > admin.MaxTokenTTL {
		t.Errorf("ledger revocations = %+v", rs)
	}
}

// TestErrors checks each failure's gRPC code, HTTP status and message,
// over both transports.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := adminCtx(t)
	if _, err := pb.NewAccountServiceClient(e.conn).CreateAccount(ctx, &pb.CreateAccountRequest{Id: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		method   string
		grpcReq  proto.Message
		httpVerb string
		path     string
		body     string
		code     codes.Code
		status   int
		message  string // a part of the message a user needs
	}{
		{name: "duplicate account", method: pb.AccountService_CreateAccount_FullMethodName, grpcReq: &pb.CreateAccountRequest{Id: "acme", Plan: "pro"},
			httpVerb: "POST", path: "/v1/accounts", body: `{"id":"acme","plan":"pro"}`, code: codes.AlreadyExists, status: 409, message: "acme"},
		{name: "bad plan", method: pb.AccountService_CreateAccount_FullMethodName, grpcReq: &pb.CreateAccountRequest{Id: "new", Plan: "gold"},
			httpVerb: "POST", path: "/v1/accounts", body: `{"id":"new","plan":"gold"}`, code: codes.InvalidArgument, status: 400, message: "free, personal, pro or enterprise"},
		{name: "bad id", method: pb.AccountService_CreateAccount_FullMethodName, grpcReq: &pb.CreateAccountRequest{Id: "Not A Slug", Plan: "pro"},
			httpVerb: "POST", path: "/v1/accounts", body: `{"id":"Not A Slug","plan":"pro"}`, code: codes.InvalidArgument, status: 400, message: "lowercase"},
		{name: "too precise credits", method: pb.AccountService_CreateAccount_FullMethodName, grpcReq: &pb.CreateAccountRequest{Id: "new", Plan: "pro", Credits: "1.0000001"},
			httpVerb: "POST", path: "/v1/accounts", body: `{"id":"new","plan":"pro","credits":"1.0000001"}`, code: codes.InvalidArgument, status: 400, message: "6 decimal places"},
		{name: "negative opening balance", method: pb.AccountService_CreateAccount_FullMethodName, grpcReq: &pb.CreateAccountRequest{Id: "new", Plan: "pro", Credits: "-5"},
			httpVerb: "POST", path: "/v1/accounts", body: `{"id":"new","plan":"pro","credits":"-5"}`, code: codes.InvalidArgument, status: 400, message: "zero or more"},
		{name: "unknown account", method: pb.AccountService_GetAccount_FullMethodName, grpcReq: &pb.GetAccountRequest{Id: "nobody"},
			httpVerb: "GET", path: "/v1/accounts/nobody", code: codes.NotFound, status: 404, message: "nobody"},
		{name: "credit unknown account", method: pb.AccountService_Credit_FullMethodName, grpcReq: &pb.CreditRequest{Id: "nobody", Amount: "1"},
			httpVerb: "POST", path: "/v1/accounts/nobody:credit", body: `{"amount":"1"}`, code: codes.NotFound, status: 404, message: "nobody"},
		{name: "zero credit", method: pb.AccountService_Credit_FullMethodName, grpcReq: &pb.CreditRequest{Id: "acme", Amount: "0"},
			httpVerb: "POST", path: "/v1/accounts/acme:credit", body: `{"amount":"0"}`, code: codes.InvalidArgument, status: 400, message: "zero"},
		{name: "override of an unknown model", method: pb.AccountService_SetTPMOverride_FullMethodName, grpcReq: &pb.SetTPMOverrideRequest{Id: "acme", Model: "gpt-9", TokensPerMinute: 5},
			httpVerb: "POST", path: "/v1/accounts/acme:setTpmOverride", body: `{"model":"gpt-9","tokens_per_minute":5}`, code: codes.InvalidArgument, status: 400, message: "gpt-9"},
		{name: "project of an unknown account", method: pb.ProjectService_CreateProject_FullMethodName, grpcReq: &pb.CreateProjectRequest{Id: "web", Account: "nobody"},
			httpVerb: "POST", path: "/v1/projects", body: `{"id":"web","account":"nobody"}`, code: codes.NotFound, status: 404, message: "nobody"},
		{name: "activate an unknown project", method: pb.ProjectService_ActivateProject_FullMethodName, grpcReq: &pb.ActivateProjectRequest{Id: "ghost"},
			httpVerb: "POST", path: "/v1/projects/ghost:activate", code: codes.NotFound, status: 404, message: "ghost"},
		{name: "mint for an unknown project", method: pb.TokenService_MintToken_FullMethodName, grpcReq: &pb.MintTokenRequest{Project: "ghost"},
			httpVerb: "POST", path: "/v1/tokens", body: `{"project":"ghost"}`, code: codes.NotFound, status: 404, message: "ghost"},
		{name: "mint with a negative ttl", method: pb.TokenService_MintToken_FullMethodName, grpcReq: &pb.MintTokenRequest{Project: "ghost", Ttl: durationpb.New(-time.Hour)},
			httpVerb: "POST", path: "/v1/tokens", body: `{"project":"ghost","ttl":"-3600s"}`, code: codes.InvalidArgument, status: 400, message: "ttl"},
		{name: "revoke a malformed token", method: pb.TokenService_RevokeToken_FullMethodName, grpcReq: &pb.RevokeTokenRequest{Token: "tg1.garbage"},
			httpVerb: "POST", path: "/v1/tokens:revoke", body: `{"token":"tg1.garbage"}`, code: codes.InvalidArgument, status: 400, message: "malformed"},
		{name: "revoke an id with a newline", method: pb.TokenService_RevokeToken_FullMethodName, grpcReq: &pb.RevokeTokenRequest{TokenId: "a\nb"},
			httpVerb: "POST", path: "/v1/tokens:revoke", body: `{"token_id":"a\nb"}`, code: codes.InvalidArgument, status: 400, message: "control character"},
		{name: "revoke a provider key given as an id", method: pb.TokenService_RevokeToken_FullMethodName, grpcReq: &pb.RevokeTokenRequest{TokenId: "sk-ant-api03-Zx9Yw8Vu7Ts6"},
			httpVerb: "POST", path: "/v1/tokens:revoke", body: `{"token_id":"sk-ant-api03-Zx9Yw8Vu7Ts6"}`, code: codes.InvalidArgument, status: 400, message: "looks like a provider key"},
		{name: "revoke an id longer than any token id", method: pb.TokenService_RevokeToken_FullMethodName, grpcReq: &pb.RevokeTokenRequest{TokenId: strings.Repeat("a", 65)},
			httpVerb: "POST", path: "/v1/tokens:revoke", body: `{"token_id":"` + strings.Repeat("a", 65) + `"}`, code: codes.InvalidArgument, status: 400, message: "at most 64"},
		{name: "usage of an unknown account", method: pb.UsageService_GetUsage_FullMethodName, grpcReq: &pb.GetUsageRequest{Account: "nobody"},
			httpVerb: "GET", path: "/v1/usage?account=nobody", code: codes.NotFound, status: 404, message: "nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := e.grpcCall(t, adminToken, tc.method, tc.grpcReq, responses[tc.method]())
			wantCode(t, "gRPC", st, tc.code)
			if !strings.Contains(st.Message(), tc.message) {
				t.Errorf("gRPC message %q lacks %q", st.Message(), tc.message)
			}
			r := e.http(t, adminToken, tc.httpVerb, tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tc.status)
			}
			eb := r.err(t)
			if eb.Error.Code != tc.status || eb.Error.Status != statusNames[tc.code] || !strings.Contains(eb.Error.Message, tc.message) {
				t.Errorf("HTTP error body %s: want code %d, status %s, a message with %q", r.body, tc.status, statusNames[tc.code], tc.message)
			}
		})
	}
}

// TestHugeValuesAreNotEchoed: a refused value of 512 KiB is quoted in
// part, so the error stays one readable line, over gRPC and JSON alike.
func TestHugeValuesAreNotEchoed(t *testing.T) {
	e := newEnv(t)
	ctx := adminCtx(t)
	if _, err := pb.NewAccountServiceClient(e.conn).CreateAccount(ctx, &pb.CreateAccountRequest{Id: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("x", 512<<10)
	for _, tc := range []struct {
		name     string
		method   string
		grpcReq  proto.Message
		httpVerb string
		path     string
		body     string
		code     codes.Code
	}{
		{"account id", pb.AccountService_CreateAccount_FullMethodName, &pb.CreateAccountRequest{Id: huge, Plan: "pro"},
			"POST", "/v1/accounts", `{"id":"` + huge + `","plan":"pro"}`, codes.InvalidArgument},
		{"plan", pb.AccountService_CreateAccount_FullMethodName, &pb.CreateAccountRequest{Id: "new", Plan: huge},
			"POST", "/v1/accounts", `{"id":"new","plan":"` + huge + `"}`, codes.InvalidArgument},
		{"unknown account", pb.AccountService_GetAccount_FullMethodName, &pb.GetAccountRequest{Id: huge},
			"GET", "/v1/accounts/" + huge[:16<<10], "", codes.NotFound},
		{"credits", pb.AccountService_Credit_FullMethodName, &pb.CreditRequest{Id: "acme", Amount: huge},
			"POST", "/v1/accounts/acme:credit", `{"amount":"` + huge + `"}`, codes.InvalidArgument},
		{"note", pb.AccountService_Credit_FullMethodName, &pb.CreditRequest{Id: "acme", Amount: "1", Note: huge},
			"POST", "/v1/accounts/acme:credit", `{"amount":"1","note":"` + huge + `"}`, codes.InvalidArgument},
		{"model", pb.AccountService_SetTPMOverride_FullMethodName, &pb.SetTPMOverrideRequest{Id: "acme", Model: huge, TokensPerMinute: 5},
			"POST", "/v1/accounts/acme:setTpmOverride", `{"model":"` + huge + `","tokens_per_minute":5}`, codes.InvalidArgument},
		{"usage project", pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{Account: "acme", Project: huge},
			"GET", "/v1/usage?account=acme&project=" + huge[:16<<10], "", codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxLen = 500
			st := e.grpcCall(t, adminToken, tc.method, tc.grpcReq, responses[tc.method]())
			wantCode(t, "gRPC", st, tc.code)
			if len(st.Message()) > maxLen || !strings.Contains(st.Message(), "xxxxxxxx") {
				t.Errorf("gRPC message of %d bytes (want at most %d, quoting the value in part): %.200s", len(st.Message()), maxLen, st.Message())
			}
			r := e.http(t, adminToken, tc.httpVerb, tc.path, tc.body)
			if m := r.err(t).Error.Message; r.status != admin.HTTPStatus(tc.code) || len(m) > maxLen {
				t.Errorf("HTTP %d, message of %d bytes (want %d, at most %d): %.200s", r.status, len(m), admin.HTTPStatus(tc.code), maxLen, m)
			}
		})
	}
}

// TestHTTPRequestErrors covers what only the JSON API can get wrong.
func TestHTTPRequestErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, verb, path, body string
		status                 int
		message                string
	}{
		{"unknown route", "GET", "/v1/nothing", "", 404, "no admin API route"},
		{"unknown verb", "POST", "/v1/accounts/acme:explode", "", 404, ":credit"},
		{"verb without id", "POST", "/v1/accounts/:credit", "", 404, "no admin API route"},
		{"unknown body field", "POST", "/v1/accounts", `{"id":"a","plan":"pro","credit":"5"}`, 400, "credit"},
		{"body not JSON", "POST", "/v1/accounts", `id=a`, 400, "request body"},
		{"body id differs from path", "POST", "/v1/accounts/acme:credit", `{"id":"other","amount":"1"}`, 400, "other"},
		{"unknown query parameter", "GET", "/v1/usage?acount=acme", "", 400, "acount"},
		{"repeated query parameter", "GET", "/v1/usage?by=hour&by=day", "", 400, "2 times"},
		{"bad since", "GET", "/v1/usage?since=yesterday", "", 400, "RFC 3339"},
		{"bad by", "GET", "/v1/usage?by=week", "", 400, "hour, day or model"},
		{"query on a route without one", "GET", "/v1/accounts?plan=pro", "", 400, "plan"},
		{"oversized body", "POST", "/v1/accounts", `{"id":"` + strings.Repeat("a", 2<<20) + `"}`, 400, "over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.http(t, adminToken, tc.verb, tc.path, tc.body)
			if r.status != tc.status || !strings.Contains(r.err(t).Error.Message, tc.message) {
				t.Errorf("HTTP %d %s; want %d with %q", r.status, r.body, tc.status, tc.message)
			}
		})
	}
	r := e.http(t, "", "GET", "/v1/accounts", "")
	if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no token: HTTP %d, WWW-Authenticate %q", r.status, r.header.Get("WWW-Authenticate"))
	}
}

// responses makes an empty response message for each method the tests
// invoke by name.
var responses = map[string]func() proto.Message{
	pb.AccountService_CreateAccount_FullMethodName:   func() proto.Message { return &pb.CreateAccountResponse{} },
	pb.AccountService_GetAccount_FullMethodName:      func() proto.Message { return &pb.GetAccountResponse{} },
	pb.AccountService_ListAccounts_FullMethodName:    func() proto.Message { return &pb.ListAccountsResponse{} },
	pb.AccountService_Credit_FullMethodName:          func() proto.Message { return &pb.CreditResponse{} },
	pb.AccountService_SetTPMOverride_FullMethodName:  func() proto.Message { return &pb.SetTPMOverrideResponse{} },
	pb.ProjectService_CreateProject_FullMethodName:   func() proto.Message { return &pb.CreateProjectResponse{} },
	pb.ProjectService_ActivateProject_FullMethodName: func() proto.Message { return &pb.ActivateProjectResponse{} },
	pb.TokenService_MintToken_FullMethodName:         func() proto.Message { return &pb.MintTokenResponse{} },
	pb.TokenService_RevokeToken_FullMethodName:       func() proto.Message { return &pb.RevokeTokenResponse{} },
	pb.UsageService_GetUsage_FullMethodName:          func() proto.Message { return &pb.GetUsageResponse{} },
}

// statusNames are the canonical google.rpc.Code names the JSON errors carry.
var statusNames = map[codes.Code]string{
	codes.InvalidArgument:  "INVALID_ARGUMENT",
	codes.NotFound:         "NOT_FOUND",
	codes.AlreadyExists:    "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED",
	codes.Unauthenticated:  "UNAUTHENTICATED",
}
