// Package envoysim stands in for Envoy in tests: an HTTP proxy on loopback
// that runs every request through the Tollgate processor over real gRPC,
// the way Envoy's ext_proc (and ext_authz) filters do, configured from the
// very bootstrap objects sidecar.Bootstrap builds for the real sidecar. It
// follows docs/envoy-extproc.md §5; docs/envoy.md says what it does not
// reproduce.
package envoysim

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// Options are what a test chooses beyond the bootstrap: where the clusters
// really are, how bodies are chunked, and the switches for behaviour that
// differs between Envoy versions or runtime flags.
type Options struct {
	// Upstreams replaces a cluster's endpoints with a plain-HTTP address
	// (host:port): test upstreams have no provider certificate.
	Upstreams map[string]string
	// Clock makes the message timers (default: the wall clock).
	Clock Clock
	// RequestChunks and ResponseChunks make a chunk plan per request
	// (default Natural).
	RequestChunks, ResponseChunks func() ChunkPlan
	// EarlyBody: the codec has the body (up to the buffer limit) by the
	// time the headers reply arrives, as with small bodies and fast peers.
	// A body that is complete then goes out as one message with buffered
	// semantics, whatever the body mode (doc §3.2); a longer one sends what
	// was held as one chunk. Off, the body is taken after the reply, so
	// that chunk plans reach the processor as planned.
	EarlyBody bool
	// EmptyFinalChunk ends a streamed body with an empty chunk carrying
	// end_of_stream, as HTTP/1 chunked upstreams commonly produce.
	EmptyFinalChunk bool
	// GracefulClose half-closes the gRPC stream and lets the server end it,
	// resetting it after 1 s (runtime flag ext_proc_graceful_grpc_close);
	// the default half-closes and resets at once, the stricter case for a
	// server.
	GracefulClose bool
	// NoStreamCloseOptimization turns runtime flag
	// ext_proc_stream_close_optimization off (Envoy before 1.37): the stream
	// then stays open until the HTTP stream ends instead of closing right
	// after the reply to the last message Envoy sends.
	NoStreamCloseOptimization bool
	// SpuriousFailOpen turns runtime flag ext_proc_fail_close_spurious_resp
	// off: a spurious reply is then ignored and the request continues
	// unprocessed.
	SpuriousFailOpen bool
	// HonourAppendAction reads append_action when append is unset (Envoy's
	// ext_proc ignores it; a future version may not).
	HonourAppendAction bool
	// KeepTrace records every ProcessingRequest and ProcessingResponse.
	KeepTrace bool
	// NoRecords keeps no per-request records (long load runs).
	NoRecords bool
	// Listener, when set, is where the proxy serves, instead of a socket it
	// binds itself on the bootstrap's ingress address; it must be bound to
	// that address (its port, and its IP unless the bootstrap's is
	// unspecified). A test binds 127.0.0.1:0, builds the bootstrap with the
	// port it got and passes the listener: no other process can take the
	// port in between, as it can one picked free, released and bound again.
	// Start owns it from then on: Close closes it, and so does a failed
	// Start.
	Listener net.Listener
}

// checkListener reports a listener not bound to the ingress address listen
// (host:port).
func checkListener(ln net.Listener, listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("listener on %s %s, want TCP %s", ln.Addr().Network(), ln.Addr(), listen)
	}
	ip := net.ParseIP(host)
	if strconv.Itoa(a.Port) != port || ip == nil || !ip.IsUnspecified() && !ip.Equal(a.IP) {
		return fmt.Errorf("listener on %s, but the bootstrap's ingress listener is %s", a, listen)
	}
	return nil
}

// route is one compiled route of the bootstrap's route table.
type route struct {
	name          string
	prefix, path  string
	cluster       string
	hostRewrite   string
	prefixRewrite string
	timeout       time.Duration // 0: none
	extProc       *extprocv3.ExtProcPerRoute
	extAuthz      *extauthzv3.ExtAuthzPerRoute
	direct        *routev3.DirectResponseAction
}

func (r *route) matches(path string) bool {
	p, _, _ := strings.Cut(path, "?")
	if r.path != "" {
		return p == r.path
	}
	return strings.HasPrefix(p, r.prefix)
}

// rewritePath applies the route's prefix_rewrite the way Envoy's router
// does: it replaces as many leading bytes as the matched prefix has, on
// whatever the path is by then.
func (r *route) rewritePath(path string) string {
	if r.prefixRewrite == "" {
		return path
	}
	n := len(r.prefix)
	if r.path != "" {
		n = len(r.path)
	}
	if n > len(path) {
		n = len(path)
	}
	return r.prefixRewrite + path[n:]
}

// config is what the simulator reads from a bootstrap.
type config struct {
	listen        string
	bufferLimit   int
	routes        []*route
	extProc       *extprocv3.ExternalProcessor
	extAuthz      *extauthzv3.ExtAuthz
	suppressEnvoy bool
	processor     string // gRPC target of the processor cluster
	authz         string // gRPC target of ext_authz's cluster
	upstreams     map[string]string
	// internalOnly is the route table's internal_only_headers.
	internalOnly []string
	// acceptHTTP10 is the connection manager's
	// http_protocol_options.accept_http_10: without it Envoy's HTTP/1 codec
	// refuses HTTP/1.0 requests with a 426.
	acceptHTTP10 bool
	// proxy100Continue is the connection manager's proxy_100_continue:
	// without it Envoy answers Expect: 100-continue itself and removes the
	// header before any filter runs.
	proxy100Continue bool
}

// defaultBufferLimit is Envoy's per-connection buffer default.
const defaultBufferLimit = 1 << 20

