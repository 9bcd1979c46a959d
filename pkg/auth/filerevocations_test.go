package auth

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestFileRevocations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	r := NewFileRevocations(path, time.Nanosecond)
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
	r := NewFileRevocations(path, time.Hour)
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
	r := NewFileRevocations(path, time.Nanosecond)
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
	r := NewFileRevocations(filepath.Join(b.TempDir(), "revoked"))
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
	both := AnyRevocations{NewRevocationSet("from-set"), NewFileRevocations(file)}
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
