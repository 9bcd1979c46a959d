// Package harness runs the real tollgate binary for end-to-end tests: it
// builds cmd/tollgate and cmd/tollgate-injector once per test binary (with
// the race detector when the tests have it), starts `tollgate dev` on a free loopback port with its own
// data dir, and reads back what a user would see: the env it sets, the
// usage ledger, and the mock providers' ground truth.
package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/logbuf"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// RepoRoot is the module root.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary builds cmd/tollgate and cmd/tollgate-injector (which `tollgate
// inject` runs from beside it) once per test binary and returns tollgate's
// path. Every test package shares one directory in .cache/test-bin, each
// file replaced atomically after its build (a running process keeps the
// file it started), so a test run leaves one pair of binaries behind rather
// than one per package in the temp dir.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binPath, buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func build() (string, error) {
	flavour, flags := "plain", []string(nil)
	if raceEnabled {
		flavour, flags = "race", []string{"-race"}
	}
	dir := filepath.Join(RepoRoot(), ".cache", "test-bin", flavour)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{"tollgate-injector", "tollgate"} {
		if err := buildInto(dir, name, flags); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "tollgate"), nil
}

// buildInto builds ./cmd/NAME to dir/NAME through a temporary file and a
// rename, so that concurrent test packages never run a half-written file.
func buildInto(dir, name string, flags []string) error {
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // gone after the rename; left only on failure
	args := append(append([]string{"build"}, flags...), "-o", tmp.Name(), "./cmd/"+name)
	cmd := exec.Command("go", args...)
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", name, err, out)
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// Run runs the tollgate binary with args and returns stdout; it fails the
// test on a non-zero exit.
func Run(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = quickExit(os.Environ())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tollgate %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// quickExit adds GORACE=atexit_sleep_ms=0 to env for a race-enabled
// binary, unless GORACE is set: such a binary otherwise sleeps a second
// on exit (the race runtime's default), which is most of what a CLI call
// costs and adds up over the hundreds a test run makes.
func quickExit(env []string) []string {
	if !raceEnabled {
		return env
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "GORACE=") {
			return env
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// Dev is a running `tollgate dev`.
type Dev struct {
	DataDir string
	BaseURL string
	Token   string
	MockURL string
	cmd     *exec.Cmd
	done    chan error
	stderr  *logbuf.Buffer
	stdout  *logbuf.Buffer
}

type devState struct {
	PID     int    `json:"pid"`
	BaseURL string `json:"base_url"`
	Token   string `json:"token"`
	MockURL string `json:"mock_url"`
}

// StartDev starts `tollgate dev --listen 127.0.0.1:0 --data-dir DIR` plus
// extra args (e.g. "--mock", "--catalog", FILE) and waits until it serves.
// It is stopped with SIGINT when the test ends.
func StartDev(t testing.TB, extra ...string) *Dev {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"dev", "--listen", "127.0.0.1:0", "--data-dir", dir}, extra...)
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = CleanEnv()
	d := &Dev{DataDir: dir, cmd: cmd, done: make(chan error, 1), stderr: &logbuf.Buffer{}, stdout: &logbuf.Buffer{}}
	cmd.Stderr = d.stderr
	cmd.Stdout = d.stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() { d.Stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "dev.json"))
		if err == nil {
			var st devState
			if json.Unmarshal(b, &st) == nil && st.BaseURL != "" && healthy(st.BaseURL) {
				d.BaseURL, d.Token, d.MockURL = st.BaseURL, st.Token, st.MockURL
				return d
			}
		}
		select {
		case err := <-d.done:
			t.Fatalf("tollgate dev exited early: %v\n%s", err, d.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tollgate dev did not start in time\n%s", d.stderr.String())
		}
	}
}

// Stop interrupts the gateway and waits for it (records are flushed on
// the way out).
func (d *Dev) Stop(t testing.TB) {
	if d.cmd.ProcessState != nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("tollgate dev did not stop on SIGINT\n%s", d.stderr.String())
	}
}

// Stderr is what the gateway logged so far.
func (d *Dev) Stderr() string { return d.stderr.String() }

// Stdout is what the gateway printed (its exports).
func (d *Dev) Stdout() string { return d.stdout.String() }