func readConfig(b *bootstrapv3.Bootstrap, o Options) (*config, error) {
	in, err := sidecar.ParseIngress(b)
	if err != nil {
		return nil, err
	}
	sa := in.ListenAddress()
	c := &config{
		listen:      net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
		bufferLimit: defaultBufferLimit,
		extProc:     in.ExtProc,
		extAuthz:    in.ExtAuthz,
		upstreams:   map[string]string{},
	}
	if l := in.Listener.GetPerConnectionBufferLimitBytes(); l != nil {
		c.bufferLimit = int(l.GetValue())
	}
	seenProc := false
	for _, f := range in.Filters {
		switch cfg := f.Config.(type) {
		case *extprocv3.ExternalProcessor:
			seenProc = true
		case *extauthzv3.ExtAuthz:
			if seenProc {
				return nil, fmt.Errorf("ext_authz after ext_proc: not simulated")
			}
		case *routerv3.Router:
			c.suppressEnvoy = cfg.GetSuppressEnvoyHeaders()
		default:
			return nil, fmt.Errorf("http filter %q (%T): not simulated", f.Name, cfg)
		}
	}
	if err := checkFullDuplex(c.extProc); err != nil {
		return nil, err
	}
	if in.HCM.GetUseRemoteAddress().GetValue() || len(in.HCM.GetOriginalIpDetectionExtensions()) > 0 {
		// Then requests may be internal or edge, which changes the headers
		// the connection manager removes and sets.
		return nil, fmt.Errorf("use_remote_address or original_ip_detection_extensions: not simulated")
	}
	c.internalOnly = in.Routes.GetInternalOnlyHeaders()
	c.acceptHTTP10 = in.HCM.GetHttpProtocolOptions().GetAcceptHttp_10()
	c.proxy100Continue = in.HCM.GetProxy_100Continue()
	if c.extProc != nil {
		if c.processor, err = grpcTarget(in, c.extProc.GetGrpcService()); err != nil {
			return nil, fmt.Errorf("ext_proc: %w", err)
		}
	}
	if c.extAuthz != nil {
		if c.authz, err = grpcTarget(in, c.extAuthz.GetGrpcService()); err != nil {
			return nil, fmt.Errorf("ext_authz: %w", err)
		}
	}
	for _, vh := range in.Routes.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			cr := &route{name: r.GetName(), prefix: r.GetMatch().GetPrefix(), path: r.GetMatch().GetPath()}
			if cr.prefix == "" && cr.path == "" {
				return nil, fmt.Errorf("route %q: only prefix and path matches are simulated", r.GetName())
			}
			if cr.extProc, err = sidecar.ExtProcPerRoute(vh, r); err != nil {
				return nil, err
			}
			if cr.extAuthz, err = sidecar.ExtAuthzPerRoute(vh, r); err != nil {
				return nil, err
			}
			cr.direct = r.GetDirectResponse()
			if ra := r.GetRoute(); ra != nil {
				cr.cluster = ra.GetCluster()
				cr.hostRewrite = ra.GetHostRewriteLiteral()
				cr.prefixRewrite = ra.GetPrefixRewrite()
				cr.timeout = 15 * time.Second // Envoy's default route timeout
				if ra.GetTimeout() != nil {
					cr.timeout = ra.GetTimeout().AsDuration()
				}
				if _, ok := in.Clusters[cr.cluster]; !ok {
					return nil, fmt.Errorf("route %q: cluster %q is not defined", r.GetName(), cr.cluster)
				}
			}
			c.routes = append(c.routes, cr)
		}
	}
	// A cluster's per_connection_buffer_limit_bytes only sizes its upstream
	// connections' buffers; the filters' buffer is the downstream stream's.
	for name := range in.Clusters {
		if addr, ok := o.Upstreams[name]; ok {
			c.upstreams[name] = addr
		} else if a, err := in.Endpoint(name); err == nil {
			c.upstreams[name] = target(a)
		}
	}
	return c, nil
}

func grpcTarget(in *sidecar.Ingress, gs *corev3.GrpcService) (string, error) {
	name := gs.GetEnvoyGrpc().GetClusterName()
	if name == "" {
		return "", fmt.Errorf("only envoy_grpc services are simulated")
	}
	a, err := in.Endpoint(name)
	if err != nil {
		return "", err
	}
	return target(a), nil
}

// target is a dialable form of an Envoy address: host:port, or unix:PATH.
func target(a *corev3.Address) string {
	if p := a.GetPipe(); p != nil {
		return "unix:" + p.GetPath()
	}
	sa := a.GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

func (c *config) match(path string) *route {
	for _, r := range c.routes {
		if r.matches(path) {
			return r
		}
	}
	return nil
}

// checkFullDuplex is Envoy's config validation for FULL_DUPLEX_STREAMED:
// the direction's trailer mode must be SEND, and failure_mode_allow is
// refused.
func checkFullDuplex(c *extprocv3.ExternalProcessor) error {
	m := c.GetProcessingMode()
	for _, d := range []struct {
		name    string
		body    extprocv3.ProcessingMode_BodySendMode
		trailer extprocv3.ProcessingMode_HeaderSendMode
	}{
		{"request", m.GetRequestBodyMode(), m.GetRequestTrailerMode()},
		{"response", m.GetResponseBodyMode(), m.GetResponseTrailerMode()},
	} {
		if d.body != extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED {
			continue
		}
		if d.trailer != extprocv3.ProcessingMode_SEND {
			return fmt.Errorf("ext_proc: %s body mode FULL_DUPLEX_STREAMED needs the %s trailer mode SEND", d.name, d.name)
		}
		if c.GetFailureModeAllow() {
			return fmt.Errorf("ext_proc: FULL_DUPLEX_STREAMED with failure_mode_allow")
		}
	}
	return nil
}
