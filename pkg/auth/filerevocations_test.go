package auth

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustFileRevocations(t testing.TB, path string, checkEvery ...time.Duration) *FileRevocations {
	t.Helper()
	r, err := NewFileRevocations(path, checkEvery...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFileRevocations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	r := mustFileRevocations(t, path, time.Nanosecond)
	if r.Revoked("a") {
		t.Fatal("missing file revokes a token")
	}
	if err := os.WriteFile(path, []byte("# comment\na\n\n  b  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if !r.Revoked(id) {
			t.Errorf("%s not revoked after the file listed it", id)
		}
	}
	if r.Revoked("c") || r.Revoked("# comment") {
		t.Error("unlisted id or comment revoked")
	}
	// A file that cannot be read keeps the last list: a transient error must
	// never let a revoked token back in. (A directory in its place stats
	// fine and fails to read, whoever runs the test.)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if !r.Revoked("a") {
		t.Error("unreadable file dropped the revocation list")
	}
	if err := os.Remove(path); err != nil { // the directory
		t.Fatal(err)
	}
	if r.Revoked("a") {
		t.Error("removed file still revokes")
	}
}

func TestFileRevocationsChecksAtMostOncePerInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	r := mustFileRevocations(t, path, time.Hour)
	if err := os.WriteFile(path, []byte("a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r.Revoked("a") {
		t.Fatal("re-read the file before the interval passed")
	}
	r.next.Store(0) // the interval has passed
	if !r.Revoked("a") {
		t.Fatal("did not re-read the file after the interval")
	}
}

func TestFileRevocationsConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	r := mustFileRevocations(t, path, time.Nanosecond)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if i == 0 && j%20 == 0 {
					_ = os.WriteFile(path, []byte("x\n"), 0o600)
				}
				_ = r.Revoked("x")
			}
		}()
	}
	wg.Wait()
	if !r.Revoked("x") {
		t.Fatal("x not revoked at the end")
	}
}

func BenchmarkFileRevocations(b *testing.B) {
	r := mustFileRevocations(b, filepath.Join(b.TempDir(), "revoked"))
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Revoked("x")
	}
}

func TestAnyRevocations(t *testing.T) {
	file := filepath.Join(t.TempDir(), "revoked")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	both := AnyRevocations{NewRevocationSet("from-set"), mustFileRevocations(t, file)}
	for id, want := range map[string]bool{"from-set": true, "from-file": true, "neither": false} {
		if got := both.Revoked(id); got != want {
			t.Errorf("Revoked(%q) = %v, want %v", id, got, want)
		}
	}
	s := NewSigner("k", testSigner("k", 1).priv)
	c := testClaims()
	c.TokenID = "from-file"
	if _, err := NewVerifier(map[string]ed25519.PublicKey{"k": s.PublicKey()}, both).Verify(mint(t, s, c), t0); !errors.Is(err, ErrRevoked) {
		t.Errorf("Verify of a token the file revokes: %v, want ErrRevoked", err)
	}
}

// TestFileRevocationsLines: a list kept by hand is read the way people
// write one. A note after an id, a whole token pasted in place of its id,
// or the byte order mark an editor put first must not leave the token
// working.
func TestFileRevocationsLines(t *testing.T) {
	s := testSigner("k", 1)
	c := testClaims()
	c.TokenID = "pasted-token-id"
	tok := mint(t, s, c)
	for _, tc := range []struct {
		name, file string
		revoked    []string
		kept       []string
	}{
		{"note after the id", "abc123 # leaked in CI logs\ndef456\t#why\n", []string{"abc123", "def456"}, []string{"abc123 # leaked in CI logs"}},
		{"whole token", "# the leaked token itself\n" + tok + "\n", []string{"pasted-token-id"}, []string{tok}},
		{"byte order mark", "\ufeffabc123\r\ndef456\r\n", []string{"abc123", "def456"}, []string{"\ufeffabc123"}},
		{"after an overlong line", strings.Repeat("x", 100<<10) + "\nabc123\n", []string{"abc123"}, nil},
		{"comment only", "   # abc123\n#\n", nil, []string{"abc123", "#", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "revoked")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := NewFileRevocations(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range tc.revoked {
				if !r.Revoked(id) {
					t.Errorf("%q not revoked", id)
				}
			}
			for _, id := range tc.kept {
				if r.Revoked(id) {
					t.Errorf("%q revoked", id)
				}
			}
		})
	}
}

// TestFileRevocationsUnreadableAtStart: a list that exists but cannot be
// read when the gateway starts is an error, as the ledger's is: starting
// with no list would let every token in it through, silently.
func TestFileRevocationsUnreadableAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	// A directory in its place stats fine and fails to read, whoever runs
	// the test.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFileRevocations(path); err == nil {
		t.Fatal("NewFileRevocations of an unreadable list: no error")
	}
	if _, err := NewFileRevocations(filepath.Join(t.TempDir(), "missing")); err != nil {
		t.Errorf("a missing list is an empty one, not an error: %v", err)
	}
}
