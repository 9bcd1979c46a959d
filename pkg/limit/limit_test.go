package limit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/test/services"
)

// base starts a one-minute window.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const s = time.Second

// step is one call in a scenario: an admission of cost against the
// scenario's checks, or (settle ≥ 0) the settlement of step settle's
// reservation with actual tokens.
type step struct {
	at     time.Duration // since base
	cost   int64
	settle int
	actual int64
	want   Decision
}

func admitAt(at time.Duration, cost int64, want Decision) step {
	return step{at: at, cost: cost, settle: -1, want: want}
}

func settleAt(at time.Duration, settle int, actual int64) step {
	return step{at: at, settle: settle, actual: actual}
}

func ok(b ...Budget) Decision {
	d := Decision{Allowed: true, Refused: -1}
	copy(d.Budgets[:], b)
	return d
}

func refused(by int, retry time.Duration, b ...Budget) Decision {
	d := Decision{Refused: by, RetryAfter: retry}
	copy(d.Budgets[:], b)
	return d
}

func tooLarge(by int, b ...Budget) Decision {
	d := Decision{Refused: by, TooLarge: true}
	copy(d.Budgets[:], b)
	return d
}

func tpm(remaining int64, reset time.Duration) Budget {
	return Budget{Limit: 1000, Remaining: remaining, Reset: reset}
}

type scenario struct {
	name   string
	checks func(cost int64) []Check // the checks of an admission of cost
	steps  []step
}

// account is one budget of 1,000 tokens a minute.
func account(key string) func(int64) []Check {
	return func(cost int64) []Check { return []Check{{Key: key, Limit: 1000, Cost: cost}} }
}

// The figures below are worked out by hand from the rules in docs/limits.md.
var scenarios = []scenario{{
	name:   "reserve, refuse, overspend, wait",
	checks: account("tpm:a:m"),
	steps: []step{
		0:  admitAt(0, 400, ok(tpm(600, 60*s))),
		1:  admitAt(10*s, 500, ok(tpm(100, 50*s))),
		2:  admitAt(20*s, 200, refused(0, 40*s, tpm(100, 40*s))),
		3:  admitAt(20*s, 1001, tooLarge(0, tpm(100, 40*s))),
		4:  settleAt(30*s, 0, 1700), // 1,300 over: 2,200 charged
		5:  admitAt(30*s, 1, refused(0, 90*s, tpm(0, 150*s))),
		6:  admitAt(60*s, 1, refused(0, 60*s, tpm(0, 120*s))), // debt 1,200
		7:  admitAt(120*s, 800, ok(tpm(0, 60*s))),             // debt 200
		8:  settleAt(130*s, 7, 300),                           // 500 back, same window
		9:  admitAt(130*s, 500, ok(tpm(0, 50*s))),
		10: admitAt(180*s, 1000, ok(tpm(0, 60*s))),
		// 500 back from an ended window: there is no debt to lower, and
		// the new window's budget stays spent.
		11: settleAt(180*s, 9, 0),
		12: admitAt(180*s, 1, refused(0, 60*s, tpm(0, 60*s))),
		13: admitAt(180*s, 0, ok(tpm(0, 60*s))),
	},
}, {
	name:   "debt over several windows",
	checks: account("tpm:a:m"),
	steps: []step{
		0: admitAt(0, 1000, ok(tpm(0, 60*s))),
		1: settleAt(1*s, 0, 5000),
		2: admitAt(1*s, 0, refused(0, 239*s, tpm(0, 299*s))),
		3: admitAt(180*s, 1, refused(0, 120*s, tpm(0, 120*s))), // debt 2,000
		4: admitAt(240*s, 1, refused(0, 60*s, tpm(0, 60*s))),   // debt 1,000
		5: admitAt(240*s, 0, ok(tpm(0, 60*s))),
		6: admitAt(300*s, 1000, ok(tpm(0, 60*s))),
		7: admitAt(3600*s, 10, ok(tpm(990, 60*s))), // long idle: whole again
	},
}, {
	name:   "a refund from an ended window lowers the debt",
	checks: account("tpm:a:m"),
	steps: []step{
		0: admitAt(0, 600, ok(tpm(400, 60*s))),
		1: admitAt(0, 400, ok(tpm(0, 60*s))),
		2: settleAt(30*s, 1, 1400), // 2,000 charged
		3: settleAt(70*s, 0, 100),  // debt 1,000 less 500
		4: admitAt(70*s, 500, ok(tpm(0, 50*s))),
		5: admitAt(70*s, 1, refused(0, 50*s, tpm(0, 50*s))),
	},
}, {
	name:   "a clock behind the budget's window",
	checks: account("tpm:a:m"),
	steps: []step{
		0: admitAt(125*s, 500, ok(tpm(500, 55*s))),
		1: admitAt(110*s, 500, ok(tpm(0, 70*s))), // charged in the later window
		2: admitAt(115*s, 1, refused(0, 65*s, tpm(0, 65*s))),
	},
}, {
	name: "account, project tokens and project requests together",
	checks: func(cost int64) []Check {
		return []Check{
			{Key: "tpm:a:m", Limit: 1000, Cost: cost},
			{Key: "ptpm:a:p", Limit: 300, Cost: cost},
			{Key: "prpm:a:p", Limit: 2, Cost: 1, Requests: true},
		}
	},
	steps: []step{
		0: admitAt(0, 200, ok(tpm(800, 60*s), Budget{300, 100, 60 * s}, Budget{2, 1, 60 * s})),
		// The project refuses: nothing is charged anywhere.
		1: admitAt(5*s, 200, refused(1, 55*s, tpm(800, 55*s), Budget{300, 100, 55 * s}, Budget{2, 1, 55 * s})),
		2: admitAt(5*s, 100, ok(tpm(700, 55*s), Budget{300, 0, 55 * s}, Budget{2, 0, 55 * s})),
		3: admitAt(6*s, 0, refused(2, 54*s, tpm(700, 54*s), Budget{300, 0, 54 * s}, Budget{2, 0, 54 * s})),
		4: admitAt(6*s, 400, tooLarge(1, tpm(700, 54*s), Budget{300, 0, 54 * s}, Budget{2, 0, 54 * s})),
		// 50 over: both token budgets pay, the requests budget does not.
		5: settleAt(10*s, 2, 150),
		6: admitAt(60*s, 0, ok(tpm(1000, 0), Budget{300, 250, 60 * s}, Budget{2, 1, 60 * s})),
		7: admitAt(60*s, 251, refused(1, 60*s, tpm(1000, 0), Budget{300, 250, 60 * s}, Budget{2, 1, 60 * s})),
		8: admitAt(60*s, 250, ok(tpm(750, 60*s), Budget{300, 0, 60 * s}, Budget{2, 0, 60 * s})),
		9: settleAt(61*s, 8, 550),
		// The retry-after is the longest wait of all the checks: the
		// project's debt takes two windows to pay off.
		10: admitAt(61*s, 1, refused(1, 119*s, tpm(450, 59*s), Budget{300, 0, 119 * s}, Budget{2, 0, 59 * s})),
	},
}, {
	// Both budgets refuse: the refusal names the one that makes the
	// request wait longest, whose figures explain the retry-after.
	name: "the stricter budget names the refusal",
	checks: func(cost int64) []Check {
		return []Check{
			{Key: "tpm:a:m", Limit: 1000, Cost: cost},
			{Key: "ptpm:a:p", Limit: 300, Cost: cost},
		}
	},
	steps: []step{
		0: admitAt(0, 300, ok(tpm(700, 60*s), Budget{300, 0, 60 * s})),
		1: settleAt(1*s, 0, 900), // 600 over in both: the project owes two windows
		2: admitAt(10*s, 200, refused(1, 170*s, tpm(100, 50*s), Budget{300, 0, 170 * s})),
	},
}}

