package limit

import "time"

// counter is one budget's state: the window it was last brought to, the
// tokens charged in that window, and the debt carried into it from earlier
// windows. Windows are numbered from the Unix epoch: unix ms / window ms.
//
// The Redis script (redis_admit.lua, redis_settle.lua) keeps the same state
// with the same rules; the differential test holds the two together.
type counter struct {
	window int64
	used   int64
	debt   int64
}

// total is everything still charged against the budget.
func (c counter) total() int64 { return c.used + c.debt }

// roll brings c forward to window w. Each window that ends pays off limit
// tokens of what was charged; what is left is debt. A counter charging
// something never moves back in time: when w is behind c (another
// replica's clock, a stepped clock), c stays where it is. A counter
// charging nothing is the same as a new one (Redis deletes it).
func (c counter) roll(w, limit int64) counter {
	total := c.total()
	if total <= 0 {
		return counter{window: w}
	}
	if w <= c.window {
		return c
	}
	n := w - c.window
	var debt int64
	if n < ceilDiv(total, limit) {
		debt = total - n*limit
	}
	return counter{window: w, debt: debt}
}

// fits reports whether cost more tokens stay within limit in c's window.
func (c counter) fits(cost, limit int64) bool { return c.total()+cost <= limit }

// correct applies a settlement: diff = actual − reserved tokens of a
// reservation charged in window rw. Tokens used beyond the reservation are
// charged now. Tokens reserved but not used are given back to the window
// that was charged when it is still the current one; otherwise that window
// has ended, its tokens were either paid off by the rollover or carried as
// debt, so the refund can only lower the debt.
func (c counter) correct(rw, diff int64) counter {
	switch {
	case diff > 0:
		c.used += diff
	case c.window == rw:
		c.used = max(0, c.used+diff)
	default:
		c.debt = max(0, c.debt+diff)
	}
	return c
}

// restWindow is the first window in which c, left alone, charges nothing:
// its budget is whole again.
func (c counter) restWindow(limit int64) int64 {
	if c.total() <= 0 {
		return c.window
	}
	return c.window + ceilDiv(c.total(), limit)
}

// budget is c as a client sees it at time now (ms).
func (c counter) budget(limit, now, win int64) Budget {
	b := Budget{Limit: limit, Remaining: max(0, limit-c.total())}
	if c.total() > 0 {
		b.Reset = msDuration(c.restWindow(limit)*win - now)
	}
	return b
}

// retryAfter is how long from now (ms) until cost fits, if it ever can: 0
// when it fits now or never will (cost > limit).
func (c counter) retryAfter(cost, limit, now, win int64) time.Duration {
	if c.fits(cost, limit) || cost > limit {
		return 0
	}
	// After k rollovers the debt is total − k·limit; cost fits once that
	// is at most limit − cost.
	k := max(1, ceilDiv(c.total()+cost-limit, limit))
	return msDuration((c.window+k)*win - now)
}

// result is what a store answers for one admission: the counters after it
// (charged when ok, as they were otherwise), and the store's clock.
type result struct {
	now      int64 // ms since the Unix epoch, the store's clock
	ok       bool
	counters [MaxChecks]counter
}

// decide turns a store's result into the caller's Decision. It is the one
// place where remaining, reset and retry-after are derived, whichever store
// answered.
func decide(b *batch, r *result) Decision {
	d := Decision{Allowed: r.ok, Refused: -1}
	for i := range b.n {
		c, ch := r.counters[i], &b.checks[i]
		d.Budgets[i] = c.budget(ch.Limit, r.now, b.window)
		if r.ok {
			continue
		}
		if ch.Cost > ch.Limit && !d.TooLarge {
			d.TooLarge, d.Refused = true, i
		}
		if c.fits(ch.Cost, ch.Limit) {
			continue
		}
		// Of the checks over their budget, the one with the longest wait
		// (the first of equals) refuses: it is the stricter.
		retry := c.retryAfter(ch.Cost, ch.Limit, r.now, b.window)
		if !d.TooLarge && (d.Refused < 0 || retry > d.RetryAfter) {
			d.Refused = i
		}
		d.RetryAfter = max(d.RetryAfter, retry)
	}
	if d.TooLarge {
		d.RetryAfter = 0
	}
	return d
}

// ceilDiv is ⌈a/b⌉ for a ≥ 0, b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
