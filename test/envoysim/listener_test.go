package envoysim

import (
	"net"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// TestListenerOption: a listener the test bound first is served as is (no
// port is released and bound again, which another process could take in
// between), and Start refuses one that is not the bootstrap's ingress
// address. Start owns it: Close, and a failed Start, close it.
func TestListenerOption(t *testing.T) {
	boot := func(port uint32) *bootstrapv3.Bootstrap {
		b, err := sidecar.Bootstrap(sidecar.Options{ListenPort: port, Processor: "127.0.0.1:9"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	released := func(addr string) bool {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		ln.Close()
		return true
	}

	t.Run("served", func(t *testing.T) {
		ln, port := ingress(t)
		addr := ln.Addr().String()
		p, err := Start(boot(port), Options{Listener: ln})
		if err != nil {
			t.Fatal(err)
		}
		if p.URL() != "http://"+addr {
			t.Errorf("URL %s, want http://%s", p.URL(), addr)
		}
		if released(addr) {
			t.Errorf("%s was free while the proxy served it", addr)
		}
		p.Close()
		if !released(addr) {
			t.Errorf("%s still bound after Close", addr)
		}
	})

	t.Run("another port", func(t *testing.T) {
		ln, port := ingress(t)
		addr := ln.Addr().String()
		_, err := Start(boot(port+1), Options{Listener: ln})
		if err == nil || !strings.Contains(err.Error(), "ingress listener is 127.0.0.1:") {
			t.Fatalf("Start with a listener on %s for a bootstrap on port %d: %v; want refused", addr, port+1, err)
		}
		if !released(addr) {
			t.Errorf("%s still bound after a failed Start", addr)
		}
	})

	t.Run("another address", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skip("no 127.0.0.2:", err)
		}
		defer ln.Close()
		if _, err := Start(boot(uint32(ln.Addr().(*net.TCPAddr).Port)), Options{Listener: ln}); err == nil {
			t.Fatalf("Start with a listener on %s for a bootstrap on 127.0.0.1: no error", ln.Addr())
		}
	})
}
