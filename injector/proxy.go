package injector

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// ProxyName is the proxy container's name.
const ProxyName = "tollgate-proxy"

// DefaultProxyImage is the Envoy image the proxy runs unless configured: the
// release whose API the sidecar's bootstrap is built from (go-control-plane
// envoy v1.40.0); an older Envoy would refuse fields it does not know.
const DefaultProxyImage = "envoyproxy/envoy:v1.40.0"

// envoyUID is the non-root user of the official Envoy image.
const envoyUID = 101

// NewProxy returns the proxy container running image with the bootstrap
// sidecar.Bootstrap builds from opts, validated by sidecar.Validate: a pod
// never gets a config the validator refuses.
func NewProxy(image string, opts sidecar.Options) (Proxy, error) {
	b, err := sidecar.Bootstrap(opts)
	if err != nil {
		return Proxy{}, fmt.Errorf("injector: proxy bootstrap: %w", err)
	}
	if err := sidecar.Validate(b); err != nil {
		return Proxy{}, fmt.Errorf("injector: proxy bootstrap is invalid: %w", err)
	}
	rendered, err := sidecar.Render(b, "json")
	if err != nil {
		return Proxy{}, fmt.Errorf("injector: proxy bootstrap: %w", err)
	}
	// Compact: it travels in every pod spec. Render is byte-stable, so the
	// same options give the same pod, which idempotency relies on.
	var compact bytes.Buffer
	if err := json.Compact(&compact, rendered); err != nil {
		return Proxy{}, fmt.Errorf("injector: proxy bootstrap: %w", err)
	}
	o := opts.WithDefaults()
	return Proxy{
		Name:          ProxyName,
		Image:         image,
		Bootstrap:     compact.Bytes(),
		ListenAddress: o.ListenAddress,
		ListenerPort:  int32(o.ListenPort),
		AdminPort:     int32(o.AdminPort),
		HealthPort:    int32(o.HealthPort),
		HealthPath:    sidecar.ReadyPath,
		Resources:     DefaultProxyResources(),
		RunAsUser:     envoyUID,
	}, nil
}
