package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// stored returns the distinct records stored and the largest batch.
func (f *fakeSink) stored() (ids map[string]bool, largest int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids = map[string]bool{}
	for _, b := range f.batches {
		largest = max(largest, len(b))
		for _, r := range b {
			ids[r.RequestID] = true
		}
	}
	return ids, largest
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

func newTestWriter(t *testing.T, s Inserter, dir string, opts WriterOptions) *Writer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	w, err := NewWriter(s, dir, opts)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.spool*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestWriterFlushOnClose(t *testing.T) {
	s, _ := openTemp(t)
	dir := t.TempDir()
	// Neither trigger can fire before Close (nor the sync tick, which also
	// wakes the goroutine and lets it seal the head).
	w := newTestWriter(t, s, dir, WriterOptions{BatchSize: 1 << 20, FlushInterval: time.Hour, SyncInterval: time.Hour})
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
	if left := segments(t, dir); len(left) != 0 {
		t.Errorf("spool files left after a clean Close: %q", left)
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
		name   string
		opts   WriterOptions
		writes int
	}{
		{"batch size", WriterOptions{BatchSize: 10, FlushInterval: time.Hour}, 30},
		{"interval", WriterOptions{BatchSize: 1 << 20, FlushInterval: 10 * time.Millisecond}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &fakeSink{}
			w := newTestWriter(t, sink, "", tt.opts)
			for i := range tt.writes {
				if err := w.Write(recN(i)); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "the flush", func() bool { ids, _ := sink.stored(); return len(ids) == tt.writes })
			if _, largest := sink.stored(); largest > w.opts.BatchSize {
				t.Errorf("a batch of %d, want at most %d", largest, w.opts.BatchSize)
			}
		})
	}
}

