package envoysim_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/sidecar"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestProcessorKilledMidStream: with the real processor (`tollgate serve`)
// killed while a stream is in flight, the stream is reset (its headers
// have gone), and every later request fails closed with the sidecar's
// status_on_error: nothing reaches a provider unmetered.
func TestProcessorKilledMidStream(t *testing.T) {
	door := harness.StartEnvoy(t, harness.DoorOptions{ChunkDelay: 100 * time.Millisecond})
	post := func(body string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodPost, door.BaseURL()+"/openai/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+door.GatewayToken())
		req.Header.Set("Content-Type", "application/json")
		return http.DefaultClient.Do(req)
	}
	resp, err := post(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi [[mock chunks=40]]"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first event: %q %v", line, err)
	}
	door.Kill()
	if rest, err := io.ReadAll(br); err == nil {
		t.Errorf("the stream ended cleanly after the processor died (%d more bytes): Envoy resets it", len(rest))
	}
	// The stream's record is in before its reset reaches the client.
	before := len(door.Proxy.Records())
	for i := range 3 {
		r, err := post(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"again"}]}`)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("request %d after the kill: %d %s, want the sidecar's status_on_error 503", i, r.StatusCode, b)
		}
	}
	for _, s := range door.Served(t) {
		if bytes.Contains(s.Body, []byte("again")) {
			t.Errorf("a request made after the processor died reached the mock: %s %s", s.Method, s.Path)
		}
	}
	// A client can read a whole 503 before the proxy's handler has filed
	// its record, so wait for all three.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	recs, err := door.Proxy.Await(ctx, before+3)
	if err != nil {
		t.Fatalf("records of the requests after the kill: %v", err)
	}
	for _, r := range recs[before:] {
		if r.Upstream != nil || !strings.HasPrefix(r.Details, "ext_proc_error_gRPC_error_") {
			t.Errorf("record %+v: want a gRPC failure and nothing upstream", r)
		}
	}
}

// TestCLIBootstrap: `tollgate sidecar bootstrap` prints the config the
// package builds, and it loads back into a valid bootstrap.
func TestCLIBootstrap(t *testing.T) {
	for _, format := range []string{"yaml", "json"} {
		out := harness.Run(t, "sidecar", "bootstrap", "--processor", "unix:///run/tollgate/p.sock", "--port", "16000", "--ext-authz", "--format", format)
		b, err := sidecar.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := sidecar.Validate(b); err != nil {
			t.Errorf("%s: %v", format, err)
		}
		want, err := sidecar.Bootstrap(sidecar.Options{Processor: "unix:///run/tollgate/p.sock", ListenPort: 16000, ExtAuthz: true})
		if err != nil {
			t.Fatal(err)
		}
		wantOut, _ := sidecar.Render(want, format)
		if !bytes.Equal(out, wantOut) {
			t.Errorf("%s: the CLI prints another config than sidecar.Bootstrap", format)
		}
	}
}

// TestUpstreamPathThroughSidecar: through the shipped route (prefix_rewrite
// "/") and the real processor, the provider gets exactly the gateway's
// upstream path: the prefix gone once, Gemini's key parameter dropped and
// alt=sse kept, a catalog alias renamed to its upstream model in the path.
func TestUpstreamPathThroughSidecar(t *testing.T) {
	overlay := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(overlay, []byte(`models:
  - {provider: gemini, name: gemini-house, like: gemini-2.5-flash, upstream: gemini-2.5-flash}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	door := harness.StartEnvoy(t, harness.DoorOptions{Catalog: overlay})
	tok := door.GatewayToken()
	gemini := `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	for _, tc := range []struct {
		name, path, body string
		header           []string
		wantPath         string
		wantQuery        string
	}{
		{"openai: the route alone strips the prefix", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
			[]string{"Authorization", "Bearer " + tok}, "/v1/chat/completions", ""},
		{"gemini: key dropped, alt=sse kept", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=" + tok,
			gemini, nil, "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse"},
		{"gemini: key alone dropped", "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=" + tok,
			gemini, nil, "/v1beta/models/gemini-2.5-flash:generateContent", ""},
		{"gemini: alias renamed in the path", "/gemini/v1beta/models/gemini-house:generateContent",
			gemini, []string{"X-Goog-Api-Key", tok}, "/v1beta/models/gemini-2.5-flash:generateContent", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(door.Served(t))
			req, err := http.NewRequest(http.MethodPost, door.BaseURL()+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			for i := 0; i+1 < len(tc.header); i += 2 {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			served := door.Served(t)
			if len(served) != before+1 {
				t.Fatalf("the mocks served %d requests, want 1", len(served)-before)
			}
			if s := served[before]; s.Path != tc.wantPath || s.RawQuery != tc.wantQuery {
				t.Errorf("the mock got %s?%s, want %s?%s", s.Path, s.RawQuery, tc.wantPath, tc.wantQuery)
			}
		})
	}
}
