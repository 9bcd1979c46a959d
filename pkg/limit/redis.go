package limit

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

//go:embed redis.lua
var redisLua string

// script is shared by every Redis store: go-redis runs it with EVALSHA and
// sends it with EVAL only when the server answers NOSCRIPT (first use, or
// after a restart).
var script = redis.NewScript(redisLua)

// Redis keeps counters in a Redis server shared by every replica. Each
// admission and each settlement is one round trip: a script that reads,
// checks and writes every budget of the request atomically. Budgets expire
// on their own once at rest.
type Redis struct {
	client      redis.Scripter
	callerClock bool
}

// RedisOptions configures a Redis store.
type RedisOptions struct {
	// CallerClock makes the script use the time passed to Admit and Settle
	// instead of the Redis server's TIME. Off by default: with the server's
	// clock every replica sees the same window boundaries whatever its own
	// clock says. Tests turn it on to replay scripted times.
	CallerClock bool
}

// NewRedis returns a store over client. With Redis Cluster, the keys of
// one Admit must hash to one slot (share a {hash tag}). The client must not
// retry commands (go-redis: MaxRetries -1; 0 means 3 retries): a script
// whose reply timed out may have run, and a retry would apply it twice.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	return &Redis{client: client, callerClock: opts.CallerClock}
}

func (r *Redis) clock(now int64) int64 {
	if r.callerClock {
		return now
	}
	return -1
}

func (r *Redis) admit(ctx context.Context, now int64, b batch) (result, error) {
	keys := make([]string, b.n)
	args := make([]any, 3, 3+2*b.n)
	args[0], args[1], args[2] = "admit", r.clock(now), b.window
	for i := range b.n {
		c := &b.checks[i]
		keys[i] = c.Key
		args = append(args, c.Limit, c.Cost)
	}
	v, err := script.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return result{}, fmt.Errorf("limit: redis admit: %w", err)
	}
	if len(v) != 2+3*b.n {
		return result{}, fmt.Errorf("limit: redis admit: %d values in the reply, want %d", len(v), 2+3*b.n)
	}
	res := result{now: v[0], ok: v[1] == 1}
	for i := range b.n {
		res.counters[i] = counter{window: v[2+3*i], used: v[3+3*i], debt: v[4+3*i]}
	}
	return res, nil
}

func (r *Redis) settle(ctx context.Context, now int64, b batch, windows [MaxChecks]int64, actual int64) error {
	keys := make([]string, 0, b.n)
	args := make([]any, 3, 3+3*b.n)
	args[0], args[1], args[2] = "settle", r.clock(now), b.window
	for i := range b.n {
		c := &b.checks[i]
		if diff := actual - c.Cost; !c.Requests && diff != 0 {
			keys = append(keys, c.Key)
			args = append(args, c.Limit, diff, windows[i])
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if err := script.Run(ctx, r.client, keys, args...).Err(); err != nil {
		return fmt.Errorf("limit: redis settle: %w", err)
	}
	return nil
}
