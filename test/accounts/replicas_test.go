package accounts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/shared"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
	"github.com/tollgate-dev/tollgate/test/harness"
	"github.com/tollgate-dev/tollgate/test/services"
)

// replica is one `tollgate serve` process with its own data dir.
type replica struct {
	name, dir, metrics string
	proc               *harness.Process
}

func cliIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return string(harness.Run(t, append(args, "--data-dir", dir)...))
}

// copyDir copies the regular files under src into dst: a second replica
// starts from the first one's signing key and accounts, as replicas built
// from one Secret and one seeded ledger would.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// serveConfig writes a `tollgate serve` config: every provider sent to the
// mock, the limiter in Redis and refusing (503) rather than deciding alone
// when Redis is unreachable, debug logging, metrics on their own port.
func serveConfig(t *testing.T, dir, mockURL, redisAddr, metrics string) string {
	t.Helper()
	cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
providers:
  openai: {upstream: %s/openai}
  anthropic: {upstream: %s/anthropic}
  gemini: {upstream: %s/gemini}
limits:
  redis_url: redis://%s/0
  redis_failure_mode: closed
`, dir, mockURL, mockURL, mockURL, redisAddr)
	if metrics != "" {
		cfg += "metrics_listen: " + metrics + "\n"
	}
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTwoGatewaysShareRedis runs two `tollgate serve` processes on one
// Redis and bursts a Free account's claude-3-5-haiku-20241022 budget
// through both at once, within one limiter window: together they admit
// exactly what fits in the limit, never more. It then runs the privacy
// canary through them and looks for it in Redis as well.
func TestTwoGatewaysShareRedis(t *testing.T) {
	t.Parallel()
	rds := services.StartRedis(t)
	mock := harness.StartMock(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	for _, a := range []struct{ name, plan string }{{"burst", "free"}, {"canary", "pro"}} {
		cliIn(t, dirA, "account", "create", a.name, "--plan", a.plan, "--credits", "1000")
		cliIn(t, dirA, "project", "create", a.name+"-app", "--account", a.name, "--activate")
	}
	burstToken := strings.TrimSpace(cliIn(t, dirA, "token", "mint", "--project", "burst-app"))
	canaryToken := strings.TrimSpace(cliIn(t, dirA, "token", "mint", "--project", "canary-app"))
	copyDir(t, dirA, dirB)

	// The replicas' own provider keys, as an operator sets them: secrets
	// that must not leak either.
	keys := map[string]string{}
	var env []string
	for _, p := range []string{"openai", "anthropic", "gemini"} {
		keys[p] = "sk-" + newCanary(t)
		env = append(env, "TOLLGATE_"+strings.ToUpper(p)+"_API_KEY="+keys[p])
	}
	var reps []*replica
	for _, r := range []*replica{{name: "A", dir: dirA}, {name: "B", dir: dirB}} {
		// Port 0: the metrics address is read from the log.
		r.proc = harness.StartServe(t, serveConfig(t, r.dir, mock.URL, rds.Addr(), "127.0.0.1:0"), env)
		r.metrics = r.proc.LoggedAddr(t, `msg="serving metrics"`)
		reps = append(reps, r)
	}

	t.Run("a data dir is one replica's", func(t *testing.T) {
		// A second process on A's data dir would share its spool: it must
		// refuse to start, and say why.
		cmd := exec.Command(harness.Binary(t), "serve", "--config", serveConfig(t, dirA, mock.URL, rds.Addr(), ""), "--listen", "127.0.0.1:0")
		cmd.Env = harness.CleanEnv()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			t.Fatal("a second tollgate serve on a data dir in use kept running")
		}
		if err == nil || !strings.Contains(string(out), "another gateway is running on data dir") {
			t.Errorf("a second tollgate serve on a data dir in use: %v\n%s", err, out)
		}
	})

	t.Run("burst", func(t *testing.T) { burst(t, rds, mock, reps, burstToken) })
	t.Run("redis down", func(t *testing.T) { redisDown(t, rds, mock, reps[0], burstToken) })
	t.Run("canary", func(t *testing.T) { canaryReplicas(t, rds, mock, reps, canaryToken, keys) })
}

// burst sends many requests of one exactly estimated size through both
// replicas at once and counts what they admitted.
func burst(t *testing.T, rds *services.Redis, mock *harness.Process, reps []*replica, token string) {
	limit := tpmFromCSV(t, haiku, "free")
	counter, err := tokenize.NewCounter()
	if err != nil {
		t.Fatal(err)
	}
	// Every prompt has the same number of text bytes, so the same
	// estimate: find it from the body the SDK sends, then have the mock
	// report exactly that input and no output. Settlement then changes
	// nothing and each admitted request costs exactly `cost`.
	text := func(i int, input int64) string {
		return fmt.Sprintf("burst %04d [[mock input=%05d output=0]]", i, input)
	}
	params := func(s string) anthropic.MessageNewParams {
		return anthropic.MessageNewParams{Model: haiku, MaxTokens: 16,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(s))}}
	}
	var dry []byte
	dryRun := aoption.WithMiddleware(func(r *http.Request, _ aoption.MiddlewareNext) (*http.Response, error) {
		dry, _ = io.ReadAll(r.Body)
		return nil, fmt.Errorf("dry run")
	})
	_, _ = newWorkload(reps[0].proc.URL, token).anthropic(aoption.WithMaxRetries(0), dryRun).Messages.New(callCtx(t), params(text(0, 0)))
	cost := counter.Estimate(dry)
	if cost <= 0 || limit/cost < 10 {
		t.Fatalf("each request is estimated at %d tokens of a %d limit; the burst needs at least 10 to fit", cost, limit)
	}
	fits := limit / cost
	n := int(3 * fits)

	var mismatched atomic.Int64
	check := aoption.WithMiddleware(func(r *http.Request, next aoption.MiddlewareNext) (*http.Response, error) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		if counter.Estimate(b) != cost {
			mismatched.Add(1)
		}
		return next(r)
	})
	var clients []*anthropic.Client
	for _, r := range reps {
		clients = append(clients, newWorkload(r.proc.URL, token).anthropic(aoption.WithMaxRetries(0), check))
	}

	// Redis decides on its own clock, in windows aligned to the minute:
	// start the burst with enough of a window left for all of it.
	rc := redis.NewClient(&redis.Options{Addr: rds.Addr()})
	defer rc.Close()
	now := func() time.Time {
		tm, err := rc.Time(context.Background()).Result()
		if err != nil {
			t.Fatalf("redis TIME: %v", err)
		}
		return tm
	}
	if left := untilNextWindow(now()); left < 20*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	window := now().Truncate(time.Minute)

	type result struct {
		replica int
		status  int
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				rep := i % len(clients)
				_, err := clients[rep].Messages.New(callCtx(t), params(text(i, cost)))
				res := result{replica: rep, status: http.StatusOK, err: err}
				if err != nil {
					var aerr *anthropic.Error
					if errors.As(err, &aerr) {
						res.status = aerr.StatusCode
						if aerr.StatusCode == http.StatusTooManyRequests && (aerr.Type() != shared.ErrorTypeRateLimitError || aerr.Response.Header.Get("retry-after") == "") {
							res.err = fmt.Errorf("a 429 without rate_limit_error and retry-after: %w", err)
						} else if aerr.StatusCode == http.StatusTooManyRequests {
							res.err = nil
						}
					}
				}
				results[i] = res
			}
		}()
	}
	wg.Wait()
	if w := now().Truncate(time.Minute); !w.Equal(window) {
		t.Fatalf("the burst ran from window %v into %v; its bound holds per window", window, w)
	}

	var ok, refused int64
	perReplica := make([][2]int64, len(reps))
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("request %d via %s: %v", i, reps[r.replica].name, r.err)
		case r.status == http.StatusOK:
			ok++
			perReplica[r.replica][0]++
		case r.status == http.StatusTooManyRequests:
			refused++
			perReplica[r.replica][1]++
		}
	}
	if m := mismatched.Load(); m > 0 {
		t.Fatalf("%d request bodies had another estimate than %d; the arithmetic below would be off", m, cost)
	}
	t.Logf("limit %d, %d tokens a request: %d requests, %d admitted (A %d, B %d), %d refused",
		limit, cost, n, ok, perReplica[0][0], perReplica[1][0], refused)
	// Admission checks the charge with the request included, so the two
	// replicas together admit at most the limit (docs/limits.md), and
	// with exact reservations exactly as many requests as fit.
	if ok*cost > limit {
		t.Errorf("the replicas admitted %d tokens in one window, over the limit of %d (by %d; one request is %d)", ok*cost, limit, ok*cost-limit, cost)
	}
	if ok != fits {
		t.Errorf("the replicas admitted %d requests of %d tokens; %d fit in %d", ok, cost, fits, limit)
	}
	if perReplica[0][0] == 0 || perReplica[1][0] == 0 {
		t.Errorf("admitted per replica %v: the burst did not go through both", perReplica)
	}
	var served int64
	for _, s := range harness.MockServed(t, mock.URL) {
		if s.Model == haiku {
			served++
		}
	}
	if served != ok {
		t.Errorf("the provider received %d requests, the clients got %d answers", served, ok)
	}

	// Each replica's ledger has its own requests; together, all of them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var requests, input, rejected int64
		for _, r := range reps {
			var u pb.GetUsageResponse
			if err := protojson.Unmarshal([]byte(cliIn(t, r.dir, "usage", "--account", "burst", "--json")), &u); err != nil {
				t.Fatal(err)
			}
			requests += u.GetTotal().GetRequests()
			input += u.GetTotal().GetTokens().GetInput()
			rejected += u.GetTotal().GetRejections()["rate_limited"]
		}
		if requests == int64(n) && input == ok*cost && rejected == refused {
			break
		}
		if requests > int64(n) || time.Now().After(deadline) {
			t.Fatalf("the two ledgers hold %d requests, %d input tokens, %d rate_limited; want %d, %d, %d",
				requests, input, rejected, n, ok*cost, refused)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// redisDown stops Redis under a replica configured to fail closed: a
// request is refused in the provider's shape (503, which the SDKs retry)
// and never reaches the provider unmetered; once Redis is back, requests
// go through again.
func redisDown(t *testing.T, rds *services.Redis, mock *harness.Process, rep *replica, token string) {
	const model = "claude-sonnet-4-5"
	client := newWorkload(rep.proc.URL, token).anthropic(aoption.WithMaxRetries(0))
	ask := func() error {
		_, err := client.Messages.New(callCtx(t), anthropic.MessageNewParams{
			Model: model, MaxTokens: 16,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))},
		})
		return err
	}
	served := func() int {
		n := 0
		for _, s := range harness.MockServed(t, mock.URL) {
			if s.Model == model {
				n++
			}
		}
		return n
	}
	before := served()
	rds.Stop()
	for range 3 {
		wantAnthropicError(t, ask(), http.StatusServiceUnavailable, shared.ErrorTypeAPIError)
	}
	if n := served() - before; n != 0 {
		t.Fatalf("with Redis down and redis_failure_mode closed, %d requests reached the provider", n)
	}
	rds.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ask()
		if err == nil {
			break
		}
		var aerr *anthropic.Error
		if !errors.As(err, &aerr) || aerr.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("after Redis came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := served() - before; n != 1 {
		t.Errorf("%d requests reached the provider, want the one let through after Redis came back", n)
	}
}

// canaryReplicas sends the canary through replica A and looks for it in
// Redis (every key and value), both replicas' data dirs, logs and metrics,
// and the usage views of A's ledger; and there too for the gateway token
// and the replicas' provider keys.
func canaryReplicas(t *testing.T, rds *services.Redis, mock *harness.Process, reps []*replica, token string, keys map[string]string) {
	canary := newCanary(t)
	n := canaryCalls(t, newWorkload(reps[0].proc.URL, token), canary)
	// Wait for the ledger, so everything the gateway writes is written.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var u pb.GetUsageResponse
		if err := protojson.Unmarshal([]byte(cliIn(t, reps[0].dir, "usage", "--account", "canary", "--json")), &u); err != nil {
			t.Fatal(err)
		}
		if u.GetTotal().GetRequests() >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ledger has %d of the canary's %d requests", u.GetTotal().GetRequests(), n)
		}
		time.Sleep(200 * time.Millisecond)
	}

	sources := map[string][]byte{}
	sources["redis"] = redisDump(t, rds, "tpm:{canary}:")
	for _, r := range reps {
		dirFiles(t, r.dir, "data dir "+r.name+" (running)", sources)
		sources["metrics "+r.name] = httpGet(t, "http://"+r.metrics+"/metrics")
	}
	for _, args := range usageViews("canary") {
		sources["tollgate "+strings.Join(args, " ")] = []byte(cliIn(t, reps[0].dir, args...))
	}
	for _, r := range reps {
		r.proc.Stop(t)
		dirFiles(t, r.dir, "data dir "+r.name+" (stopped)", sources)
		if !strings.Contains(r.proc.Stderr(), "request_id=") {
			t.Errorf("replica %s logged no request lines at debug level; is this its log?", r.name)
		}
		sources["stderr "+r.name] = []byte(r.proc.Stderr())
		sources["stdout "+r.name] = []byte(r.proc.Stdout())
	}
	for _, l := range leaks(canary, sources) {
		t.Errorf("the canary leaked: %s", l)
	}
	for p, key := range keys {
		for _, l := range leaks(key, sources) {
			t.Errorf("the %s key leaked: %s", p, l)
		}
	}
	for name, b := range sources {
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("the gateway token leaked into %s", name)
		}
	}
	// Positive control: the keys are the ones the provider was called with.
	sent := map[string]bool{}
	for _, s := range harness.MockServed(t, mock.URL) {
		for _, vs := range s.Header {
			for _, v := range vs {
				if strings.Contains(v, keys[s.Provider]) {
					sent[s.Provider] = true
				}
			}
		}
	}
	if len(sent) != len(keys) {
		t.Errorf("the provider received the configured key for %v only; the key check would prove nothing", sent)
	}
}

// redisDump is every key in Redis with its serialized value (DUMP), as
// text to search. want is a key prefix that must be there: proof that the
// dump sees the limiter's budgets.
func redisDump(t *testing.T, rds *services.Redis, want string) []byte {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: rds.Addr()})
	defer rc.Close()
	ctx := callCtx(t)
	var out strings.Builder
	found := false
	iter := rc.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		found = found || strings.HasPrefix(k, want)
		v, err := rc.Dump(ctx, k).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("redis DUMP %s: %v", k, err)
		}
		h, _ := rc.HGetAll(ctx, k).Result() // budgets are hashes; readable values too
		fmt.Fprintf(&out, "%s\t%q\t%v\n", k, v, h)
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("redis SCAN: %v", err)
	}
	if !found {
		t.Fatalf("redis has no key starting %q; the dump would prove nothing:\n%s", want, out.String())
	}
	return []byte(out.String())
}
