package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/pkg/limit"
)

// limitOptions configure the tokens-per-minute limiter.
type limitOptions struct {
	// redisURL, when set, keeps the counters in Redis, shared by replicas
	// ("redis://host:6379/0"); otherwise they are in memory.
	redisURL string
	// failureMode is what happens while Redis is down: "local" (default)
	// or "closed".
	failureMode string
	// maxKeys bounds the in-memory counters.
	maxKeys int
}

// newLimiter builds the limiter and returns what must be closed with it.
func newLimiter(o limitOptions, log *slog.Logger) (*limit.Limiter, func() error, error) {
	mode := limit.FailureMode(o.failureMode)
	switch mode {
	case "":
		mode = limit.FailLocal
	case limit.FailLocal, limit.FailClosed:
	default:
		return nil, nil, fmt.Errorf("limits.redis_failure_mode %q: want local or closed", o.failureMode)
	}
	opts := limit.Options{FailureMode: mode, LocalKeys: o.maxKeys, Logger: log}
	if o.redisURL == "" {
		l, err := limit.New(limit.NewMemory(o.maxKeys), opts)
		return l, func() error { return nil }, err
	}
	ropts, err := redis.ParseURL(o.redisURL)
	if err != nil {
		// The URL may hold a password: say what is wrong without it.
		return nil, nil, errors.New("limits.redis_url: not a redis:// or rediss:// URL")
	}
	// A decision waits at most this long for Redis before falling back.
	ropts.DialTimeout = 500 * time.Millisecond
	ropts.ReadTimeout = 250 * time.Millisecond
	ropts.WriteTimeout = 250 * time.Millisecond
	// No retries (go-redis reads 0 as its default of 3): a script whose
	// reply timed out may have run, and running it again would charge or
	// refund twice. It also keeps the wait for a dead Redis to one timeout.
	ropts.MaxRetries = -1
	client := redis.NewClient(ropts)
	l, err := limit.New(limit.NewRedis(client, limit.RedisOptions{}), opts)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return l, client.Close, nil
}
