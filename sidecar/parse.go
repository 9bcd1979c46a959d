package sidecar

import (
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Ingress is the part of a bootstrap that handles the app's requests,
// unpacked from its Any fields: the listener, its connection manager and
// routes, the HTTP filters in order, and the clusters by name. The validator
// and the test simulator both read the config through it.
type Ingress struct {
	Listener *listenerv3.Listener
	HCM      *hcmv3.HttpConnectionManager
	Routes   *routev3.RouteConfiguration
	// Filters are the HTTP filters in chain order, unpacked.
	Filters []Filter
	// ExtProc and ExtAuthz are the first filter of each kind, or nil.
	ExtProc  *extprocv3.ExternalProcessor
	ExtAuthz *extauthzv3.ExtAuthz
	Clusters map[string]*clusterv3.Cluster
}

// Filter is one HTTP filter of the chain.
type Filter struct {
	Name   string
	Config proto.Message
}

// ParseIngress finds the listener named ListenerName and unpacks it.
func ParseIngress(b *bootstrapv3.Bootstrap) (*Ingress, error) {
	sr := b.GetStaticResources()
	in := &Ingress{Clusters: map[string]*clusterv3.Cluster{}}
	for _, c := range sr.GetClusters() {
		in.Clusters[c.GetName()] = c
	}
	for _, l := range sr.GetListeners() {
		if l.GetName() == ListenerName {
			in.Listener = l
		}
	}
	if in.Listener == nil {
		return nil, fmt.Errorf("no listener %q", ListenerName)
	}
	chains := in.Listener.GetFilterChains()
	if len(chains) != 1 || len(chains[0].GetFilters()) != 1 || chains[0].GetFilters()[0].GetName() != FilterHCM {
		return nil, fmt.Errorf("listener %q: want one filter chain holding only %s", ListenerName, FilterHCM)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := unpack(chains[0].GetFilters()[0].GetTypedConfig(), hcm); err != nil {
		return nil, fmt.Errorf("listener %q: %w", ListenerName, err)
	}
	in.HCM = hcm
	in.Routes = hcm.GetRouteConfig()
	if in.Routes == nil {
		return nil, fmt.Errorf("listener %q: want a static route_config", ListenerName)
	}
	for _, f := range hcm.GetHttpFilters() {
		m, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
		}
		in.Filters = append(in.Filters, Filter{Name: f.GetName(), Config: m})
		switch c := m.(type) {
		case *extprocv3.ExternalProcessor:
			if in.ExtProc == nil {
				in.ExtProc = c
			}
		case *extauthzv3.ExtAuthz:
			if in.ExtAuthz == nil {
				in.ExtAuthz = c
			}
		}
	}
	return in, nil
}

// ListenAddress is the ingress listener's socket address.
func (in *Ingress) ListenAddress() *corev3.SocketAddress {
	return in.Listener.GetAddress().GetSocketAddress()
}

// Endpoint is the first endpoint address of a cluster.
func (in *Ingress) Endpoint(cluster string) (*corev3.Address, error) {
	c, ok := in.Clusters[cluster]
	if !ok {
		return nil, fmt.Errorf("no cluster %q", cluster)
	}
	for _, l := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if a := e.GetEndpoint().GetAddress(); a != nil {
				return a, nil
			}
		}
	}
	return nil, fmt.Errorf("cluster %q has no endpoint", cluster)
}

// ExtProcPerRoute is the per-route ext_proc config in force for a route:
// its virtual host's and its own, merged the way Envoy's ext_proc merges
// them (FilterConfigPerRoute's merge constructor), field by field, the
// route over the virtual host: disabled is the route's, when it has a
// config; processing_mode, failure_mode_allow, grpc_service and each list
// of metadata namespaces come from the most specific config that sets
// them; grpc_initial_metadata entries are merged by key. So a route config
// that sets no processing_mode keeps the virtual host's. Nil when neither
// has one.
func ExtProcPerRoute(vh *routev3.VirtualHost, r *routev3.Route) (*extprocv3.ExtProcPerRoute, error) {
	var merged *extprocv3.ExtProcPerRoute
	for _, cfgs := range []map[string]*anypb.Any{vh.GetTypedPerFilterConfig(), r.GetTypedPerFilterConfig()} {
		a, ok := cfgs[FilterExtProc]
		if !ok {
			continue
		}
		pr := &extprocv3.ExtProcPerRoute{}
		if err := unpack(a, pr); err != nil {
			return nil, fmt.Errorf("route %q: %w", r.GetName(), err)
		}
		merged = mergeExtProcPerRoute(merged, pr)
	}
	return merged, nil
}

