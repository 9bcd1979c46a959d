package sidecar

import (
	"fmt"
	"net"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ProcessingMode is what the ext_proc filter sends the processor:
//   - request headers, to check the token and pick the provider;
//   - the whole request body, BUFFERED, because the model and the input
//     estimate need the complete JSON (the listener buffer limit caps it);
//   - response headers, for the status;
//   - the response body STREAMED, one reply per chunk, so a stream is never
//     held whole and usage is read from the chunks as they pass;
//   - response trailers, because a body that ends with trailers never
//     carries end_of_stream: the trailers message is how the processor
//     learns that such a response completed (with SKIP it could not tell it
//     from a client reset, and would record it abandoned).
//
// Every field is explicit, as Envoy's override rules need (doc §4.7).
func ProcessingMode() *extprocv3.ProcessingMode {
	return &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
		ResponseTrailerMode: extprocv3.ProcessingMode_SEND,
	}
}

// Bootstrap builds the sidecar's Envoy config.
func Bootstrap(opts Options) (*bootstrapv3.Bootstrap, error) {
	o := opts.WithDefaults()
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("sidecar options: %w", err)
	}
	proc, _ := ParseProcessor(o.Processor)
	ingress, err := ingressListener(o)
	if err != nil {
		return nil, err
	}
	health, err := healthListener(o)
	if err != nil {
		return nil, err
	}
	pc, err := processorCluster(proc, o.RequestBufferBytes+MessageHeadroomBytes, o.MaxRequests)
	if err != nil {
		return nil, err
	}
	clusters := []*clusterv3.Cluster{pc, adminCluster(o)}
	for _, p := range o.Providers {
		c, err := providerCluster(p, o)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	return &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: "tollgate-sidecar", Cluster: "tollgate-sidecar"},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(loopback(o.ListenAddress), o.AdminPort),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{ingress, health},
			Clusters:  clusters,
		},
	}, nil
}

// loopback is the admin address: always loopback, in the listener's family.
func loopback(listen string) string {
	if ip := net.ParseIP(listen); ip != nil && ip.To4() == nil {
		return "::1"
	}
	return "127.0.0.1"
}

func ingressListener(o Options) (*listenerv3.Listener, error) {
	routes := make([]*routev3.Route, 0, len(o.Providers))
	for _, p := range o.Providers {
		r, err := providerRoute(p, o)
		if err != nil {
			return nil, err
		}
		routes = append(routes, r)
	}
	extProc, err := typed(extProcFilter(o))
	if err != nil {
		return nil, err
	}
	router, err := typed(&routerv3.Router{SuppressEnvoyHeaders: true})
	if err != nil {
		return nil, err
	}
	var filters []*hcmv3.HttpFilter
	if o.ExtAuthz {
		authz, err := typed(extAuthzFilter(o))
		if err != nil {
			return nil, err
		}
		filters = append(filters, httpFilter(FilterExtAuthz, authz))
	}
	filters = append(filters, httpFilter(FilterExtProc, extProc), httpFilter(FilterRouter, router))
	accessLog, err := accessLogs()
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:        "tollgate",
		CodecType:         hcmv3.HttpConnectionManager_AUTO,
		StreamIdleTimeout: durationpb.New(o.StreamIdleTimeout),
		// No request_timeout: a generation may take many minutes.
		AccessLog: accessLog,
		// Envoy's HTTP/1 codec refuses HTTP/1.0 with a 426 unless told
		// otherwise, and the standalone proxy serves it: clients that speak
		// it (nginx's proxy_pass by default, ab, curl -0) must get the same
		// answer from the sidecar.
		HttpProtocolOptions: &corev3.Http1ProtocolOptions{AcceptHttp_10: true},
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: RouteConfigName,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    RouteConfigName,
				Domains: []string{"*"},
				Routes:  routes,
			}},
		}},
		HttpFilters: filters,
	}
	return listener(ListenerName, o.ListenAddress, o.ListenPort, o.RequestBufferBytes, hcm)
}

