package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Errors from [Writer.Write].
var (
	// ErrQueueFull means the store has fallen so far behind that the queue
	// stayed full for WriterOptions.MaxWait. The record was not taken.
	ErrQueueFull = errors.New("ledger: writer queue full")
	// ErrClosed means Write was called after Close.
	ErrClosed = errors.New("ledger: writer closed")
)

// WriterOptions tune a [Writer]. Zero fields take the defaults.
type WriterOptions struct {
	// BatchSize is how many waiting records trigger a flush. Default 256.
	BatchSize int
	// FlushInterval is the longest a record waits for a flush while the
	// store is healthy. Default 50ms.
	FlushInterval time.Duration
	// QueueSize is how many records Write can hand off without waiting.
	// Default 4096: over a minute of a busy replica's traffic at a
	// few dozen requests per second, should the store be briefly locked.
	QueueSize int
	// MaxWait is how long Write waits for room when the queue is full
	// before giving up with ErrQueueFull. Default 1s.
	MaxWait time.Duration
	// OnError, if set, is called from the Writer's goroutine when a flush
	// fails; the batch is kept and retried with backoff. It must not block.
	OnError func(error)
}

func (o WriterOptions) withDefaults() WriterOptions {
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 50 * time.Millisecond
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Second
	}
	return o
}

// maxBackoff caps the wait between retries of a failing flush.
const maxBackoff = 5 * time.Second

// sink is where a Writer flushes to. *Store is the only one today.
type sink interface {
	InsertUsage(ctx context.Context, recs ...usage.Record) error
}

// Writer batches usage records into a Store off the request path.
//
// Write hands a record to a buffered queue and returns; a goroutine flushes
// the queue in batches, every BatchSize records or FlushInterval, whichever
// comes first. A request therefore never waits on the database unless the
// queue is full, which only happens when the store has been failing or
// locked for a long time. Then Write waits up to MaxWait for room and, if
// none comes, returns ErrQueueFull: a usage record is money, so it is never
// dropped silently, and a bounded wait keeps a stuck disk from stalling every
// request indefinitely. The caller logs and counts the failure.
//
// A failed flush keeps its batch and retries it with backoff (inserts are
// idempotent, so a flush that failed after committing is harmless to repeat);
// while it does, the queue absorbs new records.
//
// Records in memory are lost if the process dies. The durable spool planned
// for the ledger goes where the queue is: Write will append to a local file
// and the goroutine will drain that file into the Store, so that a crash
// loses nothing and a full queue need not refuse records. Write's signature
// and the flushing side (sink) stay as they are.
type Writer struct {
	sink  sink
	opts  WriterOptions
	queue chan usage.Record

	mu     sync.RWMutex // guards closed; Write holds it for reading while sending
	closed bool

	ctx    context.Context // cancelled, with Close's reason, when Close gives up
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // set by run before it closes done
}

// NewWriter starts a Writer flushing into s. Close it to flush and stop it.
func NewWriter(s Store, opts WriterOptions) *Writer {
	return newWriter(s, opts)
}

func newWriter(s sink, opts WriterOptions) *Writer {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancelCause(context.Background())
	w := &Writer{
		sink:   s,
		opts:   opts,
		queue:  make(chan usage.Record, opts.QueueSize),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go w.run()
	return w
}

// Write hands rec to the Writer. It returns at once unless the queue is full
// (see [Writer]); it returns an error, without taking rec, if rec is invalid
// (no request id, or no time), the queue stayed full for MaxWait
// (ErrQueueFull), or the Writer is closed (ErrClosed).
func (w *Writer) Write(rec usage.Record) error {
	if err := validate(rec); err != nil {
		return fmt.Errorf("ledger: write: %w", err)
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	select {
	case w.queue <- rec:
		return nil
	default:
	}
	t := time.NewTimer(w.opts.MaxWait)
	defer t.Stop()
	select {
	case w.queue <- rec:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: waited %v for record %s", ErrQueueFull, w.opts.MaxWait, rec.RequestID)
	}
}

// Close stops taking records and flushes every record already taken,
// retrying failed flushes until they succeed or ctx is done. It returns nil
// only if every record Write accepted is in the store; otherwise the error
// says how many were not written, and why. Calling Close again waits for the
// first Close and returns the same result.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { w.cancel(context.Cause(ctx)) })
	defer stop()
	<-w.done
	w.cancel(nil)
	return w.err
}

// run is the Writer's goroutine.
func (w *Writer) run() {
	defer close(w.done)
	var (
		batch   = make([]usage.Record, 0, w.opts.BatchSize)
		recv    = w.queue // nil while backing off, and once the queue is drained
		closed  bool      // the queue is closed and drained into batch
		retryAt time.Time
		backoff time.Duration
		lastErr error
	)
	tick := time.NewTicker(w.opts.FlushInterval)
	defer tick.Stop()

	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := w.sink.InsertUsage(w.ctx, batch...); err != nil {
			lastErr = err
			backoff = min(max(2*backoff, w.opts.FlushInterval), maxBackoff)
			retryAt = time.Now().Add(backoff)
			recv = nil // let the queue absorb new records meanwhile
			if w.opts.OnError != nil {
				w.opts.OnError(fmt.Errorf("ledger: flushing %d usage records (will retry in %v): %w", len(batch), backoff, err))
			}
			return
		}
		clear(batch) // drop references for the GC
		batch = batch[:0]
		backoff, lastErr = 0, nil
		if !closed {
			recv = w.queue
		}
	}

	for {
		select {
		case rec, ok := <-recv:
			if !ok {
				closed, recv = true, nil
				flush()
				if len(batch) == 0 {
					return
				}
				continue
			}
			batch = append(batch, rec)
			if len(batch) >= w.opts.BatchSize {
				flush()
			}
		case <-tick.C:
			if len(batch) > 0 && !time.Now().Before(retryAt) {
				flush()
			}
			if closed && len(batch) == 0 {
				return
			}
		case <-w.ctx.Done():
			// Close gave up. Count what is left: the batch, and whatever
			// is still queued (the queue is closed, so this ends).
			lost := len(batch)
			for range w.queue {
				lost++
			}
			if lost == 0 {
				return
			}
			cause := context.Cause(w.ctx)
			if lastErr == nil || errors.Is(lastErr, cause) {
				w.err = fmt.Errorf("ledger: writer closed with %d usage records not written: %w", lost, cause)
			} else {
				w.err = fmt.Errorf("ledger: writer closed with %d usage records not written: %w (gave up: %w)", lost, lastErr, cause)
			}
			return
		}
	}
}
