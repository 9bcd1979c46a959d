package limit

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/services"
)

// checkExactAccounting admits and settles concurrently in one window, with
// actuals below, equal to and above the estimates, and requests that fail
// before upstream (actual 0): once all have settled, the budget holds exactly
// the sum of the actuals, and a request of exactly what is left fits.
func checkExactAccounting(t *testing.T, l *Limiter) {
	const (
		key     = "tpm:{exact}:m"
		lim     = 1_000_000
		workers = 16
		reqs    = 50
	)
	now := base.Add(10 * time.Second)
	var sum atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(7, uint64(g)))
			for range reqs {
				est := 1 + rng.Int64N(500)
				d, r, err := l.Admit(context.Background(), now, Check{Key: key, Limit: lim, Cost: est})
				if err != nil || !d.Allowed {
					errs <- err
					return
				}
				var actual int64
				switch rng.IntN(4) {
				case 0: // failed before upstream: nothing used
				case 1:
					actual = est
				case 2:
					actual = rng.Int64N(est)
				default:
					actual = est + rng.Int64N(1000)
				}
				if err := l.Settle(context.Background(), now, r, actual); err != nil {
					errs <- err
					return
				}
				sum.Add(actual)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("admit or settle failed: %v", err)
	}
	d, _, err := l.Admit(context.Background(), now, Check{Key: key, Limit: lim, Cost: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := lim-d.Budgets[0].Remaining-1, sum.Load(); got != want {
		t.Fatalf("budget holds %d tokens, the requests used %d", got, want)
	}
}

func TestExactAccountingMemory(t *testing.T) {
	checkExactAccounting(t, newLimiter(t, NewMemory(10), Options{}))
}

func TestExactAccountingRedis(t *testing.T) {
	srv := services.StartRedis(t)
	st := NewRedis(newClient(t, srv.Addr()), RedisOptions{CallerClock: true})
	checkExactAccounting(t, newLimiter(t, st, Options{FailureMode: FailClosed}))
}