// providerRoute sends a prefix to its provider, and strips it: /openai/x
// goes upstream as /x. The router cuts the prefix's length off :path as the
// processor left it, so the processor never strips the prefix itself; when
// it changes the path (a dropped key parameter, a renamed model) it keeps
// the prefix and edits what follows. The host rewrite is applied by the
// router too, because ext_proc may not set :authority.
//
// With ext_authz, the route tells the processor's Check that ext_proc
// follows (ContextExtProc): Check then only verifies the token. A Check that
// swapped the token for the provider key would leave ext_proc a request
// without a gateway token, which it must refuse.
func providerRoute(p Provider, o Options) (*routev3.Route, error) {
	r := &routev3.Route{
		Name:  p.Name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p.Prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: p.Name},
			PrefixRewrite:        "/",
			HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: p.Host},
			// 0 disables the 15 s default that would cut streams.
			Timeout:     durationpb.New(0),
			IdleTimeout: durationpb.New(o.StreamIdleTimeout),
		}},
	}
	if o.ExtAuthz {
		a, err := typed(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
			CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: map[string]string{ContextExtProc: "true"}},
		}})
		if err != nil {
			return nil, err
		}
		r.TypedPerFilterConfig = map[string]*anypb.Any{FilterExtAuthz: a}
	}
	return r, nil
}

func extProcFilter(o Options) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ProcessorCluster}},
		},
		// Nothing passes unmetered: if the processor is down or slow, the
		// request fails.
		FailureModeAllow:  false,
		StatusOnError:     &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		ProcessingMode:    ProcessingMode(),
		MessageTimeout:    durationpb.New(o.MessageTimeout),
		MaxMessageTimeout: durationpb.New(o.MaxMessageTimeout),
		// A mutation the rules refuse is a processor bug: fail loudly.
		// allow_envoy lets the processor remove the x-envoy-* headers a
		// client sent, which would otherwise reach the provider.
		MutationRules: &mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true), AllowEnvoy: wrapperspb.Bool(true)},
		MetadataOptions: &extprocv3.MetadataOptions{
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{MetadataNamespace}},
		},
		// The route matched on the client's path is already the right
		// one; a re-match after the processor's header mutation is wasted
		// work.
		RouteCacheAction: extprocv3.ExternalProcessor_RETAIN,
	}
}

func extAuthzFilter(o Options) *extauthzv3.ExtAuthz {
	return &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ProcessorCluster}},
			Timeout:         durationpb.New(o.AuthzTimeout),
		}},
		FailureModeAllow:  false,
		StatusOnError:     &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		EncodeRawHeaders:  true,
		ValidateMutations: true,
	}
}

// accessLogFields never name a header that carries a token or key, nor the
// path (Gemini accepts the key as ?key=), nor a body. The request id is the
// gateway's own, which keys its usage record, from the processor's dynamic
// metadata: the line joins the ledger. (The processor removes x-request-id
// from the request, so %REQ(X-REQUEST-ID)% would read "-".)
var accessLogFields = map[string]string{
	"start":         "%START_TIME%",
	"status":        "%RESPONSE_CODE%",
	"details":       "%RESPONSE_CODE_DETAILS%",
	"flags":         "%RESPONSE_FLAGS%",
	"route":         "%ROUTE_NAME%",
	"upstream":      "%UPSTREAM_CLUSTER%",
	"duration_ms":   "%DURATION%",
	"bytes_in":      "%BYTES_RECEIVED%",
	"bytes_out":     "%BYTES_SENT%",
	"request_id":    "%DYNAMIC_METADATA(" + MetadataNamespace + ":request_id)%",
	"extproc_state": "%FILTER_STATE(" + FilterExtProc + ":PLAIN)%",
}

func accessLogs() ([]*accesslogv3.AccessLog, error) {
	fields := map[string]any{}
	for k, v := range accessLogFields {
		fields[k] = v
	}
	st, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("access log format: %w", err)
	}
	cfg, err := typed(&streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}},
	}})
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{{
		Name:       "envoy.access_loggers.stdout",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}}, nil
}

