// Package metertest holds what the providers' meter tests share: their
// recorded fixtures, and feeding a meter a stream the way the gateway does.
package metertest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
	"github.com/tollgate-dev/tollgate/pkg/sse"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Testdata reads a fixture from the calling package's testdata folder.
func Testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FeedSSE decodes stream and hands every event to m, returning the data of
// the events m asked to drop.
func FeedSSE(t testing.TB, m gateway.Meter, stream []byte) (dropped []string) {
	t.Helper()
	var d sse.Decoder
	emit := func(ev sse.Event) error {
		if m.Event(ev) {
			dropped = append(dropped, string(ev.Data))
		}
		return nil
	}
	if err := d.Feed(stream, emit); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(emit); err != nil {
		t.Fatal(err)
	}
	return dropped
}

// FeedArray splits a streamed JSON array and hands every element to m.
func FeedArray(t testing.TB, m gateway.Meter, stream []byte) {
	t.Helper()
	var s jsonscan.ArraySplitter
	if err := s.Feed(stream, func(elem []byte) error { m.Document(elem); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// Negative reports whether any kind of u is below zero.
func Negative(u usage.Tokens) bool {
	return u.Input < 0 || u.CachedInput < 0 || u.CacheWrite < 0 || u.Output < 0 || u.Reasoning < 0
}
