package sidecar

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// MinRequestBufferBytes is the smallest listener buffer Check accepts: a
// request with base64 images of 10 MiB must reach the processor whole.
const MinRequestBufferBytes = 10 << 20

// Validate runs the field rules of the go-control-plane types (ValidateAll
// on the bootstrap and on every typed_config inside it) and Check. It
// returns every problem found, joined.
func Validate(b *bootstrapv3.Bootstrap) error {
	var errs []error
	if err := b.ValidateAll(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, validateTyped(b.ProtoReflect(), "bootstrap")...)
	errs = append(errs, Check(b)...)
	return errors.Join(errs...)
}

type allValidator interface{ ValidateAll() error }

// validateTyped unpacks every Any below m and runs its ValidateAll, which
// the outer ValidateAll does not do. An Any whose type is not linked in
// cannot be rendered either, so it is a problem too.
func validateTyped(m protoreflect.Message, at string) []error {
	var errs []error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		where := at + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					errs = append(errs, validateMessage(mv.Message(), where+"["+k.String()+"]")...)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					errs = append(errs, validateMessage(l.Get(i).Message(), fmt.Sprintf("%s[%d]", where, i))...)
				}
			}
		case fd.Message() != nil:
			errs = append(errs, validateMessage(v.Message(), where)...)
		}
		return true
	})
	return errs
}

func validateMessage(m protoreflect.Message, at string) []error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return validateTyped(m, at)
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return []error{fmt.Errorf("%s: %s cannot be resolved: %w", at, a.GetTypeUrl(), err)}
	}
	var errs []error
	if v, ok := inner.(allValidator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", at, a.GetTypeUrl(), err))
		}
	}
	return append(errs, validateTyped(inner.ProtoReflect(), at)...)
}

// Check applies the rules Envoy enforces beyond the field rules (its
// ext_proc config checks), the same rules on per-route overrides (which
// Envoy does not check), and Tollgate's own: nothing reaches a provider
// unmetered, streams are not cut by timeouts, providers are reached over
// verified TLS, and the access log carries no token, key, path or body.
func Check(b *bootstrapv3.Bootstrap) []error {
	in, err := ParseIngress(b)
	if err != nil {
		return []error{err}
	}
	var c checker
	c.filters(in)
	if in.ExtProc != nil {
		c.extProc(in, in.ExtProc)
	}
	if in.ExtAuthz != nil {
		if in.ExtAuthz.GetFailureModeAllow() {
			c.add("ext_authz: failure_mode_allow must be false (an unreachable processor would let requests through)")
		}
		if in.ExtAuthz.GetTransportApiVersion() != corev3.ApiVersion_V3 {
			c.add("ext_authz: transport_api_version must be V3")
		}
		if in.ExtAuthz.GetHttpService() != nil {
			c.add("ext_authz: want grpc_service (the processor serves gRPC only)")
		}
		c.grpcCluster(in, "ext_authz", in.ExtAuthz.GetGrpcService())
	}
	c.routes(in)
	c.circuitBreakers(in)
	if lim := in.Listener.GetPerConnectionBufferLimitBytes(); lim == nil || lim.GetValue() < MinRequestBufferBytes {
		c.add("listener %q: per_connection_buffer_limit_bytes must be at least %d (the BUFFERED request body cap; Envoy's default is 1 MiB)", ListenerName, MinRequestBufferBytes)
	}
	if !in.HCM.GetHttpProtocolOptions().GetAcceptHttp_10() {
		c.add("listener %q: http_protocol_options.accept_http_10 must be true (Envoy answers HTTP/1.0 clients 426; the standalone proxy serves them)", ListenerName)
	}
	c.accessLogs(in.HCM.GetAccessLog())
	return c.errs
}

type checker struct{ errs []error }