func TestWriterDefaults(t *testing.T) {
	got := WriterOptions{}.withDefaults()
	want := WriterOptions{BatchSize: 4096, FlushInterval: 50 * time.Millisecond, SyncInterval: 100 * time.Millisecond, SegmentSize: 8 << 20}
	if got.BatchSize != want.BatchSize || got.FlushInterval != want.FlushInterval || got.SyncInterval != want.SyncInterval || got.SegmentSize != want.SegmentSize {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
}

func TestWriterRejectsInvalid(t *testing.T) {
	w := newTestWriter(t, &fakeSink{}, "", WriterOptions{})
	big := rec("big", time.Unix(1, 0))
	big.Output = usage.MaxCount + 1
	for _, r := range []usage.Record{rec("", time.Unix(1, 0)), rec("x", time.Time{}), big} {
		if err := w.Write(r); err == nil {
			t.Errorf("Write(%+v) accepted an invalid record", r)
		}
	}
}

func TestWriterRetriesFailedFlush(t *testing.T) {
	boom := errors.New("disk I/O error")
	sink := &fakeSink{failN: 3, failErr: boom}
	var reported atomic.Int32
	w := newTestWriter(t, sink, "", WriterOptions{BatchSize: 5, FlushInterval: time.Millisecond, OnError: func(err error) {
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
	if ids, _ := sink.stored(); len(ids) != 20 {
		t.Errorf("%d records stored, want all 20", len(ids))
	}
	if got := reported.Load(); got != 3 {
		t.Errorf("OnError called %d times, want 3", got)
	}
}

// TestWriterOnStored: OnStored hears of every committed record, after the
// store has it, and of no record whose flush failed.
func TestWriterOnStored(t *testing.T) {
	sink := &fakeSink{failN: 2, failErr: errors.New("database is down")}
	var (
		mu    sync.Mutex
		heard = map[string]bool{}
	)
	w := newTestWriter(t, sink, "", WriterOptions{BatchSize: 4, FlushInterval: time.Millisecond, OnStored: func(recs []usage.Record) {
		ids, _ := sink.stored()
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if !ids[r.RequestID] {
				t.Errorf("OnStored(%s) before the store had it", r.RequestID)
			}
			heard[r.RequestID] = true
		}
	}})
	for i := range 10 {
		if err := w.Write(recN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 10 {
		t.Errorf("OnStored heard of %d records, want all 10", len(heard))
	}
}

// TestWriterCloseGivesUp closes a Writer whose store always fails: Close
// says what is left, and the next Writer on the spool writes it.
func TestWriterCloseGivesUp(t *testing.T) {
	boom := errors.New("database is locked")
	dir := t.TempDir()
	w := newTestWriter(t, &fakeSink{failAll: true, failErr: boom}, dir, WriterOptions{BatchSize: 4, FlushInterval: time.Millisecond})
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
	if !errors.Is(err, boom) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "10 usage records in the spool") {
		t.Errorf("Close = %v; want the count, the store's error and the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v after its deadline", d)
	}

	sink := &fakeSink{}
	w2 := newTestWriter(t, sink, dir, WriterOptions{})
	if err := w2.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ids, _ := sink.stored(); len(ids) != 10 {
		t.Errorf("the next Writer stored %d records, want the 10 left", len(ids))
	}
}

func TestWriterCloseInterruptsBlockedFlush(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})} // never released
	w := newTestWriter(t, sink, "", WriterOptions{BatchSize: 1})
	if err := w.Write(recN(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil || !strings.Contains(err.Error(), "1 usage records in the spool") {
		t.Errorf("Close = %v, want 1 record left", err)
	}
}

func TestWriterSpoolLocked(t *testing.T) {
	dir := t.TempDir()
	newTestWriter(t, &fakeSink{}, dir, WriterOptions{})
	if w, err := NewWriter(&fakeSink{}, dir, WriterOptions{}); err == nil {
		w.Close(t.Context())
		t.Fatal("a second Writer opened a spool in use")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %v does not say the spool is in use", err)
	}
}

// TestWriterSegmentsWhileFailing fills several segments while the store
// fails, then drains them all, each record once, when it recovers.
func TestWriterSegmentsWhileFailing(t *testing.T) {
	dir := t.TempDir()
	sink := &fakeSink{failAll: true, failErr: errors.New("down")}
	w := newTestWriter(t, sink, dir, WriterOptions{BatchSize: 16, FlushInterval: time.Millisecond, SegmentSize: 2048})
	for i := range 500 {
		if err := w.Write(recN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(segments(t, dir)); n < 5 {
		t.Errorf("%d spool segments, want several of 2 KiB", n)
	}
	sink.mu.Lock()
	sink.failAll = false
	sink.mu.Unlock()
	if err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ids, _ := sink.stored(); len(ids) != 500 {
		t.Errorf("%d stored, want 500", len(ids))
	}
	if left := segments(t, dir); len(left) != 0 {
		t.Errorf("spool files left: %q", left)
	}
}

// TestWriterRecoversSpool starts a Writer on spools a crash or a power cut
// left: whole records, a torn last one, a damaged one.
func TestWriterRecoversSpool(t *testing.T) {
	var whole []byte
	for i := range 3 {
		whole = appendFrame(whole, recN(i))
	}
	next := appendFrame(nil, recN(3))
	damaged := append(append([]byte(nil), whole...), next...)
	damaged[len(whole)+frameHeader+3] ^= 0xff // inside the 4th record
	damaged = appendFrame(damaged, recN(4))
	tests := []struct {
		name      string
		segment   []byte
		want      int  // records stored
		reported  bool // OnError called
		keptAside bool // the file renamed .damaged
	}{
		{"whole", whole, 3, false, false},
		{"empty", nil, 0, false, false},
		{"torn header", append(whole, next[:5]...), 3, true, false},
		{"torn payload", append(whole, next[:len(next)-1]...), 3, true, false},
		{"zeroed tail", append(whole, make([]byte, 100)...), 3, true, false},
		{"damaged middle", damaged, 3, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, segmentName(7)), tt.segment, 0o600); err != nil {
				t.Fatal(err)
			}
			sink := &fakeSink{}
			var reported atomic.Bool
			w := newTestWriter(t, sink, dir, WriterOptions{OnError: func(error) { reported.Store(true) }})
			if err := w.Write(recN(100)); err != nil { // a new record goes to a new segment
				t.Fatal(err)
			}
			if err := w.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			ids, _ := sink.stored()
			if len(ids) != tt.want+1 || !ids[recN(100).RequestID] {
				t.Errorf("stored %d records, want the %d recovered and the new one", len(ids), tt.want)
			}
			if reported.Load() != tt.reported {
				t.Errorf("OnError called: %v, want %v", reported.Load(), tt.reported)
			}
			left := segments(t, dir)
			if tt.keptAside != (len(left) == 1 && strings.HasSuffix(left[0], ".damaged")) || (!tt.keptAside && len(left) != 0) {
				t.Errorf("files left %q; want a .damaged file: %v", left, tt.keptAside)
			}
		})
	}
}

// TestWriterConcurrent writes from many goroutines through a Writer and
// directly into the same Store, with overlapping request ids, under -race.
func TestWriterConcurrent(t *testing.T) {
	s, _ := openTemp(t)
	w := newTestWriter(t, s, "", WriterOptions{BatchSize: 16, FlushInterval: time.Millisecond})
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
