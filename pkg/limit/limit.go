// Package limit admits requests against per-minute budgets: an account's
// tokens per minute for a model, and optionally a project's tokens and
// requests per minute, all in one all-or-nothing decision.
//
// Admission reserves a request's estimated cost in every budget; Settle
// replaces the reservation with what the request really used, so an account
// whose requests use more than they reserved carries the excess as debt
// into the following windows and waits. The algorithm (fixed windows with
// carried debt) and its guarantees are described in docs/limits.md.
//
// Counters live in a Store: Memory for one replica, Redis for several.
package limit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// MaxChecks is how many budgets one request can be admitted against.
const MaxChecks = 4

// Check is one budget a request must fit in.
type Check struct {
	// Key names the budget, e.g. "tpm:{account}:model". Every check of one
	// Admit must name a different key. With Redis Cluster, the keys of one
	// Admit must share a hash tag.
	Key string
	// Limit is the budget per window (tokens or requests), at least 1.
	Limit int64
	// Cost is what the request is charged: its estimated tokens, or 1 for
	// a requests budget.
	Cost int64
	// Requests marks a budget that counts requests: its cost is final and
	// Settle leaves it alone.
	Requests bool
}

// Budget is one check's budget after a decision, for rate-limit headers.
type Budget struct {
	Limit int64
	// Remaining is what is left of Limit in the current window, after this
	// request's reservation when it was allowed. Debt counts against it.
	Remaining int64
	// Reset is how long until the budget is whole again (Remaining =
	// Limit) if nothing more is charged; 0 when it is whole.
	Reset time.Duration
}

// Decision is the answer to one Admit.
type Decision struct {
	Allowed bool
	// TooLarge means a check's cost alone exceeds its limit: the request
	// can never be admitted, and waiting will not help.
	TooLarge bool
	// Refused is the index of the check that refused the request: the
	// first too large for its limit, else of those over their budget the
	// one that makes it wait longest (RetryAfter), the first of equals. It is
	// -1 when the request is allowed.
	Refused int
	// RetryAfter is how long until every check would admit the request, for
	// a refused request that is not TooLarge.
	RetryAfter time.Duration
	// Budgets holds each check's budget, in the order of the checks.
	Budgets [MaxChecks]Budget
}

// Reservation is an admitted request's hold on its budgets, to be passed
// to Settle once its actual usage is known. The zero Reservation holds
// nothing.
type Reservation struct {
	b       batch
	windows [MaxChecks]int64 // the window each check was charged in
	local   bool             // charged in the local store while the shared one was down
}

// batch is the checks of one request, held by value so that a decision
// allocates nothing.
type batch struct {
	window int64 // ms
	n      int
	checks [MaxChecks]Check
}

// Store keeps the counters: Memory or Redis.
type Store interface {
	admit(ctx context.Context, now int64, b batch) (result, error)
	settle(ctx context.Context, now int64, b batch, windows [MaxChecks]int64, actual int64) error
}

// FailureMode is what a Limiter over a shared store (Redis) does when that
// store cannot answer.
type FailureMode string

const (
	// FailLocal decides in a local in-memory store instead: every replica
	// then enforces the limits on its own until the shared store is back.
	// Each such decision is counted (Stats.Fallbacks) and logged, at most
	// once per Options.LogEvery.
	FailLocal FailureMode = "local"
	// FailClosed refuses: Admit returns ErrUnavailable.
	FailClosed FailureMode = "closed"
)

// ErrUnavailable is returned when no store could decide: the shared store
// is down in FailClosed mode, or a memory store is full of budgets still in
// use. Callers answer 503.
var ErrUnavailable = errors.New("limit: rate-limit store unavailable")