func (c *checker) add(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// filters: ext_proc present, ext_authz (if any) before it, the router last.
func (c *checker) filters(in *Ingress) {
	pos := map[string]int{}
	for i, f := range in.Filters {
		if _, dup := pos[f.Name]; dup {
			c.add("http filter %q appears twice", f.Name)
		}
		pos[f.Name] = i
	}
	ep, ok := pos[FilterExtProc]
	if !ok || in.ExtProc == nil {
		c.add("http filters: no %s (requests would reach providers unmetered)", FilterExtProc)
	}
	if a, ok := pos[FilterExtAuthz]; ok && a > ep {
		c.add("http filters: %s must come before %s", FilterExtAuthz, FilterExtProc)
	}
	n := len(in.Filters)
	if n == 0 {
		c.add("http filters: none (the router must be last)")
		return
	}
	if _, ok := in.Filters[n-1].Config.(*routerv3.Router); !ok || in.Filters[n-1].Name != FilterRouter {
		c.add("http filters: the last one must be %s", FilterRouter)
	}
}

func isFullDuplex(m extprocv3.ProcessingMode_BodySendMode) bool {
	return m == extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
}

// fullDuplex: Envoy requires trailers SEND with FULL_DUPLEX_STREAMED and
// refuses failure_mode_allow with it.
func (c *checker) fullDuplex(at string, m *extprocv3.ProcessingMode, failOpen bool) {
	if isFullDuplex(m.GetRequestBodyMode()) && m.GetRequestTrailerMode() != extprocv3.ProcessingMode_SEND {
		c.add("%s: request_body_mode FULL_DUPLEX_STREAMED needs request_trailer_mode SEND", at)
	}
	if isFullDuplex(m.GetResponseBodyMode()) && m.GetResponseTrailerMode() != extprocv3.ProcessingMode_SEND {
		c.add("%s: response_body_mode FULL_DUPLEX_STREAMED needs response_trailer_mode SEND", at)
	}
	if failOpen && (isFullDuplex(m.GetRequestBodyMode()) || isFullDuplex(m.GetResponseBodyMode())) {
		c.add("%s: failure_mode_allow cannot be true with FULL_DUPLEX_STREAMED", at)
	}
}

func (c *checker) extProc(in *Ingress, ep *extprocv3.ExternalProcessor) {
	const at = "ext_proc"
	hasGRPC, hasHTTP := ep.GetGrpcService() != nil, ep.GetHttpService() != nil
	if hasGRPC == hasHTTP {
		c.add("%s: exactly one of grpc_service and http_service must be set", at)
	}
	m := ep.GetProcessingMode()
	if hasHTTP {
		if m.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || m.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE ||
			m.GetRequestTrailerMode() == extprocv3.ProcessingMode_SEND || m.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND {
			c.add("%s: http_service supports no body modes and no trailer SEND", at)
		}
	}
	c.fullDuplex(at, m, ep.GetFailureModeAllow())
	if ep.GetDisableClearRouteCache() && ep.GetRouteCacheAction() != extprocv3.ExternalProcessor_DEFAULT {
		c.add("%s: disable_clear_route_cache cannot be combined with route_cache_action %s", at, ep.GetRouteCacheAction())
	}
	for i, am := range ep.GetAllowedOverrideModes() {
		if am.GetRequestTrailerMode() == extprocv3.ProcessingMode_DEFAULT || am.GetResponseHeaderMode() == extprocv3.ProcessingMode_DEFAULT ||
			am.GetResponseTrailerMode() == extprocv3.ProcessingMode_DEFAULT {
			c.add("%s: allowed_override_modes[%d] must state every header and trailer mode (an override's effective mode never has DEFAULT)", at, i)
		}
		c.fullDuplex(fmt.Sprintf("%s: allowed_override_modes[%d]", at, i), am, ep.GetFailureModeAllow())
	}
	if len(ep.GetAllowedOverrideModes()) > 0 && (!ep.GetAllowModeOverride() || ep.GetSendBodyWithoutWaitingForHeaderResponse() ||
		isFullDuplex(m.GetRequestBodyMode()) || isFullDuplex(m.GetResponseBodyMode())) {
		c.add("%s: allowed_override_modes can never apply (needs allow_mode_override, no send_body_without_waiting_for_header_response, no filter-level FULL_DUPLEX_STREAMED)", at)
	}
	mt, mmt := ep.GetMessageTimeout(), ep.GetMaxMessageTimeout()
	if mt == nil {
		c.add("%s: message_timeout must be set (the 200 ms default is too short for a buffered 10 MiB body)", at)
	}
	if mmt == nil || mmt.AsDuration() <= mt.AsDuration() {
		c.add("%s: max_message_timeout must be set above message_timeout (the cap on override_message_timeout; Envoy's default 0 turns it off)", at)
	}
	// Tollgate's own rules.
	if !ep.GetMutationRules().GetAllowEnvoy().GetValue() {
		c.add("%s: mutation_rules.allow_envoy must be true: the processor removes the client's x-envoy-* headers, which would otherwise reach the provider", at)
	}
	if ep.GetFailureModeAllow() {
		c.add("%s: failure_mode_allow must be false (a failed processor would let requests through unmetered)", at)
	}
	if ep.GetObservabilityMode() {
		c.add("%s: observability_mode ignores every reply: no key swap, no limits", at)
	}
	if ep.GetDisableImmediateResponse() {
		c.add("%s: disable_immediate_response turns every rejection into a 500", at)
	}
	want := ProcessingMode()
	if !proto.Equal(m, want) {
		c.add("%s: processing_mode %v, want %v (headers both ways, the whole request body, the response body streamed)", at, m, want)
	}
	if !slices.Contains(ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(), MetadataNamespace) {
		c.add("%s: metadata_options.receiving_namespaces.untyped must list %q: Envoy drops the processor's metadata otherwise, and the access log loses the request id", at, MetadataNamespace)
	}
	if ep.GetRouteCacheAction() != extprocv3.ExternalProcessor_RETAIN && !ep.GetDisableClearRouteCache() {
		c.add("%s: route_cache_action must be RETAIN: the route matched on the client's path is final, and a re-match after every header mutation is wasted work", at)
	}
	c.grpcCluster(in, at, ep.GetGrpcService())
	c.processorBuffer(in, at, ep.GetGrpcService().GetEnvoyGrpc().GetClusterName())
}

// processorBuffer: the processor cluster's connection buffer holds a whole
// buffered request body (the listener's limit) and its message headroom;
// Envoy's 1 MiB default does not.
func (c *checker) processorBuffer(in *Ingress, at, name string) {
	cl, ok := in.Clusters[name]
	if !ok {
		return // grpcCluster reports it
	}
	want := uint64(in.Listener.GetPerConnectionBufferLimitBytes().GetValue()) + MessageHeadroomBytes
	if lim := cl.GetPerConnectionBufferLimitBytes(); lim == nil || uint64(lim.GetValue()) < want {
		c.add("%s: cluster %q per_connection_buffer_limit_bytes must be at least %d (the listener's buffer plus %d for headers and framing), so that a whole buffered body fits", at, name, want, MessageHeadroomBytes)
	}
}

// grpcCluster: the service's cluster exists and speaks HTTP/2.
func (c *checker) grpcCluster(in *Ingress, at string, gs *corev3.GrpcService) {
	name := gs.GetEnvoyGrpc().GetClusterName()
	if name == "" {
		if gs != nil {
			c.add("%s: want envoy_grpc with a cluster_name", at)
		}
		return
	}
	cl, ok := in.Clusters[name]
	if !ok {
		c.add("%s: cluster %q is not defined", at, name)
		return
	}
	h2, err := HTTP2Only(cl)
	if err != nil {
		c.add("%s: %v", at, err)
	} else if !h2 {
		c.add("%s: cluster %q must be HTTP/2 only (explicit_http_config.http2_protocol_options): gRPC needs HTTP/2", at, name)
	}
	if _, err := in.Endpoint(name); err != nil {
		c.add("%s: %v", at, err)
	}
}

// circuitBreakers: the processor's and the providers' clusters set their
// limits (Envoy's default of 1,024 would refuse requests a busy pod makes),
// and the processor's are at least every provider's, since each request to
// a provider holds a processor stream for its whole life.
func (c *checker) circuitBreakers(in *Ingress) {
	limits := func(name string) (maxRequests uint32, ok bool) {
		for _, t := range in.Clusters[name].GetCircuitBreakers().GetThresholds() {
			if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
				continue
			}
			if t.GetMaxConnections() == nil || t.GetMaxPendingRequests() == nil || t.GetMaxRequests() == nil {
				return 0, false
			}
			return t.GetMaxRequests().GetValue(), true
		}
		return 0, false
	}
	proc := in.ExtProc.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	procMax, ok := limits(proc)
	if proc != "" && !ok {
		c.add("cluster %q: circuit_breakers must set max_connections, max_pending_requests and max_requests (Envoy's default of 1,024 caps the requests in flight)", proc)
	}
	var routed []string
	for _, vh := range in.Routes.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if name := r.GetRoute().GetCluster(); name != "" && !slices.Contains(routed, name) {
				routed = append(routed, name)
			}
		}
	}
	for _, name := range routed {
		n, ok := limits(name)
		switch {
		case !ok:
			c.add("cluster %q: circuit_breakers must set max_connections, max_pending_requests and max_requests (Envoy's default of 1,024 caps the requests in flight)", name)
		case proc != "" && procMax < n:
			c.add("cluster %q: max_requests %d is below provider cluster %q's %d; every provider request holds a processor stream", proc, procMax, name, n)
		}
	}
}

