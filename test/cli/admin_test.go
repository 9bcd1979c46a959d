package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// must runs tollgate and fails the test unless it exits 0.
func must(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := tollgate(t, args...)
	if code != 0 {
		t.Fatalf("tollgate %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

// account reads an account back with `account show --json`.
func account(t *testing.T, dir, name string) *pb.Account {
	t.Helper()
	var a pb.Account
	if err := protojson.Unmarshal([]byte(must(t, "account", "show", name, "--json", "--data-dir", dir)), &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func TestAccountAndProjectCommands(t *testing.T) {
	dir := t.TempDir()
	out := must(t, "account", "create", "acme", "--plan", "personal", "--credits", "12.5", "--data-dir", dir)
	if !strings.Contains(out, "12.50 credits") || !strings.Contains(out, "personal") {
		t.Errorf("create printed:\n%s", out)
	}
	if a := account(t, dir, "acme"); a.GetBalance().GetMicro() != 12_500_000 || !a.GetEnabled() {
		t.Fatalf("after create: %v", a)
	}
	// A negative amount is an amount, not a flag; flags may follow it.
	must(t, "account", "credit", "acme", "-3.000001", "--note", "refund reversed", "--data-dir", dir)
	must(t, "account", "credit", "--data-dir", dir, "acme", "0.5")
	must(t, "account", "credit", "acme", "--", "-1", "--data-dir", dir)
	must(t, "account", "credit", "acme", "+1", "--data-dir", dir)
	if a := account(t, dir, "acme"); a.GetBalance().GetMicro() != 9_999_999 || a.GetBalance().GetDecimal() != "9.999999" {
		t.Fatalf("12.5 - 3.000001 + 0.5: balance %v", a.GetBalance())
	}
	must(t, "account", "set-plan", "acme", "enterprise", "--data-dir", dir)
	must(t, "account", "disable", "acme", "--data-dir", dir)
	if a := account(t, dir, "acme"); a.GetPlan() != "enterprise" || a.GetEnabled() {
		t.Fatalf("after set-plan and disable: %v", a)
	}
	must(t, "account", "enable", "acme", "--data-dir", dir)
	if a := account(t, dir, "acme"); !a.GetEnabled() {
		t.Fatal("enable left the account disabled")
	}
	must(t, "account", "set-tpm", "acme", "gpt-4o-mini", "5000000", "--data-dir", dir)
	if a := account(t, dir, "acme"); a.GetTpmOverrides()["gpt-4o-mini"] != 5_000_000 {
		t.Fatalf("after set-tpm: overrides %v", a.GetTpmOverrides())
	}
	must(t, "account", "set-tpm", "acme", "gpt-4o-mini", "0", "--data-dir", dir)
	if a := account(t, dir, "acme"); len(a.GetTpmOverrides()) != 0 {
		t.Fatalf("set-tpm 0 left overrides %v", a.GetTpmOverrides())
	}
	// A model the gateways' catalog file adds is named with that file.
	overlay := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(overlay, []byte("models: [{provider: openai, name: gpt-3.5-turbo, like: gpt-4o-mini}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := tollgate(t, "account", "set-tpm", "acme", "gpt-3.5-turbo", "7000", "--data-dir", dir); code == 0 || !strings.Contains(stderr, "gpt-3.5-turbo") {
		t.Errorf("set-tpm of a model not in the catalog: exit %d, stderr %q", code, stderr)
	}
	must(t, "account", "set-tpm", "acme", "gpt-3.5-turbo", "7000", "--catalog", overlay, "--data-dir", dir)
	if a := account(t, dir, "acme"); a.GetTpmOverrides()["gpt-3.5-turbo"] != 7000 {
		t.Fatalf("set-tpm with --catalog: overrides %v", a.GetTpmOverrides())
	}
	must(t, "account", "set-tpm", "acme", "gpt-3.5-turbo", "0", "--catalog", overlay, "--data-dir", dir)

	must(t, "project", "create", "web", "--account", "acme", "--data-dir", dir)
	if out := must(t, "account", "show", "acme", "--data-dir", dir); !strings.Contains(out, "web (not activated)") {
		t.Errorf("show lists the project as:\n%s", out)
	}
	must(t, "project", "activate", "web", "--data-dir", dir)
	var p pb.Project
	if err := protojson.Unmarshal([]byte(must(t, "project", "show", "web", "--json", "--data-dir", dir)), &p); err != nil || !p.GetActivated() || p.GetAccount() != "acme" {
		t.Fatalf("project after activate: %v %v", &p, err)
	}

	tok := strings.TrimSpace(must(t, "token", "mint", "--project", "web", "--ttl", "1h", "--data-dir", dir))
	var claims map[string]any
	if err := json.Unmarshal([]byte(must(t, "token", "inspect", tok, "--data-dir", dir)), &claims); err != nil {
		t.Fatal(err)
	}
	if claims["account"] != "acme" || claims["project"] != "web" || claims["valid"] != true {
		t.Fatalf("minted token: %v (want the project's account, from the store)", claims)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"unknown account", []string{"account", "show", "nobody"}, `account "nobody": not found`},
		{"duplicate account", []string{"account", "create", "acme", "--plan", "pro"}, "already exists"},
		{"bad plan", []string{"account", "create", "new", "--plan", "gold"}, "want free, personal, pro or enterprise"},
		{"no plan", []string{"account", "create", "new"}, "--plan is required"},
		{"bad id", []string{"account", "create", "Big Co", "--plan", "pro"}, "lowercase letters"},
		{"bad credits", []string{"account", "credit", "acme", "1.2345678"}, "at most 6 decimal places"},
		{"credit words", []string{"account", "credit", "acme", "lots"}, "decimal number of credits"},
		{"bad plan change", []string{"account", "set-plan", "acme", "platinum"}, "want free, personal, pro or enterprise"},
		{"tpm of unknown model", []string{"account", "set-tpm", "acme", "gpt-9", "100"}, "not in the catalog"},
		{"tpm not a number", []string{"account", "set-tpm", "acme", "gpt-4o-mini", "lots"}, "want a whole number"},
		{"disable unknown", []string{"account", "disable", "nobody"}, "not found"},
		{"project of unknown account", []string{"project", "create", "api", "--account", "nobody"}, `account "nobody": not found`},
		{"project without account", []string{"project", "create", "api"}, "--account is required"},
		{"duplicate project", []string{"project", "create", "web", "--account", "acme"}, "already exists"},
		{"activate unknown", []string{"project", "activate", "ghost"}, `project "ghost": not found`},
		{"set-limits without a limit", []string{"project", "set-limits", "web"}, "give --rpm, --tpm or both"},
		{"set-limits of unknown project", []string{"project", "set-limits", "ghost", "--rpm", "5"}, `project "ghost": not found`},
		{"mint unknown project", []string{"token", "mint", "--project", "ghost"}, `project "ghost": not found`},
		{"mint without project", []string{"token", "mint"}, "--project is required"},
		{"mint for the wrong account", []string{"token", "mint", "--project", "web", "--account", "other"}, `belongs to account "acme"`},
		{"usage of unknown account", []string{"usage", "--account", "nobody"}, `account "nobody": not found`},
		{"usage by week", []string{"usage", "--by", "week"}, "want hour, day or model"},
		{"usage since garbage", []string{"usage", "--since", "yesterday"}, "RFC 3339"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := tollgate(t, append(tc.args, "--data-dir", dir)...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want a failure saying %q", code, out, stderr, tc.want)
			}
			if strings.Contains(stderr, "rpc error") || strings.Contains(stderr, "code =") {
				t.Errorf("stderr %q shows gRPC plumbing to a CLI user", stderr)
			}
		})
	}
}

// TestProjectSetLimitsKeepsTheOtherLimit: set-limits changes the limits
// it is given and keeps the other, so setting a project's TPM does not
// silently lift its RPM limit.
func TestProjectSetLimitsKeepsTheOtherLimit(t *testing.T) {
	dir := t.TempDir()
	must(t, "account", "create", "acme", "--plan", "pro", "--data-dir", dir)
	must(t, "project", "create", "web", "--account", "acme", "--data-dir", dir)
	for _, tc := range []struct {
		args     []string
		rpm, tpm int64
	}{
		{[]string{"--rpm", "60", "--tpm", "20000"}, 60, 20000},
		{[]string{"--tpm", "30000"}, 60, 30000},
		{[]string{"--rpm", "90"}, 90, 30000},
		{[]string{"--rpm", "0"}, 0, 30000},
		{[]string{"--tpm", "0", "--rpm", "5"}, 5, 0},
	} {
		must(t, append([]string{"project", "set-limits", "web", "--data-dir", dir}, tc.args...)...)
		var p pb.Project
		if err := protojson.Unmarshal([]byte(must(t, "project", "show", "web", "--json", "--data-dir", dir)), &p); err != nil {
			t.Fatal(err)
		}
		if p.GetRequestsPerMinute() != tc.rpm || p.GetTokensPerMinute() != tc.tpm {
			t.Errorf("after set-limits %v: rpm %d, tpm %d; want %d, %d", tc.args, p.GetRequestsPerMinute(), p.GetTokensPerMinute(), tc.rpm, tc.tpm)
		}
	}
}

// TestAdminWhileDevRuns uses the CLI and the admin API on the data dir of
// a running `tollgate dev`: a new account's token works at once, and
// `tollgate usage` and GET /v1/usage show exactly the requests made.
func TestAdminWhileDevRuns(t *testing.T) {
	// Port 0: the admin API's address is read from the log (info level).
	dev := harness.StartDev(t, "--mock", "--log-level", "info", "--admin-listen", "127.0.0.1:0")
	adminAddr := dev.LoggedAddr(t, `msg="admin API"`)
	dir := dev.DataDir

	// The dev token's account and project were made on first start.
	if a := account(t, dir, "dev"); a.GetPlan() != "pro" || !a.GetEnabled() || a.GetBalance().GetMicro() <= 0 {
		t.Errorf("dev account: %v", a)
	}
	must(t, "account", "create", "acme", "--plan", "pro", "--credits", "100", "--data-dir", dir)
	must(t, "project", "create", "web", "--account", "acme", "--activate", "--data-dir", dir)
	tok := strings.TrimSpace(must(t, "token", "mint", "--project", "web", "--data-dir", dir))

	const requests = 3
	for i := range requests {
		status, body := harness.PostJSON(t, dev.BaseURL+"/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello `+string(rune('a'+i))+`"}]}`,
			"Authorization", "Bearer "+tok)
		if status != http.StatusOK {
			t.Fatalf("request %d with the minted token: %d %s", i, status, body)
		}
	}
	recs := dev.WaitUsage(t, requests)
	var want pb.UsageTokens
	var credits int64
	for _, r := range recs {
		if r.Account != "acme" {
			continue
		}
		want.Input += r.Input
		want.CachedInput += r.CachedInput
		want.CacheWrite += r.CacheWrite
		want.Output += r.Output
		want.Reasoning += r.Reasoning
		credits += r.Credits
	}
	if want.Input == 0 || want.Output == 0 {
		t.Fatalf("the ledger metered no tokens for acme: %+v", recs)
	}

	var cli pb.GetUsageResponse
	if err := protojson.Unmarshal([]byte(must(t, "usage", "--account", "acme", "--by", "model", "--json", "--data-dir", dir)), &cli); err != nil {
		t.Fatal(err)
	}
	if len(cli.GetBuckets()) != 1 || cli.GetBuckets()[0].GetModel() != "gpt-4o-mini" || cli.GetTotal().GetRequests() != requests {
		t.Fatalf("tollgate usage --by model: %v", &cli)
	}
	tot := cli.GetTotal()
	if tot.GetTokens().GetInput() != want.Input || tot.GetTokens().GetOutput() != want.Output || tot.GetCredits().GetMicro() != credits {
		t.Errorf("tollgate usage total %v, the records sum to tokens %v credits %d", tot, &want, credits)
	}
	table := must(t, "usage", "--account", "acme", "--by", "hour", "--data-dir", dir)
	if !strings.Contains(table, "HOUR (UTC)") || !strings.Contains(table, "TOTAL") || !strings.Contains(table, "CREDITS") {
		t.Errorf("usage table:\n%s", table)
	}
	// Not grouped: the scope line, the header and one row, the total.
	summary := strings.Split(strings.TrimSpace(must(t, "usage", "--account", "acme", "--data-dir", dir)), "\n")
	if len(summary) != 3 || !strings.Contains(summary[1], "REQUESTS") || !strings.HasPrefix(strings.TrimSpace(summary[2]), strconv.Itoa(requests)+" ") {
		t.Errorf("usage summary, want one total row of %d requests:\n%s", requests, strings.Join(summary, "\n"))
	}

	// The same over the dev gateway's admin API, with the admin token it
	// created in the data dir and with acme's own token.
	adminTok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(token, path string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, tc := range []struct {
		who, token, path string
		status           int
	}{
		{"admin", strings.TrimSpace(string(adminTok)), "/v1/usage?account=acme&by=model", 200},
		{"acme's token", tok, "/v1/usage?by=model", 200},
		{"acme's token on dev's usage", tok, "/v1/usage?account=dev", 403},
		{"acme's token on accounts", tok, "/v1/accounts", 403},
		{"no token", "", "/v1/usage", 401},
	} {
		code, body := get(tc.token, tc.path)
		if code != tc.status {
			t.Errorf("%s GET %s: %d %s, want %d", tc.who, tc.path, code, body, tc.status)
			continue
		}
		if code != 200 {
			continue
		}
		var api pb.GetUsageResponse
		if err := protojson.Unmarshal(body, &api); err != nil {
			t.Fatal(err)
		}
		if !protoEqualTotals(api.GetTotal(), tot) {
			t.Errorf("%s: API total %v, CLI total %v", tc.who, api.GetTotal(), tot)
		}
	}

	// Revoking through the CLI reaches the running gateway.
	must(t, "token", "revoke", tok, "--data-dir", dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := get(tok, "/v1/usage")
		if code == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked token still reads usage (%d)", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func protoEqualTotals(a, b *pb.UsageBucket) bool {
	return a.GetRequests() == b.GetRequests() && a.GetCredits().GetMicro() == b.GetCredits().GetMicro() &&
		a.GetTokens().GetInput() == b.GetTokens().GetInput() && a.GetTokens().GetOutput() == b.GetTokens().GetOutput()
}

// TestServeRefusesAGuessableAdminToken: serve with the admin API on and a
// short $TOLLGATE_ADMIN_TOKEN exits 1 saying why, and never starts a
// listener anyone could get into by guessing.
func TestServeRefusesAGuessableAdminToken(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: "+filepath.Join(dir, "data")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const guessable = "changeme"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), "serve", "--config", cfg)
	cmd.Env = append(harness.CleanEnv(), "TOLLGATE_ADMIN_TOKEN="+guessable)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("serve with a %d-character admin token: %v (%v), want exit 1\n%s", len(guessable), err, ctx.Err(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "at least") || !strings.Contains(stderr.String(), "TOLLGATE_ADMIN_TOKEN") {
		t.Errorf("stderr %q does not say the admin token is too short", stderr.String())
	}
	if strings.Contains(stderr.String(), guessable) {
		t.Errorf("stderr quotes the admin token: %q", stderr.String())
	}
}

// TestServeAdminAPI runs `tollgate serve` with admin_listen in its config
// and the admin token from the environment, and uses the API as an
// operator would: the generated gRPC client and curl-style JSON.
func TestServeAdminAPI(t *testing.T) {
	dir := t.TempDir()
	// Port 0: serve picks free ports and logs them (at info level), so no
	// other process can take them between picking and binding.
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: "+filepath.Join(dir, "data")+"\nlog_level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const adminToken = "tgadm_from-the-environment"
	srv := harness.StartServeArgs(t, []string{"TOLLGATE_ADMIN_TOKEN=" + adminToken}, "--config", cfg)
	adminAddr := srv.LoggedAddr(t, `msg="admin API"`)

	conn, err := grpc.NewClient(adminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
	accounts := pb.NewAccountServiceClient(conn)
	var created *pb.CreateAccountResponse
	for {
		created, err = accounts.CreateAccount(authed, &pb.CreateAccountRequest{Id: "acme", Plan: "free", Credits: "5"}, grpc.WaitForReady(true))
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || created.GetAccount().GetBalance().GetMicro() != 5_000_000 {
		srv.Stop(t)
		t.Fatalf("gRPC CreateAccount: %v %v\n%s", created, err, srv.Stderr())
	}
	if _, err := accounts.ListAccounts(ctx, &pb.ListAccountsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC without a token: %v, want Unauthenticated", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "admin.token")); !os.IsNotExist(err) {
		t.Errorf("with $TOLLGATE_ADMIN_TOKEN set, serve wrote an admin.token file (%v)", err)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/v1/accounts/acme:credit", strings.NewReader(`{"amount":"-1.25"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var credited pb.CreditResponse
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(body, &credited) != nil || credited.GetAccount().GetBalance().GetDecimal() != "3.75" {
		t.Fatalf("HTTP credit: %d %s", resp.StatusCode, body)
	}
	srv.Stop(t) // its whole log is in Stderr then
	if strings.Contains(srv.Stderr(), adminToken) {
		t.Errorf("serve logged the admin token:\n%s", srv.Stderr())
	}
}

// TestUsageRightAfterARequest: `tollgate usage` run the moment a response
// has arrived counts that request, although the gateway stores usage in
// batches (it waits for the gateway's spool to drain).
func TestUsageRightAfterARequest(t *testing.T) {
	dev := harness.StartDev(t, "--mock")
	for i := 1; i <= 5; i++ {
		status, body := harness.PostJSON(t, dev.BaseURL+"/anthropic/v1/messages",
			`{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`,
			"x-api-key", dev.Token, "anthropic-version", "2023-06-01")
		if status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
		var sum pb.GetUsageResponse
		if err := protojson.Unmarshal([]byte(must(t, "usage", "--since", "1h", "--json", "--data-dir", dev.DataDir)), &sum); err != nil {
			t.Fatal(err)
		}
		if got := sum.GetTotal().GetRequests(); got != int64(i) {
			t.Fatalf("after request %d, tollgate usage counts %d requests", i, got)
		}
		// --json alone: the records, one JSON object per line, with the
		// fields the issue names.
		lines := strings.Split(strings.TrimSpace(must(t, "usage", "--json", "--data-dir", dev.DataDir)), "\n")
		if len(lines) != i {
			t.Fatalf("after request %d, tollgate usage --json prints %d lines:\n%s", i, len(lines), strings.Join(lines, "\n"))
		}
		for _, line := range lines {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("a line of tollgate usage --json is not a JSON object: %v\n%s", err, line)
			}
			for _, k := range []string{"request_id", "time", "account", "project", "provider", "model", "status", "input_tokens",
				"cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "estimated", "latency_ms"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("record %s lacks %q", line, k)
				}
			}
			if rec["provider"] != "anthropic" || rec["model"] != "claude-haiku-4-5" || rec["status"] != "ok" || rec["input_tokens"] == float64(0) {
				t.Errorf("record %s: want an ok anthropic claude-haiku-4-5 request with input", line)
			}
		}
	}
}

// TestUsageReadsTheSharedLedger: with $TOLLGATE_LEDGER_URL set, as in a
// processor's pod, `tollgate usage` reads that ledger, not the data dir's;
// without it, a data dir with no ledger is an error, not an empty answer.
func TestUsageReadsTheSharedLedger(t *testing.T) {
	dev := harness.StartDev(t, "--mock")
	status, body := harness.PostJSON(t, dev.BaseURL+"/openai/v1/chat/completions",
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+dev.Token)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	dev.WaitUsage(t, 1)
	elsewhere := t.TempDir() // a pod's own data dir: no ledger in it
	shared := []string{"TOLLGATE_LEDGER_URL=sqlite://" + filepath.Join(dev.DataDir, "usage.db")}
	for _, args := range [][]string{{"usage", "--records", "--json"}, {"usage", "--json"}} {
		out, stderr, code := tollgateEnv(t, shared, append(args, "--data-dir", elsewhere)...)
		if code != 0 {
			t.Fatalf("%v with $TOLLGATE_LEDGER_URL: exit %d: %s", args, code, stderr)
		}
		if !strings.Contains(out, "gpt-4o-mini") && !strings.Contains(out, `"requests": "1"`) && !strings.Contains(out, `"requests":"1"`) {
			t.Errorf("%v with $TOLLGATE_LEDGER_URL does not show the request stored there:\n%s", args, out)
		}
	}
	if _, stderr, code := tollgate(t, "usage", "--records", "--data-dir", elsewhere); code == 0 || !strings.Contains(stderr, "no usage ledger") {
		t.Errorf("usage on a data dir with no ledger: exit %d, stderr %q", code, stderr)
	}
}

// TestMistypedDataDir: a command that reads or changes what is in a ledger,
// pointed at a directory without one, says so and leaves nothing behind
// (an empty ledger there would hide the mistake); only account create makes
// a ledger.
func TestMistypedDataDir(t *testing.T) {
	tok := strings.TrimSpace(func() string {
		dir := t.TempDir()
		must(t, "account", "create", "acme", "--plan", "pro", "--data-dir", dir)
		must(t, "project", "create", "web", "--account", "acme", "--activate", "--data-dir", dir)
		return must(t, "token", "mint", "--project", "web", "--data-dir", dir)
	}())
	for _, args := range [][]string{
		{"account", "list"},
		{"account", "show", "acme"},
		{"account", "credit", "acme", "5"},
		{"project", "show", "web"},
		{"token", "mint", "--project", "web"},
		{"token", "revoke", "some-id"},
		{"usage"},
		{"usage", "--records"},
	} {
		typo := filepath.Join(t.TempDir(), "typo")
		_, stderr, code := tollgate(t, append(args, "--data-dir", typo)...)
		if code == 0 || !strings.Contains(stderr, "ledger in "+typo) {
			t.Errorf("%v on a dir with no ledger: exit %d, stderr %q", args, code, stderr)
		}
		if _, err := os.Stat(typo); !os.IsNotExist(err) {
			t.Errorf("%v on a dir with no ledger left %s behind (%v)", args, typo, err)
		}
	}
	// token inspect still decodes the token, and leaves nothing behind; with
	// no key to check it against, the token is not valid (exit 1), so a
	// script never takes an unchecked token for a good one.
	typo := filepath.Join(t.TempDir(), "typo")
	out, stderr, code := tollgate(t, "token", "inspect", tok, "--data-dir", typo)
	if !strings.Contains(out, `"account": "acme"`) {
		t.Errorf("inspect with no keys at hand does not decode the claims: %s", out)
	}
	if code != 1 || !strings.Contains(out, `"valid": false`) || !strings.Contains(stderr, "no signing key") {
		t.Errorf("inspect with no keys at hand: exit %d, stdout %s, stderr %q; want exit 1, valid false, no signing key", code, out, stderr)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Errorf("token inspect left %s behind (%v)", typo, err)
	}
}

// failingStore is a ledger whose writes fail, as when its database is down.
type failingStore struct{}

func (failingStore) InsertUsage(context.Context, ...usage.Record) error {
	return errors.New("database is down")
}

// TestUsageNamesRecordsNotYetStored: usage a gateway holds in its spool,
// because its ledger refuses writes, is not silently missing from `tollgate
// usage`: the command waits a moment, then says how many records it could
// not count.
func TestUsageNamesRecordsNotYetStored(t *testing.T) {
	dir := t.TempDir()
	must(t, "account", "create", "acme", "--plan", "pro", "--data-dir", dir) // creates the ledger
	// This test process plays the gateway: it owns the data dir's spool.
	w, err := ledger.NewWriter(failingStore{}, filepath.Join(dir, "spool"), ledger.WriterOptions{FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		w.Close(ctx) // gives up: the store never recovers
	})
	for i := range 3 {
		rec := usage.Record{RequestID: "req-" + strconv.Itoa(i), Time: time.Now(), Account: "acme", Project: "web", Provider: "openai", Model: "gpt-4o-mini", Status: usage.StatusOK}
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"usage", "--by", "model", "--json"}, {"usage", "--json"}} {
		out, stderr, code := tollgate(t, append(args, "--data-dir", dir)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if len(args) == 2 {
			// The records: none in the ledger, so no line.
			if out != "" {
				t.Errorf("%v printed records the ledger does not have: %q", args, out)
			}
		} else {
			var sum pb.GetUsageResponse
			if err := protojson.Unmarshal([]byte(out), &sum); err != nil {
				t.Fatalf("stdout is not the JSON answer alone: %v\n%s", err, out)
			}
			if sum.GetTotal().GetRequests() != 0 {
				t.Errorf("counted %d requests the ledger does not have", sum.GetTotal().GetRequests())
			}
		}
		if !strings.Contains(stderr, "3 usage records in "+filepath.Join(dir, "spool")+" are not in the ledger yet") {
			t.Errorf("%v: stderr does not name the 3 spooled records: %q", args, stderr)
		}
	}
}
