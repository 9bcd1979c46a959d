package sdknode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/logbuf"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestDadJokesExample runs the README's quickstart: `tollgate dev -- node
// examples/dad-jokes/server.js`, one GET /api/joke, the ledger, then Ctrl-C.
func TestDadJokesExample(t *testing.T) {
	requireNode(t)
	requireNodeModules(t, "examples/dad-jokes", "openai")
	// The server is told its port (PORT) before it starts: a port picked
	// free may be taken before it listens, and it then exits; it is started
	// again on another one.
	var (
		dir, base      string
		cmd            *exec.Cmd
		done           chan error
		stdout, stderr *logbuf.Buffer
		stopped        *bool // this attempt's process has been waited for
	)
	logs := func() string { return "stdout:\n" + stdout.String() + "\nstderr:\n" + stderr.String() }
	client := &http.Client{Timeout: 30 * time.Second}
	if _, err := harness.OnFreePorts(1, t.Logf, func(addrs []string) error {
		dir = t.TempDir()
		cmd = exec.Command(harness.Binary(t), "dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", dir,
			"--", "node", "examples/dad-jokes/server.js")
		cmd.Dir = harness.RepoRoot()
		cmd.Env = append(harness.CleanEnv(), fmt.Sprintf("PORT=%d", harness.Port(addrs[0])))
		stdout, stderr = &logbuf.Buffer{}, &logbuf.Buffer{}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		ownProcessGroup(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		stopped = new(bool)
		cmd, done, stopped := cmd, done, stopped
		t.Cleanup(func() {
			if !*stopped {
				killProcessGroup(cmd)
				<-done
			}
		})

		// Wait for the server: it says so once it listens (something else
		// may answer on a port taken from it), and GET / answers.
		base = "http://" + addrs[0]
		deadline := time.Now().Add(60 * time.Second)
		for {
			if strings.Contains(stdout.String(), "dad-jokes listening on") {
				if resp, err := client.Get(base + "/"); err == nil {
					resp.Body.Close()
					return nil
				}
			}
			select {
			case err := <-done:
				*stopped = true
				return fmt.Errorf("tollgate dev exited before the server listened: %v\n%s", err, logs())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the dad-jokes server did not listen on %s\n%s", base, logs())
			}
		}
	}); err != nil {
		t.Fatal(err)
	}

	resp, err := client.Get(base + "/api/joke")
	if err != nil {
		t.Fatalf("GET /api/joke: %v\n%s", err, logs())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("content-type"), "application/json") {
		t.Fatalf("GET /api/joke: %d %s %s\n%s", resp.StatusCode, resp.Header.Get("content-type"), body, logs())
	}
	var joke struct {
		Joke  string `json:"joke"`
		Model string `json:"model"`
		Usage struct {
			Input  int64 `json:"input_tokens"`
			Output int64 `json:"output_tokens"`
			Total  int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &joke); err != nil {
		t.Fatalf("GET /api/joke: %v: %s", err, body)
	}
	if strings.TrimSpace(joke.Joke) == "" || joke.Model != "gpt-4o-mini" {
		t.Errorf("joke %q model %q, want a joke from gpt-4o-mini", joke.Joke, joke.Model)
	}
	if joke.Usage.Input <= 0 || joke.Usage.Output <= 0 || joke.Usage.Total != joke.Usage.Input+joke.Usage.Output {
		t.Errorf("usage %+v, want input and output > 0 and total their sum", joke.Usage)
	}

	// The ledger record while the gateway runs (written off the request
	// path, in batches).
	var rec usage.Record
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		recs := harness.UsageIn(t, dir)
		if len(recs) > 1 {
			t.Fatalf("ledger has %d records after one joke: %+v", len(recs), recs)
		}
		if len(recs) == 1 {
			rec = recs[0]
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no usage record\n%s", logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if rec.Provider != "openai" || rec.Model != "gpt-4o-mini" || rec.Operation != "chat.completions" ||
		rec.Status != usage.StatusOK || rec.Estimated || rec.Stream {
		t.Errorf("usage record %+v, want an exact ok openai gpt-4o-mini chat.completions record", rec)
	}
	if rec.PromptTotal() != joke.Usage.Input || rec.Output != joke.Usage.Output || rec.Total() != joke.Usage.Total {
		t.Errorf("ledger %+v (prompt %d, total %d), the app saw %+v", rec.Tokens, rec.PromptTotal(), rec.Total(), joke.Usage)
	}

	// The mock's ground truth, via the state file `tollgate env` reads.
	var st struct {
		MockURL string `json:"mock_url"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "dev.json")); err != nil || json.Unmarshal(b, &st) != nil || st.MockURL == "" {
		t.Errorf("dev.json: %v %q", err, b)
	} else if resp, err := http.Get(st.MockURL + "/_mock/served"); err != nil {
		t.Errorf("mock ground truth: %v", err)
	} else {
		var served []harness.Served
		err := json.NewDecoder(resp.Body).Decode(&served)
		resp.Body.Close()
		switch {
		case err != nil:
			t.Errorf("mock ground truth: %v", err)
		case len(served) != 1:
			t.Errorf("the mock received %d requests for one joke", len(served))
		case served[0].Usage != rec.Tokens:
			t.Errorf("ledger %+v, provider ground truth %+v", rec.Tokens, served[0].Usage)
		}
	}

	// Ctrl-C: tollgate dev forwards SIGINT to the server, which closes and
	// exits 0, and tollgate exits with that code.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		*stopped = true
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("tollgate dev: %v", err)
		}
		if err != nil {
			t.Errorf("tollgate dev exited with %v after SIGINT, want 0 (the server exits 0 on SIGINT)\n%s", err, logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("tollgate dev did not exit within 15s of SIGINT\n%s", logs())
	}
	if _, err := http.Get(base + "/"); err == nil {
		t.Errorf("the dad-jokes server still answers after tollgate dev exited")
	}
	if !strings.Contains(stdout.String(), "dad-jokes listening on") {
		t.Errorf("the server's own output did not reach tollgate's stdout\n%s", logs())
	}
}