func (c *checker) routes(in *Ingress) {
	for _, vh := range in.Routes.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			c.route(in, vh, r)
		}
	}
}

func (c *checker) route(in *Ingress, vh *routev3.VirtualHost, r *routev3.Route) {
	at := fmt.Sprintf("route %q", r.GetName())
	ra := r.GetRoute()
	if ra == nil {
		return
	}
	name := ra.GetCluster()
	cl, ok := in.Clusters[name]
	if !ok {
		c.add("%s: cluster %q is not defined (Envoy rejects the route config)", at, name)
		return
	}
	if name == ProcessorCluster || name == AdminCluster {
		c.add("%s: the ingress must not route to %q", at, name)
		return
	}
	// Everything else is a provider: a streaming, metered route.
	if ra.GetTimeout() == nil || ra.GetTimeout().AsDuration() != 0 {
		c.add("%s: timeout must be 0s (the 15 s default cuts streams)", at)
	}
	if ra.GetIdleTimeout() == nil && in.HCM.GetStreamIdleTimeout() == nil {
		c.add("%s: set idle_timeout (or the connection manager's stream_idle_timeout): the 5 min default cuts long generations", at)
	}
	if ra.GetPrefixRewrite() != "/" || ra.GetRegexRewrite() != nil || ra.GetPathRewrite() != "" {
		c.add("%s: want prefix_rewrite \"/\" and no other path rewrite: the route strips the provider prefix, and the processor keeps it in :path", at)
	}
	if !oneSegment(r.GetMatch().GetPrefix()) {
		c.add("%s: want a prefix match of one segment, like /name/: the processor keeps the client's first segment as the prefix", at)
	}
	host := ra.GetHostRewriteLiteral()
	if host == "" {
		c.add("%s: host_rewrite_literal must name the provider's host (ext_proc may not set :authority)", at)
	}
	pr, err := ExtProcPerRoute(vh, r)
	if err != nil {
		c.add("%s: %v", at, err)
	}
	if pr.GetDisabled() {
		c.add("%s: ext_proc is disabled: requests would reach %q unmetered", at, name)
	}
	if o := pr.GetOverrides(); o != nil {
		c.fullDuplex(at+" ext_proc override", o.GetProcessingMode(), o.GetFailureModeAllow().GetValue())
		if o.GetFailureModeAllow().GetValue() {
			c.add("%s: ext_proc override sets failure_mode_allow: requests would pass unmetered", at)
		}
		if pm := o.GetProcessingMode(); pm != nil && (pm.GetRequestHeaderMode() == extprocv3.ProcessingMode_SKIP || pm.GetResponseHeaderMode() == extprocv3.ProcessingMode_SKIP) {
			c.add("%s: ext_proc override skips headers: no key swap or no status for metering", at)
		}
	}
	if ar, err := ExtAuthzPerRoute(vh, r); err != nil {
		c.add("%s: %v", at, err)
	} else if ar.GetDisabled() && in.ExtAuthz != nil {
		c.add("%s: ext_authz is disabled for a provider route", at)
	} else if in.ExtAuthz != nil && ar.GetCheckSettings().GetContextExtensions()[ContextExtProc] != "true" {
		c.add("%s: ext_authz needs check_settings.context_extensions %s: \"true\": otherwise the processor's Check swaps the token for the key, and ext_proc refuses every request", at, ContextExtProc)
	}
	c.providerTLS(at, cl, host)
}

