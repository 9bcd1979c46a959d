package main

import (
	"bytes"
	"testing"
)

func TestPromptCacheSecret(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(promptCacheKeyEnv, "")
	fromFile, err := promptCacheSecret(dir)
	if err != nil || len(fromFile) != 32 {
		t.Fatalf("from the data dir: %x, %v", fromFile, err)
	}
	again, err := promptCacheSecret(dir)
	if err != nil || !bytes.Equal(again, fromFile) {
		t.Fatalf("a restart on the same data dir changed the secret: %x, %v", again, err)
	}
	if other, _ := promptCacheSecret(t.TempDir()); bytes.Equal(other, fromFile) {
		t.Fatal("two data dirs made the same secret")
	}

	// Replicas with their own data dirs share the secret through the env.
	t.Setenv(promptCacheKeyEnv, "0123456789abcdefghijklmnopqrstuvwxyzABCD")
	a, err := promptCacheSecret(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := promptCacheSecret(t.TempDir())
	if len(a) != 32 || !bytes.Equal(a, b) || bytes.Equal(a, fromFile) {
		t.Fatalf("from the env: %x and %x, want one 32-byte secret", a, b)
	}
	t.Setenv(promptCacheKeyEnv, "short")
	if _, err := promptCacheSecret(dir); err == nil {
		t.Fatal("a short secret was accepted")
	}
}
