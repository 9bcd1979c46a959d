package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/telemetry"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// nopInserter is a store that takes everything.
type nopInserter struct{}

func (nopInserter) InsertUsage(context.Context, ...usage.Record) error { return nil }

// TestRecordUsageLogsARecordTheSpoolRefused: a record the spool does not
// take (here a writer already closed, as for a request that settles after
// the ledger closed; a full disk is the other case) is lost, and the log
// says so with the request id, never silently.
func TestRecordUsageLogsARecordTheSpoolRefused(t *testing.T) {
	w, err := ledger.NewWriter(nopInserter{}, t.TempDir(), ledger.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.New(ctx, telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(ctx)
	var logs bytes.Buffer
	rec := recordUsage(w, m, slog.New(slog.NewTextHandler(&logs, nil)))
	rec.Record(usage.Record{RequestID: "req-lost-1", Account: "acme", Model: "gpt-4o-mini", Status: usage.StatusOK, Time: time.Now()})
	got := logs.String()
	if !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "req-lost-1") || !strings.Contains(got, "usage record lost") {
		t.Fatalf("a record the closed spool refused was not logged as lost: %q", got)
	}
}

// TestHurryWithoutNotifyStop: without notifyStop's context, hurry
// never ends, so a command run from a test waits for its full grace.
func TestHurryWithoutNotifyStop(t *testing.T) {
	if hurry(context.Background()).Done() != nil {
		t.Fatal("hurry of a plain context can end")
	}
}
