package admin_test

import (
	"context"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// seed stores accounts a and b with projects and these usage records,
// and returns the records.
func seed(t *testing.T, e *env, base time.Time) []usage.Record {
	t.Helper()
	ctx := context.Background()
	for _, acc := range []string{"a", "b"} {
		if _, err := e.store.CreateAccount(ctx, acc, "pro", 100_000_000); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.CreateProject(ctx, acc+"-web", acc, true); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.CreateProject(ctx, acc+"-batch", acc, true); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(id, acc, project, model string, at time.Duration, tok usage.Tokens, credits int64, reason string) usage.Record {
		r := usage.Record{RequestID: id, Time: base.Add(at), Account: acc, Project: project, Provider: "openai", Model: model,
			Operation: "chat", Status: usage.StatusOK, HTTPStatus: 200, Tokens: tok, Credits: credits}
		if reason != "" {
			r.Status, r.HTTPStatus, r.Reason, r.Tokens, r.Credits = usage.StatusRejected, 429, reason, usage.Tokens{}, 0
		}
		return r
	}
	recs := []usage.Record{
		rec("r1", "a", "a-web", "gpt-4o-mini", 10*time.Minute, usage.Tokens{Input: 100, CachedInput: 20, Output: 50, Reasoning: 10}, 1_500_000, ""),
		rec("r2", "a", "a-web", "gpt-4o-mini", 20*time.Minute, usage.Tokens{Input: 7, Output: 3}, 250_001, ""),
		rec("r3", "a", "a-batch", "claude-3-5-haiku-20241022", 65*time.Minute, usage.Tokens{Input: 1000, CacheWrite: 300, Output: 1}, 999, ""),
		rec("r4", "a", "a-web", "claude-3-5-haiku-20241022", 70*time.Minute, usage.Tokens{}, 0, "rate_limited"),
		rec("r5", "a", "a-web", "gpt-4o-mini", 71*time.Minute, usage.Tokens{}, 0, "rate_limited"),
		rec("r6", "a", "a-web", "gpt-4o-mini", 72*time.Minute, usage.Tokens{}, 0, "insufficient_quota"),
		rec("r7", "a", "a-web", "gpt-4o-mini", -25*time.Hour, usage.Tokens{Input: 5, Output: 5}, 11, ""),
		rec("r8", "b", "b-web", "gpt-4o-mini", 15*time.Minute, usage.Tokens{Input: 40000, Output: 40000}, 77_000_000, ""),
	}
	if err := e.store.InsertUsage(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	return recs
}

// expect sums recs the way GetUsage should, independently of the ledger:
// key picks each record's bucket, keep selects records.
func expect(recs []usage.Record, keep func(usage.Record) bool, key func(usage.Record) string) map[string]*pb.UsageBucket {
	out := map[string]*pb.UsageBucket{}
	for _, r := range recs {
		if !keep(r) {
			continue
		}
		k := key(r)
		b := out[k]
		if b == nil {
			b = &pb.UsageBucket{Tokens: &pb.UsageTokens{}, Credits: &pb.Credits{}, Rejections: map[string]int64{}}
			out[k] = b
		}
		b.Tokens.Input += r.Input
		b.Tokens.CachedInput += r.CachedInput
		b.Tokens.CacheWrite += r.CacheWrite
		b.Tokens.Output += r.Output
		b.Tokens.Reasoning += r.Reasoning
		b.Requests++
		b.Credits.Micro += r.Credits
		if r.Status == usage.StatusRejected {
			b.Rejections[r.Reason]++
		}
	}
	return out
}

// bucketKey names a returned bucket the way expect's key functions do.
func bucketKey(by pb.GroupBy, b *pb.UsageBucket) string {
	switch by {
	case pb.GroupBy_GROUP_BY_MODEL:
		return b.GetModel()
	case pb.GroupBy_GROUP_BY_HOUR, pb.GroupBy_GROUP_BY_DAY:
		return b.GetStart().AsTime().UTC().Format(time.RFC3339)
	}
	return ""
}

func compareBuckets(t *testing.T, by pb.GroupBy, got *pb.GetUsageResponse, want map[string]*pb.UsageBucket) {
	t.Helper()
	var keys []string
	for _, b := range got.GetBuckets() {
		keys = append(keys, bucketKey(by, b))
	}
	wantKeys := slices.Sorted(maps.Keys(want))
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("buckets %v, want %v (in order)", keys, wantKeys)
	}
	for _, b := range got.GetBuckets() {
		w := want[bucketKey(by, b)]
		if !proto.Equal(b.GetTokens(), w.GetTokens()) || b.GetRequests() != w.GetRequests() ||
			b.GetCredits().GetMicro() != w.GetCredits().GetMicro() || !maps.Equal(b.GetRejections(), w.GetRejections()) {
			t.Errorf("bucket %s = %v, want tokens %v requests %d credits %d rejections %v", bucketKey(by, b), b,
				w.GetTokens(), w.GetRequests(), w.GetCredits().GetMicro(), w.GetRejections())
		}
	}
}

func TestUsage(t *testing.T) {
	e := newEnv(t)
	base := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	recs := seed(t, e, base)
	since := base.Add(-2 * 24 * time.Hour)
	all := func(r usage.Record) bool { return true }
	ofA := func(r usage.Record) bool { return r.Account == "a" }
	hour := func(r usage.Record) string { return r.Time.UTC().Truncate(time.Hour).Format(time.RFC3339) }
	day := func(r usage.Record) string {
		y, m, d := r.Time.UTC().Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	}
	model := func(r usage.Record) string { return r.Model }
	none := func(r usage.Record) string { return "" }

	for _, tc := range []struct {
		name  string
		query url.Values
		req   *pb.GetUsageRequest
		by    pb.GroupBy
		want  map[string]*pb.UsageBucket
	}{
		{"account by hour", url.Values{"account": {"a"}, "by": {"hour"}}, &pb.GetUsageRequest{Account: "a"}, pb.GroupBy_GROUP_BY_HOUR, expect(recs, ofA, hour)},
		{"account by day", url.Values{"account": {"a"}, "by": {"day"}}, &pb.GetUsageRequest{Account: "a"}, pb.GroupBy_GROUP_BY_DAY, expect(recs, ofA, day)},
		{"account by model", url.Values{"account": {"a"}, "by": {"model"}}, &pb.GetUsageRequest{Account: "a"}, pb.GroupBy_GROUP_BY_MODEL, expect(recs, ofA, model)},
		{"project", url.Values{"account": {"a"}, "project": {"a-batch"}}, &pb.GetUsageRequest{Account: "a", Project: "a-batch"}, 0,
			expect(recs, func(r usage.Record) bool { return r.Project == "a-batch" }, none)},
		{"model", url.Values{"model": {"gpt-4o-mini"}, "by": {"model"}}, &pb.GetUsageRequest{Model: "gpt-4o-mini"}, pb.GroupBy_GROUP_BY_MODEL,
			expect(recs, func(r usage.Record) bool { return r.Model == "gpt-4o-mini" }, model)},
		{"every account", url.Values{}, &pb.GetUsageRequest{}, 0, expect(recs, all, none)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := maps.Clone(tc.query)
			q.Set("since", since.Format(time.RFC3339))
			var viaHTTP pb.GetUsageResponse
			e.http(t, adminToken, "GET", "/v1/usage?"+q.Encode(), "").into(t, &viaHTTP)
			compareBuckets(t, tc.by, &viaHTTP, tc.want)

			req := proto.Clone(tc.req).(*pb.GetUsageRequest)
			req.Since, req.By = timestamppb.New(since), tc.by
			var viaGRPC pb.GetUsageResponse
			if st := e.grpcCall(t, adminToken, pb.UsageService_GetUsage_FullMethodName, req, &viaGRPC); st.Code() != codes.OK {
				t.Fatal(st)
			}
			if !proto.Equal(&viaHTTP, &viaGRPC) {
				t.Errorf("HTTP and gRPC answers differ:\n%v\n%v", &viaHTTP, &viaGRPC)
			}
			total := expect(recs, func(r usage.Record) bool {
				_, ok := tc.want[map[pb.GroupBy]func(usage.Record) string{
					pb.GroupBy_GROUP_BY_HOUR: hour, pb.GroupBy_GROUP_BY_DAY: day, pb.GroupBy_GROUP_BY_MODEL: model, 0: none,
				}[tc.by](r)]
				return ok && (tc.req.Account == "" || r.Account == tc.req.Account) && (tc.req.Project == "" || r.Project == tc.req.Project) &&
					(tc.req.Model == "" || r.Model == tc.req.Model)
			}, none)[""]
			compareBuckets(t, 0, &pb.GetUsageResponse{Buckets: []*pb.UsageBucket{viaHTTP.GetTotal()}}, map[string]*pb.UsageBucket{"": total})
		})
	}

	// The default window is the last 24 hours: r7, 25 hours before base,
	// is left out.
	var recent pb.GetUsageResponse
	e.http(t, adminToken, "GET", "/v1/usage?account=a", "").into(t, &recent)
	if got := recent.GetTotal().GetRequests(); got != 6 {
		t.Errorf("default window: %d requests, want the 6 of the last 24 hours", got)
	}
	// Credits come as integer micro-credits and an exact decimal.
	if c := recent.GetTotal().GetCredits(); c.GetMicro() != 1_751_000 || c.GetDecimal() != "1.751" {
		t.Errorf("credits %v, want 1751000 micro, \"1.751\"", c)
	}
	var ranged pb.GetUsageResponse
	e.http(t, adminToken, "GET", "/v1/usage?account=a&since="+url.QueryEscape(base.Add(time.Hour).Format(time.RFC3339))+
		"&until="+url.QueryEscape(base.Add(2*time.Hour).Format(time.RFC3339)), "").into(t, &ranged)
	if got := ranged.GetTotal().GetRequests(); got != 4 {
		t.Errorf("the hour after base: %d requests, want r3–r6", got)
	}
}

// TestAccountTokenReadsOwnUsageOnly: a gateway token reads its account's
// usage and nothing else, over gRPC and HTTP alike.
func TestAccountTokenReadsOwnUsageOnly(t *testing.T) {
	e := newEnv(t)
	base := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	recs := seed(t, e, base)
	tokA := e.gatewayToken(t, "a", "a-web", 0)
	expired := e.gatewayToken(t, "a", "a-web", 0)
	{
		c, _ := auth.Parse(expired)
		var err error
		expired, err = e.signer.Mint(auth.Claims{Account: "a", Project: "a-web", IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour), TokenID: c.TokenID})
		if err != nil {
			t.Fatal(err)
		}
	}
	stranger, err := auth.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := stranger.Mint(auth.Claims{Account: "a", Project: "a-web", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var wantA int64
	for _, r := range recs {
		if r.Account == "a" && !r.Time.Before(base.Add(-24*time.Hour)) {
			wantA++
		}
	}

	for _, tc := range []struct {
		name    string
		token   string
		method  string
		req     proto.Message
		verb    string
		path    string
		body    string
		code    codes.Code
		status  int
		message string
	}{
		{"own usage, account implied", tokA, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, "GET", "/v1/usage", "", codes.OK, 200, ""},
		{"own usage, account named", tokA, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{Account: "a"}, "GET", "/v1/usage?account=a", "", codes.OK, 200, ""},
		{"another account's usage", tokA, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{Account: "b"}, "GET", "/v1/usage?account=b", "", codes.PermissionDenied, 403, `"b"`},
		{"another account's project", tokA, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{Account: "b", Project: "b-web"}, "GET", "/v1/usage?account=b&project=b-web", "", codes.PermissionDenied, 403, "only"},
		// Another account's project and a project no account has get the
		// same answer: a token must not learn other accounts' projects.
		{"another account's project, own account implied", tokA, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{Project: "b-web"}, "GET", "/v1/usage?project=b-web", "", codes.NotFound, 404, `project "b-web": not found in account "a"`},
		{"a project no account has", tokA, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{Project: "nosuch"}, "GET", "/v1/usage?project=nosuch", "", codes.NotFound, 404, `project "nosuch": not found in account "a"`},
		{"list accounts", tokA, pb.AccountService_ListAccounts_FullMethodName, &pb.ListAccountsRequest{}, "GET", "/v1/accounts", "", codes.PermissionDenied, 403, "admin token"},
		{"credit itself", tokA, pb.AccountService_Credit_FullMethodName, &pb.CreditRequest{Id: "a", Amount: "1000"}, "POST", "/v1/accounts/a:credit", `{"amount":"1000"}`, codes.PermissionDenied, 403, "admin token"},
		{"mint a token", tokA, pb.TokenService_MintToken_FullMethodName, &pb.MintTokenRequest{Project: "a-web"}, "POST", "/v1/tokens", `{"project":"a-web"}`, codes.PermissionDenied, 403, "admin token"},
		{"no token", "", pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, "GET", "/v1/usage", "", codes.Unauthenticated, 401, "bearer"},
		{"wrong admin token", adminToken + "x", pb.AccountService_ListAccounts_FullMethodName, &pb.ListAccountsRequest{}, "GET", "/v1/accounts", "", codes.Unauthenticated, 401, "neither"},
		{"admin token prefix", adminToken[:len(adminToken)-1], pb.AccountService_ListAccounts_FullMethodName, &pb.ListAccountsRequest{}, "GET", "/v1/accounts", "", codes.Unauthenticated, 401, "neither"},
		{"expired gateway token", expired, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, "GET", "/v1/usage", "", codes.Unauthenticated, 401, "expired"},
		{"gateway token of an unknown key", foreign, pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, "GET", "/v1/usage", "", codes.Unauthenticated, 401, "unknown key"},
		{"tampered gateway token", tampered(tokA), pb.UsageService_GetUsage_FullMethodName, &pb.GetUsageRequest{}, "GET", "/v1/usage", "", codes.Unauthenticated, 401, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := responses[tc.method]()
			st := e.grpcCall(t, tc.token, tc.method, tc.req, resp)
			wantCode(t, "gRPC", st, tc.code)
			if !strings.Contains(st.Message(), tc.message) {
				t.Errorf("gRPC message %q lacks %q", st.Message(), tc.message)
			}
			if tc.token != "" && strings.Contains(st.Message(), tc.token) {
				t.Errorf("the error quotes the token")
			}
			r := e.http(t, tc.token, tc.verb, tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.code != codes.OK {
				if m := r.err(t).Error.Message; !strings.Contains(m, tc.message) || (tc.token != "" && strings.Contains(m, tc.token)) {
					t.Errorf("HTTP error message %q: want %q in it and no token", m, tc.message)
				}
				return
			}
			var viaHTTP pb.GetUsageResponse
			r.into(t, &viaHTTP)
			for _, got := range []*pb.GetUsageResponse{&viaHTTP, resp.(*pb.GetUsageResponse)} {
				if n := got.GetTotal().GetRequests(); n != wantA {
					t.Errorf("account a's token sees %d requests, want a's %d (b's must not show)", n, wantA)
				}
			}
		})
	}
}

// TestAdminTokenFile: the token is made once, private, and shared by
// processes that start together.
func TestAdminTokenFile(t *testing.T) {
	path := t.TempDir() + "/admin.token"
	results := make(chan string, 8)
	for range 8 {
		go func() {
			tok, err := admin.LoadOrCreateAdminToken(path)
			if err != nil {
				t.Error(err)
			}
			results <- tok
		}()
	}
	var first string
	for i := range 8 {
		tok := <-results
		if i == 0 {
			first = tok
		}
		if tok != first || !strings.HasPrefix(tok, admin.AdminTokenPrefix) || len(tok) < len(admin.AdminTokenPrefix)+40 {
			t.Fatalf("concurrent creators got %q and %q", first, tok)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", fi, err)
	}
	again, err := admin.LoadOrCreateAdminToken(path)
	if err != nil || again != first {
		t.Fatalf("reload: %q %v, want %q", again, err, first)
	}
	if err := os.WriteFile(path, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.LoadOrCreateAdminToken(path); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty token file: %v, want an error (it would let anyone in)", err)
	}
	const guessable = "changeme-2024"
	if err := os.WriteFile(path, []byte(guessable+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.LoadOrCreateAdminToken(path); err == nil || !strings.Contains(err.Error(), "at least") || strings.Contains(err.Error(), guessable) {
		t.Errorf("a short token file: %v, want an error that does not quote it (a guessable token would let anyone in)", err)
	}
}

// TestCheckAdminToken: a token short enough to be found by guessing is
// refused, without being quoted.
func TestCheckAdminToken(t *testing.T) {
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"", false},
		{"hunter2", false},
		{strings.Repeat("x", admin.MinAdminTokenLen-1), false},
		{strings.Repeat("x", admin.MinAdminTokenLen), true},
		{adminToken, true},
	} {
		err := admin.CheckAdminToken(tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("CheckAdminToken(%d characters) = %v, want ok %v", len(tc.token), err, tc.ok)
		}
		if err != nil && tc.token != "" && strings.Contains(err.Error(), tc.token) {
			t.Errorf("the error %q quotes the token", err)
		}
	}
}

// tampered changes one signature character of tok, one whose six bits all
// count (the last character of the signature carries only two).
func tampered(tok string) string {
	i := len(tok) - 2
	c := byte('A')
	if tok[i] == c {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}