// Options configures a Limiter. The zero value is a one-minute window that
// falls back to local decisions.
type Options struct {
	// Window is the length of a budget window, in whole milliseconds;
	// default one minute.
	Window time.Duration
	// FailureMode applies to a shared store; default FailLocal.
	FailureMode FailureMode
	// LocalKeys bounds the local fallback store; default DefaultMaxKeys.
	LocalKeys int
	// Recheck is how long a shared store that failed is left alone before
	// it is tried again; default one second.
	Recheck time.Duration
	// LogEvery is the least time between two log lines about the shared
	// store being down; default one minute.
	LogEvery time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stats counts the decisions a Limiter could not take in its shared store.
// The counters only grow; telemetry reads them.
type Stats struct {
	// Fallbacks is how many decisions and settlements the local store took
	// because the shared store failed.
	Fallbacks uint64
	// Unavailable is how many admissions were refused with ErrUnavailable.
	Unavailable uint64
}

// Limiter admits requests against budgets kept in a Store. It is safe for
// concurrent use.
type Limiter struct {
	store  Store
	shared bool    // store is shared by replicas and may fail
	local  *Memory // fallback for a shared store in FailLocal mode, else nil
	window int64   // ms
	mode   FailureMode
	log    *slog.Logger

	recheck, logEvery int64 // ms

	downUntil   atomic.Int64 // ms; the shared store is not tried before
	down        atomic.Bool  // the shared store's last answer was a failure
	lastLog     atomic.Int64 // ms
	fallbacks   atomic.Uint64
	unavailable atomic.Uint64
}

// New returns a Limiter over store.
func New(store Store, opts Options) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("limit: no store")
	}
	opts.Window = cmp.Or(opts.Window, time.Minute)
	opts.Recheck = cmp.Or(opts.Recheck, time.Second)
	opts.LogEvery = cmp.Or(opts.LogEvery, time.Minute)
	if opts.Window < time.Millisecond || opts.Window%time.Millisecond != 0 {
		return nil, fmt.Errorf("limit: window %v is not a whole number of milliseconds", opts.Window)
	}
	if opts.Recheck < 0 || opts.LogEvery < 0 || opts.LocalKeys < 0 {
		return nil, errors.New("limit: negative option")
	}
	if opts.FailureMode == "" {
		opts.FailureMode = FailLocal
	}
	if opts.FailureMode != FailLocal && opts.FailureMode != FailClosed {
		return nil, fmt.Errorf("limit: unknown failure mode %q (want %q or %q)", opts.FailureMode, FailLocal, FailClosed)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &Limiter{
		store:    store,
		window:   opts.Window.Milliseconds(),
		mode:     opts.FailureMode,
		log:      opts.Logger,
		recheck:  opts.Recheck.Milliseconds(),
		logEvery: opts.LogEvery.Milliseconds(),
	}
	_, isMemory := store.(*Memory)
	l.shared = !isMemory
	if l.shared && l.mode == FailLocal {
		l.local = NewMemory(cmp.Or(opts.LocalKeys, DefaultMaxKeys))
	}
	l.downUntil.Store(math.MinInt64)
	l.lastLog.Store(math.MinInt64 / 2)
	return l, nil
}

// Admit decides whether a request fits in every check's budget at time now
// and, when it does, reserves its cost in all of them at once. A refused
// request is charged nothing. The error is a bad check, a context error,
// or ErrUnavailable; a refusal is not an error.
func (l *Limiter) Admit(ctx context.Context, now time.Time, checks ...Check) (Decision, Reservation, error) {
	var res Reservation
	if err := res.b.set(l.window, checks); err != nil {
		return Decision{}, Reservation{}, err
	}
	if res.b.n == 0 {
		return Decision{Allowed: true, Refused: -1}, Reservation{}, nil
	}
	r, local, err := l.admit(ctx, now.UnixMilli(), res.b)
	if err != nil {
		return Decision{}, Reservation{}, err
	}
	d := decide(&res.b, &r)
	if !d.Allowed {
		return d, Reservation{}, nil
	}
	for i := range res.b.n {
		res.windows[i] = r.counters[i].window
	}
	res.local = local
	return d, res, nil
}

