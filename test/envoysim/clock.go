package envoysim

import (
	"sync"
	"time"
)

// Clock makes the message timers; tests use a FakeClock so that no test
// waits on the wall clock.
type Clock interface {
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer.
type Timer interface {
	C() <-chan time.Time
	Stop()
}

type realClock struct{}

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop()               { r.t.Stop() }

// FakeClock fires timers only when advanced.
type FakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers map[*fakeTimer]bool
}

// NewFakeClock starts at an arbitrary fixed time.
func NewFakeClock() *FakeClock {
	c := &FakeClock{now: time.Unix(1_800_000_000, 0), timers: map[*fakeTimer]bool{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

type fakeTimer struct {
	c        *FakeClock
	deadline time.Time
	ch       chan time.Time
}

// NewTimer implements Clock.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, deadline: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.timers[t] = true
	c.cond.Broadcast()
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() {
	t.c.mu.Lock()
	delete(t.c.timers, t)
	t.c.cond.Broadcast()
	t.c.mu.Unlock()
}

// Advance moves time on and fires every timer that is due.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.deadline.After(c.now) {
			delete(c.timers, t)
			t.ch <- c.now
		}
	}
}

// WaitTimers blocks until at least n timers are armed, so a test advances
// the clock only once the simulator is waiting on it.
func (c *FakeClock) WaitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		c.cond.Wait()
	}
}
