package auth

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"sync"
	"time"
)

// FileRevocations is a revocation list kept in a file, one token id per
// line, so `tollgate token revoke` works against a running gateway on the
// same data dir. The file is re-read when it changes, at most once per
// CheckEvery; a missing file means nothing is revoked.
type FileRevocations struct {
	path       string
	CheckEvery time.Duration

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	set     *RevocationSet
}

// NewFileRevocations returns the revocation list kept at path.
func NewFileRevocations(path string) *FileRevocations {
	return &FileRevocations{path: path, CheckEvery: time.Second, set: NewRevocationSet()}
}

// Revoked implements Revocations.
func (f *FileRevocations) Revoked(tokenID string) bool {
	f.refresh(time.Now())
	return f.set.Revoked(tokenID)
}

func (f *FileRevocations) refresh(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.checked) < f.CheckEvery && !f.checked.IsZero() {
		return
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		if f.size != 0 || !f.modTime.IsZero() {
			f.set = NewRevocationSet()
			f.size, f.modTime = 0, time.Time{}
		}
		return
	}
	if fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return // keep the last list we could read
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" && !strings.HasPrefix(id, "#") {
			ids = append(ids, id)
		}
	}
	f.set = NewRevocationSet(ids...)
	f.modTime, f.size = fi.ModTime(), fi.Size()
}
