package cli_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestDevInterruptRecordsStreamsInFlight: Ctrl-C on `tollgate dev` while a
// stream is still going (a slow mock here, longer than the shutdown grace)
// cuts the stream, and its usage is still in the ledger afterwards: nothing
// is lost on the way out.
func TestDevInterruptRecordsStreamsInFlight(t *testing.T) {
	dev := harness.StartDev(t, "--mock", "--mock-chunk-delay", "1s")
	req, err := http.NewRequest(http.MethodPost, dev.BaseURL+"/openai/v1/chat/completions", strings.NewReader(
		`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a long joke"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("authorization", "Bearer "+dev.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The first event has arrived: the stream is in flight.
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dev.Stop(t)
	if d := time.Since(start); d > 12*time.Second {
		t.Errorf("tollgate dev took %v to stop", d)
	}
	recs := dev.Usage(t)
	if len(recs) != 1 {
		t.Fatalf("after Ctrl-C with a stream in flight the ledger holds %d records, want 1 (the cut stream)\n%s", len(recs), dev.Stderr())
	}
	if r := recs[0]; r.Model != "gpt-4o-mini" || !r.Stream {
		t.Errorf("record %+v", r)
	}
}

// TestDevExitCodes: `tollgate dev -- CMD` exits with CMD's code, 128+n when
// a signal killed CMD, and, as a shell does, 127 when CMD is not found and
// 126 when it cannot be run, with a message naming it: a script can tell
// "CMD failed" from "CMD never ran".
func TestDevExitCodes(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		cmd    []string
		code   int
		stderr string
	}{
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3, ""},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, ""},
		{"not found", []string{"no-such-command-tollgate-test"}, 127, `"no-such-command-tollgate-test": executable file not found`},
		{"not executable", []string{notExec}, 126, "permission denied"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--"}, c.cmd...)
			_, stderr, code := tollgate(t, args...)
			if code != c.code || !strings.Contains(stderr, c.stderr) {
				t.Errorf("tollgate dev -- %v: exit %d, stderr %q; want exit %d and %q", c.cmd, code, stderr, c.code, c.stderr)
			}
		})
	}
}

// TestEnvAfterDevCrashed: a dev gateway killed outright leaves its state
// file behind. When another dev gateway (on another data dir) has since
// taken the same address, as it does with the default --listen, `tollgate
// env` for the dead one must not print the dead one's token, which the live
// gateway refuses: it says that no gateway runs on that data dir.
func TestEnvAfterDevCrashed(t *testing.T) {
	dir := t.TempDir()
	crashed := exec.Command(harness.Binary(t), "dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", dir)
	crashed.Env = harness.CleanEnv()
	if err := crashed.Start(); err != nil {
		t.Fatal(err)
	}
	var st struct {
		BaseURL string `json:"base_url"`
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(dir, "dev.json")); err == nil && json.Unmarshal(b, &st) == nil && st.BaseURL != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tollgate dev did not start")
		}
	}
	_ = crashed.Process.Kill()
	_ = crashed.Wait()
	other := harness.StartDev(t, "--mock", "--listen", strings.TrimPrefix(st.BaseURL, "http://"))
	if other.BaseURL != st.BaseURL {
		t.Fatalf("the second gateway is on %s, not %s", other.BaseURL, st.BaseURL)
	}
	out, stderr, code := tollgate(t, "env", "--data-dir", dir)
	if code == 0 || !strings.Contains(stderr, "tollgate dev") || strings.Contains(out, "KEY") {
		t.Errorf("env for the crashed gateway: exit %d, printed variables %v, stderr %q; want a failure saying none runs there", code, strings.Contains(out, "KEY"), stderr)
	}
	// The live one still gets its variables.
	if env := other.Env(t); env["OPENAI_BASE_URL"] != other.BaseURL+"/openai/v1" {
		t.Errorf("env for the live gateway: %v", env)
	}
}

// TestEnvSaysWhatItKeeps: variables already defined are kept (the pair
// rules), and `tollgate env` says so on stderr. Re-running
// `eval "$(tollgate env)"` after the gateway moved to another port would
// otherwise print nothing and leave the shell on the old port, silently.
func TestEnvSaysWhatItKeeps(t *testing.T) {
	dev := harness.StartDev(t, "--mock")
	out, stderr, code := tollgateEnv(t, []string{"OPENAI_BASE_URL=http://127.0.0.1:1/openai/v1", "AI_GATEWAY_KEY=tg1.stale"}, "env", "--data-dir", dev.DataDir)
	if code != 0 || strings.Contains(out, "OPENAI_") || strings.Contains(out, "AI_GATEWAY_") || !strings.Contains(out, "ANTHROPIC_BASE_URL") {
		t.Fatalf("exit %d, stdout:\n%s", code, out)
	}
	for _, want := range []string{"OPENAI_BASE_URL", "AI_GATEWAY_KEY", "unset"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not mention %s", stderr, want)
		}
	}
	if strings.Contains(stderr, "127.0.0.1:1") || strings.Contains(stderr, "tg1.stale") {
		t.Errorf("stderr %q shows a variable's value", stderr)
	}
	// Nothing kept, nothing said.
	if _, stderr, _ := tollgate(t, "env", "--data-dir", dev.DataDir); stderr != "" {
		t.Errorf("stderr %q with nothing kept", stderr)
	}
}
