package limit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func tok(key string, cost int64) Check { return Check{Key: key, Limit: 1000, Cost: cost} }

func mustAdmit(t *testing.T, l *Limiter, now time.Time, checks ...Check) (Decision, Reservation) {
	t.Helper()
	d, r, err := l.Admit(context.Background(), now, checks...)
	if err != nil {
		t.Fatalf("admit %+v: %v", checks, err)
	}
	return d, r
}

func TestMemoryBound(t *testing.T) {
	const max = 4
	ctx := context.Background()
	m := NewMemory(max)
	l := newLimiter(t, m, Options{})
	key := func(i int) string { return fmt.Sprintf("tpm:acct%d:m", i) }

	// Window 0: four budgets in use fill the store.
	for i := range max {
		if d, _ := mustAdmit(t, l, base, tok(key(i), 600)); !d.Allowed {
			t.Fatalf("budget %d refused: %+v", i, d)
		}
	}
	// A fifth would make the store forget spending of this window: refused.
	_, _, err := l.Admit(ctx, base.Add(time.Second), tok(key(max), 1))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrFull) {
		t.Fatalf("fifth budget in a full window: err = %v, want ErrUnavailable and ErrFull", err)
	}
	if got := l.Stats().Unavailable; got != 1 {
		t.Fatalf("Stats().Unavailable = %d, want 1", got)
	}
	// Nobody's spending was forgotten.
	for i := range max {
		if d, _ := mustAdmit(t, l, base.Add(2*time.Second), tok(key(i), 401)); d.Allowed {
			t.Fatalf("budget %d: 600 + 401 admitted in one window of 1,000", i)
		}
	}
	// A refused request of a new budget needs no room.
	if d, _ := mustAdmit(t, l, base.Add(2*time.Second), tok(key(max), 1001)); !d.TooLarge {
		t.Fatalf("too large: %+v", d)
	}

	// Budget 0 overspends: it is in debt in window 1, the others are at rest.
	_, r := mustAdmit(t, l, base.Add(3*time.Second), tok(key(0), 0))
	if err := l.Settle(ctx, base.Add(4*time.Second), r, 900); err != nil { // 1,500 charged
		t.Fatal(err)
	}
	w1 := base.Add(time.Minute)
	for i := max; i < max+3; i++ { // three new budgets push out three at rest
		if d, _ := mustAdmit(t, l, w1, tok(key(i), 100)); !d.Allowed {
			t.Fatalf("budget %d refused: %+v", i, d)
		}
		if n := m.Len(); n != max {
			t.Fatalf("%d budgets tracked, bound %d", n, max)
		}
	}
	// Budget 0's debt of 500 is still there, though it was the least
	// recently used.
	d, _ := mustAdmit(t, l, w1, tok(key(0), 501))
	if d.Allowed || d.Budgets[0].Remaining != 500 {
		t.Fatalf("budget 0 after evictions: %+v, want refused with 500 remaining", d)
	}
	// The forgotten budgets were at rest: they start whole, as they would have.
	if d, _ := mustAdmit(t, l, w1, tok(key(1), 0)); d.Budgets[0].Remaining != 1000 {
		t.Fatalf("forgotten budget: %+v, want whole", d)
	}
}

func TestMemoryBoundLiveDebtNotForgotten(t *testing.T) {
	// The least recently used budget is in debt for windows to come; the
	// store looks past it for one at rest.
	l := newLimiter(t, NewMemory(MaxChecks), Options{})
	ctx := context.Background()
	_, r := mustAdmit(t, l, base, tok("old", 1000))
	if err := l.Settle(ctx, base, r, 10_000); err != nil {
		t.Fatal(err)
	}
	for i := range MaxChecks - 1 {
		mustAdmit(t, l, base.Add(time.Second), tok(fmt.Sprint("k", i), 10))
	}
	// One new budget a window, from window 3 on: "old" is in debt until
	// window 10, each new budget is at rest by the next window.
	var later time.Time
	for i := range 6 {
		later = base.Add(time.Duration(3+i) * time.Minute)
		if d, _ := mustAdmit(t, l, later, tok(fmt.Sprint("new", i), 10)); !d.Allowed {
			t.Fatalf("new budget %d: %+v", i, d)
		}
	}
	if d, _ := mustAdmit(t, l, later, tok("old", 0)); d.Allowed || d.Budgets[0].Reset != 2*time.Minute {
		t.Fatalf("budget in debt: %+v, want refused until whole in 2m", d)
	}
}