// LoggedAddr is the address the gateway logged after prefix before it
// started serving (`msg="admin API"` finds the X of `msg="admin API"
// addr=X`): the address a listener given port 0 bound. The log level must
// let the line through (--log-level info).
func (d *Dev) LoggedAddr(t testing.TB, prefix string) string {
	t.Helper()
	a := loggedAddr(d.Stderr(), prefix)
	if a == "" {
		t.Fatalf("tollgate dev logged no %s addr=\n%s", prefix, d.Stderr())
	}
	return a
}

func healthy(base string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Env is what `tollgate env --json` prints for this gateway, as a user's
// shell would get it (computed against a clean environment).
func (d *Dev) Env(t testing.TB) map[string]string {
	t.Helper()
	cmd := exec.Command(Binary(t), "env", "--json", "--data-dir", d.DataDir)
	cmd.Env = CleanEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tollgate env: %v", err)
	}
	var m map[string]string
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("tollgate env --json: %v\n%s", err, out)
	}
	return m
}

// Served is one request the mock providers received, with their ground
// truth usage.
type Served struct {
	Provider string `json:"provider"`
	mockprovider.Served
}

// Served returns everything the mock providers received so far.
func (d *Dev) Served(t testing.TB) []Served {
	t.Helper()
	if d.MockURL == "" {
		t.Fatal("this gateway runs no mock providers")
	}
	return served(t, d.MockURL)
}

// servedPath is where the mock providers report what they received.
const servedPath = "/_mock/served"

func served(t testing.TB, root string) []Served {
	t.Helper()
	resp, err := http.Get(root + servedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []Served
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Usage returns the ledger's usage records (`tollgate usage --records --json`).
func (d *Dev) Usage(t testing.TB) []usage.Record {
	t.Helper()
	return UsageIn(t, d.DataDir)
}

// UsageIn returns the usage records in a data dir (`tollgate usage --records --json`),
// for gateways the test did not start with StartDev.
func UsageIn(t testing.TB, dataDir string) []usage.Record {
	t.Helper()
	out := Run(t, "usage", "--records", "--json", "--data-dir", dataDir)
	var recs []usage.Record
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r usage.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("usage line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

// WaitUsage polls the ledger until it holds at least n records (the
// gateway writes them in batches, off the request path).
func (d *Dev) WaitUsage(t testing.TB, n int) []usage.Record {
	t.Helper()
	return waitUsage(t, d, n)
}

// CleanEnv is the test process environment without any variable the
// gateway sets or reads as a provider key, so a developer's own keys never
// leak into (or change) a test.
func CleanEnv() []string {
	drop := map[string]bool{}
	for _, k := range []string{
		"OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN",
		"GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL",
		"GOOGLE_GENAI_USE_VERTEXAI", "AI_GATEWAY_KEY", "AI_GATEWAY_BASE_URL",
		"TOLLGATE_OPENAI_API_KEY", "TOLLGATE_ANTHROPIC_API_KEY", "TOLLGATE_GEMINI_API_KEY", "TOLLGATE_DATA_DIR",
		"TOLLGATE_REDIS_URL", "TOLLGATE_LEDGER_URL",
	} {
		drop[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	return env
}

// sdkVars are variables the official SDKs read besides the ones CleanEnv
// drops. A developer's machine may have them; they would change what an
// "unconfigured" client does (extra headers, org ids, profiles, Vertex).
var sdkVars = []string{
	"OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_ADMIN_KEY", "OPENAI_WEBHOOK_SECRET", "OPENAI_CUSTOM_HEADERS",
	"ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR", "ANTHROPIC_WEBHOOK_SIGNING_KEY",
	"ANTHROPIC_FEDERATION_RULE_ID", "ANTHROPIC_ORGANIZATION_ID", "ANTHROPIC_IDENTITY_TOKEN_FILE", "ANTHROPIC_IDENTITY_TOKEN",
	"GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_CLOUD_REGION",
}

// UnsetSDKEnv removes from the test process every variable that
// configures the official SDKs or the gateway, so in-process clients get
// only the configuration a test gives them. It unsets rather than empties:
// the Go SDKs use os.LookupEnv, so an empty value is not the same as none.
// Call it from TestMain.
func UnsetSDKEnv() {
	keep := map[string]bool{}
	for _, kv := range CleanEnv() {
		k, _, _ := strings.Cut(kv, "=")
		keep[k] = true
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !keep[k] {
			os.Unsetenv(k)
		}
	}
	for _, k := range sdkVars {
		os.Unsetenv(k)
	}
}

// GetStatus GETs url with a bearer token and returns the status.
func GetStatus(t testing.TB, url, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
