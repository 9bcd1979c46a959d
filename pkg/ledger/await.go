package ledger

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// AwaitSpool waits until the records in the spool at dir when it is called
// have reached the store, so that a reader in another process (`tollgate
// usage`) sees every request that settled before it asked. The Writer that
// owns the spool inserts them within its FlushInterval; with no Writer
// running nothing will until the next one starts, so AwaitSpool does not
// wait then. It returns how many of those records are still spooled when it
// returns: zero, or the count when ctx ended or no Writer owns the spool.
func AwaitSpool(ctx context.Context, dir string) (pending int, err error) {
	segs, err := spooledRecords(dir)
	if err != nil || len(segs) == 0 {
		return 0, err
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		for seq := range segs {
			if _, err := os.Stat(filepath.Join(dir, segmentName(seq))); errors.Is(err, fs.ErrNotExist) {
				delete(segs, seq) // drained and deleted after its commit
			}
		}
		pending = 0
		for _, n := range segs {
			pending += n
		}
		if pending == 0 {
			return 0, nil
		}
		owned, err := SpoolOwned(dir)
		if err != nil || !owned {
			return pending, err
		}
		select {
		case <-ctx.Done():
			return pending, nil
		case <-tick.C:
		}
	}
}

// spooledRecords counts the readable records in each segment of dir that
// holds any.
func spooledRecords(dir string) (map[uint64]int, error) {
	seqs, err := listSegments(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: spool: %w", err)
	}
	segs := make(map[uint64]int, len(seqs))
	for _, seq := range seqs {
		b, err := os.ReadFile(filepath.Join(dir, segmentName(seq)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // drained between the listing and the read
		}
		if err != nil {
			return nil, fmt.Errorf("ledger: spool: %w", err)
		}
		// A torn tail is a record being written: the readable ones count.
		if recs, _, _ := parseSpool(b, nil, 0); len(recs) > 0 {
			segs[seq] = len(recs)
		}
	}
	return segs, nil
}

// SpoolOwned reports whether a Writer, in this process or another, holds
// the spool at dir (its lock): whether a gateway is running on its data
// dir. It tries a shared lock and lets go at once; a Writer starting in
// that instant retries (lockSpool).
func SpoolOwned(dir string) (bool, error) {
	f, err := os.Open(filepath.Join(dir, "LOCK"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ledger: spool: %w", err)
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("ledger: spool: %w", err)
	}
	return false, nil // closing f releases the shared lock
}

// lockSpool takes dir's lock for a Writer. A reader's probe (SpoolOwned)
// holds it shared for an instant, so a refusal is retried for a while
// before it counts as another Writer.
func lockSpool(f *os.File) error {
	var err error
	for range 20 {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return err
}