// TestConcurrentWindowBound is the limiter's promise under load: in every
// window, the tokens used by the requests a budget admitted never exceed
// its limit. Goroutines share scripted windows (phases); each admits
// requests of random size against its account's budget and a shared
// project budget, and settles them in the same window with less than it
// reserved, which gives the budget back.
func TestConcurrentWindowBound(t *testing.T) {
	l := newLimiter(t, NewMemory(100), Options{})
	checkWindowBound(t, []*Limiter{l}, 32, 300)
}

const (
	boundAccount = 10_000
	boundProject = 15_000
	boundMaxCost = 500
)

// checkWindowBound runs the phases with workers goroutines spread over the
// limiters, tries attempts per worker and phase, and checks the bound.
func checkWindowBound(t *testing.T, ls []*Limiter, workers, attempts int) {
	const phases = 4
	keys := []string{"tpm:{a0}:m", "tpm:{a1}:m", "ptpm:{p}"}
	limits := []int64{boundAccount, boundAccount, boundProject}
	for phase := range phases {
		start := base.Add(time.Duration(phase) * time.Minute)
		var used [3]atomic.Int64 // tokens used by admitted requests, per budget
		var admitted atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for g := range workers {
			wg.Go(func() {
				l := ls[g%len(ls)]
				acct := g % 2
				rng := rand.New(rand.NewPCG(uint64(phase), uint64(g)))
				for range attempts {
					now := start.Add(time.Duration(rng.Int64N(int64(time.Minute))))
					cost := 1 + rng.Int64N(boundMaxCost)
					d, r, err := l.Admit(context.Background(), now,
						Check{Key: keys[acct], Limit: limits[acct], Cost: cost},
						Check{Key: keys[2], Limit: limits[2], Cost: cost})
					if err != nil {
						errs <- err
						return
					}
					if !d.Allowed {
						continue
					}
					actual := cost/2 + rng.Int64N(cost/2+1)
					if err := l.Settle(context.Background(), now, r, actual); err != nil {
						errs <- err
						return
					}
					admitted.Add(1)
					used[acct].Add(actual)
					used[2].Add(actual)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i, k := range keys {
			if got := used[i].Load(); got > limits[i] {
				t.Errorf("phase %d: %s used %d tokens in one window, limit %d", phase, k, got, limits[i])
			}
		}
		// Every admitted request was charged to its account and the project.
		if a, p := used[0].Load()+used[1].Load(), used[2].Load(); a != p {
			t.Errorf("phase %d: accounts used %d, the project %d", phase, a, p)
		}
		// The shared budget is the tighter one: it must have been used up.
		if got := used[2].Load(); got < limits[2]-boundMaxCost {
			t.Errorf("phase %d: project used only %d of %d: the limiter refuses what fits", phase, got, limits[2])
		}
		t.Logf("phase %d: %d admitted, used %d %d %d", phase, admitted.Load(), used[0].Load(), used[1].Load(), used[2].Load())
	}
}

// TestOverspendWaits: requests that use three times what they reserve are
// held, over many windows, to the limit per window plus what was in flight.
func TestOverspendWaits(t *testing.T) {
	const (
		limit   = 3000
		workers = 8
		est     = 100
		actual  = 300
		windows = 20
	)
	l := newLimiter(t, NewMemory(10), Options{})
	var total atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for sec := range windows * 60 {
				now := base.Add(time.Duration(sec) * time.Second)
				for range 3 {
					d, r, err := l.Admit(context.Background(), now, Check{Key: "k", Limit: limit, Cost: est})
					if err != nil {
						t.Error(err)
						return
					}
					if !d.Allowed {
						break
					}
					if err := l.Settle(context.Background(), now, r, actual); err != nil {
						t.Error(err)
						return
					}
					total.Add(actual)
				}
			}
		})
	}
	wg.Wait()
	// windows−1 rollovers paid off limit each; what is still charged is at
	// most a window's budget plus the overspend of requests in flight.
	bound := int64(windows-1)*limit + limit + workers*(actual-est)
	if got := total.Load(); got > bound || got < int64(windows-1)*limit*3/4 {
		t.Fatalf("%d tokens used over %d windows of %d, want at most %d and not far below %d",
			got, windows, limit, bound, windows*limit)
	}
}
