package sidecar

import (
	"bytes"
	"testing"
)

// FuzzParseProcessor: whatever ParseProcessor accepts prints back to an
// address that parses to the same thing.
func FuzzParseProcessor(f *testing.F) {
	for _, s := range []string{DefaultProcessor, "10.0.0.1:9002", "[::1]:9002", "/run/p.sock", "unix:///run/p.sock", "unix://x", "host:", ":80", "h:65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseProcessor(s)
		if err != nil {
			return
		}
		b, err := ParseProcessor(a.String())
		if err != nil {
			t.Fatalf("%q parsed to %+v, whose String %q does not parse: %v", s, a, a.String(), err)
		}
		if a != b {
			t.Fatalf("%q: %+v then %+v", s, a, b)
		}
	})
}

// FuzzLoad: any bootstrap Load accepts renders and loads back to the same
// rendering.
func FuzzLoad(f *testing.F) {
	b, err := Bootstrap(Options{ExtAuthz: true})
	if err != nil {
		f.Fatal(err)
	}
	for _, format := range []string{"yaml", "json"} {
		out, err := Render(b, format)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out)
	}
	f.Add([]byte("admin: {address: {pipe: {path: /x}}}"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Load(data)
		if err != nil {
			return
		}
		out, err := Render(b, "yaml")
		if err != nil {
			t.Fatalf("loaded but cannot render: %v", err)
		}
		back, err := Load(out)
		if err != nil {
			t.Fatalf("rendered text does not load: %v\n%s", err, out)
		}
		again, err := Render(back, "yaml")
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("render/load is not stable: %v", err)
		}
	})
}
