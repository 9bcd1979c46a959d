package auth

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestSignerFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := testSigner("k1", 1)
	path := filepath.Join(dir, "signing.pem")
	if err := SaveSigner(path, s); err != nil {
		t.Fatal(err)
	}
	checkPerm(t, path, 0o600)
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----\n") {
		t.Errorf("key file does not start with a PKCS#8 PEM header:\n%s", data)
	}

	for _, tt := range []struct{ kid, want string }{{"k1", "k1"}, {"", KeyIDFor(s.PublicKey())}} {
		loaded, err := LoadSigner(path, tt.kid)
		if err != nil {
			t.Fatal(err)
		}
		if loaded.KeyID() != tt.want || !loaded.PublicKey().Equal(s.PublicKey()) {
			t.Errorf("LoadSigner(%q): kid %q, same key %v", tt.kid, loaded.KeyID(), loaded.PublicKey().Equal(s.PublicKey()))
		}
	}
	// Overwriting keeps the file private even if it was not.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SaveSigner(path, testSigner("k2", 2)); err != nil {
		t.Fatal(err)
	}
	checkPerm(t, path, 0o600)
	if err := SaveSigner(filepath.Join(dir, "bad.pem"), NewSigner("k", nil)); err == nil {
		t.Error("SaveSigner of a signer without a key succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d files, want only signing.pem (no temporaries)", len(entries))
	}
}

func TestPublicKeyFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := testSigner("k1", 1)
	path := filepath.Join(dir, "verify.pem")
	if err := SavePublicKey(path, s.PublicKey()); err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(path)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(map[string]ed25519.PublicKey{"k1": pub}, nil)
	if _, err := v.Verify(mint(t, s, testClaims()), t0); err != nil {
		t.Errorf("token does not verify with the loaded public key: %v", err)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	s := testSigner("k1", 1)
	priv, pub := filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	if err := SaveSigner(priv, s); err != nil {
		t.Fatal(err)
	}
	if err := SavePublicKey(pub, s.PublicKey()); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("not.pem", "hello")
	badDER := write("bad.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	missing := filepath.Join(dir, "missing.pem")

	for name, load := range map[string]func() error{
		"signer from public key file": func() error { _, err := LoadSigner(pub, ""); return err },
		"public key from signer file": func() error { _, err := LoadPublicKey(priv); return err },
		"signer not PEM":              func() error { _, err := LoadSigner(notPEM, ""); return err },
		"public key not PEM":          func() error { _, err := LoadPublicKey(notPEM); return err },
		"signer bad DER":              func() error { _, err := LoadSigner(badDER, ""); return err },
		"signer missing":              func() error { _, err := LoadSigner(missing, ""); return err },
		"public key missing":          func() error { _, err := LoadPublicKey(missing); return err },
	} {
		if err := load(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := LoadSigner(missing, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadSigner(missing): %v, want fs.ErrNotExist", err)
	}
}

func TestLoadOrCreateSigner(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreateSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.KeyID() != KeyIDFor(first.PublicKey()) {
		t.Errorf("kid %q, want the key's fingerprint %q", first.KeyID(), KeyIDFor(first.PublicKey()))
	}
	path := filepath.Join(dir, "keys", first.KeyID()+".pem")
	checkPerm(t, path, 0o600)
	checkPerm(t, filepath.Join(dir, "keys"), 0o700)

	again, err := LoadOrCreateSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.KeyID() != first.KeyID() || !again.PublicKey().Equal(first.PublicKey()) {
		t.Error("second LoadOrCreateSigner made a new key instead of loading the first")
	}

	// After a rotation the newest key signs and the keyring holds both.
	next := testSigner("rotated", 7)
	nextPath := filepath.Join(dir, "keys", "rotated.pem")
	if err := SaveSigner(nextPath, next); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(nextPath, later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "README"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := LoadOrCreateSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cur.KeyID() != "rotated" || !cur.PublicKey().Equal(next.PublicKey()) {
		t.Errorf("after rotation the signer is %q, want the newest key", cur.KeyID())
	}
	ring, err := LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ring) != 2 || !ring[first.KeyID()].Equal(first.PublicKey()) || !ring["rotated"].Equal(next.PublicKey()) {
		t.Errorf("keyring = %v, want both keys by kid", ring)
	}
	v := NewVerifier(ring, nil)
	for _, s := range []*Signer{first, cur} {
		if _, err := v.Verify(mint(t, s, testClaims()), t0); err != nil {
			t.Errorf("keyring verifier refuses %s: %v", s.KeyID(), err)
		}
	}
}

func TestLoadOrCreateSignerUnusableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSigner(file); err == nil {
		t.Error("LoadOrCreateSigner under a regular file succeeded")
	}
	if _, err := LoadKeyring(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("LoadKeyring of a missing directory succeeded")
	}
}

func checkPerm(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
	}
}

// secretMount lays out keys as the kubelet mounts a Secret: the files live
// in a hidden timestamped directory, reached through ..data, and each
// <kid>.pem is a symbolic link into it, all with one modification time.
func secretMount(t *testing.T, keys map[string]*Signer) string {
	t.Helper()
	dir := t.TempDir()
	stamp := filepath.Join(dir, "..2026_01_02_03_04_05.000000001")
	if err := os.Mkdir(stamp, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range keys {
		if err := SaveSigner(filepath.Join(stamp, name), s); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(stamp, name), t0, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(stamp), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range keys {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadKeyDir(t *testing.T) {
	old, cur := testSigner("2026-01-k1", 1), testSigner("2026-07-k2", 2)
	tests := []struct {
		name    string
		dir     func(t *testing.T) string
		signer  *Signer // nil: an error is wanted
		trusted []*Signer
		errHas  string
	}{
		{"one key", func(t *testing.T) string { return secretMount(t, map[string]*Signer{"2026-01-k1.pem": old}) },
			old, []*Signer{old}, ""},
		// Rotation: the kid that sorts last signs, whatever the order the
		// files were written in; both verify.
		{"rotated", func(t *testing.T) string {
			return secretMount(t, map[string]*Signer{"2026-07-k2.pem": cur, "2026-01-k1.pem": old})
		}, cur, []*Signer{old, cur}, ""},
		{"missing dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") }, nil, nil, "no such file"},
		{"empty dir", func(t *testing.T) string { return t.TempDir() }, nil, nil, "holds no <kid>.pem signing key"},
		{"only other files", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "README"), []byte("keys go here"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, nil, nil, "holds no <kid>.pem signing key"},
		{"not a key", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "k.pem"), []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, nil, nil, "want \"PRIVATE KEY\""},
		{"kid with a control character", func(t *testing.T) string {
			return secretMount(t, map[string]*Signer{"bad\tkid.pem": old})
		}, nil, nil, "control characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			s, keys, err := LoadKeyDir(dir)
			if tt.signer == nil {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("LoadKeyDir = %v, want an error containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyID() != tt.signer.KeyID() || !s.PublicKey().Equal(tt.signer.PublicKey()) {
				t.Errorf("signer %q, want %q", s.KeyID(), tt.signer.KeyID())
			}
			if len(keys) != len(tt.trusted) {
				t.Errorf("keyring has %d keys, want %d", len(keys), len(tt.trusted))
			}
			v := NewVerifier(keys, nil)
			for _, k := range tt.trusted {
				if _, err := v.Verify(mint(t, k, testClaims()), t0); err != nil {
					t.Errorf("key %s not trusted: %v", k.KeyID(), err)
				}
			}
			if _, err := v.Verify(mint(t, testSigner(tt.signer.KeyID(), 9), testClaims()), t0); !errors.Is(err, ErrBadSignature) {
				t.Errorf("a foreign key under a trusted kid: %v, want ErrBadSignature", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != len(tt.trusted)+2 { // the keys, ..data and the stamp dir
				t.Errorf("LoadKeyDir changed the directory: %d entries", len(entries))
			}
		})
	}
}
