package envoysim_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
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