// mergeExtProcPerRoute lays more (the more specific config) over less.
// disabled and overrides are one oneof: a disabled config has no fields to
// merge, and a disabled less gives none.
func mergeExtProcPerRoute(less, more *extprocv3.ExtProcPerRoute) *extprocv3.ExtProcPerRoute {
	if less == nil || more.GetDisabled() || less.GetOverrides() == nil {
		return more
	}
	out := proto.Clone(more).(*extprocv3.ExtProcPerRoute)
	lo, o := less.GetOverrides(), out.GetOverrides()
	if o == nil {
		o = &extprocv3.ExtProcOverrides{}
		out.Override = &extprocv3.ExtProcPerRoute_Overrides{Overrides: o}
	}
	if o.ProcessingMode == nil {
		o.ProcessingMode = lo.GetProcessingMode()
	}
	if o.FailureModeAllow == nil {
		o.FailureModeAllow = lo.GetFailureModeAllow()
	}
	if o.GrpcService == nil {
		o.GrpcService = lo.GetGrpcService()
	}
	if lm := lo.GetMetadataOptions(); lm != nil {
		if o.MetadataOptions == nil {
			o.MetadataOptions = &extprocv3.MetadataOptions{}
		}
		if o.MetadataOptions.ForwardingNamespaces == nil {
			o.MetadataOptions.ForwardingNamespaces = lm.GetForwardingNamespaces()
		}
		if o.MetadataOptions.ReceivingNamespaces == nil {
			o.MetadataOptions.ReceivingNamespaces = lm.GetReceivingNamespaces()
		}
	}
	md := make([]*corev3.HeaderValue, 0, len(lo.GetGrpcInitialMetadata())+len(o.GetGrpcInitialMetadata()))
	md = append(md, lo.GetGrpcInitialMetadata()...)
	for _, h := range o.GetGrpcInitialMetadata() {
		replaced := false
		for i, m := range md {
			if m.GetKey() == h.GetKey() {
				md[i], replaced = h, true
			}
		}
		if !replaced {
			md = append(md, h)
		}
	}
	if len(md) > 0 {
		o.GrpcInitialMetadata = md
	}
	return out
}

// ExtAuthzPerRoute is the per-route ext_authz config in force for a route.
func ExtAuthzPerRoute(vh *routev3.VirtualHost, r *routev3.Route) (*extauthzv3.ExtAuthzPerRoute, error) {
	for _, cfgs := range []map[string]*anypb.Any{r.GetTypedPerFilterConfig(), vh.GetTypedPerFilterConfig()} {
		if a, ok := cfgs[FilterExtAuthz]; ok {
			pr := &extauthzv3.ExtAuthzPerRoute{}
			if err := unpack(a, pr); err != nil {
				return nil, fmt.Errorf("route %q: %w", r.GetName(), err)
			}
			return pr, nil
		}
	}
	return nil, nil
}

// HTTPProtocolOptions are a cluster's upstream HTTP settings, or nil.
func HTTPProtocolOptions(c *clusterv3.Cluster) (*httpv3.HttpProtocolOptions, error) {
	a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsName]
	if !ok {
		return nil, nil
	}
	o := &httpv3.HttpProtocolOptions{}
	if err := unpack(a, o); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	return o, nil
}

// HTTP2Only reports whether a cluster speaks HTTP/2 only, as a gRPC
// cluster must.
func HTTP2Only(c *clusterv3.Cluster) (bool, error) {
	o, err := HTTPProtocolOptions(c)
	if err != nil || o == nil {
		return false, err
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil, nil
}

func unpack(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return fmt.Errorf("missing typed_config (want %s)", m.ProtoReflect().Descriptor().FullName())
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config %s: %w", a.GetTypeUrl(), err)
	}
	return nil
}
