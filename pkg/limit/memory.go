package limit

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultMaxKeys is the default bound on the budgets a Memory store tracks:
// about 20 MB of counters.
const DefaultMaxKeys = 100_000

// ErrFull is returned when a Memory store must track a new budget but
// every budget it could forget is still in use (see Memory).
var ErrFull = errors.New("limit: every tracked budget is in use")

// probes bounds how many of the least recently used budgets a Memory store
// looks at to find one it can forget.
const probes = 8

// Memory keeps counters in this process: the store for a single replica,
// and the fallback of a shared store.
//
// It tracks at most maxKeys budgets, least recently used first out, but it
// only ever forgets a budget at rest, one whose window has ended with no
// debt left: forgetting it changes nothing, since a budget seen for the
// first time starts at rest. When no budget it could forget is at rest, a
// request that needs a new budget is refused with ErrFull rather than let
// anyone's spending be forgotten.
type Memory struct {
	mu  sync.Mutex
	lru *simplelru.LRU[string, *entry]
	max int
}

// entry is one tracked budget: its counter and the limit last applied to
// it, which tells when the budget is at rest.
type entry struct {
	counter
	limit int64
}

// NewMemory returns a Memory store tracking at most maxKeys budgets
// (DefaultMaxKeys when maxKeys ≤ 0; never fewer than MaxChecks).
func NewMemory(maxKeys int) *Memory {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	maxKeys = max(maxKeys, MaxChecks)
	l, err := simplelru.NewLRU[string, *entry](maxKeys, nil)
	if err != nil { // only for a size ≤ 0
		panic(err)
	}
	return &Memory{lru: l, max: maxKeys}
}

// Len is how many budgets are tracked.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

func (m *Memory) admit(_ context.Context, now int64, b batch) (result, error) {
	w := now / b.window
	r := result{now: now, ok: true}
	var ents [MaxChecks]*entry
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range b.n {
		c := &b.checks[i]
		var cur counter
		if e, ok := m.lru.Get(c.Key); ok {
			ents[i], cur = e, e.counter
		}
		cur = cur.roll(w, c.Limit)
		r.counters[i] = cur
		r.ok = r.ok && cur.fits(c.Cost, c.Limit)
	}
	if !r.ok {
		return r, nil
	}
	need := 0
	for i := range b.n {
		if ents[i] == nil && b.checks[i].Cost > 0 {
			need++
		}
	}
	if need > 0 && !m.makeRoom(need, w, &b) {
		return result{}, ErrFull
	}
	for i := range b.n {
		c := &b.checks[i]
		r.counters[i].used += c.Cost
		switch {
		case ents[i] != nil:
			ents[i].counter, ents[i].limit = r.counters[i], c.Limit
		case c.Cost > 0:
			m.lru.Add(c.Key, &entry{counter: r.counters[i], limit: c.Limit})
		}
	}
	return r, nil
}

func (m *Memory) settle(_ context.Context, now int64, b batch, windows [MaxChecks]int64, actual int64) error {
	w := now / b.window
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range b.n {
		c := &b.checks[i]
		diff := actual - c.Cost
		if c.Requests || diff == 0 {
			continue
		}
		e, ok := m.lru.Get(c.Key)
		if !ok {
			if diff < 0 { // nothing left to give back
				continue
			}
			if !m.makeRoom(1, w, &b) {
				return fmt.Errorf("limit: settle %q: %w", c.Key, ErrFull)
			}
			e = &entry{}
			m.lru.Add(c.Key, e)
		}
		e.counter = e.roll(w, c.Limit).correct(windows[i], diff)
		e.limit = c.Limit
	}
	return nil
}

// makeRoom forgets budgets at rest in window w, least recently used first,
// until need more fit; budgets of b are kept. It reports whether it made
// the room.
func (m *Memory) makeRoom(need int, w int64, b *batch) bool {
	for tries := 0; m.lru.Len()+need > m.max; {
		k, e, _ := m.lru.GetOldest()
		if e.roll(w, e.limit).total() == 0 && !b.has(k) {
			m.lru.RemoveOldest()
			continue
		}
		if tries++; tries >= probes {
			return false
		}
		m.lru.Get(k) // still in use: look further back
	}
	return true
}

func (b *batch) has(key string) bool {
	for i := range b.n {
		if b.checks[i].Key == key {
			return true
		}
	}
	return false
}
