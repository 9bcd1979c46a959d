package ledger

import (
	"path/filepath"
	"testing"
)

// backend opens an empty ledger of one kind for a test.
type testBackend struct {
	name string
	open func(t *testing.T) (s *DB, url string)
}

// backends are the stores every shared test runs on.
var backends = []testBackend{
	{"sqlite", func(t *testing.T) (*DB, string) {
		url := "sqlite://" + filepath.Join(t.TempDir(), "usage.db")
		return openURL(t, url), url
	}},
}

func openURL(t *testing.T, url string) *DB {
	t.Helper()
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// eachBackend runs test once per backend, on an empty ledger.
func eachBackend(t *testing.T, test func(t *testing.T, s *DB, url string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, url := b.open(t)
			test(t, s, url)
		})
	}
}
