package gateway_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The core is driven by adapters and must not grow a dependency on any of
// them: no HTTP server or client, no Envoy.
func TestGatewayDependsOnNoAdapter(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "net/http" || strings.Contains(dep, "envoyproxy") || strings.HasSuffix(dep, "/pkg/proxy") {
			t.Errorf("pkg/gateway depends on %s", dep)
		}
	}
}
