package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// ErrClosed is returned by [Writer.Write] after Close.
var ErrClosed = errors.New("ledger: writer closed")

// ErrSpoolInUse is NewWriter's error when another process owns the spool.
var ErrSpoolInUse = errors.New("in use by another process")

// WriterOptions tune a [Writer]. Zero fields take the defaults.
type WriterOptions struct {
	// BatchSize is how many spooled records trigger a flush, and the most
	// one store transaction takes. Default 4096: a transaction's fixed
	// costs (commit, roll-up and balance updates) are then a small share
	// of the database's work per record, while FlushInterval still bounds
	// how long a record waits.
	BatchSize int
	// FlushInterval is the longest a record waits in the spool for a flush
	// while the store is healthy. Default 50ms.
	FlushInterval time.Duration
	// SyncInterval is how often the spool is fsynced: what a power cut
	// (not a crash) can lose. Default 100ms.
	SyncInterval time.Duration
	// SegmentSize is the spool file size at which Write starts a new one
	// while the store is failing. Default 8 MiB (some 60,000 records).
	SegmentSize int64
	// OnError, if set, is called from the Writer's goroutine when a flush
	// fails (the records stay spooled and are retried with backoff) or
	// part of a spool file is unreadable. It must not block.
	OnError func(error)
	// OnStored, if set, is called from the Writer's goroutine with each
	// batch the store has committed (records it already held included, so
	// a batch retried after a failure comes again). It must not block or
	// keep the slice.
	OnStored func([]usage.Record)
}

func (o WriterOptions) withDefaults() WriterOptions {
	if o.BatchSize <= 0 {
		o.BatchSize = 4096
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 50 * time.Millisecond
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = 100 * time.Millisecond
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 8 << 20
	}
	return o
}

// maxBackoff caps the wait between retries of a failing flush.
const maxBackoff = 5 * time.Second

// Inserter is where a Writer flushes to: a [Store].
type Inserter interface {
	InsertUsage(ctx context.Context, recs ...usage.Record) error
}

// Writer takes settled usage records off the request path: Write appends
// the record to a local spool file and returns, and a goroutine drains the
// spool into the store in batches. A record is settled when Write returns
// nil; from then on only the loss of the disk can lose it.
//
// The spool is a directory of segment files. Write appends to the head
// segment, one write(2) per record, so a process killed right after Write
// returned leaves the record in the file; the goroutine fsyncs the head
// every SyncInterval, which bounds what a power cut can lose. Every
// BatchSize records or FlushInterval, the goroutine seals the head (a new
// one takes its place), inserts the sealed segment's records into the store
// in transactions of up to BatchSize, and deletes the segment only after
// they committed. Should the process die in between, the next Writer on the
// directory inserts the segment again, which the store's idempotency by
// request id makes harmless.
//
// When the store fails, sealed segments wait and are retried with backoff
// (doubling up to 5s); Write goes on appending to the head, starting a new
// segment every SegmentSize bytes. Nothing is dropped: the spool grows
// until the store is back or the disk is full (then Write fails).
//
// One Writer at a time owns a spool directory (an flock on its LOCK file).
type Writer struct {
	store Inserter
	dir   string
	opts  WriterOptions
	lock  *os.File // holds the directory's flock

	mu        sync.Mutex
	head      *os.File // nil once closed
	headSeq   uint64
	headSize  int64
	headCount int
	sealed    []sealedSegment // sealed by Write or the goroutine, not yet synced
	closed    bool
	buf       []byte

	batch []usage.Record // the goroutine's, read from a segment for the store

	kick   chan struct{}   // nudges the goroutine: a batch is ready, or Close
	ctx    context.Context // cancelled, with Close's reason, when Close gives up
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // set by run before it closes done
}

type sealedSegment struct {
	seq  uint64
	file *os.File // to sync and close
}

const segmentSuffix = ".spool"

func segmentName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segmentSuffix) }

// NewWriter starts a Writer flushing into s through the spool in dir
// (created if missing). Whatever the spool already holds, from a process
// that crashed or a Close that gave up, is drained first. Close the Writer
// to flush and stop it.
func NewWriter(s Inserter, dir string, opts WriterOptions) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger: spool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger: spool: %w", err)
	}
	if err := lockSpool(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("ledger: spool %s is %w: %w", dir, ErrSpoolInUse, err)
	}
	backlog, err := listSegments(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("ledger: spool: %w", err)
	}
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancelCause(context.Background())
	w := &Writer{
		store: s, dir: dir, opts: opts, lock: lock,
		kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	if len(backlog) > 0 {
		w.headSeq = backlog[len(backlog)-1]
	}
	if err := w.openHead(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("ledger: spool: %w", err)
	}
	go w.run(backlog)
	return w, nil
}

