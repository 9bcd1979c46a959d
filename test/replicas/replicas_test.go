// Package replicas_test runs several `tollgate serve` processes as the Helm
// chart runs its processor replicas: one PostgreSQL ledger, one read-only
// signing-key directory (the mounted Secret), a data dir each.
package replicas_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
	"github.com/tollgate-dev/tollgate/test/harness"
	"github.com/tollgate-dev/tollgate/test/services"
)

const adminToken = "replicas-test-admin-token-0123456789"

// revokeBound is how long a revoked token may still be accepted by a
// replica that did not revoke it: the ledger is polled every second; the
// rest is slack for a loaded, race-enabled CI machine.
const revokeBound = 5 * time.Second

type replica struct {
	name, admin string
	proc        *harness.Process
}

func startReplica(t *testing.T, name, keysDir, ledgerURL, mockURL string) *replica {
	t.Helper()
	// Port 0: the admin API's address is read from the log.
	cfg := fmt.Sprintf(`data_dir: %s
signing_keys_dir: %s
signing_keys_poll: 100ms
signing_keys_grace: 1s
admin_listen: 127.0.0.1:0
log_level: info
providers:
  openai: {upstream: %s/openai}
  anthropic: {upstream: %s/anthropic}
  gemini: {upstream: %s/gemini}
`, t.TempDir(), keysDir, mockURL, mockURL, mockURL)
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := harness.StartServe(t, path, []string{"TOLLGATE_ADMIN_TOKEN=" + adminToken, "TOLLGATE_LEDGER_URL=" + ledgerURL})
	return &replica{name: name, admin: "http://" + p.LoggedAddr(t, `msg="admin API"`), proc: p}
}

// call makes an admin API call over HTTP and decodes the answer into out.
func (r *replica) call(t *testing.T, path, body string, out proto.Message) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s POST %s: %d %s", r.name, path, resp.StatusCode, b)
	}
	if err := protojson.Unmarshal(b, out); err != nil {
		t.Fatalf("%s POST %s: %v", r.name, path, err)
	}
}

func (r *replica) mint(t *testing.T, project string) *pb.MintTokenResponse {
	t.Helper()
	var m pb.MintTokenResponse
	r.call(t, "/v1/tokens", `{"project":"`+project+`","ttl":"3600s"}`, &m)
	return &m
}

