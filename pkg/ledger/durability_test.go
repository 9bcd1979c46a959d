package ledger

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The account every durability test bills, with enough credits that its
// balance tells how many records were debited: each costs one micro-credit.
const (
	durableAccount = "acme"
	durableCredits = 1 << 40
)

func durableRecord(id string) usage.Record {
	return usage.Record{RequestID: id, Time: time.Now(), Account: durableAccount, Project: "shop", Provider: "openai",
		Model: "gpt-4o", Status: usage.StatusOK, HTTPStatus: 200, Tokens: usage.Tokens{Input: 3, Output: 2}, Credits: 1}
}

// checkExactlyOnce checks that the ledger holds exactly the records ids
// names, each once in the usage table, the roll-ups and the balance.
func checkExactlyOnce(t *testing.T, s *DB, ids []string) {
	t.Helper()
	ctx := t.Context()
	recs, err := s.ListUsage(ctx, Filter{Account: durableAccount})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(recs))
	for i, r := range recs {
		got[i] = r.RequestID
	}
	slices.Sort(got)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		missing, extra := diff(want, got), diff(got, want)
		t.Errorf("ledger holds %d records, want %d: %d missing (e.g. %q), %d unexpected (e.g. %q)",
			len(got), len(want), len(missing), first(missing), len(extra), first(extra))
	}
	sum, err := s.Summarize(ctx, Query{Account: durableAccount})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 1 || sum[0].Requests != int64(len(ids)) || sum[0].Input != 3*int64(len(ids)) {
		t.Errorf("roll-ups %+v, want %d requests", sum, len(ids))
	}
	a, err := s.GetAccount(ctx, durableAccount)
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance != durableCredits-int64(len(ids)) {
		t.Errorf("balance debited by %d, want %d", durableCredits-a.Balance, len(ids))
	}
}

func diff(a, b []string) []string { // sorted a minus sorted b
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// outage makes a store fail on demand: SQLite is a library in this
// process, so there is no server to stop; the Writer sees the same thing,
// an InsertUsage that errors, as when PostgreSQL is down.
type outage struct {
	Inserter
	down atomic.Bool
}

var errSimulatedOutage = errors.New("database unavailable (simulated outage)")

func (o *outage) InsertUsage(ctx context.Context, recs ...usage.Record) error {
	if o.down.Load() {
		return errSimulatedOutage
	}
	return o.Inserter.InsertUsage(ctx, recs...)
}

// testOutage writes under load while the database is down for 10s, then
// back: every record Write accepted is in the ledger exactly once.
func testOutage(t *testing.T, s *DB, env backendEnv) {
	if testing.Short() {
		t.Skip("takes 15s")
	}
	ctx := t.Context()
	if _, err := s.CreateAccount(ctx, durableAccount, catalog.PlanPro, durableCredits); err != nil {
		t.Fatal(err)
	}
	sink := &outage{Inserter: s}
	down, up := func() { sink.down.Store(true) }, func() { sink.down.Store(false) }
	if env.pg != nil {
		down, up = env.pg.Stop, env.pg.Start
	}
	var failures atomic.Int64
	w := newTestWriter(t, sink, "", WriterOptions{FlushInterval: 5 * time.Millisecond,
		OnError: func(error) { failures.Add(1) }})

	var (
		mu       sync.Mutex
		accepted []string
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for g := range 4 {
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond) // ~2,000 records/s in all
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				id := fmt.Sprintf("outage-%d-%06d", g, i)
				if err := w.Write(durableRecord(id)); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				mu.Lock()
				accepted = append(accepted, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second)
	down()
	time.Sleep(10 * time.Second)
	up()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	closeCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := w.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if failures.Load() == 0 {
		t.Error("no flush failed: the outage did not happen")
	}
	t.Logf("%d records accepted, %d flush failures during the outage", len(accepted), failures.Load())
	checkExactlyOnce(t, s, accepted)
}

const (
	writerChildEnv      = "TOLLGATE_LEDGER_TEST_WRITER_URL"
	writerChildSpoolEnv = "TOLLGATE_LEDGER_TEST_WRITER_SPOOL"
)

// writerChild is the process testKill kills: it writes records as fast
// as it can and prints each id once Write has returned for it.
func writerChild(url, spool string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "writer child:", err)
		os.Exit(1)
	}
	s, err := Open(context.Background(), url)
	if err != nil {
		fail(err)
	}
	w, err := NewWriter(s, spool, WriterOptions{BatchSize: 100, FlushInterval: 2 * time.Millisecond})
	if err != nil {
		fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		id := fmt.Sprintf("kill-%07d", i)
		if err := w.Write(durableRecord(id)); err != nil {
			fail(err)
		}
		// Printed, and flushed, only after Write returned: the parent
		// counts a record as settled once it reads its id.
		fmt.Fprintln(out, id)
		if err := out.Flush(); err != nil {
			fail(err)
		}
	}
}

