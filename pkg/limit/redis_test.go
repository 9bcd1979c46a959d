package limit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/logbuf"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/test/services"
)

// TestRedisTwoReplicasWindowBound: two limiters with clients of their own,
// as two gateway replicas, share one Redis; the window bound holds for
// their requests together.
func TestRedisTwoReplicasWindowBound(t *testing.T) {
	srv := services.StartRedis(t)
	var ls []*Limiter
	for range 2 {
		st := NewRedis(newClient(t, srv.Addr()), RedisOptions{CallerClock: true})
		ls = append(ls, newLimiter(t, st, Options{FailureMode: FailClosed}))
	}
	checkWindowBound(t, ls, 16, 60)
}

// replicaEnv, when set to a Redis address, makes the test binary a gateway
// replica for TestRedisTwoProcesses instead of running the tests.
const replicaEnv = "TOLLGATE_LIMIT_TEST_REPLICA"

func TestMain(m *testing.M) {
	if addr := os.Getenv(replicaEnv); addr != "" {
		if err := runReplica(addr, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	replicaWindow  = 200 * time.Millisecond
	replicaLimit   = 2000
	replicaMaxCost = 200
)

// runReplica admits requests of random size against one budget in the
// Redis at addr, on the server's clock, for six windows, and writes the
// tokens its admitted requests used per server window as JSON.
func runReplica(addr string, out io.Writer) error {
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	l, err := New(NewRedis(client, RedisOptions{}), Options{Window: replicaWindow, FailureMode: FailClosed})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	used := map[int64]int64{}
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	stop := time.Now().Add(6 * replicaWindow)
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(g)))
			for time.Now().Before(stop) {
				cost := 1 + rng.Int64N(replicaMaxCost)
				d, r, err := l.Admit(context.Background(), time.Now(), Check{Key: "tpm:{a}:m", Limit: replicaLimit, Cost: cost})
				if err != nil {
					errs <- err
					return
				}
				if !d.Allowed {
					if d.RetryAfter <= 0 || d.RetryAfter > replicaWindow {
						errs <- fmt.Errorf("retry-after %v outside (0, %v]", d.RetryAfter, replicaWindow)
						return
					}
					continue
				}
				actual := cost/2 + rng.Int64N(cost/2+1)
				if err := l.Settle(context.Background(), time.Now(), r, actual); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				used[r.windows[0]] += actual
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err, failed := <-errs; failed {
		return err
	}
	return json.NewEncoder(out).Encode(used)
}

// TestRedisTwoProcesses: two gateway processes share one Redis, on its
// clock, in real time with short windows; the bound holds for their
// requests together in every window the server charged.
func TestRedisTwoProcesses(t *testing.T) {
	srv := services.StartRedis(t)
	var outs [2]bytes.Buffer
	var cmds [2]*exec.Cmd
	for i := range cmds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), replicaEnv+"="+srv.Addr())
		cmd.Stdout, cmd.Stderr = &outs[i], os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	total := map[int64]int64{}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		var used map[int64]int64
		if err := json.Unmarshal(outs[i].Bytes(), &used); err != nil {
			t.Fatalf("replica %d wrote %q: %v", i, outs[i].String(), err)
		}
		if len(used) < 3 {
			t.Fatalf("replica %d admitted requests in %d windows, want several: %v", i, len(used), used)
		}
		for w, n := range used {
			total[w] += n
		}
	}
	for w, n := range total {
		if n > replicaLimit {
			t.Errorf("window %d: %d tokens used by both replicas, limit %d", w, n, replicaLimit)
		}
	}
	t.Logf("tokens used per window by both replicas: %v", total)
}

