package harness

import (
	"net/http"
	"testing"
)

// TestStartEnvoyLoggedAddrs: the processor binds port 0 for gRPC and
// profiling and logs what it got; the door reaches the gateway through the
// logged gRPC address, and the logged profiling address serves pprof.
func TestStartEnvoyLoggedAddrs(t *testing.T) {
	e := StartEnvoy(t, DoorOptions{Debug: true})
	// A model listing is the gateway's own answer, so it went through the
	// processor.
	if got := GetStatus(t, e.BaseURL()+"/openai/v1/models", e.GatewayToken()); got != http.StatusOK {
		t.Errorf("GET /openai/v1/models through the door: %d, want 200", got)
	}
	resp, err := http.Get("http://" + e.DebugAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /debug/pprof/goroutine?debug=1 at the logged address %s: %d, want 200", e.DebugAddr, resp.StatusCode)
	}
	e.Stop(t)
}