// testKill kills a process writing under load with SIGKILL, then drains its
// spool with a new Writer: every record whose Write returned is in the
// ledger, exactly once.
func testKill(t *testing.T, s *DB, env backendEnv) {
	ctx := t.Context()
	if _, err := s.CreateAccount(ctx, durableAccount, catalog.PlanPro, durableCredits); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(t.TempDir(), "spool")
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), writerChildEnv+"="+env.url, writerChildSpoolEnv+"="+spool)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var settled []string
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		settled = append(settled, lines.Text())
		if len(settled) == 5000 {
			// Mid-stream: records in the store, in sealed segments and in
			// the head, and a flush likely in flight.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, not SIGKILL\n%s", err, stderr.String())
	}
	if len(settled) < 5000 {
		t.Fatalf("child settled only %d records\n%s", len(settled), stderr.String())
	}
	stored, err := s.ListUsage(ctx, Filter{Account: durableAccount})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child killed after %d settled records; %d were in the store, the rest in its spool", len(settled), len(stored))

	w := newTestWriter(t, s, spool, WriterOptions{})
	if err := w.Close(ctx); err != nil {
		t.Fatalf("draining the spool: %v", err)
	}
	// The records the child wrote but did not get to print are settled
	// too (in the spool or the store) and also count, once each.
	recs, err := s.ListUsage(ctx, Filter{Account: durableAccount})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.RequestID
	}
	slices.Sort(ids)
	if missing := diff(settled, ids); len(missing) > 0 {
		t.Fatalf("%d settled records missing after the drain, e.g. %q", len(missing), missing[0])
	}
	if len(ids) > len(settled)+1 {
		t.Errorf("%d records stored, at most one more than the %d settled expected (the one in flight)", len(ids), len(settled))
	}
	checkExactlyOnce(t, s, ids)
}

// testConcurrentWriters runs three Writers (three replicas, each with its
// own spool) and direct inserts on one ledger at once, with overlapping
// request ids: each id is stored, rolled up and debited once, and no
// transaction deadlocks.
func testConcurrentWriters(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	if _, err := s.CreateAccount(ctx, durableAccount, catalog.PlanPro, durableCredits); err != nil {
		t.Fatal(err)
	}
	const ids = 3000
	id := func(i int) string { return fmt.Sprintf("c-%05d", i%ids) }
	var (
		wg      sync.WaitGroup
		writers []*Writer
	)
	for replica := range 3 {
		w := newTestWriter(t, s, "", WriterOptions{BatchSize: 50, FlushInterval: time.Millisecond})
		writers = append(writers, w)
		for g := range 2 {
			wg.Go(func() {
				// Every goroutine writes every id, each in its own order.
				for i := range ids {
					if err := w.Write(durableRecord(id(i*7 + replica*1000 + g*ids/2))); err != nil {
						t.Errorf("Write: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Go(func() {
		for i := ids - 1; i >= 0; i -= 3 {
			if err := s.InsertUsage(ctx, durableRecord(id(i)), durableRecord(id(i+ids/2))); err != nil {
				t.Errorf("InsertUsage: %v", err)
				return
			}
		}
	})
	wg.Wait()
	for _, w := range writers {
		if err := w.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	want := make([]string, ids)
	for i := range want {
		want[i] = id(i)
	}
	checkExactlyOnce(t, s, want)
}
