package auth

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FileRevocations is a revocation list kept in a file, one token id per
// line (# starts a comment), so `tollgate token revoke` works against a
// running gateway on the same data dir. The file is re-read when its size
// or modification time changes, checked at most once per CheckEvery. A
// missing file means nothing is revoked; a file that cannot be read keeps
// the last list read, so a transient error never un-revokes a token.
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
// at most once per checkEvery (one second when zero).
func NewFileRevocations(path string, checkEvery ...time.Duration) *FileRevocations {
	f := &FileRevocations{path: path, checkEvery: time.Second}
	if len(checkEvery) > 0 && checkEvery[0] > 0 {
		f.checkEvery = checkEvery[0]
	}
	f.set.Store(NewRevocationSet())
	f.reload(time.Now())
	return f
}

// Revoked implements Revocations. It takes no lock on the hot path.
func (f *FileRevocations) Revoked(tokenID string) bool {
	now := time.Now()
	if now.UnixNano() >= f.next.Load() && f.refresh.TryLock() {
		f.reloadLocked(now)
		f.refresh.Unlock()
	}
	return f.set.Load().Revoked(tokenID)
}

func (f *FileRevocations) reload(now time.Time) {
	f.refresh.Lock()
	defer f.refresh.Unlock()
	f.reloadLocked(now)
}

func (f *FileRevocations) reloadLocked(now time.Time) {
	f.next.Store(now.Add(f.checkEvery).UnixNano())
	fi, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if f.size != 0 || !f.modTime.IsZero() {
			f.set.Store(NewRevocationSet())
			f.size, f.modTime = 0, time.Time{}
		}
		return
	case err != nil:
		return
	case fi.ModTime().Equal(f.modTime) && fi.Size() == f.size:
		return
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" && !strings.HasPrefix(id, "#") {
			ids = append(ids, id)
		}
	}
	f.set.Store(NewRevocationSet(ids...))
	f.modTime, f.size = fi.ModTime(), fi.Size()
}
