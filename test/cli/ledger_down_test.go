package cli_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
	"github.com/tollgate-dev/tollgate/test/services"
)

// TestServeLedgerDownThenKilled: with the PostgreSQL ledger stopped,
// `tollgate serve` goes on serving (accounts from its cache) and spools
// the records; SIGTERM then exits 0 and logs how many records wait in the
// spool. Restarted with the database back, it stores them; SIGKILLed
// under load and restarted, it stores the record of every request answered
// before the one in flight at the kill, each once.
func TestServeLedgerDownThenKilled(t *testing.T) {
	pg := services.StartPostgres(t)
	t.Setenv("TOLLGATE_LEDGER_URL", pg.NewDatabase(t)) // for the CLI and serve
	dir := t.TempDir()
	harness.Run(t, "account", "create", "acme", "--plan", "pro", "--credits", "1000", "--data-dir", dir)
	harness.Run(t, "project", "create", "web", "--account", "acme", "--activate", "--data-dir", dir)
	token := strings.TrimSpace(string(harness.Run(t, "token", "mint", "--project", "web", "--data-dir", dir)))
	mock := harness.StartMock(t)
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\nlog_level: info\nproviders:\n  openai:\n    upstream: %s/openai\n", dir, mock.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"TOLLGATE_LEDGER_URL=" + os.Getenv("TOLLGATE_LEDGER_URL")}
	chat := func(srv *harness.Process) int {
		c := http.Client{Timeout: 10 * time.Second}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/openai/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("authorization", "Bearer "+token)
		req.Header.Set("content-type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	srv := harness.StartServe(t, cfg, env)
	answered := 0
	for range 3 {
		if code := chat(srv); code != http.StatusOK {
			t.Fatalf("with the ledger up: %d", code)
		}
		answered++
	}
	pg.Stop()
	for range 3 {
		if code := chat(srv); code != http.StatusOK {
			t.Fatalf("with the ledger down: %d, want 200 (accounts from the cache)\n%s", code, srv.Stderr())
		}
		answered++
	}
	if err := srv.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exited, err := srv.Wait(30 * time.Second); !exited || err != nil {
		t.Fatalf("serve after SIGTERM with the ledger down: exited %v, %v\n%s", exited, err, srv.Stderr())
	}
	if !strings.Contains(srv.Stderr(), "usage records in the spool") {
		t.Errorf("serve exited without saying that records wait in the spool\n%s", srv.Stderr())
	}
	if strings.Contains(srv.Stderr(), token) || strings.Contains(srv.Stderr(), `"hi"`) {
		t.Error("the log holds the token or the prompt")
	}

	// The database back: the next start stores what the spool held; then
	// it is killed while requests keep coming.
	pg.Start()
	srv = harness.StartServe(t, cfg, env)
	var ok atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ { // bounded: the kill comes long before
			select {
			case <-stop:
				return
			default:
			}
			if chat(srv) == http.StatusOK {
				ok.Add(1)
			}
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); ok.Load() < 10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	srv.Wait(10 * time.Second)
	answered += int(ok.Load())

	srv = harness.StartServe(t, cfg, env)
	var recs int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := harness.UsageIn(t, dir)
		ids := map[string]bool{}
		for _, r := range got {
			if ids[r.RequestID] {
				t.Fatalf("request %s recorded twice", r.RequestID)
			}
			ids[r.RequestID] = true
		}
		recs = len(got)
		if recs >= answered || time.Now().After(deadline) {
			break
		}
	}
	// The one request in flight at the kill (the client is sequential) may
	// have settled with its answer lost, or been answered before its record
	// reached the spool: a record is written once the response is complete,
	// since it holds the final usage, and is safe once Write returned
	// (docs/ledger.md). Every other answered request is there, each once.
	if recs < answered-1 || recs > answered+1 {
		t.Fatalf("the ledger holds %d records for %d answered requests\n%s", recs, answered, srv.Stderr())
	}
}
