package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigDuration(t *testing.T) {
	for _, tc := range []struct {
		value  string
		zeroOK bool
		want   time.Duration
		err    string
	}{
		{"", false, 10 * time.Second, ""},
		{"250ms", false, 250 * time.Millisecond, ""},
		{"0", true, 0, ""},
		{"0", false, 0, "want a positive duration"},
		{"-1s", true, 0, "or 0"},
		{"ten seconds", false, 0, `"ten seconds"`},
	} {
		got, err := configDuration("signing_keys_poll", tc.value, 10*time.Second, tc.zeroOK)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%q: %v, %v; want %v", tc.value, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "signing_keys_poll")):
			t.Errorf("%q: error %v, want one naming the key and saying %q", tc.value, err, tc.err)
		}
	}
}

// TestProviderKeyFileErrors: key_file names a file holding the key. An
// operator who writes the key itself there gets an error that says so
// without showing it (the error reaches the pod log); a path that cannot
// be read is named, since that is what to fix.
func TestProviderKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "openai.key")
	if err := os.WriteFile(key, []byte(" sk-proj-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := providerKey("openai", key); err != nil || got != "sk-proj-from-file" {
		t.Errorf("providerKey(%s) = %q, %v; want the trimmed key", key, got, err)
	}
	for _, tc := range []struct {
		file, want string
		shown      bool
	}{
		{filepath.Join(dir, "missing.key"), "missing.key", true},
		{"openai.key", "openai.key", true},
		{"sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk6lMn9oPq2rSt5uVw8xYz1", "looks like a key", false},
		{"sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8Ba7Zy6Xw5Vu4Ts3Rq2Po1Nm0-AAAA", "looks like a key", false},
		{"AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "looks like a key", false},
	} {
		_, err := providerKey("openai", tc.file)
		switch {
		case err == nil:
			t.Errorf("providerKey(%q) succeeded", tc.file)
		case !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "openai"):
			t.Errorf("providerKey(%q): %v, want an error naming the provider and saying %q", tc.file, err, tc.want)
		case strings.Contains(err.Error(), tc.file) != tc.shown:
			t.Errorf("providerKey(%q): %v; the value shown = %v, want %v", tc.file, err, !tc.shown, tc.shown)
		}
	}
}