// oneSegment reports whether prefix is "/name/": one non-empty path segment
// between slashes.
func oneSegment(prefix string) bool {
	seg, ok := strings.CutPrefix(prefix, "/")
	seg, ok2 := strings.CutSuffix(seg, "/")
	return ok && ok2 && seg != "" && !strings.Contains(seg, "/")
}

// providerTLS: a provider is reached over TLS, with SNI and the verified
// name both the routed host.
func (c *checker) providerTLS(at string, cl *clusterv3.Cluster, host string) {
	ts := cl.GetTransportSocket()
	tls := &tlsv3.UpstreamTlsContext{}
	if ts == nil || ts.GetTypedConfig() == nil || ts.GetTypedConfig().UnmarshalTo(tls) != nil {
		c.add("%s: cluster %q must use TLS (UpstreamTlsContext)", at, cl.GetName())
		return
	}
	if tls.GetSni() != host {
		c.add("%s: cluster %q SNI %q, want the routed host %q", at, cl.GetName(), tls.GetSni(), host)
	}
	vc := tls.GetCommonTlsContext().GetValidationContext()
	if vc.GetTrustedCa() == nil {
		c.add("%s: cluster %q does not verify the provider (no trusted_ca)", at, cl.GetName())
	}
	matched := false
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_DNS && m.GetMatcher().GetExact() == host {
			matched = true
		}
	}
	if !matched {
		c.add("%s: cluster %q must match the certificate's DNS SAN %q", at, cl.GetName(), host)
	}
}