// TestRedisMatchesMemory replays the same random calls (times sometimes
// going back, overspends, refunds in ended windows, several checks) on a
// Memory and a Redis limiter: the script and the Go code must decide alike.
func TestRedisMatchesMemory(t *testing.T) {
	srv := services.StartRedis(t)
	mem := newLimiter(t, NewMemory(100), Options{})
	red := newLimiter(t, NewRedis(newClient(t, srv.Addr()), RedisOptions{CallerClock: true}), Options{FailureMode: FailClosed})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	limits := []int64{500, 300, 5}
	type pending struct{ m, r Reservation }
	var held []pending
	now := base
	for i := range 3000 {
		switch rng.IntN(10) {
		case 0:
			now = now.Add(-time.Duration(rng.Int64N(int64(time.Minute)))) // a clock behind
		case 1:
			now = now.Add(time.Duration(rng.Int64N(int64(5 * time.Minute))))
		default:
			now = now.Add(time.Duration(rng.Int64N(int64(5 * time.Second))))
		}
		if len(held) > 0 && rng.IntN(3) == 0 {
			k := rng.IntN(len(held))
			p := held[k]
			held = append(held[:k], held[k+1:]...)
			actual := rng.Int64N(700)
			if err := mem.Settle(ctx, now, p.m, actual); err != nil {
				t.Fatal(err)
			}
			if err := red.Settle(ctx, now, p.r, actual); err != nil {
				t.Fatal(err)
			}
			continue
		}
		cost := rng.Int64N(350)
		var checks []Check
		for j := range 1 + rng.IntN(3) {
			c := Check{Key: fmt.Sprint("k", j, ":", rng.IntN(2)), Limit: limits[j], Cost: cost}
			if j == 2 {
				c.Cost, c.Requests = 1, true
			}
			checks = append(checks, c)
		}
		dm, rm, err := mem.Admit(ctx, now, checks...)
		if err != nil {
			t.Fatal(err)
		}
		dr, rr, err := red.Admit(ctx, now, checks...)
		if err != nil {
			t.Fatal(err)
		}
		if dm != dr || rm != rr {
			t.Fatalf("call %d at %v, %+v:\nmemory %+v %+v\nredis  %+v %+v", i, now.Sub(base), checks, dm, rm, dr, rr)
		}
		if dm.Allowed {
			held = append(held, pending{rm, rr})
		}
	}
}

// TestRedisOutageFallsBackLocally kills Redis under load: decisions go on
// in the local store, limited, counted and logged once; once Redis is back
// it is used again.
func TestRedisOutageFallsBackLocally(t *testing.T) {
	srv := services.StartRedis(t)
	var logs logbuf.Buffer
	l := newLimiter(t, NewRedis(newClient(t, srv.Addr()), RedisOptions{}), Options{
		Recheck:  100 * time.Millisecond,
		LogEvery: time.Hour,
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	// The budget is out of reach: local decisions run fast, and however
	// many a loaded machine fits in before Redis returns, none may be
	// refused for lack of budget.
	check := Check{Key: "tpm:{a}:m", Limit: usage.MaxCount, Cost: 10}

	var redisBefore, local, redisAfter atomic.Int64
	var phase atomic.Int32 // 0 up, 1 down, 2 back up
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := phase.Load()
				d, r, err := l.Admit(context.Background(), time.Now(), check)
				if err != nil || !d.Allowed {
					t.Errorf("admit during phase %d: %+v %v", p, d, err)
					return
				}
				switch {
				case r.local:
					local.Add(1)
				case p == 0:
					redisBefore.Add(1)
				case p == 2:
					redisAfter.Add(1)
				}
				if err := l.Settle(context.Background(), time.Now(), r, 15); err != nil {
					t.Errorf("settle during phase %d: %v", p, err)
					return
				}
				time.Sleep(50 * time.Microsecond) // a steady load, not a spin
			}
		})
	}
	waitFor(t, "decisions in Redis", func() bool { return redisBefore.Load() > 100 })
	phase.Store(1)
	srv.Stop()
	waitFor(t, "local decisions", func() bool { return local.Load() > 100 })
	srv.Restart()
	phase.Store(2)
	waitFor(t, "decisions in Redis again", func() bool { return redisAfter.Load() > 100 })
	close(stop)
	wg.Wait()

	st := l.Stats()
	if st.Fallbacks < uint64(local.Load()) || st.Unavailable != 0 {
		t.Errorf("stats %+v after %d local decisions", st, local.Load())
	}
	out := logs.String()
	if n := strings.Count(out, "rate-limit store unavailable"); n != 1 {
		t.Errorf("%d outage lines for %d fallbacks, want 1 (LogEvery is an hour):\n%s", n, st.Fallbacks, out)
	}
	if n := strings.Count(out, "rate-limit store reachable again"); n < 1 {
		t.Errorf("no line saying Redis is back:\n%s", out)
	}
	t.Logf("decisions: %d in Redis, %d local, %d in Redis again; %+v", redisBefore.Load(), local.Load(), redisAfter.Load(), st)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRedisOutageLocalLimits: while Redis is down the local store enforces