// runScenarios plays every scenario against a fresh limiter from newLimiter,
// each with keys of its own.
func runScenarios(t *testing.T, newLimiter func(t *testing.T) *Limiter) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			l := newLimiter(t)
			ctx := context.Background()
			prefix := t.Name() + ":"
			res := make([]Reservation, len(sc.steps))
			for i, st := range sc.steps {
				now := base.Add(st.at)
				if st.settle >= 0 {
					if err := l.Settle(ctx, now, res[st.settle], st.actual); err != nil {
						t.Fatalf("step %d: settle: %v", i, err)
					}
					continue
				}
				checks := sc.checks(st.cost)
				for j := range checks {
					checks[j].Key = prefix + checks[j].Key
				}
				d, r, err := l.Admit(ctx, now, checks...)
				if err != nil {
					t.Fatalf("step %d: admit: %v", i, err)
				}
				if d != st.want {
					t.Fatalf("step %d: admit %d at %v:\n got %+v\nwant %+v", i, st.cost, st.at, d, st.want)
				}
				res[i] = r
			}
		})
	}
}

func TestScenariosMemory(t *testing.T) {
	runScenarios(t, func(t *testing.T) *Limiter { return newLimiter(t, NewMemory(100), Options{}) })
}

func TestScenariosRedis(t *testing.T) {
	srv := services.StartRedis(t)
	runScenarios(t, func(t *testing.T) *Limiter {
		return newLimiter(t, NewRedis(newClient(t, srv.Addr()), RedisOptions{CallerClock: true}), Options{FailureMode: FailClosed})
	})
}

func newLimiter(t testing.TB, st Store, opts Options) *Limiter {
	t.Helper()
	l, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestAdmitRejectsBadChecks(t *testing.T) {
	l := newLimiter(t, NewMemory(10), Options{})
	ok := Check{Key: "k", Limit: 10, Cost: 1}
	for _, tc := range []struct {
		name   string
		checks []Check
		want   string
	}{
		{"too many", []Check{ok, {Key: "b", Limit: 1}, {Key: "c", Limit: 1}, {Key: "d", Limit: 1}, {Key: "e", Limit: 1}}, "5 checks"},
		{"no key", []Check{{Limit: 1}}, "no key"},
		{"zero limit", []Check{{Key: "k", Limit: 0}}, "limit 0 out of range"},
		{"negative cost", []Check{{Key: "k", Limit: 1, Cost: -1}}, "cost -1 out of range"},
		{"same key twice", []Check{ok, ok}, `key "k" checked twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := l.Admit(context.Background(), base, tc.checks...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	d, r, err := l.Admit(context.Background(), base)
	if err != nil || !d.Allowed || d.Refused != -1 || r != (Reservation{}) {
		t.Fatalf("no checks: %+v %+v %v, want allowed with nothing reserved", d, r, err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Window: 1500 * time.Microsecond}, "whole number of milliseconds"},
		{Options{Window: -time.Minute}, "whole number of milliseconds"},
		{Options{FailureMode: "open"}, `unknown failure mode "open"`},
		{Options{Recheck: -1}, "negative"},
	} {
		_, err := New(NewMemory(1), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error saying %q", tc.opts, err, tc.want)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestSettleZeroReservation(t *testing.T) {
	l := newLimiter(t, NewMemory(10), Options{})
	if err := l.Settle(context.Background(), base, Reservation{}, 500); err != nil {
		t.Fatal(err)
	}
	if n := l.store.(*Memory).Len(); n != 0 {
		t.Fatalf("%d budgets tracked after settling nothing", n)
	}
}