// listSegments returns the sequence numbers of the segments in dir, in order.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segmentSuffix)
		if !ok {
			continue
		}
		if seq, err := strconv.ParseUint(name, 10, 64); err == nil {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// openHead starts the next segment. The caller holds mu (or is NewWriter).
func (w *Writer) openHead() error {
	f, err := os.OpenFile(filepath.Join(w.dir, segmentName(w.headSeq+1)), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	w.head, w.headSeq, w.headSize, w.headCount = f, w.headSeq+1, 0, 0
	return nil
}

// seal hands the head to the goroutine and opens a new one unless closing.
// The caller holds mu.
func (w *Writer) seal(reopen bool) error {
	w.sealed = append(w.sealed, sealedSegment{w.headSeq, w.head})
	w.head = nil
	if !reopen {
		return nil
	}
	return w.openHead()
}

// Write spools rec. When it returns nil the record is settled: it will be
// in the store exactly once, whatever happens to this process. It returns
// an error, without taking rec, if rec is invalid (no request id, a time or
// count out of range), the Writer is closed (ErrClosed), or the spool file
// cannot be written (a full disk).
func (w *Writer) Write(rec usage.Record) error {
	if err := validate(rec); err != nil {
		return fmt.Errorf("ledger: write: %w", err)
	}
	rec = clean(rec)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.head == nil { // a rotation failed earlier
		if err := w.openHead(); err != nil {
			return fmt.Errorf("ledger: write: spool: %w", err)
		}
	}
	w.buf = appendFrame(w.buf[:0], rec)
	if n, err := w.head.Write(w.buf); err != nil {
		// Cut a partial frame off, so that the segment stays readable.
		if n > 0 {
			_ = w.head.Truncate(w.headSize)
		}
		return fmt.Errorf("ledger: write: spool: %w", err)
	}
	w.headSize += int64(len(w.buf))
	w.headCount++
	if w.headSize >= w.opts.SegmentSize {
		if err := w.seal(true); err != nil {
			// The record is written; the next Write retries the new head.
			w.report(fmt.Errorf("ledger: spool: new segment: %w", err))
		}
		w.nudge()
	} else if w.headCount >= w.opts.BatchSize {
		w.nudge()
	}
	return nil
}

func (w *Writer) nudge() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *Writer) report(err error) {
	if w.opts.OnError != nil {
		w.opts.OnError(err)
	}
}

// Close stops taking records and drains the spool into the store, retrying
// failed flushes until they succeed or ctx is done. It returns nil if every
// record Write accepted is in the store; otherwise the error says how many
// records wait in the spool, where the next Writer on the directory will
// find them. Calling Close again waits for the first Close and returns the
// same result.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		if w.head != nil {
			_ = w.seal(false)
		}
	}
	w.mu.Unlock()
	w.nudge()

	stop := context.AfterFunc(ctx, func() { w.cancel(context.Cause(ctx)) })
	defer stop()
	<-w.done
	w.cancel(nil)
	return w.err
}

