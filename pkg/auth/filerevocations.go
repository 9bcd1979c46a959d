package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FileRevocations is a revocation list kept in a file, one token id per
// line, so `tollgate token revoke` works against a running gateway on the
// same data dir. The file is kept by hand too, so it is read the way
// people write one: # starts a comment anywhere on a line (token ids never
// hold one), a line may hold a whole token in place of its id, and a byte
// order mark is skipped. The file is re-read when its size or modification
// time changes, checked at most once per CheckEvery. A missing file means
// nothing is revoked; a file that cannot be read keeps the last list read,
// so a transient error never un-revokes a token.
type FileRevocations struct {
	path       string
	checkEvery time.Duration

	set     atomic.Pointer[RevocationSet]
	next    atomic.Int64 // unix nanos of the next stat
	refresh sync.Mutex   // one reader of the file at a time; never held by Revoked's fast path
	modTime time.Time
	size    int64
}

// NewFileRevocations returns the revocation list kept at path, re-checked
// at most once per checkEvery (one second when zero). A file that exists
// but cannot be read is an error: with no last list to keep, starting
// would let every token it revokes through.
func NewFileRevocations(path string, checkEvery ...time.Duration) (*FileRevocations, error) {
	f := &FileRevocations{path: path, checkEvery: time.Second}
	if len(checkEvery) > 0 && checkEvery[0] > 0 {
		f.checkEvery = checkEvery[0]
	}
	f.set.Store(NewRevocationSet())
	if err := f.reload(time.Now()); err != nil {
		return nil, fmt.Errorf("auth: revocation list: %w", err)
	}
	return f, nil
}

// Revoked implements Revocations. It takes no lock on the hot path.
func (f *FileRevocations) Revoked(tokenID string) bool {
	now := time.Now()
	if now.UnixNano() >= f.next.Load() && f.refresh.TryLock() {
		_ = f.reloadLocked(now) // on an error the last list stays
		f.refresh.Unlock()
	}
	return f.set.Load().Revoked(tokenID)
}

func (f *FileRevocations) reload(now time.Time) error {
	f.refresh.Lock()
	defer f.refresh.Unlock()
	return f.reloadLocked(now)
}

// reloadLocked reads the file if it changed. On an error the list read
// last stays in force.
func (f *FileRevocations) reloadLocked(now time.Time) error {
	f.next.Store(now.Add(f.checkEvery).UnixNano())
	fi, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if f.size != 0 || !f.modTime.IsZero() {
			f.set.Store(NewRevocationSet())
			f.size, f.modTime = 0, time.Time{}
		}
		return nil
	case err != nil:
		return err
	case fi.ModTime().Equal(f.modTime) && fi.Size() == f.size:
		return nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return err
	}
	f.set.Store(NewRevocationSet(revocationLines(b)...))
	f.modTime, f.size = fi.ModTime(), fi.Size()
	return nil
}

// revocationLines returns the token ids a revocation file lists.
func revocationLines(b []byte) []string {
	var ids []string
	// bytes.Lines, not a bufio.Scanner: one overlong line must not end
	// the list early.
	for l := range bytes.Lines(bytes.TrimPrefix(b, []byte("\ufeff"))) {
		line, _, _ := strings.Cut(string(l), "#")
		id := strings.TrimSpace(line)
		if c, err := Parse(id); err == nil {
			// A pasted token: its id is what Verify looks up. (Parse
			// checks no signature, but whoever edits this file may
			// revoke any id anyway.)
			id = c.TokenID
		}
		if id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}
