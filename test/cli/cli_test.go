// Package cli_test runs the tollgate binary the way an operator does: the
// serve config file, the catalog and token commands, and the errors a
// person sees when something is missing.
package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// tollgate runs the binary and returns stdout, stderr and the exit code.
func tollgate(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return tollgateEnv(t, nil, args...)
}

// tollgateEnv is tollgate with extra NAME=VALUE environment variables.
func tollgateEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Env = append(harness.CleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestModelsListsCatalogAndOverlay(t *testing.T) {
	out, _, code := tollgate(t, "models", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := strings.Count(out, "\n"); n != 52 {
		t.Errorf("models --json printed %d models, want the 52 served by default", n)
	}
	overlay := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(overlay, []byte("models: [{provider: openai, name: gpt-3.5-turbo, like: gpt-4o-mini}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code = tollgate(t, "models", "--catalog", overlay)
	if code != 0 || !strings.Contains(out, "gpt-3.5-turbo") || !strings.Contains(out, "0.15") {
		t.Errorf("exit %d; table lacks the overlay model priced like gpt-4o-mini:\n%s", code, out)
	}
	if err := os.WriteFile(overlay, []byte("models: [{provider: openai, name: x, bogus: 1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := tollgate(t, "models", "--catalog", overlay)
	if code == 0 || !strings.Contains(stderr, "bogus") {
		t.Errorf("a bad overlay: exit %d, stderr %q; want a failure naming the key", code, stderr)
	}
}

func TestTokenMintInspectRevoke(t *testing.T) {
	dir := t.TempDir()
	must(t, "account", "create", "acme", "--plan", "pro", "--data-dir", dir)
	must(t, "project", "create", "web", "--account", "acme", "--activate", "--data-dir", dir)
	tok, stderr, code := tollgate(t, "token", "mint", "--data-dir", dir, "--account", "acme", "--project", "web", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("mint: exit %d: %s", code, stderr)
	}
	tok = strings.TrimSpace(tok)
	inspect := func(wantCode int) map[string]any {
		out, stderr, code := tollgate(t, "token", "inspect", "--data-dir", dir, tok)
		if code != wantCode {
			t.Fatalf("inspect: exit %d, want %d: %s", code, wantCode, stderr)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("inspect output: %v\n%s", err, out)
		}
		return m
	}
	m := inspect(0)
	if m["account"] != "acme" || m["project"] != "web" || m["valid"] != true {
		t.Fatalf("inspect = %v", m)
	}
	if _, _, code := tollgate(t, "token", "revoke", "--data-dir", dir, tok); code != 0 {
		t.Fatalf("revoke: exit %d", code)
	}
	// Each inspect is a new process, which reads the revocation list at start.
	if m := inspect(1); m["valid"] != false || !strings.Contains(fmt.Sprint(m["error"]), "revoked") {
		t.Fatalf("after revoke, inspect = %v", m)
	}
	// An id that starts with '-' (base64url ids did, one in 64) is passed
	// after "--"; without it the error says so.
	if _, stderr, code := tollgate(t, "token", "revoke", "--data-dir", dir, "-kYVmC71rVYMN3gPG7zmhA"); code == 0 || !strings.Contains(stderr, `after "--"`) {
		t.Errorf("revoke of a dash id without --: exit %d, stderr %q; want a hint to use --", code, stderr)
	}
	if _, stderr, code := tollgate(t, "token", "revoke", "--data-dir", dir, "--", "-kYVmC71rVYMN3gPG7zmhA"); code != 0 {
		t.Errorf("revoke -- -ID: exit %d: %s", code, stderr)
	}
	if _, stderr, code := tollgate(t, "token", "mint", "--data-dir", dir); code == 0 || !strings.Contains(stderr, "--project") {
		t.Errorf("mint without a project: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := tollgate(t, "token", "inspect", "garbage"); code == 0 || strings.Contains(stderr, "garbage") {
		t.Errorf("inspect garbage: exit %d, stderr %q (must fail without echoing the token)", code, stderr)
	}
}

func TestEnvWithoutGateway(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := tollgate(t, "env", "--data-dir", dir)
	if code == 0 || !strings.Contains(stderr, "tollgate dev") {
		t.Errorf("env with no gateway: exit %d, stderr %q; want a hint to start one", code, stderr)
	}
}

// TestServeConfigFile runs `tollgate serve` from a config file against the
// mock upstream, with the real key from a key file and an allow-listed
// header, and checks what the mock received.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	mock := harness.StartMock(t)

	keyFile := filepath.Join(dir, "anthropic.key")
	if err := os.WriteFile(keyFile, []byte("sk-ant-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Port 0: serve picks a free port and logs it (at info level), so no
	// other process can take it between picking and binding.
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %s
log_level: info
providers:
  anthropic:
    upstream: %s/anthropic
    key_file: %s
    allow_headers: [anthropic-beta]
`, filepath.Join(dir, "data"), mock.URL, keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := harness.StartServeArgs(t, nil, "--config", cfg)
	base := srv.URL
	if strings.HasSuffix(base, ":8080") {
		t.Fatalf("serve listens on %s, its default: it ignored the config's listen", base)
	}
	must(t, "account", "create", "a", "--plan", "pro", "--credits", "10", "--data-dir", filepath.Join(dir, "data"))
	must(t, "project", "create", "p", "--account", "a", "--activate", "--data-dir", filepath.Join(dir, "data"))
	tok, _, code := tollgate(t, "token", "mint", "--data-dir", filepath.Join(dir, "data"), "--account", "a", "--project", "p")
	if code != 0 {
		t.Fatal("mint failed")
	}
	status, body := harness.PostJSON(t, base+"/anthropic/v1/messages",
		`{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`,
		"x-api-key", strings.TrimSpace(tok), "anthropic-version", "2023-06-01",
		"anthropic-beta", "some-beta-2026-01-01", "x-random-test", "1")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	mresp, err := http.Get(mock.URL + "/_mock/served")
	if err != nil {
		t.Fatal(err)
	}
	var served []struct {
		Provider string
		Header   http.Header
	}
	if err := json.NewDecoder(mresp.Body).Decode(&served); err != nil {
		t.Fatal(err)
	}
	mresp.Body.Close()
	if len(served) != 1 {
		t.Fatalf("mock received %d requests, want 1", len(served))
	}
	h := served[0].Header
	if h.Get("X-Api-Key") != "sk-ant-from-file" || h.Get("Anthropic-Beta") != "some-beta-2026-01-01" || h.Get("X-Random-Test") != "" || h.Get("Authorization") != "" {
		t.Errorf("upstream headers %v: want the file's key, the allow-listed beta header, nothing else of the client's", h)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nlisten_port: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The key is named in the file's words, not Go's type names.
	if _, stderr, code := tollgate(t, "serve", "--config", bad); code == 0 || !strings.Contains(stderr, `line 2: unknown key "listen_port"`) || strings.Contains(stderr, "serveConfig") {
		t.Errorf("unknown config key: exit %d, stderr %q", code, stderr)
	}
}

// TestServeRefusesSettingsThatCannotWork: a value that cannot work stops
// serve (and dev) at start with an error naming it, instead of running on a
// silent default.
func TestServeRefusesSettingsThatCannotWork(t *testing.T) {
	dir := t.TempDir()
	emptyKey := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(emptyKey, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(body string) string {
		f, err := os.CreateTemp(dir, "config-*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(body); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return f.Name()
	}
	for _, c := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"log level flag", []string{"serve", "--log-level", "loud"}, `log level "loud"`},
		{"log level in the file", []string{"serve", "--config", config("log_level: loud\n")}, `log level "loud"`},
		{"dev log level", []string{"dev", "--log-level", "loud"}, `log level "loud"`},
		{"negative body cap", []string{"serve", "--max-request-body", "-1"}, "max request body -1"},
		{"zero body cap", []string{"serve", "--max-request-body", "0"}, "max request body 0"},
		{"negative body cap in the file", []string{"serve", "--config", config("max_request_body: -5\n")}, "max request body -5"},
		{"empty key file", []string{"serve", "--config", config("providers: {openai: {key_file: " + emptyKey + "}}\n")}, "is empty"},
		{"negative max_keys", []string{"serve", "--config", config("limits: {max_keys: -1}\n")}, "limits.max_keys -1"},
		{"credential allowed upstream", []string{"serve", "--allow-header", "openai=Authorization"}, `"Authorization" carries the client's credential`},
		{"credential allowed upstream in the file", []string{"serve", "--config", config("providers: {anthropic: {allow_headers: [x-api-key]}}\n")}, `"x-api-key" carries the client's credential`},
		{"gateway's own header allowed upstream", []string{"serve", "--allow-header", "anthropic=anthropic-version"}, "set by the gateway"},
		{"Envoy's header allowed upstream", []string{"serve", "--allow-header", "openai=X-Envoy-Retry-On"}, "Envoy's own namespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append(c.args, "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"))
			cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
			cmd.Env = harness.CleanEnv()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("%v: still running after 30s; the bad value was accepted", args)
			}
			if err == nil || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("%v: err %v, stderr %q; want a failure naming %q", args, err, stderr.String(), c.want)
			}
			if strings.Contains(stderr.String(), "goroutine ") {
				t.Errorf("a stack trace instead of a message: %s", stderr.String())
			}
		})
	}
}

// TestInjectRunsTheInjector: `tollgate inject` is tollgate-injector, run
// from beside tollgate: its output, its errors and its exit code.
func TestInjectRunsTheInjector(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: web, image: nginx}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := tollgate(t, "inject", "-f", manifest, "--namespace-labels", "tollgate.dev/account=acme")
	if code != 0 || !strings.Contains(out, "name: tollgate-proxy") || !strings.Contains(out, "OPENAI_BASE_URL") {
		t.Errorf("exit %d, stderr %q, output:\n%s", code, stderr, out)
	}
	_, stderr, code = tollgate(t, "inject", "-f", manifest, "--sidecar-mode", "sometimes")
	if code != 1 || !strings.Contains(stderr, `--sidecar-mode "sometimes"`) {
		t.Errorf("bad flag: exit %d, stderr %q", code, stderr)
	}
	out, _, code = tollgate(t, "inject", "--help")
	if code != 0 || !strings.Contains(out, "--namespace-labels") {
		t.Errorf("help: exit %d:\n%s", code, out)
	}
}
