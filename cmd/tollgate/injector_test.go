package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindInjector(t *testing.T) {
	withSibling := t.TempDir()
	if err := os.WriteFile(filepath.Join(withSibling, injectorBinary), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExecutable := t.TempDir()
	if err := os.WriteFile(filepath.Join(notExecutable, injectorBinary), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	onPath := func(string) (string, error) { return "/opt/bin/" + injectorBinary, nil }
	missing := func(string) (string, error) { return "", exec.ErrNotFound }
	broken := func(string) (string, error) { return "", errors.New("permission denied") }
	tests := []struct {
		name     string
		self     string
		lookPath func(string) (string, error)
		want     string
		wantErr  string
	}{
		{"beside tollgate wins over PATH", filepath.Join(withSibling, "tollgate"), onPath, filepath.Join(withSibling, injectorBinary), ""},
		{"a file that cannot run is passed over", filepath.Join(notExecutable, "tollgate"), onPath, "/opt/bin/" + injectorBinary, ""},
		{"on PATH", filepath.Join(t.TempDir(), "tollgate"), onPath, "/opt/bin/" + injectorBinary, ""},
		{"unknown executable path", "", onPath, "/opt/bin/" + injectorBinary, ""},
		{"nowhere: says how to install it", filepath.Join(t.TempDir(), "tollgate"), missing, "", "make build"},
		{"PATH lookup fails otherwise", filepath.Join(t.TempDir(), "tollgate"), broken, "", "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findInjector(tt.self, tt.lookPath)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