// mintWith mints through r until the token is signed with kid (the
// replica has read the key directory again) and returns it.
func (r *replica) mintWith(t *testing.T, project, kid string) *pb.MintTokenResponse {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := r.mint(t, project)
		c, err := auth.Parse(m.GetToken())
		if err != nil {
			t.Fatal(err)
		}
		if c.KeyID == kid {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still signs with %q 10s after %q was added", r.name, c.KeyID, kid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chat sends one chat completion through the replica's proxy with tok and
// returns the status.
func (r *replica) chat(t *testing.T, tok string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.proc.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// refusedWithin polls r with tok until it answers 401 and returns how long
// that took; it fails the test if that takes longer than revokeBound.
func (r *replica) refusedWithin(t *testing.T, tok string, since time.Time) time.Duration {
	t.Helper()
	for {
		code := r.chat(t, tok)
		if code == http.StatusUnauthorized {
			return time.Since(since)
		}
		if code != http.StatusOK {
			t.Fatalf("%s: status %d while waiting for the revocation", r.name, code)
		}
		if time.Since(since) > revokeBound {
			t.Fatalf("%s still accepts a revoked token after %v", r.name, revokeBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeKey(t *testing.T, dir, kid string) *auth.Signer {
	t.Helper()
	s, err := auth.GenerateKey(kid)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.SaveSigner(filepath.Join(dir, kid+".pem"), s); err != nil {
		t.Fatal(err)
	}
	return s
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestReplicasShareKeysAndRevocations: a token minted through one
// replica's admin API works on another; revoked through the first (or
// with the CLI on the shared ledger), every replica refuses it within
// the polling bound; a key added to the directory signs on every replica
// without a restart, tokens of the old key verify until it is removed.
func TestReplicasShareKeysAndRevocations(t *testing.T) {
	pg := services.StartPostgres(t)
	ledgerURL := pg.NewDatabase(t)
	mock := harness.StartMock(t)
	keys := t.TempDir()
	first := writeKey(t, keys, "2026-01-a")

	a := startReplica(t, "A", keys, ledgerURL, mock.URL)
	b := startReplica(t, "B", keys, ledgerURL, mock.URL)

	a.call(t, "/v1/accounts", `{"id":"acme","plan":"pro","credits":"100"}`, &pb.CreateAccountResponse{})
	a.call(t, "/v1/projects", `{"id":"web","account":"acme","activate":true}`, &pb.CreateProjectResponse{})

	m := a.mint(t, "web")
	if c, err := auth.Parse(m.GetToken()); err != nil || c.KeyID != first.KeyID() {
		t.Fatalf("A minted with key %q (%v), want the shared key %q", c.KeyID, err, first.KeyID())
	}
	for _, r := range []*replica{a, b} {
		if code := r.chat(t, m.GetToken()); code != http.StatusOK {
			t.Fatalf("%s answers %d to a token minted through A", r.name, code)
		}
	}

	// Revoked through A's admin API by the token itself: B refuses it.
	start := time.Now()
	a.call(t, "/v1/tokens:revoke", `{"token":"`+m.GetToken()+`"}`, &pb.RevokeTokenResponse{})
	took := b.refusedWithin(t, m.GetToken(), start)
	t.Logf("B refused a token revoked through A after %v", took)
	a.refusedWithin(t, m.GetToken(), start)

	// Minted through B, revoked by id with the CLI on the shared ledger
	// (as `kubectl exec` in a processor pod does): A refuses it.
	m2 := b.mint(t, "web")
	if code := a.chat(t, m2.GetToken()); code != http.StatusOK {
		t.Fatalf("A answers %d to a token minted through B", code)
	}
	cli := exec.Command(harness.Binary(t), "token", "revoke", m2.GetTokenId(), "--data-dir", t.TempDir())
	cli.Env = append(harness.CleanEnv(), "TOLLGATE_LEDGER_URL="+ledgerURL)
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("tollgate token revoke: %v\n%s", err, out)
	}
	start = time.Now()
	a.refusedWithin(t, m2.GetToken(), start)
	b.refusedWithin(t, m2.GetToken(), start)

	// Rotation without a restart: a key whose kid sorts later is added to
	// the directory; each replica trusts it from its next read and signs
	// with it a grace later, by when the other trusts it too; the first
	// key's tokens still verify.
	old := a.mint(t, "web")
	second := writeKey(t, keys, "2026-07-b")
	for _, r := range []*replica{a, b} {
		m3 := r.mintWith(t, "web", second.KeyID())
		for _, tok := range []string{old.GetToken(), m3.GetToken()} {
			for _, v := range []*replica{a, b} {
				if code := v.chat(t, tok); code != http.StatusOK {
					t.Errorf("%s answers %d during the rotation to a token of a key in the directory", v.name, code)
				}
			}
		}
	}
	// The first key retired: its tokens are refused (cached ones too),
	// the second key's work.
	if err := os.Remove(filepath.Join(keys, first.KeyID()+".pem")); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	a.refusedWithin(t, old.GetToken(), start)
	b.refusedWithin(t, old.GetToken(), start)
	if code := b.chat(t, a.mint(t, "web").GetToken()); code != http.StatusOK {
		t.Errorf("B answers %d to a token A minted after the rotation", code)
	}
	// The CLI in a processor pod mints with the shared keys, not a key of
	// its own data dir, and checks tokens against them.
	cliMint := exec.Command(harness.Binary(t), "token", "mint", "--project", "web", "--data-dir", t.TempDir())
	cliMint.Env = append(harness.CleanEnv(), "TOLLGATE_LEDGER_URL="+ledgerURL, "TOLLGATE_SIGNING_KEYS_DIR="+keys)
	out, err := cliMint.Output()
	if err != nil {
		t.Fatalf("tollgate token mint --signing-keys-dir: %v", err)
	}
	cliTok := strings.TrimSpace(string(out))
	if cl, err := auth.Parse(cliTok); err != nil || cl.KeyID != second.KeyID() {
		t.Fatalf("the CLI minted with key %q (%v), want the shared %q", cl.KeyID, err, second.KeyID())
	}
	if code := a.chat(t, cliTok); code != http.StatusOK {
		t.Errorf("A answers %d to a token the CLI minted with the shared keys", code)
	}
	inspect := exec.Command(harness.Binary(t), "token", "inspect", cliTok, "--signing-keys-dir", keys, "--data-dir", t.TempDir())
	inspect.Env = append(harness.CleanEnv(), "TOLLGATE_LEDGER_URL="+ledgerURL)
	if out, err := inspect.Output(); err != nil || !strings.Contains(string(out), `"valid": true`) {
		t.Errorf("tollgate token inspect --signing-keys-dir: %v\n%s", err, out)
	}
	if got := dirNames(t, keys); !slices.Equal(got, []string{"2026-07-b.pem"}) {
		t.Errorf("signing-key dir holds %v", got)
	}
	for _, r := range []*replica{a, b} {
		if s := r.proc.Stderr(); !strings.Contains(s, "signing keys changed") {
			t.Errorf("%s did not log the key change", r.name)
		}
	}

	for _, r := range []*replica{a, b} {
		if s := r.proc.Stderr(); strings.Contains(s, auth.Prefix+".") || strings.Contains(s, adminToken) {
			t.Errorf("%s logged a token", r.name)
		}
	}
}

// TestSigningKeysDirMustHoldAKey: serve never creates a key in the shared
// directory; a missing or empty one stops it at startup with a clear error.
func TestSigningKeysDirMustHoldAKey(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct{ name, dir, want string }{
		{"empty", empty, "holds no <kid>.pem signing key"},
		{"missing", filepath.Join(t.TempDir(), "absent"), "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(harness.Binary(t), "serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
				"--signing-keys-dir", tc.dir)
			cmd.Env = harness.CleanEnv()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "signing_keys_dir") || !strings.Contains(string(out), tc.want) {
				t.Fatalf("serve with signing keys dir %s: %v\n%s", tc.name, err, out)
			}
		})
	}
	if got := dirNames(t, empty); len(got) != 0 {
		t.Errorf("serve wrote %v into the signing-key dir", got)
	}
}
