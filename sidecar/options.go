// Package sidecar builds the Envoy bootstrap of the sidecar that sits beside
// each function: a loopback listener for the app's SDKs, routes per provider,
// the ext_proc filter that hands every request to the Tollgate processor, TLS
// clusters to the providers and an HTTP/2 cluster to the processor. The
// config is built from go-control-plane types, and Validate checks it with
// their ValidateAll plus the rules Envoy enforces on top (see Check).
package sidecar

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Names shared by the bootstrap and whatever reads it back (the injector,
// the test simulator).
const (
	ListenerName     = "tollgate_ingress"
	HealthListener   = "tollgate_health"
	RouteConfigName  = "providers"
	ProcessorCluster = "tollgate_processor"
	AdminCluster     = "envoy_admin"

	FilterHCM      = "envoy.filters.network.http_connection_manager"
	FilterExtProc  = "envoy.filters.http.ext_proc"
	FilterExtAuthz = "envoy.filters.http.ext_authz"
	FilterRouter   = "envoy.filters.http.router"

	// ContextExtProc is the ext_authz context extension that every provider
	// route carries when ext_authz runs before ext_proc (Options.ExtAuthz):
	// the processor's Check then only verifies the gateway token and leaves
	// the request unchanged, because ext_proc checks it again, meters the
	// request and swaps in the provider key. pkg/extauthz reads the same key.
	ContextExtProc = "tollgate-ext-proc"

	// MetadataNamespace is the dynamic-metadata namespace the processor
	// writes: the access log reads the gateway's request id from it.
	// pkg/extproc writes the same string (extproc.MetadataNamespace).
	MetadataNamespace = "tollgate"

	// ReadyPath on the health port answers Envoy's own readiness (admin
	// /ready), for the kubelet's probes.
	ReadyPath = "/healthz/ready"
)

// Defaults.
const (
	DefaultListenAddress = "127.0.0.1"
	DefaultListenPort    = 15080
	DefaultAdminPort     = 15081
	DefaultHealthPort    = 15082
	DefaultProcessor     = "tollgate-processor.tollgate-system.svc.cluster.local:9002"
	DefaultTrustedCA     = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultRequestBufferBytes is Envoy's request buffer: above the
	// processor's own 32 MiB body limit, so that the processor, not Envoy,
	// answers an oversized body (in the provider's error shape). The
	// processor's gRPC receive limit is this plus 1 MiB for headers and
	// framing (extproc.ServerOptions; pkg/extproc's TestBodyAtSidecarBuffer
	// fails if this grows past it).
	DefaultRequestBufferBytes = 33 << 20
	// MessageHeadroomBytes is what a body message to the processor carries
	// besides the body: the headers (60 KiB at most by default) and the
	// gRPC and protobuf framing.
	MessageHeadroomBytes     = 1 << 20
	DefaultMessageTimeout    = 2 * time.Second
	DefaultMaxMessageTimeout = 10 * time.Second
	DefaultAuthzTimeout      = 500 * time.Millisecond
	// DefaultMaxRequests is each cluster's circuit-breaker limit on requests
	// in flight (and connections, and pending requests). Envoy's default is
	// 1,024, and it applies to the processor's gRPC streams too: every
	// request holds one for its whole life, streams included, so the
	// 1,025th concurrent request would fail with a 503.
	DefaultMaxRequests       = 1 << 16
	DefaultStreamIdleTimeout = 10 * time.Minute
)

// Provider is one upstream API: its route prefix on the listener and the
// host it is served from.
type Provider struct {
	// Name is also the cluster name.
	Name string
	// Prefix is the listener path prefix, one segment, e.g. "/openai/";
	// the route strips it.
	Prefix string
	// Host is the provider's API host (SNI, SAN and Host header).
	Host string
	// Port defaults to 443.
	Port uint32
}

// DefaultProviders are the three providers Tollgate serves.
func DefaultProviders() []Provider {
	return []Provider{
		{Name: "openai", Prefix: "/openai/", Host: "api.openai.com", Port: 443},
		{Name: "anthropic", Prefix: "/anthropic/", Host: "api.anthropic.com", Port: 443},
		{Name: "gemini", Prefix: "/gemini/", Host: "generativelanguage.googleapis.com", Port: 443},
	}
}

// Options configure the bootstrap. The zero value gives the defaults.
type Options struct {
	// ListenAddress and ListenPort: where the app's SDKs connect.
	ListenAddress string
	ListenPort    uint32
	// AdminPort is Envoy's admin interface, on loopback only.
	AdminPort uint32
	// HealthPort serves ReadyPath on all interfaces for the kubelet.
	HealthPort uint32
	// Processor is the processor's gRPC address: "host:port", or a unix
	// socket as "/path" or "unix:///path".
	Processor string
	// MessageTimeout bounds each ext_proc reply (per chunk in STREAMED
	// mode); MaxMessageTimeout caps the processor's override_message_timeout.
	MessageTimeout    time.Duration
	MaxMessageTimeout time.Duration
	// ExtAuthz adds the ext_authz filter before ext_proc, with AuthzTimeout:
	// the token is checked in an early header-only hop, and a bad one is
	// refused before any body is buffered. Its routes tell the processor
	// that ext_proc follows (ContextExtProc), so the key swap stays with
	// ext_proc.
	ExtAuthz     bool
	AuthzTimeout time.Duration
	// RequestBufferBytes is the listener buffer limit, the cap on a
	// BUFFERED request body.
	RequestBufferBytes uint32
	// StreamIdleTimeout ends a stream with no bytes for this long; long
	// generations need minutes.
	StreamIdleTimeout time.Duration
	// MaxRequests is the circuit-breaker limit of the processor and provider
	// clusters: requests in flight, pending requests and connections.
	MaxRequests uint32
	// TrustedCA is the CA bundle that verifies the providers.
	TrustedCA string
	// Providers default to DefaultProviders.
	Providers []Provider
}

// WithDefaults fills every unset field.
func (o Options) WithDefaults() Options {
	if o.ListenAddress == "" {
		o.ListenAddress = DefaultListenAddress
	}
	if o.ListenPort == 0 {
		o.ListenPort = DefaultListenPort
	}
	if o.AdminPort == 0 {
		o.AdminPort = DefaultAdminPort
	}
	if o.HealthPort == 0 {
		o.HealthPort = DefaultHealthPort
	}
	if o.Processor == "" {
		o.Processor = DefaultProcessor
	}
	if o.MessageTimeout == 0 {
		o.MessageTimeout = DefaultMessageTimeout
	}
	if o.MaxMessageTimeout == 0 {
		o.MaxMessageTimeout = DefaultMaxMessageTimeout
	}
	if o.AuthzTimeout == 0 {
		o.AuthzTimeout = DefaultAuthzTimeout
	}
	if o.RequestBufferBytes == 0 {
		o.RequestBufferBytes = DefaultRequestBufferBytes
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.StreamIdleTimeout == 0 {
		o.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if o.TrustedCA == "" {
		o.TrustedCA = DefaultTrustedCA
	}
	if len(o.Providers) == 0 {
		o.Providers = DefaultProviders()
	}
	for i := range o.Providers {
		if o.Providers[i].Port == 0 {
			o.Providers[i].Port = 443
		}
	}
	return o
}

func (o Options) check() error {
	ports := map[uint32]string{}
	for _, p := range []struct {
		name string
		port uint32
	}{{"listen", o.ListenPort}, {"admin", o.AdminPort}, {"health", o.HealthPort}} {
		if p.port > 65535 {
			return fmt.Errorf("%s port %d: out of range", p.name, p.port)
		}
		if other, dup := ports[p.port]; dup {
			return fmt.Errorf("%s port %d: already the %s port", p.name, p.port, other)
		}
		ports[p.port] = p.name
	}
	if net.ParseIP(o.ListenAddress) == nil {
		return fmt.Errorf("listen address %q: want an IP address", o.ListenAddress)
	}
	if o.MessageTimeout < time.Millisecond || o.MaxMessageTimeout <= o.MessageTimeout {
		return fmt.Errorf("message timeout %v, max %v: want 1ms <= timeout < max", o.MessageTimeout, o.MaxMessageTimeout)
	}
	if o.RequestBufferBytes > math.MaxUint32-MessageHeadroomBytes {
		return fmt.Errorf("request buffer %d bytes: the processor cluster's buffer (this plus %d) must fit in 32 bits", o.RequestBufferBytes, MessageHeadroomBytes)
	}
	if _, err := ParseProcessor(o.Processor); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range o.Providers {
		if p.Name == "" || p.Host == "" || !oneSegment(p.Prefix) {
			return fmt.Errorf("provider %+v: want a name, a host and a prefix like /name/", p)
		}
		if seen[p.Name] || p.Name == ProcessorCluster || p.Name == AdminCluster {
			return fmt.Errorf("provider %q: duplicate or reserved name", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// ProcessorAddress is the processor's gRPC endpoint.
type ProcessorAddress struct {
	// Path is set for a unix socket; Host and Port otherwise.
	Path string
	Host string
	Port uint32
}

// Unix reports whether the address is a unix socket.
func (a ProcessorAddress) Unix() bool { return a.Path != "" }

// String is the address in the form ParseProcessor reads.
func (a ProcessorAddress) String() string {
	if a.Unix() {
		return "unix://" + a.Path
	}
	return net.JoinHostPort(a.Host, strconv.FormatUint(uint64(a.Port), 10))
}

// ParseProcessor reads "host:port", "/path/to.sock" or "unix:///path/to.sock".
func ParseProcessor(s string) (ProcessorAddress, error) {
	if p, ok := strings.CutPrefix(s, "unix://"); ok {
		s = p
		if !strings.HasPrefix(s, "/") {
			return ProcessorAddress{}, fmt.Errorf("processor %q: a unix socket needs an absolute path", "unix://"+s)
		}
	}
	if strings.HasPrefix(s, "/") {
		return ProcessorAddress{Path: s}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return ProcessorAddress{}, fmt.Errorf("processor %q: want host:port or a unix socket path: %w", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || host == "" {
		return ProcessorAddress{}, fmt.Errorf("processor %q: want host:port with a port in 1-65535", s)
	}
	return ProcessorAddress{Host: host, Port: uint32(n)}, nil
}
