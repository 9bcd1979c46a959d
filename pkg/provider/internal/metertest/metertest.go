// Package metertest holds what the providers' meter tests share: their
// recorded fixtures, and feeding a meter a stream the way the gateway does.
package metertest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

// Negative reports whether any kind of u, or any part priced apart, is
// below zero.
func Negative(u usage.Tokens) bool {
	return u.Input < 0 || u.CachedInput < 0 || u.CacheWrite < 0 || u.Output < 0 || u.Reasoning < 0 ||
		u.CacheWrite1h < 0 || u.AudioInput < 0 || u.ImageOutput < 0
}

// PartsExceed reports whether a part priced apart is larger than the kind
// it is a part of, which would make a meter's reading inconsistent.
func PartsExceed(u usage.Tokens) bool {
	return u.CacheWrite1h > u.CacheWrite || u.AudioInput > u.Input || u.ImageOutput > u.Output
}

// UsageObject decodes doc with encoding/json, which like the meters takes
// the last of repeated keys, and returns the object found by following
// path: an independent reading to check a meter against.
func UsageObject(doc []byte, path ...string) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || dec.More() {
		return nil, false
	}
	for _, k := range path {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		v = obj[k]
	}
	u, ok := v.(map[string]any)
	return u, ok
}

// Count reads the counter key of obj: present says whether it is there, ok
// whether it is absent or a non-negative integer that fits an int64.
func Count(obj map[string]any, key string) (n int64, present, ok bool) {
	raw, present := obj[key]
	if !present {
		return 0, false, true
	}
	num, isNum := raw.(json.Number)
	if !isNum || strings.ContainsAny(string(num), ".eE") {
		return 0, true, false
	}
	n, err := num.Int64()
	return n, true, err == nil && n >= 0
}
