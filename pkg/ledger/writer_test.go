package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// fakeSink records batches and fails or blocks on demand.
type fakeSink struct {
	mu      sync.Mutex
	batches [][]usage.Record
	failN   int           // fail this many calls first
	failErr error         // and with this error; or always, with failAll
	failAll bool          //
	block   chan struct{} // if set, each call waits for it to close
}

func (f *fakeSink) InsertUsage(ctx context.Context, recs ...usage.Record) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAll || f.failN > 0 {
		f.failN--
		return f.failErr
	}
	f.batches = append(f.batches, append([]usage.Record(nil), recs...))
	return nil
}

func (f *fakeSink) stored() (n int, batches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.batches {
		n += len(b)
	}
	return n, len(f.batches)
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func recN(i int) usage.Record {
	return rec(fmt.Sprintf("req-%05d", i), time.Unix(int64(i), 0))
}

func TestWriterFlushOnClose(t *testing.T) {
	s, _ := openTemp(t)
	// Neither trigger can fire before Close.
	w := NewWriter(s, WriterOptions{BatchSize: 1 << 20, FlushInterval: time.Hour})
	for i := range 1000 {
		if err := w.Write(recN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(t, s, Filter{}); len(got) != 0 {
		t.Fatalf("%d rows before Close; the triggers should not have fired", len(got))
	}
	if err := w.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := list(t, s, Filter{}); len(got) != 1000 {
		t.Errorf("%d rows after Close, want 1000", len(got))
	}
	if err := w.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Write(recN(5000)); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

func TestWriterFlushTriggers(t *testing.T) {
	tests := []struct {
		name        string
		opts        WriterOptions
		writes      int
		wantBatches int
	}{
		{"batch size", WriterOptions{BatchSize: 10, FlushInterval: time.Hour}, 30, 3},
		{"interval", WriterOptions{BatchSize: 1 << 20, FlushInterval: 10 * time.Millisecond}, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &fakeSink{}
			w := newWriter(sink, tt.opts)
			defer w.Close(context.Background())
			for i := range tt.writes {
				if err := w.Write(recN(i)); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "the flush", func() bool { n, _ := sink.stored(); return n == tt.writes })
			if _, batches := sink.stored(); batches != tt.wantBatches {
				t.Errorf("%d batches, want %d", batches, tt.wantBatches)
			}
		})
	}
}

func TestWriterDefaults(t *testing.T) {
	got := WriterOptions{}.withDefaults()
	want := WriterOptions{BatchSize: 256, FlushInterval: 50 * time.Millisecond, QueueSize: 4096, MaxWait: time.Second}
	if got.BatchSize != want.BatchSize || got.FlushInterval != want.FlushInterval || got.QueueSize != want.QueueSize || got.MaxWait != want.MaxWait {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
}

func TestWriterRejectsInvalid(t *testing.T) {
	w := newWriter(&fakeSink{}, WriterOptions{})
	defer w.Close(context.Background())
	for _, r := range []usage.Record{rec("", time.Unix(1, 0)), rec("x", time.Time{})} {
		if err := w.Write(r); err == nil {
			t.Errorf("Write(%+v) accepted an invalid record", r)
		}
	}
}

func TestWriterRetriesFailedFlush(t *testing.T) {
	boom := errors.New("disk I/O error")
	sink := &fakeSink{failN: 3, failErr: boom}
	var reported atomic.Int32
	w := newWriter(sink, WriterOptions{BatchSize: 5, FlushInterval: time.Millisecond, OnError: func(err error) {
		if !errors.Is(err, boom) {
			t.Errorf("OnError(%v), want it to wrap %v", err, boom)
		}
		reported.Add(1)
	}})
	for i := range 20 {
		if err := w.Write(recN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n, _ := sink.stored(); n != 20 {
		t.Errorf("%d records stored, want all 20", n)
	}
	if got := reported.Load(); got != 3 {
		t.Errorf("OnError called %d times, want 3", got)
	}
}

func TestWriterCloseGivesUp(t *testing.T) {
	boom := errors.New("database is locked")
	sink := &fakeSink{failAll: true, failErr: boom}
	w := newWriter(sink, WriterOptions{BatchSize: 4, FlushInterval: time.Millisecond, QueueSize: 100})
	for i := range 10 {
		if err := w.Write(recN(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := w.Close(ctx)
	if err == nil {
		t.Fatal("Close succeeded with nothing written")
	}
	if !errors.Is(err, boom) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "10 usage records not written") {
		t.Errorf("Close = %v; want the count, the store's error and the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v after its deadline", d)
	}
}

func TestWriterCloseInterruptsBlockedFlush(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})} // never released
	w := newWriter(sink, WriterOptions{BatchSize: 1})
	if err := w.Write(recN(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil || !strings.Contains(err.Error(), "1 usage records not written") {
		t.Errorf("Close = %v, want 1 record not written", err)
	}
}

func TestWriterQueueFullWaitsThenFails(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})}
	const maxWait = 30 * time.Millisecond
	w := newWriter(sink, WriterOptions{BatchSize: 1, QueueSize: 2, MaxWait: maxWait})

	// The goroutine takes one record and blocks in the sink; two more fill
	// the queue; then Write must wait MaxWait and give up.
	accepted := 0
	var full error
	for i := 0; i < 10 && full == nil; i++ {
		start := time.Now()
		err := w.Write(recN(i))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, ErrQueueFull):
			full = err
			if d := time.Since(start); d < maxWait {
				t.Errorf("Write gave up after %v, want a wait of at least %v", d, maxWait)
			}
		default:
			t.Fatalf("Write: %v", err)
		}
	}
	if full == nil {
		t.Fatal("Write never reported a full queue")
	}
	if accepted < 2 || accepted > 3 {
		t.Errorf("accepted %d records before the queue was full, want 2 or 3", accepted)
	}

	close(sink.block) // the store recovers
	if err := w.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n, _ := sink.stored(); n != accepted {
		t.Errorf("%d records stored, want every one of the %d accepted", n, accepted)
	}
}

func TestWriterWaitsForRoom(t *testing.T) {
	// A full queue that drains within MaxWait costs a wait, not a record.
	sink := &fakeSink{block: make(chan struct{})}
	w := newWriter(sink, WriterOptions{BatchSize: 1, QueueSize: 1, MaxWait: 10 * time.Second})
	for i := range 2 {
		if err := w.Write(recN(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.AfterFunc(20*time.Millisecond, func() { close(sink.block) })
	if err := w.Write(recN(2)); err != nil {
		t.Errorf("Write into a queue that drains: %v", err)
	}
	if err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, _ := sink.stored(); n != 3 {
		t.Errorf("%d stored, want 3", n)
	}
}

// TestWriterConcurrent writes from many goroutines through a Writer and
// directly into the same Store, with overlapping request ids, under -race.
func TestWriterConcurrent(t *testing.T) {
	s, _ := openTemp(t)
	w := NewWriter(s, WriterOptions{BatchSize: 16, FlushInterval: time.Millisecond})
	const (
		goroutines = 8
		perG       = 250
	)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				// Goroutine pairs share ids, so half of the writes are retries.
				id := (g/2)*perG + i
				if err := w.Write(recN(id)); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() { // a direct writer racing the Writer on the same ids
		for i := 0; i < goroutines/2*perG; i += 7 {
			if err := s.InsertUsage(t.Context(), recN(i)); err != nil {
				t.Errorf("InsertUsage: %v", err)
				return
			}
		}
	})
	wg.Wait()
	if err := w.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := list(t, s, Filter{})
	if want := goroutines / 2 * perG; len(got) != want {
		t.Errorf("%d rows, want %d (one per request id)", len(got), want)
	}
}