func (l *Limiter) admit(ctx context.Context, now int64, b batch) (result, bool, error) {
	if !l.shared {
		r, err := l.store.admit(ctx, now, b)
		if err != nil {
			l.unavailable.Add(1)
			return result{}, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return r, false, nil
	}
	if now >= l.downUntil.Load() {
		r, err := l.store.admit(ctx, now, b)
		if err == nil {
			l.recovered()
			return r, false, nil
		}
		if ctx.Err() != nil {
			return result{}, false, fmt.Errorf("limit: %w", err)
		}
		l.failed(now, err)
	}
	if l.local == nil { // FailClosed
		l.unavailable.Add(1)
		return result{}, false, ErrUnavailable
	}
	r, err := l.local.admit(ctx, now, b)
	if err != nil {
		l.unavailable.Add(1)
		return result{}, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	l.fallbacks.Add(1)
	return r, true, nil
}

// Settle replaces r's reservation with the request's actual cost in tokens
// (input and output, counted as Counted does): the difference is charged
// to, or given back to, every token check (not Requests checks). It costs
// nothing when the estimate was exact. Settling the zero Reservation does
// nothing.
//
// When the shared store is down, tokens used beyond the reservation are
// charged in the local store (FailLocal) and tokens reserved but not used
// stay charged: an outage never gives budget back.
func (l *Limiter) Settle(ctx context.Context, now time.Time, r Reservation, actual int64) error {
	actual = usage.Clamp(actual)
	exact := true
	for i := range r.b.n {
		if c := r.b.checks[i]; !c.Requests && c.Cost != actual {
			exact = false
		}
	}
	if exact {
		return nil
	}
	ms := now.UnixMilli()
	if r.local {
		return l.local.settle(ctx, ms, r.b, r.windows, actual)
	}
	if !l.shared {
		return l.store.settle(ctx, ms, r.b, r.windows, actual)
	}
	if ms >= l.downUntil.Load() {
		err := l.store.settle(ctx, ms, r.b, r.windows, actual)
		if err == nil {
			l.recovered()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("limit: settle: %w", err)
		}
		l.failed(ms, err)
	}
	if l.local == nil { // FailClosed: the correction is lost
		return fmt.Errorf("limit: settle: %w", ErrUnavailable)
	}
	b := r.b
	for i := range b.n {
		b.checks[i].Cost = min(b.checks[i].Cost, actual) // no refunds
	}
	l.fallbacks.Add(1)
	return l.local.settle(ctx, ms, b, r.windows, actual)
}

// Stats returns the counters since New.
func (l *Limiter) Stats() Stats {
	return Stats{Fallbacks: l.fallbacks.Load(), Unavailable: l.unavailable.Load()}
}

// failed notes a shared-store failure at now: the store is left alone for
// Recheck, and a log line says so unless one did in the last LogEvery.
func (l *Limiter) failed(now int64, err error) {
	l.downUntil.Store(now + l.recheck)
	l.down.Store(true)
	last := l.lastLog.Load()
	if now-last < l.logEvery || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("rate-limit store unavailable",
		"error", err, "failure_mode", string(l.mode),
		"fallbacks", l.fallbacks.Load(), "unavailable", l.unavailable.Load())
}

// recovered notes a shared-store success, logging the end of an outage.
func (l *Limiter) recovered() {
	if l.down.Load() && l.down.Swap(false) {
		l.log.Info("rate-limit store reachable again",
			"fallbacks", l.fallbacks.Load(), "unavailable", l.unavailable.Load())
	}
}

// set fills b from checks, validating them.
func (b *batch) set(window int64, checks []Check) error {
	if len(checks) > MaxChecks {
		return fmt.Errorf("limit: %d checks, at most %d", len(checks), MaxChecks)
	}
	b.window, b.n = window, len(checks)
	for i, c := range checks {
		switch {
		case c.Key == "":
			return fmt.Errorf("limit: check %d has no key", i)
		case c.Limit < 1 || c.Limit > usage.MaxCount:
			return fmt.Errorf("limit: check %q: limit %d out of range", c.Key, c.Limit)
		case c.Cost < 0 || c.Cost > usage.MaxCount:
			return fmt.Errorf("limit: check %q: cost %d out of range", c.Key, c.Cost)
		}
		for _, p := range checks[:i] {
			if p.Key == c.Key {
				return fmt.Errorf("limit: key %q checked twice", c.Key)
			}
		}
		b.checks[i] = c
	}
	return nil
}