// healthListener answers the kubelet on all interfaces with Envoy's own
// readiness, read from the admin interface (which stays on loopback).
func healthListener(o Options) (*listenerv3.Listener, error) {
	router, err := typed(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	all := "0.0.0.0"
	if loopback(o.ListenAddress) == "::1" {
		all = "::"
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "tollgate_health",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "health",
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "health",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "ready",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: ReadyPath}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AdminCluster},
						PrefixRewrite:    "/ready",
						Timeout:          durationpb.New(time.Second),
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{httpFilter(FilterRouter, router)},
	}
	return listener(HealthListener, all, o.HealthPort, 0, hcm)
}

func listener(name, addr string, port, bufferLimit uint32, hcm *hcmv3.HttpConnectionManager) (*listenerv3.Listener, error) {
	cfg, err := typed(hcm)
	if err != nil {
		return nil, err
	}
	l := &listenerv3.Listener{
		Name:    name,
		Address: socketAddress(addr, port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       FilterHCM,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg},
			}},
		}},
	}
	if bufferLimit > 0 {
		l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(bufferLimit)
	}
	return l, nil
}

// processorCluster is the gRPC cluster: HTTP/2 only, with keepalive pings
// the processor's gRPC server must permit, and a connection buffer that
// holds the largest message Envoy sends it (a whole buffered body and its
// headers) rather than Envoy's 1 MiB default.
func processorCluster(a ProcessorAddress, bufferLimit, maxRequests uint32) (*clusterv3.Cluster, error) {
	h2, err := typed(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				ConnectionKeepalive: &corev3.KeepaliveSettings{
					Interval: durationpb.New(30 * time.Second),
					Timeout:  durationpb.New(5 * time.Second),
				},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	c := &clusterv3.Cluster{
		Name:                          ProcessorCluster,
		ConnectTimeout:                durationpb.New(time.Second),
		LbPolicy:                      clusterv3.Cluster_ROUND_ROBIN,
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(bufferLimit),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsName: h2},
		CircuitBreakers:               circuitBreakers(maxRequests),
	}
	var addr *corev3.Address
	switch {
	case a.Unix():
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		addr = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: a.Path}}}
	case net.ParseIP(a.Host) != nil:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		addr = socketAddress(a.Host, a.Port)
	default:
		// A Service name: follow every address it resolves to.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		addr = socketAddress(a.Host, a.Port)
	}
	c.LoadAssignment = endpoints(ProcessorCluster, addr)
	return c, nil
}

func adminCluster(o Options) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 AdminCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       endpoints(AdminCluster, socketAddress(loopback(o.ListenAddress), o.AdminPort)),
	}
}

const httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// providerCluster reaches a provider over TLS, verified against the system
// CAs and the provider's host name; ALPN picks HTTP/2 or HTTP/1.1.
func providerCluster(p Provider, o Options) (*clusterv3.Cluster, error) {
	tls, err := typed(&tlsv3.UpstreamTlsContext{
		Sni: p.Host,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.TrustedCA}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_DNS,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.Host}},
				}},
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	proto, err := typed(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{
			HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                          p.Name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
		DnsLookupFamily:               clusterv3.Cluster_V4_PREFERRED,
		ConnectTimeout:                durationpb.New(5 * time.Second),
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(o.RequestBufferBytes),
		CircuitBreakers:               circuitBreakers(o.MaxRequests),
		LoadAssignment:                endpoints(p.Name, socketAddress(p.Host, p.Port)),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsName: proto},
		TransportSocket: &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tls},
		},
	}, nil
}

// circuitBreakers lifts Envoy's default limits (1,024 connections, pending
// and in-flight requests per cluster), which long streams would reach.
func circuitBreakers(n uint32) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(n),
		MaxPendingRequests: wrapperspb.UInt32(n),
		MaxRequests:        wrapperspb.UInt32(n),
	}}}
}

func endpoints(cluster string, addr *corev3.Address) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
			}},
		}},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func httpFilter(name string, cfg *anypb.Any) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}
}

func typed(m proto.Message) (*anypb.Any, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("pack %T: %w", m, err)
	}
	return a, nil
}