// logCommand finds access-log format commands: %NAME%, %NAME(ARG)%, with an
// optional :LEN.
var logCommand = regexp.MustCompile(`%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::[0-9]+)?%`)

// safeLogCommand says which commands may appear: none names a header that
// carries a credential, the path (Gemini's ?key=), or a body.
func safeLogCommand(name, arg string) bool {
	switch name {
	case "START_TIME", "RESPONSE_CODE", "RESPONSE_CODE_DETAILS", "RESPONSE_FLAGS", "ROUTE_NAME", "UPSTREAM_CLUSTER",
		"DURATION", "BYTES_RECEIVED", "BYTES_SENT", "PROTOCOL", "UPSTREAM_HOST", "CONNECTION_TERMINATION_DETAILS":
		return arg == ""
	case "REQ":
		return strings.EqualFold(arg, "x-request-id") || strings.EqualFold(arg, ":method")
	case "DYNAMIC_METADATA":
		return strings.HasPrefix(arg, MetadataNamespace+":")
	case "FILTER_STATE":
		return arg == FilterExtProc+":PLAIN"
	}
	return false
}

func (c *checker) accessLogs(logs []*accesslogv3.AccessLog) {
	for _, l := range logs {
		cfg, err := l.GetTypedConfig().UnmarshalNew()
		if err != nil {
			c.add("access log %q: %v", l.GetName(), err)
			continue
		}
		so, ok := cfg.(*streamv3.StdoutAccessLog)
		if !ok {
			c.add("access log %q: only stdout access logs are checked, got %T", l.GetName(), cfg)
			continue
		}
		f := so.GetLogFormat()
		var formats []string
		if f.GetJsonFormat() != nil {
			formats = structStrings(structpb.NewStructValue(f.GetJsonFormat()), formats)
		}
		if t := f.GetTextFormatSource(); t != nil {
			formats = append(formats, t.GetInlineString())
		}
		if f == nil || len(formats) == 0 {
			c.add("access log %q: want an explicit format (the default one logs the path)", l.GetName())
		}
		for _, s := range formats {
			for _, m := range logCommand.FindAllStringSubmatch(s, -1) {
				if !safeLogCommand(m[1], m[2]) {
					c.add("access log %q: %s may log a token, a key, a path or a body", l.GetName(), m[0])
				}
			}
		}
	}
}

func structStrings(v *structpb.Value, out []string) []string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		out = append(out, k.StringValue)
	case *structpb.Value_StructValue:
		for _, f := range k.StructValue.GetFields() {
			out = structStrings(f, out)
		}
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			out = structStrings(e, out)
		}
	}
	return out
}