// the limit (nothing goes through unmetered), a settlement of a request
// admitted by Redis charges its overspend locally, and refunds stay in
// Redis.
func TestRedisOutageLocalLimits(t *testing.T) {
	srv := services.StartRedis(t)
	l := newLimiter(t, NewRedis(newClient(t, srv.Addr()), RedisOptions{CallerClock: true}), Options{})
	ctx := context.Background()
	now := base
	_, inRedis := mustAdmit(t, l, now, tok("k", 600))
	_, inRedis2 := mustAdmit(t, l, now, tok("k", 100))
	srv.Stop()
	if err := l.Settle(ctx, now, inRedis, 900); err != nil { // 300 over, charged locally
		t.Fatal(err)
	}
	if err := l.Settle(ctx, now, inRedis2, 0); err != nil { // 100 back: dropped
		t.Fatal(err)
	}
	d, r := mustAdmit(t, l, now, tok("k", 700))
	if !d.Allowed || !r.local || d.Budgets[0].Remaining != 0 {
		t.Fatalf("local admission: %+v local=%v, want allowed with 0 left (300 over + 700)", d, r.local)
	}
	if d, _ := mustAdmit(t, l, now, tok("k", 1)); d.Allowed {
		t.Fatalf("local store let 1,001 tokens through: %+v", d)
	}
	if st := l.Stats(); st.Fallbacks != 4 {
		t.Fatalf("stats %+v, want 4 fallbacks (2 settlements, 2 admissions)", st)
	}
	srv.Restart()
	later := now.Add(2 * time.Second) // past Recheck
	// A reservation made locally settles locally, even with Redis back.
	if err := l.Settle(ctx, later, r, 0); err != nil {
		t.Fatal(err)
	}
	d, r = mustAdmit(t, l, later, tok("k", 1000))
	if !d.Allowed || r.local {
		t.Fatalf("after restart: %+v local=%v, want allowed by the (empty) Redis", d, r.local)
	}
	if d, _ := mustAdmit(t, l, later, tok("k", 1)); d.Allowed {
		t.Fatalf("Redis over its budget: %+v", d)
	}
}

// TestRedisOutageClosed: FailClosed refuses while Redis is down and
// recovers with it.
func TestRedisOutageClosed(t *testing.T) {
	srv := services.StartRedis(t)
	l := newLimiter(t, NewRedis(newClient(t, srv.Addr()), RedisOptions{}), Options{FailureMode: FailClosed})
	ctx := context.Background()
	now := time.Now()
	_, r := mustAdmit(t, l, now, tok("k", 10))
	srv.Stop()
	for range 3 {
		if _, _, err := l.Admit(ctx, now, tok("k", 10)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("admit with Redis down: %v, want ErrUnavailable", err)
		}
	}
	if err := l.Settle(ctx, now, r, 20); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("settle with Redis down: %v, want ErrUnavailable", err)
	}
	if st := l.Stats(); st.Unavailable != 3 || st.Fallbacks != 0 {
		t.Fatalf("stats %+v, want 3 unavailable", st)
	}
	srv.Restart()
	if d, r := mustAdmit(t, l, now.Add(2*time.Second), tok("k", 10)); !d.Allowed || r.local {
		t.Fatalf("after restart: %+v", d)
	}
}

func TestRedisScriptReloadedAfterFlush(t *testing.T) {
	srv := services.StartRedis(t)
	c := newClient(t, srv.Addr())
	l := newLimiter(t, NewRedis(c, RedisOptions{}), Options{FailureMode: FailClosed})
	mustAdmit(t, l, time.Now(), tok("k", 10))
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if d, _ := mustAdmit(t, l, time.Now(), tok("k", 10)); !d.Allowed {
		t.Fatalf("after SCRIPT FLUSH: %+v", d)
	}
}

func TestRedisKeysExpire(t *testing.T) {
	srv := services.StartRedis(t)
	c := newClient(t, srv.Addr())
	l := newLimiter(t, NewRedis(c, RedisOptions{}), Options{Window: 100 * time.Millisecond, FailureMode: FailClosed})
	ctx := context.Background()
	_, r := mustAdmit(t, l, time.Now(), Check{Key: "k", Limit: 1000, Cost: 100})
	if err := l.Settle(ctx, time.Now(), r, 2500); err != nil { // three windows of debt
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, "k").Result()
	if err != nil {
		t.Fatal(err)
	}
	// At rest after the current window and two more, plus a window.
	if ttl <= 250*time.Millisecond || ttl > 400*time.Millisecond {
		t.Fatalf("PTTL %v, want within (250ms, 400ms]", ttl)
	}
	waitFor(t, "expiry", func() bool { return c.Exists(ctx, "k").Val() == 0 })
}
