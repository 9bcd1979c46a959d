package cli_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// slowStream is the request of a stream that lasts longer than any grace
// the tests give it (the mock providers pause a second between chunks).
const slowStream = `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a long joke"}]}`

// streamsInFlight starts `tollgate serve` with both front doors (the
// Envoy path through envoysim and ext_proc, and the HTTP proxy) in front
// of mock providers that pause a second between chunks, and opens one
// stream through each; it returns once both have delivered their first
// event.
func streamsInFlight(t *testing.T, serveArgs ...string) *harness.Envoy {
	t.Helper()
	slow := mockprovider.NewServers(mockprovider.Options{ChunkDelay: time.Second})
	openai := httptest.NewServer(slow.OpenAI)
	t.Cleanup(openai.Close)
	e := harness.StartEnvoy(t, harness.DoorOptions{ChunkDelay: time.Second,
		ServeArgs: append([]string{"--upstream", "openai=" + openai.URL}, serveArgs...)})
	for _, base := range []string{e.BaseURL(), e.Serve.URL} {
		openStream(t, base+"/openai/v1/chat/completions", e.GatewayToken())
	}
	return e
}

// openStream posts slowStream and reads its first event; the response is
// closed when the test ends.
func openStream(t *testing.T, url, token string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(slowStream))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("authorization", "Bearer "+token)
	req.Header.Set("content-type", "application/json")
	c := http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d", url, resp.StatusCode)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatalf("%s: first event: %v", url, err)
	}
}

// wantCutStreams checks that the ledger holds exactly the two streams cut
// by the shutdown, once each, as abandoned.
func wantCutStreams(t *testing.T, e *harness.Envoy) {
	t.Helper()
	recs := harness.UsageIn(t, e.LedgerDir())
	ids := map[string]bool{}
	for _, r := range recs {
		if ids[r.RequestID] {
			t.Errorf("request %s recorded twice", r.RequestID)
		}
		ids[r.RequestID] = true
		if r.Model != "gpt-4o-mini" || !r.Stream || r.Status != usage.StatusAbandoned {
			t.Errorf("record of a stream cut by the shutdown: %+v", r)
		}
	}
	if len(recs) != 2 {
		t.Fatalf("the ledger holds %d records, want the 2 streams cut by the shutdown\n%s", len(recs), e.Stderr())
	}
}

// waitLogged waits up to 10 s for the process to log s.
func waitLogged(t *testing.T, p *harness.Process, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Stderr(), s); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("tollgate serve did not log %q\n%s", s, p.Stderr())
		}
	}
}

// TestServeShutdownGrace: shutdown_grace (here the --shutdown-grace flag)
// bounds how long streams in flight on either front door may go on after
// SIGTERM; then they are cut, recorded as abandoned, and the process exits
// 0.
func TestServeShutdownGrace(t *testing.T) {
	e := streamsInFlight(t, "--shutdown-grace", "1s")
	start := time.Now()
	if err := e.Serve.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited, err := e.Serve.Wait(15 * time.Second)
	if !exited {
		t.Fatalf("serve still runs %v after SIGTERM with a 1s grace\n%s", time.Since(start), e.Stderr())
	}
	if err != nil {
		t.Fatalf("serve exited with %v\n%s", err, e.Stderr())
	}
	// One second of health drain, one of grace, then the cut.
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("serve exited %v after SIGTERM, before the drain and the grace were over", d)
	}
	wantCutStreams(t, e)
}

// TestServeSecondSignalCutsTheGrace: a second SIGTERM while streams are in
// flight ends the (default, 30 s) grace at once: the streams are cut and
// recorded, the ledger flushed, and the process exits 0 within seconds
// instead of ignoring the signal.
func TestServeSecondSignalCutsTheGrace(t *testing.T) {
	e := streamsInFlight(t)
	if err := e.Serve.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, e.Serve, `msg="shutting down"`)
	start := time.Now()
	if err := e.Serve.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited, err := e.Serve.Wait(10 * time.Second)
	if !exited {
		t.Fatalf("serve still runs %v after a second SIGTERM\n%s", time.Since(start), e.Stderr())
	}
	if err != nil {
		t.Fatalf("serve exited with %v\n%s", err, e.Stderr())
	}
	wantCutStreams(t, e)
}

// TestServeReadyzFlipsBeforeTheListenerCloses: on SIGTERM the proxy's
// /readyz answers 503 while the listener still takes connections, so that
// the kubelet marks the pod unready (and traffic moves away) before
// connections are refused; /healthz stays 200 meanwhile.
func TestServeReadyzFlipsBeforeTheListenerCloses(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\nlog_level: info\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := harness.StartServe(t, cfg, nil)
	if code := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before SIGTERM: %d", code)
	}
	if err := srv.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var unready bool
	for deadline := time.Now().Add(10 * time.Second); !unready && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		switch code := get(t, srv.URL+"/readyz"); code {
		case http.StatusServiceUnavailable:
			unready = true
			if h := get(t, srv.URL+"/healthz"); h != http.StatusOK {
				t.Errorf("/healthz while draining: %d, want 200 (the process is alive)", h)
			}
		case 0:
			t.Fatalf("the listener closed before /readyz answered 503\n%s", srv.Stderr())
		}
	}
	if !unready {
		t.Fatalf("/readyz never answered 503 after SIGTERM\n%s", srv.Stderr())
	}
	if exited, err := srv.Wait(15 * time.Second); !exited || err != nil {
		t.Fatalf("serve after SIGTERM: exited %v, %v\n%s", exited, err, srv.Stderr())
	}
}

// get returns the status of a GET, 0 when the connection fails.
func get(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
