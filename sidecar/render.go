package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// Render formats a bootstrap as "yaml" or "json", with the proto field
// names Envoy's documentation uses. The output is stable (protojson's own
// output is not byte-stable on purpose, so it is re-indented).
func Render(b *bootstrapv3.Bootstrap, format string) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap to JSON: %w", err)
	}
	switch format {
	case "json":
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return nil, fmt.Errorf("bootstrap JSON: %w", err)
		}
		out.WriteByte('\n')
		return out.Bytes(), nil
	case "yaml", "":
		out, err := yaml.JSONToYAML(raw)
		if err != nil {
			return nil, fmt.Errorf("bootstrap to YAML: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("format %q: want yaml or json", format)
	}
}

// Load reads a bootstrap rendered by Render (YAML or JSON), rejecting
// unknown fields as Envoy does.
func Load(data []byte) (*bootstrapv3.Bootstrap, error) {
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(raw, b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}
