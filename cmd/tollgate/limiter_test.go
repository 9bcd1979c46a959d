package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/pkg/limit"
	"github.com/tollgate-dev/tollgate/test/services"
)

// slowReplies is a TCP proxy to a Redis server that, once slow is set,
// holds the next reply for longer than the limiter's read timeout: the
// server has run the command, the client does not hear back in time.
type slowReplies struct {
	ln   net.Listener
	slow atomic.Bool
}

func startSlowReplies(t *testing.T, target string) *slowReplies {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowReplies{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if p.slow.CompareAndSwap(true, false) {
							time.Sleep(400 * time.Millisecond)
						}
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// TestLimiterRedisNoRetry: a settlement whose reply times out has run on
// the server; the client must not send it again, or its refund (or
// overspend) is applied several times over. go-redis retries by default
// (MaxRetries 0 means 3), so newLimiter must turn retries off.
func TestLimiterRedisNoRetry(t *testing.T) {
	srv := services.StartRedis(t)
	proxy := startSlowReplies(t, srv.Addr())
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = direct.Close() })
	ctx := context.Background()
	// Keep clear of a minute boundary on the server's clock, which the
	// limiter's windows follow: the refund below is due in the same window.
	for {
		now, err := direct.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if s := now.Second(); s >= 2 && s <= 55 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	l, closeFn, err := newLimiter(limitOptions{redisURL: "redis://" + proxy.ln.Addr().String(), failureMode: "local"},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeFn() })
	const key = "tpm:{acct}:m"
	check := limit.Check{Key: key, Limit: 100_000, Cost: 1000}
	var res []limit.Reservation
	for range 2 {
		d, r, err := l.Admit(ctx, time.Now(), check)
		if err != nil || !d.Allowed {
			t.Fatalf("admit: %+v, %v", d, err)
		}
		res = append(res, r)
	}
	proxy.slow.Store(true)
	start := time.Now()
	_ = l.Settle(ctx, time.Now(), res[0], 200) // 800 back, once
	took := time.Since(start)
	time.Sleep(100 * time.Millisecond) // let the server finish what reached it
	used, err := direct.HGet(ctx, key, "u").Int64()
	if err != nil {
		t.Fatal(err)
	}
	if used != 1200 {
		t.Errorf("after 2 × 1000 reserved and 800 given back, the budget holds %d tokens, want 1200: the settlement ran more than once", used)
	}
	if took > time.Second {
		t.Errorf("a settlement waited %v for a Redis that did not answer, want about the read timeout", took)
	}
}
