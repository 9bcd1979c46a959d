package ledger

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestAwaitSpool(t *testing.T) {
	t.Run("waits for the owning Writer to store what was spooled", func(t *testing.T) {
		sink := &fakeSink{}
		dir := t.TempDir()
		// Nothing would reach the store for a long time on its own but the
		// first flush tick: AwaitSpool must see the records through it.
		w := newTestWriter(t, sink, dir, WriterOptions{FlushInterval: 300 * time.Millisecond, SyncInterval: time.Hour})
		for i := range 3 {
			if err := w.Write(recN(i)); err != nil {
				t.Fatal(err)
			}
		}
		if ids, _ := sink.stored(); len(ids) != 0 {
			t.Fatalf("stored %d records before the flush interval", len(ids))
		}
		pending, err := AwaitSpool(t.Context(), dir)
		if err != nil || pending != 0 {
			t.Fatalf("AwaitSpool = %d, %v; want 0 pending", pending, err)
		}
		if ids, _ := sink.stored(); len(ids) != 3 {
			t.Errorf("after AwaitSpool the store has %d records, want 3", len(ids))
		}
	})
	t.Run("gives up at the context's end while the store fails", func(t *testing.T) {
		dir := t.TempDir()
		w := newTestWriter(t, &fakeSink{failAll: true, failErr: errors.New("down")}, dir, WriterOptions{FlushInterval: time.Millisecond})
		for i := range 2 {
			if err := w.Write(recN(i)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if pending, err := AwaitSpool(ctx, dir); err != nil || pending != 2 {
			t.Errorf("AwaitSpool = %d, %v; want 2 pending", pending, err)
		}
		stop, cancelStop := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancelStop()
		if err := w.Close(stop); err == nil {
			t.Error("Close stored records into a failing store")
		}
	})
	t.Run("does not wait when no Writer owns the spool", func(t *testing.T) {
		dir := t.TempDir()
		w := newTestWriter(t, &fakeSink{failAll: true, failErr: errors.New("down")}, dir, WriterOptions{FlushInterval: time.Millisecond})
		for i := range 4 {
			if err := w.Write(recN(i)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if err := w.Close(ctx); err == nil {
			t.Fatal("Close stored records into a failing store")
		}
		start := time.Now()
		pending, err := AwaitSpool(context.Background(), dir)
		if err != nil || pending != 4 {
			t.Errorf("AwaitSpool = %d, %v; want the 4 left", pending, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("AwaitSpool waited %v for a spool nobody drains", d)
		}
		// The next Writer is not put off by the probe.
		sink := &fakeSink{}
		w2 := newTestWriter(t, sink, dir, WriterOptions{})
		if err := w2.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		if ids, _ := sink.stored(); len(ids) != 4 {
			t.Errorf("next Writer stored %d, want 4", len(ids))
		}
	})
	t.Run("no spool, empty spool", func(t *testing.T) {
		if pending, err := AwaitSpool(t.Context(), t.TempDir()+"/missing"); err != nil || pending != 0 {
			t.Errorf("missing dir: %d, %v", pending, err)
		}
		dir := t.TempDir()
		newTestWriter(t, &fakeSink{}, dir, WriterOptions{})
		if pending, err := AwaitSpool(t.Context(), dir); err != nil || pending != 0 {
			t.Errorf("empty spool: %d, %v", pending, err)
		}
	})
}
