package auth

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Key files are PEM: a private key as PKCS#8 ("PRIVATE KEY"), a public key
// as PKIX ("PUBLIC KEY"), the forms openssl and every TLS library read, so
// operators can make and inspect them with standard tools:
//
//	openssl genpkey -algorithm ed25519 -out signing.pem
//	openssl pkey -in signing.pem -pubout -out verify.pem

// SaveSigner writes s's private key to path as PKCS#8 PEM, readable by the
// owner only (0600). It writes a temporary file and renames it, so a crash
// never leaves a truncated key behind.
func SaveSigner(path string, s *Signer) error {
	if len(s.priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("auth: save signing key %s: signer has no valid ed25519 private key", path)
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.priv)
	if err != nil {
		return fmt.Errorf("auth: save signing key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("auth: save signing key: %w", err)
	}
	return nil
}

// LoadSigner reads a PKCS#8 PEM ed25519 private key. The file holds no key
// id, so kid names it; an empty kid is derived from the key (KeyIDFor).
func LoadSigner(path, kid string) (*Signer, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("auth: load signing key: %w", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("auth: load signing key %s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: load signing key %s: %T is not an ed25519 key", path, key)
	}
	if kid == "" {
		kid = KeyIDFor(priv.Public().(ed25519.PublicKey))
	}
	return NewSigner(kid, priv), nil
}

// SavePublicKey writes pub to path as PKIX PEM (0644: it is no secret).
func SavePublicKey(path string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("auth: save public key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := writeFileAtomic(path, data, 0o644); err != nil {
		return fmt.Errorf("auth: save public key: %w", err)
	}
	return nil
}

// LoadPublicKey reads a PKIX PEM ed25519 public key.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, fmt.Errorf("auth: load public key: %w", err)
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("auth: load public key %s: %w", path, err)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auth: load public key %s: %T is not an ed25519 key", path, key)
	}
	return pub, nil
}

// LoadOrCreateSigner returns the signing key kept in dir/keys, creating
// one on first use, so `tollgate dev` mints tokens that survive restarts
// with no setup. Keys are dir/keys/<kid>.pem; a new key's kid is derived
// from its public key. When several keys are there (after a rotation) the
// most recently written one signs; LoadKeyring returns all of them for
// verifying.
func LoadOrCreateSigner(dir string) (*Signer, error) {
	keysDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: key directory: %w", err)
	}
	files, err := keyFiles(keysDir)
	if err != nil {
		return nil, err
	}
	if len(files) > 0 {
		newest := slices.MaxFunc(files, func(a, b keyFile) int {
			if c := a.info.ModTime().Compare(b.info.ModTime()); c != 0 {
				return c
			}
			return strings.Compare(a.kid, b.kid)
		})
		return LoadSigner(newest.path, newest.kid)
	}
	s, err := GenerateKey("")
	if err != nil {
		return nil, err
	}
	if err := SaveSigner(filepath.Join(keysDir, s.KeyID()+".pem"), s); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadKeyring returns the public keys of every signing key in dir/keys, by
// key id: what a Verifier for a LoadOrCreateSigner directory trusts.
func LoadKeyring(dir string) (map[string]ed25519.PublicKey, error) {
	files, err := keyFiles(filepath.Join(dir, "keys"))
	if err != nil {
		return nil, err
	}
	keys := make(map[string]ed25519.PublicKey, len(files))
	for _, f := range files {
		s, err := LoadSigner(f.path, f.kid)
		if err != nil {
			return nil, err
		}
		keys[f.kid] = s.PublicKey()
	}
	return keys, nil
}

// LoadKeyDir reads the signing keys an operator keeps in dir, typically a
// read-only mounted Secret shared by every replica: each <kid>.pem file is
// a PKCS#8 PEM ed25519 private key. The key whose kid sorts last signs,
// whatever the files' times (a Secret mount gives them all one), so every
// replica signs with the same key; all of them verify, so a key is rotated
// by adding one with a later-sorting kid and removing the old one once its
// tokens have expired. LoadKeyDir never writes: a missing or empty dir is
// an error.
func LoadKeyDir(dir string) (*Signer, map[string]ed25519.PublicKey, error) {
	signers, err := loadKeyDirSigners(dir)
	if err != nil {
		return nil, nil, err
	}
	var signer *Signer
	keys := make(map[string]ed25519.PublicKey, len(signers))
	for kid, s := range signers {
		keys[kid] = s.PublicKey()
		if signer == nil || kid > signer.KeyID() {
			signer = s
		}
	}
	return signer, keys, nil
}

// loadKeyDirSigners reads every <kid>.pem in dir, by key id.
func loadKeyDirSigners(dir string) (map[string]*Signer, error) {
	files, err := keyFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("auth: key directory %s holds no <kid>.pem signing key", dir)
	}
	signers := make(map[string]*Signer, len(files))
	for _, f := range files {
		if err := checkField(f.kid); err != nil {
			return nil, fmt.Errorf("auth: key file %s: key id %w", f.path, err)
		}
		s, err := LoadSigner(f.path, f.kid)
		if err != nil {
			return nil, err
		}
		signers[f.kid] = s
	}
	return signers, nil
}

type keyFile struct {
	kid, path string
	info      fs.FileInfo
}

// keyFiles lists the <kid>.pem files in dir, skipping hidden files such
// as the temporaries of writeFileAtomic. Symbolic links are followed: a
// mounted Secret's files are links into its hidden ..data directory.
func keyFiles(dir string) ([]keyFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("auth: key directory: %w", err)
	}
	var files []keyFile
	for _, e := range entries {
		kid, ok := strings.CutSuffix(e.Name(), ".pem")
		if !ok || kid == "" || strings.HasPrefix(kid, ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		info, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("auth: key directory: %w", err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		files = append(files, keyFile{kid: kid, path: path, info: info})
	}
	return files, nil
}

// readPEM returns the DER bytes of the first PEM block in path, which must
// be of type typ.
func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM data", path)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("%s: PEM block is %q, want %q", path, block.Type, typ)
	}
	return block.Bytes, nil
}

// writeFileAtomic writes data to a temporary file beside path with perm,
// syncs it and renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close() // may already be closed; the first error is the one to report
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
