package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// hurryKey keys the context that ends at the second stop signal (see
// notifyStop).
type hurryKey struct{}

// notifyStop returns a context that ends at the first SIGINT or SIGTERM:
// a graceful stop, in which requests in flight get the shutdown grace. The
// second signal ends hurry(ctx) too: the operator will not wait, so the
// health drain and the grace are cut short (requests still in flight are
// cut at once and recorded as such; the ledger flush still runs, bounded by
// closeTimeout). After the second, signals have their default effect
// again, so a third one kills the process outright (records already
// spooled are kept for the next start). release stops the notifications.
func notifyStop(parent context.Context) (ctx context.Context, release func()) {
	hurry, hurryNow := context.WithCancel(context.Background())
	ctx, stopNow := context.WithCancel(context.WithValue(parent, hurryKey{}, hurry))
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for n := 0; n < 2; n++ {
			select {
			case <-sigs:
			case <-done:
				return
			}
			if n == 0 {
				stopNow()
				continue
			}
			hurryNow()
			signal.Stop(sigs)
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		stopNow()
		hurryNow()
	}
}

// hurry is the context that ends when the process must stop without
// waiting any longer (the second signal); one that never ends if ctx does
// not come from notifyStop.
func hurry(ctx context.Context) context.Context {
	if h, ok := ctx.Value(hurryKey{}).(context.Context); ok {
		return h
	}
	return context.Background()
}

// pause waits d or until ctx ends, whichever comes first.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
