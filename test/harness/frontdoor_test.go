package harness

import (
	"net"
	"net/http"
	"testing"
)

// TestStartEnvoyPortTaken: the processor's gRPC port, picked free before
// `tollgate serve` starts, is taken by the time it binds it (as another
// test's process can take it). StartEnvoy starts it again on another port
// instead of failing, and the door then works.
func TestStartEnvoyPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var handed []string
	pickAddr = func() (string, error) {
		a, err := freeAddr()
		if len(handed) == 0 {
			a = taken.Addr().String()
		}
		handed = append(handed, a)
		return a, err
	}
	defer func() { pickAddr = freeAddr }()

	e := StartEnvoy(t, DoorOptions{})
	if len(handed) != 2 {
		t.Fatalf("gRPC addresses handed out: %v; want the taken one, then one more", handed)
	}
	// The door answers through the processor: a model listing is the
	// gateway's own answer.
	if got := GetStatus(t, e.BaseURL()+"/openai/v1/models", e.GatewayToken()); got != http.StatusOK {
		t.Errorf("GET /openai/v1/models through the door: %d, want 200", got)
	}
	e.Stop(t)
}