// run is the Writer's goroutine: it syncs and seals the head, and drains
// sealed segments, oldest first, into the store.
func (w *Writer) run(backlog []uint64) {
	defer close(w.done)
	defer w.lock.Close() // releases the flock
	var (
		retryAt  time.Time
		backoff  time.Duration
		lastErr  error
		lastSync = time.Now()
	)
	tick := time.NewTicker(min(w.opts.FlushInterval, w.opts.SyncInterval))
	defer tick.Stop()

	// The first pass only drains what an earlier run left; the head is
	// sealed on a trigger (tick, batch size, Close), never merely because
	// this goroutine happened to start after the first Writes.
	for woken := false; ; woken = true {
		// Seal the head when it holds records and the store keeps up (while
		// the store fails, Write seals by size only, so the backlog is a few
		// large segments rather than one per tick).
		w.mu.Lock()
		if woken && w.head != nil && w.headCount > 0 && len(backlog) == 0 && !time.Now().Before(retryAt) {
			if err := w.seal(true); err != nil {
				w.report(fmt.Errorf("ledger: spool: new segment: %w", err))
			}
		}
		sealed := w.sealed
		w.sealed = nil
		head, closed := w.head, w.closed
		w.mu.Unlock()

		if len(sealed) > 0 || time.Since(lastSync) >= w.opts.SyncInterval {
			w.sync(head, sealed)
			lastSync = time.Now()
		}
		for _, s := range sealed {
			backlog = append(backlog, s.seq)
		}

		if !time.Now().Before(retryAt) {
			for len(backlog) > 0 {
				if err := w.drain(backlog[0]); err != nil {
					lastErr = err
					backoff = min(max(2*backoff, w.opts.FlushInterval), maxBackoff)
					retryAt = time.Now().Add(backoff)
					w.report(fmt.Errorf("ledger: flushing spooled usage records (will retry in %v): %w", backoff, err))
					break
				}
				backlog = backlog[1:]
				backoff, lastErr, retryAt = 0, nil, time.Time{}
			}
		}
		if closed && len(backlog) == 0 {
			w.mu.Lock()
			idle := len(w.sealed) == 0
			w.mu.Unlock()
			if idle {
				return
			}
			continue
		}

		select {
		case <-w.kick:
		case <-tick.C:
		case <-w.ctx.Done():
			w.err = w.gaveUp(backlog, lastErr)
			return
		}
	}
}

// sync makes the spool durable: the head so far, the sealed segments
// (then closed), and the directory entries of new segments.
func (w *Writer) sync(head *os.File, sealed []sealedSegment) {
	var errs []error
	if head != nil {
		errs = append(errs, head.Sync())
	}
	for _, s := range sealed {
		errs = append(errs, s.file.Sync(), s.file.Close())
	}
	if dir, err := os.Open(w.dir); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, dir.Sync(), dir.Close())
	}
	if err := errors.Join(errs...); err != nil {
		w.report(fmt.Errorf("ledger: spool sync: %w", err))
	}
}

// drain inserts one sealed segment into the store, BatchSize records at a
// time as it reads them, and deletes it.
func (w *Writer) drain(seq uint64) error {
	path := filepath.Join(w.dir, segmentName(seq))
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var (
		good, read int
		perr       error
	)
	for {
		var n int
		w.batch, n, perr = parseSpool(b[good:], w.batch[:0], w.opts.BatchSize)
		good += n
		read += len(w.batch)
		if len(w.batch) > 0 {
			if err := w.store.InsertUsage(w.ctx, w.batch...); err != nil {
				return err
			}
			if w.opts.OnStored != nil {
				w.opts.OnStored(w.batch)
			}
		}
		if perr != nil || good == len(b) {
			break
		}
	}
	switch {
	case perr == nil:
		return removeSegment(path)
	case errors.Is(perr, errTorn):
		// The record being written when the machine lost power: Write
		// cannot have returned for it after a sync, so nothing settled and
		// synced is lost.
		w.report(fmt.Errorf("ledger: spool %s: %d bytes after record %d dropped: %w", path, len(b)-good, read, perr))
		return removeSegment(path)
	default:
		// Damage that is not a torn write: what follows might be readable
		// by hand, so the file is kept aside for an operator.
		w.report(fmt.Errorf("ledger: spool %s: unreadable after record %d (%d bytes), kept as %s.damaged: %w",
			path, read, len(b)-good, path, perr))
		if err := os.Rename(path, path+".damaged"); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		return nil
	}
}

func removeSegment(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// gaveUp is Close's error when its context ended with records still spooled.
func (w *Writer) gaveUp(backlog []uint64, lastErr error) error {
	w.mu.Lock()
	for _, s := range w.sealed {
		_ = s.file.Close()
		backlog = append(backlog, s.seq)
	}
	w.sealed = nil
	w.mu.Unlock()
	left := 0
	for _, seq := range backlog {
		b, err := os.ReadFile(filepath.Join(w.dir, segmentName(seq)))
		if err == nil {
			recs, _, _ := parseSpool(b, nil, 0)
			left += len(recs)
		}
	}
	if left == 0 {
		return nil
	}
	cause := context.Cause(w.ctx)
	if lastErr == nil || errors.Is(lastErr, cause) {
		return fmt.Errorf("ledger: writer closed with %d usage records in the spool %s, for the next writer: %w", left, w.dir, cause)
	}
	return fmt.Errorf("ledger: writer closed with %d usage records in the spool %s, for the next writer: %w (gave up: %w)", left, w.dir, lastErr, cause)
}
