package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestKeySetRotation(t *testing.T) {
	old, next := testSigner("k1", 1), testSigner("k2", 2)
	now := time.Now()
	ks := NewKeySet(old, map[string]ed25519.PublicKey{"k1": old.PublicKey()})
	v := NewKeySetVerifier(ks, nil)
	mint := func() string {
		t.Helper()
		tok, err := ks.Mint(Claims{Account: "a", Project: "p", ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	byOld := mint()
	if _, err := v.Verify(byOld, now); err != nil {
		t.Fatalf("token of the only key: %v", err)
	}

	// Rotation, step 1: the new key signs, both verify.
	ks.Set(next, map[string]ed25519.PublicKey{"k1": old.PublicKey(), "k2": next.PublicKey()})
	byNext := mint()
	if c, _ := Parse(byNext); c.KeyID != "k2" {
		t.Errorf("minted with %q after the rotation, want k2", c.KeyID)
	}
	for _, tok := range []string{byOld, byNext} {
		if _, err := v.Verify(tok, now); err != nil {
			t.Errorf("during the rotation: %v", err)
		}
	}

	// Step 2: the old key is retired; its token was cached, and still goes.
	ks.Set(next, map[string]ed25519.PublicKey{"k2": next.PublicKey()})
	if _, err := v.Verify(byOld, now); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("token of a retired key: %v, want ErrUnknownKey", err)
	}
	if _, err := v.Verify(byNext, now); err != nil {
		t.Errorf("token of the new key: %v", err)
	}
	if got := ks.KeyIDs(); !slices.Equal(got, []string{"k2"}) || ks.SignerID() != "k2" {
		t.Errorf("KeyIDs %v, signer %q", got, ks.SignerID())
	}

	verifyOnly := NewKeySet(nil, map[string]ed25519.PublicKey{"k2": next.PublicKey()})
	if _, err := verifyOnly.Mint(Claims{Account: "a", Project: "p", ExpiresAt: now.Add(time.Hour)}); !errors.Is(err, ErrNoSigner) {
		t.Errorf("Mint without a signer: %v", err)
	}
}

// TestKeySetConcurrent: minting, verifying and rotating at once (run with
// -race) never verifies a token against the wrong keys.
func TestKeySetConcurrent(t *testing.T) {
	a, b := testSigner("ka", 3), testSigner("kb", 4)
	both := map[string]ed25519.PublicKey{"ka": a.PublicKey(), "kb": b.PublicKey()}
	ks := NewKeySet(a, both)
	v := NewKeySetVerifier(ks, nil)
	now := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				if g == 0 {
					ks.Set([]*Signer{a, b}[i%2], both)
					continue
				}
				tok, err := ks.Mint(Claims{Account: "a", Project: "p", ExpiresAt: now.Add(time.Hour)})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := v.Verify(tok, now); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// keyDir starts a key directory holding first, and returns it, a function
// that adds a key to it, and a KeySet loaded from it.
func keyDir(t *testing.T, first *Signer) (string, func(*Signer), *KeySet) {
	t.Helper()
	dir := t.TempDir()
	write := func(s *Signer) {
		t.Helper()
		if err := SaveSigner(filepath.Join(dir, s.KeyID()+".pem"), s); err != nil {
			t.Fatal(err)
		}
	}
	write(first)
	signer, keys, err := LoadKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, write, NewKeySet(signer, keys)
}

func TestKeyDirWatch(t *testing.T) {
	k1, k2 := testSigner("2026-01", 5), testSigner("2026-02", 6)
	dir, write, ks := keyDir(t, k1)
	v := NewKeySetVerifier(ks, nil)
	now := time.Now()
	tok1, err := ks.Mint(Claims{Account: "a", Project: "p", ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	changes := make(chan []string, 10)
	errs := make(chan error, 100)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		KeyDirWatch{
			Interval: 10 * time.Millisecond,
			OnChange: func(signer string, keys []string) { changes <- append([]string{signer}, keys...) },
			OnError:  func(err error) { errs <- err },
		}.Run(ctx, dir, ks)
	}()
	defer func() { cancel(); <-done }()
	wait := func(want ...string) {
		t.Helper()
		select {
		case got := <-changes:
			if !slices.Equal(got, want) {
				t.Fatalf("change to %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no change to %v seen", want)
		}
	}

	write(k2)
	wait("2026-02", "2026-01", "2026-02")
	if ks.SignerID() != "2026-02" {
		t.Errorf("signing with %q after a later key was added", ks.SignerID())
	}
	if _, err := v.Verify(tok1, now); err != nil {
		t.Errorf("token of the first key while both are in the dir: %v", err)
	}

	// A bad file refuses the read and keeps the keys in force.
	if err := os.WriteFile(filepath.Join(dir, "2026-03.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-errs:
	case <-time.After(10 * time.Second):
		t.Fatal("a bad key file was not reported")
	}
	if _, err := v.Verify(tok1, now); err != nil {
		t.Errorf("after a bad read the keys changed: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "2026-03.pem")); err != nil {
		t.Fatal(err)
	}

	// Retiring the first key.
	if err := os.Remove(filepath.Join(dir, "2026-01.pem")); err != nil {
		t.Fatal(err)
	}
	wait("2026-02", "2026-02")
	if _, err := v.Verify(tok1, now); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("token of the retired key: %v, want ErrUnknownKey", err)
	}
	select {
	case got := <-changes:
		t.Errorf("a change with nothing changed: %v", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestKeyDirWatchSignAfter: a key added while the watch runs verifies at
// once but signs only after SignAfter, so every replica trusts it first.
func TestKeyDirWatchSignAfter(t *testing.T) {
	old, next := testSigner("2026-01", 7), testSigner("2026-02", 8)
	dir, write, ks := keyDir(t, old)
	type change struct {
		signer string
		at     time.Time
	}
	changes := make(chan change, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	const grace = 400 * time.Millisecond
	go func() {
		defer close(done)
		KeyDirWatch{
			Interval:  10 * time.Millisecond,
			SignAfter: grace,
			OnChange:  func(signer string, _ []string) { changes <- change{signer, time.Now()} },
		}.Run(ctx, dir, ks)
	}()
	defer func() { cancel(); <-done }()
	next1 := func() change {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no change seen")
			return change{}
		}
	}

	added := time.Now()
	write(next)
	trusted := next1()
	if trusted.signer != "2026-01" {
		t.Fatalf("a new key signs at once (%q), before the grace", trusted.signer)
	}
	if got := ks.KeyIDs(); !slices.Equal(got, []string{"2026-01", "2026-02"}) {
		t.Fatalf("trusted keys %v, want both", got)
	}
	signs := next1()
	if signs.signer != "2026-02" || signs.at.Sub(added) < grace {
		t.Errorf("signer %q after %v, want 2026-02 after at least %v", signs.signer, signs.at.Sub(added), grace)
	}

	// Both older keys removed: the newest key signs (at once if its grace
	// has not run out: better than no signer).
	third := testSigner("2026-03", 9)
	write(third)
	if c := next1(); c.signer != "2026-02" {
		t.Fatalf("signer %q right after 2026-03 was added", c.signer)
	}
	for _, kid := range []string{"2026-01", "2026-02"} {
		if err := os.Remove(filepath.Join(dir, kid+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	for {
		c := next1()
		if c.signer == "2026-03" && slices.Equal(ks.KeyIDs(), []string{"2026-03"}) {
			break
		}
	}
}
